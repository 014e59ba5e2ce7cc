"""Per-image metric contributions kept on disk, so an interrupted evaluation resumes where it stopped.

Each process of a run appends to its own shard file: a header line naming the run, then one record
per image (its index in the dataset, its path, and the 4×C int64 areas: intersection, union,
prediction and label pixels per class). A record is a fixed header (magic, payload length, CRC-32)
followed by its payload, written with one `write` call; a reader keeps the records that are
complete and whose checksum matches, so a kill at any moment loses at most the record being written
and nothing half-written is ever read back.
"""
from __future__ import annotations

import errno
import json
import os
import secrets
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError

SHARD_MAGIC = b"scclip-areas 1\n"
SHARD_SUFFIX = ".areas"
RECORD = struct.Struct("<4sII")  # magic, payload length, CRC-32 of the payload
RECORD_MAGIC = b"AREA"
PAYLOAD_HEAD = struct.Struct("<qI")  # image index, number of classes
AREA_KINDS = ("intersect", "union", "pred_label", "label")
SYNC_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ImageAreas:
    """One image's contribution to the metric: `areas` is 4×C int64 (see AREA_KINDS)."""

    index: int
    path: str
    areas: np.ndarray


def encode_record(item: ImageAreas) -> bytes:
    areas = np.ascontiguousarray(item.areas, dtype="<i8")
    payload = PAYLOAD_HEAD.pack(item.index, areas.shape[1]) + areas.tobytes() + item.path.encode("utf-8")
    return RECORD.pack(RECORD_MAGIC, len(payload), zlib.crc32(payload)) + payload


def decode_records(data: bytes, start: int) -> tuple[list[ImageAreas], int]:
    """The valid records of `data` from `start` on, and the number of trailing bytes that are not one."""
    items, offset = [], start
    while offset + RECORD.size <= len(data):
        magic, length, checksum = RECORD.unpack_from(data, offset)
        payload = data[offset + RECORD.size: offset + RECORD.size + length]
        if magic != RECORD_MAGIC or len(payload) != length or zlib.crc32(payload) != checksum:
            break
        index, num_classes = PAYLOAD_HEAD.unpack_from(payload)
        end = PAYLOAD_HEAD.size + 4 * num_classes * 8
        areas = np.frombuffer(payload[PAYLOAD_HEAD.size:end], dtype="<i8").reshape(4, num_classes).astype(np.int64)
        items.append(ImageAreas(index, payload[end:].decode("utf-8"), areas))
        offset += RECORD.size + length
    return items, len(data) - offset


class ShardWriter:
    """Appends records to this process's own new shard file (never shared with another writer)."""

    def __init__(self, folder: Path, run_key: str, num_images: int, num_classes: int, rank: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-rank{rank}-{os.getpid()}-{secrets.token_hex(3)}{SHARD_SUFFIX}"
        self.path = folder / name
        self.num_classes = num_classes
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        header = json.dumps(dict(run=run_key, num_images=num_images, num_classes=num_classes)).encode()
        os.write(self._fd, SHARD_MAGIC + header + b"\n")
        self._last_sync = time.monotonic()
        self.count = 0

    def append(self, item: ImageAreas) -> None:
        """Write one record; it is in the file (page cache) when this returns, on disk within SYNC_INTERVAL_S.

        Raises:
            OSError: the record could not be written whole (ENOSPC for a short write: the disk is full).
        """
        record = encode_record(item)
        if os.write(self._fd, record) != len(record):
            # The partial record is dropped by readers; nothing may follow it, or they would drop that too.
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        self.count += 1
        if time.monotonic() - self._last_sync > SYNC_INTERVAL_S:
            os.fsync(self._fd)
            self._last_sync = time.monotonic()

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:  # a full disk fails the sync: the descriptor is closed all the same
                os.close(self._fd)
                self._fd = -1


def read_shard(path: Path, run_key: str) -> tuple[list[ImageAreas], int]:
    """A shard's valid records and how many trailing bytes were ignored.

    Raises:
        DatasetError: the shard belongs to another run (it must never be mixed in).
    """
    data = path.read_bytes()
    if SHARD_MAGIC.startswith(data):
        return [], len(data)  # just created, or killed before its first line was written: nothing in it yet
    if not data.startswith(SHARD_MAGIC):
        raise DatasetError(f"{path} is not a results shard of scclip: remove it, or start over with --force")
    end = data.find(b"\n", len(SHARD_MAGIC))
    try:
        header = json.loads(data[len(SHARD_MAGIC):end]) if end >= 0 else None
    except ValueError:
        header = None
    if not isinstance(header, dict):
        return [], len(data)  # killed while writing its header: nothing in it yet
    if header.get("run") != run_key:
        raise DatasetError(f"{path} holds results of another run ({header.get('run')}, not {run_key}): "
                           "it was copied here by hand; remove it, or start over with --force")
    return decode_records(data, end + 1)


def read_store(folder: Path, run_key: str) -> tuple[dict[int, ImageAreas], int]:
    """Every image stored under `folder` (first record per index, shards in name order) and the bytes ignored."""
    results: dict[int, ImageAreas] = {}
    ignored = 0
    for path in sorted(folder.glob(f"*{SHARD_SUFFIX}")) if folder.is_dir() else []:
        items, skipped = read_shard(path, run_key)
        ignored += skipped
        for item in items:
            results.setdefault(item.index, item)
    return results, ignored
