"""ResCLIP's encoder: NACLIP's reduced last block with RCS and SFR (docs/method.md#resclip).

ResCLIP (SPEC Part III §11) keeps NACLIP's last block (k·kᵀ attention plus the Gaussian
neighbourhood bias, no residual, no MLP) and adds two things:
- RCS: the averaged query–key attention of blocks 6–9 (whatever the depth, as the release has it)
  is mixed into the last block's attention;
- SFR: a first pass predicts labels for the crop itself (10-step PAMR on its own pixels, a
  confidence threshold, a per-patch vote), and a second pass mixes a same-label matrix built from
  them (a path check along the grid, a 1-D smoothing, row normalisation) into the attention.

The first pass needs the text queries and the logit scale: the encoder declares `needs_queries`,
and the segmentor hands them to `forward`. Every quantity is computed per crop, so a batch gives
each crop its own result, and the path check runs in chunks of pairs under a fixed memory budget
instead of the release's tokens² × grid-size tensor.
"""
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .clip.model import VisionTransformer
from .clip.transformer import ResidualAttentionBlock
from .encoders import gaussian_bias
from .errors import InputError
from .pamr import pamr

RCS_BLOCKS = (5, 6, 7, 8)  # blocks 6–9 (1-based), hard-coded by the release for every depth
FIRST_PASS_PAMR_STEPS = 10  # the first pass's own PAMR, whatever `pamr_steps` says
FIRST_PASS_PAMR_DILATIONS = (8, 16)
ROW_EPS = 1e-8
PATH_BUDGET_BYTES = 64 * 2**20  # memory for the path check's temporaries, whatever the grid
PATH_BYTES_PER_PAIR = 8  # its int32 and bool temporaries per pair and step


@dataclass(frozen=True)
class ResCLIPConfig:
    """ResCLIP's own settings (docs/method.md#resclip).

    Attributes:
        temp_thd: first-pass pixels whose best query probability is below this get label 0.
        rcs_weights: (τ, λ) of A ← τ·((1−λ)·A + λ·A_c), A_c the mean attention of blocks 6–9.
        sfr_weights: (τ, λ) of S ← τ·((1−λ)·S + λ·M̂), M̂ the normalised same-label matrix.
        gaussian_std: σ of the neighbourhood bias and of the matrix's 1-D smoothing, in patches.
        delete_same_entity: same-label pairs whose walk crosses another label decay by exp(−c/D).
        rcs, sfr: apply each part (the release always applies both); off for the ablations.
    """

    temp_thd: float
    rcs_weights: tuple[float, float]
    sfr_weights: tuple[float, float]
    gaussian_std: float = 5.0
    delete_same_entity: bool = True
    rcs: bool = True
    sfr: bool = True

    def check(self, depth: int) -> None:
        """One line when this ViT's depth cannot give the blocks RCS reads."""
        if self.rcs and depth <= max(RCS_BLOCKS) + 1:
            raise InputError(f"ResCLIP's RCS reads the attention of blocks 6–9 and this ViT has {depth} blocks: "
                             f"use a ViT with at least {max(RCS_BLOCKS) + 2} blocks or rcs=False")


