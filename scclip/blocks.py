"""Full-size predictions block by block, written once: memory follows the block, not the photo.

One definition for the PyTorch path (`scclip.fullres`) and the torch-free runtime
(`scclip.runtime.fullsize`), which therefore cut the same blocks, refine PAMR's tiles with the same
margins, take the same two passes for `area_thd` and finish each block in the same order
(`finish`); each backend supplies only array operations. Standard library only.
"""
import math
from collections.abc import Iterator
from typing import Any

# Working memory aimed at per block (the upsampled logits and the softmax's temporaries).
BLOCK_BYTES = 64 * 2**20
# Q×(block) float32 maps alive at once while a block is post-processed (logits, softmax, scores).
MAPS_PER_BLOCK = 4
# ... and while a channel chunk is refined with PAMR (scores, refined, product, padded copy).
MAPS_PER_PAMR_CHUNK = 6
MIN_TILE = 32
# PAMR tiles get a larger share (their margin is refined too, so small tiles waste work).
PAMR_TILE_FACTOR = 4

Span = tuple[int, int]


def spans(length: int, step: int) -> list[Span]:
    """Consecutive [start, end) spans of at most `step` covering 0..length."""
    return [(start, min(start + step, length)) for start in range(0, length, step)]


def cover(size: tuple[int, int], queries: int, tiles: bool, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[Span, Span]]:
    """(rows, cols) of blocks covering an H×W image of `queries` maps: full-width strips, or square
    tiles (for PAMR, whose margin makes long strips wasteful)."""
    height, width = size
    pixels = max(1, block_bytes // (queries * 4 * MAPS_PER_BLOCK))
    if tiles:
        side = max(MIN_TILE, math.isqrt(PAMR_TILE_FACTOR * pixels))
        for rows in spans(height, side):
            for cols in spans(width, side):
                yield rows, cols
    else:
        for rows in spans(height, max(1, pixels // width)):
            yield rows, (0, width)


def pamr_chunk(region_pixels: int, block_bytes: int = BLOCK_BYTES) -> int:
    """How many query maps of a PAMR region (tile and margin) are refined at once."""
    return max(1, block_bytes // (region_pixels * 4 * MAPS_PER_PAMR_CHUNK))


def finish(ops: Any, scores: Any, keep: Any, prob_thd: float, renormalise: bool) -> tuple[Any, Any]:
    """(stored class scores, labels) of class scores, in the one order both backends follow (`ops`: their
    `suppress`, `labels` and `renormalise`): the classes `area_thd` drops lose their scores (`keep`; None:
    off), then the labels are taken (below `prob_thd`: class 0), then the stored scores are divided by
    their sum over classes (NACLIP), after the labels."""
    if keep is not None:
        scores = ops.suppress(scores, keep)
    labels = ops.labels(scores, prob_thd)
    return (ops.renormalise(scores) if renormalise else scores), labels


class BlockedPrediction:
    """Coarse Q×h×w query logits turned into full-size class scores and labels, block by block.

    The steps that do not depend on the array library: which blocks, PAMR's margin around a tile and
    its chunks of channels, the two passes `area_thd` needs (class areas over the whole image, then
    the labels) and the stitching. A backend's subclass has the attributes `logits`, `size`,
    `num_classes`, `block_bytes`, `pamr_steps`, `pamr_stride`, `area_thd` and `_keep` (None), and the
    array operations: `resize_block(maps, rows, cols)` (of the resize to `size`), `image_block(rows,
    cols)` (the inference image at full size), `affinities(image)`, `refine(scores, affinity)`,
    `concat(blocks)`, `class_scores_of(query_logits)`, `areas_of(scores)`, `surviving(areas)`,
    `finish_block(scores, keep)` (H×W labels), `to_numpy(block)` and `empty(shape, dtype_name)`.
    """

    @property
    def pamr_reach(self) -> int:
        """How far PAMR's result at a pixel looks: steps × the largest dilation."""
        return self.pamr_steps * max(self.pamr_stride) if self.pamr_steps > 0 else 0

    def blocks(self) -> Iterator[tuple[Span, Span]]:
        """(rows, cols) of blocks that cover the image: full-width strips, or square tiles with PAMR."""
        return cover(self.size, self.logits.shape[0], tiles=self.pamr_steps > 0, block_bytes=self.block_bytes)

    def query_block(self, rows: Span, cols: Span) -> Any:
        """Q×R×W full-size query logits of one block; with PAMR, the tile and PAMR's reach around it are
        refined, a chunk of channels at a time, and the tile's part kept (exact: see `scclip.fullres`)."""
        if self.pamr_steps <= 0:
            return self.resize_block(self.logits, rows, cols)
        reach = self.pamr_reach
        height, width = self.size
        around_rows = (max(rows[0] - reach, 0), min(rows[1] + reach, height))
        around_cols = (max(cols[0] - reach, 0), min(cols[1] + reach, width))
        affinity = self.affinities(self.image_block(around_rows, around_cols))
        inside = (slice(rows[0] - around_rows[0], rows[1] - around_rows[0]),
                  slice(cols[0] - around_cols[0], cols[1] - around_cols[0]))
        region = (around_rows[1] - around_rows[0]) * (around_cols[1] - around_cols[0])
        chunk = pamr_chunk(region, self.block_bytes)
        refined = []
        for start in range(0, self.logits.shape[0], chunk):
            scores = self.refine(self.resize_block(self.logits[start : start + chunk], around_rows, around_cols), affinity)
            refined.append(scores[:, inside[0], inside[1]])
        return self.concat(refined)

    def class_block(self, rows: Span, cols: Span) -> Any:
        """C×R×W class scores of one block, before `area_thd`."""
        return self.class_scores_of(self.query_block(rows, cols))

    def keep(self) -> Any:
        """Which classes survive `area_thd` (first pass over the whole image); None without it."""
        if self.area_thd is None:
            return None
        if self._keep is None:
            areas = None
            for rows, cols in self.blocks():
                block = self.areas_of(self.class_block(rows, cols))
                areas = block if areas is None else areas + block
            self._keep = self.surviving(areas)
        return self._keep

    def finished_blocks(self) -> Iterator[tuple[Span, Span, Any, Any]]:
        """(rows, cols, stored C×R×W class scores, R×W labels) of every block."""
        keep = self.keep()
        for rows, cols in self.blocks():
            yield rows, cols, *self.finish_block(self.class_block(rows, cols), keep)

    def labels(self) -> Any:
        """H×W int64 labels (a numpy array)."""
        result = self.empty(self.size, "int64")
        for rows, cols, _, labels in self.finished_blocks():
            result[rows[0] : rows[1], cols[0] : cols[1]] = self.to_numpy(labels)
        return result

    def scores(self) -> Any:
        """C×H×W float32 post-processed class scores (a numpy array): C × H × W × 4 bytes, allocated whole."""
        result = self.empty((self.num_classes, *self.size), "float32")
        for rows, cols, scores, _ in self.finished_blocks():
            result[:, rows[0] : rows[1], cols[0] : cols[1]] = self.to_numpy(scores)
        return result
