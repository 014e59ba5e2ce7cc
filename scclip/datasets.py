"""The benchmark datasets SC-CLIP adds to mmseg's, and a check that a dataset is where a config says.

mmseg already has Pascal VOC (21 classes), Pascal Context (60 and 59 classes), COCO-Stuff 164k,
Cityscapes and ADE20K. The published evaluation also uses VOC without its background class and
COCO-Object; the Context variants get the names the published configs use.
"""
import inspect
import os.path as osp
from collections.abc import Mapping

from mmseg.datasets import (
    BaseSegDataset,
    COCOStuffDataset,
    PascalContextDataset,
    PascalContextDataset59,
    PascalVOCDataset,
)
from mmseg.registry import DATASETS

from .errors import DatasetError

DATA_HELP = "see 'Datasets' in README.md, or point the config at your copy with " \
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
