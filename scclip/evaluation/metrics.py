"""mIoU from per-image areas summed as integers, so any split of the work gives the same numbers.

The formulas are mmseg's IoUMetric (intersection over union per class, accuracy = intersection over
label pixels, aAcc over all labelled pixels, classes with an empty union left out of the means),
computed in float64 from exact int64 totals instead of float32 running sums.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from ..errors import DatasetError
from .store import ImageAreas


def image_areas(prediction: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int) -> np.ndarray:
    """4×C int64 areas of one image: intersection, union, predicted and labelled pixels per class.

    Pixels labelled `ignore_index` are left out; label values outside 0..C-1 count for the
    prediction only, as in mmseg's `intersect_and_union`. Predictions are class indices below C.
    One bincount of label × C + prediction gives the confusion matrix, whose diagonal, column and row
    sums are the areas: on the GPU on the device, on the CPU with numpy (single-threaded, so it never
    competes with the model's threads).
    """
    on_gpu = prediction.is_cuda
    if on_gpu:
        prediction, label = prediction.reshape(-1).long(), label.reshape(-1).to(prediction.device).long()
        count, stack = torch.bincount, torch.stack
    else:
        prediction = prediction.reshape(-1).numpy().astype(np.int64, copy=False)
        label = label.reshape(-1).numpy().astype(np.int64, copy=False)
        count, stack = np.bincount, np.stack
    keep = label != ignore_index
    prediction, label = prediction[keep], label[keep]
    in_range = (label >= 0) & (label < num_classes)
    all_in_range = bool(in_range.all())
    if not all_in_range:
        pred_area = count(prediction, minlength=num_classes)[:num_classes]
        prediction, label = prediction[in_range], label[in_range]
    confusion = count(label * num_classes + prediction, minlength=num_classes**2).reshape(num_classes, num_classes)
    intersect, label_area = confusion.diagonal(), confusion.sum(1)
    if all_in_range:
        pred_area = confusion.sum(0)
    areas = stack([intersect, pred_area + label_area - intersect, pred_area, label_area])
    return (areas.cpu().numpy() if on_gpu else areas).astype(np.int64)


def total_areas(items: Iterable[ImageAreas], num_classes: int) -> np.ndarray:
    """4×C int64 totals, summed in dataset order."""
    total = np.zeros((4, num_classes), dtype=np.int64)
    for item in sorted(items, key=lambda item: item.index):
        total += item.areas
    return total


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else round(value * 100, 2)


def metrics_from_areas(total: np.ndarray, class_names: Sequence[str]) -> dict:
    """aAcc, mIoU, mAcc and per-class IoU/Acc in % rounded to 2 decimals (None: class absent on both sides)."""
    intersect, union, _, label = total.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersect / union
        acc = intersect / label
        overall = intersect.sum() / label.sum()
    summary = dict(
        aAcc=_percent(float(overall)),
        mIoU=_percent(float(np.nanmean(iou))) if not np.isnan(iou).all() else None,
        mAcc=_percent(float(np.nanmean(acc))) if not np.isnan(acc).all() else None,
    )
    per_class = {name: dict(IoU=_percent(float(i)), Acc=_percent(float(a)))
                 for name, i, a in zip(class_names, iou, acc)}
    return dict(summary=summary, per_class=per_class)


def format_table(per_class: dict[str, dict], summary: dict) -> str:
    """The per-class table and the summary line for the console."""
    width = max([len("class"), *map(len, per_class)])

    def cell(value: float | None) -> str:
        return f"{'—' if value is None else f'{value:.2f}':>7}"

    lines = [f"{'class':<{width}}  {'IoU':>7}  {'Acc':>7}"]
    lines += [f"{name:<{width}}  {cell(row['IoU'])}  {cell(row['Acc'])}" for name, row in per_class.items()]
    lines.append("  ".join(f"{key} {cell(value).strip()}" for key, value in summary.items()))
    return "\n".join(lines)


def stored_results(results_dir, run_key: str, image_paths: Sequence[str]) -> dict[int, ImageAreas]:
    """The stored areas of this run, checked against the split's images (index and path).

    Raises:
        DatasetError: a stored result names another image than the split lists at its index.
    """
    from .store import read_store

    results, _ = read_store(results_dir, run_key)
    for index, item in results.items():
        if index >= len(image_paths) or item.path != image_paths[index]:
            expected = image_paths[index] if index < len(image_paths) else "nothing"
            raise DatasetError(f"stored result {index} in {results_dir} is for {item.path} but the split lists "
                               f"{expected} there: the split changed; start over with --force")
    return results


def metrics_from_store(results_dir, run_key: str, image_paths: Sequence[str], class_names: Sequence[str]) -> dict:
    """Metrics of a run from its stored per-image areas (every image of the split must be stored)."""
    results = stored_results(results_dir, run_key, image_paths)
    missing = [index for index in range(len(image_paths)) if index not in results]
    if missing:
        raise DatasetError(f"{len(missing)} of {len(image_paths)} images have no stored result in {results_dir}, "
                           f"e.g. {image_paths[missing[0]]}: run again with --resume")
    return metrics_from_areas(total_areas(results.values(), len(class_names)), class_names)
