"""Palette, overlay, label PNG and the image | prediction | overlay picture with its legend."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from scclip.visualize import (
    BACKGROUND, TEXT_COLOUR, colourise, label_image, legend_entries, overlay, palette, panel_size, plan_layout,
    side_by_side, text_font,
)

NAMES = ["sky", "tree", "person", "unused class"]


def striped_labels(height: int = 200, width: int = 300) -> np.ndarray:
    """sky on top (50%), tree bottom-left (25%), person bottom-right (25%); class 3 absent."""
    labels = np.zeros((height, width), np.int64)
    labels[height // 2 :, : width // 2] = 1
    labels[height // 2 :, width // 2 :] = 2
    return labels


def photo(height: int = 200, width: int = 300) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)


def test_palette_is_distinct_and_stable():
    colours = palette(1000)
    assert colours.dtype == np.uint8 and colours.shape == (1000, 3)
    assert len({tuple(c) for c in colours}) == 1000
    assert tuple(colours[0]) != (0, 0, 0)
    assert np.array_equal(palette(21), colours[:21])
    assert palette(3).tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0]]  # PASCAL VOC's classes 1-3


def test_legend_lists_present_classes_largest_first():
    entries = legend_entries(striped_labels(), NAMES, palette(4))
    assert [e.name for e in entries] == ["sky", "tree", "person"]
    assert [e.share for e in entries] == [0.5, 0.25, 0.25]
    assert entries[0].colour == tuple(palette(4)[0]) and entries[0].text == "sky  50.0%"


def test_overlay_blends():
    image, labels, colours = photo(), striped_labels(), palette(4)
    assert np.array_equal(overlay(image, labels, colours, alpha=0.0), image)
    assert np.array_equal(overlay(image, labels, colours, alpha=1.0), colourise(labels, colours))
    half = overlay(image, labels, colours, alpha=0.5).astype(int)
    assert np.abs(half - (image.astype(int) + colourise(labels, colours)) / 2).max() <= 0.5


def test_label_image_has_palette_and_indices(tmp_path):
    labels = striped_labels()
    label_image(labels, palette(4)).save(tmp_path / "mask.png")
    mask = Image.open(tmp_path / "mask.png")
    assert mask.mode == "P"
    assert np.array_equal(np.asarray(mask), labels)
    assert mask.getpalette()[:12] == palette(4).reshape(-1).tolist()


def test_label_image_beyond_256_classes(tmp_path):
    labels = np.array([[0, 299], [256, 1]])
    label_image(labels, palette(300)).save(tmp_path / "mask.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "mask.png")), labels)


@pytest.mark.parametrize("size, expected", [((300, 200), (512, 341)), ((200, 300), (341, 512)), ((70, 50), (512, 366)),
                                            ((3000, 10), (512, 2))])
def test_panel_keeps_aspect_ratio(size, expected):
    assert panel_size(*size, 512) == expected


def test_picture_layout_and_panels():
    image, labels = photo(), striped_labels()
    picture, entries = side_by_side(image, labels, NAMES)
    layout = plan_layout((300, 200), entries)
    assert picture.size == layout.size
    assert layout.panel == (512, 341)
    assert layout.size[0] == 3 * 512 + 4 * layout.margin
    pixels = np.asarray(picture)

    def panel(column):
        x, y = layout.panel_origin(column)
        return pixels[y : y + layout.panel[1], x : x + layout.panel[0]]

    small_labels = np.asarray(Image.fromarray(labels.astype(np.int32)).resize(layout.panel, Image.Resampling.NEAREST))
    assert np.array_equal(panel(1), colourise(small_labels, palette(4)))
    assert np.abs(panel(0).astype(int) - np.asarray(Image.fromarray(image).resize(layout.panel))).mean() < 3
    assert np.abs(panel(2).astype(int) - (panel(0).astype(int) + panel(1)) / 2).max() <= 1


def test_legend_shows_each_class_colour_and_text():
    picture, entries = side_by_side(photo(), striped_labels(), NAMES, font_size=16)
    layout = plan_layout((300, 200), entries, font_size=16)
    pixels = np.asarray(picture)
    legend = pixels[layout.legend_top :]
    font = text_font(16)
    swatch = layout.legend_row_height - layout.margin // 2
    for position, entry in enumerate(entries):
        assert (legend == entry.colour).all(axis=-1).any(), entry.name
        x, y = layout.legend_cell(position)
        assert (pixels[y + swatch // 2, x + swatch // 2] == entry.colour).all()
        # The entry's text, rendered alone at the same place, matches the picture pixel for pixel.
        reference = Image.new("RGB", picture.size, BACKGROUND)
        ImageDraw.Draw(reference).text((x + swatch + layout.margin // 2, y + swatch // 2), entry.text,
                                       fill=TEXT_COLOUR, font=font, anchor="lm")
        box = Image.fromarray(255 - np.asarray(reference)).getbbox()  # where the text's ink is
        region = (slice(box[1], box[3]), slice(box[0], box[2]))
        assert np.array_equal(pixels[region], np.asarray(reference)[region]), entry.text
    assert "unused class" not in [e.name for e in entries]


def test_legend_wraps_into_rows_for_many_classes():
    labels = np.arange(60 * 50).reshape(60, 50) % 40
    names = [f"class number {i}" for i in range(40)]
    picture, entries = side_by_side(photo(60, 50), labels, names, panel_side=256)
    layout = plan_layout((50, 60), entries, panel_side=256)
    assert len(entries) == 40 and layout.legend_columns > 1
    rows = -(-40 // layout.legend_columns)
    assert picture.size[1] == layout.legend_top + rows * layout.legend_row_height + layout.margin
    assert layout.legend_columns * layout.legend_column_width <= picture.size[0]
