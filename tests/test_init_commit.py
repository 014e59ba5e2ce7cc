"""The release's first commit, `anomaly_detector="norm"` (docs/method.md#anomaly-detection-by-norm), on cases the golden data do not hold.

Other seeds, crop sizes and switch settings than the golden cases, each checked against a direct
reading of docs/method.md#anomaly-detection-by-norm: the anomalies are the ten largest-norm patch tokens of F[L−2], and nothing
else of the method changes. The golden parity itself is in test_golden.py.
"""
import sys

import numpy as np
import pytest
import torch
from mmseg.registry import MODELS

from scclip import SCCLIPForSegmentation, Segmenter, calibration
from scclip.clip.architectures import random_clip, save_checkpoint
from scclip.errors import InputError
from scclip.evaluation.runs import identity_key, run_identity
from scclip.methods import SWITCHES
from scclip.settings import settings_for

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from scclip.evaluation import command as eval_script  # noqa: E402

VOCAB = ["sky, cloud", "cat", "grass"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny ViT-B/16-shaped CLIP (seed 11: not the golden checkpoints' seed)."""
    clip = random_clip("ViT-B/16", seed=11, vision_width=64, transformer_width=64, transformer_heads=1,
                       transformer_layers=2, embed_dim=32).float().eval()
    clip.checkpoint_path = save_checkpoint(clip, tmp_path_factory.mktemp("init_commit") / "tiny_seed11.pt")
    return clip


def segmentor(model, **settings) -> SCCLIPForSegmentation:
    return SCCLIPForSegmentation(clip_path=str(model.checkpoint_path), vocabulary=VOCAB, device="cpu",
                                 clip_model=model, **settings)


def largest_norms(model, crops: torch.Tensor) -> list[list[int]]:
    """docs/method.md#anomaly-detection-by-norm written out: per crop, the ascending indices of the min(10, N) patch tokens of F[L−2]
    (the input of the last block) with the largest L2 norm."""
    visual = model.visual
    with torch.no_grad():
        x = visual.embed(crops)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
    norms = np.linalg.norm(x[:, 1:].double().numpy(), axis=-1)
    return [sorted(np.argsort(-row, kind="stable")[:10].tolist()) for row in norms]


@pytest.mark.parametrize("seed, size", [(0, (224, 224)), (1, (96, 160)), (2, (160, 64)), (3, (48, 64)), (4, (32, 48))])
def test_anomalies_are_the_largest_norms_of_the_last_blocks_input(model, seed, size):
    crops = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed))
    _, anomalies = segmentor(model, anomaly_detector="norm").dense_features(crops, return_anomalies=True)
    expected = largest_norms(model, crops)
    assert [a.tolist() for a in anomalies] == expected
    tokens = (size[0] // 16) * (size[1] // 16)
    assert [len(a) for a in expected] == [min(10, tokens)] * 2  # ten; every token of a crop with ten or fewer


def test_only_the_anomaly_tokens_change(model, monkeypatch):
    """Norm = the LOF pipeline with LOF's anomaly mask replaced by the explicit largest-norm mask."""
    crops = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    by_norm = segmentor(model, anomaly_detector="norm").dense_features(crops)

    def explicit(tokens: torch.Tensor, *_) -> torch.Tensor:
        mask = torch.zeros(tokens.shape[:2], dtype=torch.bool)
        for row, indices in enumerate(largest_norms(model, crops)):
            mask[row, indices] = True
        return mask

    monkeypatch.setattr(calibration, "detect_anomalies", explicit)
    torch.testing.assert_close(by_norm, segmentor(model).dense_features(crops), atol=0, rtol=0)


def test_norm_and_lof_give_different_features(model):
    crops = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(6))
    lof = segmentor(model).dense_features(crops, return_anomalies=True)
    norm = segmentor(model, anomaly_detector="norm").dense_features(crops, return_anomalies=True)
    assert lof[1][0].tolist() != norm[1][0].tolist()
    assert (lof[0] - norm[0]).abs().max() > 1e-4


def test_a_crop_of_ten_or_fewer_tokens_is_left_as_it_is(model):
    """Every token is an anomaly, none has a valid neighbour, so none is replaced: as with resolution off."""
    crops = torch.randn(2, 3, 32, 80, generator=torch.Generator().manual_seed(7))  # 2×5 = 10 tokens
    features, anomalies = segmentor(model, anomaly_detector="norm").dense_features(crops, return_anomalies=True)
    assert [a.tolist() for a in anomalies] == [list(range(10))] * 2
    unresolved = segmentor(model, anomaly_resolution=False).dense_features(crops)
    torch.testing.assert_close(features, unresolved, atol=0, rtol=0)


