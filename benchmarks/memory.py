"""Peak memory of segmenting a large photo with a large vocabulary through `scclip.Segmenter`.

    python benchmarks/memory.py                                   # 4000×3000, COCO-Stuff's 171 classes
    python benchmarks/memory.py --size 8000x6000 --pamr --json out.json

Runs in its own process and reports the process's resident memory once the model and the text
features are built, and its peak (`ru_maxrss`) after segmenting the photo, writing the picture and
the label mask: the difference is what the photo costs beyond the model. The CLIP is a randomly
initialised one with ViT-B/16's layout (tiny widths unless --width says otherwise), so nothing is
downloaded; what grows with the photo (the full-size post-processing) does not depend on the model.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from scclip.api import Segmenter  # noqa: E402
from scclip.clip.architectures import random_clip, save_checkpoint  # noqa: E402

MIB = 2**20


def resident_mib() -> float:
    """The process's current resident memory (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status: this benchmark needs Linux")


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM): unlike ru_maxrss, it does not start from the peak of
    the process that started this one (Linux carries ru_maxrss across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark needs Linux")


def photo(width: int, height: int) -> Image.Image:
    """A photo-like test image: smooth colour regions with edges and noise, like a phone photo."""
    rng = np.random.default_rng(0)
    low = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BICUBIC)).astype(np.int16)
    image += rng.integers(-8, 9, size=(height, 1, 1), dtype=np.int16)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="4000x3000", help="photo width×height (default: 4000x3000, 12 MP)")
    parser.add_argument("--vocab", default="coco_stuff164k", help="vocabulary file or benchmark name")
    parser.add_argument("--width", type=int, default=64, help="transformer width of the random CLIP (default 64)")
    parser.add_argument("--pamr", action="store_true", help="refine with PAMR at full size (slow on a CPU)")
    parser.add_argument("--area-thd", type=float, default=None, help="area threshold (adds the second pass)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = random_clip("ViT-B/16", seed=0, vision_width=args.width, transformer_width=args.width,
                            transformer_heads=max(1, args.width // 64), transformer_layers=2, embed_dim=32)
        checkpoint = save_checkpoint(model, folder / "clip.pt")
        del model
        image_path = folder / "photo.jpg"
        photo(width, height).save(image_path, quality=90)
        segmenter = Segmenter(checkpoint, vocab=args.vocab, device="cpu", pamr=args.pamr, area_thd=args.area_thd)
        before = resident_mib()
        start = time.perf_counter()
        result = segmenter(image_path)
        segmented = time.perf_counter() - start
        result.save(folder / "picture.png")
        result.save_mask(folder / "mask.png")
        seconds = time.perf_counter() - start
        numbers = dict(
            photo=f"{width}x{height}", megapixels=round(width * height / 1e6, 1), classes=len(segmenter.class_names),
            pamr=args.pamr, area_thd=args.area_thd, seconds_segment=round(segmented, 1), seconds_total=round(seconds, 1),
            rss_with_model_mib=round(before), peak_rss_mib=round(peak_mib()), beyond_model_mib=round(peak_mib() - before),
            present_classes=len(result.legend()),
        )
    print(json.dumps(numbers))
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
