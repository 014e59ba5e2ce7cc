"""open_clip's plain ViT CLIPs (OpenCLIP, MetaCLIP, DFN, ...) as scclip CLIPs.

Design: open_clip supplies what it is the reference for: the architecture configurations (width,
depth, heads = width / head_width, MLP ratio, GELU or QuickGELU, text context), the pretrained
registry (architecture + tag → Hugging Face repository or URL) and the download into its cache.
The weights then go into scclip's own CLIP (`model.py`): open_clip's plain CLIPs store their
tensors under OpenAI's key names, so the state dict loads as it is, and the one calibrated forward
(`scclip.calibration` and the encoder family) runs on every backbone unchanged.

Architectures whose modules differ from CLIP's ViT (timm or Hugging Face towers, ResNets,
attention pooling, layer scale, another tokenizer, ...) are refused with the reason.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from mmengine.logging import MMLogger

from scclip.errors import CheckpointError, DownloadError

from .constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .model import CHECKPOINT_METADATA_KEYS, CLIP
from .pretrained import fetch_verified, sha256_of

CLIP_VOCAB_SIZE = 49408
HF_HOST = "huggingface.co"
HF_WEIGHTS_NAME = "open_clip_pytorch_model.bin"
HF_SAFE_WEIGHTS_NAME = "open_clip_model.safetensors"
DEFAULT_URL_CACHE_DIR = "~/.cache/clip"  # where open_clip keeps URL downloads
_SHA256 = re.compile(r"[0-9a-f]{64}")

# Block options of open_clip that change CLIP's residual block (extra weights or another maths).
_CUSTOM_BLOCK_OPTIONS = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")


def _open_clip():
    """open_clip, imported on first use (it is only needed for open_clip backbones)."""
    import open_clip

    return open_clip


def _tower_reasons(cfg: Any, tower: str) -> list[str]:
    """What keeps an open_clip tower config (CLIPVisionCfg / CLIPTextCfg) from being CLIP's tower."""
    reasons = []
    if getattr(cfg, "ls_init_value", None) is not None:
        reasons.append(f"its {tower} blocks have layer scale")
    custom = [name for name in _CUSTOM_BLOCK_OPTIONS if getattr(cfg, name, False)]
    if custom or getattr(cfg, "block_type", None) not in (None, "default"):
        reasons.append(f"its {tower} blocks are open_clip's custom blocks ({', '.join(custom) or cfg.block_type})")
    if getattr(cfg, "norm_kwargs", None):
        reasons.append(f"its {tower} LayerNorms take {cfg.norm_kwargs}")
    if getattr(cfg, "act_kwargs", None):
        reasons.append(f"its {tower} activation takes {cfg.act_kwargs}")
    if getattr(cfg, "final_ln_after_pool", False):
        reasons.append(f"its {tower} applies the final LayerNorm after pooling")
    return reasons


