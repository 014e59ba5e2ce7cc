"""PyTorch eager vs ONNX Runtime on the CPU, same image, same run (docs/deploy.md#speed-and-size).

With randomly initialised full-size weights (no download; the timings do not depend on the values):
- the export itself (`scclip.export.export_model`, on-the-spot checks included), timed;
- per-image time of `Segmenter` (PyTorch eager, fp32) and `OnnxSegmenter` (ONNX Runtime, fp32) on one
  336×448 image (six 224 windows), both with the same number of threads; and ONNX Runtime with the
  image encoder quantised to int8 (dynamic quantisation), when it keeps ≥ 99% of the pixels' labels;
- int8's pixel agreement with fp32 on the golden images (tests/golden, their tiny checkpoint) and on
  the 336×448 image;
- model file sizes; the runtime's import time and peak memory in a process where torch cannot be
  imported (as in a deployment without it).

    python benchmarks/onnx_speed.py --backbone ViT-B/16 --threads 1 --json onnx_speed.json
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scclip.api import Segmenter  # noqa: E402
from scclip.clip import load  # noqa: E402
from scclip.clip.architectures import random_clip  # noqa: E402
from scclip.export import IMAGE_GRAPH, MODEL_JSON, export_model, sha256_of  # noqa: E402
from scclip.runtime import OnnxSegmenter  # noqa: E402

SIZE = (336, 448)
CLASSES = "background,aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person," \
          "plant,sheep,sofa,train,monitor"
AGREEMENT_NEEDED = 0.99
BLOCKED = ("torch", "mmcv", "mmengine", "mmseg", "cv2", "torchvision")
IMPORT_PROBE = f"""
import importlib.abc, resource, sys, time
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
start = time.perf_counter()
import scclip.runtime
imported = time.perf_counter() - start
import numpy as np
segmenter = scclip.runtime.OnnxSegmenter(sys.argv[1], classes={CLASSES!r}, threads=int(sys.argv[2]))
segmenter(np.load(sys.argv[3]))
print(imported, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def test_image(seed: int = 0) -> np.ndarray:
    """A 336×448 image of flat blocks (photo-like regions, not noise)."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((28, 28, 1))).astype(np.uint8)


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up: allocations, ONNX Runtime's first-run set-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def quantised_copy(folder: Path, out: Path) -> Path:
    """The model folder with its image encoder quantised to int8 (dynamic, weights of MatMul/Gemm), checksums updated."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    shutil.copytree(folder, out)
    quantize_dynamic(str(folder / IMAGE_GRAPH), str(out / IMAGE_GRAPH), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul", "Gemm"])
    meta = json.loads((out / MODEL_JSON).read_text())
    meta["files"][IMAGE_GRAPH] = sha256_of(out / IMAGE_GRAPH)
    meta["precision"] = "int8 image encoder (dynamic quantisation), fp32 text encoder"
    (out / MODEL_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def golden_agreement(work: Path) -> dict[str, float]:
    """int8 vs fp32 pixel agreement of the SC-CLIP runtime on the golden images (their tiny ViT-B/16 checkpoint)."""
    from conftest import GOLDEN_DIR, golden_file

    checkpoint = golden_file(GOLDEN_DIR / "clip_b16_seed0.pt")
    clip, _ = load(checkpoint, device="cpu")
    export_model(checkpoint, work / "golden", clip_model=clip)
    quantised_copy(work / "golden", work / "golden_int8")
    fp32 = OnnxSegmenter(work / "golden", classes=CLASSES)
    int8 = OnnxSegmenter(work / "golden_int8", classes=CLASSES)
    agreement = {}
    for image_file in sorted(GOLDEN_DIR.glob("b16_*_image.npy")):
        image = np.load(image_file)
        agreement[image_file.stem] = float((fp32(image).labels == int8(image).labels).mean())
    return agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B/16", help="architecture of the random weights (default ViT-B/16)")
    parser.add_argument("--method", default="scclip")
    parser.add_argument("--threads", type=int, default=1, help="threads for both PyTorch and ONNX Runtime (default 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = dict(
        machine=dict(platform=platform.platform(), processor=platform.processor(), python=platform.python_version(),
                     torch=torch.__version__, onnxruntime=__import__("onnxruntime").__version__),
        backbone=args.backbone, method=args.method, threads=args.threads, image=list(SIZE), classes=CLASSES.count(",") + 1,
    )
    work = Path(tempfile.mkdtemp(prefix="scclip_onnx_speed_"))
    try:
        clip = random_clip(args.backbone)
        start = time.perf_counter()
        export_model(args.backbone, work / "model", method=args.method, clip_model=clip)
        results["export_seconds"] = round(time.perf_counter() - start, 1)
        results["file_mb"] = {path.name: round(path.stat().st_size / 2**20, 1) for path in sorted((work / "model").iterdir())}
        image = test_image()
        np.save(work / "image.npy", image)
        eager = Segmenter(args.backbone, classes=CLASSES, method=args.method, clip_model=clip, text_cache=False)
        runtime = OnnxSegmenter(work / "model", classes=CLASSES, threads=args.threads)
        results["pytorch_eager_fp32_s"] = median_seconds(lambda: eager(image), args.repeats)
        results["onnxruntime_fp32_s"] = median_seconds(lambda: runtime(image), args.repeats)
        results["speed-up_fp32"] = results["pytorch_eager_fp32_s"] / results["onnxruntime_fp32_s"]
        expected = eager(image).labels
        results["fp32_pixel_agreement_with_pytorch"] = float((runtime(image).labels == expected).mean())

        quantised_copy(work / "model", work / "model_int8")
        results["file_mb"]["image_encoder.onnx (int8)"] = round((work / "model_int8" / IMAGE_GRAPH).stat().st_size / 2**20, 1)
        int8 = OnnxSegmenter(work / "model_int8", classes=CLASSES, threads=args.threads)
        results["int8_pixel_agreement_336x448"] = float((int8(image).labels == runtime(image).labels).mean())
        results["int8_pixel_agreement_golden"] = golden_agreement(work)
        agreements = [results["int8_pixel_agreement_336x448"], *results["int8_pixel_agreement_golden"].values()]
        results["int8_kept"] = min(agreements) >= AGREEMENT_NEEDED
        if results["int8_kept"]:
            results["onnxruntime_int8_s"] = median_seconds(lambda: int8(image), args.repeats)

        probe = subprocess.run([sys.executable, "-c", IMPORT_PROBE, str(work / "model"), str(args.threads),
                                str(work / "image.npy")], capture_output=True, text=True,
                               env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}, check=True)
        imported, peak = probe.stdout.split()
        results["runtime_import_s"] = round(float(imported), 3)
        results["runtime_peak_rss_mb"] = round(float(peak), 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
