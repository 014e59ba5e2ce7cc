"""Make COCO-Object label maps (background + 80 things) from COCO-Stuff 164k (docs/method.md#published-settings).

    python ./datasets/cvt_coco_object.py PATH_TO_COCO_STUFF164K -o PATH_TO_COCO_OBJECT

Reads `<coco_stuff>/annotations/{train2017,val2017}/`: the raw COCO-Stuff maps `<id>.png`
(stuffthingmaps_trainval2017.zip) or, where those are gone, mmseg's `<id>_labelTrainIds.png`.
Writes `<out>/annotations/<split>/<id>_instanceTrainIds.png` (stuff and unlabelled → 0, things →
1…80, by the table beside this script) and links `<out>/images` to the COCO-Stuff images, so
`<out>` is a complete COCO-Object root. Files already converted are skipped, so an interrupted run
resumes; `--check` verifies a finished conversion.
"""
import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from mmengine.utils import track_parallel_progress, track_progress
from PIL import Image

TABLE_PATH = Path(__file__).with_name("coco_stuff_to_coco_object.json")
SPLITS = ("train2017", "val2017")
TRAIN_IDS_SUFFIX = "_labelTrainIds.png"
OUTPUT_SUFFIX = "_instanceTrainIds.png"
IGNORE = 255


class ConversionError(Exception):
    """The input tree or a finished conversion is not what it should be."""


def lookup_tables(table_path: Path = TABLE_PATH) -> dict[str, np.ndarray]:
    """256-entry uint8 lookups from raw COCO-Stuff ids and from mmseg's train ids to COCO-Object ids.

    mmseg numbers the 171 used raw ids 0…170 in ascending order (its `_labelTrainIds.png`), so one
    table serves both encodings. Ids the table lacks never occur in COCO-Stuff; they map to 255.
    """
    table = {int(raw_id): int(object_id) for raw_id, object_id in json.loads(table_path.read_text()).items()}
    from_raw = np.full(256, IGNORE, dtype=np.uint8)
    from_raw[list(table)] = list(table.values())
    from_train_ids = np.full(256, IGNORE, dtype=np.uint8)
    used_raw_ids = sorted(raw_id for raw_id in table if raw_id != IGNORE)
    from_train_ids[: len(used_raw_ids)] = from_raw[used_raw_ids]
    from_train_ids[IGNORE] = from_raw[IGNORE]
    return {"raw": from_raw, "train_ids": from_train_ids}


def find_label_maps(split_dir: Path) -> dict[str, tuple[Path, str]]:
    """Image id → (label map, encoding) in one split folder; a raw map wins over a train-id map."""
    sources: dict[str, tuple[Path, str]] = {}
    for path in sorted(split_dir.glob("*.png")):
        if path.name.endswith(OUTPUT_SUFFIX) or path.name.startswith("."):
            continue
        if path.name.endswith(TRAIN_IDS_SUFFIX):
            sources.setdefault(path.name[: -len(TRAIN_IDS_SUFFIX)], (path, "train_ids"))
        else:
            sources[path.stem] = (path, "raw")
    return sources


def plan(coco_stuff: Path, out_dir: Path, splits: list[str] | None) -> list[tuple[Path, str, Path]]:
    """(label map, encoding, output path) for every image of the requested (default: present) splits."""
    annotations = coco_stuff / "annotations"
    if not annotations.is_dir():
        raise ConversionError(
            f"{annotations} not found: give the COCO-Stuff 164k root, which holds annotations/train2017 "
            "and annotations/val2017 (see docs/evaluation.md#datasets)")
    if splits is None:
        splits = [split for split in SPLITS if (annotations / split).is_dir()]
        if not splits:
            raise ConversionError(f"neither {annotations / SPLITS[0]} nor {annotations / SPLITS[1]} exists")
    tasks = []
    for split in splits:
        split_dir = annotations / split
        if not split_dir.is_dir():
            raise ConversionError(f"{split_dir} not found: drop --splits {split} or unpack that split there")
        sources = find_label_maps(split_dir)
        if not sources:
            raise ConversionError(
                f"no COCO-Stuff label maps (<id>.png or <id>{TRAIN_IDS_SUFFIX}) in {split_dir}")
        target_dir = out_dir / "annotations" / split
        tasks += [(path, encoding, target_dir / f"{image_id}{OUTPUT_SUFFIX}")
                  for image_id, (path, encoding) in sources.items()]
    return tasks


