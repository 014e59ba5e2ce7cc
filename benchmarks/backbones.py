"""Time SC-CLIP on open_clip backbones (OpenCLIP / MetaCLIP architectures), with random weights.

For each open_clip architecture it builds a randomly initialised open_clip model (no download; no
step depends on the weights' values), saves it as open_clip would (.safetensors), and measures:
- loading: `scclip.clip.load(file, arch=...)` (read, shape check, our CLIP built from open_clip's config);
- vocabulary set-up: the vocabulary × 80 templates through the text tower (no text cache);
- sliding window: per-image latency on a 336×448 image (windows 224/112: 6 crops), timed in turn
  with a plain ViT forward of the same crops through all blocks, and the peak memory of one image.

With `--openai-baseline` the same is measured, in the same process, for a random OpenAI ViT-B/16
checkpoint loaded the OpenAI way (no `arch`), so the open_clip numbers have a same-run reference.
It reuses the harness of benchmarks/benchmark.py (timings in turn, peak memory, machine description).

    python benchmarks/backbones.py --archs ViT-B-16 ViT-H-14 --openai-baseline --device cpu --json backbones.json
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import torch  # noqa: E402

from benchmark import (  # noqa: E402
    SLIDING_SIZE,
    PeakMemory,
    machine_description,
    normalised_images,
    timed_interleaved,
    window_crops_and_plain_forward,
)
from scclip.benchmarks import BENCHMARKS  # noqa: E402

DEFAULT_VOCABULARY = BENCHMARKS["voc21"].vocabulary


def random_open_clip_checkpoint(arch: str, folder: Path) -> Path:
    """open_clip's own randomly initialised model of `arch`, saved as a .safetensors state dict."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    path = folder / f"{arch}.safetensors"
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    del model
    gc.collect()
    return path


OPENAI_BASELINE = "OpenAI ViT-B/16"


def random_openai_checkpoint(folder: Path) -> Path:
    """A random ViT-B/16 in OpenAI's state-dict format (fp16 values), as benchmarks/benchmark.py times it."""
    from scclip.clip.architectures import random_clip, save_checkpoint

    return save_checkpoint(random_clip("ViT-B/16", seed=0), folder / "ViT-B-16-openai.pt")


def time_backbone(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """`name`: an open_clip architecture, or OPENAI_BASELINE."""
    from scclip import SCCLIPForSegmentation
    from scclip.clip import load

    device = torch.device(args.device)
    arch = None if name == OPENAI_BASELINE else name
    checkpoint = random_openai_checkpoint(folder) if arch is None else random_open_clip_checkpoint(arch, folder)
    start = time.perf_counter()
    model, _ = load(checkpoint, device=device, arch=arch)
    load_s = time.perf_counter() - start
    blocks = model.visual.transformer.resblocks
    start = time.perf_counter()
    segmentor = SCCLIPForSegmentation(
        str(checkpoint), clip_arch=arch, clip_model=model, name_path=str(args.vocabulary), device=device,
        precision=args.precision, text_cache=False,
    )
    setup_s = time.perf_counter() - start
    image = normalised_images(1, SLIDING_SIZE, device)
    crops, plain_forward = window_crops_and_plain_forward(segmentor, image)

    with PeakMemory(device) as memory:
        segmentor.predict(image)
    runs = timed_interleaved({"predict": lambda: segmentor.predict(image), "plain": plain_forward},
                             device, args.repeats, warmup=args.warmup)
    per_image = statistics.median(runs["predict"].wall)
    plain = statistics.median(runs["plain"].wall)
    return {
        "arch": name,
        "blocks": len(blocks),
        "heads": blocks[0].attn.heads,
        "head_width": blocks[0].attn.head_dim,
        "activation": type(blocks[0].mlp.gelu).__name__,
        "calibration": {name: segmentor.method_settings[name] for name in
                        ("pre_adjust_idx", "post_adjust_idx", "multi_start_idx", "multi_end_idx", "res_cls")},
        "checkpoint_mib": checkpoint.stat().st_size / 2**20,
        "load_s": load_s,
        "prompts": len(segmentor.vocabulary.queries) * 80,
        "vocabulary_setup_s": setup_s,
        "per_image_s": per_image,
        "plain_forward_s": plain,
        "ratio_to_plain": per_image / plain,
        "cpu_ratio_to_plain": statistics.median(runs["predict"].cpu) / statistics.median(runs["plain"].cpu),
        "predict": runs["predict"].summary(),
        "plain_vit_forward": runs["plain"].summary(),
        **memory.result,
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| open_clip arch | blocks, heads × width, activation | checkpoint | load | vocabulary set-up | "
        "per image 336×448 (CPU time) | plain ViT forward, same 6 crops (CPU time) | ours ÷ plain (CPU) | "
        "peak memory, one image |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        peak = r.get("rss_peak_gib", r.get("gpu_peak_gib", float("nan")))
        lines.append(
            f"| {r['arch']} | {r['blocks']}, {r['heads']} × {r['head_width']}, {r['activation']} | "
            f"{r['checkpoint_mib']:.0f} MiB | {r['load_s']:.1f} s | {r['vocabulary_setup_s']:.1f} s "
            f"({r['prompts']} prompts) | {r['per_image_s']:.2f} s ({r['predict']['cpu_median_s']:.2f} s) | "
            f"{r['plain_forward_s']:.2f} s ({r['plain_vit_forward']['cpu_median_s']:.2f} s) | "
            f"{r['ratio_to_plain']:.2f} ({r['cpu_ratio_to_plain']:.2f}) | {peak:.1f} GiB |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time SC-CLIP on open_clip architectures (random weights).")
    parser.add_argument("--archs", nargs="+", default=["ViT-B-16", "ViT-H-14"], help="open_clip model names")
    parser.add_argument("--openai-baseline", action="store_true",
                        help="also time a random OpenAI ViT-B/16 checkpoint first, as the same-run reference")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--vocabulary", type=Path, default=DEFAULT_VOCABULARY, help="vocabulary file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="scclip_backbones_") as folder:
        names = [OPENAI_BASELINE] * args.openai_baseline + args.archs
        for name in names:
            results.append(time_backbone(name, args, Path(folder)))
            print(json.dumps(results[-1]), flush=True)
            gc.collect()
    report = {"machine": machine_description(args.device), "args": {k: str(v) for k, v in vars(args).items()},
              "results": results}
    print(markdown_table(results))
    print(f"load average after the runs: {report['machine'].get('load_average')}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
