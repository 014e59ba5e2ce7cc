"""The `scclip` command: segment your images with your words, serve the web page, export, label, evaluate.

    scclip segment                                     # the bundled sample photo, ViT-B/16
    scclip segment --image cat.jpg --classes "cat,sofa,wall"
    scclip segment --image photos/ --vocab voc21 --save-mask
    scclip segment --image cat.jpg --classes "cat,sofa,wall" --method clearclip
    scclip segment --image cat.jpg --classes "cat,sofa,wall" --set anomaly_detector=norm
    scclip web --port 7860
    scclip export --backbone ViT-B/16 --method scclip --out exported/   # then: scclip segment --runtime onnx --model exported/
    scclip predict --image photos/ --vocab ade20k --out labels/          # = python predict.py
    scclip eval --config voc21 --data-root DIR                           # = python eval.py

`python -m scclip ...` is the same command, and the repository's `demo.py` runs it (`demo.py --web`
is `scclip web`). `segment` writes image | prediction | overlay with a legend to
outputs/<image name>_scclip.png and prints where (scclip.outputs: what is written, folders).
Problems with the input are reported in one line, starting with "error:". The flags shared by the
commands are declared once, in scclip.options (docs/flags.md).
"""
import argparse
import sys
from pathlib import Path

from . import options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scclip", description="SC-CLIP: open-vocabulary segmentation of your images.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    segment = commands.add_parser(
        "segment", help="segment images (default: a bundled sample photo)",
        description="SC-CLIP open-vocabulary segmentation of your images. Without --image, segments a bundled sample photo.",
    )
    options.add_image_option(segment, help="an image file, or a folder of images (default: the sample photo)")
    options.add_vocabulary_options(segment)
    options.add_runtime_options(segment)
    options.add_device_option(segment)
    options.add_backbone_options(segment)
    options.add_method_options(segment)
    options.add_call_options(segment)
    segment.add_argument("--out", type=Path, help="output picture (.png, .jpg, ...), or a folder (default: outputs/)")
    segment.add_argument("--recursive", action="store_true",
                         help="with a folder as --image, also segment the images in its subfolders")
    segment.add_argument("--save-mask", action="store_true",
                         help="also write the label PNG (palette) and a JSON of class names and pixel shares")
    segment.set_defaults(run=run)
    export = commands.add_parser(
        "export", help="export a method as ONNX graphs for the torch-free runtime (needs: pip install 'scclip[onnx]')",
        description="Write DIR/image_encoder.onnx, DIR/text_encoder.onnx, DIR/model.json and the tokenizer's "
                    "vocabulary, checked against PyTorch (docs/deploy.md).",
    )
    options.add_backbone_options(export)
    options.add_method_options(export)
    export.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="graph precision (default: fp32)")
    export.add_argument("--out", type=Path, required=True, help="the model folder to write")
    export.set_defaults(run=run_export)
    web = commands.add_parser(
        "web", help="serve the web page: upload a photo and name the classes (needs: pip install 'scclip[web]')",
        description="Serve a page where you upload a photo and name the classes, and its HTTP API.",
    )
    options.add_runtime_options(web)
    options.add_device_option(web)
    options.add_backbone_options(web)
    options.add_method_options(web)
    options.add_call_options(web)
    web.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    web.add_argument("--port", type=int, default=7860, help="port to serve on (default: 7860)")
    web.add_argument("--max-side", type=int, default=4096, help="largest image side accepted, in pixels (default: 4096)")
    web.add_argument("--max-classes", type=int, default=256, help="most classes per request (default: 256)")
    web.add_argument("--max-file-mb", type=int, default=50, help="largest upload, in megabytes (default: 50)")
    web.set_defaults(run=run_web)
    for name, what in DELEGATED_HELP.items():
        commands.add_parser(name, help=what, add_help=False)
    benchmarks = commands.add_parser(
        "benchmarks", help="list the benchmark keys in the paper's order (for scripts such as dist_test.sh)",
        description="Print the benchmark keys in the paper's order; with --check, only check the given keys.",
    )
    benchmarks.add_argument("--check", nargs="+", metavar="KEY", help="exit 1 naming the first key that is not a benchmark")
    benchmarks.set_defaults(run=run_benchmarks)
    backbones = commands.add_parser(
        "backbones", help="list the named open_clip backbones (BACKBONE= of dist_test.sh, eval.py --backbone)",
        description="List the open_clip backbones known by name; with --resolve, say how a backbone is evaluated.",
    )
    backbones.add_argument("--resolve", metavar="BACKBONE",
                           help="print '<config ending> <work-dir name> <settings>' for BACKBONE (a name, OpenAI "
                                "name, ARCH:TAG pair or file), e.g. '_vitl14.py metaclip_vitl14_fullcc ViT-L/14': its "
                                "benchmark configs, runs folder and whose published settings it takes (dist_test.sh)")
    backbones.add_argument("--clip-arch", help="open_clip architecture of a --resolve file or tag")
    backbones.set_defaults(run=run_backbones)
    return parser


