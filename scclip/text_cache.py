"""An on-disk cache of text query features, so a vocabulary is encoded once per checkpoint.

Encoding a vocabulary runs the text tower over every name × template (thousands of prompts);
the result depends only on the checkpoint, the queries, the templates and how they were
encoded, so it is stored under a key made of exactly those. Entries are written to a temporary
file and renamed into place, and every read is validated (key, shape, dtype, finite values,
SHA-256 of the data): a corrupt or half-written entry is ignored and rewritten, never trusted.
Processes that need the same missing entry at once (torchrun ranks, parallel jobs) take turns on
a lock file beside it: the first encodes and stores, the others then read what it stored.

The folder is `$SCCLIP_CACHE_DIR` (read on each use), by default `~/.cache/scclip`. The entries
together stay within `$SCCLIP_TEXT_CACHE_MB` megabytes (read on each use, default
`DEFAULT_LIMIT_MB`): after each write the least recently used entries (a hit marks an entry used)
are removed, so no stream of new vocabularies, such as a public web page's requests, can fill a
disk. The lock files are one per two-hex-digit key prefix (at most 256), for the same reason.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from mmengine.logging import MMLogger

from .clip.pretrained import MODEL_URLS, expected_sha256, sha256_of
from .errors import InputError
from .fileio import write_atomically

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; concurrent builders each encode, the last rename wins
    fcntl = None

CACHE_DIR_VARIABLE = "SCCLIP_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/scclip"
LIMIT_VARIABLE = "SCCLIP_TEXT_CACHE_MB"
# A laptop's share: about 500 vocabularies of 500 names (CLIP ViT-B's 512-wide features), thousands of usual ones.
DEFAULT_LIMIT_MB = 512
# Bump when the way query features are computed changes, so older entries stop matching.
FORMAT_VERSION = 1


def cache_dir() -> Path:
    """The cache folder: `$SCCLIP_CACHE_DIR` when set, else `~/.cache/scclip`."""
    return Path(os.environ.get(CACHE_DIR_VARIABLE) or DEFAULT_CACHE_DIR).expanduser()


def cache_limit_bytes() -> int:
    """The entries' size limit: `$SCCLIP_TEXT_CACHE_MB` megabytes when set, else `DEFAULT_LIMIT_MB`."""
    text = os.environ.get(LIMIT_VARIABLE) or str(DEFAULT_LIMIT_MB)
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = float("nan")
    if not megabytes >= 0 or megabytes == float("inf"):
        raise InputError(f"{LIMIT_VARIABLE}={text!r} is not a size in megabytes: set a number such as "
                         f"{DEFAULT_LIMIT_MB} (0 keeps nothing on disk)")
    return int(megabytes * 2**20)


def _tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


def file_digest(path: str | os.PathLike, root: Path | None = None) -> str:
    """SHA-256 of a file, remembered in the cache folder by (absolute path, size, mtime_ns).

    Checkpoints are hundreds of megabytes (hashing one costs up to seconds, and more from a slow
    disk), so it is done once per version of the file. A memo that does not match the file's current size and modification
    time, or cannot be read, is recomputed and rewritten.
    """
    path = Path(path).resolve()
    stat = path.stat()
    identity = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    memo = (root or cache_dir()) / "file_digests" / f"{hashlib.sha256(str(path).encode()).hexdigest()}.json"
    try:
        record = json.loads(memo.read_text(encoding="utf-8"))
        digest = record.pop("sha256")
        if record == identity and isinstance(digest, str) and len(digest) == 64:
            return digest
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass
    digest = sha256_of(path)
    try:
        text = json.dumps({**identity, "sha256": digest})
        write_atomically(memo, lambda temp: temp.write_text(text, encoding="utf-8"))
    except InputError as error:
        MMLogger.get_current_instance().warning(f"could not remember the SHA-256 of {path} in {memo.parent}: {error}")
    return digest


def checkpoint_digest(name_or_path: str | os.PathLike, root: Path | None = None) -> str:
    """SHA-256 of a CLIP checkpoint: read off the download address for a public name, else hashed."""
    if isinstance(name_or_path, str) and name_or_path in MODEL_URLS:
        return expected_sha256(MODEL_URLS[name_or_path])
    return file_digest(name_or_path, root)


