"""scclip: Self-Calibrated CLIP for training-free open-vocabulary semantic segmentation.

Importing scclip first makes mmseg importable without compiled mmcv ops (see `scclip.compat`),
then registers the segmentor and datasets with mmseg's registries.
"""
from . import compat

compat.apply()

from . import datasets  # noqa: E402,F401  (registers the benchmark datasets)
from .api import SegmentationResult, Segmenter  # noqa: E402
from .calibration import CalibrationConfig, SCCLIPEncoder  # noqa: E402
from .errors import ScclipError  # noqa: E402
from .methods import available_methods  # noqa: E402
from .segmentor import SCCLIPDataPreProcessor, SCCLIPForSegmentation  # noqa: E402
from .text import Vocabulary  # noqa: E402

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
