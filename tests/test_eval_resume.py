"""Long runs: run folders, interrupted and resumed evaluation (one process and torchrun), bad data.

A run is interrupted deterministically: one image of the split is a named pipe, so the run blocks
on reading it after storing the images before it; the test then sends SIGTERM, feeds the image
through the pipe, and the run must stop right after that image.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_datasets import LAYOUTS, label_map, photo, save_label_map
from test_eval import REPO_ROOT, eval_script, isolate

from scclip.errors import DatasetError, InputError
from scclip.evaluation.metrics import total_areas
from scclip.evaluation.store import read_store

VOC = LAYOUTS["voc21"]
NUM_IMAGES = 6
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
FAST = ["test_dataloader.num_workers=0", "test_dataloader.dataset.pipeline.1.scale=(2048, 224)"]


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")


def make_voc(datasets_dir: Path, num_images: int = NUM_IMAGES) -> Path:
    """A VOC2012-layout set of `num_images` photos with made-up label maps; returns its data root."""
    root = datasets_dir / VOC.root
    rng = np.random.default_rng(0)
    stems = [f"2007_{index:06d}" for index in range(num_images)]
    for index, stem in enumerate(stems):
        image = photo(PHOTOS[index % len(PHOTOS)])
        image = image[:, ::-1] if index >= len(PHOTOS) else image
        (root / VOC.img_dir).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(root / VOC.img_dir / f"{stem}.jpg")
        save_label_map(label_map(rng, VOC), root / VOC.ann_dir / f"{stem}.png", palette=True)
    (root / VOC.split_file).parent.mkdir(parents=True, exist_ok=True)
    (root / VOC.split_file).write_text("".join(f"{stem}\n" for stem in stems))
    return root


def image_path(root: Path, index: int) -> Path:
    return root / VOC.img_dir / f"2007_{index:06d}.jpg"


def args_for(root: Path, work_dir: Path, checkpoint: Path, *extra_options: str) -> list[str]:
    return ["--config", "configs/cfg_voc21.py", "--work-dir", str(work_dir), "--device", "cpu", "--cfg-options",
            f"model.clip_path={checkpoint}", f"test_dataloader.dataset.data_root={root}", *FAST, *extra_options]


def run_folders(work_dir: Path) -> list[Path]:
    return sorted(path for path in work_dir.glob("cfg_voc21-*") if path.is_dir())


def stored(folder: Path) -> dict:
    key = json.loads((folder / "run.json").read_text())["key"]
    return read_store(folder / "results", key)[0]


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory, tiny_checkpoint_path):
    """An uninterrupted run over the 6-image set: its run folder."""
    base = tmp_path_factory.mktemp("clean")
    root = make_voc(base / "datasets")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")
        assert eval_script.main(args_for(root, base / "work", tiny_checkpoint_path)) == 0
    (folder,) = run_folders(base / "work")
    return folder


def assert_same_as_clean(folder: Path, clean: Path) -> None:
    """Metrics, per-class numbers and the int64 area totals equal those of the clean run exactly."""
    ours, reference = metrics_of(folder), metrics_of(clean)
    assert ours["metrics"] == reference["metrics"] and ours["per_class"] == reference["per_class"]
    assert ours["num_images"] == NUM_IMAGES
    totals = total_areas(stored(folder).values(), 21)
    assert np.array_equal(totals, total_areas(stored(clean).values(), 21))
    assert totals[2].sum() > 0 and totals[1].sum() > 0


def block_on(path: Path) -> bytes:
    """Turn an image into a named pipe: a run that reaches it waits until `release` writes the image."""
    data = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    return data


def reader_waiting(path: Path, timeout: float = 240) -> int:
    """Wait until the run opens the pipe; returns the writing end (the run then waits in its read)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # no reader yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    os.set_blocking(descriptor, True)
    return descriptor


def release(descriptor: int, path: Path, data: bytes) -> None:
    """Feed the image to the run waiting on the pipe, then put the real file back."""
    with os.fdopen(descriptor, "wb") as pipe:
        pipe.write(data)
    path.unlink()
    path.write_bytes(data)


