"""The eight benchmarks of the paper, declared once, and the vocabularies and configs shipped with the package.

Everything that lists benchmarks reads `BENCHMARKS`: the published numbers (`scclip.published`),
the summary of runs, the web page's menu, `Segmenter(vocab="voc21")` and `dist_test.sh` (through
`python -m scclip benchmarks`). Adding a benchmark is one entry here, its dataset class (if mmseg
has none) and its config (docs/adding.md).

The configs by key (`scclip eval --config voc21`, `--config custom --data-root DIR`): the
repository's configs/ folder is the one copy; a wheel ships it as the package `scclip.configs`
(setup.py maps it there at build time), and a checkout or an editable install reads it in place.
A key picks the config holding the published settings of the backbone's size (`cfg_<key>.py` or
`cfg_<key>_vitl14.py`) and, for a method with a folder of its release's settings
(configs/<method>/), that folder's config.
"""
import os
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from functools import cache
from importlib import resources
from pathlib import Path

from .errors import InputError, VocabularyError
from .fileio import read_user_text

VOCABULARY_FOLDER = "vocabularies"
VOCABULARY_SUFFIX = ".txt"


@dataclass(frozen=True)
class Benchmark:
    """One benchmark.

    Attributes:
        key: its name everywhere: configs (`benchmark=`), published tables, `--vocab`, `DATASETS=`.
        title: its name in tables of results.
        description: what it is, for menus.
        dataset: the mmseg dataset class that reads it.
        images: the size of its full validation split (a run of fewer images is not comparable).
        menu: its vocabulary's name in the web page's menu.
        config: the config of SC-CLIP's published ViT-B/16 run, relative to the repository root.
    """

    key: str
    title: str
    description: str
    dataset: str
    images: int
    menu: str

    @property
    def config(self) -> str:
        return f"configs/cfg_{self.key}.py"

    @property
    def vocabulary(self) -> Path:
        """The shipped vocabulary file (one class per line, synonyms after ', ')."""
        return shipped_vocabulary(self.key)

    def class_names(self) -> tuple[str, ...]:
        """The dataset's own class names (what tables and pictures show), in label order."""
        from mmseg.registry import DATASETS

        return tuple(DATASETS.get(self.dataset).METAINFO["classes"])


# In the paper's order.
BENCHMARKS: dict[str, Benchmark] = {
    benchmark.key: benchmark
    for benchmark in (
        Benchmark("voc21", "VOC21", "PASCAL VOC 2012 val, 21 classes with background", "PascalVOCDataset", 1449, "PASCAL VOC with background"),
        Benchmark("context60", "Context60", "PASCAL Context val, 60 classes with background",
                  "PascalContext60Dataset", 5105, "PASCAL Context with background"),
        Benchmark("coco_object", "COCO-Object", "COCO-Object val2017, 80 things and background",
                  "COCOObjectDataset", 5000, "COCO-Object"),
        Benchmark("voc20", "VOC20", "PASCAL VOC 2012 val, 20 classes (background ignored)",
                  "PascalVOC20Dataset", 1449, "PASCAL VOC"),
        Benchmark("context59", "Context59", "PASCAL Context val, 59 classes (background ignored)",
                  "PascalContext59Dataset", 5105, "PASCAL Context"),
        Benchmark("coco_stuff164k", "COCO-Stuff", "COCO-Stuff 164k val2017, 171 classes", "COCOStuffDataset", 5000, "COCO-Stuff"),
        Benchmark("city_scapes", "Cityscapes", "Cityscapes val, 19 classes", "CityscapesDataset", 500, "Cityscapes"),
        Benchmark("ade20k", "ADE20K", "ADE20K val, 150 classes", "ADE20KDataset", 2000, "ADE20K"),
    )
}
# Benchmarks without a background class (ClearCLIP's README averages these five).
WITHOUT_BACKGROUND = ("voc20", "context59", "coco_stuff164k", "city_scapes", "ade20k")


def shipped_vocabulary(name: str) -> Path:
    """The path of a vocabulary shipped in the package (`scclip/data/vocabularies/<name>.txt`)."""
    return Path(str(resources.files("scclip").joinpath("data", VOCABULARY_FOLDER, name + VOCABULARY_SUFFIX)))


def check_benchmarks(keys: Sequence[str]) -> None:
    """Raise `InputError` naming the first key that is not a benchmark, with the closest one."""
    for key in keys:
        if key not in BENCHMARKS:
            close = get_close_matches(key, BENCHMARKS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"{key!r} is not a benchmark{hint}: use {' '.join(BENCHMARKS)}")


