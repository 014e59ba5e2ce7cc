"""Parity of every method with its own release on the golden cases of `golden/methods/` (docs/method.md#golden-parity)."""
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import golden_dir_or_none, golden_file

from scclip import SCCLIPForSegmentation
from scclip.clip import load
from scclip.windows import patch_padding

FEATURE_ATOL = 1e-4
SCORE_ATOL = 1e-4
TIE_ATOL = 1e-5
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


BATCH_CASES = {
    "vanilla_b16_voc21", "maskclip_b16_pad_obj", "sclip_l14_pamr", "clearclip_b16_pad_obj",
    "naclip_b16_voc21", "scclip_abl_all_off_b16_voc", "scclip_abl_no_anomaly_b16_voc",
}


def method_cases() -> list[str]:
    root = golden_dir_or_none()
    if root is None or not (root / "methods").is_dir():
        return ["missing"]
    return sorted(path.stem for path in (root / "methods").glob("*.json"))


@lru_cache(maxsize=4)
def clip_model(path: Path):
    model, _ = load(path, device="cpu")
    return model


def normalised_image(path: Path) -> torch.Tensor:
    image = torch.from_numpy(np.load(path)).permute(2, 0, 1).float() / 255
    return (image - MEAN) / STD


class Case:
    """One golden case: its JSON, arrays, image and a segmentor built with its settings."""

    def __init__(self, root: Path, name: str) -> None:
        case_file = root / "methods" / f"{name}.json"
        self.meta = json.loads(case_file.read_text())
        self.expected = np.load(golden_file(root / "methods" / f"{name}.npz"))
        self.image = normalised_image(golden_file(case_file.parent / self.meta["image"]))
        checkpoint = golden_file(case_file.parent / self.meta["checkpoint"])
        self.segmentor = SCCLIPForSegmentation(
            clip_path=str(checkpoint),
            name_path=str(golden_file(root / "methods" / f"{name}_classes.txt")),
            device="cpu",
            clip_model=clip_model(checkpoint),
            **self.meta["settings"],
        )

    def first_window(self) -> torch.Tensor:
        """The first window as the release encodes it (padded when the case says so), or the whole image."""
        crop = self.segmentor.slide_crop
        if crop == 0:
            return self.image[None]
        window = self.image[None, :, :crop, :crop]
        if self.segmentor.pad_to_patch:
            window = F.pad(window, patch_padding(*window.shape[-2:], self.segmentor.encoder.patch_size))
        return window


@pytest.fixture(scope="module", params=method_cases())
def case(request, golden_dir) -> Case:
    if request.param == "missing":
        pytest.skip("golden/methods not found")
    return Case(golden_dir, request.param)


def assert_labels_match(pred: np.ndarray, expected: np.ndarray, tie: np.ndarray, scores: np.ndarray, prob_thd: float) -> None:
    """Identical labels outside ties: the release's two best scores within 1e-5 (`tie`), or a best
    score within 1e-5 of `prob_thd` (float rounding decides which side of the threshold it falls)."""
    at_threshold = np.abs(scores.max(axis=0) - prob_thd) <= TIE_ATOL
    differ = (pred != expected) & ~tie & ~at_threshold
    assert not differ.any(), f"{differ.sum()} pixels differ outside ties"


def test_query_features(case):
    np.testing.assert_allclose(
        case.segmentor.query_features.numpy(), case.expected["query_features"], atol=FEATURE_ATOL, rtol=0
    )


def test_first_window_features(case):
    if "crop0_padding_lrtb" in case.meta:
        window = case.image[None, :, : case.segmentor.slide_crop, : case.segmentor.slide_crop]
        assert list(patch_padding(*window.shape[-2:], case.segmentor.encoder.patch_size)) == case.meta["crop0_padding_lrtb"]
    features = case.segmentor.dense_features(case.first_window())[0]
    np.testing.assert_allclose(features.numpy(), case.expected["crop0_features"], atol=FEATURE_ATOL, rtol=0)


def test_scores_and_labels(case):
    (sample,) = case.segmentor.predict(case.image[None])
    scores = sample.seg_logits.data.numpy()
    assert list(scores.shape) == case.meta["scores_shape"]
    stride = case.meta["probs_stride"]
    np.testing.assert_allclose(scores[:, ::stride, ::stride], case.expected["class_probs_sub"], atol=SCORE_ATOL, rtol=0)
    assert_labels_match(sample.pred_sem_seg.data[0].numpy(), case.expected["pred"], case.expected["tie"],
                        sample.seg_logits.data.numpy(), case.segmentor.post.prob_thd)


@pytest.mark.parametrize("case", sorted(BATCH_CASES), indirect=True)
def test_batch_of_two_gives_each_own_result(case):
    """One case per method (and two switch sets) is enough: batching never depends on the image."""
    image = case.image
    other = image.flip(-1)
    alone = [case.segmentor.predict(x[None])[0] for x in (image, other)]
    together = case.segmentor.predict(torch.stack([image, other]))
    for one, batched in zip(alone, together):
        torch.testing.assert_close(batched.seg_logits.data, one.seg_logits.data, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.pred_sem_seg.data, one.pred_sem_seg.data)
