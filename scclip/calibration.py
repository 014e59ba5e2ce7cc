"""SC-CLIP's self-calibration of CLIP's dense features (docs/method.md#sc-clip-encoder).

The maths is kept as pure functions on batched tensors (anomaly detection by LOF or, as in the
release's first commit, by norm (docs/method.md#anomaly-detection-by-norm), anomaly resolution,
similarity aggregation, the calibrated last-block attention); `SCCLIPEncoder` composes them with
a CLIP ViT. Every statistic is computed per crop, so a batch of crops gives exactly what each
crop gives alone, and no N×N×C tensor is ever built.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .clip.model import VisionTransformer
from .clip.transformer import ResidualAttentionBlock
from .encoders import last_block_attention
from .errors import InputError

SIMILARITY_ROW_EPS = 1e-6
NAN_REACH = 1e-6  # the release's stand-in for a NaN mean reach distance
ATTENTION_SHARPNESS = 3.0
# How anomaly tokens are found: "lof" (the release's second commit, 0417ba9) or "norm" (its first, 74471da).
ANOMALY_DETECTORS = ("lof", "norm")
NORM_ANOMALIES = 10  # the first commit's fixed number of anomaly tokens per crop


def check_anomaly_detector(value: object) -> None:
    """One line naming the valid detectors when `value` is not one of them."""
    if not isinstance(value, str) or value not in ANOMALY_DETECTORS:
        raise InputError(f"anomaly_detector={value!r} is not one of {', '.join(ANOMALY_DETECTORS)}")


@dataclass(frozen=True)
class CalibrationConfig:
    """Hyper-parameters of the calibration (defaults: the published ViT-B/16 settings).

    Indices refer to the list of intermediate features: index i is the output of block i+1.
    The four switches each remove one component of the method (docs/method.md#component-switches); all on is SC-CLIP.
    `anomaly_detector` chooses how step 3 finds anomaly tokens: "lof" (`lof_neighbors`,
    `contamination`) or "norm" (the release's first commit,
    docs/method.md#anomaly-detection-by-norm); it matters only while `anomaly_resolution` is on.
    """

    pre_adjust_idx: int = 8
    post_adjust_idx: int = 3
    multi_start_idx: int = 3
    multi_end_idx: int = 10
    res_cls: float = 0.3
    beta: float = 0.4
    lof_neighbors: int = 30
    contamination: float = 0.05
    anomaly_detector: str = "lof"
    anomaly_resolution: bool = True
    attention_calibration: bool = True
    feature_aggregation: bool = True
    multi_level_fusion: bool = True

    def check(self, num_blocks: int) -> None:
        """Fail early, naming the setting, for indices that do not fit a ViT of this depth or an unknown detector."""
        check_anomaly_detector(self.anomaly_detector)
        last = num_blocks - 2  # the last intermediate feature: the input of the last block
        for name in ("pre_adjust_idx", "post_adjust_idx", "multi_start_idx"):
            value = getattr(self, name)
            if not 0 <= value <= last:
                raise InputError(f"{name}={value} does not fit a ViT with {num_blocks} blocks (use 0..{last})")
        if not self.multi_start_idx < self.multi_end_idx <= last + 1:
            raise InputError(
                f"multi_end_idx={self.multi_end_idx} must lie in {self.multi_start_idx + 1}..{last + 1} "
                f"for a ViT with {num_blocks} blocks"
            )


def squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances B×N×N of B×N×C tokens, via Gram matrices in float64."""
    x = x.double()
    sq_norm = (x * x).sum(-1)
    dist = sq_norm[:, :, None] + sq_norm[:, None, :] - 2 * (x @ x.transpose(1, 2))
    return dist.clamp_min_(0)


def local_outlier_factor(x: torch.Tensor, neighbors: int = 30) -> torch.Tensor:
    """The release's LOF variant (B×N, float32) of B×N×C tokens.

    Its reachability distance uses the query's own k-distance, so lrd(i) = 1/kdist(i) and
    lof(i) = mean over i's k nearest neighbours j of kdist(i) / kdist(j).
    """
    b, n, _ = x.shape
    k = min(neighbors, n - 1)
    if k < 1:
        return torch.ones(b, n, device=x.device)
    dist = squared_distances(x)
    dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))  # a token is not its own neighbour
    knn_dist, knn_idx = dist.topk(k, dim=-1, largest=False)  # B×N×k
    kdist = knn_dist[..., -1].float().nan_to_num(nan=NAN_REACH)  # B×N
    lrd = 1.0 / kdist
    neighbour_lrd = lrd.gather(1, knn_idx.flatten(1)).view(b, n, k)
    return (neighbour_lrd / lrd[..., None]).mean(-1)


