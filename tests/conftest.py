"""Shared fixtures: tiny random CLIP checkpoints in OpenAI's formats, and the golden data folder."""
import logging
import os
import sys
from pathlib import Path

import pytest
import torch
from mmengine.logging import MMLogger

from scclip.clip.architectures import random_clip, save_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]

# Real layer counts and patch sizes (so the published hyper-parameters apply), tiny widths.
TINY_TEXT = dict(transformer_width=64, transformer_heads=1, transformer_layers=2, embed_dim=32)
TINY_B16 = dict(vision_width=64, **TINY_TEXT)
TINY_L14 = dict(vision_width=64, **TINY_TEXT)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end runs that take more than a few seconds")


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


def golden_dir_or_none() -> Path | None:
    """`$SCCLIP_GOLDEN_DIR`, else `../shared/golden` beside the repository, when it exists."""
    configured = os.environ.get("SCCLIP_GOLDEN_DIR")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "golden"
    return path if path.is_dir() else None


def golden_file(path: Path) -> Path:
    """A readable file for a path that a golden case names (relative paths resolved by the caller)."""
    if not path.is_file():
        pytest.fail(f"golden file missing: {path}")
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    path = golden_dir_or_none()
    if path is None:
        pytest.skip("golden outputs not found: set SCCLIP_GOLDEN_DIR or place them at ../shared/golden")
    return path


@pytest.fixture(scope="session")
def tiny_b16_model():
    """A randomly initialised CLIP with ViT-B/16's depth and patch size, width 64."""
    return random_clip("ViT-B/16", seed=0, **TINY_B16)


@pytest.fixture(scope="session")
def tiny_state_dict(tiny_b16_model) -> dict[str, torch.Tensor]:
    """fp16 state dict in OpenAI's key layout."""
    return {k: v.half() for k, v in tiny_b16_model.state_dict().items()}


@pytest.fixture(scope="session")
def tiny_checkpoint_path(tmp_path_factory, tiny_b16_model) -> Path:
    """ViT-B/16-shaped tiny checkpoint saved as a plain fp16 state dict."""
    return save_checkpoint(tiny_b16_model, tmp_path_factory.mktemp("ckpt") / "tiny_b16.pt")


@pytest.fixture(scope="session")
def tiny_jit_checkpoint_path(tmp_path_factory, tiny_b16_model) -> Path:
    """The same weights saved as a TorchScript archive, like OpenAI's release files."""
    return save_checkpoint(tiny_b16_model, tmp_path_factory.mktemp("ckpt") / "tiny_b16_jit.pt", torchscript=True)


@pytest.fixture(scope="session")
def tiny_l14_checkpoint_path(tmp_path_factory) -> Path:
    """ViT-L/14-shaped (24 blocks, patch 14) tiny checkpoint, plain fp16 state dict."""
    model = random_clip("ViT-L/14", seed=1, **TINY_L14)
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny_l14.pt")
