"""Read the images users really have into one form (H×W×3 uint8 RGB), and write outputs atomically.

Photos arrive as files in many encodings (8/16-bit, grayscale, alpha, CMYK, EXIF-rotated), as
PIL images or as numpy arrays; the segmentor wants one thing. Transparent pixels are composited
onto white, the way most viewers show them, so that undefined colours under alpha 0 (often black
or junk) are not segmented as if they were visible.
"""
import errno
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, InputError, ScclipError

ImageSource = str | os.PathLike | Image.Image | np.ndarray

# Suffixes picked up when a folder is given; any file PIL decodes is accepted when named directly.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")

_WHITE = (255, 255, 255)
ORIENTATION_TAG = 0x0112
TURNED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that turn the picture by a quarter: width and height swap


def read_image(source: ImageSource) -> np.ndarray:
    """An image as an H×W×3 uint8 RGB array.

    Args:
        source: a file path; a PIL image; or an H×W, H×W×1, H×W×3 (RGB) or H×W×4 (RGBA) array
            of uint8, uint16 (full 16-bit range) or floats in [0, 1].
    Raises:
        ImageError: a file is missing, is not an image, or cannot be decoded.
        InputError: an array or object of a kind that is not an image.
    """
    if isinstance(source, (str, os.PathLike)):
        return _read_file(Path(source))
    if isinstance(source, Image.Image):
        return pil_to_rgb(source)
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    raise InputError(
        f"cannot read an image from a {type(source).__name__}: pass a file path, a PIL image or a numpy array"
    )


def _read_file(path: Path) -> np.ndarray:
    problem = entry_problem(path)
    if problem is not None:
        raise ImageError(problem_line(path, problem))
    size = None
    try:
        with Image.open(path) as image:
            size = image.size
            image.load()
            return pil_to_rgb(image)
    except ScclipError:  # an image of a kind scclip refuses (array_to_rgb says which)
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # Pillow's ways to fail
        raise ImageError(problem_line(path, decoding_problem(error), size)) from None


# One wording per problem with an image file, for every command that reads images (scclip segment,
# predict.py, the web page, eval.py's data check and loaders): '<file>[ (W×H pixels)]: <problem>'.
NOT_AN_IMAGE = "not an image that can be read: use a JPEG, PNG, WebP or BMP file"


def problem_line(path: str | os.PathLike, problem: str, size: tuple[int, int] | None = None) -> str:
    """'<path> (W×H pixels): <problem>': how every command names a file it could not read, and why."""
    return f"{path}{f' ({describe_size(size)})' if size else ''}: {problem}"


def entry_problem(path: str | os.PathLike) -> str | None:
    """Why `path` is not a regular file that can be opened (missing, a loop or broken link, a folder, a pipe),
    or None when it is one. Only the file system is asked: nothing is opened, so a pipe cannot block."""
    path = Path(path)
    try:
        info = path.stat()
    except OSError as error:
        return _unreadable_entry(path, error)
    if stat.S_ISDIR(info.st_mode):
        return "a folder, not an image file: pass an image file"
    if not stat.S_ISREG(info.st_mode):  # opening a pipe would wait for a writer for ever
        return "not a regular file (a pipe, socket or device)"
    return None


def decoding_problem(error: BaseException) -> str:
    """Why an image file that exists could not be read, from what reading it raised."""
    if isinstance(error, UnidentifiedImageError):
        return NOT_AN_IMAGE
    if isinstance(error, Image.DecompressionBombError):
        return f"too large to decode safely ({error}): downscale it first"
    if isinstance(error, PermissionError):
        return "cannot be read: permission denied: make it readable (chmod +r) or copy it"
    if isinstance(error, OSError) and error.errno is not None:
        # The system could not read the file; Pillow's decoding errors carry no errno.
        return f"cannot be read: {error.strerror}: check the file and its disk"
    return f"damaged or truncated ({error}): re-save or re-download it"


def image_problem(path: str | os.PathLike) -> str | None:
    """The one line that says why `read_image` cannot read the image file `path`, or None when it can."""
    try:
        _read_file(Path(path))
    except ImageError as error:
        return str(error)
    return None


def describe_size(size: tuple[int, int]) -> str:
    """(width, height) as the user's image viewer says it: '1×5000 pixels'."""
    return f"{size[0]}×{size[1]} pixels"


def stored_size(path: str | os.PathLike, oriented: bool = False) -> tuple[int, int] | None:
    """(width, height) from an image file's header (nothing is decoded), or None when it has none
    that Pillow reads: so that a failure can name the size of the image it happened to.

    Args:
        oriented: the size once its EXIF orientation is applied (as `read_image` and OpenCV decode it).
    """
    if entry_problem(path) is not None:  # opening a pipe would wait for a writer for ever
        return None
    try:
        with Image.open(path) as image:
            width, height = image.size
            turned = oriented and image.getexif().get(ORIENTATION_TAG) in TURNED_ORIENTATIONS
            return (height, width) if turned else (width, height)
    except Exception:  # any reason the header cannot be read just means the size is unknown
        return None


def pil_to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image (any mode) as H×W×3 uint8 RGB, with its EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        return array_to_rgb(np.asarray(image).astype(np.uint16))
    if image.mode == "I":
        return array_to_rgb(_int32_to_uint16(np.asarray(image)))
    if image.mode == "F":
        return array_to_rgb(np.asarray(image))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(image.convert("RGBA"))
    return np.asarray(image.convert("RGB"))


