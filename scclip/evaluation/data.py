"""The split a config evaluates: its image list, a full check of its files, and loaders that name a bad file.

`check_data` reads every image and label map of the split in parallel and reports each problem
(undecodable or truncated file, label size different from its image, label values outside the
dataset's classes and ignore index); `folder_problems` adds what only a folder benchmark can have
(images without a label map, label maps without an image). During a run, the checked loaders turn a failure to read a
file into one DatasetError naming it, so the run can stop cleanly and resume once it is fixed, and the
benchmarks' keep-ratio `Resize` becomes `ResizeForInference`: the resize of `Segmenter`, `scclip segment`
and `predict.py` (`scclip.api.resize_for_inference`), so that an image those label (a 1×5000 strip) is
evaluated too, its thin side stretched to one patch of the model.
"""
from __future__ import annotations

import copy
import io
import os
import os.path as osp
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile, Resize
from mmengine import fileio
from mmengine.utils import track_parallel_progress
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from ..api import resize_for_inference
from ..datasets import LABEL_EXTENSION, LoadWideAnnotations, is_folder_dataset
from ..errors import DatasetError, ImageError
from ..imageio import (
    NOT_AN_IMAGE,
    decoding_problem,
    describe_size,
    entry_problem,
    image_problem,
    problem_line,
    read_image,
    stored_size,
)

# Both work: --resume keeps what was stored for the images that are still in the split (scclip.evaluation.runs).
FIX_HINT = "replace or remove the file (and its line in the split file, if one lists it), then rerun with --resume " \
           "(python eval.py --config CONFIG --check-data lists every bad file)"
JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"
LOADER_TYPES = {"LoadImageFromFile": "ScclipLoadImageFromFile", "LoadAnnotations": "ScclipLoadAnnotations",
                "LoadWideAnnotations": "ScclipLoadWideAnnotations"}
LABEL_LOADER_TYPES = ("ScclipLoadAnnotations", "ScclipLoadWideAnnotations")


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
        return decoding_problem(error)
    return None


def _unreadable(path: str, problem: str | None = None, size: tuple[int, int] | None = None) -> DatasetError:
    """The run stops at a file it cannot read: the wording of every command (scclip.imageio), and the fix.
    Without `problem`, the file is read again by `read_image` to say why."""
    line = problem_line(path, problem, size) if problem else image_problem(path) or problem_line(path, NOT_AN_IMAGE)
    return DatasetError(f"{line}; {FIX_HINT}")


@TRANSFORMS.register_module()
class ResizeForInference(Resize):
    """The keep-ratio test resize of every other entry point (`scclip.api.resize_for_inference`) as a transform.

    For an ordinary image it computes exactly what mmcv's keep-ratio `Resize` does (same size rule, cv2
    bilinear); a side that would come out shorter than `min_side` (0 pixels for a 1×5000 strip fitted
    to 2048×336, which OpenCV refuses) is stretched to `min_side` instead. The evaluation loop sets
    `min_side` to the model's patch size (`for_model`), as `Segmenter` does.

    Args:
        scale: (long, short) bound of the resize, as the config's `Resize`.
        min_side: the shortest side an image may come out with.
    """

    def __init__(self, scale: tuple[int, int], min_side: int = 1) -> None:
        super().__init__(scale=scale, keep_ratio=True)
        self.min_side = min_side

    def _resize_img(self, results: dict) -> None:
        image = results.get("img")
        if image is None:
            return
        resized = resize_for_inference(image, results["scale"], min_side=self.min_side)
        height, width = image.shape[:2]
        results.update(img=resized, img_shape=resized.shape[:2], keep_ratio=True,
                       scale_factor=(resized.shape[1] / width, resized.shape[0] / height))


def _is_plain_keep_ratio_resize(step: Mapping) -> bool:
    """A config's `Resize` that `ResizeForInference` computes exactly: keep-ratio to a scale, cv2 bilinear."""
    return (str(step.get("type", "")).split(".")[-1] == "Resize" and bool(step.get("keep_ratio"))
            and step.get("scale") is not None and step.get("scale_factor") is None
            and step.get("interpolation", "bilinear") == "bilinear" and step.get("backend", "cv2") == "cv2")


