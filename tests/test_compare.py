"""eval.py --compare: two real runs (SC-CLIP and plain CLIP, tiny checkpoint) on a synthetic VOC, against an
independent bootstrap, and the refusals, the --json schema and the gallery."""
import json
import shutil
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from PIL import Image
from test_datasets import LAYOUTS, label_map, photo, read_ground_truth, save_label_map
from test_eval import REPO_ROOT, config_path, eval_args, eval_script, isolate, plant_predictions, resize_scale

from scclip.errors import InputError
from scclip.evaluation import compare
from scclip.visualize import comparison, overlay, palette

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
STEMS = tuple(f"2009_{number:06d}" for number in range(len(PHOTOS)))
VANILLA = REPO_ROOT / "configs" / "vanilla" / "cfg_voc21.py"
JSON_KEYS = {"miou_a", "miou_b", "difference", "ci95", "resamples", "images", "wins", "per_class"}


def make_voc(root: Path, stems: tuple[str, ...]) -> None:
    """A VOC21 copy of the photos under `stems`, with made-up regions as labels."""
    layout = LAYOUTS["voc21"]
    rng = np.random.default_rng(0)
    for name, stem in zip(PHOTOS, stems):
        (root / layout.img_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(photo(name)).save(root / layout.img_dir / f"{stem}{layout.img_suffix}")
        save_label_map(label_map(rng, layout), root / layout.ann_dir / f"{stem}{layout.seg_suffix}", palette=True)
    (root / layout.split_file).parent.mkdir(parents=True, exist_ok=True)
    (root / layout.split_file).write_text("".join(f"{stem}\n" for stem in stems))


def predict(checkpoint: Path, root: Path, stems: tuple[str, ...]) -> dict[str, np.ndarray]:
    """SC-CLIP's predictions at original size, made here without eval.py (as test_eval does)."""
    cfg = Config.fromfile(config_path("voc21"))
    cfg.model.update(clip_path=str(checkpoint), device="cpu")
    model = MODELS.build(cfg.model)
    layout, predictions = LAYOUTS["voc21"], {}
    for stem in stems:
        image = mmcv.imread(root / layout.img_dir / f"{stem}{layout.img_suffix}")
        resized = mmcv.imrescale(image, resize_scale("voc21"), interpolation="bilinear", backend="cv2")
        sample = SegDataSample(metainfo=dict(ori_shape=image.shape[:2], img_shape=resized.shape[:2]))
        batch = model.data_preprocessor(dict(inputs=[torch.from_numpy(resized).permute(2, 0, 1)],
                                             data_samples=[sample]))
        (result,) = model.predict(batch["inputs"], batch["data_samples"])
        predictions[stem] = result.pred_sem_seg.data[0].numpy()
    return predictions


def run_eval(config: Path, checkpoint: Path, root: Path, work_dir: Path) -> Path:
    """One finished eval.py run; returns its folder."""
    args = eval_args("voc21", checkpoint, root, work_dir)
    args[args.index("--config") + 1] = str(config)
    before = set(work_dir.glob("cfg_voc21-*"))
    assert eval_script.main(args) == 0
    (folder,) = set(work_dir.glob("cfg_voc21-*")) - before
    return folder


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_checkpoint_path):
    """(SC-CLIP run, plain CLIP run, SC-CLIP's own predictions, data root) on a VOC copy whose labels hold
    SC-CLIP's predictions in their left half, so that the two methods score differently."""
    base = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")
        root = base / "datasets" / LAYOUTS["voc21"].root
        make_voc(root, STEMS)
        predictions = predict(tiny_checkpoint_path, root, STEMS)
        plant_predictions(root, "voc21", predictions)
        scclip_run = run_eval(config_path("voc21"), tiny_checkpoint_path, root, base / "work")
        vanilla_run = run_eval(VANILLA, tiny_checkpoint_path, root, base / "work")
    return scclip_run, vanilla_run, predictions, root


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_compare_prints_the_difference_its_interval_and_writes_the_figures(runs, tmp_path, capsys):
    scclip_run, vanilla_run, _, _ = runs
    figures_path = tmp_path / "figures" / "compare.json"
    assert eval_script.main(["--compare", str(scclip_run), str(vanilla_run / "metrics.json"),
                             "--json", str(figures_path)]) == 0
    out = capsys.readouterr().out
    figures = json.loads(figures_path.read_text())

    assert set(figures) == JSON_KEYS and set(figures["wins"]) == {"a", "b", "tie"}
    assert len(figures["ci95"]) == 2 and figures["resamples"] >= 1000 and figures["images"] == len(STEMS)
    metrics_a, metrics_b = metrics_of(scclip_run), metrics_of(vanilla_run)
    assert figures["miou_a"] == metrics_a["metrics"]["mIoU"] and figures["miou_b"] == metrics_b["metrics"]["mIoU"]
    assert figures["difference"] == pytest.approx(figures["miou_b"] - figures["miou_a"], abs=0.011)
    assert figures["difference"] < 0  # the labels hold SC-CLIP's own predictions in their left half
    low, high = figures["ci95"]
    assert low <= figures["difference"] <= high
    assert sum(figures["wins"].values()) == len(STEMS) and figures["wins"]["a"] > figures["wins"]["b"]
    assert list(figures["per_class"]) == list(metrics_a["per_class"])
    for name, difference in figures["per_class"].items():
        iou_a, iou_b = metrics_a["per_class"][name]["IoU"], metrics_b["per_class"][name]["IoU"]
        if iou_a is None or iou_b is None:
            assert difference is None
        else:
            assert difference == pytest.approx(iou_b - iou_a, abs=0.011)

    assert f"A: {scclip_run.name} (scclip, " in out and f"B: {vanilla_run.name} (vanilla, " in out
    assert "settings that differ: model.method: scclip → vanilla" in out
    assert (f"B − A: {figures['difference']:+.2f} mIoU points, 95% interval [{low:+.2f}, {high:+.2f}] "
            f"(paired bootstrap over {len(STEMS)} images, {figures['resamples']} resamples, seed 0)") in out
    assert f"figures written to {figures_path}" in out

    assert eval_script.main(["--compare", str(scclip_run), str(vanilla_run), "--json", str(figures_path)]) == 0
    assert json.loads(figures_path.read_text()) == figures  # seeded: the same command, the same numbers


