"""The `scclip` command: `scclip segment` (your images, your words) and `scclip web` (the web page).

    scclip segment                                     # the bundled sample photo, ViT-B/16
    scclip segment --image cat.jpg --classes "cat,sofa,wall"
    scclip segment --image photos/ --vocab voc21 --save-mask
    scclip segment --image cat.jpg --classes "cat,sofa,wall" --method clearclip
    scclip segment --image cat.jpg --classes "cat,sofa,wall" --ablate anomaly_resolution,multi_level_fusion
    scclip web --port 7860
    scclip export --backbone ViT-B/16 --method scclip --out exported/   # then: scclip segment --runtime onnx --model exported/

`python -m scclip ...` is the same command, and the repository's `demo.py` runs it (`demo.py --web`
is `scclip web`). `segment` writes image | prediction | overlay with a legend to
outputs/<image name>_scclip.png and prints where. Problems with the input are reported in one line,
starting with "error:". Outputs never replace an input, and earlier outputs in the output folder
are not segmented again.

In a folder, every image is tried: one that fails (unreadable, damaged, anything it raises) is
named in one line with its size where known and the reason, and the exit status is 1. Each real
file is segmented once: links to folders are not followed, a link to an image file is segmented
under its own name unless its target is segmented already, and broken or looping links are listed
as skipped (which is not a failure). Very thin images (1×5000) are segmented too.
"""
import argparse
import contextlib
import sys
from collections import Counter
from pathlib import Path

DEFAULT_OUT_DIR = Path("outputs")
PICTURE_SUFFIX = "_scclip.png"
MASK_SUFFIX = "_mask.png"
# Files this demo writes; in a folder of inputs they are skipped (and listed as skipped).
OWN_SUFFIXES = (PICTURE_SUFFIX, MASK_SUFFIX)




