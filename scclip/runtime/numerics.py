"""The pipeline around the exported graphs in numpy: resize, normalise, windows' logits, post-processing, PAMR.

Each function mirrors one of the PyTorch path, named in its docstring, with the same arithmetic in
float32 where it matters (the bilinear resize computes its source positions as PyTorch's CPU
kernel does); tests/test_onnx.py compares them. Imports only numpy (and PAMR's constants from the
settings table and the order of the last steps from `scclip.blocks`, both standard library only).
"""
from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np

from .. import blocks
from ..settings import PAMR_STD_EPS as STD_EPS
from ..settings import PAMR_STD_SCALE as STD_SCALE
NORMALISE_EPS = 1e-12  # F.normalize


# ---------------------------------------------------------------- the inference input


def rescale_size(width: int, height: int, scale: Sequence[int]) -> tuple[int, int]:
    """(width, height) after mmcv's keep-ratio `rescale_size` to fit `scale` (long, short), rounded half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * float(factor) + 0.5), int(height * float(factor) + 0.5)


def _linear_taps(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps along one axis: two source indices and 11-bit fixed-point weights."""
    position = ((np.arange(target) + 0.5) * (source / target) - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.int64)
    fraction = (position - first).astype(np.float32)
    outside = (first < 0) | (first >= source - 1)
    fraction[outside] = 0
    first = np.clip(first, 0, source - 1)
    second = np.minimum(first + 1, source - 1)
    return first, second, np.rint((1 - fraction) * 2048).astype(np.int64), np.rint(fraction * 2048).astype(np.int64)


