"""Label a whole collection of images (pseudo-labels): `python predict.py`, on one process or many.

    python predict.py --image photos/ --vocab ade20k --backbone ViT-B/16 --out labels/
    python predict.py --image photos/ --classes "sky,tree,road" --out labels/ --recursive --scores
    torchrun --nproc_per_node=8 predict.py --image photos/ --vocab ade20k --out labels/ --launcher pytorch

What OUT holds:
- `<path of the image relative to --image, without extension>.png`: its labels (pixel = class
  index), the very file `scclip segment --save-mask` writes for that image and settings (a palette
  PNG up to 256 classes, 16-bit grayscale beyond). Images whose names differ only in their extension
  keep it, as the demo does (`shot_jpg.png`, `shot_png.png`).
- with `--scores`, `<same name>.scores.npy` beside it (one .npy per image): the C×h×w class scores
  behind the labels (softmax over the queries, max over each class's names, then the method's
  post-processing: PAMR, `area_thd`), computed at the inference size h×w (short side 336, as the
  model saw the image; not the image's own size) and stored as float16.
- `predictions.jsonl`: one line per image, sorted by path: `path` (relative to --image), `mask`
  (and `scores`) relative to OUT, `size` {width, height}, `shares` (pixel share of each class
  present), `seconds` spent on it (reading, its part of a batch's encoding, labels, writing).
  Lines of images since removed from the folder stay (so do their files).
- `run.json`: the settings (what determines the labels), the class names in index order, the command.

Running the same command again continues: images whose outputs are complete are skipped (also
after images were added to the folder). Other settings into the same OUT are refused (`--force`
deletes the outputs listed in predictions.jsonl and starts over); a folder of other files without a
run.json is never written into. Every file is written atomically; while a job writes into OUT it
holds OUT's lock (`scclip.locking`; rank 0 for the whole job), so a second job there is refused.
Unreadable images are listed at the end and the exit status is 1; Ctrl-C or SIGTERM stops after the
current batch (exit status 130 or 143) with everything finished so far kept and listed.

Many processes: rank 0 lists the folder and decides what is left; each rank takes every N-th of
those images (a deterministic shard of the sorted list), labels them in batches of images that share
an inference size (`Segmenter.predictions`, the demo's own path), and appends one line per finished
image to its own file under OUT/.predict/. Nothing waits on rank 0 until the end, when it merges
those files into predictions.jsonl; a line cut short by a kill is not counted (its image is redone).
Rank 0's progress bar covers all processes: each rank reports its count in a small file.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shlex
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: heavy modules are imported where used, after the arguments parse
    import numpy as np

    from scclip.locking import FolderLock

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.jsonl"
WORK_FOLDER = ".predict"  # the ranks' record and progress files of unfinished sessions
MASK_SUFFIX = ".png"
SCORES_SUFFIX = ".scores.npy"
RUN_FORMAT = 1
DEFAULT_BATCH_SIZE = 4
WINDOW_BATCHES = 4  # images read ahead and grouped by size: this many batches
READ_THREADS = 2
POLL_SECONDS = 0.5
MAX_LISTED = 10
# The temporary files of scclip.fileio.write_atomically ('.<stem>.<8 hex>.tmp<suffix>'), left by a kill -9.
TEMP_FILE = re.compile(r"^\..*\.[0-9a-f]{8}\.tmp(\.[^.]*)?$")


def build_parser() -> argparse.ArgumentParser:
    from scclip import options

    parser = argparse.ArgumentParser(
        prog="predict.py", description="Label every image of a folder (class index per pixel); resumable, "
                                       "on one process or many (torchrun ... --launcher pytorch).")
    options.add_image_option(parser, required=True, help="the folder of images to label")
    options.add_vocabulary_options(parser)
    options.add_runtime_options(parser)
    options.add_device_option(parser)
    options.add_backbone_options(parser)
    options.add_method_options(parser)
    options.add_call_options(parser)
    parser.add_argument("--out", type=Path, required=True,
                        help="the folder for the label PNGs, predictions.jsonl and run.json")
    parser.add_argument("--recursive", action="store_true", help="also label the images in subfolders")
    parser.add_argument("--scores", action="store_true",
                        help="also save each image's class scores (float16, at the inference size) as .scores.npy")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help=f"images encoded together when they share an inference size (default: "
                             f"{DEFAULT_BATCH_SIZE}); labels do not depend on it")
    parser.add_argument("--force", action="store_true",
                        help="start over: delete the outputs listed in OUT/predictions.jsonl, then label everything")
    options.add_launcher_option(parser, "predict.py")
    return parser


@dataclasses.dataclass
class Plan:
    """What rank 0 decided for the job, sent to every rank.

    Attributes:
        images: every image, relative to the images folder (POSIX), sorted.
        names: the output name of each image, relative to OUT, without suffix.
        pending: indices of the images this job labels (those without complete outputs).
        session: this job's name for its record and progress files (sorts in start order).
    """

    images: list[str]
    names: list[str]
    pending: list[int]
    session: str


def main(argv: list[str] | None = None) -> int:
    """Run predict.py; returns the exit status (0, 1 with one 'error: ...' line, 130/143 when stopped)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    from scclip.errors import exit_status

    return exit_status(lambda: run(args, argv))