def unsupported_reasons(model_cfg: dict[str, Any]) -> list[str]:
    """Why an open_clip model config is not a plain CLIP ViT with CLIP's tokenizer (empty: it is)."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    reasons = []
    if "multimodal_cfg" in model_cfg:
        reasons.append("it is a CoCa captioning model (attention-pooled image tokens, no class token)")
    known = {field.name for field in fields(CLIPVisionCfg)}
    vision = CLIPVisionCfg(**{k: v for k, v in model_cfg["vision_cfg"].items() if k in known})
    if vision.timm_model_name:
        reasons.append(
            f"its image tower is timm's {vision.timm_model_name}, not CLIP's own ViT "
            f"(SC-CLIP calibrates CLIP's ViT blocks and class token)"
        )
    elif isinstance(vision.layers, (list, tuple)):
        reasons.append("its image tower is a ResNet, not a ViT (no patch tokens to calibrate)")
    else:
        if vision.attentional_pool:
            reasons.append("its image tower pools with attention instead of a class token")
        if vision.pool_type != "tok":
            reasons.append(f"its image tower pools by {vision.pool_type!r}, not with the class token")
        if vision.no_ln_pre:
            reasons.append("its image tower has no ln_pre")
        if vision.pos_embed_type != "learnable":
            reasons.append(f"its image tower uses a {vision.pos_embed_type} position embedding")
        if len({*_pair(vision.image_size)}) > 1 or len({*_pair(vision.patch_size)}) > 1:
            reasons.append("its image tower is trained on non-square images or patches")
        reasons += _tower_reasons(vision, "image")
    known = {field.name for field in fields(CLIPTextCfg)}
    text = CLIPTextCfg(**{k: v for k, v in model_cfg["text_cfg"].items() if k in known})
    if text.hf_model_name:
        reasons.append(f"its text tower is Hugging Face's {text.hf_model_name}, not CLIP's")
    elif text.hf_tokenizer_name or text.tokenizer_kwargs or text.tokenizer_mode:
        reasons.append(
            f"its text uses another tokenizer ({text.hf_tokenizer_name or text.tokenizer_mode or text.tokenizer_kwargs}),"
            f" not CLIP's BPE"
        )
    elif text.vocab_size != CLIP_VOCAB_SIZE:
        reasons.append(f"its text vocabulary has {text.vocab_size} tokens, not CLIP's BPE {CLIP_VOCAB_SIZE}")
    if not text.hf_model_name:
        if text.embed_cls or text.no_causal_mask or text.pool_type != "argmax":
            reasons.append("its text tower does not pool CLIP's way (causal mask, end-of-text token)")
        if text.proj_type != "linear" or text.proj_bias:
            reasons.append("its text projection is not CLIP's (linear, no bias)")
        reasons += _tower_reasons(text, "text")
    if model_cfg.get("custom_text") and not reasons:
        reasons.append("its text tower is open_clip's custom text tower (weights under 'text.')")
    if model_cfg.get("init_logit_bias") is not None and not reasons:
        reasons.append("it is trained with a sigmoid loss (logit bias)")
    return reasons


def _pair(value: Any) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def supported_architectures() -> list[str]:
    """open_clip model names SC-CLIP can run: plain CLIP ViTs with CLIP's BPE tokenizer."""
    open_clip = _open_clip()
    return [name for name in open_clip.list_models() if not unsupported_reasons(open_clip.get_model_config(name))]


