"""The table of finished runs: grouped by method and backbone, each beside its own published mIoU.

A run is comparable with the published number only when it evaluated the whole split with the
published weights and the config's own settings (overrides that `scclip.settings` calls harmless
or not predictive aside); any other run is listed with the reason.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from ..benchmarks import BENCHMARKS
from ..errors import InputError
from ..published import published_benchmarks, published_miou
from ..settings import DEFAULTS, harmless_override
from .runs import METRICS_FILE


def published_numbers(method: str, backbone: str) -> dict[str, float]:
    """Published mIoU per benchmark key (and 'mean' where published) of a method and backbone; {} if none."""
    return dict(published_miou(method, backbone) or {})


def not_comparable_reasons(run: dict) -> list[str]:
    """Why a run's mIoU cannot be set beside the published one (empty when it can)."""
    reasons = []
    benchmark = BENCHMARKS.get(run.get("benchmark") or "")
    full = benchmark.images if benchmark is not None else None
    if full is not None and run.get("num_images") != full:
        reasons.append(f"{run.get('num_images')} of {full} images")
    if not run.get("published_weights", False):
        reasons.append("not the published weights")
    changed = [name for name in run.get("overrides", {}) if not harmless_override(name)]
    if changed:
        reasons.append("settings changed: " + ", ".join(changed))
    if run.get("settings_of") not in (None, run.get("backbone")):
        reasons.append(f"the {run['settings_of']} settings of {run.get('config_name', 'its config')}")
    if run.get("anomaly_detector") not in (None, "lof"):
        reasons.append(f"anomaly_detector={run['anomaly_detector']}: the release's first commit, not the published setting")
    return reasons


def _cell(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def load_runs(work_dir: str | os.PathLike) -> list[dict]:
    runs = []
    for path in sorted(Path(work_dir).rglob(METRICS_FILE)):
        try:
            run = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(run, dict) and "metrics" in run:
            run["folder"] = str(path.parent)
            runs.append(run)
    return runs


def summary_table(work_dir: str | os.PathLike) -> str:
    """A markdown table of every finished run under `work_dir`, and a list of the runs it comes from."""
    runs = load_runs(work_dir)
    if not runs:
        raise InputError(f"no {METRICS_FILE} under {work_dir}: run eval.py or dist_test.sh with that work dir first")
    order = list(BENCHMARKS)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in runs:
        groups[(run.get("published_as", run.get("method", DEFAULTS["method"])), run.get("backbone", "ViT-B/16"))].append(run)
    lines = ["| method | backbone | dataset | mIoU (ours) | mIoU (published) | diff | images | note |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    notes: list[str] = []
    for (method, backbone), group in sorted(groups.items()):
        published = published_numbers(method, backbone)
        group.sort(key=lambda run: (order.index(run["benchmark"]) if run["benchmark"] in order else len(order),
                                    run["folder"]))
        comparable_by_benchmark: dict[str, float] = {}
        for run in group:
            ours = run["metrics"].get("mIoU")
            paper = published.get(run["benchmark"])
            published_benchmark = run["benchmark"] in BENCHMARKS
            reasons = not_comparable_reasons(run) if published_benchmark else []
            if not reasons and ours is not None:
                comparable_by_benchmark.setdefault(run["benchmark"], ours)
            diff = "—" if reasons or paper is None or ours is None else f"{ours - paper:+.2f}"
            note = f"not comparable: {'; '.join(reasons)}" if reasons else ""
            name = (BENCHMARKS[run["benchmark"]].title if published_benchmark
                    else Path(run.get("data_root") or run.get("config_name", "?")).name)
            lines.append(f"| {method} | {backbone} | {name} | {_cell(ours, 2)} | {_cell(paper, 1)} | {diff} | "
                         f"{run.get('num_images', '?')} | {note} |")
            overrides = " ".join(f"{key}={value}" for key, value in run.get("overrides", {}).items()) or "none"
            checkpoint = f"{run.get('checkpoint')} (sha256 {str(run.get('checkpoint_sha256', ''))[:12]})"
            notes.append(f"- {method} {backbone} {name}: {run.get('config', '?')} in {run['folder']}; "
                         f"checkpoint {checkpoint}; overrides: {overrides}")
        averaged = published_benchmarks()  # what the published means cover
        if set(averaged) <= set(comparable_by_benchmark):
            mean = sum(comparable_by_benchmark[key] for key in averaged) / len(averaged)
            paper = published.get("mean")
            diff = "—" if paper is None else f"{mean - paper:+.2f}"
            lines.append(f"| {method} | {backbone} | mean of {len(averaged)} | {mean:.2f} | {_cell(paper, 1)} | {diff} | | |")
    return "\n".join([*lines, "", "Runs:", *notes])
