"""From query logits to class scores and labels: the one definition every prediction path calls.

The benchmark path (`SCCLIPForSegmentation.postprocess_result`) runs it on a whole image; the
full-size photo path (`scclip.fullres`) runs the same functions block by block, with the class
areas that `area_thd` needs counted in a first pass. See docs/method.md#post-processing.
"""
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import Tensor

from .blocks import finish


def class_scores(query_logits: Tensor, query_to_class: Tensor, num_classes: int, logit_scale: float) -> Tensor:
    """C×H×W scores: softmax over the Q queries of logit_scale × logits, max over each class's queries."""
    probs = (logit_scale * query_logits.float()).softmax(dim=0)
    if len(query_to_class) == num_classes:
        return probs
    index = query_to_class.to(probs.device).view(-1, 1, 1).expand_as(probs)
    return probs.new_zeros(num_classes, *probs.shape[1:]).scatter_reduce_(0, index, probs, "amax")


def class_areas(scores: Tensor) -> Tensor:
    """Pixels whose best class is each class (C, int64): summed over blocks, the areas of the whole image."""
    return torch.bincount(scores.max(dim=0).indices.flatten(), minlength=scores.shape[0])


def surviving_classes(areas: Tensor, area_thd: float) -> Tensor:
    """Which classes ≥ 1 keep their scores: area above area_thd × the area of all classes ≥ 1 (C−1, bool)."""
    foreground = areas[1:].float()
    return foreground > area_thd * foreground.sum()


def suppress(scores: Tensor, keep: Tensor) -> Tensor:
    """The scores with every class ≥ 1 that `keep` drops set to zero (a new tensor)."""
    scores = scores.clone()
    scores[1:] *= keep.to(scores.dtype)[:, None, None]
    return scores


def suppress_small_classes(scores: Tensor, area_thd: float) -> Tensor:
    """Zero the scores of classes ≥ 1 whose argmax area is not above area_thd × the area of all classes ≥ 1."""
    return suppress(scores, surviving_classes(class_areas(scores), area_thd))


def labels(scores: Tensor, prob_thd: float) -> Tensor:
    """1×H×W argmax labels; pixels whose best score is below prob_thd become class 0."""
    best, pred = scores.max(dim=0, keepdim=True)
    pred[best < prob_thd] = 0
    return pred


def renormalise(scores: Tensor) -> Tensor:
    """Class scores divided by their sum over classes, per pixel (NACLIP stores these, after labels are taken)."""
    return scores / scores.sum(dim=0, keepdim=True)


# The operations `scclip.blocks.finish` runs in its order (the runtime's numpy ones: scclip.runtime.numerics).
TORCH_STEPS = SimpleNamespace(suppress=suppress, labels=labels, renormalise=renormalise)


@dataclass(frozen=True)
class PostProcessing:
    """Everything between full-size query logits and a prediction, for one segmentor.

    Attributes:
        logit_scale: temperature of the softmax over queries.
        prob_thd: pixels whose best class score is below this become class 0.
        area_thd: classes ≥ 1 whose predicted area is at most this share of the foreground lose
            (None: off).
        pamr_steps, pamr_stride: PAMR on the full-size logits (0 steps: off) and its dilations.
        renormalise: the stored scores are divided by their sum over classes, after the labels (NACLIP).
    """

    logit_scale: float
    prob_thd: float = 0.0
    area_thd: float | None = None
    pamr_steps: int = 0
    pamr_stride: Sequence[int] = (8, 16)
    renormalise: bool = False

    def scores(self, query_logits: Tensor, query_to_class: Tensor, num_classes: int) -> Tensor:
        """C×H×W class scores of Q×H×W full-size query logits (before `area_thd`)."""
        return class_scores(query_logits, query_to_class, num_classes, self.logit_scale)

    def keep(self, areas: Tensor) -> Tensor | None:
        """The classes `area_thd` keeps, from the whole image's class areas; None when it is off."""
        return None if self.area_thd is None else surviving_classes(areas, self.area_thd)

    def finish(self, scores: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor]:
        """(stored class scores, 1×H×W labels) of class scores, given the classes `area_thd` keeps."""
        return finish(TORCH_STEPS, scores, keep, self.prob_thd, self.renormalise)

    def __call__(self, query_logits: Tensor, query_to_class: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
        """(stored class scores, 1×H×W labels) of one image's Q×H×W full-size query logits."""
        scores = self.scores(query_logits, query_to_class, num_classes)
        keep = self.keep(class_areas(scores)) if self.area_thd is not None else None
        return self.finish(scores, keep)
