"""DINO's ViT as ProxyCLIP's VFM: built through timm, weights read as tensors only, positions embedded as DINO does.

timm's `vit_base_patch8_224.dino` has DINO's layout, so DINO's state dict loads into it unchanged
(same 150 key names, strict). At sizes other than the trained 224×224 timm resamples positions
its own way (`size=`, antialiased), which differs from DINO's by ~0.14; `DinoViT.forward` therefore
embeds patches and positions itself with DINO's rule (the scale factor (n+0.1)/g, the one CLIP's
tower uses too) and runs timm's blocks and final norm on the result (docs/backbones.md#dino-proxyclips-second-backbone).
"""
from __future__ import annotations

import math
import os
import re
import weakref
from pathlib import Path

import torch
from mmengine.logging import MMLogger
from torch import nn

from .clip.loading import load_state_dict
from .clip.model import resample_position_embedding
from .clip.pretrained import DEFAULT_CACHE_DIR, fetch_verified, sha256_of
from .errors import CheckpointError
from .vfm import HEAD_WIDTH, VFM_BACKBONES, VfmBackbone

_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.")
REQUIRED_KEYS = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight",
                 "blocks.0.mlp.fc1.weight")
PINNED_SUFFIX = ".sha256"
# Bounds that keep a crafted file from asking for absurd models: far beyond any DINO (ViT-g: 1536 wide, 40 blocks).
MAX_WIDTH, MAX_DEPTH, MAX_GRID, MAX_PATCH = 8192, 64, 256, 64
# The VFMs in use, by (name, file, size, modification time): shared while some model holds them.
_LOADED: weakref.WeakValueDictionary[tuple, "DinoViT"] = weakref.WeakValueDictionary()


