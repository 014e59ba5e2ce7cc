"""Palette, overlay, label PNG and the image | prediction | overlay picture with its legend."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from scclip.visualize import (
    BACKGROUND, colourise, draw_runs, label_image, legend_entries, overlay, palette, panel_size, plan_layout,
    side_by_side, srgb_to_lab,
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
    assert np.array_equal(palette(21), colours[:21])  # a class keeps its colour when classes are added
    assert np.array_equal(palette(21), palette(21))


def min_pairwise_delta_e(colours: np.ndarray) -> float:
    lab = srgb_to_lab(colours)
    distances = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    return float(distances[~np.eye(len(colours), dtype=bool)].min())


@pytest.mark.parametrize("count, floor", [(21, 40), (30, 35), (64, 24), (256, 13)])
def test_palette_colours_are_far_apart(count, floor):
    """The floors the docstring of `palette` promises (CIE76 ΔE; ≈2.3 is just noticeable)."""
    assert min_pairwise_delta_e(palette(count)) >= floor


def test_voc_person_and_aeroplane_are_not_two_greens():
    voc = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]
    colours = palette(len(voc))
    aeroplane, person = colours[voc.index("aeroplane")], colours[voc.index("person")]
    assert min_pairwise_delta_e(np.stack([aeroplane, person])) >= 60
    # They were (0, 128, 0) and (0, 64, 0): one hue, ΔE 37, under the floor every VOC pair now clears.
    assert min_pairwise_delta_e(np.array([[0, 128, 0], [0, 64, 0]])) < 40


def test_palette_avoids_the_background_and_text_colours():
    lab = srgb_to_lab(palette(30))
    for colour in (BACKGROUND, (0, 0, 0)):
        assert np.linalg.norm(lab - srgb_to_lab(np.array([colour])), axis=1).min() >= 35


def test_palette_beyond_the_grid_stays_distinct():
    colours = palette(5000)
    assert len({tuple(c) for c in colours.tolist()}) == 5000
    assert np.array_equal(colours[:4096], palette(4096))


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
    for position, entry in enumerate(entries):
        assert (legend == entry.colour).all(axis=-1).any(), entry.name
        x, y = layout.legend_cell(position)
        assert (pixels[y + layout.swatch // 2, x + layout.swatch // 2] == entry.colour).all()
        # The entry's text, rendered alone at the same place, matches the picture pixel for pixel.
        reference = Image.new("RGB", picture.size, BACKGROUND)
        draw_runs(ImageDraw.Draw(reference), layout.legend_text_origin(position),
                  entry.runs(16, layout.legend_text_width), 16)
        box = Image.fromarray(255 - np.asarray(reference)).getbbox()  # where the text's ink is
        region = (slice(box[1], box[3]), slice(box[0], box[2]))
        assert np.array_equal(pixels[region], np.asarray(reference)[region]), entry.text
        assert box[2] - box[0] > 8 * len(entry.text) // 2  # real glyphs, not a row of tiny boxes
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
