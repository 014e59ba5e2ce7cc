"""The encoder family and the method registry, checked against explicit formulas (docs/method.md#baselines, docs/method.md#component-switches).

The golden cases pin one seed and a few images; these tests check other seeds, sizes and settings
against the formulas of docs/method.md, so nothing here can be passed by fitting the examples.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from scclip import SCCLIPForSegmentation
from scclip.calibration import CalibrationConfig, SCCLIPEncoder
from scclip.clip.architectures import random_clip, save_checkpoint
from scclip.encoders import ATTENTIONS, DenseEncoder, LastBlock, gaussian_bias, head_attention
from scclip.errors import InputError
from scclip.methods import METHODS, SWITCHES, available_methods, calibration_defaults
from scclip.settings import settings_for

VOCAB = ["sky, cloud", "cat", "grass"]
BASELINES = ["vanilla", "maskclip", "sclip", "clearclip", "naclip"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny ViT-B/16-shaped CLIP (seed 3), remembering its file so the text cache can key on it."""
    clip = random_clip("ViT-B/16", seed=3, vision_width=64, transformer_width=64, transformer_heads=1,
                       transformer_layers=2, embed_dim=32).float().eval()
    clip.checkpoint_path = save_checkpoint(clip, tmp_path_factory.mktemp("methods") / "tiny_seed3.pt")
    return clip


def segmentor(model, method="scclip", **settings) -> SCCLIPForSegmentation:
    return SCCLIPForSegmentation(
        clip_path=str(model.checkpoint_path), vocabulary=VOCAB, device="cpu", clip_model=model, method=method, **settings
    )


def for_method(method: str, vfm_path, **settings) -> dict:
    """`settings` as `method` takes them: ProxyCLIP gets the tiny VFM and leaves out what its release has not."""
    if method != "proxyclip":
        return settings
    return {**{name: value for name, value in settings.items() if name not in METHODS[method].refuses},
            "vfm_path": str(vfm_path)}


def explicit_attention(kind, q, k, v, grid, std=5.0):
    """Per-head A·v written out with explicit softmaxes (docs/method.md#attention-kinds; #naclip for the Gaussian bias)."""
    s = q.shape[-1] ** -0.5
    soft = lambda logits: logits.softmax(dim=-1)  # noqa: E731
    if kind == "qk":
        a = soft(s * q @ k.transpose(-2, -1))
    elif kind == "identity":
        a = torch.eye(q.shape[-2]).expand(*q.shape[:-1], q.shape[-2])
    elif kind == "qq":
        a = soft(s * q @ q.transpose(-2, -1))
    elif kind == "kk":
        a = soft(s * k @ k.transpose(-2, -1))
    elif kind == "qq+kk":
        a = soft(s * q @ q.transpose(-2, -1)) + soft(s * k @ k.transpose(-2, -1))
    else:
        h, w = grid
        bias = torch.zeros(h * w + 1, h * w + 1)
        for i in range(h * w):
            for j in range(h * w):
                distance = (i // w - j // w) ** 2 + (i % w - j % w) ** 2
                bias[i + 1, j + 1] = math.exp(-distance / (2 * std**2))
        if kind == "gaussian+kk":
            a = soft(s * k @ k.transpose(-2, -1) + bias)
        else:
            pair_norms = q.norm(dim=-1)[..., :, None] * k.norm(dim=-1)[..., None, :]
            m = s * pair_norms.flatten(1).mean(dim=1)
            a = soft(m.view(-1, 1, 1, 1) * bias)
    return a @ v


@pytest.mark.parametrize("kind", list(ATTENTIONS))
def test_each_attention_kind_matches_its_formula(kind):
    torch.manual_seed(0)
    grid = (3, 5)
    q, k, v = (torch.randn(2, 2, 16, 8) for _ in range(3))
    expected = explicit_attention(kind, q, k, v, grid, std=1.7)
    torch.testing.assert_close(head_attention(kind, q, k, v, grid, gaussian_std=1.7), expected, atol=1e-5, rtol=1e-5)


def release_style_gaussian(h: int, w: int, std: float) -> torch.Tensor:
    """NACLIP's construction: one-hot maps correlated ('same' padding) with a (2h−1)×(2w−1) window."""
    c = 1 / (std * math.sqrt(2))
    rows = torch.linspace(-(h - 1) * c, (h - 1) * c, 2 * h - 1)
    cols = torch.linspace(-(w - 1) * c, (w - 1) * c, 2 * w - 1)
    window = torch.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2))
    one_hot = torch.eye(h * w).view(h * w, 1, h, w)
    correlated = F.conv2d(one_hot, window[None, None], padding=(h - 1, w - 1))
    bias = torch.zeros(h * w + 1, h * w + 1)
    bias[1:, 1:] = correlated.view(h * w, h * w)
    return bias


