"""Pictures of a segmentation: colour palette, overlay, label PNG, and panels side by side under titles over a
legend (the demo's image | prediction | overlay, eval.py's image | prediction | ground truth).

Drawn with PIL alone so that a picture costs milliseconds and no plotting stack. Text is drawn in a small
bundled font (DejaVu Sans cut to Latin, Greek and Cyrillic, see assets/README.md); characters it lacks (CJK,
emoji, other scripts) come from a system font that maps them all, found at the usual places or through
fontconfig, or from the file named by $SCCLIP_FONT. A class name no font here can draw is shown as its class
number ("#7", the index in the label PNG and its JSON) rather than as empty boxes.
"""
import math
import os
import shutil
import subprocess
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import InputError

BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)
PANEL_TITLES = ("image", "prediction", "overlay")
COMPARISON_TITLES = ("image", "prediction", "ground truth")
ELLIPSIS = "…"

# -- palette ------------------------------------------------------------------------------------------------

# Candidate colours: a 16-level grid per sRGB channel. White (the picture's background) and black (its text)
# count as taken, so no class colour is close to either.
_GRID_LEVELS = 16
_TAKEN = ((255, 255, 255), (0, 0, 0))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """N×3 sRGB (0–255) → N×3 CIELAB (D65), where Euclidean distance is CIE76 ΔE (≈2.3: just noticeable)."""
    c = np.asarray(rgb, dtype=np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=-1)


@lru_cache(maxsize=8)
def _farthest_point_colours(count: int) -> np.ndarray:
    """The first `count` colours of a greedy farthest-point walk in CIELAB over the candidate grid: each
    colour is the candidate farthest from all colours before it (and from white and black); ties go to
    the lowest grid index, so the walk is deterministic and every prefix is the same."""
    levels = np.linspace(0, 255, _GRID_LEVELS).round()
    candidates = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = srgb_to_lab(candidates)
    distance = np.min(np.linalg.norm(lab[:, None] - srgb_to_lab(np.array(_TAKEN))[None], axis=-1), axis=1)
    chosen = []
    for _ in range(min(count, len(candidates))):
        best = int(np.argmax(distance))
        chosen.append(best)
        distance = np.minimum(distance, np.linalg.norm(lab - lab[best], axis=1))
        distance[best] = -1  # never again, even when every distance left is 0
    return candidates[chosen].astype(np.uint8)


def _bit_interleaved(start: int, count: int) -> np.ndarray:
    """PASCAL VOC's colour map entries start..start+count-1: index bits go, a triple at a time, to R, G, B."""
    index = np.arange(start, start + count, dtype=np.int64)
    colours = np.zeros((count, 3), dtype=np.int64)
    for level in range(8):
        for channel in range(3):
            colours[:, channel] |= ((index >> (3 * level + channel)) & 1) << (7 - level)
    return colours.astype(np.uint8)


def palette(num_classes: int) -> np.ndarray:
    """`num_classes`×3 uint8 colours, all distinct, neighbouring or not, far apart for small vocabularies.

    Greedy farthest-point colours in CIELAB (see `_farthest_point_colours`): every pair of the first N is at
    least CIE76 ΔE 40 apart for N ≤ 21 (PASCAL VOC), 35 for N ≤ 30, 24 for N ≤ 64, 13 for N ≤ 256 (tested).
    `palette(n)` is a prefix of `palette(m)` for n < m: a class keeps its colour when classes are added.
    Beyond the 4096 grid colours come PASCAL VOC's bit-interleaved colours not already used.
    """
    chosen = _farthest_point_colours(num_classes)
    missing = num_classes - len(chosen)
    if missing <= 0:
        return chosen.copy()
    used = {tuple(colour) for colour in chosen.tolist()}
    extra = [colour for colour in _bit_interleaved(1, missing + len(used)).tolist() if tuple(colour) not in used]
    return np.concatenate([chosen, np.array(extra[:missing], dtype=np.uint8)])


