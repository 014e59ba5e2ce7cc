"""Load a CLIP by public name or checkpoint path, with the image transform it expects."""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from mmengine.logging import MMLogger
from PIL import Image
from torchvision import transforms

from scclip.errors import CheckpointError

from . import openclip, torchscript
from .constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .model import CLIP, LAYOUT_MISMATCH, build_model
from .pretrained import MODEL_URLS, download

SAFETENSORS_SUFFIX = ".safetensors"


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding compiled code next to the tensors."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _not_a_checkpoint(path: Path, reason: str, kind: str = "CLIP") -> CheckpointError:
    openai = "an OpenAI CLIP .pt file, " if kind == "CLIP" else ""
    return CheckpointError(
        f"not a {kind} checkpoint: {path} ({reason}; expected {openai}"
        f"a state dict saved with torch.save, or a .safetensors file)"
    )


def _refused_for_safety(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint refused for safety: {path} holds more than tensors ({reason}); "
        f"scclip never runs code from a checkpoint"
    )


_TORCH_ADVICE = ("weights_only", "Check the documentation", "Please file an issue")


def _weights_only_failure(error: Exception) -> tuple[bool, str] | None:
    """For a `torch.load(weights_only=True)` refusal: whether the file asks for code, and what it names.

    torch's own text advises retrying with `weights_only=False`, i.e. running the file's code: only
    the line naming the cause (e.g. 'Unsupported operand 0', 'GLOBAL posix.system') is kept.
    """
    text = str(error)
    if "weights_only" not in text:
        return None
    if match := re.search(r"GLOBAL ([\w.]+)", text):
        return True, f"it asks for {match.group(1)}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line.removeprefix("WeightsUnpickler error:").strip() for line in lines
              if not any(advice in line for advice in _TORCH_ADVICE)]
    cause = next((line for line in causes if line), "its content is not tensors")[:200]
    return ("reduce" in cause or "build" in cause), cause


