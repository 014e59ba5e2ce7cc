"""Two finished runs on the same images, compared: is B's mIoU really different from A's?

`python eval.py --compare RUN_A RUN_B` reads each run's stored per-image areas (results/, see
store.py) and gives the mIoU of each, the difference B − A with a 95% paired bootstrap interval,
the per-class IoU differences, how many images each wins, and optionally (`--gallery N`) pictures
of the N images where the two differ most.

The bootstrap resamples images with replacement (`RESAMPLES` times, seeded, so a command prints the
same numbers every time), the same images for A and B (paired: both runs' errors on an image move
together), sums each resample's int64 areas and recomputes mIoU as mmseg's IoUMetric does: IoU per
class from the summed areas, classes with an empty union left out of the mean. The interval is the
2.5th and 97.5th percentile of the resampled differences.

An image's own score, used to count wins and to rank the gallery, is its mIoU over the classes its
labels contain: the same classes for both runs, so the two scores compare like with like (a class
that only one run predicts still costs that run, through the union of the classes it covers).
An image without labelled pixels has no score and counts as a tie.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, InputError
from ..fileio import write_atomically
from .runs import METRICS_FILE, RESULTS_FOLDER, RUN_FILE, differences
from .store import read_store

RESAMPLES = 2000
SEED = 0
CONFIDENCE = 95
# Resampled rows × images per block of the bootstrap (a float64 count matrix of 32 MiB).
BLOCK_ELEMENTS = 1 << 22
GALLERY_PICTURE = re.compile(r"^\d+-.+\.png$")
INTERSECT, UNION, PREDICTED, LABELLED = range(4)  # rows of a 4×C areas array (store.AREA_KINDS)
# A quiet mmengine logger per redraw (the latest one made is the one the model logs to).
LOGGER_NUMBERS = itertools.count(1)


@dataclass(frozen=True)
class RunAreas:
    """A finished run as stored on disk: its records and every image's areas, in dataset order."""

    folder: Path
    key: str
    record: dict  # metrics.json
    description: dict  # run.json
    class_names: tuple[str, ...]
    image_paths: tuple[str, ...]  # as the run read them
    relative_paths: tuple[str, ...]  # relative to the data root: how two runs' images are paired
    areas: np.ndarray  # images × 4 × classes, int64

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def method(self) -> str:
        return str(self.record.get("method") or "?")


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}: "
                         "give a run folder that eval.py wrote") from None
    if not isinstance(value, dict):
        raise InputError(f"{path} is not a record of eval.py: give a run folder that eval.py wrote")
    return value


def relative_to_root(path: str, data_root: str | None) -> str:
    """`path` relative to the run's data root, so that runs on copies of a dataset in other places pair up.

    The data root is recorded absolute; an image path is as the dataset listed it, absolute or relative to
    the folder eval.py ran in: then the data root's trailing folders are matched against its leading ones.
    """
    if not data_root:
        return os.path.normpath(path)
    if os.path.isabs(path):
        return os.path.relpath(path, data_root)
    parts, root_parts = Path(os.path.normpath(path)).parts, Path(data_root).parts
    for count in range(min(len(parts) - 1, len(root_parts)), 0, -1):
        if parts[:count] == root_parts[-count:]:
            return str(Path(*parts[count:]))
    return os.path.normpath(path)


