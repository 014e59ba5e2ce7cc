"""Benchmark datasets: tiny synthetic copies in each dataset's real on-disk layout and label encoding.

The builders here are shared with the evaluation tests (`from test_datasets import ...`).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from mmseg.datasets import PascalVOCDataset
from mmseg.registry import DATASETS
from PIL import Image

from scclip.datasets import FolderDataset, check_dataset
from scclip.errors import DatasetError

IMAGE_SIZE = (96, 128)  # H, W: small, so that the published Resize upscales (like real photos it rescales)
IGNORE = 255


@dataclass(frozen=True)
class Layout:
    """Where one benchmark keeps its files (relative to ./datasets) and how its labels are encoded."""

    root: str
    img_dir: str
    ann_dir: str
    img_suffix: str
    seg_suffix: str
    split_file: str | None
    label_values: int  # label values in the files are 0 … label_values−1 (plus 255 where used)
    ignore_borders: bool  # 255 lines between regions (VOC, COCO-Stuff, Cityscapes)
    reduce_zero_label: bool  # file value 0 is "ignore", class k is stored as k+1
    stems: tuple[str, str]
    photos: tuple[str, str]

    @property
    def num_classes(self) -> int:
        return self.label_values - self.reduce_zero_label


VOC = dict(root="VOCdevkit/VOC2012", img_dir="JPEGImages", ann_dir="SegmentationClass", img_suffix=".jpg",
           seg_suffix=".png", split_file="ImageSets/Segmentation/val.txt", label_values=21, ignore_borders=True,
           stems=("2007_000033", "2007_000042"), photos=("astronaut", "chelsea"))
CONTEXT = dict(root="VOCdevkit/VOC2010", img_dir="JPEGImages", ann_dir="SegmentationClassContext",
               img_suffix=".jpg", seg_suffix=".png", split_file="ImageSets/SegmentationContext/val.txt",
               label_values=60, ignore_borders=False, stems=("2008_000002", "2008_000003"),
               photos=("coffee", "rocket"))
COCO = dict(img_dir="images/val2017", ann_dir="annotations/val2017", img_suffix=".jpg", split_file=None,
            ignore_borders=True, reduce_zero_label=False, stems=("000000000139", "000000000285"),
            photos=("astronaut", "coffee"))
LAYOUTS = {
    "voc21": Layout(**VOC, reduce_zero_label=False),
    "voc20": Layout(**VOC, reduce_zero_label=True),
    "context60": Layout(**CONTEXT, reduce_zero_label=False),
    "context59": Layout(**CONTEXT, reduce_zero_label=True),
    "coco_object": Layout(root="coco_object", seg_suffix="_instanceTrainIds.png", label_values=81, **COCO),
    "coco_stuff164k": Layout(root="coco_stuff164k", seg_suffix="_labelTrainIds.png", label_values=171, **COCO),
    "city_scapes": Layout(root="cityscapes", img_dir="leftImg8bit/val", ann_dir="gtFine/val",
                          img_suffix="_leftImg8bit.png", seg_suffix="_gtFine_labelTrainIds.png", split_file=None,
                          label_values=19, ignore_borders=True, reduce_zero_label=False,
                          stems=("frankfurt/frankfurt_000000_000294", "lindau/lindau_000000_000019"),
                          photos=("rocket", "chelsea")),
    "ade20k": Layout(root="ade/ADEChallengeData2016", img_dir="images/validation", ann_dir="annotations/validation",
                     img_suffix=".jpg", seg_suffix=".png", split_file=None, label_values=151, ignore_borders=False,
                     reduce_zero_label=True, stems=("ADE_val_00000001", "ADE_val_00000002"),
                     photos=("chelsea", "coffee")),
}


def photo(name: str) -> np.ndarray:
    """A real scikit-image photo, resized to IMAGE_SIZE (H×W×3 uint8 RGB)."""
    image = Image.fromarray(getattr(skimage.data, name)())
    return np.asarray(image.resize(IMAGE_SIZE[::-1], Image.BILINEAR))


def label_map(rng: np.random.Generator, layout: Layout) -> np.ndarray:
    """Made-up regions (a 2×3 grid of classes, one cell mostly of a second class) in the dataset's encoding."""
    height, width = IMAGE_SIZE
    labels = np.empty(IMAGE_SIZE, dtype=np.uint8)
    rows, cols = np.linspace(0, height, 3, dtype=int), np.linspace(0, width, 4, dtype=int)
    choices = rng.choice(layout.label_values, size=6, replace=False)
    for index, (row, col) in enumerate(np.ndindex(2, 3)):
        labels[rows[row]:rows[row + 1], cols[col]:cols[col + 1]] = choices[index]
    labels[10:40, 20:60] = choices[(choices.argmax() + 1) % 6]
    if layout.ignore_borders:
        for row in rows[1:-1]:
            labels[row - 2:row + 2] = IGNORE
        for col in cols[1:-1]:
            labels[:, col - 2:col + 2] = IGNORE
    return labels


