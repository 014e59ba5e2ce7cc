"""Full-size predictions for photos of any size, in bounded memory.

The benchmark path resizes the query logits to the original image size and post-processes them
whole: Q×H×W floats, 8 GB for a 12-megapixel photo and 171 classes, several times over for the
softmax. Here the same post-processing (`scclip.postprocess.PostProcessing`, PAMR's `refine`) runs
block by block (full-width strips, or square tiles with PAMR), so memory follows the block, not the
photo; this module only decides how to cut the blocks and how to stitch them:
- the bilinear resize (align_corners=False) is computed for the rows and columns of one block from
  the coarse logits, with PyTorch's own arithmetic (bit-identical to `F.interpolate` on this CPU;
  at most one rounding step apart elsewhere);
- `area_thd` needs each class's area over the whole image: a first pass counts the argmax areas,
  a second pass takes the labels;
- PAMR's output at a pixel depends only on the scores and image within `steps × max(dilations)`
  pixels (each step looks one dilation away, and each affinity one dilation further), so each tile
  is refined with that margin around it and only its centre is kept: exact, with the image edges
  padded as the whole-image computation pads them. The image PAMR reads is resized whole (3 maps,
  144 MB at 12 megapixels), as the benchmark path resizes it, because PAMR divides by its local
  spread, ~0 in flat regions, where a rounding difference would change the result.
Labels therefore equal the whole-image computation except where two class scores tie to within
rounding.
"""
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import BLOCK_BYTES, Span, cover, pamr_chunk
from .pamr import pixel_affinities, refine
from .postprocess import PostProcessing, class_areas


def source_positions(in_size: int, out_size: int, span: Span, device: torch.device) -> tuple[Tensor, ...]:
    """For output positions span[0]:span[1] of a bilinear resize (align_corners=False): the two
    input indices each reads and their weights, computed as PyTorch's CPU kernel computes them."""
    scale = torch.tensor(in_size / out_size, dtype=torch.float32, device=device)
    position = torch.arange(*span, dtype=torch.float32, device=device)
    source = torch.addcmul(torch.tensor(-0.5, device=device), scale, position + 0.5).clamp_(min=0)
    first = source.to(torch.int64)
    second = torch.clamp(first + 1, max=in_size - 1)
    weight = source - first
    return first, second, 1 - weight, weight


def resize_block(maps: Tensor, size: tuple[int, int], rows: Span, cols: Span) -> Tensor:
    """`F.interpolate(maps[None], size, mode='bilinear', align_corners=False)[0][:, rows, cols]`,
    computed for that block only (C×h×w → C×R×W)."""
    row0, row1, row_w0, row_w1 = source_positions(maps.shape[-2], size[0], rows, maps.device)
    col0, col1, col_w0, col_w1 = source_positions(maps.shape[-1], size[1], cols, maps.device)
    needed = torch.unique(torch.cat([row0, row1]))
    at0, at1 = torch.searchsorted(needed, row0), torch.searchsorted(needed, row1)
    source = maps[:, needed].float()
    across = source.index_select(2, col1).mul_(col_w1).addcmul_(source.index_select(2, col0), col_w0)
    # Same arithmetic as F.interpolate's kernel: first × w0 fused into second × w1.
    return across.index_select(1, at1).mul_(row_w1[:, None]).addcmul_(across.index_select(1, at0), row_w0[:, None])


