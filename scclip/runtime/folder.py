"""An exported model folder (`scclip export`), read and checked before anything runs from it.

model.json is a file the runtime did not write: every field it has is checked against `SCHEMA`
(type and range) when the folder is opened, the maths settings against `scclip.settings`, and
every file it lists against its SHA-256; the first problem is one CheckpointError naming the
field and what it must be, so no command that opens a folder runs from a half-valid one.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..bpe import CONTEXT_LENGTH
from ..errors import CheckpointError, InputError
from ..settings import MODEL_SETTINGS

MODEL_JSON = "model.json"
FORMAT_VERSION = 1
# The settings OnnxSegmenter reads from model.json's "settings" (the export writes them all).
RUNTIME_SETTINGS = ("logit_scale", "prob_thd", "area_thd", "pamr_steps", "pamr_stride", "slide_crop",
                    "slide_stride", "pad_to_patch")
# Bounds that keep a crafted model.json from asking for absurd memory: far beyond any CLIP export.
MAX_PATCH = 1024
MAX_SCALE = 8192
MAX_WIDTH = 65536


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- value checks: (test, what the value must be)

Check = tuple[Callable[[Any], bool], str]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def whole(low: int, high: int | None = None) -> Check:
    return (lambda value: _whole(value) and value >= low and (high is None or value <= high),
            f"a whole number from {low} to {high}" if high is not None else f"a whole number of at least {low}")


def number(above: float | None = None, low: float | None = None) -> Check:
    def test(value: Any) -> bool:
        return _number(value) and (above is None or value > above) and (low is None or value >= low)
    bound = f" above {above:g}" if above is not None else f" of at least {low:g}" if low is not None else ""
    return test, f"a finite number{bound}"


def text(pattern: str = r".+") -> Check:
    return (lambda value: isinstance(value, str) and re.fullmatch(pattern, value) is not None,
            "text" if pattern == r".+" else f"text matching {pattern}")


def optional(check: Check) -> Check:
    return (lambda value: value is None or check[0](value)), f"{check[1]} or null"


def list_of(check: Check, length: int | None = None) -> Check:
    def test(value: Any) -> bool:
        return (isinstance(value, list) and bool(value) and (length is None or len(value) == length)
                and all(check[0](item) for item in value))
    size = f"a list of {length} values" if length is not None else "a non-empty list"
    return test, f"{size}, each {check[1]}"


def _template(value: Any) -> bool:
    """A prompt template: text with one '{}' for the class name, that formats."""
    if not isinstance(value, str) or value.count("{}") != 1:
        return False
    try:
        value.format("x")
    except (IndexError, KeyError, ValueError):
        return False
    return True


SWITCH: Check = (lambda value: isinstance(value, bool), "true or false")
OBJECT: Check = (lambda value: isinstance(value, dict), "an object")
FILE_NAME: Check = (lambda value: isinstance(value, str) and value not in (".", "..") and Path(value).name == value
                    and "\\" not in value and "\0" not in value, "a plain file name of the folder")
SHA256: Check = text(r"[0-9a-f]{64}")
FILES: Check = (lambda value: isinstance(value, dict) and bool(value)
                and all(FILE_NAME[0](name) and SHA256[0](digest) for name, digest in value.items()),
                "an object of plain file names → their SHA-256 (64 hex digits)")
# What an image graph takes: the crops, and for ResCLIP also the query features (its first pass).
IMAGE_INPUTS: Check = (lambda value: value in (["images"], ["images", "queries"]),
                       '["images"] or ["images", "queries"]')
GRAPH_FIELDS = {"file": (True, FILE_NAME), "input": (False, text()), "outputs": (False, list_of(text())),
                "dynamic": (False, list_of(text()))}

# Every field an export writes (scclip/export.py): (required, check). The runtime reads the required
# ones; the others are records (parity, source, ...) that must still have their type when present.
SCHEMA: dict[str, tuple[bool, Check]] = {
    "method": (True, text(r"[A-Za-z0-9_-]{1,64}")),
    "settings": (True, OBJECT),
    "renormalise_scores": (False, SWITCH),
    "resize_through_input": (False, SWITCH),
    "patch_size": (True, whole(1, MAX_PATCH)),
    "feature_stride": (False, whole(1, MAX_PATCH)),  # pixels per dense feature (ProxyCLIP: its VFM's patch)
    "pad_multiple": (False, whole(0, MAX_SCALE)),  # windows padded to a multiple of it (0: never)
    "embed_dim": (True, whole(1, MAX_WIDTH)),
    "depth": (False, whole(1)),
    "resize_scale": (True, list_of(whole(1, MAX_SCALE), length=2)),
    "normalisation": (True, OBJECT),
    "normalisation.mean": (True, list_of(number(), length=3)),
    "normalisation.std": (True, list_of(number(above=0), length=3)),
    "normalisation.pixels": (False, text()),
    "prompt_templates": (True, list_of((_template, "text with one '{}' for the class name"))),
    "tokenizer": (True, OBJECT),
    "tokenizer.vocabulary": (True, FILE_NAME),
    "tokenizer.context_length": (True, whole(2, CONTEXT_LENGTH)),
    "tokenizer.lowercase": (False, SWITCH),
    "graphs": (True, OBJECT),
    **{f"graphs.{graph}": (True, OBJECT) for graph in ("image", "text")},
    **{f"graphs.{graph}.{name}": rule for graph in ("image", "text") for name, rule in GRAPH_FIELDS.items()},
    "graphs.image.inputs": (False, IMAGE_INPUTS),
    "precision": (True, text()),  # recorded by predict.py and eval: "fp32", "fp16", or a note of a later tool
    "opset": (False, whole(1)),
    "exporter": (False, text()),
    "parity": (False, OBJECT),
    "parity.image_features_max_difference": (False, number(low=0)),
    "parity.text_features_max_difference": (False, number(low=0)),
    "parity.checked_on": (False, list_of(list_of(whole(1), length=3))),
    "source": (False, OBJECT),
    "source.backbone": (False, text()),
    "source.clip_arch": (False, optional(text())),
    "source.checkpoint": (False, optional(text())),
    "source.sha256": (False, optional(SHA256)),
    "source.vfm": (False, text()),
    "source.vfm_sha256": (False, SHA256),
    "export_seconds": (False, number(low=0)),
    "files": (True, FILES),
}


def _lookup(meta: Mapping[str, Any], field: str) -> tuple[bool, Any]:
    """(present, value) of a dotted field; its parents are checked objects by then (SCHEMA's order)."""
    value: Any = meta
    for part in field.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_manifest(meta: Any, manifest: Path) -> None:
    """Raise CheckpointError at the first field of `meta` (model.json's content) that `SCHEMA` or
    `scclip.settings` refuses, naming the field and what it must be."""
    again = "export the model again"
    if not isinstance(meta, dict):
        raise CheckpointError(f"{manifest} is not a JSON object: {again}")
    if "format_version" not in meta:
        raise CheckpointError(f"{manifest} lacks format_version: {again}")
    if meta["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{manifest} is format {_shown(meta['format_version'])}, this runtime reads format "
                              f"{FORMAT_VERSION}: export the model again with this scclip")
    for field, (required, (test, must)) in SCHEMA.items():
        present, value = _lookup(meta, field)
        parent_present = "." not in field or _lookup(meta, field.rsplit(".", 1)[0])[0]
        if not present:
            if required and parent_present:
                raise CheckpointError(f"{manifest} lacks {field} ({must}): {again}")
            continue
        if not test(value):
            raise CheckpointError(f"{manifest}: {field} is {_shown(value)}, it must be {must}: {again}")
    settings = meta["settings"]
    for name in RUNTIME_SETTINGS:
        if name not in settings:
            raise CheckpointError(f"{manifest} lacks settings.{name}: {again}")
    for name, value in settings.items():
        if name == "method":  # the export records it twice
            if value != meta["method"]:
                raise CheckpointError(f"{manifest}: settings.method is {_shown(value)}, it must be the method "
                                      f"{_shown(meta['method'])}: {again}")
            continue
        setting = MODEL_SETTINGS.get(name)
        if setting is None or setting.kind in ("any", "method"):
            raise CheckpointError(f"{manifest}: settings.{_shown(name)} is not a maths setting: {again}")
        try:
            setting.check(value, f"settings.{name}={_shown(value)}")
        except InputError as error:
            raise CheckpointError(f"{manifest}: {error}: {again}") from None
    files = meta["files"]
    for name in (meta["graphs"]["image"]["file"], meta["graphs"]["text"]["file"], meta["tokenizer"]["vocabulary"]):
        if name not in files:
            raise CheckpointError(f"{manifest} lists no checksum for {name}: {again}")


# ---------------------------------------------------------------- external data in an ONNX graph

# Where TensorProtos lie in ONNX's protobuf messages (onnx.proto): message → {field number: message}.
# A tensor whose data is "external" names a file to read; scclip export never writes one.
_MESSAGES = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1


def _varint(data: memoryview, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("a truncated or malformed number")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def uses_external_data(data: memoryview, message: str = "model") -> bool:
    """Whether any tensor of a serialised ONNX message (a graph file's bytes) keeps its data in another file.

    A walk of the protobuf wire format through the messages that hold tensors (`_MESSAGES`), skipping
    everything else by its length, so that it needs neither the onnx package nor a copy of the weights.
    Raises ValueError on bytes that are not a protobuf message.
    """
    at, fields = 0, _MESSAGES[message]
    while at < len(data):
        key, at = _varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            if message == "tensor" and number == _TENSOR_DATA_LOCATION and value == _EXTERNAL:
                return True
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > len(data):
                raise ValueError("a field runs past the end")
            if message == "tensor" and number == _TENSOR_EXTERNAL_DATA:
                return True
            if number in fields and uses_external_data(data[at : at + length], fields[number]):
                return True
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
    return False


def check_graph_file(file: Path) -> None:
    """Refuse a graph whose tensors read data from other files, by a path that may lead anywhere (ONNX Runtime
    1.20 follows `..`, absolute paths and links out of the folder; 1.32 refuses them), or no protobuf at all."""
    import mmap

    try:
        with open(file, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                external = uses_external_data(view)
            finally:
                view.release()
    except (ValueError, RecursionError, OSError) as error:
        raise CheckpointError(f"{file} is not an ONNX graph ({error}): export the model again") from None
    if external:
        raise CheckpointError(f"{file} reads tensor data from other files (ONNX external data), which an exported "
                              "model never does and which may lie outside the model folder: export the model again")


@dataclass(frozen=True)
class ModelFolder:
    """The folder and its model.json (every field checked), every file it lists present and unchanged (SHA-256)."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ModelFolder":
        """Read and verify a model folder.

        Raises:
            CheckpointError: no such folder, no readable model.json, a field of another type or out of
                its range, a listed file missing or altered, or a model.json from another format version.
        """
        path = Path(path)
        manifest = path / MODEL_JSON
        if not path.is_dir():
            raise CheckpointError(f"model folder not found: {path} (make one with: scclip export --out {path} ...)")
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"), parse_constant=_reject_constant)
        except FileNotFoundError:
            raise CheckpointError(f"{path} holds no {MODEL_JSON}: it is not an exported model (scclip export)") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
            raise CheckpointError(f"{manifest} is unreadable ({' '.join(str(error).split())[:120]}): export the "
                                  "model again") from None
        check_manifest(meta, manifest)
        for name, expected in meta["files"].items():
            file = path / name
            if not file.is_file():
                raise CheckpointError(f"{file} is missing from the model folder: copy the whole folder, or export again")
            if sha256_of(file) != expected:
                raise CheckpointError(f"{file} differs from the file {MODEL_JSON} was written with (SHA-256): "
                                      "it is damaged or altered, copy the folder again or export again")
        for graph in ("image", "text"):
            check_graph_file(path / meta["graphs"][graph]["file"])
        return cls(path, meta)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta["settings"]