# -- fonts --------------------------------------------------------------------------------------------------

BUNDLED_FONT = Path(__file__).parent / "assets" / "DejaVuSans-LGC.ttf"
BUNDLED_CHARACTERS = BUNDLED_FONT.with_suffix(".characters.txt")
FONT_VARIABLE = "SCCLIP_FONT"
# Fonts with wide coverage where common systems install them (Debian/Ubuntu, Fedora, Arch, macOS, Windows).
_KNOWN_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wenquanyi/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
)
_WINDOWS_FONTS = ("msyh.ttc", "YuGothR.ttc", "malgun.ttf", "seguiemj.ttf", "seguisym.ttf", "arialuni.ttf")
_PROBE_SIZE = 16


@dataclass(frozen=True)
class Face:
    """One face of a font file (`index` in a collection) and the characters its cmap maps."""

    path: str
    index: int
    chars: frozenset[int] = field(repr=False, compare=False)

    def covers(self, chars: frozenset[int]) -> bool:
        return chars <= self.chars

    def font(self, size: int) -> ImageFont.FreeTypeFont:
        return _font(self.path, self.index, size)


@lru_cache(maxsize=64)
def _font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, index=index)


@lru_cache(maxsize=None)
def _face(path: str, index: int = 0) -> Face | None:
    """The face, or None when the file is no font PIL can draw with at any size (a colour bitmap font such
    as Noto Color Emoji only has fixed sizes)."""
    if Path(path) == BUNDLED_FONT:
        characters = _bundled_characters()
    else:
        try:  # fontTools reads system fonts' character maps; without it (the torch-free runtime) only the bundled font draws
            from fontTools.ttLib import TTFont, TTLibError
        except ImportError:
            return None
        try:
            with TTFont(path, fontNumber=index, lazy=True) as font:
                characters = frozenset(font.getBestCmap() or {})
        except (OSError, TTLibError, ValueError, KeyError, AssertionError):
            return None
    try:
        _font(path, index, _PROBE_SIZE)
    except (OSError, ValueError):
        return None
    return Face(path, index, characters)


def _bundled_characters() -> frozenset[int]:
    """The bundled font's code points, from the ranges benchmarks/make_font_subset.py wrote beside it."""
    ranges = BUNDLED_CHARACTERS.read_text(encoding="ascii").split()
    return frozenset(point for span in ranges for point in range(int(span[:4], 16), int(span.split("-")[1], 16) + 1))


def bundled_face() -> Face:
    """The bundled DejaVu Sans subset (Latin, Greek, Cyrillic), which draws every character it maps."""
    face = _face(str(BUNDLED_FONT))
    if face is None:
        raise InputError(f"the bundled font {BUNDLED_FONT} is missing or damaged: reinstall scclip")
    return face


def _known_font_files() -> list[str]:
    files = list(_KNOWN_FONTS)
    windows = os.environ.get("WINDIR")
    if windows:
        files += [str(Path(windows) / "Fonts" / name) for name in _WINDOWS_FONTS]
    return [path for path in files if Path(path).is_file()]


def _fontconfig_fonts(chars: frozenset[int]) -> list[tuple[str, int]]:
    """Font faces fontconfig knows that map all of `chars`: its best sans-serif match first, then the rest."""
    charset = " ".join(f"{char:x}" for char in sorted(chars))
    queries = (["fc-match", "--format", "%{file}\t%{index}\n", f"sans-serif:charset={charset}"],
               ["fc-list", "--format", "%{file}\t%{index}\n", f":charset={charset}"])
    faces = []
    for query in queries:
        if shutil.which(query[0]) is None:
            return faces
        try:
            listing = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        lines = [line.split("\t") for line in listing.splitlines() if "\t" in line]
        faces += sorted((path, int(index)) for path, index in lines if index.isdigit())
    return faces


