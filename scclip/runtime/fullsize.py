"""Full-size predictions for photos of any size in bounded memory, in numpy: `scclip.fullres` without torch.

The same blocks as `scclip.fullres.FullSizePrediction` (full-width strips; square tiles refined
with a margin of PAMR's reach when PAMR is on), the same two passes for `area_thd`, the same
post-processing (`scclip.runtime.numerics`), so memory follows the block, not the photo.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..blocks import BLOCK_BYTES, Span, cover, pamr_chunk
from . import numerics


@dataclass
class FullSize:
    """Coarse Q×h×w query logits and everything that turns them into full-size class scores and labels."""

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

    @property
    def pamr_reach(self) -> int:
        return self.pamr_steps * max(self.pamr_stride) if self.pamr_steps > 0 else 0

    def blocks(self) -> Iterator[tuple[Span, Span]]:
        """`FullSizePrediction.blocks`: full-width strips, or square tiles with PAMR."""
        return cover(self.size, self.logits.shape[0], tiles=self.pamr_steps > 0, block_bytes=self.block_bytes)

    def query_block(self, rows: Span, cols: Span) -> np.ndarray:
        """Q×R×W full-size query logits of one block (refined with PAMR when it is on)."""
        if self.pamr_steps <= 0:
            return numerics.resize_block(self.logits, self.size, rows, cols)
        reach = self.pamr_reach
        height, width = self.size
        around_rows = (max(rows[0] - reach, 0), min(rows[1] + reach, height))
        around_cols = (max(cols[0] - reach, 0), min(cols[1] + reach, width))
        image = numerics.resize_block(self.image, self.size, around_rows, around_cols)
        affinity = numerics.pixel_affinities(image, self.pamr_stride)
        inside = (slice(rows[0] - around_rows[0], rows[1] - around_rows[0]),
                  slice(cols[0] - around_cols[0], cols[1] - around_cols[0]))
        region = (around_rows[1] - around_rows[0]) * (around_cols[1] - around_cols[0])
        chunk = pamr_chunk(region, self.block_bytes)
        refined = []
        for start in range(0, self.logits.shape[0], chunk):
            scores = numerics.resize_block(self.logits[start : start + chunk], self.size, around_rows, around_cols)
            scores = numerics.refine(scores, affinity, self.pamr_steps, self.pamr_stride)
            refined.append(scores[:, inside[0], inside[1]])
        return np.concatenate(refined)

    def class_block(self, rows: Span, cols: Span) -> np.ndarray:
        return numerics.class_scores(self.query_block(rows, cols), self.query_to_class, self.num_classes,
                                     self.logit_scale)

    def keep(self) -> np.ndarray | None:
        """Which classes survive `area_thd` (first pass over the whole image); None without it."""
        if self.area_thd is None:
            return None
        if self._keep is None:
            areas = np.zeros(self.num_classes, dtype=np.int64)
            for rows, cols in self.blocks():
                areas += numerics.class_areas(self.class_block(rows, cols))
            self._keep = numerics.surviving_classes(areas, self.area_thd)
        return self._keep

    def finished_blocks(self) -> Iterator[tuple[Span, Span, np.ndarray, np.ndarray]]:
        keep = self.keep()
        for rows, cols in self.blocks():
            scores, labels = numerics.finish(self.class_block(rows, cols), keep, self.prob_thd, self.renormalise)
            yield rows, cols, scores, labels

    def labels(self) -> np.ndarray:
        """H×W int64 labels."""
        result = np.empty(self.size, dtype=np.int64)
        for rows, cols, _, labels in self.finished_blocks():
            result[rows[0] : rows[1], cols[0] : cols[1]] = labels
        return result

    def scores(self) -> np.ndarray:
        """C×H×W float32 post-processed class scores (allocated whole)."""
        result = np.empty((self.num_classes, *self.size), dtype=np.float32)
        for rows, cols, scores, _ in self.finished_blocks():
            result[:, rows[0] : rows[1], cols[0] : cols[1]] = scores
        return result