def cache_key(
    checkpoint: str, queries: Sequence[str], templates: Sequence[str], settings: Mapping[str, Any]
) -> str:
    """Hex key of one vocabulary's features: everything the numbers depend on, hashed together.

    `settings` holds how the features were computed (precision, device type, batch size, ...);
    the torch version is added because kernels may change the last bits between releases.
    """
    description = {
        "format": FORMAT_VERSION,
        "torch": torch.__version__,
        "checkpoint_sha256": checkpoint,
        "queries": list(queries),
        "templates": list(templates),
        "settings": {name: str(value) for name, value in sorted(settings.items())},
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


class TextFeatureCache:
    """Query features stored as `<folder>/text_features/<key>.pt`.

    Args:
        root: the cache folder; None = `$SCCLIP_CACHE_DIR`, else `~/.cache/scclip`, read now.
        limit_bytes: the entries' size limit; None = `$SCCLIP_TEXT_CACHE_MB` (`cache_limit_bytes`), read now.
    """

    def __init__(self, root: str | os.PathLike | None = None, limit_bytes: int | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else cache_dir()
        self.limit_bytes = cache_limit_bytes() if limit_bytes is None else limit_bytes

    def entry_path(self, key: str) -> Path:
        return self.root / "text_features" / f"{key}.pt"

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[None]:
        """Hold the lock file of the entry's key prefix (`locks/<key[:2]>.lock`: at most 256 files, kept, since
        removing one would let two holders coexist; builders of two keys rarely share one).

        The kernel releases the lock when its holder dies, so a killed builder never blocks the others.
        """
        path = self.root / "locks" / f"{key[:2]}.lock"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+b")
        except OSError:  # a read-only cache folder: encode without the lock, storing will warn
            yield
            return
        with handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            yield

    def load(self, key: str, num_queries: int) -> torch.Tensor | None:
        """The stored Q×D float32 features of `key`, or None when absent or not valid."""
        path = self.entry_path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            features = entry["features"]
            valid = (
                entry["key"] == key
                and isinstance(features, torch.Tensor)
                and features.dtype == torch.float32
                and features.ndim == 2
                and features.shape[0] == num_queries
                and bool(torch.isfinite(features).all())
                and entry["sha256"] == _tensor_sha256(features)
            )
        except Exception:  # a damaged file can make torch.load raise almost anything
            valid = False
        if not valid:
            MMLogger.get_current_instance().warning(f"ignoring a damaged text-feature cache entry: {path}")
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # used now: the last to go when the cache is over its limit
        return features

    def evict(self, keep: Path | None = None) -> None:
        """Remove the least recently used entries (oldest modification time first) until all fit the limit.
        `keep`, the entry just written, goes only when it alone is over the limit."""
        sizes = []
        for path in (self.root / "text_features").glob("*.pt"):
            with contextlib.suppress(OSError):  # removed by another process meanwhile
                stat = path.stat()
                sizes.append((path != keep, stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, _, size, _ in sizes)
        for _, _, size, path in sorted(sizes, key=lambda item: (-item[0], item[1])):
            if total <= self.limit_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size

    def store(self, key: str, features: torch.Tensor) -> bool:
        """Store Q×D features under `key`, then keep the cache within its limit; returns False when it cannot be
        written (with a warning) or is alone over the limit."""
        features = features.detach().to("cpu", torch.float32).contiguous()
        entry = {"key": key, "features": features, "sha256": _tensor_sha256(features)}
        path = self.entry_path(key)
        try:
            write_atomically(path, lambda temp: torch.save(entry, temp))
        except (InputError, RuntimeError) as error:  # torch.save reports a full disk as RuntimeError
            MMLogger.get_current_instance().warning(f"could not write the text-feature cache entry {path}: {error}")
            return False
        self.evict(keep=path)
        return path.is_file()

    def get_or_compute(
        self,
        checkpoint: str | os.PathLike,
        queries: Sequence[str],
        templates: Sequence[str],
        settings: Mapping[str, Any],
        compute: Callable[[], torch.Tensor],
    ) -> torch.Tensor:
        """Cached features of `queries` × `templates` for this checkpoint and settings, or `compute()`d and stored.

        Returns float32 features on the CPU.
        """
        key = cache_key(checkpoint_digest(checkpoint, self.root), queries, templates, settings)
        features = self.load(key, len(queries))
        if features is not None:
            return features
        with self.locked(key):
            features = self.load(key, len(queries))  # another process may have stored it meanwhile
            if features is not None:
                return features
            features = compute().detach().to("cpu", torch.float32)
            if self.store(key, features):
                MMLogger.get_current_instance().info(
                    f"text features of {len(queries)} queries × {len(templates)} templates cached in {self.entry_path(key)}"
                )
        return features
