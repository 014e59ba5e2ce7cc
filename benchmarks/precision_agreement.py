"""How much half precision changes SC-CLIP's predictions, measured on the golden cases.

Each golden model case is segmented twice, in float32 and under autocast at the chosen half
precision (bf16 by default on CPU, fp16 on CUDA), text queries included; the script reports the
share of pixels whose predicted class agrees, per case and over all pixels, plus each run's
agreement with the release's own prediction. The golden checkpoints are small random CLIPs
with the real layer counts, so this measures numerical sensitivity, not accuracy on a dataset.

    python benchmarks/precision_agreement.py                     # CPU, bf16
    python benchmarks/precision_agreement.py --device cuda       # CUDA, fp16
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from scclip.clip.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # noqa: E402


def golden_dir(configured: Path | None) -> Path:
    """--golden-dir, else $SCCLIP_GOLDEN_DIR, else ../shared/golden beside the repository."""
    path = configured or Path(os.environ.get("SCCLIP_GOLDEN_DIR") or REPO_ROOT.parent / "shared" / "golden")
    if not path.is_dir():
        sys.exit(f"golden outputs not found at {path}: pass --golden-dir or set SCCLIP_GOLDEN_DIR")
    return path


def model_cases(folder: Path) -> list[str]:
    """Names of the golden cases that run the whole model (the post_* cases only post-process)."""
    return sorted(
        path.stem for path in folder.glob("*.json")
        if "checkpoint" in json.loads(path.read_text()) and (folder / f"{path.stem}_image.npy").is_file()
    )


def normalised_image(path: Path) -> torch.Tensor:
    """H×W×3 uint8 RGB → 1×3×H×W CLIP-normalised."""
    image = torch.from_numpy(np.load(path)).permute(2, 0, 1).float() / 255
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    return ((image - mean) / std)[None]


def predict(folder: Path, name: str, device: str, precision: str) -> tuple[np.ndarray, np.ndarray]:
    """Prediction (H×W) and class scores (C×H×W) of one golden case at one precision."""
    from scclip import SCCLIPForSegmentation

    case = json.loads((folder / f"{name}.json").read_text())
    segmentor = SCCLIPForSegmentation(
        clip_path=str(folder / case["checkpoint"]),
        name_path=str(folder / f"{name}_classes.txt"),
        device=device,
        precision=precision,
        text_cache=False,
        **case["hyper_parameters"],
    )
    (sample,) = segmentor.predict(normalised_image(folder / f"{name}_image.npy").to(device))
    return sample.pred_sem_seg.data[0].cpu().numpy(), sample.seg_logits.data.float().cpu().numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp16", "bf16"], default=None,
                        help="half precision to compare with float32 (default: bf16 on CPU, fp16 on CUDA)")
    parser.add_argument("--golden-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also save the results here")
    args = parser.parse_args()
    import scclip  # noqa: F401  (makes mmseg importable)

    precision = args.precision or ("fp16" if args.device == "cuda" else "bf16")
    folder = golden_dir(args.golden_dir)
    rows, agree_total, pixels_total = [], 0, 0
    print(f"| case | pixels | fp32 = {precision} | fp32 = release | {precision} = release | max score change |")
    print("|---|---|---|---|---|---|")
    for name in model_cases(folder):
        expected = np.load(folder / f"{name}.npz")["pred"]
        pred32, scores32 = predict(folder, name, args.device, "fp32")
        pred16, scores16 = predict(folder, name, args.device, precision)
        row = {
            "case": name,
            "pixels": int(pred32.size),
            "agreement": float((pred32 == pred16).mean()),
            "fp32_vs_release": float((pred32 == expected).mean()),
            "half_vs_release": float((pred16 == expected).mean()),
            "max_score_change": float(np.abs(scores32 - scores16).max()),
        }
        rows.append(row)
        agree_total += int((pred32 == pred16).sum())
        pixels_total += row["pixels"]
        print(f"| {name} | {row['pixels']} | {100 * row['agreement']:.2f}% | {100 * row['fp32_vs_release']:.2f}% "
              f"| {100 * row['half_vs_release']:.2f}% | {row['max_score_change']:.4f} |", flush=True)
    overall = agree_total / pixels_total
    print(f"\n{precision} on {args.device}: {100 * overall:.2f}% of {pixels_total} pixels keep their fp32 class")
    if args.json:
        summary = {"device": args.device, "precision": precision, "torch": torch.__version__,
                   "overall_agreement": overall, "cases": rows}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
