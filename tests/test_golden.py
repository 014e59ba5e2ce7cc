"""Parity with the authors' release on the golden cases (SPEC "Golden outputs")."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scclip import SCCLIPForSegmentation
from scclip.postprocess import class_scores, labels, suppress_small_classes
from scclip.windows import sliding_windows

FEATURE_ATOL = 1e-4
SCORE_ATOL = 1e-4
TIE_ATOL = 1e-5
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
MODEL_CASES = ["b16_single_crop", "b16_voc_like", "b16_whole_image", "b16_pamr", "l14_voc_like", "l14_whole_image"]
POST_CASES = ["post_plain", "post_voc_like", "post_area_bites"]


def normalised_image(path: Path) -> torch.Tensor:
    """H×W×3 uint8 RGB → 3×H×W CLIP-normalised."""
    image = torch.from_numpy(np.load(path)).permute(2, 0, 1).float() / 255
    return (image - MEAN) / STD


def assert_predictions_match(pred: np.ndarray, expected: np.ndarray, scores: np.ndarray) -> None:
    """Identical labels, except where the two best scores are within TIE_ATOL of each other."""
    differ = pred != expected
    if differ.any():
        top2 = np.sort(scores, axis=0)[-2:]
        margin = top2[1] - top2[0]
        assert (margin[differ] <= TIE_ATOL).all(), f"{differ.sum()} pixels differ outside ties"


@pytest.fixture(scope="module")
def segmentors(golden_dir):
    """One segmentor per model case, built as the case's settings say."""
    built = {}
    for name in MODEL_CASES:
        case = json.loads((golden_dir / f"{name}.json").read_text())
        settings = dict(case["hyper_parameters"])
        built[name] = SCCLIPForSegmentation(
            clip_path=str(golden_dir / case["checkpoint"]),
            name_path=str(golden_dir / f"{name}_classes.txt"),
            device="cpu",
            **settings,
        )
    return built


@pytest.mark.parametrize("name", MODEL_CASES)
def test_model_case_matches_release(name, golden_dir, segmentors):
    segmentor = segmentors[name]
    expected = np.load(golden_dir / f"{name}.npz")
    image = normalised_image(golden_dir / f"{name}_image.npy")

    np.testing.assert_allclose(segmentor.query_features.numpy(), expected["query_features"], atol=FEATURE_ATOL, rtol=0)

    features, anomalies = segmentor.dense_features(image[None, :, :224, :224], return_anomalies=True)
    np.testing.assert_allclose(features[0].numpy(), expected["crop0_features"], atol=FEATURE_ATOL, rtol=0)
    np.testing.assert_array_equal(anomalies[0].numpy(), expected["crop0_outliers"])

    if segmentor.slide_crop > 0:
        windows = sliding_windows(*image.shape[-2:], segmentor.slide_crop, segmentor.slide_stride)
        crops = torch.stack([image[:, y1:y2, x1:x2] for y1, y2, x1, x2 in windows])
    else:
        crops = image[None]
    _, crop_anomalies = segmentor.dense_features(crops, return_anomalies=True)
    np.testing.assert_array_equal([len(a) for a in crop_anomalies], expected["crop_outlier_counts"])
    np.testing.assert_array_equal(torch.cat(crop_anomalies).numpy(), expected["crop_outliers"][:-1])

    (sample,) = segmentor.predict(image[None])
    scores = sample.seg_logits.data.numpy()
    np.testing.assert_allclose(scores, expected["class_probs"], atol=SCORE_ATOL, rtol=0)
    assert_predictions_match(sample.pred_sem_seg.data[0].numpy(), expected["pred"], expected["class_probs"])


@pytest.mark.parametrize("name", ["b16_voc_like", "l14_whole_image"])
def test_batch_of_two_equals_each_alone(name, golden_dir, segmentors):
    segmentor = segmentors[name]
    image = normalised_image(golden_dir / f"{name}_image.npy")
    flipped = image.flip(-1)
    alone = [segmentor.predict(x[None])[0] for x in (image, flipped)]
    together = segmentor.predict(torch.stack([image, flipped]))
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
    np.testing.assert_allclose(scores.numpy(), expected["class_probs"], atol=SCORE_ATOL, rtol=0)
    assert_predictions_match(pred[0].numpy(), expected["pred"], expected["class_probs"])