def load_run(path: str | os.PathLike) -> RunAreas:
    """A finished run from its folder or its metrics.json.

    Raises:
        InputError: not a run folder of eval.py, not finished, or some image's result is missing.
        DatasetError: a results shard is damaged or belongs to another run (store.read_shard).
    """
    given = Path(path)
    if not given.exists():
        raise InputError(f"{given} does not exist: give a run folder of eval.py (WORK_DIR/<config>-<hash>) "
                         f"or its {METRICS_FILE}")
    folder = given.parent if given.is_file() else given
    if not (folder / RUN_FILE).is_file():
        raise InputError(f"{folder} is not a run folder of eval.py (no {RUN_FILE}): give WORK_DIR/<config>-<hash> "
                         f"or its {METRICS_FILE}")
    description = _read_json(folder / RUN_FILE)
    if not (folder / METRICS_FILE).is_file():
        raise InputError(f"{folder} is not a finished run (no {METRICS_FILE}): finish it first with eval.py's "
                         "command for it and --resume")
    record = _read_json(folder / METRICS_FILE)
    key, identity = description.get("key"), description.get("identity")
    if not isinstance(key, str) or not isinstance(identity, dict) or not isinstance(record.get("per_class"), dict):
        raise InputError(f"{folder} has a {RUN_FILE} or {METRICS_FILE} that eval.py did not write: "
                         "give a run folder that eval.py wrote")
    stored, _ = read_store(folder / RESULTS_FOLDER, key)
    num_images = int(identity.get("num_images", len(stored)))
    missing = [index for index in range(num_images) if index not in stored]
    if missing or not num_images:
        raise InputError(f"{folder}: {len(missing)} of {num_images} images have no stored result in "
                         f"{RESULTS_FOLDER}/: the run's per-image areas are needed; run it again with --force")
    class_names = tuple(record["per_class"])
    items = [stored[index] for index in range(num_images)]
    if any(item.areas.shape != (4, len(class_names)) for item in items):
        raise DatasetError(f"{folder}: the stored areas do not have the {len(class_names)} classes of its "
                           f"{METRICS_FILE}: the folder was edited by hand; run it again with --force")
    data_root = identity.get("dataset", {}).get("data_root")
    return RunAreas(
        folder=folder, key=key, record=record, description=description, class_names=class_names,
        image_paths=tuple(item.path for item in items),
        relative_paths=tuple(relative_to_root(item.path, data_root) for item in items),
        areas=np.stack([item.areas for item in items]),
    )


def pair_images(a: RunAreas, b: RunAreas) -> np.ndarray:
    """For each image of A, in A's order, its position in B.

    Raises:
        InputError: the runs scored different classes, or different image sets (how many differ, one named).
    """
    if a.class_names != b.class_names:
        raise InputError(f"{a.name} scores {len(a.class_names)} classes and {b.name} {len(b.class_names)} other "
                         "ones: compare two runs of the same benchmark")
    position = {path: index for index, path in enumerate(b.relative_paths)}
    in_a = set(a.relative_paths)
    only_a = [path for path in a.relative_paths if path not in position]
    only_b = [path for path in b.relative_paths if path not in in_a]
    if only_a or only_b:
        example, side = (only_a[0], a.name) if only_a else (only_b[0], b.name)
        count = len(only_a) + len(only_b)
        raise InputError(f"{a.name} ({len(a.relative_paths)} images) and {b.name} ({len(b.relative_paths)} images) "
                         f"are runs on different image sets: {count} image{'s are' if count > 1 else ' is'} in one "
                         f"run only, e.g. {example} (only in {side}); compare two runs of the same split")
    return np.array([position[path] for path in a.relative_paths], dtype=np.int64)


