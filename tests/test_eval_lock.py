"""One run per run folder: a folder held by a live run refuses a second run and --force, and kill -9 leaves no lock.

The holder is either a helper process that takes the lock directly (fast) or a live eval.py blocked on an
image that is a named pipe (see test_eval_resume.py).
"""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_eval import REPO_ROOT, eval_script, isolate
from test_eval_resume import (
    args_for,
    block_on,
    environment,
    image_path,
    make_voc,
    metrics_of,
    reader_waiting,
    release,
    run_folders,
    stored,
    wait_for_stored,
)

from scclip.errors import InputError
from scclip.locking import LOCK_FILE, FolderInUse, FolderLock

NUM_IMAGES = 3
# scclip.locking without scclip/__init__.py (which imports torch), so that the holder starts at once.
HOLD = ("import sys, types; package = types.ModuleType('scclip'); package.__path__ = [sys.argv[2]]; "
        "sys.modules['scclip'] = package; from scclip.locking import FolderLock; lock = FolderLock(sys.argv[1]); "
        "lock.acquire('wait'); print('held', flush=True); sys.stdin.read()")


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")


def hold(folder: Path) -> subprocess.Popen:
    """A helper process that holds `folder`'s lock until it is killed or its stdin closes."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(REPO_ROOT / "scclip")], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_lock_refuses_a_second_holder_and_dies_with_its_holder(tmp_path):
    folder = tmp_path / "work" / "run"
    holder = hold(folder)
    try:
        with pytest.raises(FolderInUse, match=rf"^{folder} is in use by another run \(pid {holder.pid} on .+, "
                                              rf"since .+\): use another folder$"):
            FolderLock(folder).acquire("use another folder")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    lock = FolderLock(folder)
    lock.acquire("use another folder")  # the kernel let go of the killed holder's lock: nothing stale
    assert lock.held and lock.created is None  # the folder was there already
    lock.release()
    assert not (folder / LOCK_FILE).exists() and not lock.held


def test_lock_removes_only_the_folders_it_created(tmp_path):
    lock = FolderLock(tmp_path / "work" / "run")
    lock.acquire("never shown")
    assert lock.created == tmp_path / "work"
    (tmp_path / "work" / "run" / "run.json").write_text("{}")
    lock.remove_created()
    lock.release()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory, tiny_checkpoint_path):
    """A run of NUM_IMAGES images whose results are all stored but whose metrics.json is gone: (root, work dir)."""
    base = tmp_path_factory.mktemp("locked")
    root = make_voc(base / "datasets", num_images=NUM_IMAGES)
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")
        assert eval_script.main(args_for(root, base / "work", tiny_checkpoint_path)) == 0
    (folder,) = run_folders(base / "work")
    (folder / "metrics.json").unlink()
    return root, base / "work"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_held_run_folder_refuses_other_runs_and_force_keeps_its_results(unfinished_run, tmp_path,
                                                                           tiny_checkpoint_path):
    root, template = unfinished_run
    work_dir = tmp_path / "work"
    shutil.copytree(template, work_dir)
    (folder,) = run_folders(work_dir)
    results = snapshot(folder / "results")
    assert len(stored(folder)) == NUM_IMAGES

    holder = hold(folder)
    try:
        in_use = rf"^{folder} is in use by another run \(pid {holder.pid} on "
        with pytest.raises(InputError, match=in_use + r".*--force cannot start it over while that run writes"):
            eval_script.main([*args_for(root, work_dir, tiny_checkpoint_path), "--force"])
        for extra in (["--resume"], []):
            with pytest.raises(InputError, match=in_use + r".*wait for it to end, or give another --work-dir$"):
                eval_script.main([*args_for(root, work_dir, tiny_checkpoint_path), *extra])
        assert snapshot(folder / "results") == results and not (folder / "metrics.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: its lock goes with it
        holder.wait()

    assert eval_script.main([*args_for(root, work_dir, tiny_checkpoint_path), "--resume"]) == 0
    record = metrics_of(folder)
    assert (record["evaluated"], record["resumed"]) == (0, NUM_IMAGES)
    assert snapshot(folder / "results") == results and not (folder / LOCK_FILE).exists()


def test_a_held_run_folder_is_refused_before_any_weights_are_read(unfinished_run, tmp_path, tiny_checkpoint_path,
                                                                    monkeypatch):
    """The refusal comes before the checkpoint's tensors are read (--backbone FILE read them whole to count its
    blocks) or the model is built: by ordering, whatever the machine's speed."""
    import scclip.clip.loading as loading

    root, template = unfinished_run
    work_dir = tmp_path / "work"
    shutil.copytree(template, work_dir)
    (folder,) = run_folders(work_dir)
    mapped_only = loading.load_state_dict

    def keys_only(path, kind="CLIP", mapped=False):
        if not mapped:
            raise AssertionError(f"the tensors of {path} were read before the run folder's lock was taken")
        return mapped_only(path, kind, mapped=True)

    def no_model(*args, **kwargs):
        raise AssertionError("the model was built before the run folder's lock was taken")

    monkeypatch.setattr(loading, "load_state_dict", keys_only)
    monkeypatch.setattr(eval_script.QuietRunner, "from_cfg", no_model)
    holder = hold(folder)
    try:
        with pytest.raises(InputError, match=rf"^{folder} is in use by another run \(pid {holder.pid} on "):
            eval_script.main([*args_for(root, work_dir, tiny_checkpoint_path), "--backbone", str(tiny_checkpoint_path)])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_stop_request_says_that_the_current_batch_finishes(capsys):
    """After SIGTERM a whole batch finishes (predict.py's 4 images by default, eval's test_dataloader.batch_size)."""
    from scclip.evaluation.interrupts import StopRequest, stop_on_signals

    for batch_size, expected in ((4, "SIGTERM: stopping after the current batch (up to 4 images), which is kept"),
                                 (1, "SIGTERM: stopping after the current image, which is kept")):
        with stop_on_signals(batch_size):
            os.kill(os.getpid(), signal.SIGTERM)
            assert StopRequest.signum == signal.SIGTERM
        assert expected in capsys.readouterr().err


@pytest.mark.slow
def test_force_against_a_live_run_is_one_line_and_the_live_run_finishes(tmp_path, tiny_checkpoint_path):
    """The reported loss: --force during a live run of the same folder deleted the live run's results."""
    root = make_voc(tmp_path / "datasets", num_images=NUM_IMAGES)
    work_dir = tmp_path / "work"
    blocked = image_path(root, 1)
    data = block_on(blocked)
    live = subprocess.Popen([sys.executable, "eval.py", *args_for(root, work_dir, tiny_checkpoint_path)],
                            cwd=REPO_ROOT, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        folder = wait_for_stored(work_dir, 1, live)
        writer = reader_waiting(blocked)  # the live run now waits inside image 1, its lock held
        refused = subprocess.run([sys.executable, "eval.py", *args_for(root, work_dir, tiny_checkpoint_path),
                                  "--force"], cwd=REPO_ROOT, env=environment(), capture_output=True, text=True,
                                 timeout=300, check=False)
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert refused.stderr.strip().splitlines()[-1].startswith(
            f"error: {folder} is in use by another run (pid {live.pid} on ")
        assert sorted(stored(folder)) == [0]  # the live run's stored image is still there
        release(writer, blocked, data)
        output = live.communicate(timeout=240)[0]
    finally:
        live.kill()
    assert live.returncode == 0, output[-3000:]
    assert metrics_of(folder)["evaluated"] == NUM_IMAGES and not (folder / LOCK_FILE).exists()
    assert os.listdir(work_dir) == [folder.name]
