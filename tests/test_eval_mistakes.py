"""Mistakes in an eval command are one line before anything runs; a full disk is one line after saving what
was done; a failed command leaves no empty run folder behind."""
import errno
import logging
from pathlib import Path

import pytest
from test_eval import eval_script, isolate
from test_eval_resume import args_for, make_voc, metrics_of, run_folders, stored

from scclip import SCCLIPForSegmentation
from scclip.errors import InputError
from scclip.evaluation.store import ShardWriter

NUM_IMAGES = 3


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return make_voc(tmp_path_factory.mktemp("mistakes") / "datasets", num_images=NUM_IMAGES)


@pytest.mark.parametrize("options, extra, expected", [
    (["model.prob_thd=abc"], [], r"model\.prob_thd='abc' must be a number \(default 0\.0\)"),
    (["model.pamr_steps=1.5"], [], r"model\.pamr_steps=1\.5 must be a whole number"),
    (["model.prob_thd=2"], [], r"model\.prob_thd=2 must lie in \[0, 1\]: it is compared with class probabilities"),
    (["test_dataloader.batch_sze=2"], [],
     r"test_dataloader\.batch_sze is not a data loader setting: did you mean test_dataloader\.batch_size\?"),
    (["test_dataloader.batch_size=0"], [], r"test_dataloader\.batch_size=0 must be a whole number, at least 1"),
    (["test_dataloader.num_workers=-1"], [], r"test_dataloader\.num_workers=-1 must be a whole number: 0"),
    ([], ["--show-dir", "{file}"], r"--show-dir {file} is not a folder: give a folder"),
    ([], ["--show-dir", "{file}/pictures"], r"--show-dir {file}/pictures is not a folder \({file} is a file\)"),
    ([], ["--work-dir", "{file}"], r"--work-dir {file} is not a folder"),
])
def test_mistakes_are_one_line_before_anything_runs(tmp_path, voc_root, tiny_checkpoint_path, monkeypatch,
                                                    options, extra, expected):
    file = tmp_path / "a_file.png"
    file.write_bytes(b"not a folder")
    monkeypatch.setattr(eval_script, "run_identity", lambda *args: pytest.fail("the run started"))
    extra = [item.format(file=file) for item in extra]
    with pytest.raises(InputError, match="^" + expected.format(file=file)) as error:
        eval_script.main([*args_for(voc_root, tmp_path / "work", tiny_checkpoint_path, *options), *extra])
    assert "\n" not in str(error.value)
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("setting, expected", [
    (dict(prob_thd="abc"), "prob_thd='abc' must be a number"),
    (dict(area_thd=[0.1]), r"area_thd=\[0\.1\] must be a number"),
    (dict(slide_stride="112"), "slide_stride='112' must be a whole number"),
    (dict(crop_batch_size=0), "crop_batch_size=0 must be at least 1"),
])
def test_segmentor_refuses_wrong_types_in_one_line(setting, expected):
    """Before the checkpoint is read (there is none here): a message, not a comparison's TypeError."""
    with pytest.raises(InputError, match=expected):
        SCCLIPForSegmentation(clip_path="no-such-checkpoint.pt", vocabulary=["cat"], **setting)


def test_a_failed_run_leaves_no_folder_it_created(tmp_path, voc_root, tiny_checkpoint_path):
    """A calibration index beyond the checkpoint's depth is refused by the segmentor, once the run folder exists:
    the folder goes, and the work dir."""
    with pytest.raises(InputError, match=r"pre_adjust_idx=50 does not fit a ViT"):
        eval_script.main(args_for(voc_root, tmp_path / "work", tiny_checkpoint_path, "model.pre_adjust_idx=50"))
    assert not (tmp_path / "work").exists()

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "other").write_text("kept")
    with pytest.raises(InputError, match=r"pre_adjust_idx=50 does not fit a ViT"):
        eval_script.main(args_for(voc_root, tmp_path / "work", tiny_checkpoint_path, "model.pre_adjust_idx=50"))
    assert [path.name for path in (tmp_path / "work").iterdir()] == ["other"]


def stop_storing_after(monkeypatch, count: int, error: BaseException) -> None:
    """The run's store fails with `error` when it is asked for image number `count + 1`."""
    append = ShardWriter.append

    def failing(self, item) -> None:
        if failing.calls == count:
            raise error
        failing.calls += 1
        append(self, item)

    failing.calls = 0
    monkeypatch.setattr(ShardWriter, "append", failing)


def test_a_failed_run_keeps_a_folder_that_holds_results(tmp_path, voc_root, tiny_checkpoint_path, monkeypatch):
    work_dir = tmp_path / "work"
    with monkeypatch.context() as patch:
        stop_storing_after(patch, 1, RuntimeError("the model broke"))
        with pytest.raises(RuntimeError, match="the model broke"):
            eval_script.main(args_for(voc_root, work_dir, tiny_checkpoint_path))
    (folder,) = run_folders(work_dir)
    assert sorted(stored(folder)) == [0]


def disk_full() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["results", "log"])
def test_a_full_disk_is_one_line_after_saving_and_resume_finishes(tmp_path, voc_root, tiny_checkpoint_path,
                                                                  monkeypatch, capsys, where):
    """The disk fills after two images: the run stops in one line naming what is stored; --resume finishes."""
    work_dir = tmp_path / "work"
    args = args_for(voc_root, work_dir, tiny_checkpoint_path, "default_hooks.logger.interval=1")
    with monkeypatch.context() as patch:
        if where == "results":
            stop_storing_after(patch, 2, disk_full())
        else:  # mmengine's log file, written after each image here (logger interval 1)
            stop_storing_after(patch, 2, AssertionError("the log should have stopped the run first"))
            flush = logging.FileHandler.flush

            def full_after_two_images(handler) -> None:
                if any(len(stored(folder)) >= 2 for folder in run_folders(work_dir)):
                    raise disk_full()
                flush(handler)

            patch.setattr(logging.FileHandler, "flush", full_after_two_images)
        with pytest.raises(InputError) as error:
            eval_script.main(args)
    (folder,) = run_folders(work_dir)
    message = str(error.value)
    assert message.startswith(f"no space left on the disk of {folder}: 2 of {NUM_IMAGES} images are stored there; "
                              "free space and resume with: python eval.py ")
    assert message.endswith(" --resume") and "\n" not in message
    assert "Logging error" not in capsys.readouterr().err
    assert sorted(stored(folder)) == [0, 1]

    resume = message.split("resume with: python eval.py ")[1].split(" ")
    assert eval_script.main([*args, "--resume"]) == 0 and resume[-1] == "--resume"
    assert (metrics_of(folder)["evaluated"], metrics_of(folder)["resumed"]) == (NUM_IMAGES - 2, 2)


def test_a_full_disk_before_any_image_leaves_no_folder(tmp_path, voc_root, tiny_checkpoint_path, monkeypatch):
    def full(handler) -> None:
        raise disk_full()

    monkeypatch.setattr(logging.FileHandler, "flush", full)  # the log's first line fails
    with pytest.raises(InputError, match=r"^no space left on the disk of .* before any image was stored: "
                                         r"free space and run the command again$"):
        eval_script.main(args_for(voc_root, tmp_path / "work", tiny_checkpoint_path))
    assert not (tmp_path / "work").exists()
