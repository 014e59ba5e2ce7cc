"""Parity with the authors' release on the golden cases (docs/method.md#golden-parity).

Both commits of the release are checked: the default (anomalies by LOF, 0417ba9) on the cases of
the golden folder, and the first commit (`anomaly_detector="norm"`, 74471da, docs/method.md#anomaly-detection-by-norm) on the
same cases' outputs in its `init_commit/` folder, which uses the images and checkpoints above it.
Runs on the compact copy in tests/golden (class scores on every 4th row and column, a tie mask,
checkpoints whose unused token rows are zero; see tests/golden/make_compact.py) or, with
$SCCLIP_GOLDEN_DIR, on the full release outputs.
"""
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import golden_file

from scclip import SCCLIPForSegmentation
from scclip.clip import load
from scclip.postprocess import class_scores, labels, suppress_small_classes
from scclip.windows import sliding_windows

FEATURE_ATOL = 1e-4
SCORE_ATOL = 1e-4
TIE_ATOL = 1e-5
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
MODEL_CASES = ["b16_single_crop", "b16_voc_like", "b16_whole_image", "b16_pamr", "l14_voc_like", "l14_whole_image"]
POST_CASES = ["post_plain", "post_voc_like", "post_area_bites"]
# anomaly_detector → the folder of its cases, relative to the golden folder (docs/method.md#golden-parity)
COMMITS = {"lof": ".", "norm": "init_commit"}
# Other images of the same checkpoint, cropped to the case's size, to batch with a case's own image.
BATCH_PARTNERS = {"b16_voc_like": "b16_pamr", "l14_whole_image": "l14_voc_like"}


def normalised_image(path: Path) -> torch.Tensor:
    """H×W×3 uint8 RGB → 3×H×W CLIP-normalised."""
    image = torch.from_numpy(np.load(path)).permute(2, 0, 1).float() / 255
    return (image - MEAN) / STD


def assert_matches_release(scores: np.ndarray, pred: np.ndarray, expected, case: dict) -> None:
    """Scores within SCORE_ATOL where the release stored them; identical labels outside its ties.

    The compact data hold `class_probs_sub` (every `probs_stride`-th row and column) and `tie`; the
    full data hold `class_probs`, from which the ties are found here.
    """
    if "class_probs" in expected.files:
        stored, stride = expected["class_probs"], 1
        top2 = np.sort(stored, axis=0)[-2:]
        tie = (top2[1] - top2[0]) <= TIE_ATOL
    else:
        stored, stride, tie = expected["class_probs_sub"], case["probs_stride"], expected["tie"]
    np.testing.assert_allclose(scores[:, ::stride, ::stride], stored, atol=SCORE_ATOL, rtol=0)
    differ = (pred != expected["pred"]) & ~tie
    assert not differ.any(), f"{differ.sum()} pixels differ outside ties"


@lru_cache(maxsize=2)
def clip_model(path: Path):
    model, _ = load(path, device="cpu")
    return model


def detector_settings(detector: str) -> dict:
    """The segmentor arguments for a commit: none for the default (so the default itself is checked)."""
    return {} if detector == "lof" else {"anomaly_detector": detector}


@pytest.fixture(scope="module")
def segmentors(golden_dir):
    """One segmentor per commit and model case, built as the case's settings say."""
    built = {}
    for detector, folder in COMMITS.items():
        for name in MODEL_CASES:
            case = json.loads((golden_dir / folder / f"{name}.json").read_text())
            checkpoint = golden_file(golden_dir / case["checkpoint"])
            built[detector, name] = SCCLIPForSegmentation(
                clip_path=str(checkpoint),
                name_path=str(golden_dir / folder / f"{name}_classes.txt"),
                device="cpu",
                clip_model=clip_model(checkpoint),
                **case["hyper_parameters"],
                **detector_settings(detector),
            )
    return built


def per_crop(outliers: np.ndarray, counts: np.ndarray) -> list[list[int]]:
    """The release's concatenated anomaly indices (trailing −1) as one ascending list per crop.

    The first commit stores each crop's indices in descending-norm order, the second ascending:
    the anomalies are a set either way.
    """
    assert outliers[-1] == -1 and len(outliers) == counts.sum() + 1
    return [sorted(crop.tolist()) for crop in np.split(outliers[:-1], np.cumsum(counts)[:-1])]


