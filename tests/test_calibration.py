"""The calibration maths on small hand-checkable inputs, and the encoder's batching contract."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scclip.calibration import (
    CalibrationConfig,
    SCCLIPEncoder,
    aggregate,
    calibrated_attention,
    cosine_similarity,
    detect_anomalies,
    detect_anomalies_by_norm,
    floor_similarity,
    local_outlier_factor,
    resolve_anomalies,
    similarity_attention_weights,
)
from scclip.clip.architectures import random_clip
from scclip.clip.transformer import ResidualAttentionBlock, SelfAttention
from scclip.errors import InputError


def brute_force_lof(x: torch.Tensor, k: int) -> torch.Tensor:
    """LOF of N×C points by the release's definitions, with loops (reachability uses kdist of the query)."""
    n = x.shape[0]
    dist = [[float(((x[i] - x[j]) ** 2).sum()) for j in range(n)] for i in range(n)]
    neighbours, kdist = [], []
    for i in range(n):
        order = sorted((dist[i][j], j) for j in range(n) if j != i)[:k]
        neighbours.append([j for _, j in order])
        kdist.append(order[-1][0])
    lrd = [1.0 / (sum(max(dist[i][j], kdist[i]) for j in neighbours[i]) / k) for i in range(n)]
    return torch.tensor([sum(lrd[j] for j in neighbours[i]) / k / lrd[i] for i in range(n)])


def test_lof_matches_brute_force_definition():
    x = torch.randn(1, 40, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(local_outlier_factor(x, 6)[0], brute_force_lof(x[0], 6).float(), rtol=1e-5, atol=1e-6)


def test_planted_outliers_are_detected():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 100, 8, generator=generator) * 0.1
    planted = [3, 50, 97]
    x[0, planted] += torch.tensor([5.0, -6.0, 7.0])[:, None]
    flagged = detect_anomalies(x, neighbors=10, contamination=0.05)[0]
    assert flagged[planted].all()
    assert flagged.sum() <= 5  # strictly above the 95% quantile of 100 values
    lof = local_outlier_factor(x, 10)[0]
    assert lof[planted].min() > 3 * lof[[i for i in range(100) if i not in planted]].max()


def test_anomaly_detection_is_per_crop():
    x = torch.randn(3, 64, 16, generator=torch.Generator().manual_seed(2))
    batched = detect_anomalies(x)
    for b in range(3):
        assert torch.equal(batched[b], detect_anomalies(x[b : b + 1])[0])


def test_fewer_tokens_than_neighbours_still_works():
    x = torch.randn(1, 12, 4)
    assert local_outlier_factor(x, 30).shape == (1, 12)


def top_norms(tokens: np.ndarray, count: int = 10) -> set[int]:
    """docs/method.md#anomaly-detection-by-norm written out: the indices of the min(count, N) largest L2 norms (float64)."""
    norms = np.sqrt((tokens.astype(np.float64) ** 2).sum(-1))
    return set(np.argsort(-norms, kind="stable")[:count].tolist())


@pytest.mark.parametrize("seed, crops, tokens, width", [(0, 1, 196, 64), (1, 3, 256, 16), (2, 2, 37, 5), (3, 4, 11, 8),
                                                        (4, 2, 10, 3), (5, 3, 4, 7), (6, 1, 1, 2)])
def test_norm_anomalies_are_each_crops_largest_norms(seed, crops, tokens, width):
    x = torch.randn(crops, tokens, width, generator=torch.Generator().manual_seed(seed))
    x *= torch.rand(crops, tokens, 1, generator=torch.Generator().manual_seed(seed + 100)) * 3  # spread the norms
    mask = detect_anomalies_by_norm(x)
    assert mask.shape == (crops, tokens) and mask.dtype == torch.bool
    for crop in range(crops):
        assert set(mask[crop].nonzero().flatten().tolist()) == top_norms(x[crop].numpy())
    assert (mask.sum(-1) == min(10, tokens)).all()  # ten per crop; all of them when a crop has ten or fewer


