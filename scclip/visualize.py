"""Pictures of a segmentation: colour palette, overlay, label PNG, and image | prediction | overlay with a legend.

Drawn with PIL alone so that a picture costs milliseconds and no plotting stack.
"""
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError

BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)
PANEL_TITLES = ("image", "prediction", "overlay")


def palette(num_classes: int) -> np.ndarray:
    """`num_classes`×3 uint8 colours, all distinct, for any number of classes.

    PASCAL VOC's bit-interleaved colour map, starting at its second entry so that the first class
    is not black (here class 0 is a real class, not "unlabelled").
    """
    # index bits (b0 b1 b2)(b3 b4 b5)... go, one triple at a time, to the R, G, B bits from the top down.
    index = np.arange(1, num_classes + 1, dtype=np.int64)
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    for level in range(8):
        for channel in range(3):
            colours[:, channel] |= ((index >> (3 * level + channel)) & 1) << (7 - level)
    return colours.astype(np.uint8)


@dataclass(frozen=True)
class LegendEntry:
    """One class present in a prediction: its label index, name, colour and share of the pixels (0–1)."""

    index: int
    name: str
    colour: tuple[int, int, int]
    share: float

    @property
    def text(self) -> str:
        return f"{self.name}  {100 * self.share:.1f}%"


def pixel_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the pixels predicted as each class (length `num_classes`, sums to 1)."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]
    return counts / max(labels.size, 1)


def legend_entries(labels: np.ndarray, class_names: list[str], colours: np.ndarray) -> list[LegendEntry]:
    """The classes present in `labels`, largest share first."""
    shares = pixel_shares(labels, len(class_names))
    present = [i for i in np.argsort(-shares, kind="stable") if shares[i] > 0]
    return [LegendEntry(int(i), class_names[i], tuple(int(c) for c in colours[i]), float(shares[i])) for i in present]


def colourise(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """H×W labels → H×W×3 uint8 colours."""
    return colours[labels]


def overlay(image: np.ndarray, labels: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with each pixel's class colour blended in (`alpha` = weight of the colour).

    Labels without a colour (e.g. 255, "ignore" in ground truth) leave their pixels bare.
    """
    known = labels < len(colours)
    colour = colourise(np.where(known, labels, 0), colours).astype(np.float32)
    blended = image.astype(np.float32)
    blended[known] = (1 - alpha) * blended[known] + alpha * colour[known]
    return np.round(blended).astype(np.uint8)


def label_image(labels: np.ndarray, colours: np.ndarray) -> Image.Image:
    """Labels as a PNG-ready image: palette mode 'P' (viewers show the colours, pixels hold the class
    index) for up to 256 classes, 16-bit grayscale beyond."""
    num_classes = len(colours)
    if num_classes <= 256:
        mask = Image.fromarray(labels.astype(np.uint8))
        mask.putpalette(colours.reshape(-1).tolist())
        return mask
    if num_classes <= 65536:
        return Image.fromarray(labels.astype(np.uint16))
    raise InputError(f"{num_classes} classes do not fit a 16-bit label PNG: use at most 65536 classes")


def panel_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) of a panel whose longer side is `side`, at the image's aspect ratio."""
    scale = side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass(frozen=True)
class Layout:
    """Where things sit in the picture; all in pixels."""

    panel: tuple[int, int]
    margin: int
    title_height: int
    legend_top: int
    legend_columns: int
    legend_row_height: int
    legend_column_width: int
    size: tuple[int, int]

    def panel_origin(self, column: int) -> tuple[int, int]:
        return self.margin + column * (self.panel[0] + self.margin), self.margin + self.title_height

    def legend_cell(self, position: int) -> tuple[int, int]:
        row, column = divmod(position, self.legend_columns)
        return (self.margin + column * self.legend_column_width,
                self.legend_top + row * self.legend_row_height)


def text_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """PIL's bundled font (no font files needed) at `size` pixels."""
    return ImageFont.load_default(size=size)


def plan_layout(image_size: tuple[int, int], entries: list[LegendEntry], panel_side: int = 512,
                font_size: int = 16) -> Layout:
    """Three panels side by side under their titles, then the legend in as many columns as fit."""
    font = text_font(font_size)
    panel = panel_size(*image_size, panel_side)
    margin = max(8, font_size // 2)
    line = font_size + font_size // 2
    width = 3 * panel[0] + 4 * margin
    swatch_and_gap = line + margin // 2
    widest = max((font.getlength(entry.text) for entry in entries), default=0)
    column_width = math.ceil(swatch_and_gap + widest + 2 * margin)
    columns = max(1, min(len(entries), (width - 2 * margin) // column_width))
    rows = math.ceil(len(entries) / columns) if entries else 0
    legend_top = margin + line + panel[1] + margin
    height = legend_top + rows * line + margin
    return Layout(panel, margin, line, legend_top, columns, line, column_width, (width, height))


def side_by_side(
    image: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    colours: np.ndarray | None = None,
    alpha: float = 0.5,
    panel_side: int = 512,
    font_size: int = 16,
) -> tuple[Image.Image, list[LegendEntry]]:
    """The picture image | prediction | overlay (each panel's longer side `panel_side`, at the image's aspect
    ratio) over a legend of the classes present with their pixel shares; also returns the legend entries."""
    colours = palette(len(class_names)) if colours is None else colours
    entries = legend_entries(labels, class_names, colours)
    layout = plan_layout((image.shape[1], image.shape[0]), entries, panel_side, font_size)
    picture = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(picture)
    font = text_font(font_size)

    small_image = Image.fromarray(image).resize(layout.panel, Image.Resampling.LANCZOS)
    small_labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(layout.panel, Image.Resampling.NEAREST))
    panels = (np.asarray(small_image), colourise(small_labels, colours),
              overlay(np.asarray(small_image), small_labels, colours, alpha))
    for column, (title, panel) in enumerate(zip(PANEL_TITLES, panels)):
        x, y = layout.panel_origin(column)
        draw.text((x, layout.margin), title, fill=TEXT_COLOUR, font=font)
        picture.paste(Image.fromarray(panel), (x, y))

    swatch = layout.legend_row_height - layout.margin // 2
    for position, entry in enumerate(entries):
        x, y = layout.legend_cell(position)
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=entry.colour)
        text_at = (x + swatch + layout.margin // 2, y + swatch // 2)
        draw.text(text_at, entry.text, fill=TEXT_COLOUR, font=font, anchor="lm")
    return picture, entries
