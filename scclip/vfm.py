"""Vision foundation models (VFMs): ProxyCLIP's second backbone, named like CLIP's.

docs/backbones.md#dino-proxyclips-second-backbone says how to get the weights and what they reproduce.

A VFM is written as a name of `VFM_BACKBONES` (`dino_vitb8`, downloaded on first use) or as a file
(DINO's `.pth` state dict or a `.safetensors` file). This module is torch-free: the settings
table reads the names from it; `scclip.dino` builds and runs the model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path

from .errors import InputError

# DINO normalises with ImageNet's statistics (RGB in [0, 1]); ProxyCLIP re-normalises CLIP's input to them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEAD_WIDTH = 64  # DINO's ViT-S/B (as CLIP's): heads = width / 64; a state dict does not record it


@dataclass(frozen=True)
class VfmBackbone:
    """A published VFM under a short name.

    Attributes:
        name: what `vfm=` and `--vfm` accept.
        timm_arch: timm's architecture whose layout loads the weights unchanged.
        url: the official download address.
        sha256: the file's published SHA-256, or None where the publisher gives none: the digest of
            the first complete download is then pinned beside the file and every later use checks it.
        release: the code release whose model the weights belong to.
        description: what the weights are.
    """

    name: str
    timm_arch: str
    url: str
    sha256: str | None
    release: str
    description: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


VFM_BACKBONES: dict[str, VfmBackbone] = {
    backbone.name: backbone
    for backbone in (
        VfmBackbone(
            "dino_vitb8", "vit_base_patch8_224.dino",
            "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth",
            None, "facebookresearch/dino@7c446df5b9f4",
            "DINO ViT-B/8 (Caron et al., ICCV 2021): 12 blocks, 12 heads × 64, patch 8, self-supervised on "
            "ImageNet-1k; the VFM of ProxyCLIP's published rows",
        ),
    )
}
DEFAULT_VFM = "dino_vitb8"


def vfm_names() -> list[str]:
    """The VFM names accepted besides files."""
    return list(VFM_BACKBONES)


def parse_vfm(text: str | os.PathLike) -> tuple[str, str | None]:
    """(`vfm`, `vfm_path`) for a VFM as users write it (`--vfm NAME|FILE`): a name, or a file of that VFM.

    A file is read as the default VFM's architecture (the only one there is); anything else is refused
    in one line naming the valid names.
    """
    text = str(text)
    if text in VFM_BACKBONES:
        return text, None
    if Path(text).is_file():
        return DEFAULT_VFM, text
    close = get_close_matches(text, VFM_BACKBONES, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    raise InputError(f"--vfm {text!r} is neither a VFM name nor a file: {hint}names: {', '.join(VFM_BACKBONES)} "
                     f"(or a DINO .pth / .safetensors file)")


VFM_SETTINGS = ("vfm", "vfm_path")  # the segmentor settings `--vfm` sets
VFM_HELP = ("ProxyCLIP's vision foundation model (--method proxyclip): a name (dino_vitb8, downloaded on first use "
            "and checked) or its weights file (DINO's .pth or .safetensors) (default: dino_vitb8)")


def add_vfm_option(parser) -> None:
    """`--vfm NAME|FILE`, spelled and explained the same on every command that takes `--backbone`."""
    parser.add_argument("--vfm", metavar="NAME|FILE", help=VFM_HELP)


def vfm_settings(text: str | os.PathLike | None, method: str | None) -> dict[str, str | None]:
    """The segmentor settings of `--vfm` (none when it is not given), refused in one line for a method without a
    VFM; `method` None (eval.py without --method: the config's) leaves that check to the config's settings check."""
    if text is None:
        return {}
    from .settings import MODEL_SETTINGS

    takes = MODEL_SETTINGS["vfm"].methods
    if method is not None and method not in takes:
        raise InputError(f"--vfm chooses the VFM of {', '.join(takes)}, but the method is {method!r}: "
                         f"use --method {takes[0]} or leave --vfm out")
    name, path = parse_vfm(text)
    # A file is the weights of the (only) VFM architecture: `vfm` keeps its value, so a run stays comparable.
    return {"vfm_path": path} if path is not None else {"vfm": name, "vfm_path": None}