@lru_cache(maxsize=4096)
def fallback_face(chars: frozenset[int]) -> Face | None:
    """A system font face that maps every one of `chars` (checked in its cmap), or None.

    Looked for in $SCCLIP_FONT, then at the usual places, then through fontconfig (fc-match, fc-list).
    """
    named = os.environ.get(FONT_VARIABLE)
    if named:
        face = _face(named)
        if face is None:
            raise InputError(f"{FONT_VARIABLE}={named} is not a font file to draw with: point it at a .ttf, "
                             ".otf or .ttc font with outlines, or unset it")
        if face.covers(chars):
            return face
    for path in _known_font_files():
        face = _face(path)
        if face is not None and face.covers(chars):
            return face
    for path, index in _fontconfig_fonts(chars):
        face = _face(path, index)
        if face is not None and face.covers(chars):
            return face
    return None


def printable(text: str) -> str:
    """`text` without the characters that draw nothing (control and format characters such as zero-width
    joiners, variation selectors: they select or join glyphs, which drawing font by font cannot do), its
    whitespace runs as single spaces."""
    return "".join(char for char in " ".join(text.split())
                   if unicodedata.category(char) not in ("Cf", "Cc") and not 0xFE00 <= ord(char) <= 0xFE0F
                   and not 0xE0100 <= ord(char) <= 0xE01EF)


@dataclass(frozen=True)
class Run:
    """Consecutive characters drawn in one face."""

    text: str
    face: Face


def text_runs(text: str) -> list[Run] | None:
    """`text` split into runs of the bundled font and of system faces for what it lacks (one face for all
    of that where there is one, else a face per character); None when no face here maps some character."""
    bundled = bundled_face()
    text = printable(text)
    lacking = frozenset(ord(char) for char in text) - bundled.chars
    whole = fallback_face(lacking) if lacking else None
    faces = {char: bundled for char in bundled.chars & frozenset(map(ord, text))}
    for char in lacking:
        face = whole or fallback_face(frozenset({char}))
        if face is None:
            return None
        faces[char] = face
    runs: list[Run] = []
    for char in text:
        face = faces[ord(char)]
        if runs and runs[-1].face == face:
            runs[-1] = Run(runs[-1].text + char, face)
        else:
            runs.append(Run(char, face))
    return runs


def runs_width(runs: Sequence[Run], size: int) -> float:
    return sum(run.face.font(size).getlength(run.text) for run in runs)


def shorten(runs: list[Run], size: int, width: float) -> list[Run]:
    """`runs` cut and ended with "…" to fit `width` pixels (unchanged when they fit)."""
    if runs_width(runs, size) <= width:
        return runs
    ellipsis = Run(ELLIPSIS, bundled_face())
    characters = [(char, run.face) for run in runs for char in run.text]

    def prefix(count: int) -> list[Run]:
        kept: list[Run] = []
        for char, face in characters[:count]:
            if kept and kept[-1].face == face:
                kept[-1] = Run(kept[-1].text + char, face)
            else:
                kept.append(Run(char, face))
        if kept and kept[-1].text.endswith(" "):
            kept[-1] = Run(kept[-1].text.rstrip(), kept[-1].face)
        return [run for run in kept if run.text] + [ellipsis]

    low, high = 0, len(characters) - 1  # the longest prefix that fits with the ellipsis lies in [low, high]
    while low < high:
        middle = (low + high + 1) // 2
        if runs_width(prefix(middle), size) <= width:
            low = middle
        else:
            high = middle - 1
    return prefix(low)


def draw_runs(draw: ImageDraw.ImageDraw, left_middle: tuple[float, float], runs: Sequence[Run], size: int,
              fill: tuple[int, int, int] = TEXT_COLOUR) -> None:
    """Draw `runs` one after the other, starting at `left_middle` (x of the left end, y of the middle)."""
    x, y = left_middle
    for run in runs:
        font = run.face.font(size)
        draw.text((x, y), run.text, fill=fill, font=font, anchor="lm")
        x += font.getlength(run.text)


def text_font(size: int) -> ImageFont.FreeTypeFont:
    """The bundled font (Latin, Greek, Cyrillic) at `size` pixels."""
    return bundled_face().font(size)


