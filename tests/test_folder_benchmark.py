"""Any folder as a benchmark: eval.py --config configs/cfg_custom.py --data-root DIR, end to end.

The folder has sub-folders, several image formats, 300 classes in 16-bit label maps (ignore value
65535), an image without a label map and a label map without an image; its metrics must equal an
independent computation from the segmentor's own predictions. A label value outside the classes is
named by --check-data and stops a run in one line.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from PIL import Image
from test_datasets import IMAGE_SIZE, photo
from test_eval import FAST_LOADING, FAST_RESIZE, REPO_ROOT, eval_script, isolate

from scclip.datasets import complete_folder_config
from scclip.errors import DatasetError, InputError
from scclip.evaluation.store import read_store

CONFIG = "configs/cfg_custom.py"
NUM_CLASSES = 300
IGNORE = 65535
OUT_OF_RANGE = 300  # one past the last class: a mistake in the label map, never scored
# Sorted order (the dataset's): the last one is a JPEG, which the resume test truncates.
IMAGES = {"a_first.png": "astronaut", "street/b.webp": "chelsea", "street/deep/c.tif": "coffee",
          "z_last.jpg": "rocket"}
UNLABELLED = "street/no_label.jpg"
ORPHAN = "street/deep/orphan.png"
CLASS_NAMES = [f"class{index:03d}" for index in range(NUM_CLASSES)]


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")


def write_classes(root: Path, names: list[str]) -> None:
    lines = [f"{name}, thing {index}" if index % 7 == 0 else name for index, name in enumerate(names)]
    (root / "classes.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def save_labels(labels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels.astype(np.uint16)).save(path)


def label_path(root: Path, image: str) -> Path:
    return root / "labels" / Path(image).with_suffix(".png")


def make_folder(root: Path, out_of_range: bool = True) -> Path:
    """The folder benchmark described in the module docstring (with a label value outside the classes in the
    second image's label map when `out_of_range`); returns its root."""
    rng = np.random.default_rng(0)
    for index, (image, name) in enumerate(sorted(IMAGES.items())):
        path = root / "images" / image
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(name)).save(path, **({"lossless": True} if path.suffix == ".webp" else {}))
        labels = rng.choice([0, 7, 255, 256, 299], size=IMAGE_SIZE).astype(np.int64)  # values above 8 bits
        labels[: IMAGE_SIZE[0] // 4] = IGNORE
        if index == 1 and out_of_range:
            labels[-5:, -9:] = OUT_OF_RANGE
        save_labels(labels, label_path(root, image))
    (root / "images" / UNLABELLED).write_bytes((root / "images" / "z_last.jpg").read_bytes())
    save_labels(np.zeros(IMAGE_SIZE), root / "labels" / ORPHAN)
    write_classes(root, CLASS_NAMES)
    return root


def eval_args(root: Path, work_dir: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["--config", CONFIG, "--data-root", str(root), "--work-dir", str(work_dir), "--device", "cpu",
            "--cfg-options", f"model.clip_path={checkpoint}", *FAST_LOADING,
            f"test_dataloader.dataset.pipeline.1.scale={FAST_RESIZE}", f"test_dataloader.dataset.ignore_index={IGNORE}",
            *extra]


def predict_independently(root: Path, checkpoint: Path) -> dict[str, np.ndarray]:
    """The segmentor's predictions at original size, with the model and its vocabulary built here by hand."""
    cfg = Config.fromfile(REPO_ROOT / CONFIG)
    cfg.model.update(clip_path=str(checkpoint), device="cpu", name_path=str(root / "classes.txt"))
    model = MODELS.build(cfg.model)
    assert model.class_names == CLASS_NAMES
    predictions = {}
    for image_name in IMAGES:
        image = mmcv.imread(root / "images" / image_name)  # BGR, as mmseg reads it
        resized = mmcv.imrescale(image, FAST_RESIZE, interpolation="bilinear", backend="cv2")
        sample = SegDataSample(metainfo=dict(ori_shape=image.shape[:2], img_shape=resized.shape[:2]))
        batch = model.data_preprocessor(dict(inputs=[torch.from_numpy(resized).permute(2, 0, 1)],
                                             data_samples=[sample]))
        (result,) = model.predict(batch["inputs"], batch["data_samples"])
        predictions[image_name] = result.pred_sem_seg.data[0].numpy()
    return predictions


def plant_predictions(root: Path, predictions: dict[str, np.ndarray]) -> None:
    """Copy the predictions into the left half of each label map (not over ignored or out-of-range pixels)."""
    for image, prediction in predictions.items():
        labels = np.asarray(Image.open(label_path(root, image))).astype(np.int64)
        half = labels.shape[1] // 2
        keep = labels[:, :half] < NUM_CLASSES
        labels[:, :half][keep] = prediction[:, :half][keep]
        save_labels(labels, label_path(root, image))


def independent_metrics(root: Path, predictions: dict[str, np.ndarray]) -> tuple[float, float]:
    """(mIoU, aAcc) in % from per-class pixel counts."""
    intersection, predicted, labelled = (np.zeros(NUM_CLASSES, dtype=np.int64) for _ in range(3))
    for image, prediction in predictions.items():
        truth = np.asarray(Image.open(label_path(root, image))).astype(np.int64)
        scored = truth != IGNORE
        in_range = scored & (truth < NUM_CLASSES)
        predicted += np.bincount(prediction[scored], minlength=NUM_CLASSES)
        labelled += np.bincount(truth[in_range], minlength=NUM_CLASSES)
        intersection += np.bincount(truth[in_range & (truth == prediction)], minlength=NUM_CLASSES)
    union = predicted + labelled - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        miou = float(np.nanmean(intersection / union) * 100)
    return miou, float(intersection.sum() / labelled.sum() * 100)


@pytest.mark.slow
def test_folder_eval_equals_an_independent_computation_resumes_and_is_summarised(tmp_path, tiny_checkpoint_path,
                                                                                capsys):
    root = make_folder(tmp_path / "mine", out_of_range=False)
    predictions = predict_independently(root, tiny_checkpoint_path)
    plant_predictions(root, predictions)
    expected_miou, expected_aacc = independent_metrics(root, predictions)
    assert expected_miou > 0

    # A damaged last image stops the run after storing the others; once fixed, --resume finishes it.
    last = root / "images" / "z_last.jpg"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) * 2 // 3])
    work_dir, show_dir = tmp_path / "work", tmp_path / "pictures"
    args = eval_args(root, work_dir, tiny_checkpoint_path)
    with pytest.raises(DatasetError, match=f"{last} \\(128×96 pixels\\): damaged or truncated"):
        eval_script.main([*args, "--show-dir", str(show_dir)])
    last.write_bytes(good)
    assert eval_script.main([*args, "--show-dir", str(show_dir), "--resume"]) == 0

    (metrics_path,) = work_dir.glob("cfg_custom-*/metrics.json")
    record = json.loads(metrics_path.read_text())
    assert (record["num_images"], record["evaluated"], record["resumed"]) == (4, 1, 3)  # the unlabelled one is out
    assert record["metrics"]["mIoU"] == pytest.approx(expected_miou, abs=0.005 + 1e-9)
    assert record["metrics"]["aAcc"] == pytest.approx(expected_aacc, abs=0.005 + 1e-9)
    assert list(record["per_class"]) == CLASS_NAMES  # the folder's display names, in label order
    assert record["per_class"]["class299"]["Acc"] is not None  # labels above 255 are read whole (8 bits: 43)
    assert record["benchmark"] is None and record["data_root"] == str(root)
    assert len(list((show_dir / metrics_path.parent.name).rglob("*.png"))) == len(IMAGES)  # a picture per image
    printed = capsys.readouterr()
    assert f"1 of 5 images have no label map in {root / 'labels'}" in printed.out + printed.err

    assert eval_script.main(["--summary", str(work_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    (row,) = [line for line in lines if line.startswith("| scclip |")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == f"{record['metrics']['mIoU']:.2f}" and cells[4:6] == ["—", "—"]  # nothing published
    assert cells[6] == "4"


def test_check_data_names_each_problem(tmp_path, capsys):
    root = make_folder(tmp_path / "mine")
    (root / "labels" / "street" / "b.jpg").write_bytes(b"not a lossless label map")
    (root / "images" / "street" / "loop.jpg").symlink_to("loop.jpg")  # not an image without a label: a loop
    (root / "images" / "notes.png").write_text("not a picture")
    save_labels(np.zeros(IMAGE_SIZE), root / "labels" / "notes.png")
    assert eval_script.main(["--config", CONFIG, "--data-root", str(root), "--work-dir", str(tmp_path / "work"),
                             "--cfg-options", f"test_dataloader.dataset.ignore_index={IGNORE}", "--check-data"]) == 1
    output = capsys.readouterr()
    lines = output.out.splitlines()
    labels, images = root / "labels", root / "images"
    assert f"{images / UNLABELLED}: image has no label map (expected {labels / 'street/no_label.png'})" in lines
    assert (f"{labels / ORPHAN}: label map has no image (expected {images / 'street/deep/orphan'} with an image "
            "extension)") in lines
    assert f"{labels / 'street/b.jpg'}: not a PNG: label maps are PNG files named like their image" in lines
    assert f"{labels / 'street/b.png'}: label values 300 are outside 0..299 or 65535 (ignored)" in lines
    assert f"{images / 'street/loop.jpg'}: a link that loops (following it never reaches a file)" in lines
    assert f"{images / 'notes.png'}: not an image that can be read: use a JPEG, PNG, WebP or BMP file" in lines
    assert "<_io" not in output.out and not any("loop.jpg: image has no label map" in line for line in lines)
    assert "6 problems in 5 images" in output.err
    assert not (tmp_path / "work").exists()


def test_a_folder_of_300_classes_needs_another_ignore_value(tmp_path):
    root = make_folder(tmp_path / "mine")
    with pytest.raises(DatasetError, match="ignore_index 255 is class 255 \\('class255'\\) of the 300 classes of "
                                           f"{root / 'classes.txt'}: .*65535.*test_dataloader.dataset.ignore_index"):
        eval_script.main(["--config", CONFIG, "--data-root", str(root), "--check-data"])


def test_without_a_folder_the_custom_config_asks_for_data_root(tmp_path):
    with pytest.raises(DatasetError, match="FolderDataset: no folder given: add --data-root DIR"):
        eval_script.main(["--config", CONFIG, "--work-dir", str(tmp_path), "--check-data"])


def load(argv: list[str]) -> Config:
    return eval_script.load_config(eval_script.parse_args(argv), "cpu")


def test_data_root_sets_the_folder_of_any_config(tmp_path):
    cfg = load(["--config", "configs/cfg_voc21.py", "--data-root", str(tmp_path)])
    assert cfg.test_dataloader.dataset.data_root == str(tmp_path)
    assert cfg.model.name_path == "voc21"  # a benchmark keeps its own vocabulary
    with pytest.raises(InputError, match="--data-root .* and --cfg-options test_dataloader.dataset.data_root=elsewhere "
                                         "disagree: give the folder once"):
        load(["--config", "configs/cfg_voc21.py", "--data-root", str(tmp_path), "--cfg-options",
              "test_dataloader.dataset.data_root=elsewhere"])


def test_the_vocabulary_comes_from_the_folder_unless_the_config_names_one(tmp_path):
    root = make_folder(tmp_path / "mine")
    cfg = load(["--config", CONFIG, "--data-root", str(root), "--cfg-options",
                f"test_dataloader.dataset.ignore_index={IGNORE}"])
    assert cfg.model.name_path == str(root / "classes.txt")
    assert cfg.test_evaluator.ignore_index == IGNORE  # the evaluator scores with the dataset's ignore value

    with pytest.raises(InputError, match=r"model.name_path=voc21 has 21 classes but .*classes.txt has 300"):
        load(["--config", CONFIG, "--data-root", str(root), "--cfg-options", "model.name_path=voc21"])
    with pytest.raises(InputError, match="test_evaluator.ignore_index=255 but the folder's "
                                         "test_dataloader.dataset.ignore_index=65535: set only the dataset's"):
        load(["--config", CONFIG, "--data-root", str(root), "--cfg-options",
              f"test_dataloader.dataset.ignore_index={IGNORE}", "test_evaluator.ignore_index=255"])


def test_complete_folder_config_leaves_benchmarks_alone():
    cfg = Config.fromfile(REPO_ROOT / "configs/cfg_ade20k.py")
    before = cfg.to_dict()
    complete_folder_config(cfg)
    assert cfg.to_dict() == before


@pytest.mark.slow
def test_torchrun_with_two_processes_gives_the_metrics_of_one(tmp_path, tiny_checkpoint_path):
    root = make_folder(tmp_path / "mine", out_of_range=False)
    plant_predictions(root, predict_independently(root, tiny_checkpoint_path))
    args = eval_args(root, tmp_path / "single", tiny_checkpoint_path)
    assert eval_script.main(args) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", "eval.py",
               *eval_args(root, tmp_path / "dist", tiny_checkpoint_path), "--launcher", "pytorch"]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), check=False,
                               capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    (single,) = (tmp_path / "single").glob("cfg_custom-*/metrics.json")
    (distributed,) = (tmp_path / "dist").glob("cfg_custom-*/metrics.json")
    single, distributed = json.loads(single.read_text()), json.loads(distributed.read_text())
    assert (single["world_size"], distributed["world_size"]) == (1, 2)
    assert distributed["metrics"] == single["metrics"] and distributed["per_class"] == single["per_class"]


def test_text_files_saved_with_a_byte_order_mark_read_as_without(tmp_path):
    """Windows editors start UTF-8 files with U+FEFF: it must not become part of the first class or image name."""
    from scclip.datasets import folder_classes, read_split
    from scclip.text import Vocabulary

    classes = tmp_path / "classes.txt"
    classes.write_bytes("\ufeffsky, heaven\ncat\n".encode("utf-8"))
    assert folder_classes(str(classes)) == ("sky", "cat")
    assert Vocabulary.from_file(classes).classes == (("sky", "heaven"), ("cat",))
    split = tmp_path / "val.txt"
    split.write_bytes("\ufeffstreet/b\na_first\n".encode("utf-8"))
    assert read_split(str(split), ["a_first.png", "street/b.webp"]) == ["street/b.webp", "a_first.png"]


def thin_folder(root: Path, checkpoint: Path) -> Path:
    """A 3-class folder of a 1×5000 strip and a photo, each labelled with the prediction predict.py makes of it
    (`Segmenter`, the labelling path of predict.py and scclip segment): a run that scores each image with that
    same prediction gets every labelled pixel right."""
    from scclip.api import Segmenter

    rng = np.random.default_rng(1)
    images = {"strip.png": np.repeat(rng.integers(0, 256, (5000, 1, 1), dtype=np.uint8), 3, axis=2),
              "photo.png": photo("chelsea")}
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("cat\ngrass\nsky\n", encoding="utf-8")
    segmenter = Segmenter(str(checkpoint), vocab=root / "classes.txt", device="cpu", scale=FAST_RESIZE)
    for name, image in images.items():
        Image.fromarray(image).save(root / "images" / name)
        save_labels(segmenter(root / "images" / name).labels, root / "labels" / name)
    return root


def test_a_thin_image_is_scored_with_the_prediction_predict_py_makes(tmp_path, tiny_checkpoint_path):
    """1×5000 fitted to 2048×224 would be 0×2048 pixels, which OpenCV's resize refuses in a loader worker; the
    evaluation resizes as Segmenter does (the thin side stretched to one patch) and scores the strip."""
    root = thin_folder(tmp_path / "thin", tiny_checkpoint_path)
    work_dir = tmp_path / "work"
    assert eval_script.main(["--config", CONFIG, "--data-root", str(root), "--work-dir", str(work_dir), "--device",
                             "cpu", "--cfg-options", f"model.clip_path={tiny_checkpoint_path}", *FAST_LOADING,
                             f"test_dataloader.dataset.pipeline.1.scale={FAST_RESIZE}"]) == 0
    (metrics_path,) = work_dir.glob("cfg_custom-*/metrics.json")
    record = json.loads(metrics_path.read_text())
    assert record["num_images"] == 2 and record["metrics"]["aAcc"] == 100.0
    (run,) = work_dir.glob("cfg_custom-*")
    key = json.loads((run / "run.json").read_text())["key"]
    stored = {Path(item.path).name: item.areas for item in read_store(run / "results", key)[0].values()}
    assert stored["strip.png"][3].sum() == 5000  # every pixel of the strip labelled, and scored right (aAcc)


def test_the_evaluation_resizes_ordinary_images_as_mmcv_does(tmp_path):
    """The swap of the configs' Resize for ResizeForInference changes no ordinary image (nor a run's folder)."""
    from mmcv.transforms import Resize

    from scclip.evaluation.data import ResizeForInference, with_checked_loaders

    steps = with_checked_loaders([dict(type="LoadImageFromFile"), dict(type="Resize", scale=(2048, 336),
                                                                        keep_ratio=True)])
    assert steps[1] == dict(type="ResizeForInference", scale=(2048, 336))
    for image in (photo("chelsea"), photo("astronaut")[:37, :91]):
        ours = ResizeForInference(scale=(2048, 336), min_side=16)(dict(img=image))
        theirs = Resize(scale=(2048, 336), keep_ratio=True)(dict(img=image))
        assert np.array_equal(ours["img"], theirs["img"])
        assert ours["img_shape"] == theirs["img_shape"] and ours["scale_factor"] == theirs["scale_factor"]


def small_folder(root: Path) -> Path:
    """Two photos of IMAGE_SIZE with all-'cat' label maps, three classes."""
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("cat\ngrass\nsky\n", encoding="utf-8")
    for name, picture in (("a.png", "chelsea"), ("b.png", "astronaut")):
        Image.fromarray(photo(picture)).save(root / "images" / name)
        save_labels(np.zeros(IMAGE_SIZE), root / "labels" / name)
    return root


def small_args(root: Path, work_dir: Path, checkpoint: Path) -> list[str]:
    return ["--config", CONFIG, "--data-root", str(root), "--work-dir", str(work_dir), "--device", "cpu",
            "--cfg-options", f"model.clip_path={checkpoint}", *FAST_LOADING,
            f"test_dataloader.dataset.pipeline.1.scale={FAST_RESIZE}"]


def test_a_label_value_outside_the_classes_stops_the_run_in_one_line(tmp_path, tiny_checkpoint_path):
    """Without --check-data, a 17 in a 3-class folder used to be scored silently (for the prediction only)."""
    root = small_folder(tmp_path / "mine")
    labels = np.zeros(IMAGE_SIZE)
    labels[3, 4] = 17
    save_labels(labels, root / "labels" / "b.png")
    with pytest.raises(DatasetError) as error:
        eval_script.main(small_args(root, tmp_path / "work", tiny_checkpoint_path))
    message = eval_script.one_line(error.value)
    assert message.startswith(f"{root / 'labels' / 'b.png'}: label values 17 are outside 0..2 or 255 (ignored); "
                              "replace or remove the file") and "then rerun with --resume" in message
    (run,) = (tmp_path / "work").glob("cfg_custom-*")
    key = json.loads((run / "run.json").read_text())["key"]
    assert [Path(item.path).name for item in read_store(run / "results", key)[0].values()] == ["a.png"]


def test_a_label_map_of_another_size_is_refused_before_the_model_is_built(tmp_path, tiny_checkpoint_path,
                                                                         monkeypatch):
    """The sizes come from the file headers of every pending image before the run starts, not when it gets there."""
    root = small_folder(tmp_path / "mine")
    save_labels(np.zeros((40, 50)), root / "labels" / "b.png")

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the label map was checked")

    monkeypatch.setattr(eval_script.QuietRunner, "from_cfg", no_model)
    with pytest.raises(DatasetError) as error:
        eval_script.main(small_args(root, tmp_path / "work", tiny_checkpoint_path))
    assert str(error.value).startswith(
        f"{root / 'labels' / 'b.png'}: label map is 50×40 pixels but its image {root / 'images' / 'b.png'} is "
        "128×96 pixels: a label map has its image's size")
    assert not (tmp_path / "work").exists()  # nothing stored: the run folder it made is gone again
