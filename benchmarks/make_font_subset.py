"""Make scclip/assets/DejaVuSans-LGC.ttf: DejaVu Sans cut down to Latin, Greek, Cyrillic and punctuation.

The pictures draw class names in this font (scclip/visualize.py); CJK, emoji and other scripts come
from a system font. DejaVu Sans is the copy matplotlib ships (matplotlib is installed with mmengine);
its licence is copied next to the subset. Run from the repository root:

    python benchmarks/make_font_subset.py
"""
import shutil
from pathlib import Path

import matplotlib
from fontTools import subset

ASSETS = Path(__file__).resolve().parents[1] / "scclip" / "assets"
OUTPUT = ASSETS / "DejaVuSans-LGC.ttf"
# The subset's character map as code-point ranges: the pictures need no font library for the bundled font.
CHARACTERS = ASSETS / "DejaVuSans-LGC.characters.txt"
LICENCE = ASSETS / "LICENSE-DejaVu.txt"
# Unicode blocks kept (about 120 KiB; all of DejaVu Sans is 740 KiB): Basic Latin, Latin-1, Latin Extended-A/B,
# spacing modifiers and combining diacritics, Greek (monotonic), Cyrillic and its supplement, Latin Extended
# Additional (Vietnamese), general punctuation (… for shortened names), currency signs, letterlike symbols,
# and the replacement character.
UNICODES = ("U+0020-007E,U+00A0-024F,U+02B0-036F,U+0370-03FF,U+0400-052F,U+1E00-1EFF,"
            "U+2000-206F,U+20A0-20CF,U+2100-214F,U+FFFD")


def write_characters(font_path: Path, target: Path) -> None:
    """The font's mapped code points as `first-last` hex ranges, one per line."""
    from fontTools.ttLib import TTFont

    with TTFont(font_path) as font:
        points = sorted(font.getBestCmap())
    ranges, start = [], points[0]
    for previous, current in zip(points, points[1:] + [None]):
        if current is None or current != previous + 1:
            ranges.append(f"{start:04X}-{previous:04X}")
            start = current
    target.write_text("\n".join(ranges) + "\n")


def main() -> None:
    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    subset.main([str(fonts / "DejaVuSans.ttf"), f"--unicodes={UNICODES}", f"--output-file={OUTPUT}",
                 "--layout-features=kern,liga,ccmp,locl,mark,mkmk", "--no-hinting", "--desubroutinize",
                 "--name-IDs=*", "--name-legacy", "--name-languages=*"])
    shutil.copyfile(fonts / "LICENSE_DEJAVU", LICENCE)
    write_characters(OUTPUT, CHARACTERS)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size // 1024} KiB), {CHARACTERS} and {LICENCE}")


if __name__ == "__main__":
    main()
