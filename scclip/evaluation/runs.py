"""Run folders keyed by what determines a run's predictions, so runs never share or overwrite one.

A run's identity is the config's predictive model settings (method included; the checkpoint and
vocabulary replaced by the SHA-256 of their contents), the test pipeline, the dataset (type, resolved
root, layout, the list of its images) and the evaluator's ignore index. Settings that only change
speed or where things are kept (device, batch sizes, caches: role 'not predictive' in
`scclip.settings`) are not part of it. The folder is `<work dir>/<config stem>-<hash>`;
`run.json` in it records the identity and how the run was asked for; while a run writes there, it
holds the folder's lock (`scclip.locking`, file `.scclip.lock`).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import os.path as osp
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..benchmarks import vocabulary_file
from ..clip.pretrained import MODEL_URLS
from ..errors import CheckpointError, InputError
from ..fileio import write_atomically
from ..settings import DEFAULTS, predictive
from ..text_cache import checkpoint_digest
from ..locking import FolderLock
from .store import ImageAreas, ShardWriter, read_store

# What may differ between an unfinished run and the command that resumes it: the images (some removed
# from the split, e.g. a bad file, or added); each image's stored result stays valid on its own.
IMAGE_LIST_KEYS = ("images_sha256", "num_images")

IDENTITY_FORMAT = 1
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
RESULTS_FOLDER = "results"
KEY_LENGTH = 10
DEFAULT_METHOD = DEFAULTS["method"]


def checkpoint_sha256(clip_path: str) -> str:
    """SHA-256 of the checkpoint a config names (a public CLIP name or a file)."""
    if clip_path in MODEL_URLS or Path(clip_path).is_file():
        return checkpoint_digest(clip_path)
    raise CheckpointError(f"model.clip_path={clip_path} is neither a file nor a CLIP model name "
                          f"({', '.join(MODEL_URLS)}): fix the path, e.g. --cfg-options model.clip_path=FILE")


def vocabulary_sha256(model: Mapping) -> str:
    if model.get("vocabulary") is not None:
        return hashlib.sha256(json.dumps(list(model["vocabulary"])).encode()).hexdigest()
    name_path = model.get("name_path")
    if not name_path:
        raise InputError("the config's model sets no vocabulary: give model.name_path=FILE or a benchmark's name "
                         "(e.g. voc21) in the config or with --cfg-options")
    return hashlib.sha256(vocabulary_file(name_path).read_bytes()).hexdigest()  # a file, or a shipped one by name


def _plain(value: Any) -> Any:
    """Config values as JSON-able plain data (tuples as lists, unknown objects as their repr)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def run_identity(cfg: Mapping, image_paths: Sequence[str], precision: str) -> dict:
    """Everything that determines a run's predictions and metrics, as plain data.

    Args:
        cfg: the config with the command line's overrides applied.
        image_paths: the split's images in dataset order, relative to the data root.
        precision: the precision the model will run at ('fp32', 'fp16', 'bf16'), after 'auto' is resolved.
    """
    model = {key: value for key, value in cfg["model"].items() if predictive(key)}
    model.setdefault("method", DEFAULT_METHOD)
    if "clip_path" in model:
        model["clip_path"] = checkpoint_sha256(str(model["clip_path"]))
    else:  # an exported model folder (scclip.evaluation.exported): its model.json holds every file's SHA-256
        model["model"] = hashlib.sha256((Path(model["model"]) / "model.json").read_bytes()).hexdigest()
    if model.get("vfm_path") is not None:  # ProxyCLIP's VFM file: named by its content, as the checkpoint
        model["vfm_path"] = checkpoint_digest(str(model["vfm_path"]))
    model["precision"] = precision
    if "name_path" in model or "vocabulary" in model:
        vocabulary = vocabulary_sha256(model)
        model.pop("name_path", None)
        model.pop("vocabulary", None)
        model["vocabulary_sha256"] = vocabulary
    dataset = copy.deepcopy(dict(cfg["test_dataloader"]["dataset"]))
    dataset["data_root"] = osp.abspath(dataset["data_root"]) if dataset.get("data_root") else None
    dataset.pop("indices", None)
    evaluator = cfg.get("test_evaluator", {})
    identity = dict(
        format=IDENTITY_FORMAT,
        model=model,
        dataset=dataset,
        images_sha256=hashlib.sha256("\n".join(image_paths).encode()).hexdigest(),
        num_images=len(image_paths),
        ignore_index=evaluator.get("ignore_index", 255) if isinstance(evaluator, Mapping) else 255,
    )
    return _plain(identity)


