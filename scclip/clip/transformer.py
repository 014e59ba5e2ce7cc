"""The residual attention blocks of CLIP, with OpenAI's parameter names.

Keeping the names (`attn.in_proj_weight`, `attn.out_proj`, `ln_1`, `mlp.c_fc`, `mlp.c_proj`, `ln_2`)
lets official checkpoints load strictly, with no renaming. Tensors are batch-first (B×N×C).
"""
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back, as CLIP's half-precision weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        out = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """The sigmoid approximation of GELU that CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


# The MLP activations of CLIP checkpoints: OpenAI's (and MetaCLIP's, DFN's) QuickGELU, or the exact
# GELU that most OpenCLIP LAION/DataComp models were trained with. A checkpoint does not record which.
ACTIVATIONS: dict[str, type[nn.Module]] = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


def activation_layer(name: str) -> nn.Module:
    """A new activation module by name ('quick_gelu' or 'gelu')."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed q,k,v projection (`nn.MultiheadAttention`'s layout).

    Args:
        width: token width C.
        heads: number of heads; C must be divisible by it.
        fused: use `F.scaled_dot_product_attention`; the plain path computes the same thing
            explicitly and is kept for checking.
    """

    def __init__(self, width: int, heads: int, fused: bool = True) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.head_dim = width // heads
        self.fused = fused
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # B×N×C -> B×H×N×d
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        # B×H×N×d -> B×N×C
        b, _, n, _ = x.shape
        return x.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project B×N×C tokens to per-head queries, keys and values (each B×H×N×d)."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.split_heads(q), self.split_heads(k), self.split_heads(v)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        # x: B×N×C
        q, k, v = self.qkv(x)
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            if causal:
                n = x.shape[1]
                mask = torch.ones(n, n, dtype=torch.bool, device=x.device).triu(1)
                scores = scores.masked_fill(mask, float("-inf"))
            out = scores.softmax(dim=-1) @ v
        return self.out_proj(self.merge_heads(out))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    Args:
        width: token width C.
        heads: attention heads.
        fused: use fused attention kernels.
        activation: the MLP's activation, 'quick_gelu' (OpenAI) or 'gelu'.
        mlp_width: hidden width of the MLP (default 4·C; e.g. ViT-bigG-14 uses 8192 for C = 1664).
    """

    def __init__(
        self, width: int, heads: int, fused: bool = True, activation: str = "quick_gelu", mlp_width: int | None = None
    ) -> None:
        super().__init__()
        mlp_width = mlp_width or width * 4
        self.ln_1 = LayerNorm(width)
        self.attn = SelfAttention(width, heads, fused=fused)
        self.ln_2 = LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, mlp_width)),
                    ("gelu", activation_layer(activation)),  # OpenAI's module name, whatever the activation
                    ("c_proj", nn.Linear(mlp_width, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks (`resblocks`, as in OpenAI's key names)."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        fused: bool = True,
        activation: str = "quick_gelu",
        mlp_width: int | None = None,
    ) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            [
                ResidualAttentionBlock(width, heads, fused=fused, activation=activation, mlp_width=mlp_width)
                for _ in range(layers)
            ]
        )

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, causal=causal)
        return x