def resize_uint8(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """H×W×3 uint8 resized bilinearly as `cv2.resize(..., INTER_LINEAR)` (mmcv.imresize) computes it: half-pixel
    centres, edges clamped, 11-bit fixed-point weights, its vectorised rounding (equal to OpenCV on
    downscaling; at most one grey level apart on the outermost rows of an enlargement)."""
    x0, x1, a0, a1 = _linear_taps(image.shape[1], width)
    y0, y1, b0, b1 = _linear_taps(image.shape[0], height)
    out = np.empty((height, width, image.shape[2]), dtype=np.uint8)
    step = max(1, (1 << 24) // max(1, width * image.shape[2]))  # rows per chunk: bounded memory on big photos
    for start in range(0, height, step):
        rows = slice(start, min(start + step, height))
        top = image[y0[rows]].astype(np.int64)
        bottom = image[y1[rows]].astype(np.int64)
        top = top[:, x0] * a0[None, :, None] + top[:, x1] * a1[None, :, None]
        bottom = bottom[:, x0] * a0[None, :, None] + bottom[:, x1] * a1[None, :, None]
        top = np.clip(top >> 4, -32768, 32767)
        bottom = np.clip(bottom >> 4, -32768, 32767)
        value = (((top * b0[rows, None, None]) >> 16) + ((bottom * b1[rows, None, None]) >> 16) + 2) >> 2
        out[rows] = np.clip(value, 0, 255)
    return out


def resize_for_inference(image: np.ndarray, scale: Sequence[int], min_side: int = 1) -> np.ndarray:
    """`scclip.api.resize_for_inference` without mmcv: keep-ratio fit to `scale`, thin sides stretched to `min_side`."""
    width, height = rescale_size(image.shape[1], image.shape[0], scale)
    width, height = max(width, min_side), max(height, min_side)
    if (height, width) == image.shape[:2]:
        return image
    return resize_uint8(image, width, height)


def normalise(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """3×H×W float32 of H×W×3 uint8 RGB: (pixels − mean) / std, as the segmentor's pre-processor."""
    pixels = rgb.transpose(2, 0, 1).astype(np.float32)
    return (pixels - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """`F.normalize(x, dim=-1)`."""
    norm = np.sqrt((x.astype(np.float32) ** 2).sum(-1, keepdims=True))
    return x / np.maximum(norm, NORMALISE_EPS)


# ---------------------------------------------------------------- bilinear resize (PyTorch's arithmetic)


def source_positions(in_size: int, out_size: int, span: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """`scclip.fullres.source_positions`: the two source indices of each output position and their weights."""
    scale = np.float32(in_size / out_size)
    position = np.arange(*span, dtype=np.float32)
    source = np.maximum(np.float32(-0.5) + scale * (position + np.float32(0.5)), np.float32(0))
    first = source.astype(np.int64)
    second = np.minimum(first + 1, in_size - 1)
    weight = (source - first).astype(np.float32)
    return first, second, (np.float32(1) - weight), weight


def resize_block(maps: np.ndarray, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """`scclip.fullres.resize_block`: rows × cols of the bilinear (align_corners=False) resize of C×h×w `maps`."""
    row0, row1, row_w0, row_w1 = source_positions(maps.shape[-2], size[0], rows)
    col0, col1, col_w0, col_w1 = source_positions(maps.shape[-1], size[1], cols)
    needed = np.unique(np.concatenate([row0, row1]))
    at0, at1 = np.searchsorted(needed, row0), np.searchsorted(needed, row1)
    source = maps[:, needed].astype(np.float32)
    across = source[:, :, col1] * col_w1 + source[:, :, col0] * col_w0
    return across[:, at1] * row_w1[:, None] + across[:, at0] * row_w0[:, None]


def resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`F.interpolate(maps, size, mode='bilinear', align_corners=False)` of ...×h×w maps."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, *maps.shape[-2:])
    out = resize_block(flat, size, (0, size[0]), (0, size[1]))
    return out.reshape(*lead, *size)


# ---------------------------------------------------------------- post-processing (scclip.postprocess)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def class_scores(query_logits: np.ndarray, query_to_class: np.ndarray, num_classes: int, logit_scale: float) -> np.ndarray:
    """`scclip.postprocess.class_scores`: softmax over queries of logit_scale × logits, max over each class's queries."""
    probs = softmax(np.float32(logit_scale) * query_logits.astype(np.float32), axis=0)
    if len(query_to_class) == num_classes:
        return probs
    scores = np.zeros((num_classes, *probs.shape[1:]), dtype=np.float32)
    for query, owner in enumerate(query_to_class):
        np.maximum(scores[owner], probs[query], out=scores[owner])
    return scores


def class_areas(scores: np.ndarray) -> np.ndarray:
    """`scclip.postprocess.class_areas`: pixels whose best class is each class."""
    return np.bincount(scores.argmax(axis=0).ravel(), minlength=scores.shape[0]).astype(np.int64)


def surviving_classes(areas: np.ndarray, area_thd: float) -> np.ndarray:
    """`scclip.postprocess.surviving_classes`: classes ≥ 1 whose area is above area_thd × the foreground."""
    foreground = areas[1:].astype(np.float32)
    return foreground > np.float32(area_thd) * foreground.sum(dtype=np.float32)


def suppress(scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`scclip.postprocess.suppress`: the scores with every class ≥ 1 that `keep` drops set to zero (a copy)."""
    scores = scores.copy()
    scores[1:] *= keep.astype(scores.dtype)[:, None, None]
    return scores


def labels(scores: np.ndarray, prob_thd: float) -> np.ndarray:
    """`scclip.postprocess.labels`, H×W: the argmax; pixels whose best score is below prob_thd become class 0."""
    best = scores.max(axis=0)
    result = scores.argmax(axis=0).astype(np.int64)
    result[best < prob_thd] = 0
    return result


def renormalise(scores: np.ndarray) -> np.ndarray:
    """`scclip.postprocess.renormalise`: class scores divided by their sum over classes, per pixel."""
    return scores / scores.sum(axis=0, keepdims=True)


def finish(scores: np.ndarray, keep: np.ndarray | None, prob_thd: float, renormalise: bool) -> tuple[np.ndarray, np.ndarray]:
    """`scclip.postprocess.PostProcessing.finish`: (stored class scores, H×W labels), in `scclip.blocks.finish`'s order."""
    return blocks.finish(NUMPY_STEPS, scores, keep, prob_thd, renormalise)


# ---------------------------------------------------------------- PAMR (scclip.pamr)


def neighbours(x: np.ndarray, dilations: Sequence[int], include_centre: bool = False) -> list[np.ndarray]:
    """`scclip.pamr.neighbours`: the 3×3 neighbourhoods at each dilation, replicate padding, of ...×H×W maps."""
    height, width = x.shape[-2:]
    maps = []
    pad_lead = [(0, 0)] * (x.ndim - 2)
    for d in dilations:
        padded = np.pad(x, pad_lead + [(d, d), (d, d)], mode="edge")
        for dy in (-d, 0, d):
            for dx in (-d, 0, d):
                if include_centre or (dy, dx) != (0, 0):
                    maps.append(padded[..., d + dy : d + dy + height, d + dx : d + dx + width])
    return maps


def pixel_affinities(image: np.ndarray, dilations: Sequence[int]) -> np.ndarray:
    """`scclip.pamr.pixel_affinities` of a K×H×W image: P×H×W softmax affinities to its 8·len(dilations) neighbours."""
    spread = np.stack(neighbours(image, dilations, include_centre=True)).std(axis=0, ddof=1)
    scale = np.float32(STD_EPS) + np.float32(STD_SCALE) * spread
    logits = np.stack([-np.abs(image - n) / scale for n in neighbours(image, dilations)])  # P×K×H×W
    return softmax(logits.mean(axis=1), axis=0)


def refine(scores: np.ndarray, affinity: np.ndarray, steps: int, dilations: Sequence[int]) -> np.ndarray:
    """`scclip.pamr.refine`: `steps` times, each Q×H×W score becomes the affinity-weighted sum of its neighbours'."""
    for _ in range(steps):
        refined = np.zeros_like(scores)
        for index, shifted in enumerate(neighbours(scores, dilations)):
            refined += affinity[index][None] * shifted
        scores = refined
    return scores


# The operations `scclip.blocks.finish` runs in its order.
NUMPY_STEPS = SimpleNamespace(suppress=suppress, labels=labels, renormalise=renormalise)
