"""The split a config evaluates: its image list, a full check of its files, and loaders that name a bad file.

`check_data` reads every image and label map of the split in parallel and reports each problem
(undecodable or truncated file, label size different from its image, label values outside the
dataset's classes and ignore index); `folder_problems` adds what only a folder benchmark can have
(images without a label map, label maps without an image). During a run, the checked loaders turn a failure to read a
file into one DatasetError naming it, so the run can stop cleanly and resume once it is fixed.
"""
from __future__ import annotations

import copy
import io
import os
import os.path as osp
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmengine.utils import track_parallel_progress
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from ..datasets import LABEL_EXTENSION, LoadWideAnnotations, is_folder_dataset
from ..errors import DatasetError

FIX_HINT = "replace or remove the file (python eval.py --config CONFIG --check-data lists every bad file), " \
           "then rerun with --resume"
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
LOADER_TYPES = {"LoadImageFromFile": "ScclipLoadImageFromFile", "LoadAnnotations": "ScclipLoadAnnotations",
                "LoadWideAnnotations": "ScclipLoadWideAnnotations"}


@dataclass(frozen=True)
class Split:
    """The images and label maps a dataset config lists, in dataset order."""

    image_paths: list[str]
    label_paths: list[str]
    data_root: str
    class_names: tuple[str, ...]
    reduce_zero_label: bool

    @property
    def relative_image_paths(self) -> list[str]:
        return [osp.relpath(path, self.data_root) if self.data_root else path for path in self.image_paths]


def list_split(dataset_cfg: Mapping) -> Split:
    """The split of a dataset config, listed by the dataset class itself (no file is read)."""
    cfg = copy.deepcopy(dict(dataset_cfg))
    cfg.update(pipeline=[], serialize_data=False)
    cfg.pop("indices", None)
    dataset = DATASETS.build(cfg)
    infos = [dataset.get_data_info(index) for index in range(len(dataset))]
    return Split(
        image_paths=[info["img_path"] for info in infos],
        label_paths=[info.get("seg_map_path") for info in infos],
        data_root=cfg.get("data_root") or "",
        class_names=tuple(dataset.metainfo["classes"]),
        reduce_zero_label=bool(getattr(dataset, "reduce_zero_label", False)),
    )


def jpeg_problem(data: bytes) -> str | None:
    """What is wrong with JPEG bytes that do not end with the end-of-image marker, if anything.

    Decoders fill a truncated JPEG's missing rows with grey and only warn; a strict decode of the
    few files without the marker tells a truncated file from one with harmless trailing bytes.
    """
    if not data.startswith(JPEG_START) or data.rstrip(b"\x00\r\n ").endswith(JPEG_END):
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError ... for bad data
        return f"is truncated or damaged ({error})"
    return None


def _decode_failure(path: str, error: Exception) -> DatasetError:
    reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return DatasetError(f"cannot read {path}: {reason}; {FIX_HINT}")


@TRANSFORMS.register_module()
class ScclipLoadImageFromFile(LoadImageFromFile):
    """mmcv's LoadImageFromFile (same decoding), but a truncated or unreadable image raises one DatasetError."""

    def transform(self, results: dict) -> dict:
        path = results["img_path"]
        try:
            data = fileio.get(path, backend_args=self.backend_args)
            problem = jpeg_problem(data)
            image = None if problem else mmcv.imfrombytes(data, flag=self.color_type, backend=self.imdecode_backend)
        except Exception as error:
            raise _decode_failure(path, error) from None
        if image is None:
            raise DatasetError(f"image {path} {problem or 'cannot be decoded'}; {FIX_HINT}")
        if self.to_float32:
            image = image.astype(np.float32)
        results.update(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2])
        return results


class NamesUnreadableLabelMaps:
    """Mixed into a label loader: an unreadable label map raises one DatasetError naming it."""

    def _load_seg_map(self, results: dict) -> None:
        try:
            super()._load_seg_map(results)
        except DatasetError:
            raise
        except Exception as error:
            raise _decode_failure(results["seg_map_path"], error) from None


@TRANSFORMS.register_module()
class ScclipLoadAnnotations(NamesUnreadableLabelMaps, LoadAnnotations):
    """mmseg's LoadAnnotations, but an unreadable label map raises one DatasetError naming it."""


