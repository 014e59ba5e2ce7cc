"""predict.py --runtime onnx --model DIR: an exported model labels a folder as PyTorch does, on one process or two."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_predict import CLASSES, base_args, environment, free_port, photos, predict, save  # noqa: F401  (fixture)

from scclip.export import export_model
from scclip.runtime import OnnxSegmenter

REPO_ROOT = Path(__file__).resolve().parents[1]
AGREEMENT = 0.999  # share of pixels with PyTorch's label (the rest: exact ties between classes)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint_path) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "tiny"
    export_model(str(tiny_checkpoint_path), folder)
    return folder


def onnx_args(photos: Path, out: Path, model: Path, *more) -> list:
    return ["--image", photos, "--classes", CLASSES, "--runtime", "onnx", "--model", model, "--device", "cpu",
            "--out", out, "--recursive", *more]


def masks(out: Path) -> dict[str, np.ndarray]:
    return {path.relative_to(out).as_posix(): np.asarray(Image.open(path)) for path in sorted(out.rglob("*.png"))}


def agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    assert sorted(a) == sorted(b)
    return sum(int((a[name] == b[name]).sum()) for name in a) / sum(mask.size for mask in a.values())


def test_onnx_runtime_writes_pytorchs_masks(capsys, tmp_path, photos, tiny_checkpoint_path, exported):
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    assert predict(capsys, *base_args(photos, torch_out, tiny_checkpoint_path))[0] == 0
    code, stdout, stderr = predict(capsys, *onnx_args(photos, onnx_out, exported))
    assert code == 0, stderr
    assert agreement(masks(torch_out), masks(onnx_out)) >= AGREEMENT
    identity = json.loads((onnx_out / "run.json").read_text())["identity"]
    assert identity["runtime"] == "onnx" and identity["method"] == "scclip" and len(identity["model_sha256"]) == 64
    # The same command again finds everything done; another prob_thd is another run, refused.
    assert predict(capsys, *onnx_args(photos, onnx_out, exported))[1].startswith("all 6 images")
    code, _, stderr = predict(capsys, *onnx_args(photos, onnx_out, exported, "--prob-thd", "0.5"))
    assert code == 1 and "prob_thd" in stderr


def test_a_batch_labels_each_image_as_alone(photos, exported):
    segmenter = OnnxSegmenter(exported, classes=CLASSES)
    paths = sorted(photos.glob("same*.jpg")) + [photos / "shot.jpg"]
    batched = segmenter.predictions(paths)
    for path, (rgb, prediction) in zip(paths, batched):
        alone_rgb, alone = segmenter.prediction(path)
        assert np.array_equal(rgb, alone_rgb) and np.array_equal(prediction.labels(), alone.labels())


def test_what_an_exported_model_cannot_change_is_refused_naming_its_value(capsys, tmp_path, photos, exported):
    code, _, stderr = predict(capsys, *onnx_args(photos, tmp_path / "out", exported, "--set", "beta=0.5"))
    assert code == 1 and stderr.startswith("error: beta=0.5: the model in ") and "exported with beta=0.4" in stderr
    code, _, stderr = predict(capsys, *onnx_args(photos, tmp_path / "out", exported, "--method", "naclip"))
    assert code == 1 and "--runtime onnx runs the method and backbone exported to" in stderr
    code, _, stderr = predict(capsys, "--image", photos, "--classes", "a", "--runtime", "onnx", "--out", tmp_path / "o")
    assert code == 1 and "--runtime onnx needs --model DIR" in stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_torchrun_processes_write_the_masks_of_one(tmp_path, photos, exported):
    for index in range(3, 7):
        save(photos / f"same{index}.jpg", (150, 100), index)
    single, double = tmp_path / "single", tmp_path / "double"
    arguments = [str(argument) for argument in onnx_args(photos, single, exported)]
    one = subprocess.run([sys.executable, "predict.py", *arguments], cwd=REPO_ROOT, env=environment(),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    arguments = [str(argument) for argument in onnx_args(photos, double, exported, "--launcher", "pytorch")]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={free_port()}", "predict.py", *arguments],
                         cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "on 2 processes" in two.stdout
    first, second = masks(single), masks(double)
    assert len(first) == 10 and all(np.array_equal(first[name], second[name]) for name in first)