# -- legend -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LegendEntry:
    """One class present: its label index, name, colour and share of the pixels (0–1, or None where a
    legend lists classes without shares)."""

    index: int
    name: str
    colour: tuple[int, int, int]
    share: float | None

    @property
    def share_text(self) -> str:
        return "" if self.share is None else f"  {100 * self.share:.1f}%"

    @property
    def text(self) -> str:
        return self.name + self.share_text

    def name_runs(self) -> list[Run]:
        """The name in fonts that draw it, or its class number ("#7") where none here does."""
        runs = text_runs(self.name)
        return runs if runs else [Run(f"#{self.index}", bundled_face())]

    def runs(self, size: int, width: float) -> list[Run]:
        """Name and share fitted into `width` pixels: the name is shortened with "…", the share is kept."""
        share = [Run(self.share_text, bundled_face())] if self.share_text else []
        return shorten(self.name_runs(), size, width - runs_width(share, size)) + share


def pixel_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the pixels predicted as each class (length `num_classes`, sums to 1)."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]
    return counts / max(labels.size, 1)


def legend_entries(labels: np.ndarray, class_names: list[str], colours: np.ndarray) -> list[LegendEntry]:
    """The classes present in `labels`, largest share first."""
    shares = pixel_shares(labels, len(class_names))
    present = [i for i in np.argsort(-shares, kind="stable") if shares[i] > 0]
    return [LegendEntry(int(i), class_names[i], tuple(int(c) for c in colours[i]), float(shares[i])) for i in present]


def classes_present(label_maps: Sequence[np.ndarray], class_names: list[str], colours: np.ndarray) -> list[LegendEntry]:
    """The classes present in any of `label_maps` (labels beyond the classes, e.g. 255 "ignore", do not
    count), most pixels first, without shares."""
    counts = np.zeros(len(class_names), dtype=np.int64)
    for labels in label_maps:
        known = labels[labels < len(class_names)]
        counts += np.bincount(known.ravel().astype(np.int64), minlength=len(class_names))
    present = [i for i in np.argsort(-counts, kind="stable") if counts[i] > 0]
    return [LegendEntry(int(i), class_names[i], tuple(int(c) for c in colours[i]), None) for i in present]


# -- pictures -----------------------------------------------------------------------------------------------

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
    """Where things sit in the picture; all in pixels. Panels sit in slots at least as wide as their title."""

    panel: tuple[int, int]
    slot_width: int
    margin: int
    title_height: int
    legend_top: int
    legend_columns: int
    legend_row_height: int
    legend_column_width: int
    legend_text_width: int
    size: tuple[int, int]

    @property
    def swatch(self) -> int:
        return self.legend_row_height - self.margin // 2

    def panel_origin(self, column: int) -> tuple[int, int]:
        return self.margin + column * (self.slot_width + self.margin), self.margin + self.title_height

    def legend_cell(self, position: int) -> tuple[int, int]:
        row, column = divmod(position, self.legend_columns)
        return (self.margin + column * self.legend_column_width,
                self.legend_top + row * self.legend_row_height)

    def legend_text_origin(self, position: int) -> tuple[int, int]:
        """Left end and vertical middle of entry `position`'s text."""
        x, y = self.legend_cell(position)
        return x + self.swatch + self.margin // 2, y + self.swatch // 2


