"""What `scclip segment` and `python -m scclip.runtime segment` write, and their loop over an image or a folder.

Both commands write the same files for an image (`<stem>_scclip.png`: image | prediction | overlay,
and with --save-mask `<stem>_scclip_mask.png` and its JSON), so they share this module; it imports
nothing torch-side (the runtime's command runs without PyTorch).

In a folder, every image is tried: one that fails (unreadable, damaged, anything it raises) is
named in one line with its size where known and the reason, and the exit status is 1. Each real
file is segmented once: links to folders are not followed, a link to an image file is segmented
under its own name unless its target is segmented already, and broken or looping links are listed
as skipped (which is not a failure). Outputs never replace an input, and earlier outputs in the
output folder are not segmented again.
"""
from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .errors import ImageError, InputError, ScclipError
from .imageio import read_image, scan_folder, writable_suffixes

DEFAULT_OUT_DIR = Path("outputs")
PICTURE_SUFFIX = "_scclip.png"
MASK_SUFFIX = "_mask.png"
# Files these commands write; in a folder of inputs they are skipped (and listed as skipped).
OWN_SUFFIXES = (PICTURE_SUFFIX, MASK_SUFFIX)


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
    from .imageio import problem_line, stored_size

    reason = one_line(str(error)) or "no message"
    if not isinstance(error, ScclipError):
        reason = f"{type(error).__name__}: {reason}"
    if str(image) in reason:
        return reason
    return problem_line(image, reason, stored_size(image))


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


def segment_and_save(image_path: Path, out: Path | None, recursive: bool, save_mask: bool,
                     load: Callable[[], Callable], command: str = "scclip segment") -> int:
    """Segment an image or every image of a folder with the segmenter `load()` returns (called once the
    paths are checked, so a bad --out is refused before a model loads) and write their outputs."""
    folder_mode = image_path.is_dir()
    if folder_mode:
        if names_a_file(out):
            raise InputError(f"--out {out} names a file, but --image {image_path} is a folder: give --out a folder")
        out_folder = out or DEFAULT_OUT_DIR
        images, skipped = scan_folder(image_path, recursive)
        own = [image for image in images if is_own_output(image, out_folder)]
        images = [image for image in images if image not in own]
        skipped += [(path, f"an output of {command} (*{PICTURE_SUFFIX}, *{MASK_SUFFIX} in the output folder "
                           f"{out_folder})") for path in own]
        for path, reason in sorted(skipped):
            hint = (": add --recursive to include it" if "subfolder" in reason
                    else ": pass it as --image to include it" if "link to a folder" in reason else "")
            print(f"skipped {path}: {reason}{hint}", file=sys.stderr)
        if not images:
            raise ImageError(f"no image to segment in folder {image_path} (skipped files listed above): "
                             "pass a folder with JPEG, PNG, WebP or BMP images")
        targets = [picture_path(image, out, name) for image, name in zip(images, picture_names(images, image_path))]
        sources = list(images)
    else:
        images = [image_path]
        targets = [picture_path(image_path, out)]
        sources = [read_image(image_path)]
    if names_a_file(out) and out.suffix.lower() not in writable_suffixes():
        raise InputError(f"--out {out}: cannot write '{out.suffix}' pictures: use a .png or .jpg name, or a folder")
    inputs = {image.resolve() for image in images}
    for target in targets:
        for path in written_paths(target, save_mask):
            if path.resolve() in inputs:
                raise InputError(f"--out {out} would overwrite the input image {path}: choose another --out")

    segmenter = load()
    # Folders this run creates for its outputs; those still empty at the end (nothing written) go again.
    new_folders = sorted({folder for target in targets for folder in missing_folders(target)}, reverse=True)
    failures = written = 0
    progress = _progress(list(zip(images, sources, targets)), len(images) > 1)
    try:
        for image, source, target in progress:
            try:
                paths = save_outputs(segmenter(source), target, save_mask)
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
        print(f"wrote {written} picture{'s' * (written != 1)} to {out or DEFAULT_OUT_DIR}")
    if failures:
        raise ScclipError(f"{failures} of {len(images)} images could not be segmented (see above): fix or remove them")
    return 0


class _Plain:
    """Iteration without a progress bar (tqdm is not part of the torch-free runtime's packages)."""

    def __init__(self, items: list) -> None:
        self.items = items

    def __iter__(self):
        return iter(self.items)

    @staticmethod
    def write(text: str, file=None) -> None:
        print(text, file=file)


def _progress(items: list, shown: bool):
    """tqdm's bar over a folder's images where tqdm is installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return _Plain(items)
    return tqdm(items, unit="image", disable=not shown)