def save_label_map(labels: np.ndarray, path: Path, palette: bool) -> None:
    """VOC stores labels as a palette PNG (index = class, 255 = border), the others as grayscale."""
    image = Image.fromarray(labels)
    if palette:
        image = image.convert("P")
        colours = np.zeros((256, 3), dtype=np.uint8)
        colours[:21] = np.array(PascalVOCDataset.METAINFO["palette"], dtype=np.uint8)
        colours[IGNORE] = (224, 224, 192)
        image.putpalette(colours.reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_dataset(datasets_dir: Path, benchmark: str, seed: int = 0) -> Path:
    """Write a 2-image copy of `benchmark` under `datasets_dir` in its real layout; returns its data root."""
    layout = LAYOUTS[benchmark]
    root = datasets_dir / layout.root
    rng = np.random.default_rng(seed)
    for stem, name in zip(layout.stems, layout.photos):
        image_path = root / layout.img_dir / f"{stem}{layout.img_suffix}"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(name)).save(image_path)
        save_label_map(label_map(rng, layout), root / layout.ann_dir / f"{stem}{layout.seg_suffix}",
                       palette=layout.root.endswith("VOC2012"))
    if layout.split_file:
        (root / layout.split_file).parent.mkdir(parents=True, exist_ok=True)
        (root / layout.split_file).write_text("".join(f"{stem}\n" for stem in layout.stems))
    return root


def read_ground_truth(root: Path, benchmark: str, stem: str) -> np.ndarray:
    """The label map as evaluated: file values, with reduce_zero_label applied where the dataset uses it."""
    layout = LAYOUTS[benchmark]
    labels = np.asarray(Image.open(root / layout.ann_dir / f"{stem}{layout.seg_suffix}")).astype(np.int64)
    if layout.reduce_zero_label:
        labels = np.where((labels == 0) | (labels == IGNORE), IGNORE, labels - 1)
    return labels


def dataset_cfg(benchmark: str, root: Path, dataset_type: str) -> dict:
    layout = LAYOUTS[benchmark]
    cfg = dict(type=dataset_type, data_root=str(root),
               data_prefix=dict(img_path=layout.img_dir, seg_map_path=layout.ann_dir),
               pipeline=[dict(type="mmseg.LoadAnnotations")])
    if layout.split_file:
        cfg["ann_file"] = layout.split_file
    return cfg


OUR_DATASETS = [("voc20", "PascalVOC20Dataset"), ("context60", "PascalContext60Dataset"),
                ("context59", "PascalContext59Dataset"), ("coco_object", "COCOObjectDataset")]


@pytest.mark.parametrize("benchmark, dataset_type", OUR_DATASETS)
def test_our_datasets_read_their_layout_and_encoding(tmp_path, benchmark, dataset_type):
    root = make_dataset(tmp_path, benchmark)
    dataset = DATASETS.build(dataset_cfg(benchmark, root, dataset_type))
    layout = LAYOUTS[benchmark]
    assert len(dataset.metainfo["classes"]) == len(dataset.metainfo["palette"]) == layout.num_classes
    assert dataset.reduce_zero_label == layout.reduce_zero_label
    assert len(dataset) == 2
    for index, stem in enumerate(sorted(layout.stems)):
        sample = dataset.get_data_info(index)
        assert sample["img_path"] == str(root / layout.img_dir / f"{stem}{layout.img_suffix}")
        loaded = dataset.pipeline(sample)["gt_seg_map"]
        np.testing.assert_array_equal(loaded, read_ground_truth(root, benchmark, stem))


def test_dataset_classes_match_mmseg_and_the_vocabularies():
    from mmseg.datasets import COCOStuffDataset, PascalContextDataset59

    voc20 = DATASETS.get("PascalVOC20Dataset").METAINFO["classes"]
    assert voc20 == PascalVOCDataset.METAINFO["classes"][1:] and voc20[0] == "aeroplane"
    assert DATASETS.get("PascalContext59Dataset").METAINFO == PascalContextDataset59.METAINFO
    coco_object = DATASETS.get("COCOObjectDataset").METAINFO["classes"]
    assert coco_object[0] == "background" and coco_object[1:] == COCOStuffDataset.METAINFO["classes"][:80]
    assert coco_object[-1] == "toothbrush"


@pytest.mark.parametrize("benchmark, dataset_type", [("voc21", "PascalVOCDataset"), ("ade20k", "ADE20KDataset"),
                                                     ("city_scapes", "CityscapesDataset"), *OUR_DATASETS])
