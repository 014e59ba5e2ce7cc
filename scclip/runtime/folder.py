"""An exported model folder (`scclip export`), read and checked before anything runs from it."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

MODEL_JSON = "model.json"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("format_version", "method", "settings", "patch_size", "resize_scale", "normalisation",
                 "prompt_templates", "tokenizer", "graphs", "files")
# What an image graph takes: the crops, and for ResCLIP also the query features (its first pass).
IMAGE_INPUTS = (["images"], ["images", "queries"])


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelFolder:
    """The folder and its model.json, every file it lists present and unchanged (SHA-256)."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: str | os.PathLike) -> "ModelFolder":
        """Read and verify a model folder.

        Raises:
            CheckpointError: no such folder, no readable model.json, a listed file missing or altered,
                or a model.json from another format version.
        """
        path = Path(path)
        manifest = path / MODEL_JSON
        if not path.is_dir():
            raise CheckpointError(f"model folder not found: {path} (make one with: scclip export --out {path} ...)")
        try:
            meta = json.loads(manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path} holds no {MODEL_JSON}: it is not an exported model (scclip export)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{manifest} is unreadable ({' '.join(str(error).split())[:120]}): export the "
                                  "model again") from None
        missing = [key for key in REQUIRED_KEYS if not isinstance(meta, dict) or key not in meta]
        if missing:
            raise CheckpointError(f"{manifest} lacks {', '.join(missing)}: export the model again")
        if meta["format_version"] != FORMAT_VERSION:
            raise CheckpointError(f"{manifest} is format {meta['format_version']}, this runtime reads format "
                                  f"{FORMAT_VERSION}: export the model again with this scclip")
        if meta["graphs"]["image"].get("inputs", IMAGE_INPUTS[0]) not in IMAGE_INPUTS:
            raise CheckpointError(f"{manifest} gives the image graph the inputs {meta['graphs']['image']['inputs']!r}, "
                                  f"not one of {IMAGE_INPUTS}: export the model again")
        files = meta["files"]
        for name in (meta["graphs"]["image"]["file"], meta["graphs"]["text"]["file"], meta["tokenizer"]["vocabulary"]):
            if name not in files:
                raise CheckpointError(f"{manifest} lists no checksum for {name}: export the model again")
        for name, expected in files.items():
            file = path / name
            if Path(name).name != name:
                raise CheckpointError(f"{manifest} names {name!r}, not a file of the folder: export the model again")
            if not file.is_file():
                raise CheckpointError(f"{file} is missing from the model folder: copy the whole folder, or export again")
            if sha256_of(file) != expected:
                raise CheckpointError(f"{file} differs from the file {MODEL_JSON} was written with (SHA-256): "
                                      "it is damaged or altered, copy the folder again or export again")
        return cls(path, meta)

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def settings(self) -> dict[str, Any]:
        return self.meta["settings"]