def convert_one(task: tuple[Path, str, Path], tables: dict[str, np.ndarray]) -> bool:
    """Write one COCO-Object map atomically (temp file, then rename); False when it already exists."""
    source, encoding, target = task
    if target.exists():
        return False
    labels = tables[encoding][np.asarray(Image.open(source))]
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    Image.fromarray(labels).save(temp, format="PNG")
    os.replace(temp, target)
    return True


def check_one(task: tuple[Path, str, Path], tables: dict[str, np.ndarray]) -> str | None:
    """None when the output exists and equals the mapped input; else what is wrong with it."""
    source, encoding, target = task
    if not target.exists():
        return f"missing {target}"
    expected = tables[encoding][np.asarray(Image.open(source))]
    found = np.asarray(Image.open(target))
    if found.shape != expected.shape or not np.array_equal(found, expected):
        return f"wrong labels in {target}"
    return None


class _Worker:
    """A picklable `task → result` for the progress helpers (the tables travel once per process)."""

    def __init__(self, function, tables: dict[str, np.ndarray]) -> None:
        self.function, self.tables = function, tables

    def __call__(self, task):
        return self.function(task, self.tables)


def run_tasks(function, tasks: list, tables: dict[str, np.ndarray], nproc: int) -> list:
    """Run `function(task, tables)` over tasks with a progress bar, in `nproc` processes."""
    worker = _Worker(function, tables)
    if nproc > 1 and len(tasks) > 1:
        return track_parallel_progress(worker, tasks, nproc=min(nproc, len(tasks)), chunksize=16)
    return track_progress(worker, tasks)


def link_images(coco_stuff: Path, out_dir: Path) -> str:
    """Make `<out>/images` point at the COCO-Stuff images; say what was done."""
    images, source = out_dir / "images", (coco_stuff / "images").resolve()
    if images.exists() or images.is_symlink():
        return f"kept existing {images}"
    if not source.is_dir():
        return f"note: {source} not found; put the COCO val2017 images in {images / 'val2017'}"
    try:
        images.symlink_to(source, target_is_directory=True)
    except OSError as error:
        return f"note: could not link {images} → {source} ({error}); copy or link the images there"
    return f"linked {images} → {source}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("coco_stuff", type=Path, help="COCO-Stuff 164k root (holds annotations/ and images/)")
    parser.add_argument("-o", "--out-dir", type=Path, default=None,
                        help="COCO-Object root to write (default: the COCO-Stuff root itself)")
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=None,
                        help="splits to convert (default: those present; the benchmark needs val2017)")
    parser.add_argument("--nproc", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--check", action="store_true", help="verify a finished conversion instead of converting")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = args.out_dir or args.coco_stuff
    tables = lookup_tables()
    tasks = plan(args.coco_stuff, out_dir, args.splits)
    if args.check:
        problems = [problem for problem in run_tasks(check_one, tasks, tables, args.nproc) if problem]
        if problems:
            raise ConversionError(f"{len(problems)} of {len(tasks)} COCO-Object maps are missing or wrong, "
                                  f"e.g. {problems[0]}; rerun the conversion (finished files are kept)")
        print(f"\nchecked {len(tasks)} COCO-Object maps in {out_dir / 'annotations'}: all present and correct")
        return 0
    for target_dir in {target.parent for _, _, target in tasks}:
        target_dir.mkdir(parents=True, exist_ok=True)
        for stale in target_dir.glob(f".*{OUTPUT_SUFFIX}.*.tmp"):
            stale.unlink()
    written = sum(run_tasks(convert_one, tasks, tables, args.nproc))
    print(f"\nwrote {written} COCO-Object maps, kept {len(tasks) - written} finished ones, "
          f"in {out_dir / 'annotations'}")
    if out_dir.resolve() != args.coco_stuff.resolve():
        print(link_images(args.coco_stuff, out_dir))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConversionError as error:
        sys.exit(f"error: {error}")
