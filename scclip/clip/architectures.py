"""Architectures of the public OpenAI ViT CLIPs as data, and randomly initialised models of them.

Random models serve the tests (tiny shapes, offline) and the benchmarks (real shapes, no download);
the segmentor itself always reads the architecture off a checkpoint.
"""
import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .model import CLIP

ARCHITECTURES: dict[str, dict[str, int]] = {
    "ViT-B/32": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=32, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-B/16": dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768,
                     vision_patch_size=16, transformer_width=512, transformer_heads=8, transformer_layers=12),
    "ViT-L/14": dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024,
                     vision_patch_size=14, transformer_width=768, transformer_heads=12, transformer_layers=12),
    "ViT-L/14@336px": dict(embed_dim=768, image_resolution=336, vision_layers=24, vision_width=1024,
                           vision_patch_size=14, transformer_width=768, transformer_heads=12, transformer_layers=12),
}
TEXT_DEFAULTS = dict(context_length=77, vocab_size=49408)


def init_weights(model: CLIP, seed: int = 0) -> CLIP:
    """Initialise every parameter of a CLIP randomly (CLIP's own scheme, roughly) and reproducibly."""
    generator = torch.Generator().manual_seed(seed)

    def normal_(tensor: torch.Tensor, std: float) -> None:
        with torch.no_grad():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * std)

    for name, param in model.named_parameters():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            nn.init.ones_(param)
        elif name == "logit_scale":
            nn.init.constant_(param, 4.6052)
        elif param.ndim == 1:
            normal_(param, 0.02)
        else:
            normal_(param, param.shape[-1] ** -0.5)
    return model


def random_clip(name: str = "ViT-B/16", seed: int = 0, **overrides: Any) -> CLIP:
    """A randomly initialised CLIP of a named architecture; `overrides` change any size (e.g. widths)."""
    config = {**TEXT_DEFAULTS, **ARCHITECTURES[name], **overrides}
    return init_weights(CLIP(**config), seed).eval()


def save_checkpoint(model: CLIP, path: str | Path, torchscript: bool = False) -> Path:
    """Save a CLIP in OpenAI's release formats: an fp16 state dict, or a TorchScript archive."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if torchscript:
        resolution = model.visual.input_resolution
        images = torch.zeros(1, 3, resolution, resolution)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer notes
            traced = torch.jit.trace_module(copy.deepcopy(model), {"encode_image": images}).half()
            torch.jit.save(traced, str(path))
    else:
        torch.save({k: v.half() for k, v in model.state_dict().items()}, path)
    return path
