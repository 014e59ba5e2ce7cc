"""CLIP's ViT image tower and text tower, and building them from a state dict in OpenAI's key layout."""
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from .constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .transformer import LayerNorm, Transformer

HEAD_WIDTH = 64  # OpenAI's CLIPs use width / 64 heads in both towers (open_clip's ViT-H/14: 80)
LAYOUT_MISMATCH = "state dict does not match the CLIP ViT layout: "
CHECKPOINT_METADATA_KEYS = ("input_resolution", "context_length", "vocab_size")
REQUIRED_KEYS = (
    "visual.conv1.weight",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.ln_pre.weight",
    "visual.ln_post.weight",
    "visual.proj",
    "token_embedding.weight",
    "positional_embedding",
    "ln_final.weight",
    "text_projection",
    "logit_scale",
)


def resample_position_embedding(
    pos_embed: torch.Tensor, grid: tuple[int, int], trained_grid: int
) -> torch.Tensor:
    """Bicubically resample the patch part of a (1+g²)×C position embedding to an h×w grid.

    The scale factor (h+0.1)/g is passed to `interpolate` on purpose: PyTorch then maps
    coordinates by its reciprocal, which is what the published numbers were computed with
    (passing `size=` gives different values).
    """
    h, w = grid
    if (h, w) == (trained_grid, trained_grid):
        return pos_embed
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    width = pos_embed.shape[-1]
    # (g²)×C -> 1×C×g×g
    patch_pos = patch_pos.float().reshape(1, trained_grid, trained_grid, width).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(
        patch_pos,
        scale_factor=((h + 0.1) / trained_grid, (w + 0.1) / trained_grid),
        mode="bicubic",
        align_corners=False,
    )
    if patch_pos.shape[-2:] != (h, w):
        raise RuntimeError(f"position embedding resampled to {tuple(patch_pos.shape[-2:])}, not {(h, w)}")
    # 1×C×h×w -> (h·w)×C
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(h * w, width).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=0)