def checked_lines(args: argparse.Namespace) -> list[str]:
    """The vocabulary lines, and every other setting checked before a model loads or OUT is touched."""
    from scclip import options
    from scclip.errors import ImageError, InputError
    from scclip.fileio import check_output_folder
    from scclip.vocabulary import check_vocabulary_arguments, vocabulary_lines

    check_vocabulary_arguments(args.classes, args.vocab, args.image)
    lines = vocabulary_lines(args.classes, args.vocab)
    options.check_runtime(args, ("backbone", "clip_arch", "vfm", "method"))
    args.settings = options.command_settings(args)
    if args.runtime == "onnx":  # its record names the model in the run's identity
        from scclip.runtime.folder import ModelFolder

        args.exported = ModelFolder.open(args.model).meta
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    if not args.image.is_dir():
        if args.image.exists():
            raise ImageError(f"--image {args.image} is a file, not a folder: for one image use "
                             f"scclip segment --image {args.image} --save-mask")
        raise ImageError(f"--image folder {args.image} not found: check the path")
    check_output_folder(args.out, "--out")
    if args.out.resolve() == args.image.resolve():
        raise InputError(f"--out {args.out} is the --image folder: give another folder, so that labels and "
                         "images stay apart")
    return lines


def identity_of(args: argparse.Namespace, lines: list[str], device: str) -> dict:
    """Everything that determines the outputs (not where or how fast they are computed), as plain data."""
    from scclip.api import INFERENCE_SCALE
    from scclip.clip.pretrained import MODEL_URLS
    from scclip.text_cache import checkpoint_digest, file_digest

    settings = dict(args.settings)
    prob_thd = settings.pop("prob_thd", None)
    if settings.get("vfm_path"):  # --vfm FILE (ProxyCLIP's VFM): named by its content
        settings["vfm_path"] = checkpoint_digest(settings["vfm_path"])
    shared = dict(images=str(args.image.resolve()), recursive=args.recursive, classes=list(lines), pamr=args.pamr,
                  slide=not args.no_slide, scores=args.scores, **({"settings": settings} if settings else {}))
    if args.runtime == "onnx":  # the exported folder names the weights, method, settings and precision
        from scclip.runtime.folder import MODEL_JSON

        return dict(shared, runtime="onnx", model=str(args.model.resolve()),
                    model_sha256=file_digest(args.model / MODEL_JSON), method=args.exported["method"],
                    prob_thd=args.exported["settings"]["prob_thd"] if prob_thd is None else prob_thd,
                    scale=list(args.exported["resize_scale"]), precision=args.exported["precision"])
    backbone = str(args.backbone)
    known = backbone in MODEL_URLS or Path(backbone).is_file()
    return dict(
        shared,
        backbone=backbone,
        backbone_sha256=checkpoint_digest(backbone) if known else None,
        clip_arch=args.clip_arch,
        method=args.method,
        prob_thd=0.0 if prob_thd is None else prob_thd,
        scale=list(INFERENCE_SCALE),
        precision="fp32" if device == "cpu" else "fp16",
    )


