"""How predict.py's throughput grows with processes, on both runtimes: images/s on 1 and 2 CPU processes.

Each case labels the same synthetic folder into a fresh OUT with a randomly initialised CLIP of
ViT-B/16's depth and patch size (width `--width`; no real weights are needed: the work is the same),
and reads the images/s predict.py reports for its labelling (model loading excluded). Every
process gets the same threads (`--threads`, default 1), as on a GPU node every process gets its
own GPU: linear scaling is the ideal, and what falls short of it is what splitting the work costs
(uneven shards, the rank files, the merge at the end) or cores that are busy with something else.
Each case runs on PyTorch and on ONNX Runtime (`--runtime onnx`, the same weights exported with
`scclip export`'s defaults), in one run, so the two rates are measured under the same load.

    python benchmarks/predict_scaling.py                       # 1 and 2 processes, 32 images, both runtimes
    python benchmarks/predict_scaling.py --images 64 --width 256 --processes 1 2 4 --runtimes onnx
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from scclip.clip.architectures import random_clip, save_checkpoint  # noqa: E402
from scclip.evaluation.data import available_cores  # noqa: E402

RATE = re.compile(r"\(([\d.]+) images/s on (\d+) process")
CLASSES = "sky,tree,road,building,person,car,grass,water"


def make_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Blocky random photos, all of one size (so that predict.py batches them)."""
    rng = np.random.default_rng(0)
    for index in range(count):
        blocks = rng.integers(0, 256, (size[1] // 32 + 1, size[0] // 32 + 1, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((32, 32, 1), dtype=np.uint8))[: size[1], : size[0]]
        Image.fromarray(pixels).save(folder / f"image{index:05d}.jpg", quality=90)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def images_per_second(processes: int, threads: int, images: Path, model: list[str], out: Path,
                      batch_size: int) -> float:
    """predict.py's own images/s for one labelling of `images` on `processes` CPU processes; `model` is
    its model arguments (--backbone FILE, or --runtime onnx --model DIR)."""
    arguments = ["predict.py", "--image", str(images), "--classes", CLASSES, *model,
                 "--device", "cpu", "--out", str(out), "--batch-size", str(batch_size)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                   f"--master_port={free_port()}", *arguments, "--launcher", "pytorch"]
    else:
        command = [sys.executable, *arguments]
    environment = dict(os.environ, OMP_NUM_THREADS=str(threads), CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
    found = RATE.search(completed.stdout)
    if completed.returncode != 0 or found is None:
        sys.exit(f"error: predict.py on {processes} process(es) failed: {completed.stderr.strip()[-2000:]}")
    return float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images to label (default: 32)")
    parser.add_argument("--size", default="448x336", help="image size WxH (default: 448x336, 6 windows each)")
    parser.add_argument("--width", type=int, default=128, help="width of the random ViT (default: 128)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts (default: 1 2)")
    parser.add_argument("--batch-size", type=int, default=4, help="predict.py --batch-size (default: 4)")
    parser.add_argument("--threads", type=int, default=1, help="threads of each process (default: 1)")
    parser.add_argument("--runtimes", nargs="+", choices=("torch", "onnx"), default=["torch", "onnx"],
                        help="predict.py --runtime values to measure (default: both)")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))
    cores = available_cores()
    if max(args.processes) * args.threads > cores:
        print(f"warning: {max(args.processes)} processes × {args.threads} threads exceed the {cores} cores: "
              "the scaling measures the sharing of cores", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="predict_scaling_") as temporary:
        folder = Path(temporary)
        os.environ.setdefault("SCCLIP_CACHE_DIR", str(folder / "cache"))
        model = random_clip("ViT-B/16", seed=0, vision_width=args.width, transformer_width=64, transformer_heads=1,
                            transformer_layers=2, embed_dim=32)
        checkpoint = save_checkpoint(model, folder / "random_b16.pt")
        models = {"torch": ["--backbone", str(checkpoint)]}
        if "onnx" in args.runtimes:
            from scclip.export import export_model

            export_model(str(checkpoint), folder / "exported", clip_model=model)
            models["onnx"] = ["--runtime", "onnx", "--model", str(folder / "exported")]
        images = folder / "images"
        images.mkdir()
        make_images(images, args.images, (width, height))
        rows = []
        for runtime in args.runtimes:
            for processes in args.processes:
                rate = images_per_second(processes, args.threads, images, models[runtime],
                                         folder / f"out_{runtime}{processes}", args.batch_size)
                rows.append((runtime, processes, rate))
    print(f"predict.py on {args.images} images of {width}×{height}, random ViT-B/16 of width {args.width}, "
          f"{cores} CPU cores")
    print(f"| runtime | processes × {args.threads} thread{'s' * (args.threads > 1)} | images/s | scaling | of linear |")
    print("|---|---|---|---|---|")
    for runtime, processes, rate in rows:
        first = next(row for row in rows if row[0] == runtime)
        base = first[2] / first[1]  # images/s of one process on this runtime
        print(f"| {runtime} | {processes} | {rate:.2f} | {rate / base:.2f}× | {100 * rate / (base * processes):.0f}% |")


if __name__ == "__main__":
    main()
