"""The benchmark datasets SC-CLIP adds to mmseg's, any folder as a benchmark, and a check that a
dataset is where a config says.

mmseg already has Pascal VOC (21 classes), Pascal Context (60 and 59 classes), COCO-Stuff 164k,
Cityscapes and ADE20K. The published evaluation also uses VOC without its background class and
COCO-Object; the Context variants get the names the published configs use. `FolderDataset` reads a
folder of one's own (docs/your-data.md): `images/`, `labels/` (a PNG per image, 16-bit for more
than 255 classes) and `classes.txt`.
"""
import codecs
import inspect
import os
import os.path as osp
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mmcv
import numpy as np
from mmengine import fileio
from mmengine.logging import MMLogger
from mmseg.datasets import (
    BaseSegDataset,
    COCOStuffDataset,
    PascalContextDataset,
    PascalContextDataset59,
    PascalVOCDataset,
)
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, TRANSFORMS

from .benchmarks import vocabulary_file
from .errors import DatasetError, InputError
from .fileio import read_user_text
from .imageio import entry_problem, problem_line
from .text import Vocabulary

DATA_HELP = "see docs/evaluation.md#datasets, or point the config at your copy with " \
            "--cfg-options test_dataloader.dataset.data_root=PATH"


@DATASETS.register_module()
class PascalVOC20Dataset(PascalVOCDataset):
    """Pascal VOC 2012 with its background ignored: label 0 and the 255 borders are not scored."""

    METAINFO = dict(classes=PascalVOCDataset.METAINFO["classes"][1:],
                    palette=PascalVOCDataset.METAINFO["palette"][1:])

    def __init__(self, ann_file: str, reduce_zero_label: bool = True, **kwargs) -> None:
        super().__init__(ann_file=ann_file, reduce_zero_label=reduce_zero_label, **kwargs)


@DATASETS.register_module()
class PascalContext60Dataset(PascalContextDataset):
    """Pascal Context, 60 classes with background as class 0 (mmseg's PascalContextDataset)."""


@DATASETS.register_module()
class PascalContext59Dataset(PascalContextDataset59):
    """Pascal Context, 59 classes with background ignored (mmseg's PascalContextDataset59)."""


