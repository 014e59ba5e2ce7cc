"""Make the compact golden data shipped in tests/golden/ from a full golden folder.

    python tests/golden/make_compact.py ../shared/golden            # writes tests/golden/
    python tests/golden/make_compact.py FULL_DIR --out OTHER_DIR

The full release outputs are ~60 MB, mostly two checkpoints whose 49,408-row token embeddings no
golden text touches, and full-size class scores. The compact copy keeps what the tests check:
- checkpoints: token-embedding rows that no prompt of any golden vocabulary uses are set to zero
  (the text tower only ever reads the rows of the tokens it is given, so every output is the same),
  stored as `NAME.pt.xz`; the tests' `golden_file()` decompresses them once per session;
- SC-CLIP's cases, and the release's first commit's cases in `init_commit/` (docs/method.md#golden-parity): `class_probs`
  (C×H×W) become `class_probs_sub` = scores[:, ::4, ::4] plus `tie` (H×W, true where the two best
  scores are within 1e-5) as `methods/` already does; the case JSON gains `probs_stride`; `pred`,
  features and anomaly indices are kept whole. `init_commit/` cases use the images and checkpoints
  of the folder above it, so it holds no copy of them;
- `methods/`, `resclip/` (ResCLIP's cases, compact already), `proxyclip/` (ProxyCLIP's, compact
  already), the images, vocabularies and token files are copied unchanged; ProxyCLIP's tiny DINO is
  stored xz-compressed as it is.
"""
import argparse
import io
import json
import lzma
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from scclip.clip.tokenizer import tokenize  # noqa: E402
from scclip.text import Vocabulary, load_templates  # noqa: E402

PROBS_STRIDE = 4
TIE_ATOL = 1e-5
CHECKPOINTS = ("clip_b16_seed0.pt", "clip_l14_seed0.pt")
INIT_COMMIT = "init_commit"  # the release's first commit: Part I cases with anomalies by norm
COMPRESSED_SUFFIX = ".xz"
RESCLIP = "resclip"  # ResCLIP's cases (tests/test_resclip_golden.py), already compact: copied unchanged
PROXYCLIP = "proxyclip"  # ProxyCLIP's cases (tests/test_proxyclip_golden.py) and their VFM checkpoint
VFM_CHECKPOINTS = ("dino_b8_seed0.pth",)


def used_tokens(full: Path) -> torch.Tensor:
    """Token ids of every prompt (80 templates × every name) of every golden vocabulary."""
    queries = set()
    for pattern in ("*_classes.txt", "*/*_classes.txt"):  # every case folder: methods/, init_commit/, resclip/, …
        for path in sorted(full.glob(pattern)):
            queries.update(Vocabulary.from_file(path).queries)
    prompts = [template.format(query) for query in sorted(queries) for template in load_templates()]
    return torch.unique(tokenize(prompts))


def compact_checkpoint(source: Path, target: Path, keep: torch.Tensor) -> None:
    """Zero the unused token-embedding rows and write the state dict xz-compressed."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    embedding = state["token_embedding.weight"]
    unused = torch.ones(embedding.shape[0], dtype=torch.bool)
    unused[keep] = False
    embedding[unused] = 0
    buffer = io.BytesIO()
    torch.save(state, buffer)
    target.with_name(target.name + COMPRESSED_SUFFIX).write_bytes(lzma.compress(buffer.getvalue(), preset=9))


def tie_mask(scores: np.ndarray) -> np.ndarray:
    """H×W: where the two best class scores are within TIE_ATOL (there a label may differ)."""
    top2 = np.sort(scores, axis=0)[-2:]
    return (top2[1] - top2[0]) <= TIE_ATOL


def compact_case(source_npz: Path, target_npz: Path) -> None:
    """Full class scores → every PROBS_STRIDE-th row and column, plus the tie mask."""
    arrays = dict(np.load(source_npz))
    scores = arrays.pop("class_probs")
    arrays["class_probs_sub"] = np.ascontiguousarray(scores[:, ::PROBS_STRIDE, ::PROBS_STRIDE])
    arrays["tie"] = tie_mask(scores)
    np.savez_compressed(target_npz, **arrays)


def compact_cases(full: Path, out: Path) -> None:
    """Every case `NAME.npz`/`NAME.json` of the folder `full` into `out`, scores compacted."""
    out.mkdir(parents=True, exist_ok=True)
    for npz in sorted(full.glob("*.npz")):
        case = npz.with_suffix(".json")
        if "class_probs" in np.load(npz).files:
            compact_case(npz, out / npz.name)
            data = json.loads(case.read_text(encoding="utf-8"))
            data["probs_stride"] = PROBS_STRIDE
            (out / case.name).write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        else:
            shutil.copyfile(npz, out / npz.name)
            shutil.copyfile(case, out / case.name)


def make_compact(full: Path, out: Path) -> int:
    """Write the compact copy of `full` into `out`; returns its size in bytes."""
    for folder in ("methods", RESCLIP, PROXYCLIP):
        (out / folder).mkdir(parents=True, exist_ok=True)
    keep = used_tokens(full)
    for name in CHECKPOINTS:
        compact_checkpoint(full / name, out / name, keep)
    for name in VFM_CHECKPOINTS:
        (out / (name + COMPRESSED_SUFFIX)).write_bytes(lzma.compress((full / name).read_bytes(), preset=9))
    compact_cases(full, out)
    if (full / INIT_COMMIT).is_dir():
        compact_cases(full / INIT_COMMIT, out / INIT_COMMIT)
    for pattern in ("*_classes.txt", "*_image.npy", "tokens.json", "tokens.npy", "methods/*", f"{RESCLIP}/*",
                    f"{PROXYCLIP}/*", f"{INIT_COMMIT}/*_classes.txt"):
        for path in sorted(full.glob(pattern)):
            shutil.copyfile(path, out / path.relative_to(full))
    return sum(path.stat().st_size for path in out.rglob("*") if path.is_file() and path.suffix != ".py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("full", type=Path, help="the full golden folder (e.g. ../shared/golden)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="default: tests/golden")
    args = parser.parse_args()
    if not (args.full / CHECKPOINTS[0]).is_file():
        sys.exit(f"error: {args.full} is not a full golden folder (no {CHECKPOINTS[0]}): pass the release outputs")
    size = make_compact(args.full, args.out)
    print(f"wrote {args.out}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
