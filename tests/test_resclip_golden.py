"""ResCLIP's parity with its release on the golden cases of `golden/resclip/` (docs/method.md#resclip).

Three cases of yvhangyang/ResCLIP@0e085f7f52f0 (SPEC Part III §11): ViT-B/16 VOC21 on the whole
image, ViT-B/16 Context60 in windows, ViT-L/14 COCO-Object in windows. Compared as the other
methods' cases are: query features, the first window's features (SFR's second pass), the stored
class scores, and the labels outside exact ties.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import golden_dir_or_none, golden_file
from test_methods_golden import FEATURE_ATOL, SCORE_ATOL, assert_labels_match, clip_model, normalised_image

from scclip import SCCLIPForSegmentation

FOLDER = "resclip"


def resclip_cases() -> list[str]:
    root = golden_dir_or_none()
    if root is None or not (root / FOLDER).is_dir():
        return ["missing"]
    return sorted(path.stem for path in (root / FOLDER).glob("*.json"))


class ResCLIPCase:
    """One golden case: its JSON, arrays, normalised image and a segmentor built with its settings."""

    def __init__(self, root: Path, name: str) -> None:
        folder = root / FOLDER
        self.meta = json.loads((folder / f"{name}.json").read_text())
        self.expected = np.load(golden_file(folder / f"{name}.npz"))
        self.image = normalised_image(golden_file(folder / self.meta["image"]))
        self.checkpoint = golden_file(folder / self.meta["checkpoint"])
        self.classes = golden_file(folder / f"{name}_classes.txt")
        self.segmentor = self.build()

    def build(self, **changes) -> SCCLIPForSegmentation:
        """A segmentor with the case's settings, `changes` applied."""
        return SCCLIPForSegmentation(clip_path=str(self.checkpoint), name_path=str(self.classes), device="cpu",
                                     clip_model=clip_model(self.checkpoint), **{**self.meta["settings"], **changes})

    def first_window(self) -> torch.Tensor:
        crop = self.segmentor.slide_crop
        return self.image[None] if crop == 0 else self.image[None, :, :crop, :crop]


@pytest.fixture(scope="module", params=resclip_cases())
def case(request, golden_dir) -> ResCLIPCase:
    if request.param == "missing":
        pytest.fail(f"golden/{FOLDER} not found: see tests/golden/make_compact.py")
    return ResCLIPCase(golden_dir, request.param)


def test_the_three_release_cases_are_there():
    assert resclip_cases() == ["resclip_b16_context60", "resclip_b16_voc21", "resclip_l14_coco_object"]


def test_query_features(case):
    np.testing.assert_allclose(case.segmentor.query_features.numpy(), case.expected["query_features"],
                               atol=FEATURE_ATOL, rtol=0)


def test_first_window_features(case):
    features = case.segmentor.dense_features(case.first_window())[0]
    np.testing.assert_allclose(features.numpy(), case.expected["crop0_features"], atol=FEATURE_ATOL, rtol=0)


def test_scores_and_labels(case):
    (sample,) = case.segmentor.predict(case.image[None])
    scores = sample.seg_logits.data.numpy()
    assert list(scores.shape) == case.meta["scores_shape"]
    stride = case.meta["probs_stride"]
    np.testing.assert_allclose(scores[:, ::stride, ::stride], case.expected["class_probs_sub"], atol=SCORE_ATOL, rtol=0)
    assert_labels_match(sample.pred_sem_seg.data[0].numpy(), case.expected["pred"], case.expected["tie"],
                        scores, case.segmentor.post.prob_thd)


def test_sfr_moves_the_scores_as_much_as_the_release_says(case):
    """With SFR really off, the scores move by the amount the case measured on the release."""
    without = case.build(sfr=False)
    with_sfr = case.segmentor.predict(case.image[None])[0].seg_logits.data
    moved = (without.predict(case.image[None])[0].seg_logits.data - with_sfr).abs().max().item()
    assert moved == pytest.approx(case.meta["sfr_vs_rcs_only"]["max_abs_class_probs"], abs=1e-4)


@pytest.mark.parametrize("case", ["resclip_b16_context60"], indirect=True)
def test_batch_of_two_different_images_gives_each_its_own_result(case):
    """Windows of two images share encoder batches; each keeps its own labels, max(M) and SFR matrix."""
    image, other = case.image, case.image.flip(-1).roll(37, dims=-2)
    alone = [case.segmentor.predict(x[None])[0] for x in (image, other)]
    together = case.segmentor.predict(torch.stack([image, other]))
    for one, batched in zip(alone, together):
        torch.testing.assert_close(batched.seg_logits.data, one.seg_logits.data, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.pred_sem_seg.data, one.pred_sem_seg.data)
