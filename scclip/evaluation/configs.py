"""The benchmark configs by key: `scclip eval --config voc21`, `--config custom --data-root DIR`.

The repository's configs/ folder is the one copy: a wheel ships it as the package `scclip.configs`
(setup.py maps it there at build time), and a checkout or an editable install reads it in place.
A key picks the config holding the published settings of the backbone's size (`cfg_<key>.py` or
`cfg_<key>_vitl14.py`) and, for a method with a folder of its release's settings
(configs/<method>/), that folder's config.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..benchmarks import BENCHMARKS
from ..errors import InputError

FOLDER_KEY = "custom"  # configs/cfg_custom.py: a labelled folder of your own (--data-root DIR)


def config_root() -> Path:
    """The folder of the benchmark configs: the installed package's copy, else the checkout's configs/."""
    packaged = Path(str(resources.files("scclip"))) / "configs"
    if (packaged / "base_config.py").is_file():
        return packaged
    return Path(__file__).resolve().parents[2] / "configs"


def config_keys() -> list[str]:
    """What --config takes besides a file: every benchmark key, and 'custom'."""
    return [*BENCHMARKS, FOLDER_KEY]


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
    candidates += [root / f"cfg_{name_or_path}{suffix}.py", root / f"cfg_{name_or_path}.py"]
    for candidate in candidates:
        if candidate.is_file():
            return str(candidate)
    raise InputError(f"--config {name_or_path}: no config for it in {root}")
