"""scclip: Self-Calibrated CLIP for training-free open-vocabulary semantic segmentation.

Where torch is installed, importing scclip first makes mmseg importable without compiled mmcv ops
(see `scclip.compat`), then registers the segmentor and datasets with mmseg's registries. Where it
is not (a deployment with only the ONNX runtime, docs/deploy.md), nothing torch-side is imported:
`scclip.runtime` works, and the torch-side names below say what to install when asked for.
"""
from importlib.util import find_spec

__version__ = "0.1.0"
__all__ = [
    "CalibrationConfig",
    "SCCLIPDataPreProcessor",
    "SCCLIPEncoder",
    "SCCLIPForSegmentation",
    "ScclipError",
    "available_methods",
    "SegmentationResult",
    "Segmenter",
    "Vocabulary",
]

from .errors import ScclipError  # noqa: E402
from .result import SegmentationResult  # noqa: E402


def _torch_installed() -> bool:
    try:
        return find_spec("torch") is not None
    except (ImportError, ValueError):  # a finder that refuses torch, or a broken installation's module
        return False


HAS_TORCH = _torch_installed()

if HAS_TORCH:
    from . import compat

    compat.apply()

    from . import datasets  # noqa: E402,F401  (registers the benchmark datasets)
    from .api import Segmenter  # noqa: E402
    from .calibration import CalibrationConfig, SCCLIPEncoder  # noqa: E402
    from .methods import available_methods  # noqa: E402
    from .segmentor import SCCLIPDataPreProcessor, SCCLIPForSegmentation  # noqa: E402
    from .text import Vocabulary  # noqa: E402
else:

    def __getattr__(name: str):
        """The torch-side names, asked for where torch is not installed: one line saying what to do."""
        if name in __all__:
            raise ImportError(f"scclip.{name} needs PyTorch, which is not installed here: pip install scclip "
                              "(or run exported models with scclip.runtime.OnnxSegmenter, docs/deploy.md)")
        raise AttributeError(f"module 'scclip' has no attribute {name!r}")