def wait_for_stored(work_dir: Path, count: int, process: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0][-3000:]
        folders = run_folders(work_dir)
        if folders and (folders[0] / "run.json").is_file() and len(stored(folders[0])) >= count:
            return folders[0]
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the run did not store {count} images in {timeout} s: {process.communicate()[0][-3000:]}")


def environment() -> dict:
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")


def test_same_command_finds_its_folder_and_other_options_another(clean_run, tiny_checkpoint_path, capsys):
    work_dir = clean_run.parent
    root = Path(metrics_of(clean_run)["data_root"])
    before = (clean_run / "metrics.json").stat().st_mtime_ns, sorted((clean_run / "results").iterdir())
    capsys.readouterr()

    assert eval_script.main(args_for(root, work_dir, tiny_checkpoint_path)) == 0
    assert f"this run is finished, its results are in {clean_run / 'metrics.json'}" in capsys.readouterr().out
    assert run_folders(work_dir) == [clean_run]
    assert ((clean_run / "metrics.json").stat().st_mtime_ns, sorted((clean_run / "results").iterdir())) == before

    assert eval_script.main(args_for(root, work_dir, tiny_checkpoint_path, "model.prob_thd=0.5")) == 0
    folders = run_folders(work_dir)
    assert len(folders) == 2
    (other,) = set(folders) - {clean_run}
    record = metrics_of(other)
    assert record["overrides"]["model.prob_thd"] == 0.5 and record["evaluated"] == NUM_IMAGES
    assert metrics_of(clean_run)["overrides"].get("model.prob_thd") is None
    assert record["per_class"]["background"] != metrics_of(clean_run)["per_class"]["background"]


@pytest.mark.slow
def test_sigterm_then_resume_equals_a_clean_run(tmp_path, clean_run, tiny_checkpoint_path):
    root = make_voc(tmp_path / "datasets")
    work_dir = tmp_path / "work"
    blocked = image_path(root, 3)
    data = block_on(blocked)
    process = subprocess.Popen([sys.executable, "eval.py", *args_for(root, work_dir, tiny_checkpoint_path)],
                               cwd=REPO_ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        folder = wait_for_stored(work_dir, 3, process)
        writer = reader_waiting(blocked)
        process.send_signal(signal.SIGTERM)
        release(writer, blocked, data)
        output = process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert process.returncode == 143, output
    assert sorted(stored(folder)) == [0, 1, 2, 3]  # it stopped right after the image it was on
    assert "SIGTERM: stopping after the current image, which is kept" in output  # batch size 1
    assert not (folder / "metrics.json").exists()
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: 4 of 6 images done, stored in {folder}; resume with: python eval.py ")
    assert "Traceback" not in output and "GPU number" not in output and "pin_memory" not in output
    assert len(output.strip().splitlines()) < 12, output  # the config and environment went to the log file only
    assert "Config:" in next(folder.glob("*/*.log")).read_text()

    with pytest.raises(InputError, match="holds an unfinished run of this command \\(4 of 6 images stored\\): "
                                         "add --resume"):
        eval_script.main(args_for(root, work_dir, tiny_checkpoint_path))
    with pytest.raises(InputError, match=r"nothing to resume for these settings: the unfinished run .* differs "
                                         r"\(model\.prob_thd: 0\.15 → 0\.3\)"):
        eval_script.main([*args_for(root, work_dir, tiny_checkpoint_path, "model.prob_thd=0.3"), "--resume"])

    resume = shlex.split(last.split("resume with: ")[1])
    assert resume[:2] == ["python", "eval.py"] and resume[-1] == "--resume"
    assert eval_script.main(resume[2:]) == 0
    record = metrics_of(folder)
    assert (record["evaluated"], record["resumed"]) == (2, 4)
    assert_same_as_clean(folder, clean_run)


@pytest.mark.slow
def test_torchrun_interrupted_then_resumed_with_one_process(tmp_path, clean_run, tiny_checkpoint_path):
    root = make_voc(tmp_path / "datasets")
    work_dir = tmp_path / "work"
    blocked = {index: image_path(root, index) for index in (2, 3)}  # rank 0 evaluates 0, 2, 4; rank 1 1, 3, 5
    data = {index: block_on(path) for index, path in blocked.items()}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29537",
               "eval.py", *args_for(root, work_dir, tiny_checkpoint_path), "--launcher", "pytorch"]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        folder = wait_for_stored(work_dir, 2, process)
        writers = {index: reader_waiting(path) for index, path in blocked.items()}
        process.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
        time.sleep(1)  # let torchrun forward it while both ranks wait for their image
        for index, path in blocked.items():
            release(writers[index], path, data[index])
        output = process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert process.returncode != 0
    assert sorted(stored(folder)) == [0, 1, 2, 3], output[-3000:]
    assert len(list((folder / "results").glob("*rank0*"))) == len(list((folder / "results").glob("*rank1*"))) == 1
    assert not (folder / "metrics.json").exists()
    assert "interrupted: " in output and "resume with: torchrun --nproc_per_node=2 eval.py " in output

    assert eval_script.main([*args_for(root, work_dir, tiny_checkpoint_path), "--resume"]) == 0
    record = metrics_of(folder)
    assert (record["evaluated"], record["resumed"], record["world_size"]) == (2, 4, 1)
    assert_same_as_clean(folder, clean_run)


def truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return data


def test_check_data_lists_every_bad_file(tmp_path, tiny_checkpoint_path, capsys):
    root = make_voc(tmp_path / "datasets", num_images=4)
    truncate(image_path(root, 1))
    label = root / VOC.ann_dir / "2007_000002.png"
    save_label_map(np.asarray(Image.open(label))[:50], label, palette=True)
    values = np.asarray(Image.open(root / VOC.ann_dir / "2007_000003.png")).copy()
    values[0, :3] = (21, 40, 254)
    save_label_map(values, root / VOC.ann_dir / "2007_000003.png", palette=True)

    assert eval_script.main([*args_for(root, tmp_path / "work", tiny_checkpoint_path), "--check-data"]) == 1
    output = capsys.readouterr()
    lines = output.out.splitlines()
    assert f"{image_path(root, 1)} (128×96 pixels): damaged or truncated (image file is truncated" in output.out
    assert (f"{label}: label map is 128×50 pixels but its image {image_path(root, 2)} is 128×96 pixels: a label map "
            "has its image's size") in lines
    assert (f"{root / VOC.ann_dir / '2007_000003.png'}: label values 21, 40, 254 are outside 0..20 or 255 (ignored)"
            in lines)
    assert "3 problems in 4 images" in output.err
    assert not (tmp_path / "work").exists(), "checking the data starts no run"

    truncate(image_path(root, 1))  # still broken: the healthy ones are reported as such
    for path in (image_path(root, 1), label, root / VOC.ann_dir / "2007_000003.png"):
        path.unlink()
    (root / VOC.split_file).write_text("2007_000000\n")
    assert eval_script.main([*args_for(root, tmp_path / "work", tiny_checkpoint_path), "--check-data"]) == 0
    assert "all 1 images and label maps are readable and consistent" in capsys.readouterr().out


@pytest.mark.slow
def test_truncated_image_stops_the_run_in_one_line_and_resume_finishes_it(tmp_path, clean_run, tiny_checkpoint_path):
    root = make_voc(tmp_path / "datasets")
    work_dir = tmp_path / "work"
    broken = image_path(root, 4)
    good = truncate(broken)
    workers = ["test_dataloader.num_workers=1"]  # the error crosses a DataLoader worker
    with pytest.raises(DatasetError) as error:
        eval_script.main(args_for(root, work_dir, tiny_checkpoint_path, *workers))
    message = eval_script.one_line(error.value)
    assert message.startswith(f"{broken} (128×96 pixels): damaged or truncated") and "--resume" in message
    assert "\n" not in message
    (folder,) = run_folders(work_dir)
    assert sorted(stored(folder)) == [0, 1, 2, 3] and not (folder / "metrics.json").exists()

    broken.write_bytes(good)
    assert eval_script.main([*args_for(root, work_dir, tiny_checkpoint_path, *workers), "--resume"]) == 0
    assert (metrics_of(folder)["evaluated"], metrics_of(folder)["resumed"]) == (2, 4)
    assert_same_as_clean(folder, clean_run)