def direct_bootstrap(areas_a: np.ndarray, areas_b: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """mIoU(B) − mIoU(A) per resample, one resample at a time: draw images, sum their areas, IoU, nanmean."""
    images = len(areas_a)
    indices = np.random.default_rng(seed).integers(0, images, size=(resamples, images))
    result = []
    for row in indices:
        mious = []
        for areas in (areas_a, areas_b):
            intersect = sum(areas[index, 0] for index in row)
            union = sum(areas[index, 1] for index in row)
            with np.errstate(invalid="ignore", divide="ignore"):
                mious.append(100 * np.nanmean(intersect / union))
        result.append(mious[1] - mious[0])
    return np.array(result)


def synthetic_areas(rng: np.random.Generator, images: int, classes: int) -> np.ndarray:
    """Consistent per-image areas (intersection ≤ predicted, labelled; union = predicted + labelled − intersection),
    with classes absent from some images and one class absent everywhere (NaN IoU, left out)."""
    predicted = rng.integers(0, 500, size=(images, classes)) * (rng.random((images, classes)) < 0.5)
    labelled = rng.integers(0, 500, size=(images, classes)) * (rng.random((images, classes)) < 0.5)
    predicted[:, -1] = labelled[:, -1] = 0
    intersect = (np.minimum(predicted, labelled) * rng.random((images, classes))).astype(np.int64)
    return np.stack([intersect, predicted + labelled - intersect, predicted, labelled], axis=1).astype(np.int64)


def test_the_vectorised_bootstrap_equals_a_direct_one(monkeypatch):
    rng = np.random.default_rng(1)
    areas_a, areas_b = synthetic_areas(rng, 40, 7), synthetic_areas(rng, 40, 7)
    monkeypatch.setattr(compare, "BLOCK_ELEMENTS", 40 * 300)  # several blocks of resamples
    names = [f"class{index}" for index in range(7)]
    result = compare.compare_areas(areas_a, areas_b, names, resamples=1000, seed=5)

    expected = direct_bootstrap(areas_a, areas_b, 1000, seed=5)
    np.testing.assert_allclose(result.ci95, np.percentile(expected, [2.5, 97.5]), rtol=0, atol=1e-9)
    total_a, total_b = areas_a.sum(0), areas_b.sum(0)
    with np.errstate(invalid="ignore"):
        assert result.miou_a == pytest.approx(100 * np.nanmean(total_a[0] / total_a[1]), abs=1e-12)
        assert result.miou_b == pytest.approx(100 * np.nanmean(total_b[0] / total_b[1]), abs=1e-12)
    assert result.per_class["class6"] == (None, None) and result.class_difference("class6") is None
    assert result.resamples == 1000 and result.images == 40


def test_the_interval_of_two_real_runs_equals_a_direct_bootstrap(runs):
    scclip_run, vanilla_run, _, _ = runs
    a, b = compare.load_run(scclip_run), compare.load_run(vanilla_run)
    areas_b = b.areas[compare.pair_images(a, b)]
    result = compare.compare_areas(a.areas, areas_b, a.class_names)
    expected = direct_bootstrap(a.areas, areas_b, compare.RESAMPLES, compare.SEED)
    np.testing.assert_allclose(result.ci95, np.percentile(expected, [2.5, 97.5]), rtol=0, atol=1e-9)
    assert round(result.miou_a, 2) == metrics_of(scclip_run)["metrics"]["mIoU"]
    assert round(result.miou_b, 2) == metrics_of(vanilla_run)["metrics"]["mIoU"]


def test_a_run_against_itself_differs_by_zero(runs, tmp_path):
    scclip_run = runs[0]
    figures_path = tmp_path / "same.json"
    assert eval_script.main(["--compare", str(scclip_run), str(scclip_run), "--json", str(figures_path)]) == 0
    figures = json.loads(figures_path.read_text())
    assert figures["difference"] == 0 and figures["ci95"] == [0, 0]
    assert figures["wins"] == {"a": 0, "b": 0, "tie": len(STEMS)}
    assert all(value in (0, None) for value in figures["per_class"].values())


@pytest.mark.slow
def test_runs_on_different_image_sets_are_refused_in_one_line(runs, tmp_path, tiny_checkpoint_path):
    scclip_run, _, _, root = runs
    fewer = tmp_path / "datasets" / LAYOUTS["voc21"].root
    shutil.copytree(root, fewer)
    (fewer / LAYOUTS["voc21"].split_file).write_text("".join(f"{stem}\n" for stem in STEMS[:-1]))
    other = run_eval(VANILLA, tiny_checkpoint_path, fewer, tmp_path / "work")
    with pytest.raises(InputError) as error:
        eval_script.main(["--compare", str(scclip_run), str(other)])
    message = str(error.value)
    assert (f"{scclip_run.name} ({len(STEMS)} images) and {other.name} ({len(STEMS) - 1} images) are runs on "
            f"different image sets: 1 image is in one run only, e.g. JPEGImages/{STEMS[-1]}.jpg "
            f"(only in {scclip_run.name})") in message
    assert "\n" not in message


def test_unfinished_or_foreign_folders_are_refused(runs, tmp_path):
    with pytest.raises(InputError, match="does not exist: give a run folder of eval.py"):
        compare.load_run(tmp_path / "nowhere")
    with pytest.raises(InputError, match=r"is not a run folder of eval.py \(no run.json\)"):
        compare.load_run(tmp_path)
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs[0], unfinished)
    (unfinished / "metrics.json").unlink()
    with pytest.raises(InputError, match="is not a finished run .no metrics.json.: finish it first"):
        compare.load_run(unfinished)