@TRANSFORMS.register_module()
class ScclipLoadImageFromFile(LoadImageFromFile):
    """mmcv's LoadImageFromFile (same decoding), but a truncated or unreadable image raises one DatasetError."""

    def transform(self, results: dict) -> dict:
        path = results["img_path"]
        try:
            data = fileio.get(path, backend_args=self.backend_args)
            problem = jpeg_problem(data)
            image = None if problem else mmcv.imfrombytes(data, flag=self.color_type, backend=self.imdecode_backend)
        except Exception:
            raise _unreadable(path, entry_problem(path)) from None  # a loop, a broken link ... or read_image's why
        if image is None:
            raise _unreadable(path, problem, stored_size(path) if problem else None)
        if self.to_float32:
            image = image.astype(np.float32)
        results.update(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2])
        return results


def _reduced(labels: np.ndarray) -> np.ndarray:
    """Label values as mmseg's reduce_zero_label scores them: 0 becomes 255 (ignored), the others one less."""
    labels = labels.astype(np.int64)
    return np.where((labels == 0) | (labels == 255), 255, labels - 1)


def label_size_problem(label_path: str, label_shape: Sequence[int], image_path: str,
                       image_shape: Sequence[int]) -> str | None:
    """The one line for a label map whose size is not its image's (shapes are H×W), or None."""
    if tuple(label_shape[:2]) == tuple(image_shape[:2]):
        return None
    return (f"{label_path}: label map is {describe_size(label_shape[1::-1])} but its image {image_path} is "
            f"{describe_size(image_shape[1::-1])}: a label map has its image's size")


def label_values_problem(label_path: str, scored: np.ndarray, num_classes: int, ignore_index: int,
                         reduce_zero_label: bool) -> str | None:
    """The one line for label values that are neither a class nor the ignore value, or None.

    Args:
        scored: the label values as the metric reads them (after reduce_zero_label, if the dataset has it).
    """
    values = np.unique(scored).astype(np.int64)
    bad = values[(values != ignore_index) & ((values < 0) | (values >= num_classes))]
    if not bad.size:
        return None
    if reduce_zero_label:
        bad, allowed = bad + 1, f"1..{num_classes} (0 and 255 ignored)"
    else:
        allowed = f"0..{num_classes - 1} or {ignore_index} (ignored)"
    shown = ", ".join(map(str, bad[:5])) + (" ..." if bad.size > 5 else "")
    return f"{label_path}: label values {shown} are outside {allowed}"