@pytest.mark.parametrize("grid, std", [((4, 6), 5.0), ((7, 3), 1.3), ((1, 9), 2.0)])
def test_gaussian_bias_equals_the_release_construction(grid, std):
    torch.testing.assert_close(gaussian_bias(grid, std), release_style_gaussian(*grid, std), atol=1e-5, rtol=1e-5)
    assert gaussian_bias(grid, std) is not gaussian_bias(grid, std + 1) and gaussian_bias(grid, std).dtype == torch.float32


def test_vanilla_last_block_is_the_plain_clip_block(model):
    images = torch.randn(2, 3, 64, 96)
    visual = model.visual
    tokens = visual.transformer(visual.embed(images))
    expected = visual.ln_post(tokens[:, 1:]) @ visual.proj
    torch.testing.assert_close(DenseEncoder(visual, LastBlock("qk", residual=True))(images), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_last_block_from_its_parts(model, method):
    """Each preset reads its last block from docs/method.md#method-table (attention kind and residual)."""
    expected_kind = {"vanilla": "qk", "maskclip": "identity", "sclip": "qq+kk", "clearclip": "qq", "naclip": "gaussian+kk"}
    expected_residual = {"vanilla": True, "maskclip": True, "sclip": True, "clearclip": False, "naclip": False}
    seg = segmentor(model, method)
    assert seg.encoder.last_block.attention == expected_kind[method]
    assert seg.encoder.last_block.residual == expected_residual[method]
    images = torch.randn(1, 3, 48, 80)
    visual = model.visual
    x = visual.embed(images)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    last = visual.transformer.resblocks[-1]
    q, k, v = last.attn.qkv(last.ln_1(x))
    out = last.attn.out_proj(last.attn.merge_heads(explicit_attention(expected_kind[method], q, k, v, (3, 5))))
    if expected_residual[method]:
        out = x + out
        out = out + last.mlp(last.ln_2(out))
    expected = F.normalize(visual.ln_post(out[:, 1:]) @ visual.proj, dim=-1)
    torch.testing.assert_close(seg.dense_features(images), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "settings, kind, residual",
    [
        (dict(attention="kk"), "kk", False),
        (dict(attention="vanilla", naclip_arch="vanilla"), "qk", True),
        (dict(attention="nonly"), "gaussian", False),
        (dict(attention="csa", naclip_arch="vanilla"), "qq+kk", True),
        (dict(gaussian_std=2.5), "gaussian+kk", False),
    ],
)
def test_naclip_knobs(model, settings, kind, residual):
    seg = segmentor(model, "naclip", **settings)
    assert (seg.encoder.last_block.attention, seg.encoder.last_block.residual) == (kind, residual)
    assert seg.encoder.last_block.gaussian_std == settings.get("gaussian_std", 5.0)


def test_gaussian_std_changes_naclip_features(model):
    images = torch.randn(1, 3, 64, 64)
    default = segmentor(model, "naclip").dense_features(images)
    assert not torch.allclose(default, segmentor(model, "naclip", gaussian_std=1.0).dense_features(images), atol=1e-4)


def test_residual_setting_overrides_the_preset(model):
    images = torch.randn(1, 3, 64, 64)
    assert segmentor(model, "clearclip", residual=True).encoder.last_block.residual
    assert not torch.allclose(
        segmentor(model, "maskclip").dense_features(images),
        segmentor(model, "maskclip", residual=False).dense_features(images), atol=1e-4,
    )


@pytest.mark.parametrize("switch", SWITCHES)
def test_each_switch_changes_the_output(model, switch):
    images = torch.randn(1, 3, 224, 224)
    full = segmentor(model).dense_features(images)
    ablated = segmentor(model, **{switch: False}).dense_features(images)
    assert (full - ablated).abs().max() > 1e-3


def test_all_switches_on_is_sc_clip(model):
    images = torch.randn(2, 3, 224, 224)
    explicit_on = segmentor(model, **{switch: True for switch in SWITCHES}).dense_features(images)
    torch.testing.assert_close(explicit_on, segmentor(model).dense_features(images), atol=0, rtol=0)


def test_all_switches_off_matches_the_spec_formula(model):
    """All switches off (docs/method.md#component-switches): X = patches of F[L−2]; X ← out_proj(softmax(k·kᵀ/√d)·v) + res_cls·cls; ln_post(X)·proj."""
    images = torch.randn(1, 3, 224, 224)
    off = segmentor(model, **{switch: False for switch in SWITCHES})
    visual = model.visual
    x = visual.embed(images)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    last = visual.transformer.resblocks[-1]
    _, k, v = last.attn.qkv(last.ln_1(x[:, 1:]))
    out = last.attn.out_proj(last.attn.merge_heads(explicit_attention("kk", k, k, v, (14, 14)))) + 0.3 * x[:, :1]
    expected = F.normalize(visual.ln_post(out) @ visual.proj, dim=-1)
    torch.testing.assert_close(off.dense_features(images), expected, atol=1e-5, rtol=1e-5)


def test_without_anomaly_resolution_no_anomalies_are_reported(model):
    _, anomalies = segmentor(model, anomaly_resolution=False).dense_features(torch.randn(1, 3, 224, 224), return_anomalies=True)
    assert anomalies[0].numel() == 0


@pytest.mark.parametrize("method", available_methods())
def test_every_method_is_batch_invariant_in_windows_whole_image_and_pamr(model, method, tiny_dino_path):
    torch.manual_seed(1)
    images = torch.randn(2, 3, 120, 200)
    for settings in (dict(slide_crop=64, slide_stride=40, pad_to_patch=True), dict(slide_crop=0, pamr_steps=2)):
        seg = segmentor(model, method, **for_method(method, tiny_dino_path, **settings))
        alone = [seg.predict(image[None])[0] for image in images]
        for one, batched in zip(alone, seg.predict(images)):
            torch.testing.assert_close(batched.seg_logits.data, one.seg_logits.data, atol=1e-5, rtol=0)
            torch.testing.assert_close(batched.pred_sem_seg.data, one.pred_sem_seg.data)


@pytest.mark.parametrize("method", available_methods())
def test_every_method_runs_in_bfloat16(model, method, tiny_dino_path):
    image = torch.randn(1, 3, 96, 128)
    full = segmentor(model, method, **for_method(method, tiny_dino_path)).predict(image)[0].seg_logits.data
    half = segmentor(model, method, precision="bf16", **for_method(method, tiny_dino_path)).predict(image)[0].seg_logits.data
    assert half.dtype == torch.float32 and (half - full).abs().max() < 0.1


def test_naclip_scores_sum_to_one_with_synonyms(model):
    (sample,) = segmentor(model, "naclip", prob_thd=0.3).predict(torch.randn(1, 3, 96, 96))
    torch.testing.assert_close(sample.seg_logits.data.sum(0), torch.ones(96, 96), atol=1e-5, rtol=0)


def test_pad_to_patch_pads_only_windows_that_need_it(model):
    image = torch.randn(1, 3, 70, 90)  # one 70×90 window: padded to 80×96
    padded = segmentor(model, "clearclip", slide_crop=100, pad_to_patch=True).predict(image)[0].seg_logits.data
    plain = segmentor(model, "clearclip", slide_crop=100).predict(image)[0].seg_logits.data
    assert padded.shape == plain.shape == (3, 70, 90) and not torch.allclose(padded, plain, atol=1e-4)
    exact = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(
        segmentor(model, "clearclip", slide_crop=100, pad_to_patch=True).predict(exact)[0].seg_logits.data,
        segmentor(model, "clearclip", slide_crop=100).predict(exact)[0].seg_logits.data,
    )


def test_unknown_method_lists_the_valid_ones(model):
    with pytest.raises(InputError, match=r"unknown method 'naclipp' \(did you mean 'naclip'\?\): use one of vanilla, .*scclip"):
        segmentor(model, "naclipp")


def test_setting_of_another_method_is_refused_in_one_line(model):
    with pytest.raises(InputError) as error:
        segmentor(model, "clearclip", gaussian_std=3.0)
    message = str(error.value)
    assert "\n" not in message and "'gaussian_std'" in message and "naclip" in message and "residual" in message
    with pytest.raises(InputError, match="did you mean 'prob_thd'|did you mean 'pre_adjust_idx'"):
        segmentor(model, "scclip", prob_thdd=0.2)
    with pytest.raises(InputError, match="residual"):
        segmentor(model, "scclip", residual=False)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(attention="csa"), "needs naclip_arch='vanilla'"),
        (dict(attention="qq"), "is not one of naclip, kk"),
        (dict(naclip_arch="full"), "is not one of reduced, vanilla"),
        (dict(gaussian_std=0.0), "must be positive"),
    ],
)
def test_bad_naclip_values(model, settings, message):
    with pytest.raises(InputError, match=message):
        segmentor(model, "naclip", **settings)