def test_check_dataset_counts_a_complete_copy(tmp_path, benchmark, dataset_type):
    root = make_dataset(tmp_path, benchmark)
    assert check_dataset(dataset_cfg(benchmark, root, dataset_type)) == 2


@pytest.mark.parametrize("damage, expected", [
    (lambda root: root.rename(root.with_name("elsewhere")), "data_root {root} is not a folder"),
    (lambda root: (root / "SegmentationClass").rename(root / "labels"), "label folder {root}/SegmentationClass not"),
    (lambda root: (root / "ImageSets/Segmentation/val.txt").unlink(),
     "split file {root}/ImageSets/Segmentation/val.txt"),
    (lambda root: (root / "JPEGImages/2007_000042.jpg").unlink(),
     "1 of 2 images missing, e.g. {root}/JPEGImages/2007_000042.jpg"),
    (lambda root: (root / "SegmentationClass/2007_000033.png").unlink(),
     "label maps missing, e.g. {root}/SegmentationClass/2007_000033.png"),
])
def test_check_dataset_names_the_missing_path_and_the_readme(tmp_path, damage, expected):
    root = make_dataset(tmp_path, "voc21")
    damage(root)
    with pytest.raises(DatasetError) as error:
        check_dataset(dataset_cfg("voc21", root, "PascalVOCDataset"))
    message = str(error.value)
    assert expected.format(root=root) in message
    assert "docs/evaluation.md#datasets" in message and "data_root" in message and "\n" not in message


def test_check_dataset_reports_an_unconverted_coco_object(tmp_path):
    root = make_dataset(tmp_path, "coco_object")
    for path in (root / "annotations/val2017").glob("*_instanceTrainIds.png"):
        path.rename(path.with_name(path.name.replace("_instanceTrainIds", "_labelTrainIds")))
    with pytest.raises(DatasetError, match="COCOObjectDataset: 2 of 2 label maps missing.*_instanceTrainIds.png"):
        check_dataset(dataset_cfg("coco_object", root, "COCOObjectDataset"))


def test_check_dataset_reports_an_empty_image_folder(tmp_path):
    root = make_dataset(tmp_path, "ade20k")
    for path in (root / "images/validation").iterdir():
        path.unlink()
    with pytest.raises(DatasetError, match=r"ADE20KDataset: no images ending in \.jpg in .*images/validation"):
        check_dataset(dataset_cfg("ade20k", root, "ADE20KDataset"))


# -- any folder as a benchmark (scclip.datasets.FolderDataset) ---------------------------------------------

def make_folder(root: Path, images: tuple[str, ...], labels: tuple[str, ...],
                classes: str = "sky\nroad, street\n") -> Path:
    """A folder benchmark with tiny images and all-zero label maps at the given relative paths."""
    for name in images:
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(root / "images" / name, format="PNG")
    for name in labels:
        (root / "labels" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 6), dtype=np.uint8)).save(root / "labels" / name)
    (root / "classes.txt").write_text(classes, encoding="utf-8")
    return root


def folder_dataset(root: Path, **settings) -> FolderDataset:
    return DATASETS.build(dict(type="FolderDataset", data_root=str(root), serialize_data=False, **settings))


def test_folder_dataset_lists_sub_folders_in_order_and_pairs_labels_by_path(tmp_path):
    root = make_folder(tmp_path, images=("b.JPG", "a/z.png", "a/b/c.webp", ".hidden.jpg", "a/._x.jpg", "notes.txt"),
                       labels=("b.png", "a/z.png", "a/b/c.png"))
    dataset = folder_dataset(root)
    assert dataset.metainfo["classes"] == ("sky", "road")  # the first name of each line
    infos = [dataset.get_data_info(index) for index in range(len(dataset))]
    assert [info["img_path"] for info in infos] == [str(root / "images" / name)
                                                     for name in ("a/b/c.webp", "a/z.png", "b.JPG")]
    assert [info["seg_map_path"] for info in infos] == [str(root / "labels" / name)
                                                         for name in ("a/b/c.png", "a/z.png", "b.png")]
    assert check_dataset(dict(type="FolderDataset", data_root=str(root))) == 3


