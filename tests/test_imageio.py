"""Image reading: every kind of input users have ends up as the right H×W×3 uint8 RGB pixels."""
import builtins
import errno
import os

import numpy as np
import pytest
from PIL import Image

from scclip.errors import ImageError, InputError
from scclip.fileio import write_atomically
from scclip.imageio import array_to_rgb, list_images, read_image, scan_folder

EXIF_ORIENTATION = 0x0112


def gradient_image(height: int = 48, width: int = 64) -> np.ndarray:
    """An RGB image with distinct, smooth channels (JPEG keeps it nearly intact)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), np.full_like(x, 90)], axis=-1).astype(np.uint8)


def quadrants(height: int = 40, width: int = 60) -> np.ndarray:
    """Four flat colours, one per quadrant, so a rotation is easy to recognise after JPEG."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)
    image[: height // 2, width // 2 :] = (0, 255, 0)
    image[height // 2 :, : width // 2] = (0, 0, 255)
    image[height // 2 :, width // 2 :] = (255, 255, 0)
    return image


@pytest.mark.parametrize("suffix, tolerance", [(".png", 0), (".bmp", 0), (".webp", 0), (".jpg", 6)])
def test_reads_common_formats(tmp_path, suffix, tolerance):
    image = gradient_image()
    path = tmp_path / f"photo{suffix}"
    options = {".webp": {"lossless": True}, ".jpg": {"quality": 95}}.get(suffix, {})
    Image.fromarray(image).save(path, **options)
    rgb = read_image(path)
    assert rgb.dtype == np.uint8 and rgb.shape == image.shape
    assert np.abs(rgb.astype(int) - image).mean() <= tolerance


def test_grayscale_file_is_replicated_to_three_channels(tmp_path):
    gray = gradient_image()[..., 0]
    Image.fromarray(gray).save(tmp_path / "gray.png")
    rgb = read_image(tmp_path / "gray.png")
    assert rgb.shape == (*gray.shape, 3)
    assert all(np.array_equal(rgb[..., c], gray) for c in range(3))


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., :3] = (200, 0, 0)
    rgba[:, :6, 3] = 255  # left half opaque red
    rgba[:, 6:, 3] = 0  # right half transparent: its colour must not show
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    rgb = read_image(tmp_path / "alpha.png")
    assert (rgb[:, :6] == (200, 0, 0)).all()
    assert (rgb[:, 6:] == 255).all()
    half = rgba.copy()
    half[..., 3] = 128
    assert np.abs(read_image(half).astype(int) - (228, 127, 127)).max() <= 1


def test_palette_image_with_transparency(tmp_path):
    image = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8))
    image.putpalette([0, 0, 255, 0, 255, 0])
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    rgb = read_image(tmp_path / "p.png")
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[0, 1].tolist() == [0, 255, 0]


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    rgb = read_image(tmp_path / "deep.png")
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]


def test_16_bit_rgb_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    deep = gradient_image().astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "deep_rgb.png"), deep[..., ::-1])
    assert np.abs(read_image(tmp_path / "deep_rgb.png").astype(int) - gradient_image()).max() <= 1


def test_cmyk_jpeg(tmp_path):
    image = gradient_image()
    Image.fromarray(image).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    rgb = read_image(tmp_path / "cmyk.jpg")
    assert rgb.shape == image.shape
    assert np.abs(rgb.astype(int) - image).mean() < 6


@pytest.mark.parametrize("orientation, turns", [(6, -1), (8, 1), (3, 2)])
def test_exif_orientation_is_honoured(tmp_path, orientation, turns):
    image = quadrants()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(image).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    rgb = read_image(tmp_path / "rotated.jpg")
    expected = np.rot90(image, k=turns)  # k=-1: clockwise, as orientation 6 asks
    assert rgb.shape == expected.shape
    assert np.abs(rgb.astype(int) - expected).mean() < 8


