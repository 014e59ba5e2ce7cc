"""predict.py: label a folder (masks bit for bit those of `scclip segment --save-mask`), resumably, on
one process or two (torchrun, gloo), refusing other settings and a locked OUT."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scclip import cli
from scclip import predict as predict_module
from scclip.api import Segmenter
from scclip.locking import FolderLock

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = "cat,dog|puppy,sky"


def save(path: Path, size: tuple[int, int], seed: int) -> Path:
    """A blocky random RGB picture (width, height): regions, so that labels are not noise."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (size[1] // 20 + 1, size[0] // 20 + 1, 3), dtype=np.uint8)
    pixels = np.kron(blocks, np.ones((20, 20, 1), dtype=np.uint8))[: size[1], : size[0]]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    """Three images of one size (a batch), others alone, a subfolder, and two names that differ in extension."""
    folder = tmp_path / "photos"
    for index in range(3):
        save(folder / f"same{index}.jpg", (150, 100), index)
    save(folder / "shot.jpg", (90, 120), 10)
    save(folder / "shot.png", (60, 60), 11)
    save(folder / "sub" / "deep.png", (130, 70), 12)
    return folder


def predict(capsys, *argv) -> tuple[int, str, str]:
    code = predict_module.main([str(argument) for argument in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def base_args(photos: Path, out: Path, checkpoint: Path, *more) -> list:
    return ["--image", photos, "--classes", CLASSES, "--backbone", checkpoint, "--device", "cpu", "--out", out,
            "--recursive", *more]


def lines_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def all_images(photos: Path) -> list[str]:
    return sorted(path.relative_to(photos).as_posix() for path in photos.rglob("*.*"))


@pytest.fixture
def batch_sizes(monkeypatch) -> list[int]:
    """How many images each call of Segmenter.predictions got (the one prediction path predict.py uses)."""
    sizes: list[int] = []
    original = Segmenter.predictions

    def counting(self, images):
        sizes.append(len(images))
        return original(self, images)

    monkeypatch.setattr(Segmenter, "predictions", counting)
    return sizes


def test_masks_equal_scclip_segment_save_mask_bit_for_bit(capsys, tmp_path, photos, tiny_checkpoint_path, batch_sizes):
    out = tmp_path / "labels"
    code, stdout, stderr = predict(capsys, *base_args(photos, out, tiny_checkpoint_path, "--scores"))
    assert code == 0, stderr
    assert max(batch_sizes) == 3  # the three images of one size went through the model together
    demo = tmp_path / "demo"
    assert cli.main(["segment", "--image", str(photos), "--recursive", "--classes", CLASSES, "--backbone",
                     str(tiny_checkpoint_path), "--device", "cpu", "--save-mask", "--out", str(demo)]) == 0

    records = {record["path"]: record for record in lines_of(out)}
    assert list(records) == all_images(photos)  # every image once, sorted by path
    expected_names = {"same0.jpg": "same0", "shot.jpg": "shot_jpg", "shot.png": "shot_png", "sub/deep.png": "sub/deep"}
    for path, record in records.items():
        name = expected_names.get(path, Path(path).stem)
        assert record["mask"] == f"{name}.png"
        demo_mask = demo / f"{name}_scclip_mask.png"
        assert (out / record["mask"]).read_bytes() == demo_mask.read_bytes(), path
        summary = json.loads(demo_mask.with_suffix(".json").read_text())
        assert record["size"] == summary["size"]
        assert record["shares"] == {name: share for name, share in summary["pixel_shares"].items() if share > 0}
        assert record["seconds"] > 0
        scores = np.load(out / record["scores"])
        assert record["scores"] == f"{name}.scores.npy" and scores.dtype == np.float16
        width, height = record["size"]["width"], record["size"]["height"]
        assert scores.shape[0] == 3 and min(scores.shape[1:]) == 336  # the inference size, short side 336
        assert scores.shape[2 if width >= height else 1] == round(336 * max(width, height) / min(width, height))
        assert ((scores >= 0) & (scores <= 1)).all()
    run = json.loads((out / "run.json").read_text())
    assert run["class_names"] == ["cat", "dog", "sky"] and run["identity"]["classes"] == ["cat", "dog, puppy", "sky"]
    assert not (out / ".predict").exists() and not (out / ".scclip.lock").exists()
    assert "labelled 6 images" in stdout


def test_rerun_continues_redoes_only_incomplete_images_and_counts_no_cut_line(capsys, tmp_path, photos,
                                                                             tiny_checkpoint_path, batch_sizes):
    out = tmp_path / "labels"
    args = base_args(photos, out, tiny_checkpoint_path, "--no-slide")
    assert predict(capsys, *args)[0] == 0
    first = {record["path"]: record for record in lines_of(out)}
    # As a kill -9 leaves things: a mask gone with its line in a rank's file cut short, a temporary file.
    (out / "shot_png.png").unlink()
    work = out / ".predict"
    work.mkdir()
    (work / "00000000000000000001-aaaaaa-rank00001.jsonl").write_text('{"path": "shot.png", "mask": "shot_png.png"')
    (out / "sub" / ".deep.0123abcd.tmp.png").write_bytes(b"half")
    batch_sizes.clear()

    code, stdout, stderr = predict(capsys, *args)
    assert code == 0, stderr
    assert batch_sizes == [1]  # only the image whose mask was gone
    assert "labelling 1 of 6 images, 5 labelled before" in stderr
    records = lines_of(out)
    assert [record["path"] for record in records] == all_images(photos)
    assert {record["path"]: record["shares"] for record in records} == {path: r["shares"] for path, r in first.items()}
    assert (out / "shot_png.png").is_file()
    assert not (out / "sub" / ".deep.0123abcd.tmp.png").exists() and not work.exists()

    code, stdout, _ = predict(capsys, *args)
    assert code == 0 and len(lines_of(out)) == 6
    assert f"all 6 images of {photos} are labelled already in {out}" in stdout


def test_other_settings_are_refused_in_one_line_and_force_redoes(capsys, tmp_path, photos, tiny_checkpoint_path):
    out = tmp_path / "labels"
    assert predict(capsys, *base_args(photos, out, tiny_checkpoint_path, "--no-slide"))[0] == 0
    before = {path.name: path.read_bytes() for path in out.glob("*.png")}

    other = base_args(photos, out, tiny_checkpoint_path, "--no-slide", "--prob-thd", "0.5")
    code, _, stderr = predict(capsys, *other)
    assert code == 1
    assert stderr.splitlines() == [f"error: {out} holds labels made with other settings (prob_thd 0.0 → 0.5): "
                                   "give another --out, or add --force to delete them and start over"]
    assert {path.name: path.read_bytes() for path in out.glob("*.png")} == before

    (out / "predictions.jsonl").write_text(
        (out / "predictions.jsonl").read_text() + '{"path": "gone.jpg", "mask": "gone.png"}\n')
    (out / "gone.png").write_bytes(b"an output of an image deleted since")
    (out / "mine.txt").write_text("not predict.py's")
    code, _, stderr = predict(capsys, *other, "--force")
    assert code == 0, stderr
    assert json.loads((out / "run.json").read_text())["identity"]["prob_thd"] == 0.5
    assert [record["path"] for record in lines_of(out)] == all_images(photos)
    assert not (out / "gone.png").exists()  # listed in predictions.jsonl: predict.py's own, deleted
    assert (out / "mine.txt").read_text() == "not predict.py's"  # anything else is left alone


def test_a_folder_of_other_files_is_refused(capsys, tmp_path, photos, tiny_checkpoint_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "holiday.png").write_bytes(b"x")
    for extra in ((), ("--force",)):
        code, _, stderr = predict(capsys, *base_args(photos, out, tiny_checkpoint_path, *extra))
        assert code == 1
        assert stderr.splitlines() == [f"error: --out {out} holds other files (holiday.png) and no run.json of "
                                       "predict.py: give a new or empty folder"]
    assert sorted(path.name for path in out.iterdir()) == ["holiday.png"]


def test_a_locked_out_folder_is_refused(capsys, tmp_path, photos, tiny_checkpoint_path):
    out = tmp_path / "labels"
    lock = FolderLock(out)
    lock.acquire("unused")
    try:
        code, _, stderr = predict(capsys, *base_args(photos, out, tiny_checkpoint_path, "--force"))
    finally:
        lock.release()
    assert code == 1
    (line,) = stderr.splitlines()
    assert line.startswith(f"error: {out} is in use by another run (pid {os.getpid()} on ")
    assert line.endswith("--force cannot start it over while that job writes to it: wait for it to end or stop it")
    assert list(out.iterdir()) == []


def test_unreadable_image_is_listed_and_the_others_are_labelled(capsys, tmp_path, photos, tiny_checkpoint_path):
    (photos / "broken.jpg").write_bytes(b"not a picture")
    out = tmp_path / "labels"
    code, stdout, stderr = predict(capsys, *base_args(photos, out, tiny_checkpoint_path, "--no-slide"))
    assert code == 1
    assert f"could not label {photos / 'broken.jpg'}: not an image that can be read" in stderr
    assert stderr.splitlines()[-1] == ("error: 1 of 7 images could not be labelled (listed above): fix or remove "
                                       "them, then run the same command again")
    assert [record["path"] for record in lines_of(out)] == [p for p in all_images(photos) if p != "broken.jpg"]
    assert "labelled 6 images" in stdout


def test_bad_arguments_are_refused_before_the_model_loads(capsys, tmp_path, photos, tiny_checkpoint_path):
    out = tmp_path / "labels"
    cases = [
        (base_args(photos, photos, tiny_checkpoint_path), f"--out {photos} is the --image folder"),
        (base_args(photos, out, tiny_checkpoint_path, "--batch-size", 0), "--batch-size 0 must be at least 1"),
        (base_args(photos, out, tiny_checkpoint_path, "--method", "nope"), "unknown method 'nope'"),
    ]
    for argv, message in cases:
        code, _, stderr = predict(capsys, *argv)
        assert code == 1 and stderr.startswith(f"error: {message}"), stderr
    code, _, stderr = predict(capsys, "--images", photos / "same0.jpg", "--classes", "a,b", "--out", out)
    assert code == 1 and "is a file, not a folder: for one image use scclip segment" in stderr
    assert not out.exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(photos: Path, out: Path, checkpoint: Path, *more) -> list[str]:
    return [str(argument) for argument in ["predict.py", *base_args(photos, out, checkpoint, "--scores", *more)]]


def environment() -> dict:
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")


@pytest.mark.slow
def test_two_torchrun_processes_give_the_outputs_of_one(tmp_path, photos, tiny_checkpoint_path):
    for index in range(3, 7):  # more images of the batched size, so that each rank has a batch
        save(photos / f"same{index}.jpg", (150, 100), index)
    single, double = tmp_path / "single", tmp_path / "double"
    one = subprocess.run([sys.executable, *command(photos, single, tiny_checkpoint_path)], cwd=REPO_ROOT,
                         env=environment(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", *command(photos, double, tiny_checkpoint_path),
                          "--launcher", "pytorch"],
                         cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 processes" in two.stdout and "labelling 10 of 10 images" in two.stderr
    assert "10/10 [" in two.stderr  # rank 0's bar counts the other rank's images too

    def outputs(out: Path) -> dict[str, bytes]:
        return {path.relative_to(out).as_posix(): path.read_bytes() for path in out.rglob("*")
                if path.is_file() and path.name not in ("predictions.jsonl", "run.json")}

    assert outputs(single) == outputs(double) and len(outputs(single)) == 20  # masks and scores of 10 images

    def without_seconds(out: Path) -> list[dict]:
        return [{key: value for key, value in record.items() if key != "seconds"} for record in lines_of(out)]

    assert without_seconds(single) == without_seconds(double)
    assert len(lines_of(double)) == 10
    identity = json.loads((double / "run.json").read_text())["identity"]
    assert identity == json.loads((single / "run.json").read_text())["identity"]  # process count is no setting


def wait_for_records(out: Path, count: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until the running job has appended `count` records to its rank file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        files = list((out / ".predict").glob("*.jsonl"))
        if files and files[0].read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"the job wrote fewer than {count} records in {timeout} s")


def no_partial_files(out: Path) -> None:
    assert not [path for path in out.rglob("*") if ".tmp" in path.name]
    for record in lines_of(out):
        assert Image.open(out / record["mask"]).size == (record["size"]["width"], record["size"]["height"])
        assert np.load(out / record["scores"]).dtype == np.float16


@pytest.mark.slow
def test_sigterm_and_kill_part_way_then_the_same_command_labels_every_image_once(tmp_path, tiny_checkpoint_path):
    photos = tmp_path / "photos"
    for index in range(24):
        save(photos / f"image{index:02d}.png", (120 + 10 * (index % 3), 100), index)
    out = tmp_path / "labels"
    argv = [sys.executable, *command(photos, out, tiny_checkpoint_path, "--batch-size", "1")]

    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for_records(out, 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-3000:]
    assert "interrupted: " in stderr and "run the same command again" in stderr
    done = [record["path"] for record in lines_of(out)]
    assert 2 <= len(done) < 24 and len(set(done)) == len(done)
    no_partial_files(out)

    process = subprocess.Popen(argv, cwd=REPO_ROOT, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    wait_for_records(out, 2, process)
    process.kill()  # kill -9: no handler runs
    process.communicate(timeout=120)

    finished = subprocess.run(argv, cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    paths = [record["path"] for record in lines_of(out)]
    assert paths == [f"image{index:02d}.png" for index in range(24)]  # every image exactly once
    no_partial_files(out)
    assert not (out / ".predict").exists()


def test_resclip_labels_as_scclip_segment_does_and_refuses_area_thd(capsys, tmp_path, photos, tiny_checkpoint_path):
    """A method with its own settings (ResCLIP) through predict.py: the masks of `scclip segment`, its settings in
    the run's identity, and area_thd (which ResCLIP's release cannot apply) refused in one line."""
    out = tmp_path / "labels"
    chosen = ("--method", "resclip", "--set", "temp_thd=0.3", "--set", "sfr_weights=[2.1, 0.6]")
    code, _, stderr = predict(capsys, *base_args(photos, out, tiny_checkpoint_path, *chosen))
    assert code == 0, stderr
    demo = tmp_path / "demo"
    assert cli.main(["segment", "--image", str(photos), "--recursive", "--classes", CLASSES, "--backbone",
                     str(tiny_checkpoint_path), "--device", "cpu", "--save-mask", "--out", str(demo), *chosen]) == 0
    for record in lines_of(out):
        name = record["mask"].removesuffix(".png")
        assert (out / record["mask"]).read_bytes() == (demo / f"{name}_scclip_mask.png").read_bytes(), name
    identity = json.loads((out / "run.json").read_text())["identity"]
    assert identity["method"] == "resclip" and identity["settings"]["temp_thd"] == 0.3
    assert list(identity["settings"]["sfr_weights"]) == [2.1, 0.6]
    capsys.readouterr()  # scclip segment's progress
    code, _, stderr = predict(capsys, *base_args(photos, tmp_path / "other", tiny_checkpoint_path, "--method",
                                                 "resclip", "--set", "area_thd=0.1"))
    assert code != 0 and len(stderr.strip().splitlines()) == 1
    assert "method 'resclip' cannot take area_thd=0.1: its release cannot apply it" in stderr