def test_metrics_json_schema(clean_run, tiny_checkpoint_path):
    record = metrics_of(clean_run)
    assert set(record["metrics"]) == {"aAcc", "mIoU", "mAcc"}
    assert set(record) >= {
        "config", "config_name", "benchmark", "method", "backbone", "overrides", "checkpoint", "checkpoint_sha256",
        "num_images", "evaluated", "resumed", "metrics", "per_class", "scclip_version", "date"}
    assert (record["method"], record["backbone"], record["benchmark"]) == ("scclip", "ViT-B/16", "voc21")
    assert record["checkpoint"] == str(tiny_checkpoint_path) and len(record["checkpoint_sha256"]) == 64
    assert record["published_weights"] is False
    assert list(record["per_class"])[:2] == ["background", "aeroplane"] and len(record["per_class"]) == 21
    for value in [*record["metrics"].values(), *(v for row in record["per_class"].values() for v in row.values())]:
        assert value is None or value == round(value, 2)
    assert (record["num_images"], record["evaluated"], record["resumed"]) == (NUM_IMAGES, NUM_IMAGES, 0)


def test_unknown_model_setting_is_one_line_with_the_closest_name(tmp_path, tiny_checkpoint_path):
    root = make_voc(tmp_path / "datasets", num_images=1)
    with pytest.raises(InputError, match=r"model\.prob_thdd is not a setting of method 'scclip': "
                                         r"did you mean model\.prob_thd\?"):
        eval_script.main(args_for(root, tmp_path / "work", tiny_checkpoint_path, "model.prob_thdd=0.2"))
    assert not (tmp_path / "work").exists()


def test_calibration_indices_of_another_backbone_say_which_one(tmp_path, tiny_checkpoint_path):
    """ViT-L/14's calibration indices given with a 12-block checkpoint: one line saying whose settings those are."""
    root = make_voc(tmp_path / "datasets", num_images=1)
    l14 = ["model.pre_adjust_idx=16", "model.post_adjust_idx=6", "model.multi_start_idx=8", "model.multi_end_idx=19"]
    with pytest.raises(InputError) as error:
        eval_script.main(args_for(root, tmp_path / "work", tiny_checkpoint_path, *l14))
    message = eval_script.one_line(error.value)
    assert message.startswith("pre_adjust_idx=16 does not fit a ViT with 12 blocks") and "ViT-L/14" in message
    assert "\n" not in message and "class `" not in message


def test_missing_config_lists_the_configs():
    with pytest.raises(InputError, match=r"config configs/cfg_voc99\.py not found; did you mean "
                                         r"configs/cfg_voc\d+\.py\? configs in configs/: .*cfg_ade20k.*cfg_voc21"):
        eval_script.main(["--config", "configs/cfg_voc99.py"])


@pytest.mark.parametrize("problem, expected", [
    ("empty split", "split file {split} lists no images"),
    ("missing image", "1 of 2 images missing, e.g. {image}"),
    ("byte-order mark", "split file {split} starts with a byte-order mark, which mmseg reads as part of the first "
                        "image's name: save it as UTF-8 without one"),
])
def test_split_problems_are_one_line(tmp_path, tiny_checkpoint_path, problem, expected):
    root = make_voc(tmp_path / "datasets", num_images=2)
    split = root / VOC.split_file
    if problem == "empty split":
        split.write_text("")
    elif problem == "byte-order mark":
        split.write_bytes("\ufeff".encode() + split.read_bytes())
    else:
        image_path(root, 1).unlink()
    with pytest.raises(DatasetError) as error:
        eval_script.main(args_for(root, tmp_path / "work", tiny_checkpoint_path))
    assert expected.format(split=split, image=image_path(root, 1)) in str(error.value)
    assert "\n" not in str(error.value)


