"""Evaluate SC-CLIP on a benchmark (mIoU), on one or several GPUs or on the CPU.

    python eval.py --config configs/cfg_voc21.py [--work-dir work_dirs] [--show-dir vis]
    torchrun --nproc_per_node=N eval.py --config ... --launcher pytorch
    python eval.py --summary work_dirs          # markdown table of finished runs vs. the paper

Each run writes `<work-dir>/<config name>/metrics.json`; mmseg's IoUMetric logs the per-class table.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import mmcv
import numpy as np
import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.dist import get_dist_info, is_main_process
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmengine.utils import ProgressBar

from scclip.datasets import check_dataset
from scclip.errors import InputError, ScclipError
from scclip.fileio import write_atomically
from scclip.visualize import overlay

# Benchmarks in the paper's order, and its published mIoU (SPEC §4; L/14 lacks three per-dataset numbers).
BENCHMARKS = {
    "voc21": "VOC21", "context60": "Context60", "coco_object": "COCO-Object", "voc20": "VOC20",
    "context59": "Context59", "coco_stuff164k": "COCO-Stuff", "city_scapes": "Cityscapes", "ade20k": "ADE20K",
}
PAPER_MIOU = {
    "ViT-B/16": dict(voc21=64.6, context60=36.8, coco_object=37.7, voc20=84.3, context59=40.1,
                     coco_stuff164k=26.6, city_scapes=41.0, ade20k=20.1, mean=43.9),
    "ViT-L/14": dict(voc21=65.0, context60=36.9, coco_stuff164k=26.9, city_scapes=41.3, ade20k=21.7, mean=45.2),
}
L14_SUFFIX = "_vitl14"
METRICS_FILE = "metrics.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate SC-CLIP on a benchmark config (mIoU).")
    parser.add_argument("--config", help="benchmark config, e.g. configs/cfg_voc21.py")
    parser.add_argument("--work-dir", "--workdir", dest="work_dir", default="./work_dirs",
                        help="results go to WORK_DIR/<config name>/ (logs and metrics.json)")
    parser.add_argument("--show-dir", help="save input | prediction | ground truth pictures here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when a GPU is visible, else cpu")
    parser.add_argument("--launcher", choices=("none", "pytorch", "slurm", "mpi"), default="none",
                        help="distributed launcher (pytorch = torchrun)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction, default={},
                        help="override config entries, e.g. model.clip_path=FILE "
                             "test_dataloader.dataset.data_root=DIR")
    parser.add_argument("--summary", metavar="WORK_DIR",
                        help="print the markdown table of the finished runs under WORK_DIR and exit")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.summary is None and args.config is None:
        parser.error("give --config (to evaluate) or --summary WORK_DIR (to tabulate finished runs)")
    return args


def choose_device(requested: str | None) -> str:
    """'cuda' or 'cpu'; a CPU run on a GPU machine hides the GPUs, as mmengine documents."""
    if requested == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise InputError("--device cuda was given but no CUDA GPU is visible; use --device cpu")
    return "cpu"


def init_distributed(launcher: str, device: str) -> None:
    """Start the process group before the Runner does, so a CPU run gets gloo and no CUDA calls."""
    if launcher == "none" or dist.is_initialized():
        return
    if launcher != "pytorch":
        if device == "cpu":
            raise InputError(f"--launcher {launcher} needs CUDA; on the CPU use torchrun with --launcher pytorch")
        return  # mmengine initialises slurm and mpi itself (backend from env_cfg)
    if "RANK" not in os.environ:
        raise InputError("--launcher pytorch needs torchrun: torchrun --nproc_per_node=N eval.py ... --launcher pytorch")
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")


def load_config(args: argparse.Namespace, device: str) -> Config:
    """The config with the command line applied: overrides, work dir, device, launcher."""
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = str(Path(args.work_dir) / Path(args.config).stem)
    cfg.model.device = device
    cfg.env_cfg.setdefault("dist_cfg", {})["backend"] = "nccl" if device == "cuda" else "gloo"
    if device == "cpu":
        cfg.env_cfg.cudnn_benchmark = False
    return cfg


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
    """Saves `<show_dir>/<image name>.png`: input | prediction | ground truth, side by side.

    mmseg's SegVisualizationHook draws only ground truth | prediction and only on rank 0, so every
    rank here draws the images it evaluated itself.
    """

    priority = "LOW"

    def __init__(self, show_dir: str) -> None:
        self.show_dir = Path(show_dir)

    def before_test(self, runner) -> None:
        self.show_dir.mkdir(parents=True, exist_ok=True)
        self.palette = np.array(runner.test_dataloader.dataset.metainfo["palette"], dtype=np.uint8)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        for sample in outputs:
            image = mmcv.imread(sample.img_path, channel_order="rgb")
            panels = [image, overlay(image, sample.pred_sem_seg.data[0].cpu().numpy(), self.palette)]
            if "gt_sem_seg" in sample:
                panels.append(overlay(image, sample.gt_sem_seg.data[0].cpu().numpy(), self.palette))
            picture = np.concatenate(panels, axis=1)
            mmcv.imwrite(mmcv.rgb2bgr(picture), str(self.show_dir / f"{Path(sample.img_path).stem}.png"))


def evaluate(args: argparse.Namespace) -> dict:
    """Run one benchmark config; returns its metrics (on every rank)."""
    device = choose_device(args.device)
    init_distributed(args.launcher, device)
    cfg = load_config(args, device)
    num_images = check_dataset(cfg.test_dataloader.dataset)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(ProgressBarHook())
    if args.show_dir:
        runner.register_hook(ComparisonHook(args.show_dir))
    start = time.perf_counter()
    metrics = runner.test()
    seconds = time.perf_counter() - start
    if is_main_process():
        path = Path(cfg.work_dir) / METRICS_FILE
        record = dict(
            config=Path(args.config).stem,
            dataset=cfg.test_dataloader.dataset.type,
            clip_path=str(cfg.model.clip_path),
            num_images=num_images,
            world_size=get_dist_info()[1],
            device=device,
            seconds=round(seconds, 1),
            metrics={key: float(value) for key, value in metrics.items()},
        )
        write_atomically(path, lambda temp: temp.write_text(json.dumps(record, indent=2) + "\n"))
        print(f"mIoU {metrics['mIoU']:.2f} on {num_images} images, written to {path}")
    return metrics


def split_config_name(name: str) -> tuple[str, str]:
    """'cfg_voc21_vitl14' → ('voc21', 'ViT-L/14'); configs without the L/14 suffix are ViT-B/16."""
    stem = name.removeprefix("cfg_")
    if stem.endswith(L14_SUFFIX):
        return stem.removesuffix(L14_SUFFIX), "ViT-L/14"
    return stem, "ViT-B/16"


def table_row(backbone: str, dataset: str, ours: float, paper: float | None) -> str:
    if paper is None:
        return f"| {backbone} | {dataset} | {ours:.2f} | — | — |"
    return f"| {backbone} | {dataset} | {ours:.2f} | {paper:.1f} | {ours - paper:+.2f} |"


def summary_table(work_dir: str | Path) -> str:
    """A markdown table of every finished run under `work_dir`: our mIoU, the paper's, the difference."""
    runs: dict[str, dict[str, float]] = {}
    for path in sorted(Path(work_dir).rglob(METRICS_FILE)):
        result = json.loads(path.read_text())
        benchmark, backbone = split_config_name(result["config"])
        runs.setdefault(backbone, {})[benchmark] = result["metrics"]["mIoU"]
    if not runs:
        raise InputError(f"no {METRICS_FILE} under {work_dir}: run eval.py or dist_test.sh with that work dir first")
    order = list(BENCHMARKS)
    lines = ["| backbone | dataset | mIoU (ours) | mIoU (paper) | diff |", "|---|---|---:|---:|---:|"]
    for backbone in (backbone for backbone in PAPER_MIOU if backbone in runs):
        results, paper = runs[backbone], PAPER_MIOU[backbone]
        for benchmark in sorted(results, key=lambda key: order.index(key) if key in order else len(order)):
            lines.append(table_row(backbone, BENCHMARKS.get(benchmark, benchmark), results[benchmark],
                                   paper.get(benchmark)))
        if set(BENCHMARKS) <= set(results):
            mean = sum(results[key] for key in BENCHMARKS) / len(BENCHMARKS)
            lines.append(table_row(backbone, "mean of 8", mean, paper.get("mean")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.summary is not None:
        print(summary_table(args.summary))
    else:
        evaluate(args)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ScclipError as error:
        sys.exit(f"error: {error}")
