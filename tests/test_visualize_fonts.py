"""Class names in any script: the bundled font, a system font for CJK and emoji, the class number where
no font here draws a name, and a legend that shortens long names and flows many classes into columns."""
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from fontTools import subset
from PIL import Image, ImageDraw

import scclip.visualize as visualize
from scclip.errors import InputError
from scclip.visualize import (
    BACKGROUND, ELLIPSIS, LegendEntry, bundled_face, draw_runs, fallback_face, plan_layout, printable, runs_width,
    side_by_side, text_runs,
)

CJK = "猫狗"


def ink(runs, size: int = 16) -> np.ndarray:
    """`runs` drawn alone on a white strip, as a boolean mask of the dark pixels."""
    picture = Image.new("RGB", (400, 40), BACKGROUND)
    draw_runs(ImageDraw.Draw(picture), (4, 20), runs, size)
    return np.asarray(picture.convert("L")) < 128


@pytest.fixture
def no_system_fonts(monkeypatch):
    """The font search finds nothing: no $SCCLIP_FONT, nothing at the usual places, no fontconfig."""
    monkeypatch.delenv(visualize.FONT_VARIABLE, raising=False)
    monkeypatch.setattr(visualize, "_known_font_files", lambda: [])
    monkeypatch.setattr(visualize, "_fontconfig_fonts", lambda chars: [])
    fallback_face.cache_clear()
    yield
    fallback_face.cache_clear()


@pytest.fixture
def system_cjk_face(monkeypatch):
    monkeypatch.delenv(visualize.FONT_VARIABLE, raising=False)
    fallback_face.cache_clear()
    face = fallback_face(frozenset(map(ord, CJK)))
    if face is None:
        pytest.skip("no system font with CJK here (CI installs fonts-wqy-microhei)")
    return face


def test_latin_greek_and_cyrillic_use_the_small_bundled_font():
    assert bundled_face().path.endswith("DejaVuSans-LGC.ttf")
    assert visualize.BUNDLED_FONT.stat().st_size < 200_000
    assert (visualize.BUNDLED_FONT.parent / "LICENSE-DejaVu.txt").is_file()
    runs = text_runs("Café Кошка ελιά 1–2 “x” …")
    assert [run.face for run in runs] == [bundled_face()]
    # Distinct letters get distinct glyphs (the default font's boxes would all look the same).
    assert not np.array_equal(ink(text_runs("Ж")), ink(text_runs("Ψ")))


def test_cjk_names_are_drawn_with_a_system_font(system_cjk_face):
    runs = text_runs("猫 cat")
    assert [run.text for run in runs] == ["猫", " cat"]
    assert runs[0].face == system_cjk_face and runs[1].face == bundled_face()
    cat, dog = ink(text_runs("猫")), ink(text_runs("狗"))
    assert cat.sum() > 20 and not np.array_equal(cat, dog)  # two real glyphs, not two "missing" boxes


def test_fontconfig_finds_a_cjk_font(monkeypatch, system_cjk_face):
    if shutil.which("fc-list") is None:
        pytest.skip("no fontconfig here")
    monkeypatch.setattr(visualize, "_known_font_files", lambda: [])
    fallback_face.cache_clear()
    face = fallback_face(frozenset(map(ord, CJK)))
    fallback_face.cache_clear()
    assert face is not None and face.covers(frozenset(map(ord, CJK)))


def test_without_a_font_for_a_name_its_class_number_is_shown(no_system_fonts):
    assert text_runs("猫") is None and text_runs("🐱") is None
    labels = np.zeros((40, 60), np.int64)
    labels[:, 30:] = 1
    labels[:10] = 2
    names = ["sky", "猫", "🐱 cat"]
    picture, entries = side_by_side(np.full((40, 60, 3), 128, np.uint8), labels, names, panel_side=64)
    assert [entry.name for entry in entries] == ["sky", "猫", "🐱 cat"]  # the real names stay in the result
    shown = {entry.name: "".join(run.text for run in entry.runs(16, 1000)) for entry in entries}
    assert shown["猫"].startswith("#1  ") and shown["🐱 cat"].startswith("#2  ")
    layout = plan_layout((60, 40), entries, panel_side=64)
    position = [entry.name for entry in entries].index("猫")
    reference = Image.new("RGB", picture.size, BACKGROUND)
    draw_runs(ImageDraw.Draw(reference), layout.legend_text_origin(position),
              entries[position].runs(16, layout.legend_text_width), 16)
    box = Image.fromarray(255 - np.asarray(reference)).getbbox()
    region = (slice(box[1], box[3]), slice(box[0], box[2]))
    assert np.array_equal(np.asarray(picture)[region], np.asarray(reference)[region])