def test_norm_anomalies_of_a_crop_do_not_depend_on_its_batch():
    x = torch.randn(4, 50, 6, generator=torch.Generator().manual_seed(7))
    x[2] *= 100  # one crop of far larger tokens must not take the others' anomalies
    batched = detect_anomalies_by_norm(x)
    for crop in range(4):
        assert torch.equal(batched[crop], detect_anomalies_by_norm(x[crop : crop + 1])[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_norm_anomalies_of_half_tokens_use_float32_norms(dtype):
    """Norms ≈ 8 + k/1024 (k = 0..19): rounded to 4 values in float16 and 1 in bfloat16, twenty in float32."""
    x = torch.ones(1, 20, 64, dtype=dtype)
    steps = torch.randperm(20, generator=torch.Generator().manual_seed(8))
    x[0, :, 0] += (steps * 2.0**-7).to(dtype)  # exact in both half types: 1 + k/128
    expected = set(steps.argsort()[10:].tolist())  # the ten largest steps
    assert set(detect_anomalies_by_norm(x)[0].nonzero().flatten().tolist()) == expected
    assert top_norms(x[0].float().numpy()) == expected


def test_resolution_uses_valid_neighbours_at_corners_edges_and_islands():
    # a 3×4 map of scalars 0..11 (row-major); anomalies at a corner, an edge and an isolated 2×1 blob
    values = torch.arange(12, dtype=torch.float32).view(1, 12, 1)
    anomalies = torch.zeros(1, 12, dtype=torch.bool)
    anomalies[0, [0, 7, 5, 6]] = True
    out = resolve_anomalies(values, anomalies, (3, 4))[0, :, 0]
    # corner 0: neighbours 1, 4 (5 is an anomaly) -> (1+4)/2
    assert out[0] == pytest.approx(2.5)
    # 5 (row 1, col 1): neighbours 0*,1,2,4,6*,8,9,10 -> mean of 1,2,4,8,9,10
    assert out[5] == pytest.approx((1 + 2 + 4 + 8 + 9 + 10) / 6)
    # 6: neighbours 1,2,3,5*,7*,9,10,11
    assert out[6] == pytest.approx((1 + 2 + 3 + 9 + 10 + 11) / 6)
    # 7 (right edge): neighbours 2,3,6*,10,11
    assert out[7] == pytest.approx((2 + 3 + 10 + 11) / 4)
    untouched = [i for i in range(12) if i not in (0, 5, 6, 7)]
    assert torch.equal(out[untouched], values[0, untouched, 0])


def test_anomaly_without_valid_neighbour_keeps_its_value():
    values = torch.randn(1, 4, 3)
    anomalies = torch.ones(1, 4, dtype=torch.bool)
    assert torch.equal(resolve_anomalies(values, anomalies, (2, 2)), values)


def test_aggregation_rows_are_convex_combinations():
    tokens = torch.randn(2, 30, 8)
    similarity = floor_similarity(cosine_similarity(tokens), 0.4)
    assert (similarity >= 0).all()
    torch.testing.assert_close(similarity.diagonal(dim1=1, dim2=2), torch.ones(2, 30))
    ones = aggregate(torch.ones(2, 30, 1), similarity)
    torch.testing.assert_close(ones, torch.ones_like(ones), atol=1e-5, rtol=0)


def test_similarity_attention_masks_below_mean_and_normalises():
    s = cosine_similarity(torch.randn(1, 20, 6))
    weights = similarity_attention_weights(s)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 20))
    below_mean = s < s.mean()
    assert torch.equal(weights[below_mean], torch.zeros(int(below_mean.sum())))
    assert (weights.diagonal(dim1=1, dim2=2) > 0).all()


def test_calibrated_attention_equals_explicit_mixing():
    torch.manual_seed(3)
    block = ResidualAttentionBlock(width=16, heads=2).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    tokens = torch.randn(1, 10, 16)
    s = cosine_similarity(torch.randn(1, 10, 5))
    out = calibrated_attention(block, tokens, similarity_attention_weights(s))

    z = block.ln_1(tokens)[0]
    qkv = z @ block.attn.in_proj_weight.T + block.attn.in_proj_bias
    k, v = qkv[:, 16:32], qkv[:, 32:]
    m = 3 * (s[0] - s[0].mean())
    m[m < 0] = float("-inf")
    heads = []
    for h in range(2):
        kh, vh = k[:, 8 * h : 8 * h + 8], v[:, 8 * h : 8 * h + 8]
        w = 0.5 * m.softmax(-1) + 0.5 * (kh @ kh.T / 8**0.5).softmax(-1)
        heads.append(w @ vh)
    expected = block.attn.out_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_fused_and_plain_attention_agree(causal):
    torch.manual_seed(4)
    fused = SelfAttention(32, 4, fused=True)
    torch.nn.init.normal_(fused.in_proj_weight, std=0.2)
    plain = SelfAttention(32, 4, fused=False)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 9, 32)
    torch.testing.assert_close(fused(x, causal=causal), plain(x, causal=causal), atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def encoder():
    model = random_clip("ViT-B/16", seed=5, vision_width=64, transformer_width=64, transformer_layers=1,
                        transformer_heads=1, embed_dim=32)
    return SCCLIPEncoder(model.visual, CalibrationConfig())


def test_encoder_batch_equals_each_crop_alone(encoder):
    crops = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        batched, batched_anomalies = encoder(crops, return_anomalies=True)
        for b in range(3):
            alone, alone_anomalies = encoder(crops[b : b + 1], return_anomalies=True)
            torch.testing.assert_close(batched[b], alone[0], atol=1e-5, rtol=1e-5)
            assert torch.equal(batched_anomalies[b], alone_anomalies[0])


def test_encoder_non_square_crop_is_row_major(encoder):
    # 160×240 -> a 10×15 grid; an anomaly's neighbours must be found with the width (15)
    crop = torch.randn(1, 3, 160, 240, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        features, anomalies = encoder(crop, return_anomalies=True)
    assert features.shape == (1, 150, 32)
    assert anomalies.shape == (1, 150) and anomalies.any()
    assert torch.isfinite(features).all()


def test_encoder_rejects_an_unknown_anomaly_detector():
    model = random_clip("ViT-B/16", vision_width=64, transformer_width=64, transformer_layers=1,
                        transformer_heads=1, embed_dim=32)
    for value in ("knn", "LOF", None, True):
        with pytest.raises(InputError, match=r"^anomaly_detector=.* is not one of lof, norm$"):
            SCCLIPEncoder(model.visual, CalibrationConfig(anomaly_detector=value))


def test_encoder_rejects_indices_beyond_depth():
    model = random_clip("ViT-B/16", vision_width=64, transformer_width=64, transformer_layers=1,
                        transformer_heads=1, embed_dim=32)
    with pytest.raises(InputError, match="pre_adjust_idx=16"):
        SCCLIPEncoder(model.visual, CalibrationConfig(pre_adjust_idx=16, post_adjust_idx=6))
    with pytest.raises(InputError, match="multi_end_idx=19"):
        SCCLIPEncoder(model.visual, CalibrationConfig(multi_start_idx=8, multi_end_idx=19))


def test_normalised_features_are_unit_length(encoder):
    with torch.no_grad():
        features = F.normalize(encoder(torch.randn(1, 3, 224, 224)), dim=-1)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(1, 196))