def test_switch_values_must_be_booleans(model):
    with pytest.raises(InputError, match="feature_aggregation='no' must be True or False"):
        segmentor(model, feature_aggregation="no")


def test_settings_table_of_spec(model):
    shared = settings_for("vanilla")[:8]
    assert set(settings_for("maskclip")) == {*shared, "residual"}
    assert set(settings_for("naclip")) == {*shared, "naclip_arch", "attention", "gaussian_std"}
    assert set(SWITCHES) < set(settings_for("scclip")) and "residual" not in settings_for("scclip")
    assert list(METHODS) == available_methods() and available_methods()[-1] == "scclip"


def test_calibration_follows_depth_and_given_values_win(model):
    assert calibration_defaults(24)[0] == dict(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19, res_cls=0.1)
    deep, note = calibration_defaults(32)
    assert deep == dict(pre_adjust_idx=21, post_adjust_idx=8, multi_start_idx=8, multi_end_idx=27, res_cls=0.1)
    assert "32 blocks" in note
    l14 = random_clip("ViT-L/14", seed=0, vision_width=64, transformer_width=64, transformer_heads=1,
                      transformer_layers=2, embed_dim=32).float()
    l14.checkpoint_path = save_checkpoint(l14, model.checkpoint_path.with_name("tiny_l14.pt"))
    chosen = segmentor(l14).encoder.config
    assert (chosen.pre_adjust_idx, chosen.multi_end_idx, chosen.res_cls) == (16, 19, 0.1)
    assert segmentor(l14, pre_adjust_idx=12).encoder.config.pre_adjust_idx == 12


