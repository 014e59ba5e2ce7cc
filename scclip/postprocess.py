"""From query logits to class scores and labels (SPEC §3, post-processing per image)."""
import torch
from torch import Tensor


def class_scores(query_logits: Tensor, query_to_class: Tensor, num_classes: int, logit_scale: float) -> Tensor:
    """C×H×W scores: softmax over the Q queries of logit_scale × logits, max over each class's queries."""
    probs = (logit_scale * query_logits.float()).softmax(dim=0)
    if len(query_to_class) == num_classes:
        return probs
    index = query_to_class.to(probs.device).view(-1, 1, 1).expand_as(probs)
    return probs.new_zeros(num_classes, *probs.shape[1:]).scatter_reduce_(0, index, probs, "amax")


def suppress_small_classes(scores: Tensor, area_thd: float) -> Tensor:
    """Zero the scores of classes ≥ 1 whose argmax area is not above area_thd × the area of all classes ≥ 1."""
    area = torch.bincount(scores.max(dim=0).indices.flatten(), minlength=scores.shape[0])[1:].float()
    keep = (area > area_thd * area.sum()).to(scores.dtype)
    scores = scores.clone()
    scores[1:] *= keep[:, None, None]
    return scores


def labels(scores: Tensor, prob_thd: float) -> Tensor:
    """1×H×W argmax labels; pixels whose best score is below prob_thd become class 0."""
    best, pred = scores.max(dim=0, keepdim=True)
    pred[best < prob_thd] = 0
    return pred


def renormalise(scores: Tensor) -> Tensor:
    """Class scores divided by their sum over classes, per pixel (NACLIP stores these, after labels are taken)."""
    return scores / scores.sum(dim=0, keepdim=True)
