"""The package stands alone: a non-editable wheel, used from an empty folder without the checkout."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """scclip built as a wheel and installed (without dependencies: those of this environment serve) into a folder."""
    work = tmp_path_factory.mktemp("package")
    wheels, target = work / "wheels", work / "site"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), str(REPO_ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = wheels.glob("scclip-*.whl")
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    return target


def run_installed(target: Path, cwd: Path, *command: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(target))
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_installed_command_segments_with_a_named_vocabulary(installed, tiny_checkpoint_path, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photo)
    scclip = installed / "bin" / "scclip"
    segment = run_installed(installed, empty, str(scclip), "segment", "--image", str(photo), "--vocab", "voc21",
                            "--backbone", str(tiny_checkpoint_path), "--device", "cpu", "--out", str(tmp_path / "out"),
                            "--save-mask")
    assert segment.returncode == 0, segment.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "photo_scclip_mask.json").read_text())
    assert summary["classes"][:3] == ["background", "aeroplane", "bicycle"] and len(summary["classes"]) == 21
    assert (tmp_path / "out" / "photo_scclip.png").is_file() and (tmp_path / "out" / "photo_scclip_mask.png").is_file()
    assert list(empty.iterdir()) == [], "nothing is written where the command runs"

    web_help = run_installed(installed, empty, sys.executable, "-m", "scclip", "web", "--help")
    assert web_help.returncode == 0 and "--max-classes" in web_help.stdout

    api = run_installed(installed, empty, sys.executable, "-c", (
        "import numpy as np, scclip; "
        f"assert scclip.__file__.startswith({str(installed)!r}), scclip.__file__; "
        f"result = scclip.Segmenter({str(tiny_checkpoint_path)!r}, vocab='voc21', device='cpu')(np.zeros((40, 50, 3), np.uint8)); "
        "print(result.class_names[0])"))
    assert api.returncode == 0, api.stderr[-2000:]
    assert api.stdout.strip().splitlines()[-1] == "background"


@pytest.mark.slow
def test_installed_command_evaluates_a_folder_benchmark_by_key(installed, tiny_checkpoint_path, tmp_path):
    """`scclip eval --config custom --data-root DIR` from an empty folder: the configs ship inside the package."""
    from test_eval_onnx import make_folder

    empty = tmp_path / "empty"
    empty.mkdir()
    root = make_folder(tmp_path / "mine")
    work = tmp_path / "work"
    evaluate = run_installed(installed, empty, str(installed / "bin" / "scclip"), "eval", "--config", "custom",
                             "--data-root", str(root), "--backbone", str(tiny_checkpoint_path), "--device", "cpu",
                             "--work-dir", str(work), "--cfg-options", "test_dataloader.num_workers=0",
                             "test_dataloader.persistent_workers=False")
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    (metrics,) = work.glob("cfg_custom-*/metrics.json")
    record = json.loads(metrics.read_text())
    assert record["config"].startswith(str(installed)) and record["num_images"] == 3
    assert 0 <= record["metrics"]["mIoU"] <= 100
    assert list(empty.iterdir()) == [], "nothing is written where the command runs"


TORCH_SIDE = {"torch", "torchvision", "mmcv", "mmcv-lite", "mmengine", "mmsegmentation", "open-clip-torch", "timm"}


def test_the_torch_free_install_requires_no_torch(tmp_path):
    """`pip install ./runtime` (docs/deploy.md) installs what the metadata it builds requires: read here, built
    offline by the same setuptools backend pip runs, it names the runtime's packages and nothing torch-side."""
    from email.parser import Parser

    code = "import sys; from setuptools import build_meta; print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO_ROOT / "runtime", capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metadata = Parser().parsestr((tmp_path / done.stdout.split()[-1] / "METADATA").read_text(encoding="utf-8"))
    import scclip

    assert metadata["Name"] == "scclip-runtime" and metadata["Version"] == scclip.__version__
    required = {re.split(r"[<>=!~ ;\[]", line, maxsplit=1)[0].lower().replace("_", "-")
                for line in metadata.get_all("Requires-Dist") if "extra ==" not in line}
    assert required == {"onnxruntime", "numpy", "pillow", "ftfy", "regex"}
    assert not required & TORCH_SIDE
    main = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "\nruntime = [" not in main, "an extra of scclip adds to its torch dependencies: no 'runtime' extra there"