def mean_iou(intersect: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU (%) over the last axis as mmseg's IoUMetric: classes with an empty union are NaN and left out."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row without any class: NaN, said by the caller
        return 100 * np.nanmean(intersect / union, axis=-1)


def resample_indices(images: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """resamples × images indices drawn with replacement: row r is the r-th resampled set of images."""
    return np.random.default_rng(seed).integers(0, images, size=(resamples, images))


def bootstrap_differences(areas_a: np.ndarray, areas_b: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """mIoU(B) − mIoU(A) (points) of each resampled set of images (rows of `indices`), both runs on the same set.

    A row's summed areas are its image counts times the per-image areas: one matrix product per block of
    rows. In float64 it is exact, since every partial sum is an integer far below 2**53.
    """
    resamples, images = indices.shape
    areas = np.concatenate([areas_a[:, [INTERSECT, UNION]], areas_b[:, [INTERSECT, UNION]]], axis=1)
    flat = areas.reshape(images, -1).astype(np.float64)
    result = np.empty(resamples)
    block = max(1, BLOCK_ELEMENTS // images)
    for start in range(0, resamples, block):
        rows = indices[start:start + block]
        cells = np.arange(len(rows))[:, None] * images + rows
        counts = np.bincount(cells.ravel(), minlength=len(rows) * images).reshape(len(rows), images)
        totals = (counts.astype(np.float64) @ flat).reshape(len(rows), 4, -1)
        result[start:start + len(rows)] = (mean_iou(totals[:, 2], totals[:, 3])
                                           - mean_iou(totals[:, 0], totals[:, 1]))
    return result


def image_scores(areas: np.ndarray) -> np.ndarray:
    """Each image's mIoU (%) over the classes its labels contain; NaN for an image without labelled pixels."""
    labelled = areas[:, LABELLED] > 0
    iou = np.where(labelled, areas[:, INTERSECT] / np.where(labelled, areas[:, UNION], 1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100 * iou.sum(axis=1) / labelled.sum(axis=1)


@dataclass(frozen=True)
class Comparison:
    """The figures of A against B (mIoU in %, differences B − A in points)."""

    miou_a: float
    miou_b: float
    ci95: tuple[float, float]
    resamples: int
    seed: int
    per_class: dict[str, tuple[float | None, float | None]]  # class: (IoU of A, IoU of B), None: no union
    scores_a: np.ndarray  # per image, see image_scores
    scores_b: np.ndarray

    @property
    def difference(self) -> float:
        return self.miou_b - self.miou_a

    @property
    def images(self) -> int:
        return len(self.scores_a)

    @property
    def wins(self) -> dict[str, int]:
        """Images where A scores higher, B scores higher, and the rest (equal, or no labelled pixel)."""
        a, b = int(np.sum(self.scores_a > self.scores_b)), int(np.sum(self.scores_b > self.scores_a))
        return dict(a=a, b=b, tie=self.images - a - b)

    def class_difference(self, name: str) -> float | None:
        iou_a, iou_b = self.per_class[name]
        return None if iou_a is None or iou_b is None else iou_b - iou_a


def _iou_percent(intersect: float, union: float) -> float | None:
    return None if union == 0 else 100 * intersect / union


def compare_areas(areas_a: np.ndarray, areas_b: np.ndarray, class_names: Sequence[str],
                  resamples: int = RESAMPLES, seed: int = SEED) -> Comparison:
    """A against B from their per-image areas (images × 4 × classes, the same image in the same row)."""
    total_a, total_b = areas_a.sum(axis=0), areas_b.sum(axis=0)
    differences_ = bootstrap_differences(areas_a, areas_b, resample_indices(len(areas_a), resamples, seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # only if no resample has any class
        low, high = np.nanpercentile(differences_, [(100 - CONFIDENCE) / 2, (100 + CONFIDENCE) / 2])
    per_class = {name: (_iou_percent(total_a[INTERSECT, c], total_a[UNION, c]),
                        _iou_percent(total_b[INTERSECT, c], total_b[UNION, c]))
                 for c, name in enumerate(class_names)}
    return Comparison(
        miou_a=float(mean_iou(total_a[INTERSECT], total_a[UNION])),
        miou_b=float(mean_iou(total_b[INTERSECT], total_b[UNION])),
        ci95=(float(low), float(high)), resamples=resamples, seed=seed, per_class=per_class,
        scores_a=image_scores(areas_a), scores_b=image_scores(areas_b),
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 2)


def figures(comparison: Comparison) -> dict:
    """The `--json` record: mIoU (%) and differences B − A (points), rounded to 0.01 as in metrics.json."""
    return dict(
        miou_a=_rounded(comparison.miou_a),
        miou_b=_rounded(comparison.miou_b),
        difference=_rounded(comparison.difference),
        ci95=[_rounded(comparison.ci95[0]), _rounded(comparison.ci95[1])],
        resamples=comparison.resamples,
        images=comparison.images,
        wins=comparison.wins,
        per_class={name: _rounded(comparison.class_difference(name)) for name in comparison.per_class},
    )


def _cell(value: float | None, width: int = 7, sign: bool = False) -> str:
    if value is None or math.isnan(value):
        return f"{'—':>{width}}"
    return f"{value:>+{width}.2f}" if sign else f"{value:>{width}.2f}"


def verdict(comparison: Comparison) -> str:
    low, high = comparison.ci95
    if low > 0:
        return "B is better: the 95% interval lies above 0"
    if high < 0:
        return "A is better: the 95% interval lies below 0"
    return "no significant difference: the 95% interval contains 0"


def describe(run: RunAreas) -> str:
    return f"{run.name} ({run.method}, {run.record.get('config', '?')})"


def report(comparison: Comparison, a: RunAreas, b: RunAreas) -> str:
    """What the command prints: each run, the difference and its interval, wins, the per-class table."""
    changed = differences(a.description["identity"], b.description["identity"])
    shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
    width = max(len("class"), *map(len, comparison.per_class))
    low, high = comparison.ci95
    wins = comparison.wins
    lines = [
        f"A: {describe(a)}: mIoU {_cell(comparison.miou_a, 0)}",
        f"B: {describe(b)}: mIoU {_cell(comparison.miou_b, 0)}",
        f"settings that differ: {shown or 'none'}",
        f"B − A: {_cell(comparison.difference, 0, sign=True)} mIoU points, 95% interval "
        f"[{_cell(low, 0, sign=True)}, {_cell(high, 0, sign=True)}] (paired bootstrap over {comparison.images} images, "
        f"{comparison.resamples} resamples, seed {comparison.seed}): {verdict(comparison)}",
        f"images won (per-image mIoU over the classes in its labels): A {wins['a']}, B {wins['b']}, "
        f"tie {wins['tie']}",
        "",
        f"{'class':<{width}}  {'IoU A':>7}  {'IoU B':>7}  {'B − A':>7}",
    ]
    for name, (iou_a, iou_b) in comparison.per_class.items():
        lines.append(f"{name:<{width}}  {_cell(iou_a)}  {_cell(iou_b)}  "
                     f"{_cell(comparison.class_difference(name), sign=True)}")
    return "\n".join(lines)


def most_different(comparison: Comparison, areas_a: np.ndarray, areas_b: np.ndarray, count: int) -> list[int]:
    """Rows of the `count` images where A and B differ most: by the gap between their scores, then (images
    scored alike, e.g. both 0) by how many pixels per class their predictions differ in, then in order."""
    gap = np.nan_to_num(np.abs(comparison.scores_b - comparison.scores_a), nan=0.0)
    spread = np.abs(areas_b[:, PREDICTED] - areas_a[:, PREDICTED]).sum(axis=1)
    order = np.lexsort((np.arange(len(gap)), -spread, -gap))
    return [int(row) for row in order[:count]]


# -- the gallery: the predictions of a few images, redrawn from each run's recorded settings ------------------

ConfigLoader = Callable[[list[str]], object]  # a recorded eval.py command line → its config (mmengine Config)


@dataclass(frozen=True)
class Redrawn:
    """One image as a run predicted it again: the prediction and labels (H×W) and whether they give the
    areas the run stored (on a deterministic device they do)."""

    image_path: str
    prediction: np.ndarray
    truth: np.ndarray
    as_stored: bool


def recorded_command(run: RunAreas) -> list[str]:
    """The eval.py arguments the run was made with (run.json records them)."""
    command = run.description.get("command")
    if not isinstance(command, str):
        raise InputError(f"{run.folder / RUN_FILE} records no command: the gallery cannot redraw its predictions")
    return shlex.split(command)


def run_config(run: RunAreas, load_config: ConfigLoader):
    """The run's config as its own command made it, checked to still give the run's identity.

    Raises:
        InputError: the config, checkpoint, vocabulary or data changed since the run (what changed, named).
    """
    from .data import list_split
    from .runs import identity_key, run_identity

    cfg = load_config(recorded_command(run))
    precision = run.description["identity"]["model"]["precision"]
    cfg.model.precision = precision  # as the run resolved it on its device, e.g. fp16 for 'auto' on a GPU
    identity = run_identity(cfg, list_split(cfg.test_dataloader.dataset).relative_image_paths, precision)
    if identity_key(identity) != run.key:
        changed = differences(run.description["identity"], identity)
        shown = "; ".join(changed[:3]) or "the same settings hash differently"
        raise InputError(f"cannot redraw the predictions of {run.name}: its settings changed since it ran ({shown}); "
                         "run --compare from the folder eval.py ran in, without --gallery, or run it again")
    return cfg


def redraw(run: RunAreas, cfg, indices: Sequence[int]) -> list[Redrawn]:
    """The run's predictions of the images at `indices` (dataset order), with the model and pipeline of `cfg`."""
    import torch
    from mmengine.dataset import pseudo_collate
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    from .data import with_checked_loaders
    from .metrics import image_areas

    init_default_scope("mmseg")
    MMLogger.get_instance(f"scclip-compare-{next(LOGGER_NUMBERS)}", log_level="WARNING")
    dataset_cfg = dict(cfg.test_dataloader.dataset)
    dataset_cfg.update(pipeline=with_checked_loaders(dataset_cfg["pipeline"]), indices=list(indices))
    dataset = DATASETS.build(dataset_cfg)
    model = MODELS.build(cfg.model).to(cfg.model.device).eval()
    ignore_index = run.description["identity"].get("ignore_index", 255)
    drawn = []
    for position, index in enumerate(indices):
        with torch.no_grad():
            (sample,) = model.test_step(pseudo_collate([dataset[position]]))
        if sample.img_path != run.image_paths[index]:
            raise DatasetError(f"image {index} of {run.name} is {run.image_paths[index]} but the dataset now lists "
                               f"{sample.img_path} there: the split changed; run it again")
        prediction, truth = sample.pred_sem_seg.data, sample.gt_sem_seg.data
        areas = image_areas(prediction, truth, len(run.class_names), ignore_index)
        drawn.append(Redrawn(sample.img_path, prediction[0].cpu().numpy(), truth[0].cpu().numpy(),
                             bool(np.array_equal(areas, run.areas[index]))))
    return drawn


def gallery_name(rank: int, count: int, relative_path: str) -> str:
    """'03-<path without extension, folders joined by _>.png': the rank keeps names apart and in order."""
    stem = Path(relative_path).with_suffix("").as_posix().replace("/", "_")
    return f"{rank:0{len(str(count))}d}-{stem}.png"


def write_gallery(folder: Path, comparison: Comparison, a: RunAreas, b: RunAreas, order: np.ndarray,
                  rows: Sequence[int], load_config: ConfigLoader) -> list[Path]:
    """image | A | B | ground truth for each of `rows` (A's order), most different first; returns the files.

    Pictures of an earlier gallery of the same two runs are replaced.
    """
    import mmcv

    from ..visualize import comparison as draw_comparison
    from ..visualize import palette

    configs = (run_config(a, load_config), run_config(b, load_config))  # both checked before any prediction
    drawn_a = redraw(a, configs[0], list(rows))
    drawn_b = redraw(b, configs[1], [int(order[row]) for row in rows])
    colours = palette(len(a.class_names))
    differing = [item.image_path for item in (*drawn_a, *drawn_b) if not item.as_stored]
    if differing:
        print(f"note: {len(differing)} redrawn predictions differ from what their run scored, e.g. {differing[0]} "
              "(a nondeterministic device or precision): the pictures show the redrawn ones", file=sys.stderr)
    if folder.is_dir():
        for old in folder.iterdir():
            if GALLERY_PICTURE.match(old.name):
                old.unlink()
    paths = []
    for rank, (row, item_a, item_b) in enumerate(zip(rows, drawn_a, drawn_b), start=1):
        image = mmcv.imread(item_a.image_path, channel_order="rgb")
        titles = ("image", f"A ({a.method}) {_cell(comparison.scores_a[row], 0)}",
                  f"B ({b.method}) {_cell(comparison.scores_b[row], 0)}", "ground truth")
        picture, _ = draw_comparison(image, item_a.prediction, item_a.truth, list(a.class_names), colours,
                                     second=item_b.prediction, titles=titles)
        path = folder / gallery_name(rank, len(rows), a.relative_paths[row])
        paths.append(write_atomically(path, lambda temp, picture=picture: picture.save(temp, format="PNG")))
    return paths


def gallery_folder(a: RunAreas, b: RunAreas, root: Path | None) -> Path:
    """Where --gallery's pictures go: `root/compare-<A>-vs-<B>`, `root` being --show-dir when given, else the folder
    that holds run A (the runs' work dir, when they share one), never the folder the command happens to run in."""
    return (root if root is not None else a.folder.parent) / f"compare-{a.name}-vs-{b.name}"


def compare_command(runs: Sequence[str], gallery: int | None, json_path: str | None, gallery_root: Path | None,
                    load_config: ConfigLoader) -> int:
    """eval.py --compare: print the comparison, write --json's figures and --gallery's pictures (in `gallery_root`,
    None: beside the runs, see `gallery_folder`); exit status."""
    a, b = load_run(runs[0]), load_run(runs[1])
    order = pair_images(a, b)
    comparison = compare_areas(a.areas, b.areas[order], a.class_names)
    print(report(comparison, a, b))
    if json_path is not None:
        text = json.dumps(figures(comparison), indent=2) + "\n"
        write_atomically(json_path, lambda temp: temp.write_text(text, encoding="utf-8"))
        print(f"figures written to {json_path}")
    if gallery:
        rows = most_different(comparison, a.areas, b.areas[order], gallery)
        folder = gallery_folder(a, b, gallery_root)
        paths = write_gallery(folder, comparison, a, b, order, rows, load_config)
        print(f"gallery: {len(paths)} pictures (image | A | B | ground truth, most different first; titles give "
              f"each image's mIoU) in {folder}")
    return 0
