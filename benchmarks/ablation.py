"""SC-CLIP's ablation in one command: all on, the release's first commit, each component off in turn, vanilla CLIP.

    python benchmarks/ablation.py --datasets voc21 context60 [--backbone ViT-L/14] [--gpus 4] [-- eval.py arguments]
    ABLATION=1 DATASETS="voc21 context60" bash dist_test.sh          # the same, through dist_test.sh

Every variant runs SC-CLIP's published config of each benchmark (configs/cfg_<benchmark>.py; vanilla
CLIP: configs/vanilla/, the same settings with CLIP's own last block), with
`--cfg-options model.<switch>=False` for a switched-off component and `model.anomaly_detector=norm` for
the release's first commit (anomaly tokens by norm instead of LOF, docs/methods-and-ablations.md), each run in its own folder
`<work dir>/<variant>/<benchmark>/`. Runs that are already finished there are reused by eval.py. Then
one markdown table: a row per variant, a column per benchmark and their mean, and below them the
paper's numbers where they are known (`scclip.published`: SC-CLIP's own and the mean of vanilla CLIP;
the paper's per-component numbers are not available to us).

With one process per run (`--gpus 1`, the default) the evaluations run inside this script; with
`--gpus N` (N > 1) each is started with torchrun. Run it from the repository root, like eval.py.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from scclip.errors import InputError, ScclipError  # noqa: E402
from scclip.methods import SWITCHES  # noqa: E402
from scclip.benchmarks import BENCHMARKS  # noqa: E402
from scclip.published import published_benchmarks, published_record  # noqa: E402

BACKBONE_SUFFIXES = {"ViT-B/16": "", "ViT-L/14": "_vitl14"}
METRICS_FILE = "metrics.json"


@dataclass(frozen=True)
class Variant:
    """One row of the table: which configs, which overrides, and the published row it matches (if any)."""

    name: str
    label: str
    config_dir: str
    overrides: tuple[str, ...] = ()
    published_as: str | None = None


VARIANTS = (
    Variant("all_on", "SC-CLIP, all four components", "configs", published_as="scclip"),
    Variant("first_commit_norm", "first commit (norm)", "configs", ("model.anomaly_detector=norm",)),
    *(Variant(f"no_{switch}", f"without {switch.replace('_', ' ')}", "configs", (f"model.{switch}=False",))
      for switch in SWITCHES),
    Variant("vanilla", "vanilla CLIP", "configs/vanilla", published_as="vanilla"),
)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The script's options, and the eval.py arguments given after `--`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    eval_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description="SC-CLIP all on, as its release's first commit, with each "
                                                 "component off, and vanilla CLIP: one markdown table of mIoU.",
                                     allow_abbrev=False)
    parser.add_argument("--datasets", nargs="+", default=list(BENCHMARKS), choices=BENCHMARKS, metavar="BENCHMARK",
                        help=f"benchmarks to run (default: all eight: {' '.join(BENCHMARKS)})")
    parser.add_argument("--backbone", default="ViT-B/16", choices=BACKBONE_SUFFIXES)
    parser.add_argument("--gpus", type=int, default=1, help="processes per run (torchrun when more than 1)")
    parser.add_argument("--port", type=int, default=29500, help="torchrun master port")
    parser.add_argument("--work-dir", default="./work_dirs/ablation", help="runs go to WORK_DIR/<variant>/<benchmark>/")
    parser.add_argument("--table-only", action="store_true", help="print the table of the finished runs, run nothing")
    args = parser.parse_args(own)
    if args.gpus < 1:
        parser.error(f"--gpus {args.gpus}: give at least 1")
    return args, eval_args


def run_folder(work_dir: str | Path, variant: Variant, benchmark: str) -> Path:
    return Path(work_dir) / variant.name / benchmark


def evaluate(variant: Variant, benchmark: str, args: argparse.Namespace, eval_args: list[str]) -> bool:
    """Run eval.py for one variant and benchmark; False (with the reason printed) when it failed."""
    config = Path(variant.config_dir) / f"cfg_{benchmark}{BACKBONE_SUFFIXES[args.backbone]}.py"
    command = ["--config", str(config), "--work-dir", str(run_folder(args.work_dir, variant, benchmark)), *eval_args]
    if variant.overrides:
        command += ["--cfg-options", *variant.overrides]
    print(f"=== {variant.label}, {args.backbone} on {benchmark}: {config} {' '.join(variant.overrides)}", flush=True)
    if args.gpus > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.gpus}",
                    f"--master_port={args.port}", str(REPO_ROOT / "eval.py")]
        return subprocess.run([*launcher, *command, "--launcher", "pytorch"], check=False).returncode == 0
    from scclip.evaluation import command as eval_script  # here: only the in-process path needs eval.py's runner machinery

    try:
        return eval_script.main(command) == 0
    except ScclipError as error:
        print(f"error: {error}", file=sys.stderr)
        return False


def finished_miou(folder: Path) -> float | None:
    """mIoU of the newest finished run under `folder` (eval.py's metrics.json), None if there is none."""
    newest = None
    for path in sorted(folder.rglob(METRICS_FILE), key=lambda path: path.stat().st_mtime):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        metrics = record.get("metrics", record) if isinstance(record, dict) else {}
        if isinstance(metrics, dict) and isinstance(metrics.get("mIoU"), (int, float)):
            newest = float(metrics["mIoU"])
    return newest


def _row(label: str, cells: list[str]) -> str:
    return f"| {label} | {' | '.join(cells)} |"


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def paper_row(variant: Variant, backbone: str, datasets: list[str]) -> str | None:
    """The paper's numbers for a variant over `datasets`, or None where the paper gives none."""
    record = published_record(variant.published_as, backbone) if variant.published_as else None
    if record is None:
        return None
    published = record["miou"]
    cells = [_number(published.get(benchmark), 1) for benchmark in datasets]
    if set(datasets) == set(published_benchmarks()) and "mean" in published:
        cells.append(_number(published["mean"], 1))
    elif all(benchmark in published for benchmark in datasets):
        cells.append(_number(sum(published[benchmark] for benchmark in datasets) / len(datasets), 1))
    elif "mean" in published:
        cells.append(f"{published['mean']:.1f} (all eight)")
    else:
        cells.append("—")
    verified = "" if record["verified"] else ", unverified"
    return _row(f"paper{verified}: {variant.label}", cells)


def ablation_table(work_dir: str | Path, backbone: str, datasets: list[str]) -> str:
    """The markdown table of the finished runs under `work_dir`: variants × benchmarks and mean."""
    lines = [_row("variant", [*(BENCHMARKS[benchmark].title for benchmark in datasets), "mean"]),
             "|---|" + "---:|" * (len(datasets) + 1)]
    finished = False
    for variant in VARIANTS:
        results = [finished_miou(run_folder(work_dir, variant, benchmark)) for benchmark in datasets]
        finished |= any(value is not None for value in results)
        mean = None if None in results else sum(results) / len(results)
        lines.append(_row(variant.label, [_number(value) for value in (*results, mean)]))
    if not finished:
        raise InputError(f"no finished runs under {work_dir}/<variant>/<benchmark>: run benchmarks/ablation.py "
                         "without --table-only first")
    lines += [row for row in (paper_row(variant, backbone, datasets) for variant in VARIANTS) if row]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every variant on every benchmark (unless --table-only), print the table; 1 if a run failed."""
    args, eval_args = parse_args(argv)
    failed = []
    for variant in [] if args.table_only else VARIANTS:
        for benchmark in args.datasets:
            if not evaluate(variant, benchmark, args, eval_args):
                failed.append(f"{variant.name}/{benchmark}")
    try:
        table = ablation_table(args.work_dir, args.backbone, args.datasets)
    except ScclipError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"\nSC-CLIP ablation, {args.backbone}, mIoU (%):\n{table}")
    if failed:
        print(f"failed: {' '.join(failed)} (see the messages above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
