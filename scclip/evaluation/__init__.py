"""Benchmark evaluation that loses nothing: run folders, a per-image store, resumable loop, data checks.

Importing this package registers `ResumableTestLoop` (mmengine LOOPS) and the checked file loaders
(mmseg TRANSFORMS) that `eval.py` puts into a config.
"""
from . import data, loop  # noqa: F401  (registration)
from .runs import RunFolder, run_identity
from .store import ImageAreas, read_store

__all__ = ["ImageAreas", "RunFolder", "read_store", "run_identity"]