def _unknown_architecture(arch: str) -> CheckpointError:
    supported = supported_architectures()
    spelled = [name for name in supported if name.lower() == arch.replace("/", "-").lower()]
    close = spelled or difflib.get_close_matches(arch, supported, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return CheckpointError(
        f"unknown open_clip architecture {arch!r}: {hint}SC-CLIP runs these: {', '.join(supported)}"
    )


def architecture_config(arch: str) -> dict[str, Any]:
    """scclip CLIP constructor arguments for an open_clip model name, or a one-line refusal.

    Heads are width / head_width per tower (open_clip's ViT-H/14: 16 heads of 80), the MLP width is
    int(width · mlp_ratio) as open_clip builds it, and the activation is QuickGELU when the config
    says `quick_gelu`, else GELU.
    """
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    model_cfg = _open_clip().get_model_config(arch) if isinstance(arch, str) else None
    if model_cfg is None:
        raise _unknown_architecture(str(arch))
    reasons = unsupported_reasons(model_cfg)
    if reasons:
        raise CheckpointError(
            f"open_clip architecture {arch} cannot run SC-CLIP: {'; '.join(reasons[:2])}; "
            f"use a plain CLIP ViT such as ViT-B-16, ViT-L-14 or ViT-H-14"
        )
    vision = CLIPVisionCfg(**model_cfg["vision_cfg"])
    text = CLIPTextCfg(**model_cfg["text_cfg"])
    return dict(
        embed_dim=model_cfg["embed_dim"],
        image_resolution=_pair(vision.image_size)[0],
        vision_layers=vision.layers,
        vision_width=vision.width,
        vision_patch_size=_pair(vision.patch_size)[0],
        context_length=text.context_length,
        vocab_size=text.vocab_size,
        transformer_width=text.width,
        transformer_heads=text.heads,
        transformer_layers=text.layers,
        vision_heads=vision.width // vision.head_width,
        activation="quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu",
        vision_mlp_width=int(vision.width * vision.mlp_ratio),
        transformer_mlp_width=int(text.width * text.mlp_ratio),
    )


def fits(arch: str, state_dict: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has exactly the keys and shapes of open_clip architecture `arch`."""
    config = architecture_config(arch)
    patch, width = config["vision_patch_size"], config["vision_width"]
    grid = config["image_resolution"] // patch
    quick_look = {
        "visual.conv1.weight": (width, 3, patch, patch),
        "visual.positional_embedding": (grid * grid + 1, width),
        "text_projection": (config["transformer_width"], config["embed_dim"]),
    }
    if any(key not in state_dict or tuple(state_dict[key].shape) != shape for key, shape in quick_look.items()):
        return False
    with torch.device("meta"):
        expected = CLIP(**config).state_dict()
    return expected.keys() == state_dict.keys() - set(CHECKPOINT_METADATA_KEYS) and all(
        state_dict[key].shape == value.shape for key, value in expected.items()
    )


def pretrained_tags(arch: str) -> list[str]:
    """open_clip's pretrained tags for an architecture (e.g. 'laion2b_s34b_b88k', 'metaclip_fullcc')."""
    return list(_open_clip().list_pretrained_tags_by_model(arch))


def is_pretrained_tag(arch: str, tag: str) -> bool:
    return bool(_open_clip().get_pretrained_cfg(arch, tag))


def pretrained_settings(arch: str, tag: str) -> dict[str, Any]:
    """What a tag changes besides the weights: the activation it was trained with and its normalisation.

    open_clip marks weights trained with QuickGELU (MetaCLIP, DFN, OpenAI) with `quick_gelu`; a GELU
    architecture name given with such a tag (e.g. ViT-B-16 with metaclip_fullcc) runs QuickGELU,
    as the weights need (open_clip itself would only warn). Returns `activation` (or None: the
    architecture's), `image_mean` and `image_std`.
    """
    cfg = _open_clip().get_pretrained_cfg(arch, tag)
    return dict(
        activation="quick_gelu" if cfg.get("quick_gelu") else None,
        image_mean=tuple(cfg.get("mean", OPENAI_CLIP_MEAN)),
        image_std=tuple(cfg.get("std", OPENAI_CLIP_STD)),
    )


def _hf_source(hf_hub: str) -> tuple[str, list[str]]:
    """The repository of an open_clip `hf_hub` entry and the files to try, safetensors first (as open_clip)."""
    # 'org/repo/' means open_clip's default file name; 'org/repo/file' names the file.
    repo, filename = (hf_hub[:-1], HF_WEIGHTS_NAME) if hf_hub.endswith("/") else os.path.split(hf_hub)
    candidates = [filename]
    if filename == HF_WEIGHTS_NAME:
        candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        candidates.insert(0, filename[:-4] + ".safetensors")
    return repo, candidates


def _host_unreachable(host: str) -> str | None:
    """Why `host` cannot be reached right now (offline mode, no name resolution), or None.

    Checked before a download so that no network fails in an instant instead of after the Hugging
    Face client's minute of retries.
    """
    try:
        from huggingface_hub import constants

        if host == HF_HOST and constants.is_offline_mode():
            return "HF_HUB_OFFLINE is set"
    except ImportError:
        pass
    try:
        socket.getaddrinfo(host, 443)
    except OSError as error:
        return f"{host} cannot be reached: {error.strerror or error}"
    return None


def _no_download(arch: str, tag: str, source: str, filename: str, reason: str) -> DownloadError:
    return DownloadError(
        f"cannot download open_clip {arch}:{tag} ({reason}); fetch {filename} from {source} "
        f"and run with --backbone FILE --clip-arch {arch} (in Python: clip_path=FILE, clip_arch={arch!r})"
    )


def _verified_hf_file(path: str | os.PathLike) -> Path:
    """A file of the Hugging Face cache, checked against its LFS ETag (the blob's name is its SHA-256)."""
    blob = Path(path).resolve()
    if blob.parent.name == "blobs" and _SHA256.fullmatch(blob.name):
        actual = sha256_of(blob)
        if actual != blob.name:
            blob.unlink()
            if Path(path).is_symlink():
                Path(path).unlink()
            raise DownloadError(
                f"{path} does not match its SHA-256 {blob.name} (Hugging Face LFS ETag; found {actual}); "
                f"the damaged copy was removed: run again to download it anew"
            )
    return Path(path)


def download_pretrained(arch: str, tag: str, root: str | os.PathLike | None = None) -> Path:
    """The local file of open_clip's pretrained `tag` for `arch`, downloaded on first use and verified.

    Hugging Face entries go through open_clip's downloader into the Hugging Face cache (or `root`),
    and are checked against the LFS ETag; URL entries are checked against the SHA-256 their address
    carries (OpenAI, open_clip releases) and moved into place only when complete.
    """
    open_clip = _open_clip()
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = pretrained_tags(arch)
        raise CheckpointError(
            f"{tag!r} is not an open_clip pretrained tag of {arch}; its tags: {', '.join(tags) or 'none'}; "
            f"or give a checkpoint file"
        )
    logger = MMLogger.get_current_instance()
    if cfg.get("hf_hub") and open_clip.pretrained.has_hf_hub():
        from huggingface_hub import try_to_load_from_cache

        repo, candidates = _hf_source(cfg["hf_hub"])
        for filename in candidates:
            cached = try_to_load_from_cache(repo, filename, cache_dir=root)
            if isinstance(cached, str):
                return _verified_hf_file(cached)
        source = f"https://huggingface.co/{repo}"
        reason = _host_unreachable(HF_HOST)
        if reason:
            raise _no_download(arch, tag, source, candidates[0], reason)
        logger.info(f"downloading open_clip {arch}:{tag} from {source}")
        try:
            path = open_clip.pretrained.download_pretrained_from_hf(repo, filename=candidates[-1], cache_dir=root)
        except (OSError, RuntimeError) as error:
            raise _no_download(arch, tag, source, candidates[0], str(error).splitlines()[0][:200]) from error
        return _verified_hf_file(path)
    url = cfg["url"]
    name = Path(urlparse(url).path).name
    target = Path(root or DEFAULT_URL_CACHE_DIR).expanduser() / name
    if "openaipublic" in url:
        digest = url.rstrip("/").split("/")[-2]
    elif "mlfoundations" in url:
        digest = Path(name).stem.split("-")[-1]  # open_clip's releases carry a SHA-256 prefix
    else:
        digest = None
    if target.is_file() and (digest is None or sha256_of(target).startswith(digest)):
        return target
    reason = _host_unreachable(urlparse(url).hostname or "")
    if reason:
        raise _no_download(arch, tag, url, name, reason)
    logger.info(f"downloading open_clip {arch}:{tag} from {url} to {target}")
    return fetch_verified(url, target, digest)


def split_backbone(backbone: str | os.PathLike, clip_arch: str | None = None) -> tuple[str, str | None]:
    """(checkpoint, architecture) of a backbone as users write it.

    open_clip's 'model:pretrained' pair ('ViT-B-16:laion2b_s34b_b88k') is split; anything else
    (an OpenAI name, a file, or a tag or file with `clip_arch` given) is returned as it is.
    """
    text = str(backbone)
    if clip_arch is None and ":" in text and not os.path.exists(text):
        arch, tag = text.split(":", 1)
        if _open_clip().get_model_config(arch) is not None:
            return tag, arch
    return text, clip_arch
