"""ResCLIP's steps against their written-out formulas, on sizes, seeds and settings the golden cases
do not have (SPEC Part III §11; docs/method.md#resclip): the path check (chunked under a memory
budget vs the direct T²·(D+1) form), the release's partial walk, the 1-D smoothing, the patch
vote, the float16 roundings, both passes, the switches, the depth check and the settings."""
import math

import pytest
import torch
import torch.nn.functional as F

from scclip import SCCLIPForSegmentation, Segmenter
from scclip.clip.architectures import random_clip, save_checkpoint
from scclip.encoders import gaussian_bias
from scclip.errors import InputError
from scclip.methods import METHODS
from scclip.resclip import (
    RCS_BLOCKS, ResCLIPConfig, ResCLIPEncoder, chebyshev_distances, patch_labels, patch_mode, path_valid,
    same_label_matrix, sfr_term, smoothing_taps,
)
from scclip.settings import check_settings, settings_for

VOCAB = ["sky, cloud", "cat", "grass", "road"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny ViT-B/16-shaped CLIP (12 blocks, seed 7)."""
    clip = random_clip("ViT-B/16", seed=7, vision_width=64, transformer_width=64, transformer_heads=1,
                       transformer_layers=2, embed_dim=32).float().eval()
    clip.checkpoint_path = save_checkpoint(clip, tmp_path_factory.mktemp("resclip") / "tiny_seed7.pt")
    return clip


def segmentor(model, method="resclip", **settings) -> SCCLIPForSegmentation:
    return SCCLIPForSegmentation(clip_path=str(model.checkpoint_path), vocabulary=VOCAB, device="cpu",
                                 clip_model=model, method=method, **settings)


# ------------------------------------------------------------------ the path check


def direct_path_valid(labels: torch.Tensor) -> torch.Tensor:
    """The release's form: every pair's D+1 walk points at once (T²·(D+1) elements)."""
    h, w = labels.shape
    reach = max(h, w) - 1
    index = torch.arange(h * w)
    rows, cols = (index // w).float(), (index % w).float()
    t = torch.linspace(0, 1, reach + 1)
    path_rows = torch.round(rows[:, None, None] * (1 - t) + rows[None, :, None] * t).long()
    path_cols = torch.round(cols[:, None, None] * (1 - t) + cols[None, :, None] * t).long()
    on_path = labels[path_rows, path_cols] == labels.flatten()[:, None, None]
    walked = torch.arange(reach + 1) <= chebyshev_distances(h, w)[..., None]
    return (on_path | ~walked).all(dim=-1)


@pytest.mark.parametrize("grid, labels_count, seed", [((7, 11), 3, 0), ((13, 5), 2, 1), ((1, 17), 3, 2),
                                                       ((9, 1), 2, 3), ((21, 31), 4, 4), ((6, 6), 1, 5)])
def test_chunked_path_check_equals_the_direct_form(grid, labels_count, seed):
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randint(labels_count, (max(1, grid[0] // 3), max(1, grid[1] // 3)), generator=generator)
    labels = F.interpolate(coarse[None, None].float(), size=grid, mode="nearest")[0, 0].long()
    noise = torch.rand(grid, generator=generator) < 0.1  # isolated patches too
    labels = torch.where(noise, torch.randint(labels_count, grid, generator=generator), labels)
    expected = direct_path_valid(labels)
    tokens = grid[0] * grid[1]
    assert torch.equal(path_valid(labels[None])[0], expected)
    assert torch.equal(path_valid(labels[None], budget_bytes=1)[0], expected)  # one row of pairs at a time
    pairs_per_row = tokens * grid[1] * 8  # the bytes one row of the grid takes
    assert torch.equal(path_valid(labels[None], budget_bytes=pairs_per_row * 2)[0], expected)  # uneven chunks
    other = labels.flip(-1)
    both = path_valid(torch.stack([labels, other]), budget_bytes=pairs_per_row * 6)  # a batch: each crop its own
    assert torch.equal(both[0], expected) and torch.equal(both[1], direct_path_valid(other))


def test_the_walk_covers_only_c_over_d_of_the_segment():
    """1×9 grid, D = 8: pair (0, 4) walks 0, 0, 1, 2, 2 (round half to even) and misses patch 3."""
    labels = torch.tensor([[0, 0, 0, 1, 0, 0, 0, 0, 0]])
    (valid,) = path_valid(labels[None])
    assert valid[0, 4] and not valid[0, 5] and not valid[0, 8]
    assert not valid[4, 0] and valid[4, 8]  # from 4 towards 0: 4, 4, 3, 2, 2 (3 has label 1)


# ------------------------------------------------------------------ the SFR matrix


def explicit_same_label_matrix(labels: torch.Tensor, std: float, delete_same_entity: bool) -> torch.Tensor:
    """SPEC §11 R.4 with loops: walks, decay, 1-D smoothing along the flattened index, row sums."""
    h, w = labels.shape
    tokens, reach = h * w, max(h, w) - 1
    flat = labels.flatten().tolist()
    t = torch.linspace(0, 1, reach + 1)
    same = torch.zeros(tokens, tokens)
    for i in range(tokens):
        for j in range(tokens):
            if flat[i] != flat[j]:
                continue
            (ri, ci), (rj, cj) = divmod(i, w), divmod(j, w)
            c = max(abs(ri - rj), abs(ci - cj))
            points = [(int(torch.round(ri * (1 - t[k]) + rj * t[k])), int(torch.round(ci * (1 - t[k]) + cj * t[k])))
                      for k in range(c + 1)]
            valid = all(flat[r * w + col] == flat[i] for r, col in points)
            same[i, j] = 1.0 if valid or not delete_same_entity else math.exp(-c / reach)
    size = min(tokens, int(6 * std + 1))
    size += size % 2 == 0
    taps = [math.exp(-(x * x) / (2 * std * std)) for x in range(-(size // 2), size // 2 + 1)]
    taps = [tap / sum(taps) for tap in taps]
    smoothed = torch.zeros(tokens, tokens)
    for j in range(tokens):
        for offset, tap in zip(range(-(size // 2), size // 2 + 1), taps):
            if 0 <= j + offset < tokens:
                smoothed[:, j] += tap * same[:, j + offset]
    rows = smoothed / (smoothed.sum(dim=1, keepdim=True) + 1e-8)
    matrix = torch.zeros(tokens + 1, tokens + 1)
    matrix[1:, 1:] = rows
    return matrix


@pytest.mark.parametrize("grid, std, delete", [((4, 6), 5.0, True), ((5, 3), 1.0, True), ((3, 7), 2.0, False),
                                               ((1, 8), 0.7, True)])
def test_same_label_matrix_follows_its_formula(grid, std, delete):
    labels = torch.randint(3, grid, generator=torch.Generator().manual_seed(sum(grid)))
    expected = explicit_same_label_matrix(labels, std, delete)
    (matrix,) = same_label_matrix(labels[None], std, delete)
    torch.testing.assert_close(matrix, expected, atol=1e-6, rtol=0)
    assert matrix.dtype == torch.float32 and not matrix[0].any() and not matrix[:, 0].any()


def test_smoothing_kernel_sizes_are_the_releases():
    def size(std, length):
        taps = smoothing_taps(std, length)
        assert torch.equal(taps, taps.flip(0))  # centred
        return int((taps > 0).sum())

    assert size(5.0, 651) == 31 and size(3.0, 651) == 19 and size(5.0, 16) == 17 and size(5.0, 15) == 15
    assert smoothing_taps(5.0, 651).sum().item() == pytest.approx(1.0, abs=1e-6)


def test_the_smoothing_wraps_across_grid_rows():
    """1-D along the flattened index: the last patch of grid row 0 feeds the first of row 1."""
    labels = torch.tensor([[0, 0, 1], [1, 1, 1]])
    (matrix,) = same_label_matrix(labels[None], 1.0, delete_same_entity=False)
    # patch 0's row: same label at 0 and 1 only; smoothed mass reaches index 2 (row 0) and 3 (row 1).
    assert matrix[1, 1 + 3] > 0 and matrix[1, 1 + 5] == pytest.approx(0, abs=1e-3)


def test_patch_vote_takes_the_mode_and_the_smallest_label_on_ties():
    pixels = torch.tensor([[[3, 3, 1, 2],
                            [1, 1, 2, 1],
                            [0, 4, 5, 5],
                            [4, 0, 0, 5]]])
    assert patch_mode(pixels, (2, 2), 2, 6).tolist() == [[[1, 1], [0, 5]]]  # ties: {1, 3} → 1; {0, 4} → 0
    assert patch_mode(pixels[:, :3, :3], (1, 1), 2, 6).tolist() == [[[1]]]  # pixels past h·p are ignored


def test_sfr_term_is_rounded_to_float16_twice():
    matrix = torch.zeros(1, 4, 4)
    matrix[0, 1:, 1:] = torch.tensor([[1 / 3, 0.1, 0.2], [0.3, 0.7, 0.05], [0.25, 0.11, 0.9]])
    term = sfr_term(matrix, 0.7)
    assert term.dtype == torch.float16
    normalised = (matrix / matrix.max()).half()
    assert torch.equal(term, (0.7 * normalised.float()).half())
    assert not torch.equal(term.float(), 0.7 * matrix / matrix.max())  # the roundings are visible


# ------------------------------------------------------------------ both passes


def explicit_features(visual, images, config: ResCLIPConfig, sfr_matrix=None):
    """ln_post(LB(X, M))·proj written out: blocks 6–9's mean softmax(s·q·kᵀ), then the last block's mixes."""
    blocks = visual.transformer.resblocks
    x = visual.embed(images)
    kept = []
    for index, block in enumerate(blocks[:-1]):
        q, k, _ = block.attn.qkv(block.ln_1(x))
        kept.append((q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(-1))
        x = block(x)
    rcs_map = torch.stack([kept[index] for index in (5, 6, 7, 8)]).mean(0)
    last = blocks[-1]
    _, k, v = last.attn.qkv(last.ln_1(x))
    s = k @ k.transpose(-2, -1) * k.shape[-1] ** -0.5
    if sfr_matrix is not None:
        tau, lam = config.sfr_weights
        hat = (sfr_matrix / sfr_matrix.amax(dim=(-2, -1), keepdim=True)).half()
        s = tau * ((1 - lam) * s + (lam * hat.float()).half().float()[:, None])
    a = (s + gaussian_bias(visual.grid_size(*images.shape[-2:]), config.gaussian_std)).softmax(-1)
    if config.rcs:
        tau, lam = config.rcs_weights
        a = tau * ((1 - lam) * a + lam * rcs_map)
    out = last.attn.out_proj(last.attn.merge_heads(a @ v))
    return visual.ln_post(out[:, 1:]) @ visual.proj


def striped_images() -> torch.Tensor:
    """Two 96×128 crops of vertical stripes (different per crop) with noise: the first pass sees several labels."""
    generator = torch.Generator().manual_seed(3)
    stripes = torch.linspace(-3, 3, 128).repeat(2, 3, 96, 1) * torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    return stripes.sin() * 2 + 0.3 * torch.randn(2, 3, 96, 128, generator=generator)


CONFIG = ResCLIPConfig(temp_thd=0.0, rcs_weights=(2.0, 0.3), sfr_weights=(2.2, 0.6), gaussian_std=3.0)


def test_first_pass_follows_its_formula(model):
    images = torch.randn(2, 3, 80, 112)
    config = ResCLIPConfig(**{**CONFIG.__dict__, "sfr": False})
    torch.testing.assert_close(ResCLIPEncoder(model.visual, config)(images),
                               explicit_features(model.visual, images, config), atol=1e-5, rtol=1e-5)


def test_second_pass_follows_its_formula_and_changes_the_features(model):
    seg = segmentor(model)
    images = striped_images()
    encoder = ResCLIPEncoder(model.visual, CONFIG)
    queries, scale = seg.query_features, 40.0
    first = explicit_features(model.visual, images, CONFIG)
    labels = patch_labels(first, queries, scale, images, (6, 8), 16, CONFIG.temp_thd)
    assert all(len(crop.unique()) >= 2 for crop in labels)  # SFR has something to say
    matrix = torch.stack([same_label_matrix(crop[None], CONFIG.gaussian_std, True)[0] for crop in labels])
    expected = explicit_features(model.visual, images, CONFIG, matrix)
    features = encoder(images, queries=queries, logit_scale=scale)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)
    assert (features - first).abs().max() > 1e-3


def test_the_first_pass_labels_are_query_indices_with_label_zero_below_the_threshold(model):
    seg = segmentor(model)
    images = torch.randn(1, 3, 64, 64)
    first = explicit_features(model.visual, images, CONFIG)
    confident = patch_labels(first, seg.query_features, 40.0, images, (4, 4), 16, 0.0)
    assert confident.max() < len(VOCAB) + 1 and confident.max() >= 1  # 5 queries: synonyms are labels
    assert not patch_labels(first, seg.query_features, 40.0, images, (4, 4), 16, 1.0).any()


def test_switches_off_give_naclip_and_the_first_pass(model):
    images = torch.randn(1, 3, 96, 96)
    naclip = segmentor(model, "naclip").dense_features(images)
    torch.testing.assert_close(segmentor(model, rcs=False, sfr=False).dense_features(images), naclip)
    both = segmentor(model, temp_thd=0.0).dense_features(images)
    assert (segmentor(model, temp_thd=0.0, rcs=False).dense_features(images) - both).abs().max() > 1e-3
    first = F.normalize(explicit_features(model.visual, images, ResCLIPConfig(**{**CONFIG.__dict__,
                                          "rcs_weights": (2.0, 0.4), "gaussian_std": 5.0})), dim=-1)
    torch.testing.assert_close(segmentor(model, sfr=False).dense_features(images), first, atol=1e-5, rtol=1e-5)


def test_rcs_reads_blocks_6_to_9_and_needs_them():
    assert RCS_BLOCKS == (5, 6, 7, 8)
    shallow = random_clip("ViT-B/16", seed=0, vision_width=64, vision_layers=9, transformer_width=64,
                          transformer_heads=1, transformer_layers=1, embed_dim=32)
    with pytest.raises(InputError, match="blocks 6–9 and this ViT has 9 blocks: .*rcs=False"):
        ResCLIPEncoder(shallow.visual, CONFIG)
    ResCLIPEncoder(shallow.visual, ResCLIPConfig(**{**CONFIG.__dict__, "rcs": False}))


def test_the_encoder_without_queries_says_what_it_needs(model):
    with pytest.raises(InputError, match="needs the query features and the logit scale"):
        ResCLIPEncoder(model.visual, CONFIG)(torch.randn(1, 3, 64, 64))


# ------------------------------------------------------------------ settings


def test_outside_a_benchmark_config_the_defaults_are_context59s(model):
    seg = segmentor(model)
    settings = seg.method_settings
    assert (settings["temp_thd"], tuple(settings["rcs_weights"]), tuple(settings["sfr_weights"])) == (
        0.25, (2.0, 0.4), (1.8, 0.7))
    assert settings["gaussian_std"] == 5.0 and settings["delete_same_entity"] and settings["rcs"] and settings["sfr"]
    assert set(settings_for("resclip")) >= {"temp_thd", "rcs_weights", "sfr_weights", "gaussian_std",
                                            "delete_same_entity", "rcs", "sfr"}
    assert "area_thd" not in settings_for("resclip") and METHODS["resclip"].renormalise_scores


@pytest.mark.parametrize("settings, message", [
    (dict(area_thd=0.1), "cannot take area_thd=0.1: its release cannot apply it"),
    (dict(temp_thd=1.5), r"temp_thd=1.5 must lie in \[0, 1\]"),
    (dict(rcs_weights=[2.0]), r"rcs_weights=\[2.0\] must be a pair \[scale, share\]"),
    (dict(sfr_weights=[0, 0.5]), "the scale must be above 0"),
    (dict(sfr_weights=[2.0, 1.5]), r"the share lie in \[0, 1\]"),
    (dict(rcs_weights="2,0.4"), "must be a pair"),
    (dict(gaussian_std=0.0), "must be positive for ResCLIP"),
    (dict(sfr="yes"), "sfr='yes' must be True or False"),
    (dict(residual=False), "takes no setting 'residual'"),
])
def test_bad_values_are_refused_in_one_line(model, settings, message):
    with pytest.raises(InputError, match=message) as error:
        segmentor(model, **settings)
    assert "\n" not in str(error.value)


def test_area_thd_is_refused_wherever_it_is_given(model):
    with pytest.raises(InputError, match="cannot take model.area_thd=0.2"):
        check_settings("resclip", dict(area_thd=0.2), prefix="model.")
    check_settings("resclip", dict(area_thd=None))  # what release configs write: off
    with pytest.raises(InputError, match="cannot take area_thd=0.3"):
        Segmenter(model.checkpoint_path, classes="cat,dog", device="cpu", method="resclip", area_thd=0.3,
                  clip_model=model)
    check_settings("naclip", dict(area_thd=0.2))