def test_a_font_variable_that_names_no_font_is_refused(monkeypatch, tmp_path):
    bad = tmp_path / "notafont.ttf"
    bad.write_text("hello")
    monkeypatch.setenv(visualize.FONT_VARIABLE, str(bad))
    fallback_face.cache_clear()
    try:
        with pytest.raises(InputError, match=rf"SCCLIP_FONT={bad} is not a font file.*unset it"):
            text_runs("猫")
    finally:
        fallback_face.cache_clear()


def test_characters_that_draw_nothing_are_dropped():
    assert printable("cat\u200dface\ufe0f  with\ttab") == "catface with tab"


def test_long_names_are_shortened_and_keep_their_share():
    name = "a remarkably long class name " * 4 + "the end"
    assert len(name) > 120
    entry = LegendEntry(0, name, (1, 2, 3), 0.25)
    runs = entry.runs(16, 300)
    text = "".join(run.text for run in runs)
    assert text.endswith(f"{ELLIPSIS}  25.0%") and name.startswith(text.split(ELLIPSIS)[0])
    assert runs_width(runs, 16) <= 300 and runs_width(entry.runs(16, 301), 16) > 250


def test_three_hundred_classes_and_a_long_name_flow_into_columns_without_overlap():
    count = 300
    labels = np.arange(100 * 120).reshape(100, 120) % count
    names = [f"class {i}" for i in range(count)]
    names[7] = "x" * 60 + " " + "y" * 59  # 120 characters
    picture, entries = side_by_side(np.full((100, 120, 3), 128, np.uint8), labels, names)
    layout = plan_layout((120, 100), entries)
    assert len(entries) == count and picture.size == layout.size
    assert picture.size[0] == 3 * 512 + 4 * layout.margin  # the long name did not widen the picture
    assert layout.legend_columns >= 5
    rows = -(-count // layout.legend_columns)
    assert picture.size[1] == layout.legend_top + rows * layout.legend_row_height + layout.margin
    for entry in entries:
        assert runs_width(entry.runs(16, layout.legend_text_width), 16) <= layout.legend_text_width
    pixels = np.asarray(picture)[layout.legend_top:]
    for column in range(layout.legend_columns):  # the gap after each column's text stays blank
        x = layout.margin + (column + 1) * layout.legend_column_width
        assert (pixels[:, x - layout.margin : x] == BACKGROUND).all(), column
    long = next(entry for entry in entries if entry.index == 7)
    assert ELLIPSIS in "".join(run.text for run in long.runs(16, layout.legend_text_width))


def test_titles_of_a_very_thin_image_do_not_overlap():
    picture, entries = side_by_side(np.zeros((3000, 10, 3), np.uint8), np.zeros((3000, 10), np.int64), ["sky"])
    layout = plan_layout((10, 3000), entries)
    assert layout.panel[0] == 2
    assert layout.slot_width >= runs_width(text_runs("prediction"), 16)
    x = layout.panel_origin(1)[0]
    title_band = np.asarray(picture)[: layout.margin + layout.title_height]
    assert (title_band[:, x - layout.margin : x] == BACKGROUND).all()  # the gap between two titles is blank


def one_glyph_font(path, char: str):
    """A font with the single character `char`, cut from matplotlib's DejaVu Sans."""
    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    subset.main([str(source), f"--unicodes=U+{ord(char):04X}", f"--output-file={path}"])
    return path


def test_characters_from_several_system_fonts_in_one_name(monkeypatch, tmp_path):
    """No face maps both → and ∑ (neither is in the bundled font): each comes from the face that maps it."""
    arrow = str(one_glyph_font(tmp_path / "arrow.ttf", "→"))
    sigma = str(one_glyph_font(tmp_path / "sigma.ttf", "∑"))
    monkeypatch.delenv(visualize.FONT_VARIABLE, raising=False)
    monkeypatch.setattr(visualize, "_known_font_files", lambda: [arrow, sigma])
    monkeypatch.setattr(visualize, "_fontconfig_fonts", lambda chars: [])
    fallback_face.cache_clear()
    try:
        runs = text_runs("a→∑b")
        assert [(run.text, Path(run.face.path).name) for run in runs] == [
            ("a", "DejaVuSans-LGC.ttf"), ("→", "arrow.ttf"), ("∑", "sigma.ttf"), ("b", "DejaVuSans-LGC.ttf")]
        assert text_runs("a→∑√") is None  # √ is in no font here
        monkeypatch.setenv(visualize.FONT_VARIABLE, sigma)  # $SCCLIP_FONT is asked first
        fallback_face.cache_clear()
        assert fallback_face(frozenset({ord("∑")})).path == sigma
    finally:
        fallback_face.cache_clear()


def test_shipped_character_list_is_the_bundled_fonts_own():
    """The bundled font's coverage is read from a shipped list (no font library needed to draw with it)."""
    from fontTools.ttLib import TTFont

    from scclip.visualize import BUNDLED_FONT, _bundled_characters

    with TTFont(BUNDLED_FONT) as font:
        assert _bundled_characters() == frozenset(font.getBestCmap())