def panels(picture: np.ndarray, layout, height: int, width: int) -> list[np.ndarray]:
    return [picture[top:top + height, left:left + width]
            for left, top in (layout.panel_origin(column) for column in range(4))]


@pytest.mark.slow
def test_gallery_draws_the_images_where_the_runs_differ_most(runs, tmp_path, capsys):
    scclip_run, vanilla_run, predictions, root = runs
    assert eval_script.main(["--compare", str(scclip_run), str(vanilla_run), "--gallery", "3",
                             "--show-dir", str(tmp_path / "pictures")]) == 0
    captured = capsys.readouterr()
    folder = tmp_path / "pictures" / f"compare-{scclip_run.name}-vs-{vanilla_run.name}"
    assert "gallery: 3 pictures" in captured.out and str(folder) in captured.out
    assert "differ from what their run scored" not in captured.err  # the redrawn predictions are the scored ones
    files = sorted(folder.glob("*.png"))
    assert [path.name[:2] for path in files] == ["1-", "2-", "3-"]

    a, b = compare.load_run(scclip_run), compare.load_run(vanilla_run)
    scores_a, scores_b = compare.image_scores(a.areas), compare.image_scores(b.areas[compare.pair_images(a, b)])
    gaps = []
    class_names = list(a.class_names)
    for path in files:
        stem = path.stem.split("-", 1)[1].removeprefix("JPEGImages_")
        row = STEMS.index(stem)
        gaps.append(abs(scores_b[row] - scores_a[row]))
        image = mmcv.imread(root / "JPEGImages" / f"{stem}.jpg", channel_order="rgb")
        truth = read_ground_truth(root, "voc21", stem)
        picture = mmcv.imread(path, channel_order="rgb")
        _, layout = comparison(image, predictions[stem], truth, class_names, second=predictions[stem],
                               titles=("image", "A", "B", "ground truth"))
        drawn = panels(picture, layout, *image.shape[:2])
        np.testing.assert_array_equal(drawn[0], image)
        np.testing.assert_array_equal(drawn[1], overlay(image, predictions[stem], palette(len(class_names))))
        np.testing.assert_array_equal(drawn[3], overlay(image, truth, palette(len(class_names))))
    assert gaps == sorted(gaps, reverse=True) and gaps[0] == max(abs(scores_b - scores_a))

    assert eval_script.main(["--compare", str(scclip_run), str(vanilla_run), "--gallery", "1",
                             "--show-dir", str(tmp_path / "pictures")]) == 0
    assert [path.name for path in folder.glob("*.png")] == [files[0].name]  # the earlier gallery is replaced