def attention_probabilities(block: ResidualAttentionBlock, tokens: torch.Tensor) -> torch.Tensor:
    """B×H×N×N per-head softmax(s·q·kᵀ) of a standard block on its B×N×C input (class token included)."""
    attn = block.attn
    q, k, _ = attn.qkv(block.ln_1(tokens))
    return ((q * attn.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)


def sfr_term(matrix: torch.Tensor, share: float) -> torch.Tensor:
    """λ·M̂ with M̂ = M / max(M) per crop, both rounded to float16 as the release does in every precision.

    The release multiplies a float16 tensor by λ, which PyTorch computes as float32(λ)·M̂ rounded to
    float16; written out here, so that an exported graph does not round λ to float16 first.
    """
    peak = matrix.amax(dim=(-2, -1), keepdim=True)
    return (share * (matrix / peak).half().float()).half()


def resclip_attention(
    block: ResidualAttentionBlock,
    tokens: torch.Tensor,
    grid: tuple[int, int],
    config: ResCLIPConfig,
    rcs_map: torch.Tensor | None = None,
    sfr_matrix: torch.Tensor | None = None,
) -> torch.Tensor:
    """The last block reduced to its attention (B×N×C out of B×N×C tokens), with the RCS and SFR mixes.

    S = s·(k·kᵀ); with `sfr_matrix` (B×N×N) S ← τ·((1−λ)·S + λ·M̂); S + G; softmax; with `rcs_map`
    (B×H×N×N) A ← τ·((1−λ)·A + λ·A_c); out_proj of A·v. The order of every operation is the release's.
    """
    attn = block.attn
    _, k, v = attn.qkv(block.ln_1(tokens))
    # In place where the order of operations allows: a 1024² whole image has 12 × 4,097² scores per map.
    scores = (k @ k.transpose(-2, -1)).mul_(attn.head_dim**-0.5)
    if sfr_matrix is not None:
        scale, share = config.sfr_weights
        scores.mul_(1 - share).add_(sfr_term(sfr_matrix, share)[:, None].to(scores.dtype)).mul_(scale)
    scores.add_(gaussian_bias(grid, config.gaussian_std, tokens.device).to(scores.dtype))
    weights = scores.softmax(dim=-1)
    del scores
    if rcs_map is not None:
        scale, share = config.rcs_weights
        weights.mul_(1 - share).add_(share * rcs_map.to(weights.dtype)).mul_(scale)
    return attn.out_proj(attn.merge_heads(weights.to(v.dtype) @ v))


def patch_labels(
    features: torch.Tensor,
    queries: torch.Tensor,
    logit_scale: float,
    images: torch.Tensor,
    grid: tuple[int, int],
    patch: int,
    temp_thd: float,
) -> torch.Tensor:
    """B×h×w query-index labels of the first pass (SPEC §11 R.3).

    Cosine maps of the B×N×D features with the Q queries, bilinear to the crop's pixels, PAMR (10
    steps, dilations 8 and 16) guided by the crop itself, softmax of logit_scale × maps; each pixel's
    best query (label 0 below `temp_thd`); each patch's most frequent label, the smallest on ties.
    """
    batch = features.shape[0]
    cosine = F.normalize(features.float(), dim=-1) @ queries.float().T  # B×N×Q
    maps = cosine.transpose(1, 2).reshape(batch, -1, *grid)
    maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
    maps = pamr(images.float(), maps, FIRST_PASS_PAMR_STEPS, FIRST_PASS_PAMR_DILATIONS)
    best, labels = (logit_scale * maps).softmax(dim=1).max(dim=1)
    labels = torch.where(best < temp_thd, torch.zeros_like(labels), labels)
    return patch_mode(labels, grid, patch, maps.shape[1])


def patch_mode(labels: torch.Tensor, grid: tuple[int, int], patch: int, num_labels: int) -> torch.Tensor:
    """B×h×w: the most frequent of each patch's p×p pixel labels (B×H×W), the smallest label on ties."""
    h, w = grid
    batch = labels.shape[0]
    blocks = labels[:, : h * patch, : w * patch].reshape(batch, h, patch, w, patch)
    patch_index = torch.arange(batch * h * w, device=labels.device).view(batch, h, 1, w, 1)
    counts = torch.bincount((patch_index * num_labels + blocks).flatten(), minlength=batch * h * w * num_labels)
    return counts.view(batch, h, w, num_labels).argmax(dim=-1)  # argmax: the first (smallest) of equal counts


def walk_steps(reach: int, device: torch.device | None = None) -> torch.Tensor:
    """t_k = linspace(0, 1, D+1) in float32, as the release builds them (torch.linspace's own rounding)."""
    return torch.linspace(0, 1, reach + 1, device=device)


def walk_coordinates(size: int, steps: torch.Tensor) -> torch.Tensor:
    """size×size×K table: round(a·(1−t) + b·t) in float32 for start a, end b and each step t."""
    start = torch.arange(size, dtype=torch.float32, device=steps.device)
    rest = 1 - steps
    return torch.round(start[:, None, None] * rest + start[None, :, None] * steps).long()


def path_valid(labels: torch.Tensor, budget_bytes: int = PATH_BUDGET_BYTES) -> torch.Tensor:
    """B×T×T bool: whether every point of pair (i, j)'s walk has i's label (SPEC §11 R.4 step 2), for
    B×h×w label maps.

    The walk visits round(i·(1−t_k) + j·t_k) for t_k = linspace(0, 1, D+1)[k], k = 0…c_ij, with
    c_ij the Chebyshev distance and D the grid's largest: the release's walk, which covers only
    c_ij/D of the segment. A walk's row depends only on the two rows and its column only on the two
    columns, so each step reads the label map at two small tables; pairs are held as
    (row of i, row of j, column of i, column of j) and processed in chunks of rows of i, so that the
    temporaries stay within `budget_bytes` (the release's form needs T²·(D+1) elements at once).
    """
    batch, h, w = labels.shape
    tokens = h * w
    reach = max(h, w) - 1
    device = labels.device
    valid = torch.ones(batch, h, h, w, w, dtype=torch.bool, device=device)  # (b, row i, row j, col i, col j)
    if reach > 0:
        steps = walk_steps(reach, device)
        row_walk, col_walk = walk_coordinates(h, steps), walk_coordinates(w, steps)
        small = labels.to(torch.int32)
        own = small[:, :, None, :, None]  # the label of i, for every j
        row_gap = (torch.arange(h, device=device)[:, None] - torch.arange(h, device=device)).abs()
        col_gap = (torch.arange(w, device=device)[:, None] - torch.arange(w, device=device)).abs()
        chunk = max(1, budget_bytes // (batch * h * w * w * PATH_BYTES_PER_PAIR))
        for start in range(0, h, chunk):
            rows = slice(start, start + chunk)
            far = row_gap[rows, :, None, None]
            for k in range(1, max(int(far.max()), int(col_gap.max())) + 1):
                at_walk = small[:, row_walk[rows, :, k]][..., col_walk[:, :, k]]  # B×rows×h×w×w
                walked = (far >= k) | (col_gap >= k)
                valid[:, rows] &= (at_walk == own[:, rows]) | ~walked
    return valid.permute(0, 1, 3, 2, 4).reshape(batch, tokens, tokens)


def grid_reach(h: int | torch.Tensor, w: int | torch.Tensor) -> torch.Tensor:
    """D = max(h, w) − 1, the largest Chebyshev distance of an h×w grid (a tensor, so that a trace keeps it)."""
    return torch.maximum(torch.as_tensor(h), torch.as_tensor(w)) - 1


def chebyshev_distances(h: int | torch.Tensor, w: int | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """T×T int64 Chebyshev distances between the patches of an h×w grid (row-major)."""
    index = torch.arange(h * w, device=device)
    rows, cols = torch.div(index, w, rounding_mode="floor"), torch.remainder(index, w)
    return torch.maximum((rows[:, None] - rows).abs(), (cols[:, None] - cols).abs())


def smoothing_taps(std: float, length: int | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """The release's 1-D Gaussian kernel, K = min(length, int(6σ+1)) taps made odd and summing to 1, centred
    in int(6σ+1) (made odd) taps with zeros outside K, so that one convolution serves every length."""
    full = int(6 * std + 1)
    full += 1 - full % 2
    size = torch.minimum(torch.as_tensor(length), torch.tensor(full))
    half = torch.div(size, 2, rounding_mode="floor")  # K // 2 of the odd K = size + 1 − size % 2
    offsets = torch.arange(full, device=device) - full // 2
    taps = torch.exp(-(offsets**2) / (2 * std**2)) * (offsets.abs() <= half.to(device))
    return taps / taps.sum()


def smooth_rows(rows: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Each row (last dimension) correlated with the odd-length `taps`, zero-padded to keep its length: a sum
    of shifted copies, which needs no im2col buffer of rows × taps (a convolution's, 1 GiB for 4,096 tokens)."""
    half = len(taps) // 2
    length = rows.shape[-1]
    padded = F.pad(rows, (half, half))
    smoothed = taps[0] * padded[..., :length]
    for offset in range(1, len(taps)):
        smoothed.addcmul_(padded[..., offset : offset + length], taps[offset])
    return smoothed


def same_label_matrix(labels: torch.Tensor, gaussian_std: float, delete_same_entity: bool,
                      budget_bytes: int = PATH_BUDGET_BYTES) -> torch.Tensor:
    """B×(T+1)×(T+1) float32 SFR matrices M of B×h×w patch label maps (SPEC §11 R.4), each crop its own.

    Same-label pairs 1, others 0; with `delete_same_entity`, same-label pairs whose walk meets another
    label decay by exp(−c_ij/D); each row smoothed by a 1-D Gaussian along the flattened index (rows
    of the grid wrap), clipped at 0 and normalised to sum 1; the class token's row and column 0.
    """
    batch, h, w = labels.shape
    flat = labels.flatten(1)
    same = (flat[:, :, None] == flat[:, None, :]).float()
    if delete_same_entity:
        decay = torch.exp(-(chebyshev_distances(h, w, labels.device).float() / grid_reach(h, w).to(labels.device)))
        same = torch.where(path_valid(labels, budget_bytes), same, same * decay)  # D = 0: every walk is valid
    smoothed = smooth_rows(same, smoothing_taps(gaussian_std, h * w, labels.device)).clamp(min=0)
    normalised = smoothed / (smoothed.sum(dim=-1, keepdim=True) + ROW_EPS)
    return F.pad(normalised, (1, 0, 1, 0))


class ResCLIPEncoder(nn.Module):
    """Dense patch features of ResCLIP: blocks 1 … L−1 once, then one or two passes of the last block.

    Args:
        visual: CLIP's image tower; its weights are used as they are.
        config: ResCLIP's settings.
    """

    needs_queries = True  # the segmentor passes `queries` and `logit_scale` to forward

    def __init__(self, visual: VisionTransformer, config: ResCLIPConfig) -> None:
        super().__init__()
        config.check(len(visual.transformer.resblocks))
        self.visual = visual
        self.config = config

    @property
    def patch_size(self) -> int:
        return self.visual.patch_size

    def last_block_input(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last block's B×N×C input and, with RCS, the B×H×N×N mean attention of blocks 6–9."""
        x = self.visual.embed(images)
        total = None
        for index, block in enumerate(self.visual.transformer.resblocks[:-1]):
            if self.config.rcs and index in RCS_BLOCKS:
                probabilities = attention_probabilities(block, x).float()
                total = probabilities if total is None else total.add_(probabilities)
            x = block(x)
        return x, None if total is None else total.div_(len(RCS_BLOCKS))

    def forward(
        self,
        images: torch.Tensor,
        return_anomalies: bool = False,
        queries: torch.Tensor | None = None,
        logit_scale: float | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """B×3×H×W normalised crops → B×N×D dense features (not normalised); ResCLIP finds no anomalies.

        `queries` (Q×D, L2-normalised) and `logit_scale` feed SFR's first pass; they are needed only
        while `sfr` is on.
        """
        config = self.config
        grid = self.visual.grid_size(*images.shape[-2:])
        last = self.visual.transformer.resblocks[-1]
        x, rcs_map = self.last_block_input(images)

        def features(sfr_matrix: torch.Tensor | None = None) -> torch.Tensor:
            out = resclip_attention(last, x, grid, config, rcs_map, sfr_matrix)
            return self.visual.ln_post(out[:, 1:]) @ self.visual.proj

        out = features()
        if config.sfr:
            if queries is None or logit_scale is None:
                raise InputError("ResCLIP's feedback pass (sfr) needs the query features and the logit scale: "
                                 "run it through SCCLIPForSegmentation, or pass queries= and logit_scale=")
            labels = patch_labels(out, queries, logit_scale, images, grid, self.patch_size, config.temp_thd)
            out = features(same_label_matrix(labels, config.gaussian_std, config.delete_same_entity))
        if return_anomalies:
            return out, torch.zeros(out.shape[:2], dtype=torch.bool, device=out.device)
        return out


def resclip_config(settings: Mapping[str, Any]) -> ResCLIPConfig:
    """ResCLIPConfig of a method's resolved settings (weights as float pairs)."""
    return ResCLIPConfig(
        temp_thd=float(settings["temp_thd"]),
        rcs_weights=tuple(float(value) for value in settings["rcs_weights"]),
        sfr_weights=tuple(float(value) for value in settings["sfr_weights"]),
        gaussian_std=float(settings["gaussian_std"]),
        delete_same_entity=bool(settings["delete_same_entity"]),
        rcs=bool(settings["rcs"]),
        sfr=bool(settings["sfr"]),
    )
