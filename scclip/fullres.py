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
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .blocks import BLOCK_BYTES, BlockedPrediction, Span
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
class FullSizePrediction(BlockedPrediction):
    """Coarse query logits and everything that turns them into full-size class scores and labels: the steps
    are `scclip.blocks.BlockedPrediction`'s, the tensor operations these.

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

    # The array operations `BlockedPrediction` runs that are plain functions here.
    concat = staticmethod(torch.cat)
    areas_of = staticmethod(class_areas)
    to_numpy = staticmethod(lambda block: block.cpu().numpy())
    empty = staticmethod(np.empty)

    @property
    def pamr_steps(self) -> int:
        return self.post.pamr_steps

    @property
    def pamr_stride(self) -> Sequence[int]:
        return self.post.pamr_stride

    @property
    def area_thd(self) -> float | None:
        return self.post.area_thd

    def full_size_image(self) -> Tensor:
        """1×3×H×W the inference input at full size, resized whole as the benchmark path resizes it.

        PAMR's affinities divide by the local spread of the image, which is ~0 in flat regions: there
        a rounding difference in the resized image would change the result, so the image (3 maps, not
        Q) is resized whole with the same call rather than block by block."""
        if self._image is None:
            self._image = F.interpolate(self.image[None], size=self.size, mode="bilinear", align_corners=False)
        return self._image

    def resize_block(self, maps: Tensor, rows: Span, cols: Span) -> Tensor:
        return resize_block(maps, self.size, rows, cols)

    def image_block(self, rows: Span, cols: Span) -> Tensor:
        return self.full_size_image()[:, :, rows[0] : rows[1], cols[0] : cols[1]]

    def affinities(self, image: Tensor) -> Tensor:
        return pixel_affinities(image, self.post.pamr_stride)

    def refine(self, scores: Tensor, affinity: Tensor) -> Tensor:
        return refine(scores[None], affinity, self.post.pamr_steps, self.post.pamr_stride)[0]

    def class_scores_of(self, query_logits: Tensor) -> Tensor:
        return self.post.scores(query_logits, self.query_to_class, self.num_classes)

    def surviving(self, areas: Tensor) -> Tensor:
        return self.post.keep(areas)

    def finish_block(self, scores: Tensor, keep: Tensor | None) -> tuple[Tensor, Tensor]:
        scores, pred = self.post.finish(scores, keep)
        return scores, pred[0]
