"""How a full-size prediction is cut into blocks so that memory follows the block, not the photo.

One definition for the PyTorch path (`scclip.fullres`) and the torch-free runtime
(`scclip.runtime.fullsize`), which therefore cut the same blocks. Standard library only.
"""
import math
from collections.abc import Iterator

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
