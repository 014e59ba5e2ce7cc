"""What storing each image's metric contribution costs, next to what evaluating the image costs.

Resumable evaluation (`eval.py`) computes each image's int64 areas (intersection, union,
prediction, label per class) and appends them as one checked record to the run's shard file,
with an fsync at most every 10 s. This times, per image:
- `areas`: computing the 4×C areas from the prediction and the label;
- `store`: encoding and appending the record (plus the periodic fsyncs);
- `mmseg`: mmseg's own IoUMetric.process on the same sample, for comparison (eval.py no longer runs it);
- `inference`: SC-CLIP with a randomly initialised full-size ViT-B/16 on one 336×448 image
  (6 windows of 224, stride 112), the CPU benchmark case of docs/speed.md;
and, once, reading back a whole COCO-Stuff-sized store (5,000 images × 171 classes) on resume.

    python benchmarks/store_overhead.py                    # ~1 min on 2 cores
    python benchmarks/store_overhead.py --images 200 --json store.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import scclip  # noqa: E402,F401  (mmseg importable on mmcv-lite)
from scclip.evaluation.metrics import image_areas  # noqa: E402
from scclip.evaluation.store import ImageAreas, ShardWriter, read_store  # noqa: E402

# (label size, classes): VOC and COCO-Stuff validation images.
CASES = {"VOC21 500×375": ((375, 500), 21), "COCO-Stuff 640×480": ((480, 640), 171)}
RESUME_IMAGES = 5000


def sample(size: tuple[int, int], num_classes: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A prediction and a label map of blocky regions (with ignored pixels), like real ones."""
    blocks = (size[0] // 25 + 1, size[1] // 25 + 1)
    label = np.kron(rng.integers(0, num_classes, blocks), np.ones((25, 25), dtype=np.int64))[: size[0], : size[1]]
    label[rng.random(size) < 0.05] = 255
    prediction = np.where(rng.random(size) < 0.7, np.minimum(label, num_classes - 1), rng.integers(0, num_classes, size))
    return torch.from_numpy(prediction)[None], torch.from_numpy(label.astype(np.uint8))[None]


def time_storing(size: tuple[int, int], num_classes: int, images: int, folder: Path) -> dict[str, float]:
    """Mean milliseconds per image of computing the areas, storing them, and mmseg's IoUMetric.process."""
    from mmseg.evaluation import IoUMetric
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData

    rng = np.random.default_rng(0)
    samples = [sample(size, num_classes, rng) for _ in range(min(images, 20))]
    writer = ShardWriter(folder, "benchmark", images, num_classes, rank=0)
    metric = IoUMetric(ignore_index=255)
    metric.dataset_meta = dict(classes=[str(index) for index in range(num_classes)])
    area_times, store_times, mmseg_times = [], [], []
    for index in range(images):
        prediction, label = samples[index % len(samples)]
        start = time.perf_counter()
        areas = image_areas(prediction, label, num_classes, 255)
        middle = time.perf_counter()
        writer.append(ImageAreas(index, f"images/{index:012d}.jpg", areas))
        end = time.perf_counter()
        data_sample = SegDataSample(pred_sem_seg=PixelData(data=prediction), gt_sem_seg=PixelData(data=label))
        mmseg_start = time.perf_counter()
        metric.process({}, [data_sample.to_dict()])
        mmseg_times.append(time.perf_counter() - mmseg_start)
        area_times.append(middle - start)
        store_times.append(end - middle)
    writer.close()
    return dict(areas_ms=1000 * statistics.mean(area_times), store_ms=1000 * statistics.mean(store_times),
                mmseg_process_ms=1000 * statistics.mean(mmseg_times))


def time_resume_read(folder: Path) -> float:
    """Seconds to read back a store of RESUME_IMAGES images × 171 classes."""
    writer = ShardWriter(folder, "resume", RESUME_IMAGES, 171, rank=0)
    areas = np.arange(4 * 171, dtype=np.int64).reshape(4, 171)
    for index in range(RESUME_IMAGES):
        writer.append(ImageAreas(index, f"images/val2017/{index:012d}.jpg", areas))
    writer.close()
    start = time.perf_counter()
    stored, _ = read_store(folder, "resume")
    assert len(stored) == RESUME_IMAGES
    return time.perf_counter() - start


def time_inference(repeats: int) -> float:
    """Median seconds per 336×448 image with a random full-size ViT-B/16 (VOC21 classes)."""
    from mmseg.datasets import PascalVOCDataset

    from scclip import SCCLIPForSegmentation
    from scclip.clip.architectures import random_clip

    with tempfile.TemporaryDirectory() as cache:
        import os

        os.environ["SCCLIP_CACHE_DIR"] = cache
        model = SCCLIPForSegmentation(clip_path="ViT-B/16", clip_model=random_clip("ViT-B/16", seed=0),
                                      vocabulary=list(PascalVOCDataset.METAINFO["classes"]), device="cpu",
                                      text_cache=False)
    image = torch.randn(1, 3, 336, 448)
    model.predict(image)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500, help="images per storing case")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference runs")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results: dict = dict(threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory() as folder:
        for name, (size, num_classes) in CASES.items():
            results[name] = time_storing(size, num_classes, args.images, Path(folder) / name.split()[0])
        results["resume_read_s"] = time_resume_read(Path(folder) / "resume")
    results["inference_s"] = time_inference(args.repeats)
    inference_ms = 1000 * results["inference_s"]
    print(f"inference, random ViT-B/16, 336×448, CPU: {inference_ms:.0f} ms per image")
    print("| case | areas (ms/image) | store (ms/image) | areas + store, % of inference | mmseg IoUMetric.process (ms/image) |")
    print("|---|---:|---:|---:|---:|")
    for name in CASES:
        case = results[name]
        share = 100 * (case["areas_ms"] + case["store_ms"]) / inference_ms
        case["overhead_percent"] = share
        print(f"| {name} | {case['areas_ms']:.2f} | {case['store_ms']:.3f} | {share:.2f}% | {case['mmseg_process_ms']:.2f} |")
    print(f"reading back {RESUME_IMAGES} stored images × 171 classes on resume: {results['resume_read_s']:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
