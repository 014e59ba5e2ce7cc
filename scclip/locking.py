"""One writer per output folder: a command that writes into a folder as a whole holds its lock meanwhile.

The lock is an exclusive `flock` on a file in the folder, taken without waiting: a second command
is refused in one line naming the holder (pid, host, start time), instead of mixing its files with
the first one's or deleting them (`eval.py --force`). The kernel releases a `flock` when its
holder dies, kill -9 included, so a lock is never stale; the file itself is removed by the holder
when it lets go. Under torchrun one process (rank 0) holds it for the whole job.

Forked children (DataLoader workers) share the lock until they exit; exec'd programs do not get it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from .errors import InputError

LOCK_FILE = ".scclip.lock"
ATTEMPTS = 10  # the lock file can change under us when its last holder removes it: try that many times


class FolderInUse(InputError):
    """Another live process holds the folder's lock."""


def _make_folder(folder: Path) -> Path | None:
    """Create `folder` and its missing parents; returns the topmost folder created here (None if it existed)."""
    missing = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create {folder}: {error.strerror or error}: choose another output folder") from None
    return missing[-1] if missing else None


def _holder_of(descriptor: int) -> str:
    """'pid 12 on host, since 2025-01-01T10:00:00+00:00' from the lock file, or 'unknown' while it is written."""
    try:
        record = json.loads(os.pread(descriptor, 4096, 0) or b"{}")
        return f"pid {record['pid']} on {record['host']}, since {record['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"


class FolderLock:
    """The exclusive lock of one output folder (created when missing).

    Args:
        folder: the folder a command writes into as a whole.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.created: Path | None = None  # the topmost folder that acquire() created, for removal on failure
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        return self._descriptor is not None

    def acquire(self, advice: str) -> None:
        """Take the lock, or refuse at once.

        Args:
            advice: what the user can do when the folder is in use, ending the one-line message.

        Raises:
            FolderInUse: another live process holds it.
            InputError: the folder cannot be created or written.
        """
        for _ in range(ATTEMPTS):
            created = _make_folder(self.folder)
            self.created = self.created or created
            try:
                descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # the folder was removed meanwhile (a failed run cleaning up): again
                continue
            except OSError as error:
                raise InputError(f"cannot write into {self.folder}: {error.strerror or error}: "
                                 "choose another output folder") from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder_of(descriptor)
                os.close(descriptor)
                raise FolderInUse(f"{self.folder} is in use by another run ({holder}): {advice}") from None
            except OSError as error:  # a file system without locks
                os.close(descriptor)
                raise InputError(f"cannot lock {self.path}: {error.strerror or error}: "
                                 "choose an output folder on a local disk") from None
            if self._is_current(descriptor):
                self._descriptor = descriptor
                self._record_holder()
                return
            os.close(descriptor)  # we locked a file its last holder had just removed: lock the new one
        raise FolderInUse(f"{self.folder} keeps changing hands between other runs: {advice}")

    def _is_current(self, descriptor: int) -> bool:
        """Whether the locked file is still the one at `self.path` (not one removed after we opened it)."""
        try:
            return os.fstat(descriptor).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _record_holder(self) -> None:
        record = dict(pid=os.getpid(), host=socket.gethostname(),
                      since=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=sys.argv)
        data = json.dumps(record).encode()
        with contextlib.suppress(OSError):  # only informative: a full disk must not stop the lock
            os.ftruncate(self._descriptor, 0)
            os.pwrite(self._descriptor, data, 0)

    def release(self) -> None:
        """Remove the lock file, then let go (in that order, so nobody locks a file that is going away)."""
        if self._descriptor is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._descriptor)
        self._descriptor = None

    def remove_created(self) -> None:
        """Remove the folders acquire() created (for a command that failed before writing anything), lock held."""
        if self.created is None:
            return
        shutil.rmtree(self.folder, ignore_errors=True)
        for parent in self.folder.parents:
            if not parent.is_relative_to(self.created):
                break
            with contextlib.suppress(OSError):  # not empty: something else lives there now
                parent.rmdir()


def hold_for_job(folder: str | os.PathLike, advice: str) -> FolderLock:
    """`folder`'s lock for a whole job: rank 0 takes it, and every rank raises the same line when it is held.

    Under torchrun the other ranks learn the outcome through a broadcast, so a refusal stops all of
    them alike; in a single process this is `FolderLock(folder).acquire(advice)`.

    Raises:
        InputError: another live process holds the folder (its pid and host named), or it cannot be created.
    """
    from mmengine.dist import broadcast_object_list, get_dist_info

    lock = FolderLock(folder)
    refusal: list[str | None] = [None]
    if get_dist_info()[0] == 0:
        try:
            lock.acquire(advice)
        except InputError as error:
            refusal[0] = str(error)
    broadcast_object_list(refusal)
    if refusal[0] is not None:
        raise InputError(refusal[0])
    return lock

