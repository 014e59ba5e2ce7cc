"""Run exported models (`scclip export`) without PyTorch: numpy, ONNX Runtime, Pillow, ftfy and regex only.

    from scclip.runtime import OnnxSegmenter
    result = OnnxSegmenter("exported/", classes="cat,sofa,wall")("cat.jpg")

`python -m scclip.runtime segment --model DIR --image IMG --classes 'a,b'` writes what `scclip segment`
writes. See docs/deploy.md.
"""
from .folder import ModelFolder
from .segmenter import OnnxSegmenter

__all__ = ["ModelFolder", "OnnxSegmenter"]
