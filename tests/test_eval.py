"""eval.py end to end on tiny synthetic copies of the eight benchmarks, against an independent mIoU."""
import json
import os
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from PIL import Image
from test_datasets import (
    IGNORE,
    LAYOUTS,
    make_dataset,
    read_ground_truth,
    save_label_map,
)

from scclip.errors import DatasetError, InputError
from scclip.benchmarks import BENCHMARKS
from scclip.evaluation.summary import published_numbers
from scclip.launch import choose_device, start
from scclip.visualize import comparison

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from scclip.evaluation import command as eval_script

FAST_LOADING = ["test_dataloader.num_workers=0", "test_dataloader.persistent_workers=False"]
# Short side 224 instead of the published 336/560 (2 sliding windows instead of 6) keeps the tests quick;
# VOC21 keeps its published Resize.
FAST_RESIZE = (2048, 224)
PUBLISHED_RESIZE = {"voc21"}


def isolate(monkeypatch, cache_dir: Path) -> None:
    """Run from the repository root (configs name their vocabularies relative to it), cache text features
    in `cache_dir`, and undo afterwards the GPU hiding that `--device cpu` does."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")


def config_path(benchmark: str) -> Path:
    return REPO_ROOT / "configs" / f"cfg_{benchmark}.py"


def resize_scale(benchmark: str) -> tuple[int, int]:
    if benchmark in PUBLISHED_RESIZE:
        cfg = Config.fromfile(config_path(benchmark))
        (scale,) = [step["scale"] for step in cfg.test_dataloader.dataset.pipeline if step["type"] == "Resize"]
        return tuple(scale)
    return FAST_RESIZE


def cfg_options(benchmark: str, checkpoint: Path, root: Path) -> list[str]:
    resize = [] if benchmark in PUBLISHED_RESIZE else [f"test_dataloader.dataset.pipeline.1.scale={FAST_RESIZE}"]
    return [f"model.clip_path={checkpoint}", f"test_dataloader.dataset.data_root={root}", *FAST_LOADING, *resize]


def eval_args(benchmark: str, checkpoint: Path, root: Path, work_dir: Path, *extra: str) -> list[str]:
    return ["--config", str(config_path(benchmark)), "--work-dir", str(work_dir), "--device", "cpu",
            "--cfg-options", *cfg_options(benchmark, checkpoint, root), *extra]


def predict_independently(benchmark: str, checkpoint: Path, root: Path) -> dict[str, np.ndarray]:
    """The segmentor's predictions at original size, with the Resize done here by hand."""
    cfg = Config.fromfile(config_path(benchmark))
    cfg.model.update(clip_path=str(checkpoint), device="cpu")
    model = MODELS.build(cfg.model)
    scale = resize_scale(benchmark)
    layout, predictions = LAYOUTS[benchmark], {}
    for stem in layout.stems:
        image = mmcv.imread(root / layout.img_dir / f"{stem}{layout.img_suffix}")  # BGR, as mmseg reads it
        resized = mmcv.imrescale(image, scale, interpolation="bilinear", backend="cv2")
        sample = SegDataSample(metainfo=dict(ori_shape=image.shape[:2], img_shape=resized.shape[:2]))
        batch = model.data_preprocessor(dict(inputs=[torch.from_numpy(resized).permute(2, 0, 1)],
                                             data_samples=[sample]))
        (result,) = model.predict(batch["inputs"], batch["data_samples"])
        predictions[stem] = result.pred_sem_seg.data[0].numpy()
    return predictions


def plant_predictions(root: Path, benchmark: str, predictions: dict[str, np.ndarray]) -> None:
    """Copy the predictions into the left half of each label map, so that IoUs are not all zero."""
    layout = LAYOUTS[benchmark]
    for stem, prediction in predictions.items():
        path = root / layout.ann_dir / f"{stem}{layout.seg_suffix}"
        labels = np.asarray(Image.open(path)).copy()
        half = labels.shape[1] // 2
        keep = labels[:, :half] != IGNORE
        labels[:, :half][keep] = prediction[:, :half][keep] + layout.reduce_zero_label
        save_label_map(labels, path, palette=layout.root.endswith("VOC2012"))


def independent_miou(root: Path, benchmark: str, predictions: dict[str, np.ndarray]) -> float:
    """mIoU (%) from a confusion matrix over all images; classes absent from both sides are skipped."""
    num_classes = LAYOUTS[benchmark].num_classes
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for stem, prediction in predictions.items():
        truth = read_ground_truth(root, benchmark, stem)
        valid = truth != IGNORE
        confusion += np.bincount(truth[valid] * num_classes + prediction[valid],
                                 minlength=num_classes ** 2).reshape(num_classes, num_classes)
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(intersection / union) * 100)


