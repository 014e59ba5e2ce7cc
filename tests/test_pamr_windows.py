"""PAMR against a loop-by-loop reading of its definition, and the sliding-window grid."""
import pytest
import torch

from scclip.pamr import pamr
from scclip.windows import sliding_windows


def reference_pamr(image: torch.Tensor, scores: torch.Tensor, steps: int, dilations) -> torch.Tensor:
    """PAMR as docs/method.md#pamr writes it, pixel by pixel, for a 1×K×H×W image and 1×Q×H×W scores of the same size."""
    _, channels, h, w = image.shape

    def at(t, y, x):
        return t[0, :, min(max(y, 0), h - 1), min(max(x, 0), w - 1)]

    offsets = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    weights = torch.zeros(h, w, len(dilations) * 8)
    for y in range(h):
        for x in range(w):
            values = torch.stack([at(image, y + dy, x + dx) for dy, dx in offsets])  # 9D×K
            std = values.std(dim=0)
            neighbours = [at(image, y + dy, x + dx) for dy, dx in offsets if (dy, dx) != (0, 0)]
            logits = torch.stack([(-(image[0, :, y, x] - n).abs() / (1e-8 + 0.1 * std)).mean() for n in neighbours])
            weights[y, x] = logits.softmax(0)
    for _ in range(steps):
        new = torch.zeros_like(scores)
        for y in range(h):
            for x in range(w):
                neighbours = [at(scores, y + dy, x + dx) for dy, dx in offsets if (dy, dx) != (0, 0)]
                new[0, :, y, x] = sum(a * n for a, n in zip(weights[y, x], neighbours))
        scores = new
    return scores


def test_pamr_matches_its_definition():
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 9, 11, generator=generator)
    scores = torch.randn(1, 2, 9, 11, generator=generator)
    expected = reference_pamr(image, scores, steps=2, dilations=(1, 2))
    torch.testing.assert_close(pamr(image, scores, steps=2, dilations=(1, 2)), expected, atol=1e-5, rtol=1e-5)


def test_pamr_keeps_constant_scores():
    scores = torch.full((1, 3, 20, 20), 0.25)
    refined = pamr(torch.randn(1, 3, 20, 20), scores, steps=5, dilations=(8, 16))
    torch.testing.assert_close(refined, scores)


@pytest.mark.parametrize("height, width", [(336, 448), (336, 505), (224, 224), (100, 150), (500, 336)])
def test_windows_cover_the_image_like_mmseg(height, width):
    windows = sliding_windows(height, width, crop=224, stride=112)
    rows = max(height - 224 + 111, 0) // 112 + 1
    cols = max(width - 224 + 111, 0) // 112 + 1
    assert len(windows) == rows * cols
    coverage = torch.zeros(height, width)
    for y1, y2, x1, x2 in windows:
        assert 0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width
        assert (y2 - y1, x2 - x1) == (min(224, height), min(224, width))
        coverage[y1:y2, x1:x2] += 1
    assert (coverage > 0).all()


def test_window_arguments_must_be_positive():
    with pytest.raises(ValueError):
        sliding_windows(100, 100, crop=0, stride=112)


def test_window_batches_hold_every_window_once_in_stackable_batches():
    from scclip.windows import sliding_windows, window_batches

    sizes = [(300, 400), (300, 400), (224, 224), (100, 500)]
    batches = list(window_batches(sizes, 224, 112, 4))
    jobs = [job for batch in batches for job in batch]
    assert sorted(jobs) == sorted((index, window) for index, size in enumerate(sizes)
                                  for window in sliding_windows(*size, 224, 112))
    for batch in batches:
        assert 1 <= len(batch) <= 4 and len({(y2 - y1, x2 - x1) for _, (y1, y2, x1, x2) in batch}) == 1