# Commands with parsers of their own (`scclip predict --help`); `scclip COMMAND ...` runs their main.
DELEGATED_HELP = {
    "predict": "label every image of a folder, resumable, on one process or many (= python predict.py)",
    "eval": "evaluate a benchmark config or a folder of your own (mIoU), resumable (= python eval.py)",
}


def delegated_main(command: str):
    """The main function of a command with a parser of its own."""
    if command == "predict":
        from .predict import main as predict_main

        return predict_main
    from .evaluation.command import command_main as eval_main

    return eval_main


def run_backbones(args: argparse.Namespace) -> int:
    """The table of named backbones, or for --resolve the benchmark configs' ending, a work-dir name and the
    published backbone whose settings it takes."""
    from scclip.backbones import describe_named, parse_backbone
    from scclip.errors import InputError

    if args.resolve is None:
        if args.clip_arch is not None:
            raise InputError("--clip-arch names the architecture of a --resolve file or tag: give --resolve BACKBONE")
        print("\n".join(describe_named()))
        return 0
    backbone = parse_backbone(args.resolve, args.clip_arch)
    print(f"{backbone.config_suffix}.py {backbone.folder_name} {backbone.settings}")
    return 0


def run(args: argparse.Namespace) -> int:
    """`scclip segment`: everything cheap is checked before the model loads (scclip.outputs writes the files)."""
    from .outputs import segment_and_save
    from .vocabulary import SAMPLE_CLASSES, SAMPLE_IMAGE, check_vocabulary_arguments, vocabulary_lines

    classes = args.classes
    if args.image is None and args.classes is None and args.vocab is None:
        classes = list(SAMPLE_CLASSES)
    else:
        check_vocabulary_arguments(args.classes, args.vocab, args.image or SAMPLE_IMAGE)
    lines = vocabulary_lines(classes, args.vocab)
    options.check_runtime(args, ("backbone", "clip_arch", "vfm", "method"))
    settings = options.command_settings(args)  # checked before any path is

    def load():
        if args.runtime == "onnx":
            return onnx_segmenter(args, lines, settings.get("prob_thd"))
        from .api import Segmenter

        return Segmenter(args.backbone, classes=lines, device=args.device, pamr=args.pamr, slide=not args.no_slide,
                         clip_arch=args.clip_arch, method=args.method, **settings)

    return segment_and_save(args.image or SAMPLE_IMAGE, args.out, args.recursive, args.save_mask, load)


def onnx_segmenter(args: argparse.Namespace, lines: list[str], prob_thd: float | None):
    """`--runtime onnx`: the exported model with its method and settings (`prob_thd`: None keeps the export's)."""
    from .runtime import OnnxSegmenter

    return OnnxSegmenter(args.model, classes=lines, providers=options.onnx_providers(args.device),
                         pamr=True if args.pamr else None, prob_thd=prob_thd, slide=False if args.no_slide else None)


def run_export(args: argparse.Namespace) -> int:
    """`scclip export`: write the model folder and say where, with the largest difference from PyTorch."""
    from .export import export_model

    record = export_model(args.backbone, args.out, method=args.method, settings=options.method_settings(args),
                          precision=args.precision, clip_arch=args.clip_arch)
    parity = record["parity"]
    print(f"exported {record['method']} ({record['precision']}) to {args.out}: image features within "
          f"{parity['image_features_max_difference']:.1e}, text features within "
          f"{parity['text_features_max_difference']:.1e} of PyTorch")
    return 0


def run_web(args: argparse.Namespace) -> int:
    """Serve the web demo (scclip/web.py) until interrupted; with --runtime onnx, an exported model without torch."""
    from .web import Limits, require_gradio, serve

    options.check_runtime(args, ("backbone", "clip_arch", "vfm", "method"))
    require_gradio()  # before the model loads: without Gradio, say what to install
    limits = Limits(max_side=args.max_side, max_classes=args.max_classes, max_file_mb=args.max_file_mb)
    settings = options.command_settings(args)
    prob_thd = settings.pop("prob_thd", None)
    if args.runtime == "onnx":  # the other settings are the export's (checked above)
        serve(None, host=args.host, port=args.port, device=args.device, pamr=args.pamr, prob_thd=prob_thd,
              slide=not args.no_slide, limits=limits, model=args.model)
    else:
        serve(args.backbone, host=args.host, port=args.port, device=args.device, method=args.method, pamr=args.pamr,
              prob_thd=prob_thd, slide=not args.no_slide, limits=limits, clip_arch=args.clip_arch, **settings)
    return 0


def run_benchmarks(args: argparse.Namespace) -> int:
    from scclip.benchmarks import BENCHMARKS, check_benchmarks

    if args.check:
        check_benchmarks(args.check)
    else:
        print(" ".join(BENCHMARKS))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status (0, or 1 with one 'error: ...' line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED_HELP:
        return delegated_main(argv[0])(argv[1:])
    args = build_parser().parse_args(argv)
    from scclip.errors import exit_status

    return exit_status(lambda: args.run(args))


def demo_main(argv: list[str] | None = None) -> int:
    """`python demo.py [--web] ...`: `scclip web ...` with --web, else `scclip segment ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--web" in argv:
        argv.remove("--web")
        return main(["web", *argv])
    return main(["segment", *argv])


if __name__ == "__main__":
    sys.exit(main())