def detect_anomalies(x: torch.Tensor, neighbors: int = 30, contamination: float = 0.05) -> torch.Tensor:
    """B×N boolean mask of anomaly tokens: LOF strictly above its (1 − contamination) quantile."""
    lof = local_outlier_factor(x, neighbors)
    threshold = torch.quantile(lof, 1.0 - contamination, dim=-1, keepdim=True)
    return lof > threshold


def detect_anomalies_by_norm(x: torch.Tensor, count: int = NORM_ANOMALIES) -> torch.Tensor:
    """B×N boolean mask of each crop's min(count, N) tokens of largest L2 norm (the release's first commit).

    The norms are taken in float32 whatever the tokens' dtype: in half precision nearby norms
    round to one value and the choice among them would be arbitrary. Among exactly equal norms,
    `torch.topk` decides which tokens are taken.
    """
    norms = torch.linalg.vector_norm(x.float(), dim=-1)  # B×N
    top = norms.topk(min(count, x.shape[1]), dim=-1).indices
    return torch.zeros_like(norms, dtype=torch.bool).scatter_(1, top, True)


def find_anomalies(x: torch.Tensor, config: CalibrationConfig) -> torch.Tensor:
    """B×N anomaly mask of B×N×C tokens with the detector `config` names."""
    if config.anomaly_detector == "norm":
        return detect_anomalies_by_norm(x)
    return detect_anomalies(x, config.lof_neighbors, config.contamination)