@DATASETS.register_module()
class COCOObjectDataset(BaseSegDataset):
    """COCO-Object: background plus COCO's 80 thing classes, from `datasets/cvt_coco_object.py`."""

    METAINFO = dict(classes=("background", *COCOStuffDataset.METAINFO["classes"][:80]),
                    palette=[[0, 0, 0], *COCOStuffDataset.METAINFO["palette"][:80]])

    def __init__(self, img_suffix: str = ".jpg", seg_map_suffix: str = "_instanceTrainIds.png", **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


# -- any folder as a benchmark ---------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
LABEL_EXTENSION = ".png"
FOLDER_HELP = "see docs/your-data.md"
DEFAULT_IGNORE_INDEX = 255
WIDEST_LABEL = 65535  # 16-bit PNG label maps
_warned: set[str] = set()


def _files_under(folder: str) -> list[str]:
    """Every file under `folder` (sub-folders included, linked ones once, hidden files left out), as sorted
    '/'-separated paths relative to it: the same order on every machine and file system."""
    found, visited = [], set()
    for parent, folders, names in os.walk(folder, followlinks=True):
        real = osp.realpath(parent)
        if real in visited:  # a link back up the tree
            folders[:] = []
            continue
        visited.add(real)
        folders[:] = [name for name in folders if not name.startswith(".")]
        relative = osp.relpath(parent, folder)
        for name in names:
            if not name.startswith("."):  # also macOS's '._photo.jpg' resource forks
                found.append(name if relative == "." else f"{relative}/{name}".replace(os.sep, "/"))
    return sorted(found)


def _without_extension(path: str) -> str:
    return osp.splitext(path)[0]


@dataclass(frozen=True)
class FolderContents:
    """What a benchmark folder holds: its images (those of the split, if one is given) paired with label maps.

    Attributes:
        images: image paths relative to the image folder, in dataset order (sorted, or the split's order).
        labels: for each image, its label map's path relative to the label folder, or None when it has none.
        orphan_labels: label maps (relative paths) that belong to no image of the folder.
        not_png: files in the label folder that are not PNG (label maps must be lossless).
        unreadable: (path, why) of the entries with an image extension that are no file to read: links that
            loop or are broken, pipes (scclip.imageio's wording); they are left out like unlabelled images.
    """

    images: tuple[str, ...]
    labels: tuple[str | None, ...]
    orphan_labels: tuple[str, ...]
    not_png: tuple[str, ...]
    unreadable: tuple[tuple[str, str], ...] = ()

    @property
    def unlabelled(self) -> list[str]:
        return [image for image, label in zip(self.images, self.labels) if label is None]


def read_split(path: str, images: Sequence[str]) -> list[str]:
    """The images a split file lists (one per line: a path relative to the image folder, extension optional).

    Raises:
        DatasetError: a line names no image of the folder, or two, or repeats another line.
    """
    exact = set(images)
    by_stem: dict[str, list[str]] = {}
    for image in images:
        by_stem.setdefault(_without_extension(image), []).append(image)
    chosen: list[str] = []
    line_of: dict[str, int] = {}
    for number, line in enumerate(read_user_text(path).splitlines(), start=1):
        name = line.strip().replace("\\", "/").removeprefix("./")
        if not name:
            continue
        matches = [name] if name in exact else by_stem.get(name, [])
        if not matches:
            raise DatasetError(f"split file {path}, line {number}: {name!r} is not an image of the image folder; "
                               f"give paths relative to it, with or without the extension ({FOLDER_HELP})")
        if len(matches) > 1:
            raise DatasetError(f"split file {path}, line {number}: {name!r} names {' and '.join(matches)}: "
                               "add the extension")
        if matches[0] in line_of:
            raise DatasetError(f"split file {path}, line {number} repeats line {line_of[matches[0]]} "
                               f"({matches[0]}): remove one")
        line_of[matches[0]] = number
        chosen.append(matches[0])
    if not chosen:
        raise DatasetError(f"split file {path} lists no images: put one image path per line in it")
    return chosen


def scan_folder(img_dir: str, ann_dir: str, split_file: str | None = None) -> FolderContents:
    """Pair the images under `img_dir` with the label maps under `ann_dir` (same relative path and stem, .png).

    Raises:
        DatasetError: two images would share one label map (same stem, different extensions), or the
            split file is wrong (see `read_split`).
    """
    images, unreadable = [], []
    for path in _files_under(img_dir):
        if osp.splitext(path)[1].lower() in IMAGE_EXTENSIONS:
            problem = entry_problem(osp.join(img_dir, path))
            if problem is None:
                images.append(path)
            else:
                unreadable.append((path, problem))
    label_files = _files_under(ann_dir)
    labels = {_without_extension(path): path for path in label_files
              if osp.splitext(path)[1].lower() == LABEL_EXTENSION}
    owner: dict[str, str] = {}
    for image in images:
        stem = _without_extension(image)
        if stem in owner:
            raise DatasetError(f"images {osp.join(img_dir, owner[stem])} and {osp.join(img_dir, image)} would share "
                               f"the label map {osp.join(ann_dir, stem + LABEL_EXTENSION)}: rename one of them")
        owner[stem] = image
    chosen = read_split(split_file, images) if split_file else images
    return FolderContents(
        images=tuple(chosen),
        labels=tuple(labels.get(_without_extension(image)) for image in chosen),
        orphan_labels=tuple(path for stem, path in sorted(labels.items()) if stem not in owner),
        not_png=tuple(path for path in label_files if osp.splitext(path)[1].lower() != LABEL_EXTENSION),
        unreadable=tuple(unreadable),
    )


def _warn_once(message: str) -> None:
    """The dataset is listed several times per run (the run's identity, the loop, the loader): say it once."""
    if message not in _warned:
        _warned.add(message)
        MMLogger.get_current_instance().warning(message)


@DATASETS.register_module()
class FolderDataset(BaseSegDataset):
    """A folder of one's own as a benchmark (docs/your-data.md).

    `DATA_ROOT/images/` holds the images (JPEG, PNG, WebP, BMP, TIFF; sub-folders allowed), `labels/` a PNG
    per image at the same relative path and stem (pixel = class index, `ignore_index` = not scored;
    16-bit PNGs for more than 255 classes), `classes.txt` one class per line (synonyms after ', '; the
    first name is the one tables show), and optionally `splits/NAME.txt` the images of split NAME.
    Images without a label map are left out (with a warning; `eval.py --check-data` lists them).

    Args:
        data_root: the folder (eval.py --data-root DIR).
        split: the name of a file in `splits/` (without .txt); None: every image.
        classes_file: the class list, relative to `data_root`.
        ignore_index: the label value that is not scored; at least the number of classes (e.g. 65535
            in 16-bit label maps of more than 255 classes).
        data_prefix: the image and label folders, relative to `data_root`.
        **kwargs: as mmseg's BaseSegDataset.
    """

    def __init__(self, data_root: str | None = None, split: str | None = None, classes_file: str = "classes.txt",
                 ignore_index: int = DEFAULT_IGNORE_INDEX,
                 data_prefix: dict = dict(img_path="images", seg_map_path="labels"), metainfo: dict | None = None,
                 pipeline: Sequence = (), **kwargs) -> None:
        if not data_root:
            raise DatasetError(f"FolderDataset: no folder given: add --data-root DIR to the eval.py command, DIR "
                               f"holding images/, labels/ and classes.txt ({FOLDER_HELP})")
        if not osp.isdir(data_root):
            raise DatasetError(f"FolderDataset: data_root {data_root} is not a folder; {FOLDER_HELP}")
        classes = folder_classes(osp.join(data_root, classes_file))
        check_ignore_index(ignore_index, classes, osp.join(data_root, classes_file))
        for step in pipeline:
            if _cuts_wide_labels(step):
                raise DatasetError(f"FolderDataset: its pipeline loads labels with {step['type']}, which cuts 16-bit "
                                   "label maps to 8 bits: use LoadWideAnnotations (as configs/cfg_custom.py does)")
        self.split = split
        super().__init__(data_root=data_root, data_prefix=data_prefix, ignore_index=ignore_index,
                         metainfo={**(metainfo or {}), "classes": classes}, pipeline=list(pipeline), **kwargs)

    def load_data_list(self) -> list[dict]:
        """The labelled images of the folder (or split), in order; unlabelled images are left out with a warning."""
        img_dir, ann_dir = self.data_prefix["img_path"], self.data_prefix["seg_map_path"]
        for what, folder in (("image folder", img_dir), ("label folder", ann_dir)):
            if not osp.isdir(folder):
                raise DatasetError(f"FolderDataset: {what} {folder} not found; {FOLDER_HELP}")
        split_file = osp.join(self.data_root, "splits", f"{self.split}.txt") if self.split else None
        if split_file and not osp.isfile(split_file):
            raise DatasetError(f"FolderDataset: split file {split_file} not found: give the name of a file in "
                               f"{osp.join(self.data_root, 'splits')} (without .txt), or no split for every image")
        contents = self.contents = scan_folder(img_dir, ann_dir, split_file)
        if not contents.images:
            raise DatasetError(f"FolderDataset: no images ({', '.join(IMAGE_EXTENSIONS)}) in {img_dir}; "
                               f"{FOLDER_HELP}")
        if contents.unreadable:
            path, problem = contents.unreadable[0]
            _warn_once(f"FolderDataset: {len(contents.unreadable)} entries of {img_dir} are no image file to read and "
                       f"are not evaluated, e.g. {problem_line(osp.join(img_dir, path), problem)} "
                       "(eval.py --check-data lists them)")
        unlabelled = contents.unlabelled
        if len(unlabelled) == len(contents.images):
            raise DatasetError(f"FolderDataset: none of the {len(unlabelled)} images has a label map in {ann_dir}, "
                               f"e.g. {osp.join(ann_dir, _without_extension(unlabelled[0]) + LABEL_EXTENSION)} "
                               f"for {osp.join(img_dir, unlabelled[0])}; {FOLDER_HELP}")
        if unlabelled:
            _warn_once(f"FolderDataset: {len(unlabelled)} of {len(contents.images)} images have no label map in "
                       f"{ann_dir} and are not evaluated, e.g. {osp.join(img_dir, unlabelled[0])} "
                       "(eval.py --check-data lists them)")
        return [dict(img_path=osp.join(img_dir, image), seg_map_path=osp.join(ann_dir, label),
                     label_map=self.label_map, reduce_zero_label=self.reduce_zero_label, seg_fields=[])
                for image, label in zip(contents.images, contents.labels) if label is not None]


def _cuts_wide_labels(step: object) -> bool:
    """Whether a pipeline step is mmseg's LoadAnnotations (or a subclass) rather than LoadWideAnnotations."""
    if not isinstance(step, Mapping):
        return isinstance(step, LoadAnnotations) and not isinstance(step, LoadWideAnnotations)
    transform = step.get("type")
    if isinstance(transform, str):
        transform = TRANSFORMS.get(transform)
    return (isinstance(transform, type) and issubclass(transform, LoadAnnotations)
            and not issubclass(transform, LoadWideAnnotations))


def folder_classes(path: str) -> tuple[str, ...]:
    """The display names (first names) of a folder's class list, which must be distinct.

    Raises:
        DatasetError: the file is missing, or two classes would show under one name.
        VocabularyError: the file is malformed (scclip.text.Vocabulary says where).
    """
    if not osp.isfile(path):
        raise DatasetError(f"FolderDataset: class list {path} not found: write one class per line in it "
                           f"(synonyms after ', '; line k is label value k−1); {FOLDER_HELP}")
    names = Vocabulary.from_file(path).class_names
    seen: dict[str, int] = {}
    for number, name in enumerate(names, start=1):
        if name in seen:
            raise DatasetError(f"{path}: lines {seen[name]} and {number} both start with {name!r}, the name tables "
                               "show: make the first names different (synonyms after ', ')")
        seen[name] = number
    if len(names) > WIDEST_LABEL:
        raise DatasetError(f"{path} has {len(names)} classes: 16-bit label maps hold at most {WIDEST_LABEL}")
    return tuple(names)


def check_ignore_index(ignore_index: object, classes: Sequence[str], classes_path: str) -> None:
    """Refuse an ignore value that is also a class, or that a 16-bit label map cannot hold."""
    option = "--cfg-options test_dataloader.dataset.ignore_index"
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or not 0 <= ignore_index <= WIDEST_LABEL:
        raise DatasetError(f"FolderDataset: ignore_index={ignore_index!r} must be a whole number from 0 to "
                           f"{WIDEST_LABEL}: set it with {option}=VALUE")
    if ignore_index < len(classes):
        raise DatasetError(f"FolderDataset: ignore_index {ignore_index} is class {ignore_index} "
                           f"({classes[ignore_index]!r}) of the {len(classes)} classes of {classes_path}: mark "
                           f"unlabelled pixels with a value of {len(classes)} or more (e.g. 65535 in 16-bit label "
                           f"PNGs) and give it with {option}=65535")


@TRANSFORMS.register_module()
class LoadWideAnnotations(LoadAnnotations):
    """mmseg's LoadAnnotations for label maps of any integer width: a 16-bit map keeps its values.

    mmseg casts every label map to 8 bits, so class 300 of a 16-bit map would silently become class 44.
    Labels are read as they are: no reduce_zero_label or label_map (FolderDataset uses neither).
    """

    def _load_seg_map(self, results: dict) -> None:
        path = results["seg_map_path"]
        if self.reduce_zero_label or results.get("reduce_zero_label") or results.get("label_map"):
            raise DatasetError(f"LoadWideAnnotations reads {path} as it is: use LoadAnnotations for a dataset with "
                               "reduce_zero_label or a label_map")
        data = fileio.get(path, backend_args=self.backend_args)
        labels = mmcv.imfrombytes(data, flag="unchanged", backend=self.imdecode_backend).squeeze()
        if labels.dtype.kind not in "ui" or labels.dtype.itemsize == 1:
            labels = labels.astype(np.uint8)  # as mmseg does with 8-bit and other maps
        results["gt_seg_map"] = labels
        results["seg_fields"].append("gt_seg_map")


def is_folder_dataset(dataset_type: object) -> bool:
    """Whether a dataset config's `type` is FolderDataset (or a subclass)."""
    if isinstance(dataset_type, str):
        dataset_type = DATASETS.get(dataset_type)
    return isinstance(dataset_type, type) and issubclass(dataset_type, FolderDataset)


def folder_classes_path(dataset_cfg: Mapping) -> str | None:
    """DATA_ROOT/classes.txt (or the dataset's `classes_file`) of a folder dataset config; None without a root."""
    root = dataset_cfg.get("data_root")
    return osp.join(root, dataset_cfg.get("classes_file", "classes.txt")) if root else None


def complete_folder_config(cfg: MutableMapping) -> None:
    """Settle what a folder benchmark takes from its folder, in one place, before a run's identity is computed.

    The model's vocabulary is the folder's class list unless the config names one (`model.name_path` or
    `model.vocabulary`), which must then have as many classes; the evaluator scores with the dataset's
    `ignore_index`. Other configs are left as they are.

    Raises:
        InputError: the named vocabulary has another number of classes, or the evaluator sets another
            ignore value than the dataset.
    """
    dataset = cfg["test_dataloader"]["dataset"]
    if not is_folder_dataset(dataset.get("type")):
        return
    model = cfg["model"]
    classes_path = folder_classes_path(dataset)
    if model.get("name_path") is None and model.get("vocabulary") is None:
        if classes_path is not None:
            model["name_path"] = classes_path
    elif classes_path is not None and osp.isfile(classes_path):
        named = (Vocabulary.from_lines(model["vocabulary"]) if model.get("vocabulary") is not None
                 else Vocabulary.from_file(vocabulary_file(model["name_path"])))
        labelled = Vocabulary.from_file(classes_path)
        if len(named.classes) != len(labelled.classes):
            source = ("model.vocabulary" if model.get("vocabulary") is not None
                      else f"model.name_path={model['name_path']}")
            raise InputError(f"{source} has {len(named.classes)} classes but {classes_path} has "
                             f"{len(labelled.classes)}: a vocabulary needs one line per label value; drop the "
                             "model's vocabulary setting to use the folder's class list")
    ignore_index = dataset.get("ignore_index", DEFAULT_IGNORE_INDEX)
    evaluator = cfg.get("test_evaluator")
    if isinstance(evaluator, MutableMapping):
        if evaluator.get("ignore_index", ignore_index) != ignore_index:
            raise InputError(f"test_evaluator.ignore_index={evaluator['ignore_index']} but the folder's "
                             f"test_dataloader.dataset.ignore_index={ignore_index}: set only the dataset's")
        evaluator["ignore_index"] = ignore_index


def _default_argument(dataset_type: type, name: str, fallback: str) -> str:
    """The default of a dataset class's constructor argument, searched up its class hierarchy."""
    for cls in dataset_type.__mro__:
        parameter = inspect.signature(cls.__init__).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return fallback


def _join(root: str | None, path: str) -> str:
    return osp.join(root, path) if root and path and not osp.isabs(path) else path


def check_dataset(dataset_cfg: Mapping) -> int:
    """Raise a DatasetError naming the first expected folder or file that is missing; else the image count.

    Reads the dataset part of a config (`type`, `data_root`, `data_prefix`, `ann_file`, suffixes) the
    way mmseg's `BaseSegDataset` does, so it covers mmseg's datasets as well as ours, and fails
    with the expected path instead of a bare assertion or FileNotFoundError deep inside mmseg.
    """
    dataset_type = dataset_cfg["type"]
    if isinstance(dataset_type, str):
        dataset_type = DATASETS.get(dataset_type)
        if dataset_type is None:
            raise DatasetError(f"dataset type {dataset_cfg['type']!r} is not registered in mmseg's DATASETS")
    name = dataset_type.__name__
    if issubclass(dataset_type, FolderDataset):  # it checks its own layout, naming docs/your-data.md
        settings = {key: value for key, value in dataset_cfg.items() if key != "type"}
        return len(dataset_type(**{**settings, "pipeline": [], "serialize_data": False}))
    root = dataset_cfg.get("data_root")
    if root and not osp.isdir(root):
        raise DatasetError(f"{name}: data_root {root} is not a folder; {DATA_HELP}")
    prefix = dataset_cfg.get("data_prefix", {})
    img_dir = _join(root, prefix.get("img_path", ""))
    ann_dir = _join(root, prefix.get("seg_map_path", "")) if prefix.get("seg_map_path") is not None else None
    for what, folder in (("image folder", img_dir), ("label folder", ann_dir)):
        if folder is not None and not osp.isdir(folder):
            raise DatasetError(f"{name}: {what} {folder} not found; {DATA_HELP}")
    ann_file = _join(root, dataset_cfg.get("ann_file", ""))
    if ann_file and not osp.isfile(ann_file):
        raise DatasetError(f"{name}: split file {ann_file} not found; {DATA_HELP}")
    if ann_file and Path(ann_file).read_bytes().startswith(codecs.BOM_UTF8):
        # mmseg's own reader keeps the mark in the first image's name, which then names no file.
        raise DatasetError(f"{name}: split file {ann_file} starts with a byte-order mark, which mmseg reads as part of "
                           "the first image's name: save it as UTF-8 without one (an editor's encoding setting)")

    listing = BaseSegDataset(
        ann_file=ann_file,
        img_suffix=dataset_cfg.get("img_suffix", _default_argument(dataset_type, "img_suffix", ".jpg")),
        seg_map_suffix=dataset_cfg.get("seg_map_suffix", _default_argument(dataset_type, "seg_map_suffix", ".png")),
        data_prefix=dict(img_path=img_dir, seg_map_path=ann_dir),
        metainfo=dict(classes=("all",)),
        serialize_data=False,
    )
    if len(listing) == 0 and ann_file:
        raise DatasetError(f"{name}: split file {ann_file} lists no images: put one image name per line in it")
    if len(listing) == 0:
        raise DatasetError(f"{name}: no images ending in {listing.img_suffix} in {img_dir}; {DATA_HELP}")
    for key, what in (("img_path", "images"), ("seg_map_path", "label maps")):
        missing = [info[key] for info in listing.data_list if key in info and not osp.exists(info[key])]
        if missing:
            raise DatasetError(
                f"{name}: {len(missing)} of {len(listing)} {what} missing, e.g. {missing[0]}; {DATA_HELP}")
    return len(listing)
