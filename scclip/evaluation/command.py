"""`scclip eval` (`python eval.py`): evaluate a method on a benchmark (mIoU), on one or several GPUs or on the CPU; resumable.

    scclip eval --config voc21 [--backbone ViT-L/14] [--method clearclip] [--set prob_thd=0.2]
    scclip eval --config custom --data-root DIR [--runtime onnx --model exported/]
    python eval.py --config configs/cfg_voc21.py [--work-dir work_dirs] [--show-dir vis]
    python eval.py --config configs/cfg_voc21.py --resume        # continue an interrupted run
    python eval.py --config configs/cfg_voc21.py --check-data    # read every file of the split first
    torchrun --nproc_per_node=N eval.py --config ... --launcher pytorch
    python eval.py --summary work_dirs          # markdown table of finished runs vs. the published numbers

A run's folder is `<work-dir>/<config name>-<hash of what determines its predictions>`: the same
command finds it again, other settings get another one. Each image's contribution to the metric
is stored as soon as it is evaluated, so Ctrl-C, SIGTERM or a bad file lose nothing; the metrics
(`metrics.json`) are computed from all stored images once the split is complete. A run holds its
folder's lock while it writes there (scclip.locking): a second run of the folder, --force included,
is refused in one line naming the holder.
"""
import argparse
import difflib
import errno
import inspect
import itertools
import json
import logging
import os
import re
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import mmcv
import torch
from mmengine.config import Config, DictAction
from mmengine.dist import barrier, get_dist_info, is_main_process
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmengine.utils import ProgressBar

import scclip
from scclip.backbones import model_settings as backbone_model_settings
from scclip.backbones import parse_backbone
from scclip.clip.records import BACKBONES
from scclip.datasets import check_dataset, complete_folder_config
from scclip.errors import InputError, ScclipError
from scclip.evaluation.data import (
    Split,
    available_cores,
    check_data,
    check_label_sizes,
    folder_problems,
    list_split,
    with_checked_loaders,
)
from scclip.evaluation.interrupts import Interrupted, stop_on_signals
from scclip.evaluation.metrics import format_table, metrics_from_store, stored_results
from scclip.evaluation.runs import (
    DEFAULT_METHOD,
    RunFolder,
    carry_over,
    differences,
    image_list_changed,
    run_identity,
    runs_of_config,
)
from scclip.evaluation.summary import summary_table
from scclip.fileio import check_output_folder, write_atomically
from scclip import options
from scclip.benchmarks import config_keys, config_root, resolve_config
from scclip.launch import choose_device, process_device, start
from scclip.locking import FolderLock, hold_for_job
from scclip.settings import MODEL_SETTINGS, check_settings, model_settings
from scclip.visualize import comparison, palette

