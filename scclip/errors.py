"""Errors a user can act on.

Every message is one line that names the offending thing (file, value) and the fix, so the
command-line tools can print it without a traceback.
"""
import sys
from collections.abc import Callable


class ScclipError(Exception):
    """Base class of the errors scclip raises for bad input or environment."""


class CheckpointError(ScclipError):
    """A CLIP checkpoint is missing, unreadable, or not a ViT CLIP."""


class DownloadError(ScclipError):
    """A pretrained checkpoint could not be downloaded or verified."""


class VocabularyError(ScclipError, ValueError):
    """A vocabulary (class names) file or list is empty, malformed or ambiguous."""


class ImageError(ScclipError):
    """An image file is missing or cannot be decoded."""


class DatasetError(ScclipError):
    """A benchmark dataset is missing or laid out differently from what the config expects."""


class InputError(ScclipError, ValueError):
    """A tensor or argument has the wrong shape, type or value."""


def exit_status(command: Callable[[], int]) -> int:
    """Run a command-line entry point: its exit status, or 1 after one `error: ...` line on stderr for a
    problem the user can fix (130 after Ctrl-C), never a traceback for those."""
    try:
        return command()
    except ScclipError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