def _load_safetensors(path: Path, kind: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise _not_a_checkpoint(path, f"unreadable safetensors file: {first_line}", kind) from error


def _strip_wrapper_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the 'module.' prefix that DistributedDataParallel training leaves on every key."""
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key[len("module."):]: value for key, value in state_dict.items()}
    return state_dict


def load_state_dict(path: str | os.PathLike, kind: str = "CLIP", mapped: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint on the CPU: a TorchScript archive, a plain state dict or safetensors.

    `kind` names what the file should be in messages ('CLIP', or 'DINO' for ProxyCLIP's VFM).

    A dict that wraps the weights as `{"state_dict": ...}` is unwrapped and a 'module.' prefix on
    every key (open_clip training checkpoints) removed. No file can run code while loading: plain
    files are read with `weights_only=True` and TorchScript archives by `torchscript.read_state_dict`,
    which unpickles only tensors and never runs the archive's TorchScript; a file that asks for
    anything else is refused.

    Args:
        mapped: map a plain file's tensors into memory instead of reading them (they are read when first
            used), for a caller that only looks at the keys and shapes: a command checks its checkpoint
            in a blink, before its output folder is locked, and hundreds of megabytes are read only after.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path} (give a model name: {', '.join(MODEL_URLS)}, or a path to a .pt file)"
        )
    if not path.is_file():
        raise _not_a_checkpoint(path, "it is a directory", kind)
    if path.suffix == SAFETENSORS_SUFFIX:
        return _strip_wrapper_prefix(_load_safetensors(path, kind))
    if _is_torchscript(path):
        # OpenAI released TorchScript archives: their tensors are read without running their code.
        try:
            return torchscript.read_state_dict(path)
        except torchscript.UnsafeArchive as error:
            raise _refused_for_safety(path, str(error)) from None
        except torchscript.ArchiveError as error:
            raise _not_a_checkpoint(path, f"unreadable TorchScript archive: {error}", kind) from None
    try:
        content = _torch_load(path, mapped)
    except Exception as error:  # torch.load raises many kinds (UnpicklingError, RuntimeError, EOFError...)
        if failure := _weights_only_failure(error):
            asks_for_code, cause = failure
            if asks_for_code:
                raise _refused_for_safety(path, cause) from None
            raise _not_a_checkpoint(path, f"torch.load failed: {cause}", kind) from None
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise _not_a_checkpoint(path, f"torch.load failed: {first_line}", kind) from error
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise _not_a_checkpoint(path, f"it holds a {type(content).__name__}, not a dict of tensors", kind)
    return _strip_wrapper_prefix(content)


def _torch_load(path: Path, mapped: bool) -> object:
    """`torch.load(weights_only=True)`, mapped where asked and the file allows it (files of torch before 1.6 do not)."""
    if mapped and zipfile.is_zipfile(path):
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return torch.load(path, map_location="cpu", weights_only=True)


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def image_transform(
    resolution: int,
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
    std: tuple[float, float, float] = OPENAI_CLIP_STD,
) -> Callable[[Image.Image], torch.Tensor]:
    """CLIP's preprocessing: bicubic resize of the short side, centre crop, RGB, normalise."""
    return transforms.Compose(
        [
            transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(resolution),
            transforms.Lambda(_to_rgb),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _looks_like_a_path(text: str) -> bool:
    return os.sep in text or "/" in text or Path(text).suffix in (".pt", ".pth", ".bin", SAFETENSORS_SUFFIX)


def _load_openclip(
    name_or_path: str | os.PathLike, arch: str, download_root: str | os.PathLike | None
) -> CLIP:
    """Our CLIP built from open_clip's config of `arch` and a tag's download or a local file."""
    config = openclip.architecture_config(arch)
    settings = dict(image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    path = Path(name_or_path)
    if not path.exists() and isinstance(name_or_path, str) and not _looks_like_a_path(name_or_path):
        if not openclip.is_pretrained_tag(arch, name_or_path):
            tags = openclip.pretrained_tags(arch)
            raise CheckpointError(
                f"{name_or_path!r} is neither a file nor an open_clip pretrained tag of {arch} "
                f"(its tags: {', '.join(tags) or 'none'}); give one of them or a checkpoint file"
            )
        tag_settings = openclip.pretrained_settings(arch, name_or_path)
        if tag_settings["activation"] and tag_settings["activation"] != config["activation"]:
            MMLogger.get_current_instance().warning(
                f"open_clip {arch}:{name_or_path} was trained with QuickGELU: running it with QuickGELU "
                f"(as {arch}-quickgelu would)"
            )
            config["activation"] = tag_settings["activation"]
        settings.update(image_mean=tag_settings["image_mean"], image_std=tag_settings["image_std"])
        path = openclip.download_pretrained(arch, name_or_path, download_root)
    state_dict = load_state_dict(path)
    try:
        model = build_model(state_dict, config=config)
    except CheckpointError as error:
        if not str(error).startswith(LAYOUT_MISMATCH):  # the values, not the shapes, are wrong
            raise CheckpointError(f"{path}: {error}") from None
        detail = str(error).removeprefix(LAYOUT_MISMATCH)
        raise CheckpointError(f"{path} does not fit open_clip architecture {arch} ({detail}){_guess(state_dict)}") from None
    model.image_mean, model.image_std = settings["image_mean"], settings["image_std"]
    model.architecture = arch
    model.checkpoint_path = path
    return model


def _guess(state_dict: dict[str, torch.Tensor]) -> str:
    """' (it fits ViT-B-16, ...)' naming the open_clip architectures whose shapes the weights have."""
    fitting = [name for name in openclip.supported_architectures() if openclip.fits(name, state_dict)]
    if fitting:
        return f"; it fits {', '.join(fitting)}: give that as clip_arch / --clip-arch"
    return "; it fits no open_clip architecture SC-CLIP runs"


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    download_root: str | os.PathLike | None = None,
    arch: str | None = None,
) -> tuple[CLIP, Callable[[Image.Image], torch.Tensor]]:
    """A CLIP in eval mode (fp32 weights) and its image transform.

    Args:
        name_or_path: without `arch`, a public OpenAI name (see `available_models()`), downloaded on
            first use and verified, or the path of a TorchScript archive or state dict in OpenAI's
            layout (the weights are rounded to the fp16 values OpenAI released). With `arch`, one of
            open_clip's pretrained tags for it (e.g. 'laion2b_s34b_b88k', 'metaclip_fullcc'),
            downloaded through open_clip into its cache and verified, or an open_clip checkpoint file
            (state dict saved with torch.save, or .safetensors); the stored values are kept.
        device: where to put the model; None picks CUDA when available, else the CPU.
        download_root: cache folder for downloads (default `~/.cache/clip` for OpenAI names, the
            Hugging Face cache for open_clip tags).
        arch: an open_clip model name ('ViT-B-16', 'ViT-L-14-quickgelu', 'ViT-H-14', ...): the
            architecture, activation and head count come from open_clip's config. An open_clip GELU
            file given without `arch` cannot be told from an OpenAI one by its keys: it would run
            with QuickGELU, so always give `arch` for open_clip weights.
    """
    if arch is not None:
        model = _load_openclip(name_or_path, arch, download_root)
    else:
        if isinstance(name_or_path, str) and name_or_path in MODEL_URLS:
            path = download(name_or_path, root=download_root)
        else:
            path = Path(name_or_path)
        state_dict = load_state_dict(path)
        try:
            model = build_model(state_dict)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from error
        model.checkpoint_path = path
    model = model.to(device if device is not None else default_device()).eval()
    return model, image_transform(model.visual.input_resolution, model.image_mean, model.image_std)
