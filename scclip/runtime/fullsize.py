"""Full-size predictions for photos of any size in bounded memory, in numpy: `scclip.fullres` without torch.

The steps are written once, in `scclip.blocks.BlockedPrediction` (the blocks, PAMR's margins, the two
passes for `area_thd`), as the PyTorch path runs them; this module supplies numpy's operations
(`scclip.runtime.numerics`), so memory follows the block, not the photo.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..blocks import BLOCK_BYTES, BlockedPrediction, Span
from . import numerics


@dataclass
class FullSize(BlockedPrediction):
    """Coarse Q×h×w query logits and everything that turns them into full-size class scores and labels: the
    steps are `scclip.blocks.BlockedPrediction`'s, the numpy operations these."""

    logits: np.ndarray
    size: tuple[int, int]
    query_to_class: np.ndarray
    num_classes: int
    logit_scale: float
    prob_thd: float = 0.0
    area_thd: float | None = None
    pamr_steps: int = 0
    pamr_stride: Sequence[int] = (8, 16)
    renormalise: bool = False
    image: np.ndarray | None = None
    block_bytes: int = BLOCK_BYTES
    _keep: np.ndarray | None = field(default=None, init=False, repr=False)

    # The array operations `BlockedPrediction` runs that are plain functions here.
    concat = staticmethod(np.concatenate)
    areas_of = staticmethod(numerics.class_areas)
    to_numpy = staticmethod(lambda block: block)
    empty = staticmethod(np.empty)

    def resize_block(self, maps: np.ndarray, rows: Span, cols: Span) -> np.ndarray:
        return numerics.resize_block(maps, self.size, rows, cols)

    def image_block(self, rows: Span, cols: Span) -> np.ndarray:
        return numerics.resize_block(self.image, self.size, rows, cols)

    def affinities(self, image: np.ndarray) -> np.ndarray:
        return numerics.pixel_affinities(image, self.pamr_stride)

    def refine(self, scores: np.ndarray, affinity: np.ndarray) -> np.ndarray:
        return numerics.refine(scores, affinity, self.pamr_steps, self.pamr_stride)

    def class_scores_of(self, query_logits: np.ndarray) -> np.ndarray:
        return numerics.class_scores(query_logits, self.query_to_class, self.num_classes, self.logit_scale)

    def surviving(self, areas: np.ndarray) -> np.ndarray:
        return numerics.surviving_classes(areas, self.area_thd)

    def finish_block(self, scores: np.ndarray, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return numerics.finish(scores, keep, self.prob_thd, self.renormalise)