@pytest.mark.parametrize("detector", COMMITS)
@pytest.mark.parametrize("name", MODEL_CASES)
def test_model_case_matches_release(name, detector, golden_dir, segmentors):
    segmentor = segmentors[detector, name]
    expected = np.load(golden_dir / COMMITS[detector] / f"{name}.npz")
    image = normalised_image(golden_file(golden_dir / f"{name}_image.npy"))

    np.testing.assert_allclose(segmentor.query_features.numpy(), expected["query_features"], atol=FEATURE_ATOL, rtol=0)

    features, anomalies = segmentor.dense_features(image[None, :, :224, :224], return_anomalies=True)
    np.testing.assert_allclose(features[0].numpy(), expected["crop0_features"], atol=FEATURE_ATOL, rtol=0)
    assert anomalies[0].tolist() == sorted(expected["crop0_outliers"].tolist())

    if segmentor.slide_crop > 0:
        windows = sliding_windows(*image.shape[-2:], segmentor.slide_crop, segmentor.slide_stride)
        crops = torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in windows])
    else:
        crops = image[None]
    _, crop_anomalies = segmentor.dense_features(crops, return_anomalies=True)
    assert [a.tolist() for a in crop_anomalies] == per_crop(expected["crop_outliers"], expected["crop_outlier_counts"])

    (sample,) = segmentor.predict(image[None])
    case = json.loads((golden_dir / COMMITS[detector] / f"{name}.json").read_text())
    assert_matches_release(sample.seg_logits.data.numpy(), sample.pred_sem_seg.data[0].numpy(), expected, case)


@pytest.mark.parametrize("detector", COMMITS)
@pytest.mark.parametrize("name", list(BATCH_PARTNERS))
def test_batch_of_two_equals_each_alone(name, detector, golden_dir, segmentors):
    """Two different photos in one batch: each gets what it gets alone."""
    segmentor = segmentors[detector, name]
    image = normalised_image(golden_file(golden_dir / f"{name}_image.npy"))
    other = normalised_image(golden_file(golden_dir / f"{BATCH_PARTNERS[name]}_image.npy"))
    height, width = (min(a, b) for a, b in zip(image.shape[-2:], other.shape[-2:]))
    pair = torch.stack([image[:, :height, :width], other[:, :height, :width]])
    alone = [segmentor.predict(x[None])[0] for x in pair]
    together = segmentor.predict(pair)
    for one, batched in zip(alone, together):
        torch.testing.assert_close(batched.seg_logits.data, one.seg_logits.data, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.pred_sem_seg.data, one.pred_sem_seg.data)


@pytest.mark.parametrize("name", POST_CASES)
def test_postprocessing_matches_release(name, golden_dir):
    case = json.loads((golden_dir / f"{name}.json").read_text())
    expected = np.load(golden_dir / f"{name}.npz")
    query_to_class = torch.tensor(case["query_idx"])
    num_classes = int(query_to_class.max()) + 1
    scores = class_scores(torch.from_numpy(expected["logits"]), query_to_class, num_classes, case["logit_scale"])
    if case.get("area_thd") is not None:
        scores = suppress_small_classes(scores, case["area_thd"])
    pred = labels(scores, case["prob_thd"])
    assert_matches_release(scores.numpy(), pred[0].numpy(), expected, case)


def test_every_file_a_golden_case_names_is_there(golden_dir):
    """Each case's checkpoint and image resolve (compressed copies included), and the shipped copy stays small
    (under 40 MB with ResCLIP's and ProxyCLIP's cases and the compressed tiny DINO)."""
    cases = sorted(golden_dir.glob("*.json")) + sorted(golden_dir.glob("methods/*.json"))
    named = set()
    for case in cases:
        meta = json.loads(case.read_text())
        if isinstance(meta, dict) and "checkpoint" in meta:
            named.add(golden_file(case.parent / meta["checkpoint"]).name)
            image = meta["image"] if "image" in meta and meta["image"].endswith(".npy") else f"{case.stem}_image.npy"
            assert golden_file(case.parent / image).stat().st_size > 0
    assert named == {"clip_b16_seed0.pt", "clip_l14_seed0.pt"} and len(cases) >= 41
    # The first commit's cases: the same cases, their checkpoint and image in the folder above.
    first_commit = golden_dir / COMMITS["norm"]
    assert sorted(path.stem for path in first_commit.glob("*.json")) == sorted(MODEL_CASES)
    for name in MODEL_CASES:
        meta = json.loads((first_commit / f"{name}.json").read_text())
        assert golden_file(golden_dir / meta["checkpoint"]).name in named
        assert (first_commit / f"{name}.npz").is_file() and (first_commit / f"{name}_classes.txt").is_file()
    if golden_dir.resolve() == (Path(__file__).parent / "golden").resolve():
        assert sum(path.stat().st_size for path in golden_dir.rglob("*") if path.is_file()) < 40e6