class ChecksLabelMaps:
    """Mixed into a label loader: an unreadable label map, one of another size than its image, or one with
    values that are neither a class nor the ignore value raises one DatasetError naming it (values outside
    the classes are not scored silently). `num_classes` and `ignore_index` are set by the evaluation loop;
    without them values are not checked."""

    def __init__(self, *args, num_classes: int | None = None, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def _load_seg_map(self, results: dict) -> None:
        path = results["seg_map_path"]
        try:
            super()._load_seg_map(results)
        except DatasetError:
            raise
        except Exception as error:
            raise _unreadable(path, entry_problem(path) or decoding_problem(error)) from None
        labels = results["gt_seg_map"]
        if labels.ndim == 1:  # mmseg squeezes a one-pixel-wide (or high) map to one axis: give it back
            labels = results["gt_seg_map"] = labels.reshape(stored_size(path)[::-1])
        if labels.ndim != 2:
            raise DatasetError(f"{path}: label map has {labels.shape[2]} channels: it must hold one class index per "
                               f"pixel; {FIX_HINT}")
        problem = label_size_problem(path, labels.shape, results["img_path"], results["ori_shape"])
        if problem is None and self.num_classes is not None:
            reduce = bool(self.reduce_zero_label or results.get("reduce_zero_label"))
            problem = label_values_problem(path, labels, self.num_classes, self.ignore_index, reduce)
        if problem is not None:
            raise DatasetError(f"{problem}; {FIX_HINT}")


@TRANSFORMS.register_module()
class ScclipLoadAnnotations(ChecksLabelMaps, LoadAnnotations):
    """mmseg's LoadAnnotations, but a label map that cannot be scored as it is raises one DatasetError naming it."""


@TRANSFORMS.register_module()
class ScclipLoadWideAnnotations(ChecksLabelMaps, LoadWideAnnotations):
    """scclip's LoadWideAnnotations (16-bit label maps), checked as ScclipLoadAnnotations."""


def with_checked_loaders(pipeline: Sequence[Mapping]) -> list[dict]:
    """The pipeline with the file loaders replaced by the checked ones (same arguments, same decoding) and
    the keep-ratio `Resize` by `ResizeForInference` (the same sizes, and thin images too).

    The swap happens at run time, not in the configs: a run's identity (its folder) stays what it was.
    """
    steps = []
    for step in pipeline:
        step = dict(step)
        name = str(step.get("type", "")).split(".")[-1]
        if name in LOADER_TYPES:
            step["type"] = LOADER_TYPES[name]
        elif _is_plain_keep_ratio_resize(step):
            step = dict(type="ResizeForInference", scale=tuple(step["scale"]))
        steps.append(step)
    return steps


def for_model(pipeline: Sequence[Mapping], patch_size: int | None, num_classes: int,
              ignore_index: int) -> list[dict]:
    """The checked pipeline completed with what the run knows: `ResizeForInference` stretches thin sides to
    the model's `patch_size` (as Segmenter does), the checked label loaders check values against the classes."""
    steps = []
    for step in pipeline:
        step = dict(step)
        if step.get("type") == "ResizeForInference" and patch_size is not None:
            step["min_side"] = patch_size
        elif step.get("type") in LABEL_LOADER_TYPES:
            step.update(num_classes=num_classes, ignore_index=ignore_index)
        steps.append(step)
    return steps


def label_sizes_problems(split: Split, indices: Sequence[int], threads: int = 16) -> list[str]:
    """Every label map among `indices` whose size (read from the file headers, nothing decoded) is not its image's.

    Cheap enough to run on a whole split before a run starts: a header is a few hundred bytes.
    """
    def problem(index: int) -> str | None:
        image, label = split.image_paths[index], split.label_paths[index]
        image_size, label_size = stored_size(image, oriented=True), stored_size(label) if label else None
        if image_size is None or label_size is None:
            return None  # unreadable: the loader names it when it gets there, --check-data up front
        return label_size_problem(label, label_size[::-1], image, image_size[::-1])

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return [line for line in pool.map(problem, indices) if line is not None]


def check_label_sizes(split: Split, indices: Sequence[int]) -> None:
    """Refuse, before a run starts, label maps of another size than their image (the first one named).

    Raises:
        DatasetError: with the first such label map, and how many there are.
    """
    problems = label_sizes_problems(split, indices)
    if problems:
        more = f" (and {len(problems) - 1} more label maps of another size)" if len(problems) > 1 else ""
        raise DatasetError(f"{problems[0]}{more}: fix them (python eval.py --config CONFIG --check-data lists every "
                           "bad file)")


def _image_problem(path: str) -> tuple[tuple[int, int] | None, str | None]:
    """(H×W of the image as the loaders decode it, None) or (None, the one line saying why it cannot be read)."""
    try:
        return read_image(path).shape[:2], None
    except ImageError as error:
        return None, str(error)


def check_item(task: tuple[str, str | None, int, bool, int]) -> list[str]:
    """Problems of one image and its label map ('path: what is wrong'), for `check_data`."""
    image_path, label_path, num_classes, reduce_zero_label, ignore_index = task
    size, problem = _image_problem(image_path)
    problems = [problem] if problem else []
    if label_path is None:
        return problems
    problem = entry_problem(label_path)
    if problem is not None:
        return [*problems, problem_line(label_path, problem)]
    try:
        with Image.open(label_path) as label_image:
            label_image.load()
            mode = label_image.mode
            labels = np.asarray(label_image)
    except Exception as error:
        return [*problems, problem_line(label_path, decoding_problem(error))]
    if labels.ndim != 2:
        return [*problems, f"{label_path}: label map has {labels.shape[2]} channels ({mode}); "
                           "it must hold one class index per pixel"]
    if size is not None:
        problems.append(label_size_problem(label_path, labels.shape, image_path, size))
    scored = _reduced(labels) if reduce_zero_label else labels
    problems.append(label_values_problem(label_path, scored, num_classes, ignore_index, reduce_zero_label))
    return [problem for problem in problems if problem is not None]


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
    problems = [problem_line(osp.join(img_dir, image), reason) for image, reason in contents.unreadable]
    problems += [f"{osp.join(img_dir, image)}: image has no label map "
                 f"(expected {osp.join(ann_dir, osp.splitext(image)[0] + LABEL_EXTENSION)})"
                 for image in contents.unlabelled]
    problems += [f"{osp.join(ann_dir, label)}: label map has no image "
                 f"(expected {osp.join(img_dir, osp.splitext(label)[0])} with an image extension)"
                 for label in contents.orphan_labels]
    problems += [f"{osp.join(ann_dir, path)}: not a PNG: label maps are PNG files named like their image"
                 for path in contents.not_png]
    return problems
