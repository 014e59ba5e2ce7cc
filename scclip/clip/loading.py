"""Load a CLIP by public name or checkpoint path, with the image transform it expects."""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torchvision import transforms

from scclip.errors import CheckpointError

from .constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .model import CLIP, build_model
from .pretrained import MODEL_URLS, download


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files holding compiled code next to the tensors."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist())


def _not_a_checkpoint(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(
        f"not a CLIP checkpoint: {path} ({reason}; expected an OpenAI CLIP .pt file "
        f"or a state dict saved with torch.save)"
    )


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a CLIP checkpoint on the CPU: a TorchScript archive or a plain state dict.

    A dict that wraps the weights as `{"state_dict": ...}` is unwrapped. Plain files are read
    with `weights_only=True`, so a checkpoint cannot run code while loading.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path} (give a model name: {', '.join(MODEL_URLS)}, or a path to a .pt file)"
        )
    if not path.is_file():
        raise _not_a_checkpoint(path, "it is a directory")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():
                # OpenAI released TorchScript archives; only their tensors are read.
                warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
                return torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as error:
            raise _not_a_checkpoint(path, f"unreadable TorchScript archive: {str(error).splitlines()[0]}") from error
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds (UnpicklingError, RuntimeError, EOFError...)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise _not_a_checkpoint(path, f"torch.load failed: {first_line}") from error
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    if not isinstance(content, dict) or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise _not_a_checkpoint(path, f"it holds a {type(content).__name__}, not a dict of tensors")
    return content


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def image_transform(resolution: int) -> Callable[[Image.Image], torch.Tensor]:
    """CLIP's preprocessing: bicubic resize of the short side, centre crop, RGB, normalise."""
    return transforms.Compose(
        [
            transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(resolution),
            transforms.Lambda(_to_rgb),
            transforms.ToTensor(),
            transforms.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        ]
    )


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(
    name_or_path: str | os.PathLike,
    device: str | torch.device | None = None,
    download_root: str | os.PathLike | None = None,
) -> tuple[CLIP, Callable[[Image.Image], torch.Tensor]]:
    """A CLIP in eval mode (fp32 weights holding fp16 values) and its image transform.

    Args:
        name_or_path: a public OpenAI name (see `available_models()`), downloaded on first use
            and verified, or the path of a TorchScript archive or state dict.
        device: where to put the model; None picks CUDA when available, else the CPU.
        download_root: cache folder for downloads (default `~/.cache/clip`).
    """
    if isinstance(name_or_path, str) and name_or_path in MODEL_URLS:
        path = download(name_or_path, root=download_root)
    else:
        path = Path(name_or_path)
    state_dict = load_state_dict(path)
    try:
        model = build_model(state_dict)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error
    model = model.to(device if device is not None else default_device()).eval()
    return model, image_transform(model.visual.input_resolution)