def check_pictures(show_dir: Path, root: Path, benchmark: str, predictions: dict[str, np.ndarray]) -> None:
    """Each picture is image | prediction | ground truth (scclip.visualize.comparison's layout, titled, over a
    legend): the image panel is the input untouched, ignored ground-truth pixels stay bare."""
    layout = LAYOUTS[benchmark]
    class_names = list(DATASETS.get(Config.fromfile(config_path(benchmark)).test_dataloader.dataset.type)
                       .METAINFO["classes"])
    for stem in layout.stems:
        image_path = root / layout.img_dir / f"{stem}{layout.img_suffix}"
        picture = mmcv.imread(show_dir / image_path.relative_to(root / layout.img_dir).with_suffix(".png"),
                              channel_order="rgb")
        image = mmcv.imread(image_path, channel_order="rgb")
        height, width = image.shape[:2]
        truth = read_ground_truth(root, benchmark, stem)
        _, placement = comparison(image, predictions[stem], truth, class_names)
        assert picture.shape == (placement.size[1], placement.size[0], 3)
        panels = []
        for column in range(3):
            left, top = placement.panel_origin(column)
            panels.append(picture[top:top + height, left:left + width])
        np.testing.assert_array_equal(panels[0], image)  # the input, untouched (PNG is lossless)
        for panel in panels[1:]:
            assert np.abs(panel.astype(int) - image).mean() > 5  # tinted by the class colours
        ignored = truth == IGNORE
        np.testing.assert_array_equal(panels[2][ignored], image[ignored])


@pytest.mark.parametrize("benchmark", list(LAYOUTS))
def test_eval_miou_equals_an_independent_computation(tmp_path, tiny_checkpoint_path, benchmark):
    root = make_dataset(tmp_path / "datasets", benchmark)
    predictions = predict_independently(benchmark, tiny_checkpoint_path, root)
    plant_predictions(root, benchmark, predictions)
    expected = independent_miou(root, benchmark, predictions)
    assert expected > 0

    show_dir = tmp_path / "pictures"
    args = eval_args(benchmark, tiny_checkpoint_path, root, tmp_path / "work", "--show-dir", str(show_dir))
    assert eval_script.main(args) == 0

    (metrics_path,) = (tmp_path / "work").glob(f"cfg_{benchmark}-*/metrics.json")
    result = json.loads(metrics_path.read_text())
    assert result["config_name"] == f"cfg_{benchmark}" and result["num_images"] == 2
    assert result["metrics"]["mIoU"] == pytest.approx(expected, abs=0.005 + 1e-9)  # rounded to 0.01
    check_pictures(show_dir / metrics_path.parent.name, root, benchmark, predictions)  # a folder per run


def test_missing_data_names_the_expected_path(tmp_path, tiny_checkpoint_path):
    missing = tmp_path / "datasets" / "VOCdevkit" / "VOC2012"
    with pytest.raises(DatasetError, match=f"PascalVOCDataset: data_root {missing} is not a folder;.*docs/evaluation.md#datasets"):
        eval_script.main(eval_args("voc21", tiny_checkpoint_path, missing, tmp_path / "work"))


@pytest.mark.slow
def test_command_line_reports_missing_data_in_one_line(tmp_path, tiny_checkpoint_path):
    import subprocess

    completed = subprocess.run(
        [sys.executable, "eval.py", *eval_args("ade20k", tiny_checkpoint_path, tmp_path / "nowhere", tmp_path)],
        check=False, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert completed.returncode == 1
    assert completed.stderr.strip().splitlines()[-1].startswith(
        f"error: ADE20KDataset: data_root {tmp_path / 'nowhere'} is not a folder; see docs/evaluation.md#datasets")
    assert "Traceback" not in completed.stderr


def test_workdir_spelling_of_the_authors_is_accepted():
    args = eval_script.parse_args(["--config", "configs/cfg_voc21.py", "--workdir", "somewhere"])
    assert args.work_dir == "somewhere"


def test_config_or_summary_is_required(capsys):
    with pytest.raises(SystemExit):
        eval_script.parse_args([])
    assert "--config" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(InputError, match="--device cuda was given but no CUDA GPU is visible"):
        choose_device("cuda")


def test_pytorch_launcher_outside_torchrun_says_how_to_start_it(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(InputError, match="--launcher pytorch needs torchrun"):
        start("pytorch", "cpu", "eval.py")


def write_run(work_dir: Path, config: str, miou: float, **fields) -> None:
    """A finished run's metrics.json as eval.py writes it (only the fields the summary reads)."""
    benchmark = config.removeprefix("cfg_").removesuffix("_vitl14")
    backbone = "ViT-L/14" if config.endswith("_vitl14") else "ViT-B/16"
    record = dict(config_name=config, benchmark=benchmark, method="scclip", backbone=backbone, overrides={},
                  checkpoint=backbone, checkpoint_sha256="0" * 64, published_weights=True,
                  num_images=BENCHMARKS[benchmark].images, metrics=dict(aAcc=90.0, mIoU=miou, mAcc=50.0))
    record.update(fields)
    path = work_dir / f"{config}-{len(list(work_dir.glob(config + '-*'))):010d}" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))