class VisionTransformer(nn.Module):
    """CLIP's image encoder.

    Args:
        input_resolution: the square size it was trained at (224 or 336).
        patch_size: patch side p.
        width: token width C.
        layers: number of residual blocks L.
        heads: attention heads.
        output_dim: joint embedding width D.
        fused: use fused attention kernels in the blocks.
        activation: MLP activation, 'quick_gelu' (OpenAI) or 'gelu'.
        mlp_width: MLP hidden width (default 4·width).
    """

    def __init__(
        self,
        input_resolution: int,
        patch_size: int,
        width: int,
        layers: int,
        heads: int,
        output_dim: int,
        fused: bool = True,
        activation: str = "quick_gelu",
        mlp_width: int | None = None,
    ) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.trained_grid = input_resolution // patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.trained_grid**2 + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, fused=fused, activation=activation, mlp_width=mlp_width)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid h×w of an H×W input; pixels past the last full patch are not embedded."""
        return height // self.patch_size, width // self.patch_size

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch-embed B×3×H×W images into B×(1+h·w)×C tokens (class token first), after ln_pre."""
        h, w = self.grid_size(*images.shape[-2:])
        p = self.patch_size
        x = self.conv1(images[:, :, : h * p, : w * p].to(self.conv1.weight.dtype))
        x = x.flatten(2).transpose(1, 2)  # B×C×h×w -> B×N×C, row-major
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + resample_position_embedding(self.positional_embedding, (h, w), self.trained_grid).to(x.dtype)
        return self.ln_pre(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Global image embedding, B×D."""
        x = self.transformer(self.embed(images))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    """CLIP with a ViT image tower; the text tower's weights sit at the top level, as in OpenAI's files.

    The first arguments are OpenAI's; the keyword ones after `fused` describe open_clip's variants of
    the same model (its ViT-H/14 has 16 heads of width 80, most LAION models use GELU, ViT-bigG/14 a
    wider MLP). Their defaults are OpenAI's.

    Attributes set by the loader: `image_mean`, `image_std` (the RGB normalisation the weights were
    trained with), `architecture` (the open_clip model name, or None for OpenAI's layout) and
    `checkpoint_path` (the file the weights came from, or None).
    """

    def __init__(
        self,
        embed_dim: int,
        image_resolution: int,
        vision_layers: int,
        vision_width: int,
        vision_patch_size: int,
        context_length: int,
        vocab_size: int,
        transformer_width: int,
        transformer_heads: int,
        transformer_layers: int,
        fused: bool = True,
        vision_heads: int | None = None,
        activation: str = "quick_gelu",
        vision_mlp_width: int | None = None,
        transformer_mlp_width: int | None = None,
    ) -> None:
        super().__init__()
        self.context_length = context_length
        self.visual = VisionTransformer(
            input_resolution=image_resolution,
            patch_size=vision_patch_size,
            width=vision_width,
            layers=vision_layers,
            heads=vision_heads or vision_width // HEAD_WIDTH or 1,
            output_dim=embed_dim,
            fused=fused,
            activation=activation,
            mlp_width=vision_mlp_width,
        )
        self.transformer = Transformer(
            transformer_width,
            transformer_layers,
            transformer_heads,
            fused=fused,
            activation=activation,
            mlp_width=transformer_mlp_width,
        )
        self.token_embedding = nn.Embedding(vocab_size, transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, transformer_width))
        self.ln_final = LayerNorm(transformer_width)
        self.text_projection = nn.Parameter(torch.empty(transformer_width, embed_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
        self.image_std: tuple[float, float, float] = OPENAI_CLIP_STD
        self.architecture: str | None = None
        self.checkpoint_path = None

    @property
    def dtype(self) -> torch.dtype:
        return self.visual.conv1.weight.dtype

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Global image embeddings, B×D."""
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text embeddings (B×D) of B×context_length token ids.

        Only the positions up to the last end-of-text token of the batch are run: with a causal
        mask the later (padding) positions cannot change the earlier ones, so this is exact.
        """
        eot = tokens.argmax(dim=-1)
        length = int(eot.max()) + 1
        x = self.token_embedding(tokens[:, :length]).to(self.dtype)
        x = x + self.positional_embedding[:length].to(self.dtype)
        x = self.transformer(x, causal=True)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection


def _count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}resblocks\.(\d+)\.")
    indices = {int(m.group(1)) for key in state_dict if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def openai_config(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """CLIP's constructor arguments read off a state dict in OpenAI's layout (heads = width / 64)."""
    if any(key.startswith("visual.layer1.") for key in state_dict):
        raise CheckpointError(
            "this is a ResNet CLIP checkpoint; dense SC-CLIP needs a ViT CLIP (e.g. ViT-B/16 or ViT-L/14)"
        )
    missing = [key for key in REQUIRED_KEYS if key not in state_dict]
    if missing:
        raise CheckpointError(f"not a CLIP ViT state dict: missing keys {', '.join(missing)}")
    conv = state_dict["visual.conv1.weight"]
    vision_width, patch_size = conv.shape[0], conv.shape[-1]
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    transformer_width = state_dict["ln_final.weight"].shape[0]
    return dict(
        embed_dim=state_dict["text_projection"].shape[1],
        image_resolution=patch_size * grid,
        vision_layers=_count_blocks(state_dict, "visual.transformer."),
        vision_width=vision_width,
        vision_patch_size=patch_size,
        context_length=state_dict["positional_embedding"].shape[0],
        vocab_size=state_dict["token_embedding.weight"].shape[0],
        transformer_width=transformer_width,
        transformer_heads=max(transformer_width // HEAD_WIDTH, 1),
        transformer_layers=_count_blocks(state_dict, "transformer."),
    )


def _layout_mismatch(model: CLIP, state_dict: dict[str, torch.Tensor]) -> str | None:
    """What keeps `state_dict` from loading strictly into `model` (first few differences), or None."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    reshaped = [
        f"{key} is {'×'.join(map(str, state_dict[key].shape)) or 'a scalar'}, "
        f"expected {'×'.join(map(str, expected[key].shape)) or 'a scalar'}"
        for key in sorted(expected, key=lambda key: not key.startswith("visual."))  # the image tower tells most
        if key in state_dict and state_dict[key].shape != expected[key].shape
    ]
    details = []
    if reshaped:
        details.append("; ".join(reshaped[:2]))
    if missing:
        details.append(f"missing keys {', '.join(missing[:8])}")
    if unexpected:
        details.append(f"unexpected keys {', '.join(unexpected[:8])}")
    return "; ".join(details) or None


def build_model(
    state_dict: dict[str, torch.Tensor], fused: bool = True, config: dict[str, Any] | None = None
) -> CLIP:
    """Build a ViT CLIP from a state dict in OpenAI's key layout.

    Args:
        state_dict: the weights (OpenAI's key names; open_clip's plain CLIPs use the same).
        fused: use fused attention kernels.
        config: CLIP's constructor arguments, e.g. from an open_clip architecture
            (`scclip.clip.openclip`). None reads OpenAI's architecture off the state dict and rounds
            the weights to float16 values (the precision OpenAI released); a given config keeps the
            stored values.

    Returns the model in float32, in eval mode, on the CPU.
    """
    round_to_fp16 = config is None
    if config is None:
        config = openai_config(state_dict)
    state_dict = {k: v for k, v in state_dict.items() if k not in CHECKPOINT_METADATA_KEYS}
    with torch.device("meta"):  # no memory or random init for weights that are replaced right away
        model = CLIP(**config, fused=fused)
    mismatch = _layout_mismatch(model, state_dict)
    if mismatch:
        raise CheckpointError(f"{LAYOUT_MISMATCH}{mismatch}")
    weights: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not value.is_floating_point():
            raise CheckpointError(
                f"{key} holds {str(value.dtype).removeprefix('torch.')} values: CLIP's weights are floating "
                f"point (the file is not a CLIP checkpoint or was converted wrongly)"
            )
        weights[key] = (value.to(torch.float16) if round_to_fp16 else value).float()
        if not torch.isfinite(weights[key]).all():  # NaN weights would give one class everywhere, silently
            raise CheckpointError(
                f"{key} holds NaN or infinite values: the weights are damaged (e.g. a training run that diverged)"
                if not torch.isfinite(value).all()
                else f"{key} holds values beyond float16's range, to which OpenAI-layout weights are rounded "
                f"(for open_clip weights give their architecture: arch / --clip-arch)"
            )
    model.load_state_dict(weights, strict=True, assign=True)
    return model.float().eval()
