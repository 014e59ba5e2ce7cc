"""Writing files so that a failure never leaves a partial file behind."""
import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from .errors import InputError


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(temp_path)` then rename onto `path`, so a failure never leaves a partial file there.

    The temporary file sits in the destination folder (same file system, so the rename is atomic)
    and keeps the destination's suffix, which writers like PIL use to pick the format.

    Raises:
        InputError: the destination cannot be written (missing permission, disk full, ...).
    """
    path = Path(path)
    temp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(temp)
        os.replace(temp, path)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}: choose another output path") from None
    finally:
        with contextlib.suppress(OSError):  # e.g. the folder itself could not be made
            temp.unlink(missing_ok=True)
    return path
