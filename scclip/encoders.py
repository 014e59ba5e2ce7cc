"""The encoder family: CLIP's ViT with its last block described as data (docs/method.md#baselines).

Every method of Part II runs blocks 1 … L−1 of CLIP unchanged and differs only in the last block:
which attention it uses and whether the residual and MLP are kept. `LastBlock` holds those two
choices (plus NACLIP's σ); `last_block_attention` computes any of the attentions from the last
block's own weights; `DenseEncoder` runs the whole tower with that block. SC-CLIP's calibration
(`scclip.calibration`) composes with the same functions instead of copying a ViT forward.
"""
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from .clip.model import VisionTransformer
from .clip.transformer import ResidualAttentionBlock

# Attention kinds of the last block, per head, on ln_1 of its input (q, k, v from its in_proj).
ATTENTIONS = {
    "qk": "softmax(q·kᵀ/√d): CLIP's own attention",
    "identity": "each token keeps its own value (A = I)",
    "qq": "softmax(q·qᵀ/√d)",
    "kk": "softmax(k·kᵀ/√d)",
    "qq+kk": "softmax(q·qᵀ/√d) + softmax(k·kᵀ/√d), rows summing to 2",
    "gaussian+kk": "softmax(k·kᵀ/√d + G), G a Gaussian neighbourhood bias",
    "gaussian": "softmax(m·G), m = mean ‖q_i‖·‖k_j‖/√d over heads and token pairs",
}


@dataclass(frozen=True)
class LastBlock:
    """What a method does in CLIP's last ViT block.

    Attributes:
        attention: one of `ATTENTIONS`.
        residual: keep the block's residual connection and MLP (x + A, then + MLP(ln_2)).
        gaussian_std: σ of the neighbourhood bias for the 'gaussian' kinds, in patches.
    """

    attention: str = "qk"
    residual: bool = True
    gaussian_std: float = 5.0

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention {self.attention!r} is not one of {', '.join(ATTENTIONS)}")
        if self.attention.startswith("gaussian") and not self.gaussian_std > 0:
            raise ValueError(f"gaussian_std={self.gaussian_std} must be positive")


@lru_cache(maxsize=32)
def _gaussian_bias_cpu(height: int, width: int, std: float) -> torch.Tensor:
    rows = torch.arange(height, dtype=torch.float64).repeat_interleave(width)
    cols = torch.arange(width, dtype=torch.float64).repeat(height)
    squared = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    bias = torch.zeros(height * width + 1, height * width + 1, dtype=torch.float64)
    bias[1:, 1:] = torch.exp(-squared / (2 * std**2))
    return bias.float()


def gaussian_bias(grid: tuple[int, int], std: float, device: torch.device | None = None) -> torch.Tensor:
    """NACLIP's (1+N)×(1+N) neighbourhood bias: exp(−distance²/2σ²) between patches, 0 for the class token.

    Computed directly in float64 (the release correlates one-hot maps, quadratic in the grid) and
    cached per grid and σ.
    """
    return _gaussian_bias_cpu(grid[0], grid[1], float(std)).to(device)


def _gaussian_scale(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """B×1×1×1 scalar per crop: mean over heads and all token pairs of ‖q_i‖·‖k_j‖, times 1/√d."""
    q_norm = q.float().norm(dim=-1).mean(dim=-1)  # B×H
    k_norm = k.float().norm(dim=-1).mean(dim=-1)
    return ((q_norm * k_norm).mean(dim=-1) * q.shape[-1] ** -0.5).view(-1, 1, 1, 1)


def head_attention(
    kind: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int], gaussian_std: float = 5.0
) -> torch.Tensor:
    """Per-head outputs A·v (B×H×N×d) of one attention kind; N includes the class token."""
    if kind == "qk":
        return F.scaled_dot_product_attention(q, k, v)
    if kind == "identity":
        return v
    if kind == "qq":
        return F.scaled_dot_product_attention(q, q, v)
    if kind == "kk":
        return F.scaled_dot_product_attention(k, k, v)
    if kind == "qq+kk":
        return F.scaled_dot_product_attention(q, q, v) + F.scaled_dot_product_attention(k, k, v)
    bias = gaussian_bias(grid, gaussian_std, q.device)
    if kind == "gaussian+kk":
        return F.scaled_dot_product_attention(k, k, v, attn_mask=bias.to(q.dtype))
    if kind == "gaussian":
        weights = (_gaussian_scale(q, k) * bias).softmax(dim=-1)
        return weights.to(v.dtype) @ v
    raise ValueError(f"attention {kind!r} is not one of {', '.join(ATTENTIONS)}")


def last_block_attention(
    block: ResidualAttentionBlock, tokens: torch.Tensor, kind: str, grid: tuple[int, int], gaussian_std: float = 5.0
) -> torch.Tensor:
    """out_proj of the heads' A·v for B×N×C tokens, on ln_1 of them; no residual, no MLP."""
    attn = block.attn
    q, k, v = attn.qkv(block.ln_1(tokens))
    return attn.out_proj(attn.merge_heads(head_attention(kind, q, k, v, grid, gaussian_std)))


def run_last_block(
    block: ResidualAttentionBlock, tokens: torch.Tensor, spec: LastBlock, grid: tuple[int, int]
) -> torch.Tensor:
    """The last block as `spec` describes it, on B×(1+N)×C tokens."""
    out = last_block_attention(block, tokens, spec.attention, grid, spec.gaussian_std)
    if not spec.residual:
        return out
    x = tokens + out
    return x + block.mlp(block.ln_2(x))


class DenseEncoder(nn.Module):
    """Dense patch features of CLIP's ViT with a replaced last block (vanilla CLIP, MaskCLIP, SCLIP,
    ClearCLIP, NACLIP).

    Args:
        visual: CLIP's image tower; its weights are used as they are.
        last_block: what the last block computes.
    """

    def __init__(self, visual: VisionTransformer, last_block: LastBlock = LastBlock()) -> None:
        super().__init__()
        self.visual = visual
        self.last_block = last_block

    @property
    def patch_size(self) -> int:
        return self.visual.patch_size

    def forward(
        self, images: torch.Tensor, return_anomalies: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """B×3×H×W crops → B×N×D dense features (not normalised); these methods find no anomalies."""
        grid = self.visual.grid_size(*images.shape[-2:])
        blocks = self.visual.transformer.resblocks
        x = self.visual.embed(images)
        for block in blocks[:-1]:
            x = block(x)
        x = run_last_block(blocks[-1], x, self.last_block, grid)
        out = self.visual.ln_post(x[:, 1:]) @ self.visual.proj
        if return_anomalies:
            return out, torch.zeros(out.shape[:2], dtype=torch.bool, device=out.device)
        return out
