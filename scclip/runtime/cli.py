"""`python -m scclip.runtime segment --model DIR --image IMG|FOLDER --classes 'a,b' [--out OUT] [--save-mask]`.

Writes the files `scclip segment` writes (`<stem>_scclip.png`, and with --save-mask
`<stem>_scclip_mask.png` and `<stem>_scclip_mask.json`; for a folder, one set per image) with an
exported model folder and no torch; problems are reported in one line starting with "error:".
Its flags are the ones `scclip segment` spells the same way (scclip.options).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scclip.runtime",
                                     description="Segment images with an exported SC-CLIP model, without PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    segment = commands.add_parser("segment", help="segment an image or a folder of images",
                                  description="Segment images with an exported model folder (scclip export).")
    options.add_model_option(segment, required=True)
    options.add_device_option(segment)
    options.add_image_option(segment, required=True)
    options.add_vocabulary_options(segment)
    options.add_call_options(segment)
    segment.add_argument("--out", type=Path, help="output picture (.png, .jpg, ...), or a folder (default: outputs/)")
    segment.add_argument("--recursive", action="store_true",
                         help="with a folder as --image, also segment the images in its subfolders")
    segment.add_argument("--save-mask", action="store_true",
                         help="also write the label PNG (palette) and a JSON of class names and pixel shares")
    return parser


def run_segment(args: argparse.Namespace) -> int:
    from ..outputs import segment_and_save
    from ..vocabulary import check_vocabulary_arguments
    from .segmenter import OnnxSegmenter

    check_vocabulary_arguments(args.classes, args.vocab, args.image)

    def load() -> OnnxSegmenter:
        return OnnxSegmenter(args.model, classes=args.classes, vocab=args.vocab,
                             providers=options.onnx_providers(args.device), pamr=True if args.pamr else None,
                             prob_thd=args.prob_thd, slide=False if args.no_slide else None)

    return segment_and_save(args.image, args.out, args.recursive, args.save_mask, load,
                            command="python -m scclip.runtime segment")


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status (0, or 1 with one 'error: ...' line on stderr)."""
    args = build_parser().parse_args(argv)
    from ..errors import exit_status

    return exit_status(lambda: run_segment(args))
