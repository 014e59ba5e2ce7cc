"""Pixel-adaptive mask refinement (PAMR): smooth class scores along image edges (docs/method.md#pamr)."""
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .settings import PAMR_STD_EPS as STD_EPS
from .settings import PAMR_STD_SCALE as STD_SCALE


def _offsets(dilation: int, include_centre: bool) -> Iterator[tuple[int, int]]:
    for dy in (-dilation, 0, dilation):
        for dx in (-dilation, 0, dilation):
            if include_centre or (dy, dx) != (0, 0):
                yield dy, dx


def _shift(padded: torch.Tensor, pad: int, dy: int, dx: int, size: tuple[int, int]) -> torch.Tensor:
    """The view of a replicate-padded map whose pixel (y, x) holds the original's (y+dy, x+dx)."""
    h, w = size
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def neighbours(x: torch.Tensor, dilations: Sequence[int], include_centre: bool = False) -> list[torch.Tensor]:
    """The 3×3 neighbourhoods at each dilation (replicate padding), as a list of B×C×H×W maps."""
    size = x.shape[-2:]
    maps = []
    for d in dilations:
        padded = F.pad(x, (d, d, d, d), mode="replicate")
        maps.extend(_shift(padded, d, dy, dx, size) for dy, dx in _offsets(d, include_centre))
    return maps


def pixel_affinities(image: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """B×P×H×W softmax affinities of every pixel to its P = 8·len(dilations) neighbours."""
    # image: B×K×H×W
    spread = torch.stack(neighbours(image, dilations, include_centre=True), dim=2).std(dim=2)  # B×K×H×W
    scale = STD_EPS + STD_SCALE * spread
    logits = torch.stack([-(image - n).abs() / scale for n in neighbours(image, dilations)], dim=2)
    return logits.mean(dim=1).softmax(dim=1)


def refine(scores: torch.Tensor, affinity: torch.Tensor, steps: int, dilations: Sequence[int]) -> torch.Tensor:
    """`steps` times, each score becomes the affinity-weighted sum of its neighbours' (B×Q×H×W)."""
    for _ in range(steps):
        refined = torch.zeros_like(scores)
        for index, shifted in enumerate(neighbours(scores, dilations)):
            refined.addcmul_(affinity[:, index : index + 1], shifted)
        scores = refined
    return scores


@torch.no_grad()
def pamr(image: torch.Tensor, scores: torch.Tensor, steps: int, dilations: Sequence[int] = (8, 16)) -> torch.Tensor:
    """Refine B×Q×h×w scores with the affinities of the B×K×H×W image; returns B×Q×H×W."""
    scores = F.interpolate(scores, size=image.shape[-2:], mode="bilinear", align_corners=True)
    return refine(scores, pixel_affinities(image.to(scores.dtype), dilations), steps, dilations)