METRICS_SCHEMA = 1
MAX_PROBLEMS_SHOWN = 20
# What mmengine's Runner.build_dataloader takes besides torch's DataLoader arguments.
RUNNER_LOADER_SETTINGS = ("sampler", "batch_sampler", "collate_fn", "worker_init_fn", "num_batch_per_epoch")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# mmengine keys its logger and visualizer on '<experiment>_<second>': a number per Runner of this process keeps
# two runs started in the same second (in-process callers: benchmarks/ablation.py, the tests) from sharing them.
RUNNER_NUMBERS = itertools.count(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scclip eval", description="Evaluate a benchmark config (mIoU); resumable.")
    parser.add_argument("--config", metavar="NAME|PATH",
                        help=f"a benchmark by its key ({', '.join(config_keys())}: the shipped config) or a config "
                             "file, e.g. configs/cfg_voc21.py")
    parser.add_argument("--work-dir", "--workdir", dest="work_dir", default="./work_dirs",
                        help="runs go to WORK_DIR/<config name>-<settings hash>/ (log, metrics.json, stored results)")
    parser.add_argument("--show-dir", help="save input | prediction | ground truth pictures under SHOW_DIR/<run>/")
    options.add_runtime_options(parser)
    options.add_device_option(parser)
    options.add_launcher_option(parser, "eval.py")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config entries, e.g. model.clip_path=FILE "
                             "test_dataloader.dataset.data_root=DIR")
    options.add_backbone_options(parser, default=None)  # another CLIP, keeping the config's benchmark settings
    options.add_method_options(parser, default=None)
    parser.add_argument("--resume", action="store_true",
                        help="continue the interrupted run of this command: evaluate only the images not stored yet")
    parser.add_argument("--force", action="store_true",
                        help="start this command's run over, discarding its stored results and metrics")
    parser.add_argument("--data-root", metavar="DIR",
                        help="the dataset's folder, for any config (sets test_dataloader.dataset.data_root); with "
                             "configs/cfg_custom.py, a folder of your own (docs/your-data.md)")
    parser.add_argument("--check-data", action="store_true",
                        help="read every image and label map of the split, report each problem, and exit")
    parser.add_argument("--summary", metavar="WORK_DIR",
                        help="print the markdown table of the finished runs under WORK_DIR and exit")
    parser.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                        help="compare two finished runs on the same images (run folders or their metrics.json): "
                             "mIoU difference B - A with a 95%% paired bootstrap interval, per class, wins; and exit")
    parser.add_argument("--gallery", type=int, metavar="N",
                        help="with --compare: pictures image | A | B | ground truth of the N images where the runs "
                             "differ most, in SHOW_DIR (else the folder of run A)/compare-<A>-vs-<B>/")
    parser.add_argument("--json", metavar="PATH", help="with --compare: also write its figures to PATH (JSON)")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.compare is not None and (args.config is not None or args.summary is not None):
        parser.error("--compare reads two finished runs: give it without --config and --summary")
    if args.compare is None and (args.gallery is not None or args.json is not None):
        parser.error("--gallery and --json go with --compare RUN_A RUN_B")
    if args.gallery is not None and args.gallery < 1:
        parser.error(f"--gallery {args.gallery}: give the number of pictures, at least 1")
    if args.summary is None and args.config is None and args.compare is None:
        parser.error("give --config (to evaluate), --summary WORK_DIR (to tabulate finished runs) "
                     "or --compare RUN_A RUN_B (to compare two)")
    if args.clip_arch is not None and args.backbone is None:
        parser.error("--clip-arch names the architecture of a --backbone file or tag: give --backbone too")
    if args.resume and args.force:
        parser.error("--resume continues a run and --force starts it over: give one of them")
    if args.config in config_keys():
        suffix = parse_backbone(args.backbone, args.clip_arch).config_suffix if args.backbone else ""
        args.config = resolve_config(args.config, args.method, suffix)
    # --method and --set are config overrides as --cfg-options gives them (which win): recorded as such.
    given = {f"model.{name}": value for name, value in options.given_settings(args).items()}
    if args.method is not None:
        given["model.method"] = args.method
    args.cfg_options = {**given, **args.cfg_options}
    return args


