"""Make mmseg importable on mmcv-lite, which ships no compiled ops.

mmseg 1.2.2 imports a few names from `mmcv.ops` at import time, some unguarded
(`point_sample` in its model utilities, `sigmoid_focal_loss` in its losses). On mmcv-lite
`import mmcv.ops` fails (there is no `mmcv._ext`), so `mmseg.models`, `mmseg.datasets` and
mmengine's Runner with mmseg's registries cannot be imported at all. scclip uses none of these
ops; `apply()` installs a small stand-in `mmcv.ops` module so the imports succeed:

- `point_sample` is implemented in plain torch (it is a `grid_sample` call);
- every other name resolves to a placeholder class that raises NotImplementedError when it is
  called or instantiated, so a config that really needs a compiled op fails with a clear message;
- mmcv-lite's import-time warning about deformable attention (which scclip never uses) is silenced.

With full mmcv, where `import mmcv.ops` works, nothing is changed.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings

import torch
import torch.nn.functional as F

_SHIM_FLAG = "__scclip_shim__"
# mmcv-lite warns on import that its deformable attention needs full mmcv; scclip never uses it.
_LITE_WARNING = "Fail to import ``MultiScaleDeformableAttention``"


def point_sample(
    input: torch.Tensor, points: torch.Tensor, align_corners: bool = False, **kwargs
) -> torch.Tensor:
    """Bilinearly sample `input` (N×C×H×W) at `points` in [0, 1] (x, y) coordinates.

    `points` is N×P×2 (returns N×C×P) or N×Hp×Wp×2 (returns N×C×Hp×Wp), as in mmcv.
    """
    flat = points.dim() == 3
    grid = points.unsqueeze(2) if flat else points  # N×P×1×2 or N×Hp×Wp×2
    output = F.grid_sample(input, 2.0 * grid - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if flat else output


def _placeholder(name: str) -> type:
    """A stand-in for the compiled op `name`: importable, failing only when used."""

    def refuse(cls, *args, **kwargs):
        raise NotImplementedError(
            f"mmcv.ops.{name} needs full mmcv (compiled ops); scclip does not use it. "
            f"Install mmcv with its ops to use it."
        )

    return type(name, (), {"__new__": refuse, "__module__": "mmcv.ops"})


def _build_shim() -> types.ModuleType:
    module = types.ModuleType("mmcv.ops", "Stand-in for mmcv's compiled ops, installed by scclip.compat.")
    module.point_sample = point_sample
    setattr(module, _SHIM_FLAG, True)

    def __getattr__(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(f"module 'mmcv.ops' has no attribute {name!r}")
        placeholder = _placeholder(name)
        setattr(module, name, placeholder)
        return placeholder

    module.__getattr__ = __getattr__
    return module


def _full_mmcv_ops_available() -> bool:
    try:
        importlib.import_module("mmcv.ops")
    except (ImportError, OSError):  # no or broken mmcv._ext
        return False
    return True


def apply() -> bool:
    """Install the `mmcv.ops` stand-in when mmcv's compiled ops cannot be imported.

    Idempotent. Returns True when the stand-in is in place (mmcv-lite), False when the real
    `mmcv.ops` is used (full mmcv) or mmcv is not installed.
    """
    existing = sys.modules.get("mmcv.ops")
    if existing is not None:
        return bool(getattr(existing, _SHIM_FLAG, False))
    if importlib.util.find_spec("mmcv") is None or _full_mmcv_ops_available():
        return False
    for key in [key for key in sys.modules if key.startswith("mmcv.ops.")]:
        del sys.modules[key]  # half-imported submodules of the failed real import
    warnings.filterwarnings("ignore", message=_LITE_WARNING, category=UserWarning)
    shim = _build_shim()
    sys.modules["mmcv.ops"] = shim
    sys.modules["mmcv"].ops = shim
    return True
