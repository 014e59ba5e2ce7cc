"""demo.py end to end with a tiny checkpoint on real photos, and every bad input's one-line error."""
import importlib.util
import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as sample_data

from scclip.api import SAMPLE_CLASSES, Segmenter
from scclip.visualize import palette, plan_layout

REPO_ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("demo", REPO_ROOT / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)


@pytest.fixture
def chelsea(tmp_path) -> Path:
    """A real 451×300 photo (Chelsea the cat) as a JPEG."""
    path = tmp_path / "chelsea.jpg"
    Image.fromarray(sample_data.chelsea()).save(path, quality=90)
    return path


def run_demo(capsys, *argv) -> tuple[int, str, str]:
    code = demo.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def legend_colours_present(picture: Image.Image, legend_top: int, colours) -> bool:
    legend = np.asarray(picture)[legend_top:]
    return all((legend == colour).all(axis=-1).any() for colour in colours)


def test_demo_on_a_photo(capsys, tmp_path, chelsea, tiny_checkpoint_path):
    out = tmp_path / "results" / "cat.png"
    code, stdout, stderr = run_demo(capsys, "--image", chelsea, "--classes", "cat,sofa|couch,wall",
                                    "--backbone", tiny_checkpoint_path, "--device", "cpu", "--out", out)
    assert code == 0, stderr
    assert stdout.splitlines()[-1] == str(out)
    picture = Image.open(out)

    # The picture the API makes for the same image and classes, with its legend.
    result = Segmenter(tiny_checkpoint_path, classes="cat,sofa|couch,wall", device="cpu")(chelsea)
    entries = result.legend()
    layout = plan_layout((451, 300), entries)
    assert picture.size == layout.size
    assert layout.panel == (512, 341)  # 451×300 at its aspect ratio
    assert np.array_equal(np.asarray(picture), np.asarray(result.picture()))
    assert {e.name for e in entries} <= {"cat", "sofa", "wall"} and entries
    assert legend_colours_present(picture, layout.legend_top, [e.colour for e in entries])


def test_no_arguments_segments_the_sample_photo(capsys, tmp_path, monkeypatch, tiny_checkpoint_path):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_demo(capsys, "--backbone", tiny_checkpoint_path, "--save-mask")
    assert code == 0, stderr
    outputs = Path("outputs")
    written = [outputs / name for name in
               ("astronaut_scclip.png", "astronaut_scclip_mask.png", "astronaut_scclip_mask.json")]
    assert stdout.splitlines()[-3:] == [str(path) for path in written]
    picture, mask = Image.open(written[0]), Image.open(written[1])
    summary = json.loads(written[2].read_text())

    names = [line.split(",")[0] for line in SAMPLE_CLASSES]
    assert summary["classes"] == names
    assert abs(sum(summary["pixel_shares"].values()) - 1) < 1e-5
    present = [name for name in names if summary["pixel_shares"][name] > 0]
    assert mask.mode == "P" and mask.size == (512, 512)
    assert sorted(np.unique(np.asarray(mask)).tolist()) == sorted(names.index(n) for n in present)
    layout = plan_layout((512, 512), [])  # panel sizes and the legend's top do not depend on the entries
    assert picture.size[0] == 3 * 512 + 4 * layout.margin
    colours = palette(len(names))
    assert legend_colours_present(picture, layout.legend_top, [tuple(colours[names.index(n)]) for n in present])