def read_config(path: str) -> Config:
    """The config file, or one line naming the configs (or, for a bare name, the keys) that exist."""
    config = Path(path)
    if not config.is_file() and config.suffix != ".py" and len(config.parts) == 1:
        close = difflib.get_close_matches(path, config_keys(), n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InputError(f"--config {path} is neither a config file nor a benchmark key: {hint}"
                         f"keys: {', '.join(config_keys())}")
    if not config.is_file():
        folder = config.parent if config.parent.is_dir() else config_root()
        names = sorted(str(found) for found in folder.glob("**/cfg_*.py"))
        close = difflib.get_close_matches(str(config), names, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        listing = ", ".join(Path(name).stem for name in names if Path(name).parent == folder) or "none"
        raise InputError(f"config {path} not found; {hint}configs in {folder}/: {listing}")
    return Config.fromfile(str(config))


def check_model_settings(model: dict) -> None:
    """One line for a model setting the method does not take (with the closest valid name), or a value of the
    wrong type, out of its range or not one of its choices (scclip.settings), before anything runs."""
    check_settings(model.get("method", DEFAULT_METHOD), model, prefix="model.",
                   advice="fix it in the config or in --cfg-options")


def check_loader_settings(loader: dict, overridden: list[str], known: set[str]) -> None:
    """One line for an unknown test_dataloader override (with the closest name) or a batch size or worker
    count that the DataLoader would refuse with a traceback, before anything runs.

    Args:
        loader: the test_dataloader settings with the overrides applied.
        overridden: the --cfg-options keys.
        known: the test_dataloader keys the config file itself sets.
    """
    valid = sorted({*inspect.signature(torch.utils.data.DataLoader.__init__).parameters, *RUNNER_LOADER_SETTINGS,
                    *known} - {"self"})
    for key in overridden:
        parts = key.split(".")
        if parts[0] == "test_dataloader" and len(parts) > 1 and parts[1] not in valid:
            close = difflib.get_close_matches(parts[1], valid, n=1)
            hint = f"did you mean test_dataloader.{close[0]}? " if close else ""
            raise InputError(f"test_dataloader.{parts[1]} is not a data loader setting: {hint}"
                             f"valid settings: {', '.join(valid)}")
    batch_size, workers = loader.get("batch_size", 1), loader.get("num_workers", 0)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"test_dataloader.batch_size={batch_size!r} must be a whole number, at least 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise InputError(f"test_dataloader.num_workers={workers!r} must be a whole number: 0 (load in the main "
                         "process) or more")


def dataloader_workers(requested: int, overridden: bool) -> int:
    """The configured workers, but no more than this process's share of the available cores."""
    if overridden:
        return requested
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return min(requested, max(1, available_cores() // processes))


def apply_data_root(cfg: Config, args: argparse.Namespace) -> None:
    """--data-root: the dataset's folder for any config; a folder benchmark then takes its vocabulary and ignore
    value from it (scclip.datasets.complete_folder_config), before the run's identity is computed."""
    if args.data_root is not None:
        given = args.cfg_options.get("test_dataloader.dataset.data_root")
        if given is not None and str(given) != args.data_root:
            raise InputError(f"--data-root {args.data_root} and --cfg-options "
                             f"test_dataloader.dataset.data_root={given} disagree: give the folder once")
        cfg.test_dataloader.dataset.data_root = args.data_root
    complete_folder_config(cfg)


def apply_backbone(cfg: Config, args: argparse.Namespace) -> None:
    """--backbone on any config: the model's `clip_path` and `clip_arch` (and a tag's normalisation), and the
    config's declared `backbone`, which metrics.json and the summary report.

    The config's benchmark settings stay. When they were published for a backbone of the other size
    (scclip.backbones.settings_backbone), a note on stderr names the config that holds this backbone's.
    """
    if args.backbone is None:
        return
    backbone = parse_backbone(args.backbone, args.clip_arch)
    declared = cfg.get("backbone")
    download_root = args.cfg_options.get("model.download_root", cfg.model.get("download_root"))
    cfg.model.update(backbone_model_settings(backbone, download_root))
    if cfg.model.clip_arch is None:
        cfg.model.pop("clip_arch")
    cfg.backbone = backbone.label
    declared_suffix = BACKBONES[declared].config_suffix if declared in BACKBONES else None
    if (declared_suffix is None or declared == backbone.settings or os.environ.get("RANK", "0") != "0"
            or cfg.get("settings_for_every_backbone")):  # a release that runs one config per benchmark (ResCLIP)
        return
    config = Path(args.config)
    fitting = config.with_name(config.stem.removesuffix(declared_suffix) + backbone.config_suffix + config.suffix)
    where = f"; {fitting} holds them" if fitting.is_file() else ""
    print(f"note: --backbone {backbone.label} ({backbone.depth} blocks) takes the {backbone.settings} settings, but "
          f"{config} holds the {declared} ones, which this run keeps{where}", file=sys.stderr)


def drop_other_methods_settings(cfg: Config, method: str | None) -> None:
    """--method on a config of another method: the config's settings of its own method that `method` does
    not take are dropped (the shared ones, such as the benchmark's thresholds, stay)."""
    if method is None or method == cfg.model.get("method", DEFAULT_METHOD):
        return
    check_settings(method, {})  # an unknown method: the closest name
    for name in [name for name in cfg.model if name in MODEL_SETTINGS and MODEL_SETTINGS[name].own]:
        if name not in model_settings(method):
            cfg.model.pop(name)


def load_config(args: argparse.Namespace, device: str) -> Config:
    """The config with the command line applied: overrides, device, launcher, loader settings."""
    cfg = read_config(args.config)
    known_loader_settings = set(cfg.get("test_dataloader", {}))
    apply_backbone(cfg, args)  # before the overrides: --cfg-options model.clip_path=... still wins
    drop_other_methods_settings(cfg, args.cfg_options.get("model.method"))
    cfg.merge_from_dict(args.cfg_options)
    apply_data_root(cfg, args)
    check_model_settings(dict(cfg.model))
    check_loader_settings(dict(cfg.test_dataloader), list(args.cfg_options), known_loader_settings)
    options.check_runtime(args, ("backbone", "clip_arch", "vfm", "method"))
    if args.runtime == "onnx":
        from scclip.evaluation.exported import exported_model_config

        cfg.model = exported_model_config(cfg.model, args.model)
        cfg.backbone = f"exported:{Path(args.model).name}"
    cfg.launcher = args.launcher
    # An exported model's ONNX Runtime session picks its GPU itself: each process its own under a launcher.
    cfg.model.device = process_device(device, args.launcher) if args.runtime == "onnx" else device
    cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "nccl" if device == "cuda" else "gloo"
    loader = cfg.test_dataloader
    loader.num_workers = dataloader_workers(loader.get("num_workers", 0),
                                            "test_dataloader.num_workers" in args.cfg_options)
    if loader.num_workers == 0:
        loader.persistent_workers = False
        loader.pop("prefetch_factor", None)
    if isinstance(cfg.get("test_evaluator"), dict):
        cfg.test_evaluator.setdefault("prefix", "test")  # only provides the dataset's metainfo here
    if device == "cpu":
        cfg.env_cfg.cudnn_benchmark = False
        loader.pin_memory = False
    return cfg


def declared_backbone(cfg: Config) -> str:
    """The backbone a config says it is made for (`backbone`), else its model's public CLIP name."""
    return str(cfg.get("backbone") or cfg.model.get("clip_path", ""))


def is_disk_full(error: BaseException | None) -> bool:
    """Whether a full disk (or quota) caused `error`, also when it was re-raised as another error."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            return True
        error = error.__cause__ or error.__context__
    return False


def stop_on_full_disk(handler: logging.Handler) -> None:
    """A full disk under the log file stops the run (what is stored is kept) instead of printing a traceback
    per log line, as logging does with a failing handler."""
    report = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if is_disk_full(error):
            raise error
        report(record)

    handler.handleError = handle_error


class QuietRunner(Runner):
    """mmengine's Runner with a short console: the environment, the config and INFO logs go to the log file only."""

    def build_logger(self, log_level="INFO", log_file=None, **kwargs):
        logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
        for handler in logger.handlers:
            if type(handler) is logging.StreamHandler:
                handler.setLevel(logging.WARNING)
            elif isinstance(handler, logging.FileHandler):
                stop_on_full_disk(handler)
        return logger


class ProgressBarHook(Hook):
    """A console progress bar with ETA over the test images of this process (rank 0 only)."""

    priority = "VERY_LOW"

    def before_test(self, runner) -> None:
        self.bar = ProgressBar(len(runner.test_dataloader), file=sys.stdout) if is_main_process() else None

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.bar is not None:
            self.bar.update()
            if self.bar.completed == self.bar.task_num:
                sys.stdout.write("\n")


class ComparisonHook(Hook):
    """Saves `<show_dir>/<image path in the image folder>.png`: image | prediction | ground truth at the image's size, under
    those titles, over a legend of the classes present in either (scclip.visualize, as the demo's picture).

    The colours are the demo's palette for the dataset's classes, not the dataset's own (in VOC's, some
    neighbouring classes are hard to tell apart). mmseg's SegVisualizationHook draws only ground truth |
    prediction and only on rank 0, so every rank here draws the images it evaluated itself.
    """

    priority = "LOW"

    def __init__(self, show_dir: str | Path) -> None:
        self.show_dir = Path(show_dir)

    def before_test(self, runner) -> None:
        self.show_dir.mkdir(parents=True, exist_ok=True)
        self.class_names = list(runner.test_dataloader.dataset.metainfo["classes"])
        self.colours = palette(len(self.class_names))
        self.image_folder = runner.test_dataloader.dataset.data_prefix.get("img_path", "")

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        for sample in outputs:
            image = mmcv.imread(sample.img_path, channel_order="rgb")
            truth = sample.gt_sem_seg.data[0].cpu().numpy() if "gt_sem_seg" in sample else None
            picture, _ = comparison(image, sample.pred_sem_seg.data[0].cpu().numpy(), truth, self.class_names,
                                    self.colours)
            # Named by the image's path inside the image folder: a/x.jpg and b/x.jpg keep two pictures.
            relative = Path(os.path.relpath(sample.img_path, self.image_folder)).with_suffix(".png")
            path = self.show_dir / relative if ".." not in relative.parts else self.show_dir / relative.name
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(path, lambda temp: picture.save(temp, format="PNG"))


def resume_command(argv: list[str]) -> str:
    """The command that continues this run (torchrun with the same process count where it was used)."""
    arguments = [argument for argument in argv if argument not in ("--force", "--resume")] + ["--resume"]
    world_size = get_dist_info()[1]
    if world_size > 1 or "--launcher" in argv:
        start = ["torchrun", f"--nproc_per_node={world_size}", "eval.py"]
    else:
        start = ["python", "eval.py"]
    return shlex.join([*start, *arguments])


def precision_of(cfg: Config, device: str) -> str:
    precision = cfg.model.get("precision", "auto")
    if precision == "auto":
        return "fp16" if device == "cuda" else "fp32"
    return precision


def run_to_resume(args: argparse.Namespace, stem: str, identity: dict) -> RunFolder | None:
    """`--resume` without a stored run of these settings: the unfinished run of these settings on another image
    list (a bad file removed since), whose results for the images still there carry over; None when the work dir
    holds no unfinished run of this config; refused when the closest one has other settings."""
    others = [run for run in runs_of_config(args.work_dir, stem) if not run.finished]
    if not others:
        return None
    changes = {run: differences(run.read_description()["identity"], identity) for run in others}
    other = min(others, key=lambda run: len(changes[run]))  # the run this command most likely meant
    changed = changes[other]
    if image_list_changed(changed):
        return other
    shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
    raise InputError(f"nothing to resume for these settings: the unfinished run {other.path} differs ({shown}); "
                     "resume it with its own settings, or drop --resume to start a new run")


def metrics_record(args, cfg, device, identity, run, result, resumed, seconds) -> dict:
    """metrics.json: one schema for every run (docs/evaluation.md#metricsjson)."""
    stem = Path(args.config).stem
    method = cfg.model.get("method", DEFAULT_METHOD)
    backbone = declared_backbone(cfg)  # the config's, or --backbone's
    exported = "model" in identity["model"]  # --runtime onnx: the export stands in for the checkpoint
    checkpoint_sha256 = identity["model"]["model" if exported else "clip_path"]
    return dict(
        schema=METRICS_SCHEMA,
        config=args.config,
        config_name=stem,
        benchmark=cfg.get("benchmark"),
        method=method,
        published_as=cfg.get("published_as", method),
        anomaly_detector=cfg.model.get("anomaly_detector", "lof") if method == "scclip" else None,
        backbone=backbone,
        settings_of=declared_backbone(Config.fromfile(args.config)),
        overrides={key: value for key, value in args.cfg_options.items()},
        runtime="onnx" if exported else "torch",
        checkpoint=str(cfg.model.model if exported else cfg.model.clip_path),
        checkpoint_sha256=checkpoint_sha256,
        published_weights=backbone in BACKBONES and checkpoint_sha256 == BACKBONES[backbone].sha256,
        dataset=cfg.test_dataloader.dataset.type,
        data_root=identity["dataset"]["data_root"],
        num_images=identity["num_images"],
        evaluated=identity["num_images"] - resumed,
        resumed=resumed,
        metrics=result["summary"],
        per_class=result["per_class"],
        run=run.path.name,
        world_size=get_dist_info()[1],
        device=device,
        seconds=round(seconds, 1),
        scclip_version=scclip.__version__,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def finish(args, cfg, device, identity, run, result, resumed, seconds) -> None:
    """Write metrics.json and print the table and where things are (rank 0)."""
    if not is_main_process():
        return
    record = metrics_record(args, cfg, device, identity, run, result, resumed, seconds)
    text = json.dumps(record, indent=2, default=str) + "\n"
    write_atomically(run.metrics_path, lambda temp: temp.write_text(text, encoding="utf-8"))
    print(format_table(result["per_class"], result["summary"]))
    print(f"{record['config_name']}: mIoU {record['metrics']['mIoU']} on {record['num_images']} images "
          f"({record['evaluated']} evaluated now, {record['resumed']} resumed); results in {run.metrics_path}")


def check_data_command(cfg: Config) -> int:
    """--check-data: every problem in the split, exit 1 if there is any."""
    check_dataset(cfg.test_dataloader.dataset)
    split = list_split(cfg.test_dataloader.dataset)
    ignore_index = cfg.get("test_evaluator", {}).get("ignore_index", 255)
    print(f"checking {len(split.image_paths)} images and label maps of {cfg.test_dataloader.dataset.type}")
    problems = [*folder_problems(cfg.test_dataloader.dataset), *check_data(split, ignore_index)]
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        print(problem)
    if len(problems) > MAX_PROBLEMS_SHOWN:
        print(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more problems")
    if problems:
        print(f"{len(problems)} problems in {len(split.image_paths)} images: fix or replace those files", file=sys.stderr)
        return 1
    print(f"all {len(split.image_paths)} images and label maps are readable and consistent")
    return 0


def hold_run_folder(run: RunFolder, force: bool) -> FolderLock:
    """Take the run folder's lock for the whole job (scclip.locking.hold_for_job)."""
    return hold_for_job(run.path, "--force cannot start it over while that run writes to it: wait for it to end or "
                        "stop it" if force else "wait for it to end, or give another --work-dir")


def stored_count(run: RunFolder) -> int | None:
    """How many images the run has stored; None when its store cannot be read (then it is left alone)."""
    try:
        return run.stored_count()
    except (ScclipError, OSError):
        return None


def disk_full_error(run: RunFolder, num_images: int, argv: list[str]) -> InputError:
    """The one line for a run stopped by a full disk, once what it evaluated is stored."""
    done = stored_count(run)
    if not done:
        return InputError(f"no space left on the disk of {run.path} before any image was stored: "
                          "free space and run the command again")
    return InputError(f"no space left on the disk of {run.path}: {done} of {num_images} images are stored there; "
                      f"free space and resume with: {resume_command(argv)}")


def evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    """Run (or resume, or find finished) one benchmark config; returns the exit status."""
    device = choose_device(args.device, hide_gpus=True)
    cfg = load_config(args, device)
    check_output_folder(args.work_dir, "--work-dir")
    if args.show_dir:
        check_output_folder(args.show_dir, "--show-dir")
    if args.check_data:
        return check_data_command(cfg) if is_main_process() else 0
    start(args.launcher, device, "eval.py", cfg.env_cfg.get("dist_cfg"))
    stem = Path(args.config).stem
    dataset_cfg = cfg.test_dataloader.dataset
    check_dataset(dataset_cfg)
    split = list_split(dataset_cfg)
    identity = run_identity(cfg, split.relative_image_paths, precision_of(cfg, device))
    run = RunFolder.for_identity(args.work_dir, stem, identity)

    if run.finished and not args.force:
        if is_main_process():
            print(f"{stem}: this run is finished, its results are in {run.metrics_path} (--force runs it again)")
        return 0
    lock = hold_run_folder(run, args.force)
    try:
        return evaluate_in_folder(args, argv, cfg, device, split, identity, run)
    except Exception as error:
        failure = disk_full_error(run, len(split.image_paths), argv) if is_disk_full(error) else None
        if lock.held and stored_count(run) == 0:
            lock.remove_created()  # a run folder this command made and wrote no result into
        if failure is not None:
            raise failure from None
        raise
    finally:
        lock.release()


def evaluate_in_folder(args: argparse.Namespace, argv: list[str], cfg: Config, device: str, split: Split,
                       identity: dict, run: RunFolder) -> int:
    """The run itself, with its folder's lock held; returns the exit status."""
    stem = Path(args.config).stem
    dataset_cfg = cfg.test_dataloader.dataset
    if run.has_results() and not (args.resume or args.force):
        raise InputError(f"{run.path} holds an unfinished run of this command ({run.stored_count()} of "
                         f"{len(split.image_paths)} images stored): add --resume to continue it or --force to start over")
    earlier = run_to_resume(args, stem, identity) if args.resume and not run.has_results() else None
    if is_main_process():
        if args.force:
            run.clear()
        run.prepare(identity, dict(config=args.config, overrides=args.cfg_options, command=shlex.join(argv)))
        if earlier is not None:
            kept = carry_over(earlier, run, split.image_paths)
            before = earlier.read_description()["identity"]["num_images"]
            print(f"{stem}: the split has {len(split.image_paths)} images now, the unfinished run {earlier.path} had "
                  f"{before}: its {kept} results for images still in the split are kept, and this run scores the "
                  f"{len(split.image_paths)} images in {run.path} ({earlier.path} is left as it was)")
    barrier()

    stored = stored_results(run.results_dir, run.key, split.image_paths)
    pending = [index for index in range(len(split.image_paths)) if index not in stored]
    ignore_index = identity["ignore_index"]
    if not pending:  # everything was stored before the last session ended: only the metrics are left
        result = metrics_from_store(run.results_dir, run.key, split.image_paths, split.class_names)
        finish(args, cfg, device, identity, run, result, len(stored), 0.0)
        return 0
    check_label_sizes(split, pending)  # from the file headers: a label map of another size stops nothing midway
    if is_main_process():
        resumed = f", {len(stored)} already stored" if stored else ""
        print(f"{stem}: evaluating {len(pending)} of {len(split.image_paths)} images{resumed} in {run.path}")

    cfg.work_dir = str(run.path)
    cfg.experiment_name = f"{stem}-{next(RUNNER_NUMBERS)}"
    dataset_cfg.pipeline = with_checked_loaders(dataset_cfg.pipeline)
    cfg.test_cfg = dict(type="ResumableTestLoop", results_dir=str(run.results_dir), run_key=run.key,
                        ignore_index=ignore_index)
    start = time.perf_counter()
    with stop_on_signals(cfg.test_dataloader.get("batch_size", 1)) as stop:
        try:
            runner = QuietRunner.from_cfg(cfg)
            runner.register_hook(ProgressBarHook())
            if args.show_dir:
                runner.register_hook(ComparisonHook(Path(args.show_dir) / run.path.name))
            metrics = runner.test()
        except Exception as error:
            if stop.signum is None:
                raise
            interrupted = error if isinstance(error, Interrupted) else Interrupted(stop.signum)
            if is_main_process():
                done = len(stored_results(run.results_dir, run.key, split.image_paths))
                print(f"\ninterrupted: {done} of {len(split.image_paths)} images done, stored in {run.path}; "
                      f"resume with: {resume_command(argv)}", file=sys.stderr, flush=True)
            return interrupted.exit_code
    per_class = metrics.pop("per_class")
    finish(args, cfg, device, identity, run, dict(summary=metrics, per_class=per_class), len(stored),
           time.perf_counter() - start)
    return 0


def one_line(error: BaseException) -> str:
    """An error's message in one line, also when it crossed a DataLoader worker or an mmengine registry."""
    message = str(error).strip()
    lines = [line for line in message.splitlines() if line.strip()]
    if len(lines) > 1:  # re-raised from a DataLoader worker: the original message ends the traceback text
        message = re.sub(r"^[\w.]+Error: ", "", lines[-1])
    return re.sub(r"^class `\w+` in [\w/.]+\.py: ", "", message)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.summary is not None:
        print(summary_table(args.summary))
        return 0
    if args.compare is not None:
        from scclip.evaluation.compare import compare_command

        device = choose_device(args.device, hide_gpus=True) if args.gallery else "cpu"
        gallery_root = Path(args.show_dir) if args.show_dir else None  # None: beside the runs
        return compare_command(args.compare, args.gallery, args.json, gallery_root,
                               lambda command: load_config(parse_args(command), device))
    return evaluate(args, argv)


def command_main(argv: list[str] | None = None) -> int | str:
    """`scclip eval` and `python eval.py`: `main`, with a problem as one 'error: ...' line (for sys.exit)."""
    try:
        return main(argv)
    except ScclipError as error:
        return f"error: {one_line(error)}"
    except KeyboardInterrupt:  # a second Ctrl-C: what was stored is kept
        return "stopped at once; the images evaluated so far are stored: rerun with --resume"