def changes(old: dict, new: dict) -> str:
    """'method 'scclip' → 'clearclip'; classes differ' for the settings that differ."""
    described = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        if isinstance(before, list) and isinstance(after, list) and max(len(before), len(after)) > 3:
            described.append(f"{key} differ")
        else:
            described.append(f"{key} {before!r} → {after!r}")
    return "; ".join(described[:3]) + (f"; and {len(described) - 3} more" if len(described) > 3 else "")


# ---------------------------------------------------------------------------- records


def read_records(path: Path) -> list[dict]:
    """The complete records of a record file; a last line without its newline (cut by a kill) is not one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    records = []
    for line in data.split(b"\n")[:-1]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("path"), str) and isinstance(record.get("mask"), str):
            records.append(record)
    return records


def record_files(out: Path) -> list[Path]:
    """predictions.jsonl, then the ranks' files of unfinished sessions in start order (later records win)."""
    return [out / PREDICTIONS_FILE, *sorted((out / WORK_FOLDER).glob("*.jsonl"))]


def collected_records(files: Sequence[Path]) -> dict[str, dict]:
    """The newest record of each image path in `files`."""
    return {record["path"]: record for path in files for record in read_records(path)}


def merge_records(out: Path, delete: bool) -> dict[str, dict]:
    """Rewrite predictions.jsonl with one line per image (sorted by path) from every record file; with
    `delete`, remove the merged rank files (only once no rank writes any more)."""
    from scclip.fileio import write_atomically

    files = record_files(out)
    records = collected_records(files)
    text = "".join(json.dumps(records[path], ensure_ascii=False) + "\n" for path in sorted(records))
    write_atomically(out / PREDICTIONS_FILE, lambda temp: temp.write_text(text, encoding="utf-8"))
    if delete:
        for path in files[1:]:
            path.unlink(missing_ok=True)
    return records


def inside(out: Path, name: str) -> Path | None:
    """OUT/name when it stays inside OUT (a record's own file), else None."""
    path = out / name
    return path if path.resolve().is_relative_to(out.resolve()) else None


def output_files(out: Path, record: dict) -> list[Path]:
    return [path for key in ("mask", "scores") if isinstance(record.get(key), str) and (path := inside(out, record[key]))]


class RecordFile:
    """One rank's record file: each finished image is one line, appended with a single write."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def append(self, record: dict) -> None:
        from scclip.errors import InputError

        data = memoryview((json.dumps(record, ensure_ascii=False) + "\n").encode())
        try:
            while data:
                data = data[os.write(self.descriptor, data):]
        except OSError as error:
            raise InputError(f"cannot write {self.path}: {error.strerror or error}: free space or choose another "
                             "--out") from None

    def close(self) -> None:
        os.close(self.descriptor)


# ---------------------------------------------------------------------------- planning (rank 0)


def read_run_file(out: Path) -> dict | None:
    """OUT/run.json, or None when there is none."""
    from scclip.errors import InputError

    path = out / RUN_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record.get("identity"), dict):
            raise ValueError("it has no identity")
    except (OSError, ValueError, AttributeError) as error:
        raise InputError(f"{path} cannot be read ({error}): add --force to start {out} over, or give another --out") \
            from None
    return record


def clear_outputs(out: Path) -> None:
    """--force: delete the files the records name, the record files and run.json (nothing else of OUT)."""
    files = record_files(out)
    for record in collected_records(files).values():
        for path in output_files(out, record):
            path.unlink(missing_ok=True)
    for path in [*files, *(out / WORK_FOLDER).glob("*"), out / RUN_FILE]:
        path.unlink(missing_ok=True)


def remove_temp_files(out: Path) -> None:
    """Remove what a killed job's atomic writes left half-done (their hidden temporary files)."""
    for folder, _, files in os.walk(out):
        for name in files:
            if TEMP_FILE.match(name):
                Path(folder, name).unlink(missing_ok=True)


