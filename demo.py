"""Segment your own images with your own words.

    python demo.py                                     # the bundled sample photo, ViT-B/16
    python demo.py --image cat.jpg --classes "cat,sofa,wall"
    python demo.py --image photos/ --vocab configs/cls_voc21.txt --save-mask

Writes image | prediction | overlay with a legend to outputs/<image name>_scclip.png and prints
where. Problems with the input are reported in one line, starting with "error:".
"""
import argparse
import sys
from pathlib import Path

DEFAULT_OUT_DIR = Path("outputs")
PICTURE_SUFFIX = "_scclip.png"
MASK_SUFFIX = "_mask.png"
EXAMPLE_CLASSES = "--classes 'cat,sofa,wall'"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="SC-CLIP open-vocabulary segmentation of your images. "
        "Without --image, segments a bundled sample photo.",
    )
    parser.add_argument("--image", type=Path,
                        help="an image file, or a folder of images (default: the sample photo)")
    parser.add_argument("--classes",
                        help="comma-separated class names, e.g. 'cat,dog,sky'; join synonyms with '|' ('dog|puppy')")
    parser.add_argument("--vocab", type=Path,
                        help="vocabulary file: one class per line, synonyms after ', ' (as configs/cls_*.txt)")
    parser.add_argument("--backbone", default="ViT-B/16",
                        help="CLIP name (ViT-B/16, ViT-L/14, ...) or checkpoint file (default: ViT-B/16)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="where to run (default: cuda when available, else cpu)")
    parser.add_argument("--out", type=Path,
                        help="output picture (.png, .jpg, ...), or a folder (default: outputs/)")
    parser.add_argument("--pamr", action="store_true", help="refine the masks with PAMR")
    parser.add_argument("--prob-thd", type=float, default=0.0,
                        help="pixels whose best score is below this go to the first class (default: 0)")
    parser.add_argument("--no-slide", action="store_true",
                        help="encode the whole image at once instead of 224-pixel sliding windows")
    parser.add_argument("--save-mask", action="store_true",
                        help="also write the label PNG (palette) and a JSON of class names and pixel shares")
    web = parser.add_argument_group("web demo", "python demo.py --web serves a page where you upload a photo and "
                                    "name the classes (needs: pip install -e '.[web]')")
    web.add_argument("--web", action="store_true", help="start the web demo (the model options above apply)")
    web.add_argument("--host", default="127.0.0.1", help="address to serve on (default: 127.0.0.1, this machine only)")
    web.add_argument("--port", type=int, default=7860, help="port to serve on (default: 7860)")
    web.add_argument("--max-side", type=int, default=4096, help="largest image side accepted, in pixels (default: 4096)")
    web.add_argument("--max-classes", type=int, default=256, help="most classes per request (default: 256)")
    web.add_argument("--max-file-mb", type=int, default=50, help="largest upload, in megabytes (default: 50)")
    return parser.parse_args(argv)


def names_a_file(out: Path | None) -> bool:
    """`--out` names a picture file (it has a suffix and is not an existing folder); otherwise it is a folder."""
    return out is not None and bool(out.suffix) and not out.is_dir()


def picture_path(image: Path, out: Path | None) -> Path:
    """Where the picture of `image` goes: `out` itself when it names a file, else inside the folder `out`."""
    return out if names_a_file(out) else (out or DEFAULT_OUT_DIR) / f"{image.stem}{PICTURE_SUFFIX}"


def run(args: argparse.Namespace) -> int:
    # Imported here, after parsing, so that --help and usage errors answer at once.
    from PIL import Image
    from tqdm import tqdm

    from scclip.api import SAMPLE_CLASSES, SAMPLE_IMAGE, Segmenter, parse_classes, vocabulary_lines
    from scclip.errors import ImageError, InputError, ScclipError, VocabularyError
    from scclip.imageio import list_images, read_image

    # Everything cheap is checked before the model loads.
    classes = args.classes
    if args.classes is None and args.vocab is None:
        if args.image is not None:
            raise VocabularyError(
                f"no classes given for {args.image}: name them, e.g. {EXAMPLE_CLASSES}, or give --vocab FILE"
            )
        classes = list(SAMPLE_CLASSES)
    elif args.vocab is None and not parse_classes(args.classes):
        raise VocabularyError(f"--classes {args.classes!r} holds no class name: give names, e.g. {EXAMPLE_CLASSES}")
    lines = vocabulary_lines(classes, args.vocab)

    image_path = args.image or SAMPLE_IMAGE
    if image_path.is_dir():
        if names_a_file(args.out):
            raise InputError(
                f"--out {args.out} names a file, but --image {image_path} is a folder: give --out a folder"
            )
        images = list_images(image_path)
        sources = list(images)
    else:
        images = [image_path]
        sources = [read_image(image_path)]
    if names_a_file(args.out):
        writable = {suffix for suffix, format in Image.registered_extensions().items() if format in Image.SAVE}
        if args.out.suffix.lower() not in writable:
            raise InputError(
                f"--out {args.out}: cannot write '{args.out.suffix}' pictures: use a .png or .jpg name, or a folder"
            )

    segmenter = Segmenter(args.backbone, classes=lines, device=args.device, pamr=args.pamr,
                          prob_thd=args.prob_thd, slide=not args.no_slide)
    failures = 0
    progress = tqdm(list(zip(images, sources)), unit="image", disable=len(images) == 1)
    for image, source in progress:
        try:
            result = segmenter(source)
        except (ImageError, InputError) as error:
            if len(images) == 1:
                raise
            failures += 1
            message = str(error) if str(image) in str(error) else f"{image}: {error}"
            progress.write(f"error: skipped {message}", file=sys.stderr)
            continue
        target = picture_path(image, args.out)
        written = [result.save(target)]
        if args.save_mask:
            written += result.save_mask(target.with_name(target.stem + MASK_SUFFIX))
        if len(images) == 1:
            print("\n".join(str(path) for path in written))
    if len(images) > 1:
        print(f"wrote {len(images) - failures} pictures to {picture_path(images[0], args.out).parent}")
    if failures:
        raise ScclipError(f"{failures} of {len(images)} images could not be segmented (see above): fix or remove them")
    return 0


def run_web(args: argparse.Namespace) -> int:
    """Serve the web demo (scclip/web.py) until interrupted."""
    from scclip.web import Limits, require_gradio, serve

    require_gradio()  # before the model loads: without Gradio, say what to install
    limits = Limits(max_side=args.max_side, max_classes=args.max_classes, max_file_mb=args.max_file_mb)
    options = {name: getattr(args, name) for name in ("method", "clip_arch") if getattr(args, name, None) is not None}
    serve(args.backbone, host=args.host, port=args.port, device=args.device, pamr=args.pamr, prob_thd=args.prob_thd,
          slide=not args.no_slide, limits=limits, **options)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status (0, or 1 with one 'error: ...' line on stderr)."""
    args = parse_args(argv)
    from scclip.errors import ScclipError

    try:
        return run_web(args) if args.web else run(args)
    except ScclipError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
