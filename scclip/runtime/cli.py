"""`python -m scclip.runtime segment --model DIR --image IMG --classes 'a,b' [--out OUT] [--save-mask]`.

Writes the files `scclip segment` writes (`<stem>_scclip.png`, and with --save-mask
`<stem>_scclip_mask.png` and `<stem>_scclip_mask.json`) with an exported model folder and no torch;
problems are reported in one line starting with "error:".
"""
from __future__ import annotations

import argparse
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scclip.runtime",
                                     description="Segment images with an exported SC-CLIP model, without PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    segment = commands.add_parser("segment", help="segment one image",
                                  description="Segment one image with an exported model folder (scclip export).")
    segment.add_argument("--model", type=Path, required=True, help="the exported model folder")
    segment.add_argument("--image", type=Path, required=True, help="an image file")
    segment.add_argument("--classes", help="comma-separated class names, e.g. 'cat,dog,sky'; join synonyms with '|'")
    segment.add_argument("--vocab", help="a vocabulary file (one class per line) or a benchmark's name (voc21, ...)")
    segment.add_argument("--out", type=Path, help="output picture (.png, .jpg, ...), or a folder (default: outputs/)")
    segment.add_argument("--save-mask", action="store_true",
                         help="also write the label PNG (palette) and a JSON of class names and pixel shares")
    segment.add_argument("--prob-thd", type=float, help="pixels whose best score is below this go to the first class "
                                                        "(default: the exported setting)")
    segment.add_argument("--pamr", action="store_true", help="refine the masks with PAMR")
    segment.add_argument("--provider", action="append", dest="providers", metavar="NAME",
                         help="ONNX Runtime execution provider, repeatable, best first (default: CPUExecutionProvider)")
    return parser


def run_segment(args: argparse.Namespace) -> int:
    from ..cli import names_a_file, picture_path, save_outputs, written_paths
    from ..errors import InputError
    from ..vocabulary import check_vocabulary_arguments
    from ..imageio import read_image, writable_suffixes
    from .segmenter import OnnxSegmenter

    check_vocabulary_arguments(args.classes, args.vocab, args.image)
    if names_a_file(args.out) and args.out.suffix.lower() not in writable_suffixes():
        raise InputError(f"--out {args.out}: cannot write '{args.out.suffix}' pictures: use a .png or .jpg name, "
                         "or a folder")
    target = picture_path(args.image, args.out)
    image = read_image(args.image)
    for path in written_paths(target, args.save_mask):
        if path.resolve() == args.image.resolve():
            raise InputError(f"--out {args.out} would overwrite the input image {path}: choose another --out")
    segmenter = OnnxSegmenter(args.model, classes=args.classes, vocab=args.vocab, providers=args.providers,
                              pamr=True if args.pamr else None, prob_thd=args.prob_thd)
    paths = save_outputs(segmenter(image), target, args.save_mask)
    print("\n".join(str(path) for path in paths))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status (0, or 1 with one 'error: ...' line on stderr)."""
    args = build_parser().parse_args(argv)
    from ..errors import exit_status

    return exit_status(lambda: run_segment(args))