def identity_key(identity: Mapping) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}: the settings of an identity, one per dotted name."""
    if isinstance(value, Mapping):
        items: dict[str, Any] = {}
        for key, item in value.items():
            items.update(flatten(item, f"{prefix}{key}."))
        return items
    return {prefix.rstrip("."): value}


def differences(old: Mapping, new: Mapping) -> list[str]:
    """'name: old → new' for every setting that differs between two identities."""
    old_flat, new_flat = flatten(old), flatten(new)
    names = sorted(set(old_flat) | set(new_flat))
    return [f"{name}: {old_flat.get(name, '(unset)')} → {new_flat.get(name, '(unset)')}"
            for name in names if old_flat.get(name, "(unset)") != new_flat.get(name, "(unset)")]


@dataclass(frozen=True)
class RunFolder:
    """The folder of one run: `run.json`, `results/` (per-image areas), `metrics.json` once finished."""

    path: Path
    key: str

    @classmethod
    def for_identity(cls, work_dir: str | os.PathLike, config_stem: str, identity: Mapping) -> RunFolder:
        key = identity_key(identity)
        return cls(Path(work_dir) / f"{config_stem}-{key[:KEY_LENGTH]}", key)

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def results_dir(self) -> Path:
        return self.path / RESULTS_FOLDER

    @property
    def finished(self) -> bool:
        return self.metrics_path.is_file()

    def stored_count(self) -> int:
        return len(read_store(self.results_dir, self.key)[0])

    def has_results(self) -> bool:
        return any(self.results_dir.glob("*")) if self.results_dir.is_dir() else False

    def read_description(self) -> dict:
        return json.loads((self.path / RUN_FILE).read_text(encoding="utf-8"))

    def prepare(self, identity: Mapping, description: Mapping) -> None:
        """Create the folder with its `run.json`; refuse a folder whose stored identity differs."""
        run_file = self.path / RUN_FILE
        if run_file.is_file():
            stored = json.loads(run_file.read_text(encoding="utf-8"))
            if stored.get("key") != self.key or stored.get("identity") != identity:
                changed = differences(stored.get("identity", {}), identity)
                raise InputError(f"{self.path} holds another run ({'; '.join(changed[:3]) or 'different key'}): "
                                 "it was edited or copied by hand; move it away or use another --work-dir")
            return
        record = dict(key=self.key, identity=identity, **description)
        text = json.dumps(record, indent=2, default=str) + "\n"
        write_atomically(run_file, lambda temp: temp.write_text(text, encoding="utf-8"))

    def clear(self) -> None:
        """Forget stored results and metrics (for --force); run.json stays."""
        shutil.rmtree(self.results_dir, ignore_errors=True)
        self.metrics_path.unlink(missing_ok=True)


def runs_of_config(work_dir: str | os.PathLike, config_stem: str) -> list[RunFolder]:
    """The run folders of one config under `work_dir` (any settings)."""
    folders = []
    for run_file in sorted(Path(work_dir).glob(f"{config_stem}-*/{RUN_FILE}")):
        try:
            key = json.loads(run_file.read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError):
            continue
        folders.append(RunFolder(run_file.parent, key))
    return folders


def image_list_changed(changes: Sequence[str]) -> bool:
    """Whether `differences` between two identities are only in which images the split holds."""
    return bool(changes) and all(change.split(":")[0] in IMAGE_LIST_KEYS for change in changes)


def carry_over(source: RunFolder, target: RunFolder, image_paths: Sequence[str]) -> int:
    """Copy the results `source` stored for images of `image_paths` into `target`'s store (one new shard, each
    record at its image's index in `image_paths`); returns how many. `source` is left as it was.

    Raises:
        InputError: another live run writes to `source` (its lock is held meanwhile).
    """
    index_of = {path: index for index, path in enumerate(image_paths)}
    lock = FolderLock(source.path)
    lock.acquire("wait for it to end, then resume")
    try:
        kept = [item for item in read_store(source.results_dir, source.key)[0].values() if item.path in index_of]
        if not kept:
            return 0
        writer = ShardWriter(target.results_dir, target.key, len(image_paths), kept[0].areas.shape[1], rank=0)
        try:
            for item in sorted(kept, key=lambda item: index_of[item.path]):
                writer.append(ImageAreas(index_of[item.path], item.path, item.areas))
        finally:
            writer.close()
        return len(kept)
    finally:
        lock.release()
