"""Time SC-CLIP end to end with randomly initialised full-size CLIPs (no download needed).

For each backbone it measures, each case in its own process (so peak memory is that case's):
- vocabulary set-up: the VOC21 vocabulary × 80 templates through the text tower on a first run,
  and the same set-up answered from the on-disk text-feature cache;
- sliding window: per-image latency and images/s on a 336×448 image (VOC's short side 336,
  windows 224/112: 6 crops), next to a plain ViT forward (all blocks) of the same crops;
- whole image: one 1024×1024 crop (`slide_crop=0`);
- methods: every method (vanilla CLIP, MaskCLIP, SCLIP, ClearCLIP, NACLIP, ResCLIP, SC-CLIP and
  SC-CLIP with all four switches off) on the same 336×448 image and windows, each beside the plain
  ViT forward of the same crops, timed in turn, with its peak memory; each once more on a whole
  image (1024², `--whole-size`) as one crop, beside the plain forward of that crop; NACLIP's
  neighbourhood bias for a 64×64 grid (a 1024² whole image), built and then from its cache; and
  ResCLIP's same-label matrix (path check, smoothing) for a 64×64 grid, with its peak memory;
- peak memory of each inference case (CPU: peak RSS of the process during the case;
  CUDA: torch.cuda.max_memory_allocated).

Random weights give the real timings: no step depends on the weights' values.

    python benchmarks/benchmark.py --backbones ViT-B/16 ViT-L/14 --device cpu
    python benchmarks/benchmark.py --device cuda --batch-sizes 1 32 --json cuda.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from scclip.benchmarks import BENCHMARKS  # noqa: E402

DEFAULT_VOCABULARY = BENCHMARKS["voc21"].vocabulary
SLIDING_SIZE = (336, 448)
WHOLE_SIZE = (1024, 1024)
# The backbones timed; SC-CLIP's calibration follows each one's depth (scclip.methods.calibration_defaults).
BACKBONES = ("ViT-B/16", "ViT-L/14")
GIB = 1024**3


def machine_description(device: str) -> dict[str, Any]:
    """What the numbers came from: processor, cores, memory, load, software versions, GPU."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name"))
        meminfo = Path("/proc/meminfo").read_text().split()
        info["memory_gib"] = round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024**2, 1)
    except (OSError, StopIteration, ValueError):
        info["cpu"] = platform.processor()
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


# ---------------------------------------------------------------- measuring inside a worker


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakMemory:
    """Peak memory of a stretch of code: RSS high-water mark on CPU, allocator peak on CUDA.

    On Linux the RSS high-water mark is reset first (/proc/self/clear_refs), so the peak is the
    stretch's own, not the model loading's; where that is impossible the process peak is reported.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result: dict[str, float] = {}

    def __enter__(self) -> Self:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.before = _status_kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
            self.result = {"gpu_peak_gib": peak / GIB, "gpu_before_gib": self.before / GIB,
                           "gpu_delta_gib": (peak - self.before) / GIB}
            return
        peak = _status_kib("VmHWM") * 1024
        self.result = {"rss_peak_gib": peak / GIB, "rss_before_gib": self.before / GIB,
                       "rss_delta_gib": (peak - self.before) / GIB, "rss_peak_reset": self.reset}


@dataclass
class Timings:
    """Seconds per run: wall clock, and CPU time of the process (all its threads).

    On a shared machine the wall clock depends on the other load; with one torch thread the
    CPU time hardly does, so ratios of CPU times stay comparable.
    """

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"median_s": statistics.median(self.wall), "min_s": min(self.wall), "runs_s": self.wall,
                "cpu_median_s": statistics.median(self.cpu), "cpu_runs_s": self.cpu}


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> Timings:
    """Timings of `repeats` calls of fn after `warmup` untimed ones."""
    return timed_interleaved({"fn": fn}, device, repeats, warmup)["fn"]


def timed_interleaved(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, Timings]:
    """Like `timed` for several functions, run in turn, so a change in the machine's load hits them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    timings = {name: Timings() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings[name].wall.append(time.perf_counter() - start)
            timings[name].cpu.append(time.process_time() - start_cpu)
    return timings


