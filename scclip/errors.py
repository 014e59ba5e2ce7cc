"""Errors a user can act on.

Every message is one line that names the offending thing (file, value) and the fix, so the
command-line tools can print it without a traceback.
"""


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