@pytest.mark.parametrize("off", [("anomaly_resolution",), SWITCHES, ("anomaly_resolution", "multi_level_fusion")])
def test_without_anomaly_resolution_the_detector_changes_nothing(model, off):
    images = torch.randn(2, 3, 120, 200, generator=torch.Generator().manual_seed(8))
    switches = {switch: False for switch in off}
    results = {}
    for detector in ("lof", "norm"):
        seg = segmentor(model, anomaly_detector=detector, slide_crop=64, slide_stride=40, **switches)
        features, anomalies = seg.dense_features(images[:, :, :64, :64], return_anomalies=True)
        assert all(a.numel() == 0 for a in anomalies)
        results[detector] = (features, [sample.seg_logits.data for sample in seg.predict(images)])
    torch.testing.assert_close(results["norm"], results["lof"], atol=0, rtol=0)


@pytest.mark.parametrize("settings", [dict(slide_crop=64, slide_stride=40), dict(slide_crop=0, pamr_steps=2),
                                      dict(slide_crop=64, slide_stride=40, precision="bf16")])
def test_two_different_images_in_a_batch_give_their_own_results(model, settings):
    images = torch.randn(2, 3, 120, 200, generator=torch.Generator().manual_seed(9))
    seg = segmentor(model, anomaly_detector="norm", **settings)
    alone = [seg.predict(image[None])[0] for image in images]
    for one, batched in zip(alone, seg.predict(images)):
        torch.testing.assert_close(batched.seg_logits.data, one.seg_logits.data, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.pred_sem_seg.data, one.pred_sem_seg.data)


def test_half_precision_finds_ten_anomalies_per_crop(model):
    crops = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(10))
    seg = segmentor(model, anomaly_detector="norm", precision="bf16")
    features, anomalies = seg.dense_features(crops, return_anomalies=True)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()
    assert [len(a) for a in anomalies] == [10, 10]
    full = segmentor(model, anomaly_detector="norm").dense_features(crops)
    assert (features - full).abs().max() < 0.1


@pytest.mark.parametrize("value", ["knn", "Norm", "", None, 10])
def test_an_unknown_detector_is_refused_in_one_line(model, value):
    with pytest.raises(InputError) as error:
        segmentor(model, anomaly_detector=value)
    assert str(error.value) == f"anomaly_detector={value!r} is not one of lof, norm"


def test_the_setting_belongs_to_scclip_only(model):
    assert "anomaly_detector" in settings_for("scclip") and "anomaly_detector" not in settings_for("naclip")
    with pytest.raises(InputError, match="takes no setting 'anomaly_detector'.*it is a setting of scclip"):
        segmentor(model, method="clearclip", anomaly_detector="norm")
    assert segmentor(model).method_settings["anomaly_detector"] == "lof"
    assert segmentor(model, anomaly_detector="norm").method_settings["anomaly_detector"] == "norm"


def test_segmenter_takes_the_setting(model):
    segmenter = Segmenter(str(model.checkpoint_path), classes=["cat", "wall"], device="cpu", clip_model=model,
                          anomaly_detector="norm")
    assert segmenter.segmentor.encoder.config.anomaly_detector == "norm"
    result = segmenter(np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))
    assert result.labels.shape == (120, 90)


def test_configs_and_cfg_options_reach_the_model_and_the_run_identity(model, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    identities = {}
    for detector in ("lof", "norm"):
        overrides = [f"model.clip_path={model.checkpoint_path}", f"model.anomaly_detector={detector}"]
        args = eval_script.parse_args(["--config", "configs/cfg_voc21.py", "--cfg-options", *overrides])
        cfg = eval_script.load_config(args, "cpu")
        assert MODELS.build(cfg.model).encoder.config.anomaly_detector == detector
        identities[detector] = run_identity(cfg, ["a.jpg"], "fp32")
    assert identities["norm"]["model"]["anomaly_detector"] == "norm"
    assert identity_key(identities["norm"]) != identity_key(identities["lof"])
    args = eval_script.parse_args(["--config", "configs/cfg_voc21.py", "--cfg-options",
                                   f"model.clip_path={model.checkpoint_path}", "model.anomaly_detector=knn"])
    with pytest.raises(InputError, match=r"^model\.anomaly_detector='knn' is not one of lof, norm; fix it in the config"):
        eval_script.load_config(args, "cpu")  # refused before anything runs (scclip.settings)


def test_a_norm_run_is_not_the_published_setting_in_the_summary():
    from scclip.evaluation.summary import not_comparable_reasons

    run = dict(benchmark="voc21", num_images=1449, published_weights=True, overrides={})
    assert not_comparable_reasons({**run, "anomaly_detector": "lof"}) == []
    assert not_comparable_reasons({**run, "anomaly_detector": None}) == []  # a baseline's run
    (reason,) = not_comparable_reasons({**run, "anomaly_detector": "norm"})
    assert reason.startswith("anomaly_detector=norm: the release's first commit")