def _int32_to_uint16(values: np.ndarray) -> np.ndarray:
    # Pillow's 32-bit mode 'I' holds 16-bit samples from some PNG/TIFF decoders.
    return np.clip(values, 0, 65535).astype(np.uint16)


def _composite_on_white(rgba: Image.Image) -> np.ndarray:
    background = Image.new("RGBA", rgba.size, _WHITE + (255,))
    return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """An H×W[×1|3|4] array (uint8, uint16, or floats in [0, 1]) as H×W×3 uint8 RGB."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise InputError(f"image array has shape {array.shape}: expected H×W, H×W×3 (RGB) or H×W×4 (RGBA)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image array has shape {array.shape}: it holds no pixels")
    array = _to_uint8(array)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 4:
        return _composite_on_white(Image.fromarray(array))
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError("float image holds NaN or infinite values: replace them with values in [0, 1]")
        low, high = float(array.min()), float(array.max())
        if not (0.0 <= low and high <= 1.0):
            raise InputError(f"float image has values in [{low:g}, {high:g}]: scale it to [0, 1] (e.g. divide by 255)")
        return np.round(array * 255.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"{array.dtype} image has values in [{array.min()}, {array.max()}]: "
                             "pass uint8 (0–255), uint16 (0–65535) or floats in [0, 1]")
        return array.astype(np.uint8)
    raise InputError(f"image array has dtype {array.dtype}: pass uint8, uint16 or floats in [0, 1]")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly inside a folder (by suffix), sorted by name.

    Raises:
        ImageError: the folder holds no image files.
    """
    paths, _ = scan_folder(folder)
    if not paths:
        raise ImageError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {folder}: pass a folder with images")
    return paths


def scan_folder(folder: str | os.PathLike, recursive: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files in a folder (and its subfolders when `recursive`), sorted, and every other
    entry with the reason it is not one, so that nothing is left out silently.

    Each real file is visited once. Links to folders are never followed: they can lead out of the
    folder, or back into it and round for ever. A link to an image file is taken under its own name,
    wherever its target lies, unless that target is already taken (as itself or through an earlier
    link: files come before links, then sorted order); hard links to one file count once as well.
    Broken and looping links, pipes and devices (reading one could block) are listed as skipped.

    Raises:
        ImageError: the folder itself cannot be read.
    """
    root = Path(folder)
    try:
        folders = {_file_key(root.stat()): root}
    except OSError as error:
        raise ImageError(f"cannot read folder {root}: {error.strerror}: check the path and its permissions") from None
    found: list[tuple[Path, tuple[int, int], bool]] = []  # (path, real file, reached through a link)
    skipped: list[tuple[Path, str]] = []
    stack = [iter(_entries(root, skipped))]
    while stack:
        path = next(stack[-1], None)
        if path is None:
            stack.pop()
            continue
        try:
            info = path.lstat()
            is_link = stat.S_ISLNK(info.st_mode)
            if is_link:
                info = path.stat()
        except OSError as error:
            skipped.append((path, _unreadable_entry(path, error)))
            continue
        if stat.S_ISDIR(info.st_mode):
            key = _file_key(info)
            if is_link:
                skipped.append((path, "a link to a folder (not followed: it could lead out of the folder or "
                                      "back into it)"))
            elif not recursive:
                skipped.append((path, "a subfolder (not searched without recursion)"))
            elif key in folders:
                skipped.append((path, f"the same folder as {folders[key]} (searched once)"))
            else:
                folders[key] = path
                stack.append(iter(_entries(path, skipped)))
        elif path.name.startswith("."):
            skipped.append((path, "a hidden file"))
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((path, f"not an image suffix ({', '.join(IMAGE_SUFFIXES)})"))
        elif not stat.S_ISREG(info.st_mode):
            skipped.append((path, "not a regular file (a pipe, socket or device)"))
        else:
            found.append((path, _file_key(info), is_link))
    taken: dict[tuple[int, int], Path] = {}
    for through_link in (False, True):
        for path, key, is_link in found:
            if is_link != through_link:
                continue
            if key in taken:
                same = f"a link to {taken[key]}" if is_link else f"the same file as {taken[key]} (a hard link)"
                skipped.append((path, f"{same}, which is taken already"))
            else:
                taken[key] = path
    images = [path for path, key, _ in found if taken[key] == path]
    return images, sorted(skipped)


def _file_key(info: os.stat_result) -> tuple[int, int]:
    """What tells real files apart, whatever their names and links: device and inode."""
    return info.st_dev, info.st_ino


def _entries(folder: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    """A folder's entries, sorted; an unreadable folder is listed in `skipped` instead of stopping the walk."""
    try:
        return sorted(folder.iterdir())
    except OSError as error:
        skipped.append((folder, f"a folder that cannot be read ({error.strerror})"))
        return []


def _unreadable_entry(path: Path, error: OSError) -> str:
    """Why `path` (whose lstat or stat failed) cannot be taken, for the list of skipped files."""
    if error.errno == errno.ELOOP:
        return "a link that loops (following it never reaches a file)"
    if error.errno == errno.ENOENT:
        if path.is_symlink():
            return f"a broken link (its target {os.readlink(path)} does not exist)"
        return "not found: check the path"
    return f"cannot be read ({error.strerror})"


def writable_suffixes() -> set[str]:
    """File suffixes PIL can write pictures as ('.png', '.jpg', ...), lower case."""
    return {suffix for suffix, format in Image.registered_extensions().items() if format in Image.SAVE}
