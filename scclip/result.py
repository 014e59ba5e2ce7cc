"""The result of segmenting one image, shared by `scclip.api.Segmenter` and the torch-free
`scclip.runtime.OnnxSegmenter`: it imports neither torch nor, until a picture is drawn, the
drawing code (`scclip.visualize`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .errors import InputError
from .fileio import write_atomically
from .imageio import writable_suffixes

if TYPE_CHECKING:
    from .visualize import LegendEntry

MASK_SUFFIX = ".png"


class SegmentationResult:
    """One segmented image.

    Attributes:
        image: H×W×3 uint8 RGB, the image as segmented (EXIF orientation applied).
        labels: H×W int64 class index per pixel.
        scores: C×H×W float32 class scores (softmax over the queries, max over each class's names),
            computed when first read: it costs C × H × W × 4 bytes (8.2 GB for 171 classes on a
            12-megapixel photo), unlike everything else here, which is H×W at most.
        class_names: the name shown for each class (a benchmark's own names for its shipped
            vocabulary, else each class's first name).
        colours: C×3 uint8 colour of each class.
    """

    def __init__(self, image: np.ndarray, labels: np.ndarray, class_names: list[str], colours: np.ndarray,
                 scores: np.ndarray | Callable[[], np.ndarray]) -> None:
        self.image = image
        self.labels = labels
        self.class_names = class_names
        self.colours = colours
        self._scores = scores

    @property
    def scores(self) -> np.ndarray:
        if callable(self._scores):
            self._scores = self._scores()
        return self._scores

    def __repr__(self) -> str:
        height, width = self.labels.shape
        present = ", ".join(f"{entry.name} {100 * entry.share:.1f}%" for entry in self.legend()[:5])
        more = len(self.legend()) - 5
        return (f"SegmentationResult({width}×{height}, {len(self.class_names)} classes; "
                f"{present}{f', +{more} more' if more > 0 else ''})")

    @cached_property
    def shares(self) -> dict[str, float]:
        """Fraction of the pixels given to each class (all classes, in vocabulary order)."""
        from .visualize import pixel_shares

        return dict(zip(self.class_names, pixel_shares(self.labels, len(self.class_names)).tolist()))

    def legend(self) -> list[LegendEntry]:
        """The classes present, largest first, with colour and pixel share."""
        from .visualize import legend_entries

        return legend_entries(self.labels, self.class_names, self.colours)

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """The image with the class colours blended in, at full size."""
        from .visualize import overlay

        return Image.fromarray(overlay(self.image, self.labels, self.colours, alpha))

    def mask(self) -> Image.Image:
        """The labels as an image: palette mode 'P' (pixel value = class index) for up to 256 classes."""
        from .visualize import label_image

        return label_image(self.labels, self.colours)

    def picture(self, panel_side: int = 512, alpha: float = 0.5) -> Image.Image:
        """image | prediction | overlay side by side at the image's aspect ratio, over a legend."""
        from .visualize import side_by_side

        return side_by_side(self.image, self.labels, self.class_names, self.colours, alpha, panel_side)[0]

    def save(self, path: str | os.PathLike, panel_side: int = 512) -> Path:
        """Write `picture()` to `path` (format from its suffix); never leaves a partial file.

        Raises:
            InputError: the suffix names no picture format PIL can write, or the file cannot be written.
        """
        path = Path(path)
        if path.suffix.lower() not in writable_suffixes():
            raise InputError(f"cannot write a picture to {path}: its name needs a picture suffix such as .png or .jpg")
        picture = self.picture(panel_side)
        return write_atomically(path, picture.save)

    def save_mask(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write the label PNG at `path` (a name without suffix gets .png) and, beside it (same
        name, .json), the class names and pixel shares.

        Raises:
            InputError: `path` has another suffix than .png: a lossy format would change the labels.
        """
        path = Path(path)
        if not path.suffix:
            path = path.with_suffix(MASK_SUFFIX)
        if path.suffix.lower() != MASK_SUFFIX:
            raise InputError(f"the label mask is written as PNG (lossless, pixel = class index): "
                             f"name it {path.with_suffix(MASK_SUFFIX).name} instead of {path.name}")
        mask = self.mask()
        summary = dict(
            classes=self.class_names,
            pixel_shares={name: round(share, 6) for name, share in self.shares.items()},
            size=dict(width=int(self.labels.shape[1]), height=int(self.labels.shape[0])),
        )
        png = write_atomically(path, mask.save)
        report = write_atomically(path.with_suffix(".json"),
                                  lambda temp: temp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8"))
        return png, report