def test_folder_of_images(capsys, tmp_path, tiny_checkpoint_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(sample_data.chelsea()[:100, :150]).save(folder / "cat.png")
    Image.fromarray(sample_data.astronaut()[:120, :90]).save(folder / "person.webp")
    (folder / "broken.jpg").write_text("not an image")
    code, stdout, stderr = run_demo(capsys, "--image", folder, "--classes", "cat,person", "--backbone",
                                    tiny_checkpoint_path, "--out", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat_scclip.png", "person_scclip.png"]
    assert Image.open(tmp_path / "out" / "person_scclip.png").size[0] == 3 * 384 + 4 * 8  # 90×120: 384×512 panels
    assert code == 1
    assert "broken.jpg: not an image that can be read" in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: 1 of 3 images could not be segmented")
    assert "wrote 2 pictures" in stdout


def test_output_never_replaces_the_input(capsys, tmp_path, chelsea, tiny_checkpoint_path):
    before = chelsea.read_bytes()
    code, _, stderr = run_demo(capsys, "--image", chelsea, "--classes", "cat,wall", "--backbone",
                               tiny_checkpoint_path, "--out", chelsea)
    assert_one_clean_line(code, stderr, f"would overwrite the input image {chelsea}", "another --out")
    assert chelsea.read_bytes() == before


@pytest.mark.slow
def test_folder_names_stay_distinct_and_outputs_are_not_read_back(capsys, tmp_path, tiny_checkpoint_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(sample_data.chelsea()[:100, :150]).save(folder / "shot.jpg")
    Image.fromarray(sample_data.astronaut()[:120, :90]).save(folder / "shot.png")
    Image.fromarray(sample_data.coffee()[:90, :120]).save(folder / "sub" / "inner.png")
    (folder / "notes.txt").write_text("not a picture")
    common = ["--image", folder, "--vocab", "voc21", "--backbone",
              tiny_checkpoint_path, "--out", folder]

    code, stdout, stderr = run_demo(capsys, *common)
    assert code == 0, stderr
    assert "wrote 2 pictures" in stdout
    assert sorted(p.name for p in folder.glob("*_scclip.png")) == ["shot_jpg_scclip.png", "shot_png_scclip.png"]
    assert f"skipped {folder / 'notes.txt'}: not an image suffix" in stderr
    assert f"skipped {folder / 'sub'}: a subfolder (not searched without recursion): add --recursive" in stderr

    # Again, into the same folder, with subfolders and masks: the pictures just written are not inputs.
    code, stdout, stderr = run_demo(capsys, *common, "--recursive", "--save-mask")
    assert code == 0, stderr
    assert "wrote 3 pictures" in stdout
    assert f"skipped {folder / 'shot_jpg_scclip.png'}: an output of scclip segment" in stderr
    assert not list(folder.rglob("*_scclip_scclip*"))
    summary = json.loads((folder / "sub" / "inner_scclip_mask.json").read_text())
    assert summary["classes"][:2] == ["background", "aeroplane"]  # VOC's names, not the first synonym 'sky'


def test_methods_and_ablations(capsys, tmp_path, chelsea, tiny_checkpoint_path):
    for extra in (["--method", "clearclip"], ["--ablate", "anomaly_resolution,multi_level_fusion"]):
        out = tmp_path / f"{extra[1]}.png"
        code, _, stderr = run_demo(capsys, "--image", chelsea, "--classes", "cat,wall", "--backbone",
                                   tiny_checkpoint_path, "--out", out, *extra)
        assert code == 0, stderr
        assert Image.open(out).size[0] == 3 * 512 + 4 * 8


def test_jpeg_output_and_options(capsys, tmp_path, chelsea, tiny_checkpoint_path):
    out = tmp_path / "cat.jpg"
    code, stdout, stderr = run_demo(capsys, "--image", chelsea, "--classes", "cat,wall", "--backbone",
                                    tiny_checkpoint_path, "--out", out, "--pamr", "--no-slide", "--prob-thd", "0.9",
                                    "--save-mask")
    assert code == 0, stderr
    assert Image.open(out).format == "JPEG"
    assert (tmp_path / "cat_mask.png").exists() and (tmp_path / "cat_mask.json").exists()


def assert_one_clean_line(code: int, stderr: str, *fragments: str) -> None:
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


BAD_INPUTS = {
    "missing image": (["--image", "{tmp}/nope.jpg", "--classes", "a,b"], ["nope.jpg", "not found"]),
    "not an image": (["--image", "{tmp}/notes.jpg", "--classes", "a,b"], ["notes.jpg", "not an image"]),
    "empty classes": (["--image", "{photo}", "--classes", " , "], ["--classes", "no class name"]),
    "no classes for an image": (["--image", "{photo}"], ["no classes given", "--classes"]),
    "empty vocabulary file": (["--image", "{photo}", "--vocab", "{tmp}/empty.txt"], ["empty.txt", "empty"]),
    "missing vocabulary file": (["--image", "{photo}", "--vocab", "{tmp}/none.txt"], ["none.txt", "not found"]),
    "non-checkpoint backbone": (["--image", "{photo}", "--classes", "a", "--backbone", "{tmp}/notes.jpg"],
                                ["notes.jpg", "not a CLIP checkpoint"]),
    "missing backbone": (["--image", "{photo}", "--classes", "a", "--backbone", "{tmp}/gone.pt"],
                         ["gone.pt", "not found"]),
    "resnet backbone": (["--image", "{photo}", "--classes", "a", "--backbone", "RN50"], ["RN50", "ViT"]),
    "unknown output format": (["--image", "{photo}", "--classes", "a", "--backbone", "{ckpt}", "--out", "{out}.xyz"],
                              [".xyz", ".png"]),
    "other separator": (["--image", "{photo}", "--classes", "cat;dog"], ["'cat;dog' give a single class", "'cat,dog'"]),
    "repeated class": (["--image", "{photo}", "--classes", "Cat,sofa,cat"], ["class 3 repeats class 1"]),
    "probability above 1": (["--image", "{photo}", "--classes", "a,b", "--prob-thd", "5"], ["--prob-thd 5", "[0, 1]"]),
    "unknown method": (["--image", "{photo}", "--classes", "a,b", "--method", "segclip"], ["'segclip'", "clearclip"]),
    "unknown switch": (["--image", "{photo}", "--classes", "a,b", "--ablate", "calibration"],
                       ["'calibration'", "attention_calibration, feature_aggregation"]),
    "switch of another method": (["--image", "{photo}", "--classes", "a,b", "--method", "sclip", "--ablate",
                                  "multi_level_fusion"], ["--method is 'sclip'", "--method scclip"]),
    # Checked before the model loads: the backbone here is not even a checkpoint.
    "class name too long": (["--image", "{photo}", "--classes", "cat," + "word " * 72, "--backbone",
                             "{tmp}/notes.jpg"], ["class name 'word word", "6 tokens too long", "shorten it"]),
    "class also in the vocabulary": (["--image", "{photo}", "--vocab", "{tmp}/people.txt", "--classes", "Person,sky",
                                      "--backbone", "{tmp}/notes.jpg"],
                                     ["'Person' is already in vocabulary file", "people.txt", "give each name once"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(capsys, tmp_path, chelsea, tiny_checkpoint_path, case):
    (tmp_path / "notes.jpg").write_text("hello")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "people.txt").write_text("person, man\ntree\n")
    argv, fragments = BAD_INPUTS[case]
    out = tmp_path / "out" / "picture"
    argv = [a.format(tmp=tmp_path, photo=chelsea, ckpt=tiny_checkpoint_path, out=out) for a in argv]
    if "--out" not in argv:
        argv += ["--out", f"{out}.png"]
    code, _, stderr = run_demo(capsys, *argv)
    assert_one_clean_line(code, stderr, *fragments)
    assert not (tmp_path / "out").exists()  # nothing written, not even a folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(capsys, tmp_path, chelsea, tiny_checkpoint_path):
    code, _, stderr = run_demo(capsys, "--image", chelsea, "--classes", "a", "--backbone", tiny_checkpoint_path,
                               "--device", "cuda", "--out", tmp_path / "x.png")
    assert_one_clean_line(code, stderr, "CUDA is not available", "cpu")
    assert not (tmp_path / "x.png").exists()


def test_impossible_download(capsys, tmp_path, monkeypatch):
    """The default backbone with no network: one line saying where to put the file by hand."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # an empty checkpoint cache

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run_demo(capsys)
    assert_one_clean_line(code, stderr, "could not download", "ViT-B-16.pt", "by hand")
    assert not (tmp_path / "outputs").exists()


def test_failed_write_leaves_nothing(capsys, tmp_path, chelsea, tiny_checkpoint_path, monkeypatch):
    def disk_full(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half a picture")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    code, _, stderr = run_demo(capsys, "--image", chelsea, "--classes", "a,b", "--backbone", tiny_checkpoint_path,
                               "--out", tmp_path / "out" / "x.png")
    assert_one_clean_line(code, stderr, "x.png", "No space left on device")
    assert not (tmp_path / "out").exists()  # not even the folder made for it


@pytest.mark.slow
def test_command_line_exit_code_and_stderr(tmp_path):
    """As a user runs it: a separate process, its exit status and its whole stderr."""
    process = subprocess.run([sys.executable, str(REPO_ROOT / "demo.py"), "--image", str(tmp_path / "missing.png"),
                              "--classes", "cat"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert process.returncode == 1
    expected = f"error: {tmp_path / 'missing.png'}: not found: check the path"
    assert process.stderr.strip().splitlines() == [expected]


def photo(path: Path, height: int = 60, width: int = 80) -> Path:
    """A small real photo (Chelsea the cat) resized to height×width, saved at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample_data.chelsea()).resize((width, height)).save(path)
    return path


def test_recursive_walk_does_not_follow_links_and_skipped_links_are_no_failure(capsys, tmp_path,
                                                                               tiny_checkpoint_path):
    folder = tmp_path / "photos"
    photo(folder / "a.png")
    photo(folder / "sub" / "b.png")
    (folder / "sub" / "up").symlink_to("..")
    (folder / "loop.jpg").symlink_to("loop.jpg")
    (folder / "gone.png").symlink_to("missing.png")
    code, stdout, stderr = run_demo(capsys, "--image", folder, "--recursive", "--classes", "cat,wall",
                                    "--backbone", tiny_checkpoint_path, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert "wrote 2 pictures" in stdout
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["a_scclip.png", "sub/b_scclip.png"]
    assert f"skipped {folder / 'loop.jpg'}: a link that loops (following it never reaches a file)" in stderr
    assert f"skipped {folder / 'gone.png'}: a broken link (its target missing.png does not exist)" in stderr
    assert f"skipped {folder / 'sub' / 'up'}: a link to a folder (not followed" in stderr
    assert "error" not in stderr


def test_bad_images_in_a_folder_never_stop_the_others(capsys, tmp_path, tiny_checkpoint_path, monkeypatch):
    folder = tmp_path / "photos"
    for name, (height, width) in {"thin.png": (1, 5000), "tall.png": (5000, 1), "cat.png": (60, 80),
                                  "odd.png": (30, 40)}.items():
        photo(folder / name, height, width)
    (folder / "cut.png").write_bytes((folder / "cat.png").read_bytes()[:300])
    real_call = Segmenter.__call__

    def fails_on_odd(self, image):  # what a library may raise on a strange image, not one of scclip's errors
        if Path(image).name == "odd.png":
            raise RuntimeError("shape mismatch\nin some kernel")
        return real_call(self, image)

    monkeypatch.setattr(Segmenter, "__call__", fails_on_odd)
    code, stdout, stderr = run_demo(capsys, "--image", folder, "--classes", "cat,wall", "--backbone",
                                    tiny_checkpoint_path, "--out", tmp_path / "out")
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat_scclip.png", "tall_scclip.png",
                                                                     "thin_scclip.png"]
    assert "wrote 3 pictures" in stdout
    lines = stderr.strip().splitlines()
    assert f"error: skipped {folder / 'cut.png'} (80×60 pixels): damaged or truncated" in stderr
    assert f"error: skipped {folder / 'odd.png'} (40×30 pixels): RuntimeError: shape mismatch in some kernel" in lines
    assert lines[-1] == "error: 2 of 5 images could not be segmented (see above): fix or remove them"
    assert "Traceback" not in stderr


def test_a_thin_image_alone(capsys, tmp_path, tiny_checkpoint_path):
    thin = photo(tmp_path / "line.png", 1, 5000)
    code, stdout, stderr = run_demo(capsys, "--image", thin, "--classes", "cat,wall", "--backbone",
                                    tiny_checkpoint_path, "--out", tmp_path / "out.png")
    assert code == 0, stderr
    assert stdout.splitlines()[-1] == str(tmp_path / "out.png")


def test_an_unexpected_failure_of_one_image_is_one_line(capsys, tmp_path, chelsea, tiny_checkpoint_path,
                                                        monkeypatch):
    def out_of_memory(self, image):
        raise MemoryError()

    monkeypatch.setattr(Segmenter, "__call__", out_of_memory)
    code, _, stderr = run_demo(capsys, "--image", chelsea, "--classes", "cat,wall", "--backbone",
                               tiny_checkpoint_path, "--out", tmp_path / "out" / "x.png")
    assert_one_clean_line(code, stderr, f"{chelsea} (451×300 pixels): MemoryError")
    assert not (tmp_path / "out").exists()


def test_unreadable_image_is_called_unreadable(capsys, tmp_path, chelsea, tiny_checkpoint_path, monkeypatch):
    from test_imageio import make_unreadable

    make_unreadable(chelsea, monkeypatch)
    code, _, stderr = run_demo(capsys, "--image", chelsea, "--classes", "cat,wall", "--backbone",
                               tiny_checkpoint_path, "--out", tmp_path / "x.png")
    assert_one_clean_line(code, stderr, f"{chelsea}: cannot be read: permission denied", "chmod")
    assert "damaged" not in stderr


def test_names_like_outputs_are_inputs_outside_the_output_folder(capsys, tmp_path, tiny_checkpoint_path):
    """`*_mask.png`, `*_scclip.png` are skipped as the demo's outputs only where this run writes."""
    folder = tmp_path / "photos"
    photo(folder / "road_mask.png")
    photo(folder / "cat.png")
    common = ["--image", folder, "--classes", "cat,wall", "--backbone", tiny_checkpoint_path]
    code, stdout, stderr = run_demo(capsys, *common, "--out", tmp_path / "out")
    assert code == 0, stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["cat_scclip.png", "road_mask_scclip.png"]
    assert "skipped" not in stderr

    code, stdout, stderr = run_demo(capsys, *common, "--out", folder)
    assert code == 0, stderr
    assert f"skipped {folder / 'road_mask.png'}: an output of scclip segment" in stderr
    assert "wrote 1 picture " in stdout


def test_failed_mask_write_leaves_no_half_set(capsys, tmp_path, chelsea, tiny_checkpoint_path, monkeypatch):
    """The picture and mask were written, the JSON beside them failed: none of the three is left."""
    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", disk_full)
    code, _, stderr = run_demo(capsys, "--image", chelsea, "--classes", "a,b", "--backbone", tiny_checkpoint_path,
                               "--out", tmp_path / "out" / "deeper" / "x.png", "--save-mask")
    assert_one_clean_line(code, stderr, "x_mask.json", "No space left on device")
    assert not (tmp_path / "out").exists()