@TRANSFORMS.register_module()
class ScclipLoadWideAnnotations(NamesUnreadableLabelMaps, LoadWideAnnotations):
    """scclip's LoadWideAnnotations (16-bit label maps), but an unreadable label map raises one DatasetError."""


def with_checked_loaders(pipeline: Sequence[Mapping]) -> list[dict]:
    """The pipeline with the file loaders replaced by the checked ones (same arguments, same decoding)."""
    steps = []
    for step in pipeline:
        step = dict(step)
        name = str(step.get("type", "")).split(".")[-1]
        if name in LOADER_TYPES:
            step["type"] = LOADER_TYPES[name]
        steps.append(step)
    return steps


def _image_problem(path: str) -> tuple[tuple[int, int] | None, str | None]:
    try:
        with open(path, "rb") as file:
            data = file.read()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.size[::-1], None
    except Exception as error:
        return None, f"{path}: image cannot be decoded ({getattr(error, 'strerror', None) or error})"


def check_item(task: tuple[str, str | None, int, bool, int]) -> list[str]:
    """Problems of one image and its label map ('path: what is wrong'), for `check_data`."""
    image_path, label_path, num_classes, reduce_zero_label, ignore_index = task
    size, problem = _image_problem(image_path)
    problems = [problem] if problem else []
    if label_path is None:
        return problems
    try:
        with Image.open(label_path) as label_image:
            label_image.load()
            mode = label_image.mode
            labels = np.asarray(label_image)
    except Exception as error:
        return [*problems, f"{label_path}: label map cannot be decoded "
                           f"({getattr(error, 'strerror', None) or error})"]
    if labels.ndim != 2:
        return [*problems, f"{label_path}: label map has {labels.shape[2]} channels ({mode}); "
                           "it must hold one class index per pixel"]
    if size is not None and labels.shape != size:
        problems.append(f"{label_path}: label map is {labels.shape[0]}×{labels.shape[1]} "
                        f"but its image is {size[0]}×{size[1]}")
    values = np.unique(labels).astype(np.int64)
    classes = values - 1 if reduce_zero_label else values
    ignored = (values == 0) | (values == 255) if reduce_zero_label else values == ignore_index
    bad = values[~ignored & ((classes < 0) | (classes >= num_classes))]
    if bad.size:
        allowed = f"1..{num_classes} (0 and 255 ignored)" if reduce_zero_label else \
            f"0..{num_classes - 1} or {ignore_index} (ignored)"
        shown = ", ".join(map(str, bad[:5])) + (" ..." if bad.size > 5 else "")
        problems.append(f"{label_path}: label values {shown} are outside {allowed}")
    return problems


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_data(split: Split, ignore_index: int, workers: int | None = None) -> list[str]:
    """Read every image and label map of `split` in parallel (with a progress bar); every problem found."""
    tasks = [(image, label, len(split.class_names), split.reduce_zero_label, ignore_index)
             for image, label in zip(split.image_paths, split.label_paths)]
    workers = max(1, min(workers or available_cores(), len(tasks)))
    chunk = max(1, min(16, len(tasks) // (workers * 4)))
    results = track_parallel_progress(check_item, tasks, workers, chunksize=chunk)
    print()
    return [problem for problems in results for problem in problems]


def folder_problems(dataset_cfg: Mapping) -> list[str]:
    """A folder benchmark's images without a label map, label maps without an image and label files that are
    not PNG ('path: what is wrong'); nothing for other datasets, whose split files say what is labelled."""
    if not is_folder_dataset(dataset_cfg.get("type")):
        return []
    cfg = copy.deepcopy(dict(dataset_cfg))
    cfg.update(pipeline=[], serialize_data=False)
    cfg.pop("indices", None)
    dataset = DATASETS.build(cfg)
    img_dir, ann_dir = dataset.data_prefix["img_path"], dataset.data_prefix["seg_map_path"]
    contents = dataset.contents
    problems = [f"{osp.join(img_dir, image)}: image has no label map "
                f"(expected {osp.join(ann_dir, osp.splitext(image)[0] + LABEL_EXTENSION)})"
                for image in contents.unlabelled]
    problems += [f"{osp.join(ann_dir, label)}: label map has no image "
                 f"(expected {osp.join(img_dir, osp.splitext(label)[0])} with an image extension)"
                 for label in contents.orphan_labels]
    problems += [f"{osp.join(ann_dir, path)}: not a PNG: label maps are PNG files named like their image"
                 for path in contents.not_png]
    return problems