def test_summary_compares_finished_runs_with_the_published_numbers(tmp_path, capsys):
    ours_b16 = dict(voc21=65.0, context60=36.0, coco_object=38.0, voc20=84.3, context59=40.0,
                    coco_stuff164k=26.5, city_scapes=41.5, ade20k=20.0)
    for benchmark, miou in ours_b16.items():
        write_run(tmp_path, f"cfg_{benchmark}", miou)
    write_run(tmp_path, "cfg_ade20k_vitl14", 21.2)
    write_run(tmp_path, "cfg_voc20_vitl14", 85.0)

    assert eval_script.main(["--summary", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()

    assert lines[0] == "| method | backbone | dataset | mIoU (ours) | mIoU (published) | diff | images | note |"
    assert lines[2] == "| scclip | ViT-B/16 | VOC21 | 65.00 | 64.6 | +0.40 | 1449 |  |"
    assert lines[3] == "| scclip | ViT-B/16 | Context60 | 36.00 | 36.8 | -0.80 | 5105 |  |"
    assert [line.split(" | ")[2] for line in lines[2:10]] == [
        "VOC21", "Context60", "COCO-Object", "VOC20", "Context59", "COCO-Stuff", "Cityscapes", "ADE20K"]
    mean = sum(ours_b16.values()) / 8
    assert lines[10] == f"| scclip | ViT-B/16 | mean of 8 | {mean:.2f} | 43.9 | {mean - 43.9:+.2f} | | |"
    assert lines[11] == "| scclip | ViT-L/14 | VOC20 | 85.00 | — | — | 1449 |  |"  # no published L/14 VOC20
    assert lines[12] == "| scclip | ViT-L/14 | ADE20K | 21.20 | 21.7 | -0.50 | 2000 |  |"
    assert lines[13] == ""  # no L/14 mean: only two of its eight runs are finished
    assert lines[14] == "Runs:" and len(lines) == 15 + 10


def test_summary_flags_runs_that_cannot_be_compared_and_groups_methods(tmp_path, capsys):
    write_run(tmp_path, "cfg_voc21", 12.5, num_images=24, published_weights=False, checkpoint="tiny.pt",
              overrides={"model.clip_path": "tiny.pt", "model.prob_thd": 0.2})
    write_run(tmp_path, "cfg_voc21", 64.0)
    write_run(tmp_path, "cfg_voc20", 80.0, method="naclip", published_as="naclip")
    assert eval_script.main(["--summary", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    naclip = published_numbers("naclip", "ViT-B/16")
    assert lines[2] == f"| naclip | ViT-B/16 | VOC20 | 80.00 | {naclip['voc20']:.1f} | {80 - naclip['voc20']:+.2f} | 1449 |  |"
    assert lines[3:5] == [
        "| scclip | ViT-B/16 | VOC21 | 12.50 | 64.6 | — | 24 | not comparable: 24 of 1449 images; "
        "not the published weights; settings changed: model.prob_thd |",
        "| scclip | ViT-B/16 | VOC21 | 64.00 | 64.6 | -0.60 | 1449 |  |",
    ]
    assert any("checkpoint tiny.pt" in line and "overrides: model.clip_path=tiny.pt model.prob_thd=0.2" in line
               for line in lines)


def test_summary_of_an_empty_folder_says_what_to_run(tmp_path):
    with pytest.raises(InputError, match=f"no metrics.json under {tmp_path}: run eval.py or dist_test.sh"):
        eval_script.summary_table(tmp_path)


def test_batches_of_two_images_give_the_same_metrics(tmp_path, tiny_checkpoint_path):
    """Two photos of different sizes in one batch are padded together; the metrics must not move."""
    root = make_dataset(tmp_path / "datasets", "voc21")
    layout = LAYOUTS["voc21"]
    stem = layout.stems[1]  # make the second photo portrait: the batch then needs padding
    for path in (root / layout.img_dir / f"{stem}{layout.img_suffix}", root / layout.ann_dir / f"{stem}{layout.seg_suffix}"):
        image = Image.open(path)
        image.transpose(Image.Transpose.TRANSPOSE).save(path)
    plant_predictions(root, "voc21", predict_independently("voc21", tiny_checkpoint_path, root))
    metrics = []
    for batch_size in (1, 2):
        work_dir = tmp_path / f"batch{batch_size}"
        args = eval_args("voc21", tiny_checkpoint_path, root, work_dir)
        assert eval_script.main([*args, f"test_dataloader.batch_size={batch_size}"]) == 0
        (metrics_path,) = work_dir.glob("cfg_voc21-*/metrics.json")
        metrics.append(json.loads(metrics_path.read_text())["metrics"])
    assert metrics[0] == metrics[1]