@dataclass
class FullSizePrediction:
    """Coarse query logits and everything that turns them into full-size class scores and labels.

    Attributes:
        logits: Q×h×w query logits before the final resize (`SCCLIPForSegmentation.coarse_logits`).
        size: (H, W) of the photo.
        query_to_class, num_classes: which class each query belongs to, and how many classes there are.
        post: the segmentor's post-processing (thresholds, PAMR, NACLIP's renormalisation).
        image: 3×h'×w' the normalised inference input; PAMR's affinities come from it resized to `size`.
        block_bytes: working memory aimed at per block.
    """

    logits: Tensor
    size: tuple[int, int]
    query_to_class: Tensor
    num_classes: int
    post: PostProcessing
    image: Tensor | None = None
    block_bytes: int = BLOCK_BYTES
    _keep: Tensor | None = field(default=None, init=False, repr=False)
    _image: Tensor | None = field(default=None, init=False, repr=False)

    @property
    def pamr_reach(self) -> int:
        """How far PAMR's result at a pixel looks: steps × the largest dilation."""
        return self.post.pamr_steps * max(self.post.pamr_stride) if self.post.pamr_steps > 0 else 0

    def blocks(self) -> Iterator[tuple[Span, Span]]:
        """(rows, cols) of blocks that cover the image: full-width strips, or square tiles with PAMR."""
        return cover(self.size, self.logits.shape[0], tiles=self.post.pamr_steps > 0, block_bytes=self.block_bytes)

    def full_size_image(self) -> Tensor:
        """1×3×H×W the inference input at full size, resized whole as the benchmark path resizes it.

        PAMR's affinities divide by the local spread of the image, which is ~0 in flat regions: there
        a rounding difference in the resized image would change the result, so the image (3 maps, not
        Q) is resized whole with the same call rather than block by block."""
        if self._image is None:
            self._image = F.interpolate(self.image[None], size=self.size, mode="bilinear", align_corners=False)
        return self._image

    def query_block(self, rows: Span, cols: Span) -> Tensor:
        """Q×R×W full-size query logits of one block (refined with PAMR when it is on)."""
        if self.post.pamr_steps <= 0:
            return resize_block(self.logits, self.size, rows, cols)
        reach = self.pamr_reach
        height, width = self.size
        around_rows = (max(rows[0] - reach, 0), min(rows[1] + reach, height))
        around_cols = (max(cols[0] - reach, 0), min(cols[1] + reach, width))
        image = self.full_size_image()[:, :, around_rows[0] : around_rows[1], around_cols[0] : around_cols[1]]
        affinity = pixel_affinities(image, self.post.pamr_stride)
        inside = (slice(rows[0] - around_rows[0], rows[1] - around_rows[0]),
                  slice(cols[0] - around_cols[0], cols[1] - around_cols[0]))
        region = (around_rows[1] - around_rows[0]) * (around_cols[1] - around_cols[0])
        chunk = pamr_chunk(region, self.block_bytes)
        refined = []
        for start in range(0, self.logits.shape[0], chunk):
            scores = resize_block(self.logits[start : start + chunk], self.size, around_rows, around_cols)[None]
            scores = refine(scores, affinity, self.post.pamr_steps, self.post.pamr_stride)
            refined.append(scores[0][:, inside[0], inside[1]])
        return torch.cat(refined)

    def class_block(self, rows: Span, cols: Span) -> Tensor:
        """C×R×W class scores of one block, before `area_thd`."""
        return self.post.scores(self.query_block(rows, cols), self.query_to_class, self.num_classes)

    def keep(self) -> Tensor | None:
        """Which classes survive `area_thd` (first pass over the whole image); None without it."""
        if self.post.area_thd is None:
            return None
        if self._keep is None:
            areas = torch.zeros(self.num_classes, dtype=torch.int64, device=self.logits.device)
            for rows, cols in self.blocks():
                areas += class_areas(self.class_block(rows, cols))
            self._keep = self.post.keep(areas)
        return self._keep

    def finished_blocks(self) -> Iterator[tuple[Span, Span, Tensor, Tensor]]:
        """(rows, cols, stored C×R×W class scores, R×W labels) of every block."""
        keep = self.keep()
        for rows, cols in self.blocks():
            scores, pred = self.post.finish(self.class_block(rows, cols), keep)
            yield rows, cols, scores, pred[0]

    def labels(self) -> np.ndarray:
        """H×W int64 labels."""
        result = np.empty(self.size, dtype=np.int64)
        for rows, cols, _, pred in self.finished_blocks():
            result[rows[0] : rows[1], cols[0] : cols[1]] = pred.cpu().numpy()
        return result

    def scores(self) -> np.ndarray:
        """C×H×W float32 post-processed class scores: C × H × W × 4 bytes (allocated whole)."""
        result = np.empty((self.num_classes, *self.size), dtype=np.float32)
        for rows, cols, scores, _ in self.finished_blocks():
            result[:, rows[0] : rows[1], cols[0] : cols[1]] = scores.cpu().numpy()
        return result