def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose and configure the model, shared by `segment` and `web`."""
    parser.add_argument("--backbone", default="ViT-B/16",
                        help="CLIP name (ViT-B/16, ViT-L/14, ...), checkpoint file, or open_clip's model:pretrained "
                             "pair (ViT-B-16:laion2b_s34b_b88k, ViT-L-14-quickgelu:metaclip_fullcc) (default: ViT-B/16)")
    parser.add_argument("--clip-arch",
                        help="open_clip architecture (ViT-B-16, ViT-H-14, ...) of an open_clip checkpoint file or "
                             "pretrained tag given as --backbone")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="where to run (default: cuda when available, else cpu)")
    parser.add_argument("--pamr", action="store_true", help="refine the masks with PAMR")
    parser.add_argument("--prob-thd", type=float, default=0.0,
                        help="pixels whose best score is below this go to the first class (default: 0)")
    parser.add_argument("--method", default="scclip",
                        help="scclip (default) or a baseline: vanilla, maskclip, sclip, clearclip, naclip")
    parser.add_argument("--no-slide", action="store_true",
                        help="encode the whole image at once instead of 224-pixel sliding windows")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scclip", description="SC-CLIP: open-vocabulary segmentation of your images.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    segment = commands.add_parser(
        "segment", help="segment images (default: a bundled sample photo)",
        description="SC-CLIP open-vocabulary segmentation of your images. Without --image, segments a bundled sample photo.",
    )
    segment.add_argument("--image", type=Path,
                         help="an image file, or a folder of images (default: the sample photo)")
    segment.add_argument("--classes",
                         help="comma-separated class names, e.g. 'cat,dog,sky'; join synonyms with '|' ('dog|puppy')")
    segment.add_argument("--vocab",
                         help="a benchmark's vocabulary by name (voc21, ade20k, ...) or a vocabulary file: one class "
                              "per line, synonyms after ', '")
    add_model_options(segment)
    segment.add_argument("--out", type=Path,
                         help="output picture (.png, .jpg, ...), or a folder (default: outputs/)")
    segment.add_argument("--ablate",
                         help="switch SC-CLIP components off, comma-separated: anomaly_resolution, "
                              "attention_calibration, feature_aggregation, multi_level_fusion")
    segment.add_argument("--anomaly-detector",
                         help="SC-CLIP's anomaly tokens: lof (default, the release) or norm (the release's first "
                              "commit; docs/methods-and-ablations.md)")
    segment.add_argument("--recursive", action="store_true",
                         help="with a folder as --image, also segment the images in its subfolders")
    segment.add_argument("--save-mask", action="store_true",
                         help="also write the label PNG (palette) and a JSON of class names and pixel shares")
    segment.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                         help="torch (default), or onnx: run an exported model folder (--model) with ONNX Runtime")
    segment.add_argument("--model", type=Path, help="with --runtime onnx: the folder `scclip export` wrote")
    segment.set_defaults(run=run)
    export = commands.add_parser(
        "export", help="export a method as ONNX graphs for the torch-free runtime (needs: pip install 'scclip[onnx]')",
        description="Write DIR/image_encoder.onnx, DIR/text_encoder.onnx, DIR/model.json and the tokenizer's "
                    "vocabulary, checked against PyTorch (docs/deploy.md).",
    )
    export.add_argument("--backbone", default="ViT-B/16", help="CLIP name or checkpoint file (default: ViT-B/16)")
    export.add_argument("--clip-arch", help="open_clip architecture of an open_clip checkpoint file or tag")
    export.add_argument("--method", default="scclip",
                        help="scclip (default) or a baseline: vanilla, maskclip, sclip, clearclip, naclip")
    export.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a maths setting, repeatable: e.g. anomaly_detector=norm, slide_crop=0, prob_thd=0.3")
    export.add_argument("--precision", choices=("fp32", "fp16"), default="fp32", help="graph precision (default: fp32)")
    export.add_argument("--out", type=Path, required=True, help="the model folder to write")
    export.set_defaults(run=run_export)
    web = commands.add_parser(
        "web", help="serve the web page: upload a photo and name the classes (needs: pip install 'scclip[web]')",
        description="Serve a page where you upload a photo and name the classes, and its HTTP API.",
    )
    add_model_options(web)
    web.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    web.add_argument("--port", type=int, default=7860, help="port to serve on (default: 7860)")
    web.add_argument("--max-side", type=int, default=4096, help="largest image side accepted, in pixels (default: 4096)")
    web.add_argument("--max-classes", type=int, default=256, help="most classes per request (default: 256)")
    web.add_argument("--max-file-mb", type=int, default=50, help="largest upload, in megabytes (default: 50)")
    web.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                     help="torch (default), or onnx: serve an exported model folder (--model) with ONNX Runtime, "
                          "without PyTorch")
    web.add_argument("--model", type=Path, help="with --runtime onnx: the folder `scclip export` wrote")
    web.set_defaults(run=run_web)
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


def run_benchmarks(args: argparse.Namespace) -> int:
    from scclip.benchmarks import BENCHMARKS, check_benchmarks

    if args.check:
        check_benchmarks(args.check)
    else:
        print(" ".join(BENCHMARKS))
    return 0


def names_a_file(out: Path | None) -> bool:
    """`--out` names a picture file (it has a suffix and is not an existing folder); otherwise it is a folder."""
    return out is not None and bool(out.suffix) and not out.is_dir()


def picture_path(image: Path, out: Path | None, name: str | None = None) -> Path:
    """Where the picture of `image` goes: `out` itself when it names a file, else inside the folder
    `out` as `name` (default `<image stem>_scclip.png`)."""
    if names_a_file(out):
        return out
    return (out or DEFAULT_OUT_DIR) / (name or f"{image.stem}{PICTURE_SUFFIX}")


def picture_names(images: list[Path], root: Path) -> list[str]:
    """Picture names (relative to the output folder) for the images of a folder, all distinct.

    Subfolders are kept (`sub/shot_scclip.png`); images whose names differ only in their
    extension keep it (`shot_jpg_scclip.png`, `shot_png_scclip.png`), so no picture replaces another.
    """
    relative = [image.relative_to(root) for image in images]
    stems = Counter(str(path.with_suffix("")).casefold() for path in relative)
    names = []
    for path in relative:
        stem = path.with_suffix("")
        if stems[str(stem).casefold()] > 1:
            stem = stem.with_name(f"{stem.name}_{path.suffix.lstrip('.').lower()}")
        names.append(str(stem) + PICTURE_SUFFIX)
    return names


def written_paths(picture: Path, save_mask: bool) -> list[Path]:
    """Every file written for one image: the picture, and with --save-mask the mask PNG and JSON."""
    if not save_mask:
        return [picture]
    mask = picture.with_name(picture.stem + MASK_SUFFIX)
    return [picture, mask, mask.with_suffix(".json")]


def is_own_output(image: Path, out_folder: Path) -> bool:
    """An earlier output of this demo where this run writes its own: named like one, and inside the
    output folder. Elsewhere such a name is just the user's image and is segmented."""
    if not image.name.lower().endswith(OWN_SUFFIXES):
        return False
    return image.parent.resolve().is_relative_to(out_folder.resolve())


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (library messages may span several), shortened to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def failure_message(image: Path, error: Exception) -> str:
    """One line for an image that could not be segmented: the file, its size where known, the reason.

    Errors of scclip name the file and say what to do; anything else a strange image can make a
    library raise is named by its type, so that it can still be told apart.
    """
    from scclip.errors import ScclipError
    from scclip.imageio import describe_size, stored_size

    reason = one_line(str(error)) or "no message"
    if not isinstance(error, ScclipError):
        reason = f"{type(error).__name__}: {reason}"
    if str(image) in reason:
        return reason
    size = stored_size(image)
    return f"{image}{f' ({describe_size(size)})' if size else ''}: {reason}"