def test_folder_dataset_reads_a_split_in_its_order(tmp_path):
    root = make_folder(tmp_path, images=("a/x.jpg", "b.png", "c.jpg"), labels=("a/x.png", "b.png", "c.png"))
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("c\n\n./a/x.jpg\n")
    dataset = folder_dataset(root, split="val")
    assert [dataset.get_data_info(index)["img_path"] for index in range(2)] == [
        str(root / "images" / "c.jpg"), str(root / "images" / "a/x.jpg")]
    (root / "splits" / "bad.txt").write_text("c\nmissing\n")
    with pytest.raises(DatasetError, match=r"bad.txt, line 2: 'missing' is not an image of the image folder"):
        folder_dataset(root, split="bad")
    (root / "splits" / "twice.txt").write_text("c\nc.jpg\n")
    with pytest.raises(DatasetError, match=r"twice.txt, line 2 repeats line 1 \(c.jpg\): remove one"):
        folder_dataset(root, split="twice")
    with pytest.raises(DatasetError, match=f"split file {root / 'splits' / 'test.txt'} not found"):
        folder_dataset(root, split="test")


def test_folder_dataset_leaves_unlabelled_images_out(tmp_path):
    root = make_folder(tmp_path, images=("a.jpg", "b.jpg"), labels=("b.png", "c.png"))
    dataset = folder_dataset(root)
    assert [dataset.get_data_info(index)["img_path"] for index in range(len(dataset))] == [str(root / "images/b.jpg")]
    assert dataset.contents.unlabelled == ["a.jpg"] and dataset.contents.orphan_labels == ("c.png",)


@pytest.mark.parametrize("images, labels, classes, settings, expected", [
    (("a.jpg",), ("a.png",), None, dict(), "class list .*classes.txt not found: write one class per line"),
    (("a.jpg", "a.png"), ("a.png",), "sky\n", dict(),
     "images .*a.jpg and .*a.png would share the label map .*a.png: rename one of them"),
    (("a.jpg",), ("b.png",), "sky\n", dict(), "none of the 1 images has a label map in .*labels, e.g. .*labels/a.png"),
    ((), (), "sky\n", dict(), "no images .* in .*images"),
    (("a.jpg",), ("a.png",), "bank, river bank\nbank, money\n", dict(),
     "lines 1 and 2 both start with 'bank', the name tables show: make the first names different"),
    (("a.jpg",), ("a.png",), "sky\nroad\n", dict(ignore_index=1),
     r"ignore_index 1 is class 1 \('road'\) of the 2 classes .*e.g. 65535 in 16-bit label PNGs"),
    (("a.jpg",), ("a.png",), "sky\n", dict(ignore_index=70000),
     "ignore_index=70000 must be a whole number from 0 to 65535"),
    (("a.jpg",), ("a.png",), "sky\n", dict(pipeline=[dict(type="LoadAnnotations")]),
     "loads labels with LoadAnnotations, which cuts 16-bit label maps to 8 bits: use LoadWideAnnotations"),
])
def test_folder_dataset_refuses_a_bad_folder_in_one_line(tmp_path, images, labels, classes, settings, expected):
    root = make_folder(tmp_path, images=images, labels=labels)
    (root / "images").mkdir(exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    if classes is None:
        (root / "classes.txt").unlink()
    else:
        (root / "classes.txt").write_text(classes)
    with pytest.raises(DatasetError, match=expected) as error:
        folder_dataset(root, **settings)
    assert "\n" not in str(error.value)


def test_folder_dataset_without_a_folder_names_the_option(tmp_path):
    with pytest.raises(DatasetError, match="no folder given: add --data-root DIR .*docs/your-data.md"):
        check_dataset(dict(type="FolderDataset", data_root=None))
    with pytest.raises(DatasetError, match=f"data_root {tmp_path / 'nowhere'} is not a folder"):
        check_dataset(dict(type="FolderDataset", data_root=str(tmp_path / "nowhere")))


def test_wide_labels_keep_their_16_bit_values(tmp_path):
    from mmseg.datasets.transforms import LoadAnnotations

    from scclip.datasets import LoadWideAnnotations

    values = np.array([[0, 255, 256], [299, 1000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "wide.png")
    Image.fromarray(values.astype(np.uint8)).save(tmp_path / "narrow.png")

    def load(transform, name):
        results = dict(seg_map_path=str(tmp_path / name), reduce_zero_label=False, seg_fields=[])
        return transform(results)["gt_seg_map"]

    np.testing.assert_array_equal(load(LoadWideAnnotations(), "wide.png"), values)
    assert not np.array_equal(load(LoadAnnotations(), "wide.png"), values)  # mmseg's cuts them to 8 bits
    narrow = load(LoadWideAnnotations(), "narrow.png")
    assert narrow.dtype == np.uint8
    np.testing.assert_array_equal(narrow, load(LoadAnnotations(), "narrow.png"))
    with pytest.raises(DatasetError, match="use LoadAnnotations for a dataset with reduce_zero_label"):
        LoadWideAnnotations()(dict(seg_map_path=str(tmp_path / "wide.png"), reduce_zero_label=True, seg_fields=[]))