class DinoViT(nn.Module):
    """Last-block patch features of a DINO ViT (after its final LayerNorm, class token dropped).

    Args:
        model: timm's VisionTransformer holding DINO's weights.
        trained_grid: the side of the position grid it was trained with (224 / patch).
    """

    def __init__(self, model: nn.Module, trained_grid: int) -> None:
        super().__init__()
        self.model = model
        self.trained_grid = trained_grid

    @property
    def patch_size(self) -> int:
        return self.model.patch_embed.proj.kernel_size[0]

    @property
    def width(self) -> int:
        return self.model.cls_token.shape[-1]

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid of an H×W input; pixels past the last full patch are not embedded (as DINO's conv)."""
        return height // self.patch_size, width // self.patch_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """B×3×H×W ImageNet-normalised images → B×(I·J)×C features, row-major over the true I×J grid."""
        h, w = self.grid_size(*images.shape[-2:])
        p = self.patch_size
        model = self.model
        proj = model.patch_embed.proj
        x = proj(images[:, :, : h * p, : w * p].to(proj.weight.dtype)).flatten(2).transpose(1, 2)
        cls = model.cls_token.to(x.dtype).expand(x.shape[0], -1, -1)
        positions = resample_position_embedding(model.pos_embed[0], (h, w), self.trained_grid)
        x = torch.cat([cls, x], dim=1) + positions.to(x.dtype)
        x = model.norm(model.blocks(x))
        return x[:, 1:]


def build_dino(state_dict: dict[str, torch.Tensor], timm_arch: str, source: str) -> DinoViT:
    """A `DinoViT` of timm's `timm_arch` shaped after the state dict (width, depth, patch, positions, MLP).

    Every field is checked; a state dict of another layout is refused in one line naming `source`.
    """
    import timm

    missing = [key for key in REQUIRED_KEYS if key not in state_dict]
    if missing:
        raise CheckpointError(f"{source} is not a DINO ViT state dict (no {', '.join(missing)}): give DINO's "
                              "released .pth (e.g. dino_vitbase8_pretrain.pth) or a .safetensors copy of it")
    if not all(value.is_floating_point() for value in state_dict.values()):
        raise CheckpointError(f"{source} holds non-float tensors: not a DINO ViT state dict")
    damaged = next((key for key, value in state_dict.items() if not torch.isfinite(value).all()), None)
    if damaged is not None:
        raise CheckpointError(f"{source}: {damaged} holds NaN or infinite values: the weights are damaged")
    shapes = {key: tuple(state_dict[key].shape) for key in REQUIRED_KEYS}
    if (len(shapes["cls_token"]) != 3 or len(shapes["pos_embed"]) != 3 or len(shapes["patch_embed.proj.weight"]) != 4
            or len(shapes["blocks.0.mlp.fc1.weight"]) != 2):
        described = ", ".join(f"{key} {list(shape)}" for key, shape in shapes.items())
        raise CheckpointError(f"{source}: its tensors do not have DINO ViT's shapes ({described}): not a DINO ViT "
                              "state dict")
    width = shapes["cls_token"][-1]
    if not HEAD_WIDTH <= width <= MAX_WIDTH or width % HEAD_WIDTH:
        raise CheckpointError(f"{source}: width {width} is not a multiple of {HEAD_WIDTH} up to {MAX_WIDTH} (DINO's "
                              f"heads are width / {HEAD_WIDTH})")
    positions = shapes["pos_embed"][-2] - 1
    grid = math.isqrt(max(positions, 0))
    if grid < 1 or grid * grid != positions or grid > MAX_GRID:
        raise CheckpointError(f"{source}: pos_embed holds {positions} patch positions, not a square grid of at most "
                              f"{MAX_GRID}²")
    blocks = {int(match.group(1)) for key in state_dict if (match := _BLOCK_KEY.match(key))}
    depth = len(blocks)
    if blocks != set(range(depth)) or depth > MAX_DEPTH:
        raise CheckpointError(f"{source}: its blocks are numbered {min(blocks)}..{max(blocks)} with gaps or more than "
                              f"{MAX_DEPTH}: not a DINO ViT state dict")
    patch = shapes["patch_embed.proj.weight"][-1]
    mlp_ratio = shapes["blocks.0.mlp.fc1.weight"][0] / width
    options = dict(pretrained=False, num_classes=0, embed_dim=width, depth=depth, num_heads=width // HEAD_WIDTH,
                   patch_size=patch, img_size=grid * patch, mlp_ratio=mlp_ratio)
    if not 1 <= patch <= MAX_PATCH:
        raise CheckpointError(f"{source}: patch {patch} is not in 1..{MAX_PATCH}: not a DINO ViT state dict")
    with torch.device("meta"):  # the layout first, without memory: a file's shapes cannot ask for more than it holds
        layout = timm.create_model(timm_arch, **options).state_dict()
    expected = {key: tuple(value.shape) for key, value in layout.items()}
    found = {key: tuple(value.shape) for key, value in state_dict.items()}
    if found != expected:
        key = next(key for key in sorted(expected.keys() | found.keys()) if expected.get(key) != found.get(key))
        raise CheckpointError(f"{source} does not fit timm's {timm_arch} layout: {key} is "
                              f"{list(found[key]) if key in found else 'missing'}, expected "
                              f"{list(expected[key]) if key in expected else 'no such tensor'}")
    model = timm.create_model(timm_arch, **options)
    model.load_state_dict({key: value.float() for key, value in state_dict.items()}, strict=True)
    return DinoViT(model.eval(), grid)


def random_dino(seed: int = 0, width: int = 768, depth: int = 12, patch: int = 8, image_size: int = 224,
                timm_arch: str = VFM_BACKBONES["dino_vitb8"].timm_arch) -> dict[str, torch.Tensor]:
    """A DINO-layout state dict with timm's random initialisation, as fp16 values (tests and benchmarks:
    no weights can be downloaded there); the defaults are DINO ViT-B/8's shapes."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(timm_arch, pretrained=False, num_classes=0, embed_dim=width, depth=depth,
                              num_heads=width // HEAD_WIDTH, patch_size=patch, img_size=image_size)
    return {key: value.half() for key, value in model.state_dict().items()}


def vfm_cache_path(backbone: VfmBackbone, root: str | os.PathLike | None = None) -> Path:
    """Where a named VFM's weights are kept: `<root or ~/.cache/clip>/<file name>`."""
    return Path(root or DEFAULT_CACHE_DIR).expanduser() / backbone.file_name


def download_vfm(name: str, root: str | os.PathLike | None = None) -> Path:
    """The verified weights file of VFM `name`, downloaded on first use.

    With a published SHA-256 the file is checked against it. Without one (DINO publishes none) the
    digest of the first complete download is pinned in `<file>.sha256` beside it and every later use
    checks the file against that pin; a file that no longer matches is deleted and fetched again once.
    """
    backbone = VFM_BACKBONES[name]
    target = vfm_cache_path(backbone, root)
    pin = target.with_name(target.name + PINNED_SUFFIX)
    expected = backbone.sha256 or (pin.read_text().strip() if pin.is_file() else None)
    logger = MMLogger.get_current_instance()
    if target.is_file():
        if expected is not None and sha256_of(target) == expected:
            return target
        logger.warning(f"{target} does not match its SHA-256 {expected}; downloading it again")
        target.unlink()
    logger.info(f"downloading VFM {name} from {backbone.url} to {target}")
    fetch_verified(backbone.url, target, expected)
    if expected is None:
        pin.write_text(sha256_of(target) + "\n")
    return target


def load_vfm(vfm: str, vfm_path: str | os.PathLike | None = None,
             download_root: str | os.PathLike | None = None) -> DinoViT:
    """The VFM named `vfm` (its weights from `vfm_path` when given, else downloaded), in eval mode.

    One model per file while any segmentor holds it: the web page keeps a segmentor per vocabulary, and
    each would otherwise hold its own copy of DINO (a file that changes on disk is read again). The
    model is never changed after it is built (no gradients, eval mode).

    Weights are read as tensors only (`scclip.clip.loading.load_state_dict`: DINO's `.pth` with
    `weights_only`, or `.safetensors`); a file that asks for code is refused.
    """
    backbone = VFM_BACKBONES[vfm]
    path = Path(vfm_path) if vfm_path is not None else download_vfm(vfm, download_root)
    if not path.is_file():
        raise CheckpointError(f"VFM file not found: {path} (give DINO's .pth or .safetensors file, or leave "
                              f"vfm_path out to download {vfm})")
    stat = path.stat()
    key = (vfm, str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    model = _LOADED.get(key)
    if model is None:
        model = build_dino(load_state_dict(path, kind="DINO"), backbone.timm_arch, str(path))
        _LOADED[key] = model
    return model