def missing_folders(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first: writing it will create them."""
    missing = []
    for folder in path.absolute().parents:
        if folder.exists():
            break
        missing.append(folder)
    return missing


def save_outputs(result, target: Path, save_mask: bool) -> list[Path]:
    """Write the picture (and with `save_mask` the mask and its JSON) of one image; when one of
    them cannot be written, those this call created are removed again, so no half set is left."""
    paths = written_paths(target, save_mask)
    fresh = [path for path in paths if not path.exists()]
    try:
        saved = [result.save(target)]
        if save_mask:
            saved += result.save_mask(paths[1])
    except BaseException:
        for path in fresh:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        raise
    return saved


def scclip_options(args: argparse.Namespace) -> dict:
    """SC-CLIP's own settings given on the command line: --ablate switches and --anomaly-detector."""
    from scclip.errors import InputError
    from scclip.settings import check_value

    options: dict = ablated_switches(args.ablate, args.method)
    if args.anomaly_detector is not None:
        if args.method != "scclip":
            raise InputError(f"--anomaly-detector chooses SC-CLIP's anomaly tokens, but --method is {args.method!r}: "
                             "use --method scclip")
        check_value("anomaly_detector", args.anomaly_detector, label=f"--anomaly-detector {args.anomaly_detector!r}")
        options["anomaly_detector"] = args.anomaly_detector
    return options


def ablated_switches(text: str | None, method: str) -> dict[str, bool]:
    """--ablate 'a,b' → {'a': False, 'b': False}, each an SC-CLIP switch name."""
    from scclip.errors import InputError
    from scclip.methods import SWITCHES

    if not text:
        return {}
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SWITCHES]
    if unknown:
        raise InputError(f"--ablate {unknown[0]!r} is not a switch of SC-CLIP: choose from {', '.join(SWITCHES)}")
    if method != "scclip":
        raise InputError(f"--ablate switches off parts of SC-CLIP, but --method is {method!r}: use --method scclip")
    return dict.fromkeys(names, False)