def plan_layout(image_size: tuple[int, int], entries: list[LegendEntry], panel_side: int = 512,
                font_size: int = 16, titles: Sequence[str] = PANEL_TITLES) -> Layout:
    """Panels side by side under their titles, then the legend in as many columns as fit.

    A legend column is as wide as its widest entry, but at most a sixth of the picture (at least 12 font
    sizes, about 20 characters): longer names are shortened with "…", so one long name does not take a
    row to itself. Rows are as many as the entries need.
    """
    panel = panel_size(*image_size, panel_side)
    margin = max(8, font_size // 2)
    line = font_size + font_size // 2
    slot = max(panel[0], *(math.ceil(runs_width(text_runs(title) or [], font_size)) for title in titles))
    width = len(titles) * slot + (len(titles) + 1) * margin
    usable = width - 2 * margin
    swatch_and_gap = line + margin // 2
    cap = max(usable // 6, 12 * font_size)
    widest = max((runs_width(entry.runs(font_size, math.inf), font_size) for entry in entries), default=0)
    text_width = math.ceil(min(widest, cap))
    column_width = swatch_and_gap + text_width + 2 * margin
    columns = max(1, min(len(entries), usable // column_width))
    rows = math.ceil(len(entries) / columns) if entries else 0
    legend_top = margin + line + panel[1] + margin
    height = legend_top + rows * line + margin
    width = max(width, columns * column_width + 2 * margin)
    return Layout(panel, slot, margin, line, legend_top, columns, line, column_width, text_width, (width, height))


def compose(panels: Sequence[np.ndarray], titles: Sequence[str], entries: list[LegendEntry], layout: Layout,
            font_size: int = 16) -> Image.Image:
    """Draw `panels` (H×W×3 uint8 at `layout.panel` size) under `titles`, then the legend `entries`."""
    picture = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(picture)
    for column, (title, panel) in enumerate(zip(titles, panels)):
        x, y = layout.panel_origin(column)
        draw_runs(draw, (x, layout.margin + layout.title_height // 2), text_runs(title) or [], font_size)
        picture.paste(Image.fromarray(panel), (x, y))
    for position, entry in enumerate(entries):
        x, y = layout.legend_cell(position)
        draw.rectangle((x, y, x + layout.swatch - 1, y + layout.swatch - 1), fill=entry.colour)
        draw_runs(draw, layout.legend_text_origin(position), entry.runs(font_size, layout.legend_text_width),
                  font_size)
    return picture


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
    small_image = Image.fromarray(image).resize(layout.panel, Image.Resampling.LANCZOS)
    small_labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(layout.panel, Image.Resampling.NEAREST))
    panels = (np.asarray(small_image), colourise(small_labels, colours),
              overlay(np.asarray(small_image), small_labels, colours, alpha))
    return compose(panels, PANEL_TITLES, entries, layout, font_size), entries


def comparison(
    image: np.ndarray,
    prediction: np.ndarray,
    truth: np.ndarray | None,
    class_names: list[str],
    colours: np.ndarray | None = None,
    alpha: float = 0.5,
    font_size: int = 16,
    second: np.ndarray | None = None,
    titles: Sequence[str] | None = None,
) -> tuple[Image.Image, Layout]:
    """image | prediction | ground truth at the image's own size (the label maps blended into the image;
    labels beyond the classes, e.g. 255 "ignore", left bare) over a legend of the classes present in any;
    without `truth`, image | prediction. Also returns the layout (where each panel sits).

    `second` is another prediction of the same image, drawn after the first (eval.py --compare draws
    image | A | B | ground truth); `titles`, one per panel, replace the default ones.
    """
    colours = palette(len(class_names)) if colours is None else colours
    predictions = [prediction] if second is None else [prediction, second]
    label_maps = predictions if truth is None else [*predictions, truth]
    if titles is None:
        named = COMPARISON_TITLES[1:2] if second is None else ("prediction A", "prediction B")
        titles = (COMPARISON_TITLES[0], *named, *COMPARISON_TITLES[2:2 + (truth is not None)])
    if len(titles) != 1 + len(label_maps):
        raise ValueError(f"{len(titles)} titles for {1 + len(label_maps)} panels: give one title per panel")
    entries = classes_present(label_maps, class_names, colours)
    height, width = image.shape[:2]
    layout = plan_layout((width, height), entries, max(width, height), font_size, titles)
    panels = [image, *(overlay(image, labels, colours, alpha) for labels in label_maps)]
    return compose(panels, titles, entries, layout, font_size), layout