def vocabulary_names() -> list[str]:
    """The names `--vocab` / `vocab=` accept besides files: the benchmarks' keys."""
    return list(BENCHMARKS)


def vocabulary_file(name_or_path: str | os.PathLike) -> Path:
    """A vocabulary file from a benchmark's name ('voc21') or a path; an existing file wins.

    Raises:
        VocabularyError: neither a file nor a benchmark name (the closest name is suggested).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in BENCHMARKS:
        return BENCHMARKS[name].vocabulary
    if path.exists():
        raise VocabularyError(f"vocabulary {path} is a folder: give a vocabulary file or a benchmark name")
    if path.suffix or len(path.parts) > 1:
        raise VocabularyError(f"vocabulary file not found: {path} (one class per line; or name a benchmark's "
                              f"vocabulary: {', '.join(vocabulary_names())})")
    close = get_close_matches(name, vocabulary_names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise VocabularyError(
        f"vocabulary {name!r} is neither a file nor a benchmark name{hint}: give a file with one class per line, "
        f"or one of {', '.join(vocabulary_names())}"
    )


def benchmark_of_vocabulary(lines: Sequence[str]) -> Benchmark | None:
    """The benchmark whose shipped vocabulary `lines` begin with (the longest such), or None."""
    given = tuple(_normalised(line) for line in lines)
    found = [benchmark for benchmark in BENCHMARKS.values()
             if given[: len(shipped_lines(benchmark.key))] == shipped_lines(benchmark.key)]
    return max(found, key=lambda benchmark: len(shipped_lines(benchmark.key)), default=None)


@cache
def shipped_lines(key: str) -> tuple[str, ...]:
    """The lines of a benchmark's shipped vocabulary, each as 'name, synonym, ...'."""
    text = read_user_text(BENCHMARKS[key].vocabulary)
    return tuple(_normalised(line) for line in text.splitlines() if line.strip())


def _normalised(line: str) -> str:
    return ", ".join(name.strip() for name in line.split(","))


FOLDER_KEY = "custom"  # configs/cfg_custom.py: a labelled folder of your own (--data-root DIR)


def config_root() -> Path:
    """The folder of the benchmark configs: the installed package's copy, else the checkout's configs/."""
    packaged = Path(str(resources.files("scclip"))) / "configs"
    if (packaged / "base_config.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[1] / "configs"


def config_keys() -> list[str]:
    """What --config takes besides a file: every benchmark key, and 'custom'."""
    return [*BENCHMARKS, FOLDER_KEY]


def one_config_for_every_backbone(folder: Path) -> bool:
    """Whether a method's config folder serves every backbone with one config per benchmark (its release.py
    sets `settings_for_every_backbone = True`, as ResCLIP's: its release runs ViT-L/14 through --backbone)."""
    release = folder / "release.py"
    return release.is_file() and "\nsettings_for_every_backbone = True\n" in f"\n{release.read_text(encoding='utf-8')}"


def resolve_config(name_or_path: str, method: str | None = None, suffix: str = "") -> str:
    """The config file `--config` names: a path as given, or a key's config (see the module docstring).

    Args:
        name_or_path: a config file, or a key of `config_keys()`.
        method: --method; a key then takes configs/<method>/ where that folder has the benchmark.
        suffix: the backbone's config suffix ('' or '_vitl14'; scclip.clip.records).
    """
    if Path(name_or_path).is_file() or name_or_path not in config_keys():
        return name_or_path
    root = config_root()
    if name_or_path == FOLDER_KEY:
        return str(root / f"cfg_{FOLDER_KEY}.py")
    candidates = [root / method / f"cfg_{name_or_path}{suffix}.py"] if method else []
    if method and one_config_for_every_backbone(root / method):
        candidates.append(root / method / f"cfg_{name_or_path}.py")
    candidates += [root / f"cfg_{name_or_path}{suffix}.py", root / f"cfg_{name_or_path}.py"]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise InputError(f"--config {name_or_path}: no config for it in {root}")


@cache
def inference_scale() -> tuple[int, int]:
    """The benchmarks' test-time resize (long side, short side) as base_config.py states it: the photo path
    (`scclip.Segmenter`, predict.py) and an export resize as the benchmarks do, from this one place."""
    from mmengine.config import Config

    cfg = Config.fromfile(str(config_root() / "base_config.py"), import_custom_modules=False)
    (scale,) = [step["scale"] for step in cfg.test_pipeline if step["type"] == "Resize"]
    return tuple(scale)