def run(args: argparse.Namespace) -> int:
    # Imported here, after parsing, so that --help and usage errors answer at once.
    from tqdm import tqdm

    from scclip.api import SAMPLE_CLASSES, SAMPLE_IMAGE, Segmenter
    from scclip.errors import ImageError, InputError, ScclipError
    from scclip.vocabulary import check_vocabulary_arguments, vocabulary_lines
    from scclip.imageio import read_image, scan_folder, writable_suffixes
    from scclip.settings import check_value

    # Everything cheap is checked before the model loads.
    classes = args.classes
    if args.image is None and args.classes is None and args.vocab is None:
        classes = list(SAMPLE_CLASSES)
    else:
        check_vocabulary_arguments(args.classes, args.vocab, args.image or SAMPLE_IMAGE)
    lines = vocabulary_lines(classes, args.vocab)
    check_value("prob_thd", args.prob_thd, label=f"--prob-thd {args.prob_thd:g}")
    check_value("method", args.method)  # unknown: the closest method's name and the list
    method_options = scclip_options(args)

    image_path = args.image or SAMPLE_IMAGE
    folder_mode = image_path.is_dir()
    if folder_mode:
        if names_a_file(args.out):
            raise InputError(
                f"--out {args.out} names a file, but --image {image_path} is a folder: give --out a folder"
            )
        out_folder = args.out or DEFAULT_OUT_DIR
        images, skipped = scan_folder(image_path, args.recursive)
        own = [image for image in images if is_own_output(image, out_folder)]
        images = [image for image in images if image not in own]
        skipped += [(path, f"an output of scclip segment (*{PICTURE_SUFFIX}, *{MASK_SUFFIX} in the output folder "
                           f"{out_folder})") for path in own]
        for path, reason in sorted(skipped):
            hint = (": add --recursive to include it" if "subfolder" in reason
                    else ": pass it as --image to include it" if "link to a folder" in reason else "")
            print(f"skipped {path}: {reason}{hint}", file=sys.stderr)
        if not images:
            raise ImageError(f"no image to segment in folder {image_path} (skipped files listed above): "
                             "pass a folder with JPEG, PNG, WebP or BMP images")
        targets = [picture_path(image, args.out, name) for image, name in zip(images, picture_names(images, image_path))]
        sources = list(images)
    else:
        images = [image_path]
        targets = [picture_path(image_path, args.out)]
        sources = [read_image(image_path)]
    if names_a_file(args.out) and args.out.suffix.lower() not in writable_suffixes():
        raise InputError(
            f"--out {args.out}: cannot write '{args.out.suffix}' pictures: use a .png or .jpg name, or a folder"
        )
    inputs = {image.resolve() for image in images}
    for target in targets:
        for path in written_paths(target, args.save_mask):
            if path.resolve() in inputs:
                raise InputError(f"--out {args.out} would overwrite the input image {path}: choose another --out")

    if args.runtime == "onnx":
        segmenter = onnx_segmenter(args, lines, method_options)
    elif args.model is not None:
        raise InputError(f"--model {args.model} is an exported model folder: add --runtime onnx to run it")
    else:
        segmenter = Segmenter(args.backbone, classes=lines, device=args.device, pamr=args.pamr,
                              prob_thd=args.prob_thd, slide=not args.no_slide, clip_arch=args.clip_arch,
                              method=args.method, **method_options)
    # Folders this run creates for its outputs; those still empty at the end (nothing written) go again.
    new_folders = sorted({folder for target in targets for folder in missing_folders(target)}, reverse=True)
    failures = written = 0
    progress = tqdm(list(zip(images, sources, targets)), unit="image", disable=len(images) == 1)
    try:
        for image, source, target in progress:
            try:
                paths = save_outputs(segmenter(source), target, args.save_mask)
            except Exception as error:  # a bad image never stops the others (KeyboardInterrupt still does)
                if not folder_mode:
                    if isinstance(error, ScclipError):
                        raise
                    raise ScclipError(failure_message(image, error)) from error
                failures += 1
                progress.write(f"error: skipped {failure_message(image, error)}", file=sys.stderr)
                continue
            written += 1
            if not folder_mode:
                print("\n".join(str(path) for path in paths))
    finally:
        for folder in new_folders:
            with contextlib.suppress(OSError):  # not empty: something was written there
                folder.rmdir()
    if folder_mode:
        print(f"wrote {written} picture{'s' * (written != 1)} to {args.out or DEFAULT_OUT_DIR}")
    if failures:
        raise ScclipError(f"{failures} of {len(images)} images could not be segmented (see above): fix or remove them")
    return 0