def test_pil_images_of_other_modes():
    gray16 = Image.fromarray(np.array([[65535, 0]], np.uint16))
    assert read_image(gray16)[0, :, 0].tolist() == [255, 0]
    assert read_image(Image.new("1", (3, 2), 1)).tolist() == np.full((2, 3, 3), 255).tolist()
    assert read_image(Image.new("LA", (2, 2), (10, 255)))[0, 0].tolist() == [10, 10, 10]
    assert read_image(Image.fromarray(np.full((2, 2), 0.5, np.float32)))[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((2, 3), 7, np.uint8), [7, 7, 7]),
        (np.full((2, 3, 1), 7, np.uint8), [7, 7, 7]),
        (np.full((2, 3, 3), (1, 2, 3), np.uint8), [1, 2, 3]),
        (np.full((2, 3, 3), 65535, np.uint16), [255, 255, 255]),
        (np.full((2, 3, 3), 1.0, np.float64), [255, 255, 255]),
        (np.full((2, 3), 0.5, np.float32), [128, 128, 128]),
        (np.full((2, 3, 4), (10, 20, 30, 255), np.uint8), [10, 20, 30]),
        (np.ones((2, 3), bool), [255, 255, 255]),
        (np.full((2, 3, 3), 200, np.int64), [200, 200, 200]),
    ],
)
def test_arrays(array, expected):
    rgb = read_image(array)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    assert rgb[1, 2].tolist() == expected


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((2, 3, 2), np.uint8), "shape"),
        (np.zeros((2, 3, 3, 1), np.uint8), "shape"),
        (np.zeros((0, 3, 3), np.uint8), "no pixels"),
        (np.full((2, 3, 3), 255.0), "divide by 255"),
        (np.full((2, 3, 3), np.nan), "NaN or infinite"),
        (np.full((2, 3, 3), 300, np.int32), "values in"),
        (np.zeros((2, 3, 3), np.complex64), "dtype"),
    ],
)
def test_bad_arrays(array, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        array_to_rgb(array)


def test_bad_object():
    with pytest.raises(InputError, match="file path, a PIL image or a numpy array"):
        read_image([[1, 2], [3, 4]])


def test_missing_file_names_it(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.jpg: not found: check the path"):
        read_image(tmp_path / "nope.jpg")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ImageError, match="tmp.*: a folder, not an image file"):
        read_image(tmp_path)


def test_pipe_is_refused_not_waited_for(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageError, match=r"pipe\.jpg: not a regular file"):
        read_image(tmp_path / "pipe.jpg")


def test_non_image_names_it(tmp_path):
    (tmp_path / "notes.jpg").write_text("not a picture")
    with pytest.raises(ImageError, match=r"notes\.jpg: not an image that can be read"):
        read_image(tmp_path / "notes.jpg")


def test_truncated_image(tmp_path):
    Image.fromarray(gradient_image(200, 200)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"cut\.png \(200×200 pixels\): damaged or truncated"):
        read_image(tmp_path / "cut.png")


def test_list_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.jpg").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="no image files"):
        list_images(tmp_path / "empty")


def test_scan_folder_names_what_it_leaves_out(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt", ".hidden.png", "sub/c.webp", "sub/deeper/d.bmp"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    images, skipped = scan_folder(tmp_path)
    assert [p.name for p in images] == ["a.jpg", "b.PNG"]
    assert [(p.name, reason.split(" (")[0]) for p, reason in skipped] == [
        (".hidden.png", "a hidden file"), ("notes.txt", "not an image suffix"), ("sub", "a subfolder")]
    images, skipped = scan_folder(tmp_path, recursive=True)
    assert [p.relative_to(tmp_path).as_posix() for p in images] == ["a.jpg", "b.PNG", "sub/c.webp", "sub/deeper/d.bmp"]
    assert [p.name for p, _ in skipped] == [".hidden.png", "notes.txt"]


def test_write_atomically(tmp_path):
    target = tmp_path / "out" / "picture.png"
    write_atomically(target, Image.new("RGB", (4, 3)).save)
    assert Image.open(target).size == (4, 3)

    def fail_halfway(temp):
        temp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(InputError, match=r"cannot write .*picture\.png: No space left on device"):
        write_atomically(target, fail_halfway)
    assert Image.open(target).size == (4, 3)  # the earlier picture is untouched
    assert sorted(p.name for p in target.parent.iterdir()) == ["picture.png"]  # no temporary left

    with pytest.raises(InputError, match="cannot write"):
        write_atomically(tmp_path / "fresh.png", fail_halfway)
    assert not (tmp_path / "fresh.png").exists()


def test_folder_walks_visit_each_real_file_once(tmp_path):
    """Links to folders are not followed (sub/up -> .. once gave 164 'images' for 2), a link to an
    image counts once, under its own name, wherever its target lies; broken and looping links,
    hard links to a file already taken and pipes are listed with their reason."""
    folder, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    (folder / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for path in (folder / "a.jpg", folder / "sub" / "b.png", elsewhere / "c.png"):
        Image.fromarray(gradient_image()).save(path)
    (folder / "sub" / "up").symlink_to("..")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "gone.png").symlink_to("missing.png")
    (folder / "alias.jpg").symlink_to("a.jpg")
    (folder / "outside.png").symlink_to(elsewhere / "c.png")
    (folder / "outside_again.png").symlink_to(elsewhere / "c.png")
    (folder / "hard.jpg").hardlink_to(folder / "a.jpg")
    (folder / "linked_folder").symlink_to(elsewhere, target_is_directory=True)
    os.mkfifo(folder / "pipe.jpg")

    images, skipped = scan_folder(folder, recursive=True)
    assert [p.relative_to(folder).as_posix() for p in images] == ["a.jpg", "outside.png", "sub/b.png"]
    reasons = {p.relative_to(folder).as_posix(): reason for p, reason in skipped}
    assert reasons == {
        "alias.jpg": f"a link to {folder / 'a.jpg'}, which is taken already",
        "gone.png": "a broken link (its target missing.png does not exist)",
        "hard.jpg": f"the same file as {folder / 'a.jpg'} (a hard link), which is taken already",
        "linked_folder": "a link to a folder (not followed: it could lead out of the folder or back into it)",
        "loop.jpg": "a link that loops (following it never reaches a file)",
        "outside_again.png": f"a link to {folder / 'outside.png'}, which is taken already",
        "pipe.jpg": "not a regular file (a pipe, socket or device)",
        "sub/up": "a link to a folder (not followed: it could lead out of the folder or back into it)",
    }
    images, skipped = scan_folder(folder)  # without recursion the same, less the subfolder
    assert [p.name for p in images] == ["a.jpg", "outside.png"]
    assert (folder / "sub", "a subfolder (not searched without recursion)") in skipped


def test_unreadable_folder_is_one_line(tmp_path):
    with pytest.raises(ImageError, match=r"cannot read folder .*nowhere: No such file or directory"):
        scan_folder(tmp_path / "nowhere")


def make_unreadable(path, monkeypatch) -> None:
    """Take read permission from `path`; as root (who reads anything) opening it is made to fail
    the way it does for everyone else."""
    path.chmod(0)
    if os.geteuid() == 0:
        real_open = builtins.open

        def open_without_permission(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == str(path):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", open_without_permission)


def test_unreadable_file_is_not_called_damaged(tmp_path, monkeypatch):
    path = tmp_path / "private.png"
    Image.fromarray(gradient_image()).save(path)
    make_unreadable(path, monkeypatch)
    with pytest.raises(ImageError) as caught:
        read_image(path)
    assert str(caught.value) == f"{path}: cannot be read: permission denied: make it readable (chmod +r) or copy it"


def test_one_wording_per_problem_in_every_command(tmp_path):
    """read_image (scclip segment, predict.py, the web page), eval.py's --check-data and its image loader name a
    file they cannot read in the same line: '<file>[ (W×H pixels)]: <problem>'."""
    from scclip.outputs import failure_message
    from scclip.errors import DatasetError
    from scclip.evaluation.data import ScclipLoadImageFromFile, check_item
    from scclip.imageio import image_problem

    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "gone.png").symlink_to("missing.png")
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "notes.jpg").write_text("not a picture")
    Image.fromarray(gradient_image(200, 200)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    expected = {
        "loop.jpg": "a link that loops (following it never reaches a file)",
        "gone.png": "a broken link (its target missing.png does not exist)",
        "pipe.jpg": "not a regular file (a pipe, socket or device)",
        "notes.jpg": "not an image that can be read: use a JPEG, PNG, WebP or BMP file",
        "cut.png": "damaged or truncated (",
        "nowhere.png": "not found: check the path",
    }
    for name, problem in expected.items():
        path = tmp_path / name
        with pytest.raises(ImageError) as caught:
            read_image(path)
        line = str(caught.value)
        size = " (200×200 pixels)" if name == "cut.png" else ""
        assert line.startswith(f"{path}{size}: {problem}") and "\n" not in line and "<" not in line
        assert image_problem(path) == line
        assert failure_message(path, caught.value) == line  # 'error: skipped …' and 'could not label …' print it
        assert check_item((str(path), None, 3, False, 255)) == [line]
        if name == "pipe.jpg":
            continue  # eval's loader reads from a pipe, as from any file (the resume tests block runs on one)
        with pytest.raises(DatasetError) as stopped:
            ScclipLoadImageFromFile()(dict(img_path=str(path)))
        assert str(stopped.value).startswith(f"{line}; replace or remove the file")


def test_the_size_of_a_pipe_is_unknown_and_never_waited_for(tmp_path):
    """eval.py reads the header sizes of every pending image before a run: a pipe among them must not block it."""
    from scclip.imageio import stored_size

    os.mkfifo(tmp_path / "pipe.png")
    assert stored_size(tmp_path / "pipe.png") is None and stored_size(tmp_path / "missing.png") is None
