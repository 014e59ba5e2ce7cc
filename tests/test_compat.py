"""scclip.compat: mmseg imports on mmcv-lite, and nothing changes with full mmcv."""
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mmcv.ops
import pytest
import torch

import scclip.compat as compat

REPO_ROOT = Path(__file__).resolve().parents[1]
HAS_COMPILED_MMCV = importlib.util.find_spec("mmcv._ext") is not None

# A stand-in for full mmcv's compiled extension: every op name resolves, so the real
# (pure-Python) mmcv.ops package imports exactly as it does with full mmcv.
FAKE_COMPILED_MMCV = """
import sys, types
ext = types.ModuleType("mmcv._ext")
def _op(name):
    if name.startswith("__"):
        raise AttributeError(name)
    return lambda *args, **kwargs: None
ext.__getattr__ = _op
sys.modules["mmcv._ext"] = ext
"""


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter that imports this checkout of scclip."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow  # a new interpreter importing scclip and mmseg (~5 s); every test here imports them on mmcv-lite
@pytest.mark.skipif(HAS_COMPILED_MMCV, reason="full mmcv is installed; the mmcv-lite case cannot be run here")
def test_import_scclip_makes_mmseg_importable_on_mmcv_lite():
    result = run_python(
        """
        import scclip, scclip.compat
        import mmcv.ops
        assert mmcv.ops.__scclip_shim__
        assert scclip.compat.apply() is True and scclip.compat.apply() is True
        import mmseg.models, mmseg.datasets, mmseg.evaluation, mmseg.apis
        from mmengine.runner import Runner
        from mmseg.models.losses import FocalLoss
        from mmseg.utils import mask_classification
        assert mask_classification.point_sample is scclip.compat.point_sample
        print("imported")
        """
    )
    assert "imported" in result.stdout
    assert "MultiScaleDeformableAttention" not in result.stderr


@pytest.mark.slow  # a new interpreter importing scclip and mmseg on a stand-in for full mmcv (~5 s)
def test_full_mmcv_is_left_alone():
    result = run_python(
        FAKE_COMPILED_MMCV
        + """
import scclip, scclip.compat, mmcv.ops
assert scclip.compat.apply() is False
assert not hasattr(mmcv.ops, "__scclip_shim__")
assert mmcv.ops.point_sample.__module__ == "mmcv.ops.point_sample"
import mmseg.models
from mmseg.utils import mask_classification
assert mask_classification.point_sample is mmcv.ops.point_sample

# The stand-in samples exactly like mmcv's own pure-torch path.
import torch
features = torch.randn(2, 3, 5, 7)
points = torch.rand(2, 11, 2)
for align_corners in (False, True):
    expected = mmcv.ops.point_sample(features, points, align_corners=align_corners)
    got = scclip.compat.point_sample(features, points, align_corners=align_corners)
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()
print("untouched")
"""
    )
    assert "untouched" in result.stdout


def test_existing_mmcv_ops_module_is_not_replaced():
    # compat.py is loaded on its own: importing the scclip package would import mmseg on the fake.
    result = run_python(
        f"""
        import importlib.util, sys, types
        fake = types.ModuleType("mmcv.ops")
        fake.sentinel = object()
        sys.modules["mmcv.ops"] = fake
        sentinel = fake.sentinel
        spec = importlib.util.spec_from_file_location("compat", {str(REPO_ROOT / "scclip" / "compat.py")!r})
        compat = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(compat)
        assert compat.apply() is False
        assert sys.modules["mmcv.ops"] is fake and fake.sentinel is sentinel
        assert not hasattr(fake, "point_sample") and not hasattr(fake, "__scclip_shim__")
        assert compat.apply() is False
        print("kept")
        """
    )
    assert "kept" in result.stdout


requires_shim = pytest.mark.skipif(
    not getattr(mmcv.ops, "__scclip_shim__", False), reason="mmcv.ops is full mmcv's here, not scclip's stand-in"
)


@requires_shim
def test_apply_is_idempotent():
    shim = sys.modules["mmcv.ops"]
    assert compat.apply() is True
    assert sys.modules["mmcv.ops"] is shim


@requires_shim
def test_placeholders_import_but_refuse_when_used():
    from mmcv.ops import CrissCrossAttention, sigmoid_focal_loss

    assert not isinstance(object(), CrissCrossAttention)
    with pytest.raises(NotImplementedError, match=r"mmcv\.ops\.sigmoid_focal_loss needs full mmcv"):
        sigmoid_focal_loss(torch.zeros(1), torch.zeros(1), 2.0, 0.25, None, "mean")
    with pytest.raises(NotImplementedError, match=r"mmcv\.ops\.CrissCrossAttention needs full mmcv"):
        CrissCrossAttention(64)
    with pytest.raises(AttributeError):
        mmcv.ops.__path__  # noqa: B018 (not a package, so submodule imports fail as ModuleNotFoundError)


def test_point_sample_by_hand():
    # 1×1×2×2 map; with align_corners=False pixel (row, col) has its centre at ((col+.5)/2, (row+.5)/2).
    features = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    points = torch.tensor([[[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.5, 0.5], [0.5, 0.25]]])
    sampled = compat.point_sample(features, points)
    assert sampled.shape == (1, 1, 5)
    assert torch.allclose(sampled[0, 0], torch.tensor([0.0, 1.0, 2.0, 1.5, 0.5]))

    grid = points[:, :4].reshape(1, 2, 2, 2)
    assert compat.point_sample(features, grid).shape == (1, 1, 2, 2)
    assert torch.allclose(compat.point_sample(features, grid).flatten(), torch.tensor([0.0, 1.0, 2.0, 1.5]))

    corners = torch.tensor([[[0.0, 0.0], [1.0, 1.0]]])
    assert torch.allclose(compat.point_sample(features, corners, align_corners=True)[0, 0], torch.tensor([0.0, 3.0]))
