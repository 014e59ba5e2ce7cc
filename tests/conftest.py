"""Shared fixtures: tiny random CLIP checkpoints in OpenAI's formats, and the golden data folder; and
how the suite spreads over the cores.

torch, mmengine and scclip are imported in `pytest_configure` and in the fixtures, not here: under
pytest-xdist the controlling process only hands out tests, and importing them there (~5 s) would
delay every worker's start.
"""
from __future__ import annotations

import atexit
import logging
import lzma
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# Real layer counts and patch sizes (so the published hyper-parameters apply), tiny widths.
TINY_TEXT = dict(transformer_width=64, transformer_heads=1, transformer_layers=2, embed_dim=32)
TINY_B16 = dict(vision_width=64, **TINY_TEXT)
TINY_L14 = dict(vision_width=64, **TINY_TEXT)
# Workers when the whole suite runs on every core: each holds its own torch and models in memory.
MAX_WORKERS = 8


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """`python -m pytest` without paths (the whole suite, or a `-m` selection of it) runs on every core
    with pytest-xdist when it is installed. Each worker starts with a contiguous share of the tests (so a
    module's models are mostly built once) and an idle one takes over the rest of a busy one's share
    (`--dist worksteal`: the best balance of those measured). Named files or tests run in this process
    as before; `-n N` or `--dist` always decide, and `-n 0` or `-p no:xdist` runs everything here."""
    if (not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput")
            or config.option.numprocesses is not None or config.args_source != pytest.Config.ArgsSource.TESTPATHS):
        return
    config.option.numprocesses = "auto"
    if config.option.dist == "no":
        config.option.dist = "worksteal"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """One worker per usable core, at most MAX_WORKERS; $PYTEST_XDIST_AUTO_NUM_WORKERS, when set, decides."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
               MAX_WORKERS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end runs that take more than a few seconds")
    if hasattr(config, "workerinput"):
        one_thread_per_worker()
    if not hands_out_tests_only(config):
        # Before any test module is imported: scclip.compat lets mmseg import on mmcv-lite, and several
        # modules import mmcv.ops or mmseg before scclip.
        import scclip  # noqa: F401


def hands_out_tests_only(config: pytest.Config) -> bool:
    """Whether this is pytest-xdist's controlling process, which collects and runs nothing itself."""
    return (config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput")
            and config.getoption("dist") != "no" and not config.getoption("collectonly"))


def one_thread_per_worker() -> None:
    """Each xdist worker has a core of its own: one torch thread, here and in the scripts the tests start
    (torchrun, eval.py, demo.py); more threads than cores only spin and wait for each other."""
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


class CurrentStdout:
    """Writes to whatever `sys.stdout` is now (pytest's capture replaces it for every test)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture(autouse=True)
def loggers_follow_capture():
    """mmengine's console handlers keep the stream they were made with, which the capture of an
    earlier test has closed since; point them at the current stdout before every test."""
    from mmengine.logging import MMLogger

    for logger in list(MMLogger._instance_dict.values()):
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.stream = CurrentStdout()


@pytest.fixture(scope="session", autouse=True)
def private_text_cache(tmp_path_factory):
    """Tests never read or write the user's text-feature cache (~/.cache/scclip)."""
    previous = os.environ.get("SCCLIP_CACHE_DIR")
    os.environ["SCCLIP_CACHE_DIR"] = str(tmp_path_factory.mktemp("scclip_cache"))
    yield
    if previous is None:
        del os.environ["SCCLIP_CACHE_DIR"]
    else:
        os.environ["SCCLIP_CACHE_DIR"] = previous


GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
COMPRESSED_SUFFIX = ".xz"
_decompressed: dict[Path, Path] = {}


def golden_root() -> Path:
    """`$SCCLIP_GOLDEN_DIR` when set (e.g. the full release outputs), else the compact copy in tests/golden."""
    configured = os.environ.get("SCCLIP_GOLDEN_DIR")
    return Path(configured) if configured else GOLDEN_DIR


def golden_dir_or_none() -> Path | None:
    """The golden folder (see `golden_root`) when it exists."""
    path = golden_root()
    return path if path.is_dir() else None


def golden_file(path: Path) -> Path:
    """A readable file for a path that a golden case names (relative paths resolved by the caller).

    The compact golden data ship large files xz-compressed (`clip_b16_seed0.pt.xz`); asked for
    `clip_b16_seed0.pt`, this decompresses it once per session into a private temporary folder.
    """
    path = Path(path)
    if path.is_file():
        return path
    compressed = path.with_name(path.name + COMPRESSED_SUFFIX)
    if not compressed.is_file():
        pytest.fail(f"golden file missing: {path} (nor {compressed.name}): see tests/golden/make_compact.py")
    key = compressed.resolve()
    if key not in _decompressed:
        folder = Path(tempfile.mkdtemp(prefix="scclip_golden_"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        target = folder / path.name
        target.write_bytes(lzma.decompress(compressed.read_bytes()))
        _decompressed[key] = target
    return _decompressed[key]


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = golden_root()
    if not path.is_dir():
        pytest.fail(f"golden outputs not found at {path}: unset SCCLIP_GOLDEN_DIR to use the copy in tests/golden")
    return path


@pytest.fixture(scope="session")
def tiny_b16_model():
    """A randomly initialised CLIP with ViT-B/16's depth and patch size, width 64."""
    from scclip.clip.architectures import random_clip

    return random_clip("ViT-B/16", seed=0, **TINY_B16)


@pytest.fixture(scope="session")
def tiny_state_dict(tiny_b16_model) -> dict[str, torch.Tensor]:
    """fp16 state dict in OpenAI's key layout."""
    return {k: v.half() for k, v in tiny_b16_model.state_dict().items()}


@pytest.fixture(scope="session")
def tiny_checkpoint_path(tmp_path_factory, tiny_b16_model) -> Path:
    """ViT-B/16-shaped tiny checkpoint saved as a plain fp16 state dict."""
    from scclip.clip.architectures import save_checkpoint

    return save_checkpoint(tiny_b16_model, tmp_path_factory.mktemp("ckpt") / "tiny_b16.pt")


@pytest.fixture(scope="session")
def tiny_jit_checkpoint_path(tmp_path_factory, tiny_b16_model) -> Path:
    """The same weights saved as a TorchScript archive, like OpenAI's release files."""
    from scclip.clip.architectures import save_checkpoint

    return save_checkpoint(tiny_b16_model, tmp_path_factory.mktemp("ckpt") / "tiny_b16_jit.pt", torchscript=True)


@pytest.fixture(scope="session")
def tiny_l14_checkpoint_path(tmp_path_factory) -> Path:
    """ViT-L/14-shaped (24 blocks, patch 14) tiny checkpoint, plain fp16 state dict."""
    from scclip.clip.architectures import random_clip, save_checkpoint

    model = random_clip("ViT-L/14", seed=1, **TINY_L14)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny_l14.pt")


@pytest.fixture(scope="session")
def tiny_dino_path(tmp_path_factory) -> Path:
    """A DINO-layout VFM for ProxyCLIP: patch 8, 28×28 trained positions, width 64 (1 head), 4 blocks, fp16 values."""
    import torch

    from scclip.dino import random_dino

    path = tmp_path_factory.mktemp("vfm") / "tiny_dino.pth"
    torch.save(random_dino(seed=0, width=64, depth=4), path)
    return path
