"""Reading the text files users write, and writing files so that a failure never leaves a partial file behind."""
import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from .errors import InputError


def read_user_text(path: str | os.PathLike) -> str:
    """A text file a user wrote (vocabulary, class list, split list, prompt templates) as UTF-8, with the
    byte-order mark that Windows editors put first left out, so that it never becomes part of a first line.

    Raises:
        OSError, UnicodeDecodeError: as `Path.read_text`; callers say which file and what to do.
    """
    return Path(path).read_text(encoding="utf-8-sig")


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


def check_output_folder(path: str | os.PathLike, option: str) -> None:
    """Refuse, before any work, an output folder that cannot be one because it or a parent is a file.

    Args:
        path: the folder (it need not exist yet).
        option: how the user gave it, e.g. '--show-dir', named in the message.

    Raises:
        InputError: `path` or one of its existing parents is not a folder.
    """
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():  # a dangling link is no folder either
            if not folder.is_dir():
                where = "" if folder == path else f" ({folder} is a file)"
                raise InputError(f"{option} {path} is not a folder{where}: give a folder (it is created when missing)")
            return