def test_gallery_refuses_a_run_whose_settings_changed(runs, tmp_path):
    changed = tmp_path / runs[0].name
    shutil.copytree(runs[0], changed)
    description = json.loads((changed / "run.json").read_text())
    description["command"] += " model.prob_thd=0.5"
    (changed / "run.json").write_text(json.dumps(description))
    with pytest.raises(InputError, match=r"cannot redraw the predictions of .*: its settings changed since it ran "
                                         r"\(model.prob_thd: 0.15 → 0.5\)"):
        eval_script.main(["--compare", str(changed), str(runs[1]), "--gallery", "1", "--work-dir", str(tmp_path)])


@pytest.mark.parametrize("argv, message", [
    (["--compare", "a", "b", "--gallery", "0"], "--gallery 0: give the number of pictures"),
    (["--gallery", "2", "--summary", "w"], "--gallery and --json go with --compare"),
    (["--compare", "a", "b", "--config", "c.py"], "--compare reads two finished runs"),
])
def test_compare_options_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit):
        eval_script.parse_args(argv)
    assert message in capsys.readouterr().err


def test_four_panels_need_four_titles():
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    labels = np.zeros((4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="3 titles for 4 panels"):
        comparison(image, labels, labels, ["a"], second=labels, titles=("image", "A", "B"))


def stored_run(name: str, paths: list[str], areas: np.ndarray) -> compare.RunAreas:
    return compare.RunAreas(folder=Path(name), key=name, record={}, description={}, class_names=("a", "b", "c"),
                            image_paths=tuple(paths), relative_paths=tuple(paths), areas=areas)


def test_images_are_paired_by_path_not_by_position():
    areas = synthetic_areas(np.random.default_rng(2), 5, 3)
    paths = [f"images/{number}.jpg" for number in range(5)]
    shuffled = [4, 2, 0, 3, 1]
    a = stored_run("a", paths, areas)
    b = stored_run("b", [paths[index] for index in shuffled], areas[shuffled])
    order = compare.pair_images(a, b)
    np.testing.assert_array_equal(b.areas[order], a.areas)
    result = compare.compare_areas(a.areas, b.areas[order], a.class_names, resamples=1000)
    assert result.difference == 0 and result.ci95 == (0, 0)


@pytest.mark.parametrize("path, root, expected", [
    ("/data/VOC2012/JPEGImages/x.jpg", "/data/VOC2012", "JPEGImages/x.jpg"),
    ("./datasets/VOC2012/JPEGImages/x.jpg", "/home/me/datasets/VOC2012", "JPEGImages/x.jpg"),
    ("images/street/1.png", None, "images/street/1.png"),
])
def test_image_paths_are_taken_relative_to_the_data_root(path, root, expected):
    assert compare.relative_to_root(path, root) == expected


def test_the_gallery_goes_beside_the_runs_and_says_where(runs, capsys):
    """Without --show-dir the pictures used to go to ./work_dirs of whatever folder the command ran in."""
    scclip_run, vanilla_run, _, _ = runs
    stray = REPO_ROOT / "work_dirs" / f"compare-{scclip_run.name}-vs-{vanilla_run.name}"
    assert eval_script.main(["--compare", str(scclip_run), str(vanilla_run), "--gallery", "1"]) == 0
    folder = scclip_run.parent / f"compare-{scclip_run.name}-vs-{vanilla_run.name}"
    assert len(list(folder.glob("*.png"))) == 1
    out = capsys.readouterr().out
    assert "gallery: 1 pictures" in out and f"in {folder}\n" in out
    assert not stray.exists()