def normalised_images(batch: int, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """A reproducible batch of random RGB images, CLIP-normalised."""
    from scclip.clip.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (batch, 3, *size), generator=generator).float() / 255
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(1, 3, 1, 1)
    return ((pixels - mean) / std).to(device)


@contextmanager
def counting_time(module: Any, name: str, totals: dict[str, float]):
    """Add the wall (and CPU) seconds spent in `module.name` to totals[name] (and totals[name + '_cpu'])."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
            totals[name + "_cpu"] = totals.get(name + "_cpu", 0.0) + time.process_time() - start_cpu

    setattr(module, name, wrapper)
    try:
        yield
    finally:
        setattr(module, name, original)


def build_segmentor(args: argparse.Namespace, method: str = "scclip", **overrides: Any):
    from scclip import SCCLIPForSegmentation

    settings = dict(
        clip_path=str(args.checkpoint),
        name_path=str(args.vocabulary),
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        method=method,
    )
    if args.crop_batch_size:
        settings["crop_batch_size"] = args.crop_batch_size
    settings.update(overrides)
    return SCCLIPForSegmentation(**settings)


def case_vocabulary(args: argparse.Namespace) -> dict[str, Any]:
    """Build the segmentor with an empty cache (first run), then again (cached)."""
    import scclip.segmentor
    import scclip.text_cache
    from scclip.text import Vocabulary, load_templates
    from scclip.text_cache import TextFeatureCache

    vocabulary = Vocabulary.from_file(args.vocabulary)
    templates = load_templates()
    result: dict[str, Any] = {"queries": len(vocabulary.queries), "prompts": len(vocabulary.queries) * len(templates)}
    for run in ("first", "cached"):
        parts: dict[str, float] = {}
        with counting_time(scclip.segmentor, "load", parts), \
                counting_time(scclip.segmentor, "encode_queries", parts), \
                counting_time(scclip.text_cache, "sha256_of", parts):
            start = time.perf_counter()
            segmentor = build_segmentor(args)
            if segmentor.device.type == "cuda":
                torch.cuda.synchronize()
            total = time.perf_counter() - start
        result[run] = {
            "constructor_s": total,
            "checkpoint_load_s": parts.get("load", 0.0),
            "text_encoding_s": parts.get("encode_queries", 0.0),
            "text_encoding_cpu_s": parts.get("encode_queries_cpu", 0.0),
            "checkpoint_hash_s": parts.get("sha256_of", 0.0),
            # everything the constructor spent on the text queries besides loading the model
            "vocabulary_setup_s": total - parts.get("load", 0.0),
        }
        del segmentor
        gc.collect()

    def must_hit() -> torch.Tensor:
        raise RuntimeError("the text-feature cache missed after a first run")

    settings = dict(precision=args.precision, device=torch.device(args.device).type, batch_size=256)
    lookups = timed(
        lambda: TextFeatureCache().get_or_compute(args.checkpoint, vocabulary.queries, templates, settings, must_hit),
        torch.device("cpu"), repeats=5,
    )
    result["cache_lookup"] = lookups.summary()
    return result


def window_crops_and_plain_forward(segmentor: Any, image: torch.Tensor) -> tuple[torch.Tensor, Callable[[], Any]]:
    """The segmentor's windows of a 1×3×H×W image as a batch of crops, and a plain forward of them
    through all ViT blocks (the floor every method is compared with)."""
    from scclip.windows import sliding_windows

    windows = sliding_windows(*image.shape[-2:], segmentor.slide_crop, segmentor.slide_stride)
    crops = torch.stack([image[0, :, y1:y2, x1:x2] for y1, y2, x1, x2 in windows])
    visual = segmentor.encoder.visual

    @torch.no_grad()
    def plain_forward() -> torch.Tensor:
        with segmentor._autocast(segmentor.device, segmentor.precision):
            return visual.transformer(visual.embed(crops))

    return crops, plain_forward


def case_sliding(args: argparse.Namespace) -> dict[str, Any]:
    """Per-image latency at 336×448 with sliding windows, and a plain ViT forward of the same crops.

    One image, the plain forward of its crops and the encoder alone are timed in turn, so their
    ratios hold even when other work shares the machine. Larger batches are timed afterwards.
    """
    segmentor = build_segmentor(args)
    device = segmentor.device
    image = normalised_images(1, SLIDING_SIZE, device)
    crops, plain_forward = window_crops_and_plain_forward(segmentor, image)

    with PeakMemory(device) as memory:
        segmentor.predict(image)
    runs = timed_interleaved(
        {"predict": lambda: segmentor.predict(image), "plain": plain_forward,
         "encoder": lambda: segmentor.dense_features(crops)},
        device, args.repeats, warmup=args.warmup,
    )
    per_image = statistics.median(runs["predict"].wall)
    result: dict[str, Any] = {
        "image_size": list(SLIDING_SIZE),
        "crops": len(crops),
        "batch_1": {**runs["predict"].summary(), "per_image_s": per_image, "images_per_s": 1 / per_image,
                    **memory.result},
        "plain_vit_forward": runs["plain"].summary(),
        "encoder_only": runs["encoder"].summary(),
    }
    for batch in args.batch_sizes:
        if batch == 1:
            continue
        images = normalised_images(batch, SLIDING_SIZE, device)
        with PeakMemory(device) as memory:
            times = timed(lambda images=images: segmentor.predict(images), device, args.repeats, args.warmup)
        result[f"batch_{batch}"] = {
            **times.summary(),
            "per_image_s": statistics.median(times.wall) / batch,
            "images_per_s": batch / statistics.median(times.wall),
            **memory.result,
        }
    return result


def case_whole(args: argparse.Namespace) -> dict[str, Any]:
    """One 1024×1024 image as a single crop; the first run's peak memory is the one reported."""
    segmentor = build_segmentor(args, slide_crop=0)
    device = segmentor.device
    images = normalised_images(1, WHOLE_SIZE, device)
    with PeakMemory(device) as memory:
        first = timed(lambda: segmentor.predict(images), device, repeats=1, warmup=0)
    repeats = max(args.repeats // 3, 1) if device.type == "cpu" else args.repeats
    warm = timed(lambda: segmentor.predict(images), device, repeats=repeats, warmup=0)
    return {"image_size": list(WHOLE_SIZE), "first_run_s": first.wall[0], **warm.summary(), **memory.result}


def case_methods(args: argparse.Namespace) -> dict[str, Any]:
    """Per-image time of every method at 336×448 (SC-CLIP's windows), each beside the plain ViT forward."""
    from scclip.clip import load
    from scclip.encoders import gaussian_bias
    from scclip.methods import METHODS, SWITCHES, available_methods
    clip_model, _ = load(args.checkpoint, device=args.device)
    # A method with a second backbone (ProxyCLIP's VFM) has its own benchmark: benchmarks/proxyclip.py.
    variants = {method: dict(method=method) for method in available_methods() if "vfm" not in METHODS[method].settings}
    variants["scclip, all switches off"] = dict(method="scclip", **{switch: False for switch in SWITCHES})
    segmentors = {name: build_segmentor(args, clip_model=clip_model, **settings) for name, settings in variants.items()}
    any_segmentor = next(iter(segmentors.values()))
    device = any_segmentor.device
    image = normalised_images(1, SLIDING_SIZE, device)
    crops, plain_forward = window_crops_and_plain_forward(any_segmentor, image)
    visual = clip_model.visual
    whole_image = normalised_images(1, (args.whole_size, args.whole_size), device)

    @torch.no_grad()
    def plain_whole() -> torch.Tensor:
        with any_segmentor._autocast(device, any_segmentor.precision):
            return visual.transformer(visual.embed(whole_image))

    result: dict[str, Any] = {"image_size": list(SLIDING_SIZE), "crops": len(crops), "methods": {},
                              "whole_size": args.whole_size}
    with PeakMemory(device) as memory:
        plain_forward()
    result["plain_vit_forward_memory"] = memory.result
    with PeakMemory(device) as memory:
        result["plain_vit_forward_whole"] = timed(plain_whole, device, repeats=1, warmup=0).summary()
    result["plain_vit_forward_whole"].update(memory.result)
    for name, segmentor in segmentors.items():
        runs = timed_interleaved(
            {"predict": lambda segmentor=segmentor: segmentor.predict(image), "plain": plain_forward},
            device, args.repeats, warmup=args.warmup,
        )
        with PeakMemory(device) as memory:
            segmentor.predict(image)
        whole = build_segmentor(args, clip_model=clip_model, slide_crop=0, **variants[name])
        with PeakMemory(device) as whole_memory:
            whole_timing = timed(lambda whole=whole: whole.predict(whole_image), device, repeats=1, warmup=0)
        result["methods"][name] = {"predict": runs["predict"].summary(), "plain_vit_forward": runs["plain"].summary(),
                                   "memory": memory.result, "whole": {**whole_timing.summary(), **whole_memory.result}}
    result["resclip_matrix"] = resclip_matrix_cost(WHOLE_SIZE[0] // visual.patch_size, device)
    grid = (WHOLE_SIZE[0] // visual.patch_size, WHOLE_SIZE[1] // visual.patch_size)
    start = time.perf_counter()
    gaussian_bias(grid, 5.0, device)
    result["naclip_bias_first_s"] = time.perf_counter() - start
    result["naclip_bias_cached"] = timed(lambda: gaussian_bias(grid, 5.0, device), device, repeats=5).summary()
    result["naclip_bias_grid"] = list(grid)
    return result


def resclip_matrix_cost(side: int, device: torch.device) -> dict[str, Any]:
    """Time and peak memory of ResCLIP's same-label matrix for a side×side grid of blob-shaped labels."""
    from scclip.resclip import same_label_matrix

    generator = torch.Generator().manual_seed(0)
    coarse = torch.randint(4, (max(side // 8, 1), max(side // 8, 1)), generator=generator)
    labels = torch.nn.functional.interpolate(coarse[None, None].float(), size=(side, side))[0].long().to(device)
    with PeakMemory(device) as memory:
        timing = timed(lambda: same_label_matrix(labels, 5.0, delete_same_entity=True), device, repeats=1, warmup=0)
    return {"grid": [side, side], **timing.summary(), **memory.result}


CASES = {"vocabulary": case_vocabulary, "sliding": case_sliding, "whole": case_whole, "methods": case_methods}


# ---------------------------------------------------------------- orchestration


def make_checkpoint(backbone: str, folder: Path) -> Path:
    """A random full-size checkpoint of `backbone` (fp16 state dict), made once and reused."""
    path = folder / f"random_{backbone.replace('/', '-')}.pt"
    if not path.is_file():
        code = (
            "import sys; sys.path.insert(0, sys.argv[3]);"
            "from scclip.clip.architectures import random_clip, save_checkpoint;"
            "save_checkpoint(random_clip(sys.argv[1], seed=0), sys.argv[2])"
        )
        subprocess.run([sys.executable, "-c", code, backbone, str(path), str(REPO_ROOT)], check=True)
    return path


def run_case(case: str, backbone: str, checkpoint: Path, cache: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in a fresh Python process and return what it measured."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        command = [
            sys.executable, __file__, "--worker", case, "--result", str(out),
            "--backbones", backbone, "--checkpoint", str(checkpoint), "--vocabulary", str(args.vocabulary),
            "--device", args.device, "--precision", args.precision, "--repeats", str(args.repeats),
            "--warmup", str(args.warmup), "--batch-sizes", *map(str, args.batch_sizes),
            "--whole-size", str(args.whole_size),
        ]
        if args.threads:
            command += ["--threads", str(args.threads)]
        if args.crop_batch_size:
            command += ["--crop-batch-size", str(args.crop_batch_size)]
        if args.compile:
            command.append("--compile")
        environment = {**os.environ, "SCCLIP_CACHE_DIR": str(cache)}
        started = time.perf_counter()
        subprocess.run(command, check=True, env=environment)
        result = json.loads(out.read_text())
    result["case_wall_s"] = time.perf_counter() - started
    return result


def markdown_table(results: list[dict[str, Any]]) -> str:
    """One row per backbone: the figures the issue's targets are stated in."""
    def cell(value: float | None, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    header = (
        "| backbone | device | precision | vocabulary set-up, first run (s) | cached (s) | "
        "per image 336×448 (s) | images/s | plain ViT forward, same crops (s) | ours ÷ plain | "
        "ours ÷ plain, CPU time | whole image 1024² (s) | peak memory, whole image (GiB) | "
        "peak memory, 336×448 (GiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = [header]
    for r in results:
        vocab, sliding, whole = r.get("vocabulary", {}), r.get("sliding", {}), r.get("whole", {})
        batch1 = sliding.get("batch_1", {})
        plain = sliding.get("plain_vit_forward", {}).get("median_s")
        plain_cpu = sliding.get("plain_vit_forward", {}).get("cpu_median_s")
        per_image, per_image_cpu = batch1.get("per_image_s"), batch1.get("cpu_median_s")
        memory_key = "gpu_peak_gib" if r["device"] == "cuda" else "rss_peak_gib"
        best_rate = max((v["images_per_s"] for k, v in sliding.items() if k.startswith("batch_")), default=None)
        rows.append(
            f"| {r['backbone']} | {r['device']} | {r['precision']} "
            f"| {cell(vocab.get('first', {}).get('vocabulary_setup_s'), 1)} "
            f"| {cell(vocab.get('cached', {}).get('vocabulary_setup_s'), 3)} "
            f"| {cell(per_image)} | {cell(best_rate)} | {cell(plain)} "
            f"| {cell(per_image / plain if per_image and plain else None, 3)} "
            f"| {cell(per_image_cpu / plain_cpu if per_image_cpu and plain_cpu else None, 3)} "
            f"| {cell(whole.get('median_s'))} | {cell(whole.get(memory_key))} | {cell(batch1.get(memory_key))} |"
        )
    return "\n".join(rows)


def methods_table(results: list[dict[str, Any]]) -> str:
    """One row per backbone and method: per-image time and peak memory beside the plain ViT forward of its
    crops, in windows and on a whole image."""
    rows = []
    for r in results:
        m = r.get("methods")
        if not m:
            continue
        memory_key = "gpu_delta_gib" if r["device"] == "cuda" else "rss_delta_gib"
        side = m["whole_size"]
        plain_whole = m["plain_vit_forward_whole"]
        rows += [
            f"| backbone | method | per image 336×448 (s) | plain ViT forward, same crops (s) | ÷ plain "
            f"| ÷ plain, CPU time | peak memory 336×448 (GiB) | whole image {side}² (s) | ÷ plain | "
            f"peak memory {side}² (GiB) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {r['backbone']} | plain ViT forward | — | {m['methods'][next(iter(m['methods']))]['plain_vit_forward']['median_s']:.2f} "
            f"| 1 | 1 | {m['plain_vit_forward_memory'][memory_key]:.3f} | {plain_whole['median_s']:.2f} | 1 "
            f"| {plain_whole[memory_key]:.3f} |",
        ]
        for name, timing in m["methods"].items():
            ours, plain, whole = timing["predict"], timing["plain_vit_forward"], timing["whole"]
            rows.append(
                f"| {r['backbone']} | {name} | {ours['median_s']:.2f} | {plain['median_s']:.2f} "
                f"| {ours['median_s'] / plain['median_s']:.3f} | {ours['cpu_median_s'] / plain['cpu_median_s']:.3f} "
                f"| {timing['memory'][memory_key]:.3f} | {whole['median_s']:.2f} "
                f"| {whole['median_s'] / plain_whole['median_s']:.2f} | {whole[memory_key]:.3f} |"
            )
        matrix = m["resclip_matrix"]
        rows.append(
            f"\nResCLIP's same-label matrix (path check, smoothing) for a {matrix['grid'][0]}×{matrix['grid'][1]} "
            f"grid (a 1024² whole image): {matrix['median_s']:.2f} s, peak memory +{matrix[memory_key]:.3f} GiB")
        rows.append(
            f"\nNACLIP neighbourhood bias for a {m['naclip_bias_grid'][0]}×{m['naclip_bias_grid'][1]} grid: "
            f"{m['naclip_bias_first_s']:.3f} s to build, {m['naclip_bias_cached']['median_s'] * 1e3:.3f} ms from its cache\n"
        )
    return "\n".join(rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["ViT-B/16", "ViT-L/14"], choices=BACKBONES)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                        help="'auto' = fp32 on CPU, fp16 autocast on CUDA")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (2 timed runs, no warm-up on CPU)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default 5, CUDA 20)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 1, CUDA 3)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="images per predict call for the sliding-window case (default: CPU 1, CUDA 1 32)")
    parser.add_argument("--crop-batch-size", type=int, default=0,
                        help="crops per encoder call (0 = the segmentor's default; raise it on a GPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the calibrated encoder (meant for CUDA)")
    parser.add_argument("--whole-size", type=int, default=WHOLE_SIZE[0],
                        help="side of the whole image the methods case runs as one crop (default 1024)")
    parser.add_argument("--vocabulary", type=Path, default=DEFAULT_VOCABULARY)
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / "work_dirs" / "benchmark",
                        help="random checkpoints (reused between runs) and a scratch text-feature cache")
    parser.add_argument("--json", type=Path, default=None, help="where to save the results (default: in --work-dir)")
    parser.add_argument("--worker", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    if args.repeats is None:
        args.repeats = 2 if args.quick else (20 if cuda else 5)
    if args.warmup is None:
        args.warmup = (1 if cuda else 0) if args.quick else (3 if cuda else 1)
    if args.batch_sizes is None:
        args.batch_sizes = [1, 32] if cuda else [1]
    return args


def worker(args: argparse.Namespace) -> None:
    import scclip  # noqa: F401  (makes mmseg importable and registers the segmentor)

    if args.threads:
        torch.set_num_threads(args.threads)
    args.backbone = args.backbones[0]
    result = CASES[args.worker](args)
    args.result.write_text(json.dumps(result))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is visible to torch")
    if not args.vocabulary.is_file():
        sys.exit(f"vocabulary file not found: {args.vocabulary} (pass --vocabulary)")
    args.work_dir.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine_description(args.device), "command": " ".join(sys.argv), "results": []}
    for backbone in args.backbones:
        print(f"[{backbone}] making a random checkpoint", flush=True)
        checkpoint = make_checkpoint(backbone, args.work_dir)
        cache = args.work_dir / f"cache_{backbone.replace('/', '-')}_{args.device}"
        shutil.rmtree(cache, ignore_errors=True)  # the first run must find nothing
        row: dict[str, Any] = {"backbone": backbone, "device": args.device, "precision": args.precision}
        cases = [case for case in CASES if case in args.cases]
        for case in cases:
            print(f"[{backbone}] {case} ...", flush=True)
            row[case] = run_case(case, backbone, checkpoint, cache, args)
        row["load_average_after"] = os.getloadavg()
        report["results"].append(row)
    report["machine"]["load_average_end"] = os.getloadavg()
    json_path = args.json or args.work_dir / f"benchmark_{args.device}.json"
    json_path.write_text(json.dumps(report, indent=2))
    if any(case in row for row in report["results"] for case in ("vocabulary", "sliding", "whole")):
        print()
        print(markdown_table(report["results"]))
    if any("methods" in row for row in report["results"]):
        print()
        print(methods_table(report["results"]))
    print()
    print(f"machine: {report['machine']}")
    print(f"results: {json_path}")


if __name__ == "__main__":
    main()