def resolve_anomalies(tokens: torch.Tensor, anomalies: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Replace each anomaly token by the mean of its valid 8-neighbours on the h×w token map.

    Valid neighbours lie inside the map and are not anomalies; the mean divides by their count.
    An anomaly with no valid neighbour keeps its value.
    """
    # tokens: B×N×C, anomalies: B×N, N = h·w (row-major)
    b, n, c = tokens.shape
    h, w = grid
    x = tokens.transpose(1, 2).reshape(b, c, h, w)
    valid = (~anomalies).to(tokens.dtype).view(b, 1, h, w)
    ring = torch.ones(1, 1, 3, 3, dtype=tokens.dtype, device=tokens.device)
    ring[0, 0, 1, 1] = 0
    total = F.conv2d(x * valid, ring.expand(c, 1, 3, 3), padding=1, groups=c)  # per-channel neighbour sums
    count = F.conv2d(valid, ring, padding=1)  # B×1×h×w
    mean = total / count.clamp_min(1)
    replace = anomalies.view(b, 1, h, w) & (count > 0)
    out = torch.where(replace, mean, x)
    return out.flatten(2).transpose(1, 2)


def cosine_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """B×N×N cosine similarities of B×N×C tokens."""
    unit = F.normalize(tokens, dim=-1)
    return unit @ unit.transpose(1, 2)


def floor_similarity(similarity: torch.Tensor, beta: float) -> torch.Tensor:
    """Set similarities below `beta` to zero."""
    return similarity.masked_fill(similarity < beta, 0.0)


def aggregate(tokens: torch.Tensor, similarity: torch.Tensor) -> torch.Tensor:
    """Mix tokens with row-normalised similarities: (S / (rowsum(S) + 1e-6)) · Y."""
    weights = similarity / (similarity.sum(-1, keepdim=True) + SIMILARITY_ROW_EPS)
    return weights @ tokens


def similarity_attention_weights(similarity: torch.Tensor) -> torch.Tensor:
    """softmax(M), M = 3·(S − mean(S)) with negative entries masked; one mean per crop."""
    centred = ATTENTION_SHARPNESS * (similarity - similarity.mean(dim=(-2, -1), keepdim=True))
    return centred.masked_fill(centred < 0, float("-inf")).softmax(dim=-1)


def calibrated_attention(
    block: ResidualAttentionBlock, tokens: torch.Tensor, similarity_weights: torch.Tensor
) -> torch.Tensor:
    """The last block's attention recalibrated: ½·softmax(M) + ½·softmax(k·kᵀ/√d), on its values.

    No residual and no MLP. softmax(M) is shared by all heads, so it multiplies the values of all
    heads at once; the key-key half is ordinary attention with the keys as queries.
    """
    # tokens: B×N×C, similarity_weights: B×N×N
    attn = block.attn
    width = tokens.shape[-1]
    z = block.ln_1(tokens)
    k, v = F.linear(z, attn.in_proj_weight[width:], attn.in_proj_bias[width:]).chunk(2, dim=-1)
    from_similarity = similarity_weights.to(v.dtype) @ v
    k, v = attn.split_heads(k), attn.split_heads(v)
    from_keys = attn.merge_heads(F.scaled_dot_product_attention(k, k, v))
    return attn.out_proj(0.5 * from_similarity + 0.5 * from_keys)


class SCCLIPEncoder(nn.Module):
    """Dense, self-calibrated features of a CLIP ViT (docs/method.md#sc-clip-encoder).

    Args:
        visual: CLIP's image tower; its weights are used as they are.
        config: the calibration hyper-parameters.
    """

    def __init__(self, visual: VisionTransformer, config: CalibrationConfig = CalibrationConfig()) -> None:
        super().__init__()
        config.check(len(visual.transformer.resblocks))
        self.visual = visual
        self.config = config

    @property
    def patch_size(self) -> int:
        return self.visual.patch_size

    def intermediate_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run all blocks but the last, keeping only the intermediate features the method reads.

        Returns B×(1+N)×C tensors: 'last' (input of the last block), 'pre', 'post' (the
        features at pre/post_adjust_idx) and 'multi' (the sum over the multi-level range).
        """
        cfg = self.config
        blocks = self.visual.transformer.resblocks
        x = self.visual.embed(images)
        kept: dict[str, torch.Tensor] = {}
        multi = None
        for index, block in enumerate(blocks[:-1]):
            x = block(x)
            if index == cfg.pre_adjust_idx:
                kept["pre"] = x
            if index == cfg.post_adjust_idx:
                kept["post"] = x
            if cfg.multi_start_idx <= index < cfg.multi_end_idx:
                multi = x if multi is None else multi + x
        kept["last"] = x
        kept["multi"] = multi
        return kept

    def forward(
        self, images: torch.Tensor, return_anomalies: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """B×3×H×W crops → B×N×D dense features (not normalised), and optionally the B×N anomaly mask.

        A switch that is off removes its component as docs/method.md#component-switches defines it and touches nothing else.
        """
        cfg = self.config
        grid = self.visual.grid_size(*images.shape[-2:])
        last_block = self.visual.transformer.resblocks[-1]
        feats = self.intermediate_features(images)

        last = feats["last"]
        cls, patches = last[:, :1], last[:, 1:]
        mid_tokens = feats["pre"][:, 1:]
        if cfg.anomaly_resolution:
            anomalies = find_anomalies(patches, cfg)
            x = resolve_anomalies(patches, anomalies, grid)
            mid_tokens = resolve_anomalies(mid_tokens, anomalies, grid)
        else:
            anomalies = torch.zeros(patches.shape[:2], dtype=torch.bool, device=patches.device)
            x = patches

        mid_similarity = cosine_similarity(mid_tokens)
        if cfg.attention_calibration:
            attention_weights = similarity_attention_weights(mid_similarity)

            def attend(tokens: torch.Tensor) -> torch.Tensor:
                return calibrated_attention(last_block, tokens, attention_weights)
        else:

            def attend(tokens: torch.Tensor) -> torch.Tensor:
                return last_block_attention(last_block, tokens, "kk", grid)

        if cfg.feature_aggregation:
            x = aggregate(x, floor_similarity(mid_similarity, cfg.beta))
        x = attend(x) + cfg.res_cls * cls
        if cfg.feature_aggregation:
            post_similarity = floor_similarity(cosine_similarity(feats["post"][:, 1:]), cfg.beta)
            x = aggregate(x, post_similarity)

        if cfg.multi_level_fusion:
            multi = feats["multi"]
            fused = attend(multi[:, 1:]) + cfg.res_cls * multi[:, :1]
            if cfg.feature_aggregation:
                fused = aggregate(fused, post_similarity)
            x = x + fused

        out = self.visual.ln_post(x) @ self.visual.proj
        return (out, anomalies) if return_anomalies else out
