"""ProxyCLIP's cost beside SC-CLIP's: time per image and peak memory, and the plain forward of both backbones.

    python benchmarks/proxyclip.py                       # full ViT-B/16 + DINO ViT-B/8, random weights, CPU
    python benchmarks/proxyclip.py --threads 2 --json proxyclip.json

One VOC-like 336×504 image (the benchmarks' short side 336) with five classes, on the CPU in fp32.
Each case runs once in its own process, so its peak resident memory (VmHWM) is its own; then one
process builds all four and times them in turn, `--repeats` rounds after a warm-up, so that a busy
machine slows every case alike (the medians are reported, and their ratios are what to read):
- `clip_forward`: CLIP ViT-B/16's plain image forward (all blocks) of one 336×336 window (21×21 tokens);
- `dino_forward`: DINO ViT-B/8's plain forward (`scclip.dino.DinoViT`) of the same window (42×42 = 1,764 tokens);
- `scclip`: SC-CLIP's segmentor on the image with its published windows (224/112: 6 windows);
- `proxyclip`: ProxyCLIP's segmentor with its release's windows (336/112: 3 windows, each through both backbones).
The segmentors' text features are built before the clock starts. Random weights give the real timings:
no step depends on the weights' values.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

CASES = ("clip_forward", "dino_forward", "scclip", "proxyclip")
IMAGE_SIZE = (336, 504)
CLASSES = ["sky", "person", "grass", "dog", "car"]


def build_case(case: str, folder: Path):
    """The step one case times: a callable on nothing."""
    import torch

    from scclip import SCCLIPForSegmentation
    from scclip.clip import load
    from scclip.dino import load_vfm
    from scclip.proxyclip import to_vfm_input

    image = torch.randn(1, 3, *IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    window = image[..., :336, :336]
    clip_path, dino_path = folder / "clip.pt", folder / "dino.pth"
    if case == "clip_forward":
        visual = load(clip_path, device="cpu")[0].visual
        return lambda: visual(window)
    if case == "dino_forward":
        dino, inputs = load_vfm("dino_vitb8", dino_path), to_vfm_input(window)
        return lambda: dino(inputs)
    settings = dict(slide_crop=224, slide_stride=112) if case == "scclip" else dict(
        method="proxyclip", vfm_path=str(dino_path), slide_crop=336, slide_stride=112)
    segmentor = SCCLIPForSegmentation(clip_path=str(clip_path), vocabulary=CLASSES, device="cpu",
                                      text_cache=False, text_progress=lambda done, total: None, **settings)
    return lambda: segmentor.predict(image)


def memory_of_case(case: str, folder: Path) -> dict:
    """One run of a case in this process: resident memory once built, and the peak (MiB)."""
    import torch
    from memory import peak_mib, resident_mib

    step = build_case(case, folder)
    built = resident_mib()
    with torch.no_grad():
        step()
    return dict(case=case, rss_built_mib=round(built), peak_mib=round(peak_mib()),
                beyond_model_mib=round(peak_mib() - built))


def interleaved_times(folder: Path, repeats: int) -> dict[str, float]:
    """Median seconds per case, the cases timed in turn in each of `repeats` rounds after a warm-up round."""
    import torch

    steps = {case: build_case(case, folder) for case in CASES}
    times: dict[str, list[float]] = {case: [] for case in CASES}
    with torch.no_grad():
        for _ in range(repeats + 1):
            for case, step in steps.items():
                start = time.perf_counter()
                step()
                times[case].append(time.perf_counter() - start)
    return {case: round(statistics.median(values[1:]), 2) for case, values in times.items()}


def make_checkpoints(folder: Path) -> None:
    """Full-size ViT-B/16 CLIP and DINO ViT-B/8 with random weights, as fp16 files (as released)."""
    import torch

    from scclip.clip.architectures import random_clip, save_checkpoint
    from scclip.dino import random_dino

    save_checkpoint(random_clip("ViT-B/16", seed=0), folder / "clip.pt")
    torch.save(random_dino(seed=0), folder / "dino.pth")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case after one warm-up (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per case (default 1)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--case", choices=(*CASES, "times"), help=argparse.SUPPRESS)  # in a process of its own
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.case == "times":
        print(json.dumps(interleaved_times(args.folder, args.repeats)))
        return 0
    if args.case is not None:
        print(json.dumps(memory_of_case(args.case, args.folder)))
        return 0

    def run(case: str) -> dict:
        done = subprocess.run([sys.executable, __file__, "--case", case, "--folder", folder, "--repeats",
                               str(args.repeats), "--threads", str(args.threads)],
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    with tempfile.TemporaryDirectory() as folder:
        make_checkpoints(Path(folder))
        results = [run(case) for case in CASES]
        times = run("times")
    for result in results:
        result["seconds"] = times[result["case"]]
        print(json.dumps(result))
    numbers = dict(image=list(IMAGE_SIZE), classes=len(CLASSES), threads=args.threads, device="cpu",
                   precision="fp32", repeats=args.repeats, torch=torch.__version__, cases=results)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