def test_batch_larger_than_the_split_and_no_workers(tmp_path, tiny_checkpoint_path):
    root = make_voc(tmp_path / "datasets", num_images=2)
    options = ["test_dataloader.batch_size=8", "test_dataloader.persistent_workers=True"]
    assert eval_script.main(args_for(root, tmp_path / "work", tiny_checkpoint_path, *options)) == 0
    (folder,) = run_folders(tmp_path / "work")
    assert metrics_of(folder)["num_images"] == 2 and metrics_of(folder)["metrics"]["aAcc"] is not None
    first = metrics_of(folder)

    (shard,) = (folder / "results").iterdir()
    assert eval_script.main([*args_for(root, tmp_path / "work", tiny_checkpoint_path, *options), "--force"]) == 0
    assert run_folders(tmp_path / "work") == [folder] and not shard.exists()  # started over, in the same folder
    again = metrics_of(folder)
    assert again["evaluated"] == 2 and again["date"] >= first["date"] and again["metrics"] == first["metrics"]


def test_loader_workers_follow_the_cores(monkeypatch):
    monkeypatch.setattr(eval_script, "available_cores", lambda: 2)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert eval_script.dataloader_workers(4, overridden=False) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert eval_script.dataloader_workers(4, overridden=False) == 1
    assert eval_script.dataloader_workers(4, overridden=True) == 4  # what the user asked for


@pytest.mark.slow
def test_a_bad_file_removed_then_resume_scores_the_images_that_remain(tmp_path, tiny_checkpoint_path, capsys):
    """The advice of a run stopped by a bad file, followed as written: remove it (and its split line), --resume.
    Replacing it instead resumes the same run:
    test_truncated_image_stops_the_run_in_one_line_and_resume_finishes_it."""
    root = make_voc(tmp_path / "datasets", num_images=4)
    work_dir = tmp_path / "work"
    broken = image_path(root, 2)
    truncate(broken)
    with pytest.raises(DatasetError) as error:
        eval_script.main(args_for(root, work_dir, tiny_checkpoint_path))
    assert "replace or remove the file (and its line in the split file, if one lists it), then rerun with " \
           "--resume" in str(error.value)
    (stopped,) = run_folders(work_dir)
    assert sorted(stored(stopped)) == [0, 1]

    broken.unlink()
    (root / VOC.ann_dir / "2007_000002.png").unlink()
    (root / VOC.split_file).write_text("2007_000000\n2007_000001\n2007_000003\n")
    capsys.readouterr()
    assert eval_script.main([*args_for(root, work_dir, tiny_checkpoint_path), "--resume"]) == 0
    printed = capsys.readouterr().out
    (resumed,) = [folder for folder in run_folders(work_dir) if folder != stopped]
    assert (f"the split has 3 images now, the unfinished run {stopped} had 4: its 2 results for images still in "
            f"the split are kept, and this run scores the 3 images in {resumed}") in printed
    record = metrics_of(resumed)
    assert (record["num_images"], record["evaluated"], record["resumed"]) == (3, 1, 2)
    assert sorted(stored(stopped)) == [0, 1] and not (stopped / "metrics.json").exists()  # left as it was

    clean = tmp_path / "clean"
    assert eval_script.main(args_for(root, clean, tiny_checkpoint_path)) == 0  # the 3 images in one go
    (clean_folder,) = run_folders(clean)
    assert clean_folder.name == resumed.name
    assert metrics_of(clean_folder)["metrics"] == record["metrics"]
    assert np.array_equal(total_areas(stored(clean_folder).values(), 21), total_areas(stored(resumed).values(), 21))
