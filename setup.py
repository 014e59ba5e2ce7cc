"""Packaging beyond pyproject.toml: the repository's configs/ ship as the package `scclip.configs`.

configs/ stays where `python eval.py` and dist_test.sh read it, and is the one copy: the wheel maps
it (and each method's folder in it) to scclip/configs/, where `scclip eval --config NAME` finds it
once installed (scclip/benchmarks.py). Everything else is declared in pyproject.toml.
"""
from pathlib import Path

from setuptools import find_packages, setup

CONFIG_FOLDERS = sorted(path.parent.relative_to("configs") for path in Path("configs").glob("**/*.py"))
CONFIG_PACKAGES = {".".join(("scclip", "configs", *folder.parts)): str(Path("configs", folder))
                   for folder in CONFIG_FOLDERS}

setup(
    packages=[*find_packages(include=["scclip", "scclip.*"]), *CONFIG_PACKAGES],
    package_dir=CONFIG_PACKAGES,
)