def test_explicit_indices_of_another_backbone_say_which(model):
    with pytest.raises(InputError, match="pre_adjust_idx=16 does not fit a ViT with 12 blocks.*ViT-L/14's settings"):
        segmentor(model, pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19)


def test_method_settings_describe_the_run(model):
    seg = segmentor(model, "naclip", prob_thd=0.1)
    assert seg.method == "naclip"
    assert seg.method_settings["attention"] == "naclip" and seg.method_settings["prob_thd"] == 0.1
    assert segmentor(model).method_settings["pre_adjust_idx"] == 8


def test_encoders_compose_with_calibration(model):
    """SC-CLIP with calibration off uses the family's k·k attention (docs/method.md#component-switches), not a copy of it."""
    images = torch.randn(1, 3, 224, 224)
    config = CalibrationConfig(attention_calibration=False)
    features = SCCLIPEncoder(model.visual, config)(images)
    assert features.shape == (1, 196, 32) and torch.isfinite(features).all()


def test_a_misspelt_setting_is_refused_before_any_checkpoint_is_read(tmp_path):
    missing = tmp_path / "never_read.pt"
    with pytest.raises(InputError, match="takes no setting 'logit_scal' \\(did you mean 'logit_scale'\\?\\)"):
        SCCLIPForSegmentation(clip_path=str(missing), vocabulary=VOCAB, device="cpu", logit_scal=50)