def list_images(root: Path, recursive: bool, out: Path) -> list[Path]:
    """The images to label, sorted by relative path; what is skipped (and why) is printed, the first few."""
    from scclip.errors import ImageError
    from scclip.imageio import scan_folder

    images, skipped = scan_folder(root, recursive)
    root_real, out_real = root.resolve(), out.resolve()
    if out_real.is_relative_to(root_real):  # OUT inside the folder: its labels are not images to label
        out_parts = out_real.relative_to(root_real).parts
        ours = [image for image in images if image.relative_to(root).parts[: len(out_parts)] == out_parts]
        taken = set(ours)
        images = [image for image in images if image not in taken]
        skipped += [(image, f"inside --out {out} (an output of predict.py)") for image in ours]
    for path, reason in sorted(skipped)[:MAX_LISTED]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(skipped) > MAX_LISTED:
        print(f"... and {len(skipped) - MAX_LISTED} more entries that are not images to label", file=sys.stderr)
    if not images:
        raise ImageError(f"no image to label in folder {root}"
                         f"{' (skipped entries listed above)' if skipped else ''}: pass a folder with JPEG, PNG, "
                         f"WebP, BMP or TIFF images{'' if recursive else ' (or add --recursive for subfolders)'}")
    return sorted(images, key=lambda image: image.relative_to(root).as_posix())


def output_names(images: list[Path], root: Path) -> list[str]:
    """Each image's output name relative to OUT, without suffix: the demo's names (scclip.cli.picture_names)."""
    from scclip.outputs import PICTURE_SUFFIX, picture_names

    return [Path(name[: -len(PICTURE_SUFFIX)]).as_posix() for name in picture_names(images, root)]


def check_inputs_kept(images: list[Path], names: list[str], root: Path, out: Path) -> None:
    """Refuse outputs that would replace an input (possible only when the images folder lies inside OUT)."""
    from scclip.errors import InputError

    if not root.resolve().is_relative_to(out.resolve()):
        return
    inputs = {image.resolve() for image in images}
    for name in names:
        for path in (out / f"{name}{MASK_SUFFIX}", out / f"{name}{SCORES_SUFFIX}"):
            if path.resolve() in inputs:
                raise InputError(f"--out {out} would overwrite the input image {path}: choose another --out")


def is_complete(out: Path, record: dict | None, name: str, scores: bool) -> bool:
    """Whether an image's outputs are all there, under its current name (a new namesake can rename it)."""
    if record is None or record["mask"] != f"{name}{MASK_SUFFIX}" or not (out / record["mask"]).is_file():
        return False
    return not scores or (record.get("scores") == f"{name}{SCORES_SUFFIX}" and (out / record["scores"]).is_file())