def onnx_segmenter(args: argparse.Namespace, lines: list[str], method_options: dict):
    """`segment --runtime onnx`: the exported model's own method and settings; the maths options are refused."""
    from scclip.errors import InputError
    from scclip.runtime import OnnxSegmenter

    if args.model is None:
        raise InputError("--runtime onnx needs --model DIR, a folder written by scclip export")
    if method_options or args.method != "scclip" or args.clip_arch or args.backbone != "ViT-B/16":
        raise InputError(f"--runtime onnx runs the method and backbone exported to {args.model}: drop --backbone, "
                         "--method, --ablate and --anomaly-detector (export another model to change them)")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if args.device == "cuda" else None
    return OnnxSegmenter(args.model, classes=lines, providers=providers, pamr=True if args.pamr else None,
                         prob_thd=args.prob_thd or None, slide=False if args.no_slide else None)


def run_export(args: argparse.Namespace) -> int:
    """`scclip export`: write the model folder and say where, with the largest difference from PyTorch."""
    from scclip.export import export_model, parse_setting

    settings = dict(parse_setting(text) for text in args.setting)
    record = export_model(args.backbone, args.out, method=args.method, settings=settings,
                          precision=args.precision, clip_arch=args.clip_arch)
    parity = record["parity"]
    print(f"exported {record['method']} ({record['precision']}) to {args.out}: image features within "
          f"{parity['image_features_max_difference']:.1e}, text features within "
          f"{parity['text_features_max_difference']:.1e} of PyTorch")
    return 0


def run_web(args: argparse.Namespace) -> int:
    """Serve the web demo (scclip/web.py) until interrupted; with --runtime onnx, an exported model without torch."""
    from scclip.errors import InputError
    from scclip.web import Limits, require_gradio, serve

    if args.runtime == "onnx":
        if args.model is None:
            raise InputError("--runtime onnx needs --model DIR, a folder written by scclip export")
        if args.method != "scclip" or args.clip_arch or args.backbone != "ViT-B/16":
            raise InputError(f"--runtime onnx serves the method and backbone exported to {args.model}: drop "
                             "--backbone, --clip-arch and --method (export another model to change them)")
    elif args.model is not None:
        raise InputError(f"--model {args.model} is an exported model folder: add --runtime onnx to serve it")
    require_gradio()  # before the model loads: without Gradio, say what to install
    limits = Limits(max_side=args.max_side, max_classes=args.max_classes, max_file_mb=args.max_file_mb)
    if args.runtime == "onnx":
        serve(None, host=args.host, port=args.port, device=args.device, pamr=args.pamr, prob_thd=args.prob_thd,
              slide=not args.no_slide, limits=limits, model=args.model)
    else:
        serve(args.backbone, host=args.host, port=args.port, device=args.device, method=args.method, pamr=args.pamr,
              prob_thd=args.prob_thd, slide=not args.no_slide, limits=limits, clip_arch=args.clip_arch)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run a command; returns the exit status (0, or 1 with one 'error: ...' line on stderr)."""
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
