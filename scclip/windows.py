"""Sliding-window tiling, mmseg's scheme: a regular grid whose last window is clamped to the edge; and the
batches both pipelines (PyTorch's segmentor and the torch-free runtime) encode the windows in."""
from collections.abc import Iterator, Sequence

Window = tuple[int, int, int, int]  # (y1, y2, x1, x2)


def sliding_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Windows (y1, y2, x1, x2) covering an H×W image, in row-major order.

    Grid counts are max(size − crop + stride − 1, 0) // stride + 1; windows past the edge are
    shifted back inside it, and an image smaller than the crop is one window of its own size.
    """
    if crop <= 0 or stride <= 0:
        raise ValueError(f"crop ({crop}) and stride ({stride}) must be positive")
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    windows = []
    for row in range(rows):
        for col in range(cols):
            y2 = min(row * stride + crop, height)
            x2 = min(col * stride + crop, width)
            windows.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return windows


def window_batches(sizes: Sequence[tuple[int, int]], crop: int, stride: int,
                   batch_size: int) -> Iterator[list[tuple[int, Window]]]:
    """The windows of images of these (H, W) sizes, as batches of (image index, window): windows of one
    shape together (so that they stack), at most `batch_size` in each."""
    by_shape: dict[tuple[int, int], list[tuple[int, Window]]] = {}
    for index, (height, width) in enumerate(sizes):
        for window in sliding_windows(height, width, crop, stride):
            y1, y2, x1, x2 = window
            by_shape.setdefault((y2 - y1, x2 - x1), []).append((index, window))
    for jobs in by_shape.values():
        for start in range(0, len(jobs), batch_size):
            yield jobs[start : start + batch_size]


def patch_padding(height: int, width: int, patch: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that makes an H×W window a patch multiple.

    A side S with S mod p ≠ 0 gets P = p − (S mod p) pixels: ⌊P/2⌋ before it and the rest after.
    """

    def split(size: int) -> tuple[int, int]:
        total = (patch - size % patch) % patch
        return total // 2, total - total // 2

    left, right = split(width)
    top, bottom = split(height)
    return left, right, top, bottom