def prepare(args: argparse.Namespace, identity: dict, class_names: list[str], argv: list[str]) -> Plan:
    """Rank 0, with OUT's lock held: check OUT against these settings, list the images, find what is left."""
    from scclip.errors import InputError
    from scclip.fileio import write_atomically
    from scclip.locking import LOCK_FILE

    out, root = args.out, args.image
    if not (out / RUN_FILE).exists():  # never write among someone else's files, --force or not
        foreign = sorted(entry.name for entry in out.iterdir() if entry.name not in (LOCK_FILE, WORK_FOLDER))
        if foreign:
            raise InputError(f"--out {out} holds other files ({', '.join(foreign[:3])}{', ...' * (len(foreign) > 3)}) "
                             f"and no {RUN_FILE} of predict.py: give a new or empty folder")
    previous = None if args.force else read_run_file(out)
    images = list_images(root, args.recursive, out)
    names = output_names(images, root)
    check_inputs_kept(images, names, root, out)
    if args.force:
        clear_outputs(out)
    elif previous is not None and previous["identity"] != identity:
        if any(collected_records(record_files(out)).values()):
            raise InputError(f"{out} holds labels made with other settings ({changes(previous['identity'], identity)})"
                             ": give another --out, or add --force to delete them and start over")
        clear_outputs(out)  # those settings never finished an image: nothing is lost
        previous = None
    if previous is None:
        record = dict(format=RUN_FORMAT, identity=identity, class_names=class_names,
                      command=shlex.join(["predict.py", *argv]),
                      started=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        write_atomically(out / RUN_FILE, lambda temp: temp.write_text(text, encoding="utf-8"))
    else:
        remove_temp_files(out)
    records = collected_records(record_files(out))
    relative = [image.relative_to(root).as_posix() for image in images]
    pending = [index for index, (path, name) in enumerate(zip(relative, names))
               if not is_complete(out, records.get(path), name, args.scores)]
    session = f"{time.time_ns():020d}-{secrets.token_hex(3)}"
    return Plan(images=relative, names=names, pending=pending, session=session)


def hold_folder(out: Path, force: bool) -> FolderLock:
    """Take OUT's lock for the whole job (scclip.locking.hold_for_job)."""
    from scclip.locking import hold_for_job

    return hold_for_job(out, "--force cannot start it over while that job writes to it: wait for it to end or "
                        "stop it" if force else "wait for it to end, or give another --out")


# ---------------------------------------------------------------------------- labelling (every rank)


class Progress:
    """Rank 0's bar (with the remaining time) over every rank's images; the other ranks report their
    counts in files of this session, so that no rank ever waits for another to show progress."""

    def __init__(self, out: Path, session: str, rank: int, world_size: int, total: int) -> None:
        from tqdm import tqdm

        self.folder = out / WORK_FOLDER
        self.session, self.rank, self.world_size = session, rank, world_size
        self.done = 0
        self.bar = tqdm(total=total, unit="image", file=sys.stderr, disable=total == 0) if rank == 0 else None

    def path(self, rank: int) -> Path:
        return self.folder / f"{self.session}-rank{rank:05d}.progress"

    def advance(self, count: int) -> None:
        from scclip.fileio import write_atomically

        self.done += count
        if self.rank > 0:
            write_atomically(self.path(self.rank), lambda temp: temp.write_text(str(self.done)))
        self.refresh()

    def total_done(self) -> int:
        done = self.done
        for rank in range(1, self.world_size):
            try:
                done += int(self.path(rank).read_text())
            except (OSError, ValueError):  # not written yet
                pass
        return done

    def refresh(self) -> None:
        if self.bar is not None:
            self.bar.update(self.total_done() - self.bar.n)

    def wait_for_all(self) -> None:
        """Every rank's wait at the end of its share; rank 0 keeps its bar moving meanwhile."""
        import torch.distributed as dist

        if self.world_size > 1:
            work = dist.barrier(async_op=True)
            while self.bar is not None and not work.is_completed():
                self.refresh()
                time.sleep(POLL_SECONDS)
            work.wait()
        self.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def read_timed(path: Path) -> tuple[np.ndarray | Exception, float]:
    """(the image as H×W×3 RGB, or the exception that reading raised; seconds it took)."""
    from scclip.imageio import read_image

    start = time.perf_counter()
    try:
        return read_image(path), time.perf_counter() - start
    except Exception as error:  # any unreadable image is reported at the end, never stops the others
        return error, time.perf_counter() - start


def read_ahead(paths: list[Path], window: int) -> Iterator[list[tuple[int, object, float]]]:
    """Windows of (position, image or error, seconds), read in threads one window ahead of the caller."""
    windows = [list(range(start, min(start + window, len(paths)))) for start in range(0, len(paths), window)]
    pool = ThreadPoolExecutor(max_workers=READ_THREADS)
    try:
        ahead: deque[list[Future]] = deque()
        for positions in windows[:2]:
            ahead.append([pool.submit(read_timed, paths[position]) for position in positions])
        for number, positions in enumerate(windows):
            futures = ahead.popleft()
            yield [(position, *future.result()) for position, future in zip(positions, futures)]
            if number + 2 < len(windows):
                ahead.append([pool.submit(read_timed, paths[position]) for position in windows[number + 2]])
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class Labeller:
    """One rank's work: label its images in batches, write each one's outputs, then its record line."""

    def __init__(self, segmenter, args: argparse.Namespace, plan: Plan, records: RecordFile, progress: Progress):
        self.segmenter, self.plan, self.records, self.progress = segmenter, plan, records, progress
        self.root, self.out, self.scores = args.image, args.out, args.scores
        self.batch_size = args.batch_size
        self.failures: list[tuple[str, str]] = []  # (image path, one line)

    def run(self, indices: list[int]) -> None:
        """Label the images at `indices` of the plan (this rank's share); stops at a batch boundary on a signal."""
        paths = [self.root / self.plan.images[index] for index in indices]
        with contextlib.closing(read_ahead(paths, self.batch_size * WINDOW_BATCHES)) as windows:
            self.label_windows(windows, indices)

    def label_windows(self, windows: Iterator[list[tuple[int, object, float]]], indices: list[int]) -> None:
        from scclip.evaluation.interrupts import StopRequest

        for window in windows:
            same_size: dict[tuple[int, int], list[tuple[int, object, float]]] = {}
            for position, image, seconds in window:
                if isinstance(image, Exception):
                    self.fail(indices[position], image)
                    self.progress.advance(1)
                else:
                    same_size.setdefault(image.shape[:2], []).append((indices[position], image, seconds))
            for group in same_size.values():
                for start in range(0, len(group), self.batch_size):
                    batch = group[start : start + self.batch_size]
                    self.label(batch)
                    self.progress.advance(len(batch))
                    StopRequest.check()

    def fail(self, index: int, error: Exception) -> None:
        from scclip.outputs import failure_message

        self.failures.append((self.plan.images[index], failure_message(self.root / self.plan.images[index], error)))

    def label(self, batch: list[tuple[int, object, float]]) -> None:
        """Label a batch; when it fails as a whole (e.g. out of memory), each image alone."""
        from scclip.errors import InputError

        start = time.perf_counter()
        try:
            predictions = self.segmenter.predictions([image for _, image, _ in batch])
        except Exception as error:
            if len(batch) == 1:
                self.fail(batch[0][0], error)
                return
            for item in batch:
                self.label([item])
            return
        shared = (time.perf_counter() - start) / len(batch)
        for (index, image, read_seconds), (_, prediction) in zip(batch, predictions):
            begin = time.perf_counter()
            try:
                record = self.write_outputs(index, image, prediction)
            except InputError:  # OUT cannot be written: no other image could be either
                raise
            except Exception as error:
                self.fail(index, error)
                continue
            record["seconds"] = round(read_seconds + shared + time.perf_counter() - begin, 4)
            self.records.append(record)

    def write_outputs(self, index: int, image, prediction) -> dict:
        """Write one image's label PNG (and scores); its record, which is appended only after them."""
        import numpy as np

        from scclip.fileio import write_atomically
        from scclip.visualize import label_image, pixel_shares

        segmenter, name = self.segmenter, self.plan.names[index]
        labels = prediction.labels()
        mask = label_image(labels, segmenter.colours)  # as SegmentationResult.mask() and save_mask()
        write_atomically(self.out / f"{name}{MASK_SUFFIX}", mask.save)
        shares = pixel_shares(labels, len(segmenter.class_names))
        record = dict(path=self.plan.images[index], mask=f"{name}{MASK_SUFFIX}",
                      size=dict(width=int(image.shape[1]), height=int(image.shape[0])),
                      shares={segmenter.class_names[i]: round(float(share), 6)
                              for i, share in enumerate(shares) if share > 0})
        if self.scores:
            at_inference_size = dataclasses.replace(prediction, size=tuple(prediction.image.shape[-2:]))
            scores = at_inference_size.scores().astype(np.float16)
            write_atomically(self.out / f"{name}{SCORES_SUFFIX}", lambda temp: np.save(temp, scores))
            record["scores"] = f"{name}{SCORES_SUFFIX}"
        return record


# ---------------------------------------------------------------------------- the job


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """The whole job on this process (rank); returns the exit status."""
    from mmengine.dist import broadcast_object_list, get_dist_info

    from scclip.api import display_names
    from scclip.errors import InputError, ScclipError

    from scclip.launch import choose_device, process_device, start

    lines = checked_lines(args)
    device = choose_device(args.device)
    start(args.launcher, device, "predict.py")
    device = process_device(device, args.launcher)
    rank, world_size = get_dist_info()
    identity = identity_of(args, lines, device)
    lock = hold_folder(args.out, args.force)
    try:
        shared: list = [None, None]  # the plan, or the refusal
        if rank == 0:
            try:
                shared[0] = prepare(args, identity, display_names(lines), argv)
            except ScclipError as error:
                shared[1] = str(error)
        broadcast_object_list(shared)
        plan, refusal = shared
        if refusal is not None:
            if lock.held and not (args.out / RUN_FILE).exists():
                lock.remove_created()
            raise InputError(refusal)
        try:
            return label_all(args, plan, lines, device, rank, world_size)
        except Exception:
            if lock.held and not collected_records(record_files(args.out)):
                lock.remove_created()  # an OUT this job made and labelled nothing into (e.g. a bad checkpoint)
            raise
    finally:
        lock.release()


def load_segmenter(args: argparse.Namespace, lines: list[str], device: str):
    """The model of --runtime: PyTorch's `Segmenter`, or the torch-free runtime's `OnnxSegmenter` on --model;
    both label a batch with `predictions`. ONNX Runtime takes $OMP_NUM_THREADS threads per graph when it is
    set, as PyTorch does (else its own default)."""
    if args.runtime == "onnx":
        from scclip import options
        from scclip.runtime import OnnxSegmenter

        threads = os.environ.get("OMP_NUM_THREADS", "")
        return OnnxSegmenter(args.model, classes=lines, providers=options.onnx_providers(device),
                             pamr=True if args.pamr else None, prob_thd=args.settings.get("prob_thd"),
                             slide=False if args.no_slide else None, threads=int(threads) if threads.isdigit() else None)
    from scclip.api import Segmenter

    return Segmenter(args.backbone, classes=lines, device=device, pamr=args.pamr, slide=not args.no_slide,
                     clip_arch=args.clip_arch, method=args.method, **args.settings)


def label_all(args: argparse.Namespace, plan: Plan, lines: list[str], device: str, rank: int, world_size: int) -> int:
    """Label this rank's share of the pending images, then (rank 0) merge the records and report."""
    from mmengine.dist import all_gather_object, barrier

    from scclip.errors import ScclipError
    from scclip.evaluation.interrupts import Interrupted, stop_on_signals

    out = args.out
    done_before = len(plan.images) - len(plan.pending)
    if not plan.pending:
        if rank == 0:
            merge_records(out, delete=True)
            print(f"all {len(plan.images)} images of {args.image} are labelled already in {out} "
                  f"(--force labels them again)")
        return 0
    if rank == 0:
        before = f", {done_before} labelled before" if done_before else ""
        print(f"labelling {len(plan.pending)} of {len(plan.images)} images{before} into {out} "
              f"on {world_size} process{'es' * (world_size > 1)}", file=sys.stderr)
    segmenter = load_segmenter(args, lines, device)
    mine = plan.pending[rank::world_size]
    barrier()  # every model is loaded: the clock starts together
    start = time.perf_counter()
    records = RecordFile(out / WORK_FOLDER / f"{plan.session}-rank{rank:05d}.jsonl")
    progress = Progress(out, plan.session, rank, world_size, len(plan.pending))
    labeller = Labeller(segmenter, args, plan, records, progress)
    with stop_on_signals(args.batch_size):
        try:
            labeller.run(mine)
        except Interrupted as interrupted:
            records.close()
            progress.close()
            if rank == 0:  # the others may still write: their files are merged by the next run
                merged = merge_records(out, delete=world_size == 1)
                done = len(set(plan.images) & set(merged))
                print(f"\ninterrupted: {done} of {len(plan.images)} images are labelled in {out}; run the same "
                      "command again to label the rest", file=sys.stderr, flush=True)
            return interrupted.exit_code
    records.close()
    progress.wait_for_all()
    progress.close()
    seconds = time.perf_counter() - start
    failures = sorted(failure for rank_failures in all_gather_object(labeller.failures) for failure in rank_failures)
    if rank > 0:
        return 1 if failures else 0
    merge_records(out, delete=True)
    for path in (out / WORK_FOLDER).glob(f"{plan.session}-*"):
        path.unlink(missing_ok=True)
    if (out / WORK_FOLDER).is_dir() and not any((out / WORK_FOLDER).iterdir()):
        (out / WORK_FOLDER).rmdir()
    labelled = len(plan.pending) - len(failures)
    print(f"labelled {labelled} images in {seconds:.1f} s ({len(plan.pending) / max(seconds, 1e-9):.2f} images/s on "
          f"{world_size} process{'es' * (world_size > 1)}); predictions in {out / PREDICTIONS_FILE}")
    if failures:
        for _, message in failures[:MAX_LISTED * 10]:
            print(f"could not label {message}", file=sys.stderr)
        raise ScclipError(f"{len(failures)} of {len(plan.images)} images could not be labelled (listed above): fix "
                          "or remove them, then run the same command again")
    return 0
