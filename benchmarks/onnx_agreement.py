"""How often the torch-free runtime's labels equal PyTorch's, and why they may not (docs/deploy.md#parity).

Randomly initialised full-size weights (no download, one model per seed), exported with `scclip export`'s code; each photo
is segmented by `Segmenter` (PyTorch eager, fp32) and by `OnnxSegmenter` (ONNX Runtime, fp32) with the
same classes. Reported per photo: pixels, pixels whose labels differ, the share that agree, the largest
score difference between the two, and the gap between the two best PyTorch class scores at the
differing pixels (a near-tie: the two paths' rounding, about 10⁻⁶, decides which class wins), and how
many pixels are near-ties (best two PyTorch scores within 10⁻⁵).

    python benchmarks/onnx_agreement.py --seeds 0 1 2 --json onnx_agreement.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from scclip.api import Segmenter  # noqa: E402
from scclip.clip.architectures import random_clip  # noqa: E402
from scclip.export import export_model  # noqa: E402
from scclip.runtime import OnnxSegmenter  # noqa: E402
from scclip.vocabulary import SAMPLE_IMAGE  # noqa: E402

CLASSES = "background,aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person," \
          "plant,sheep,sofa,train,monitor"


def photos() -> dict[str, np.ndarray]:
    """The bundled photo and scikit-image's public-domain ones (when installed), as RGB arrays."""
    found = {"astronaut": np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB"))}
    try:
        from skimage import data
    except ImportError:
        return found
    return {**found, "chelsea": data.chelsea(), "coffee": data.coffee(), "rocket": data.rocket()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B/16", help="architecture of the random weights (default ViT-B/16)")
    parser.add_argument("--method", default="scclip")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the random weights")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads of both libraries (default 0: each library's own default, as a user runs it)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="scclip_onnx_agreement_"))
    results: dict = dict(backbone=args.backbone, method=args.method, classes=CLASSES.count(",") + 1,
                         threads=args.threads or "defaults", torch=torch.__version__,
                         onnxruntime=__import__("onnxruntime").__version__, photos={})
    total = differing = 0
    try:
        for seed in args.seeds:
            clip = random_clip(args.backbone, seed=seed)
            export_model(args.backbone, work / f"model{seed}", method=args.method, clip_model=clip)
            eager = Segmenter(args.backbone, classes=CLASSES, method=args.method, clip_model=clip, text_cache=False)
            runtime = OnnxSegmenter(work / f"model{seed}", classes=CLASSES, threads=args.threads or None)
            for name, image in photos().items():
                expected, result = eager(image), runtime(image)
                differ = expected.labels != result.labels
                top2 = np.sort(expected.scores, axis=0)[-2:]
                gaps = (top2[1] - top2[0])[differ]
                results["photos"][f"{name} (seed {seed})"] = dict(
                    size=list(image.shape[:2]), pixels=int(differ.size), differing=int(differ.sum()),
                    agreement=float(1 - differ.mean()),
                    max_score_difference=float(np.abs(expected.scores - result.scores).max()),
                    max_top2_gap_where_differing=float(gaps.max()) if gaps.size else None,
                    near_ties=int(((top2[1] - top2[0]) <= 1e-5).sum()),
                )
                total += differ.size
                differing += int(differ.sum())
        results["all"] = dict(pixels=total, differing=differing, agreement=1 - differing / total)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
