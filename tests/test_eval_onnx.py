"""scclip eval --runtime onnx --model DIR: an exported model evaluated on a folder benchmark, as PyTorch is.

Same run folders (another one than PyTorch's), resume, --compare; mIoU within 0.02 points of PyTorch's.
Also `--config` by benchmark key and `--method`/`--set` on any config.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_datasets import photo
from test_eval import FAST_LOADING, FAST_RESIZE, eval_script, isolate

from scclip.export import export_model

MIOU_TOLERANCE = 0.02  # points of mIoU (metrics are in %)
CLASSES = ["sky", "person", "tree", "road"]
IMAGES = {"a.png": "astronaut", "b.png": "chelsea", "c.jpg": "coffee"}


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint_path) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "tiny"
    export_model(str(tiny_checkpoint_path), folder)
    return folder


def make_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name, source in IMAGES.items():
        (root / "images").mkdir(parents=True, exist_ok=True)
        pixels = photo(source)
        Image.fromarray(pixels).save(root / "images" / name)
        blocks = rng.integers(0, len(CLASSES), (4, 4))
        labels = np.kron(blocks, np.ones((pixels.shape[0] // 4 + 1, pixels.shape[1] // 4 + 1)))[: pixels.shape[0],
                                                                                               : pixels.shape[1]]
        (root / "labels").mkdir(exist_ok=True)
        Image.fromarray(labels.astype(np.uint8)).save(root / "labels" / Path(name).with_suffix(".png"))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def evaluate(root: Path, work_dir: Path, *extra: str) -> int:
    return eval_script.main(["--config", "custom", "--data-root", str(root), "--work-dir", str(work_dir),
                             "--device", "cpu", *extra, "--cfg-options", *FAST_LOADING,
                             f"test_dataloader.dataset.pipeline.1.scale={FAST_RESIZE}"])


def finished_runs(work_dir: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in work_dir.glob("*/metrics.json")}


@pytest.mark.slow
def test_an_exported_model_scores_pytorchs_miou_resumes_and_compares(tmp_path, tiny_checkpoint_path, exported,
                                                                     capsys):
    root = make_folder(tmp_path / "mine")
    work = tmp_path / "work"
    assert evaluate(root, work, "--backbone", str(tiny_checkpoint_path)) == 0
    # A damaged image stops the exported model's run after storing the others; once fixed, --resume finishes it.
    last = root / "images" / "c.jpg"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) * 2 // 3])
    with pytest.raises(Exception):
        evaluate(root, work, "--runtime", "onnx", "--model", str(exported))
    last.write_bytes(good)
    assert evaluate(root, work, "--runtime", "onnx", "--model", str(exported), "--resume") == 0

    runs = finished_runs(work)
    assert len(runs) == 2 and all(name.startswith("cfg_custom-") for name in runs)
    (onnx_run,) = [run for run in runs.values() if run["runtime"] == "onnx"]
    (torch_run,) = [run for run in runs.values() if run["runtime"] == "torch"]
    assert onnx_run["resumed"] > 0 and onnx_run["checkpoint"] == str(exported.resolve())
    assert abs(onnx_run["metrics"]["mIoU"] - torch_run["metrics"]["mIoU"]) <= MIOU_TOLERANCE

    capsys.readouterr()
    assert evaluate(root, work, "--runtime", "onnx", "--model", str(exported)) == 0
    assert "this run is finished" in capsys.readouterr().out
    folders = [str(work / name) for name in sorted(runs, key=lambda name: runs[name]["runtime"])]
    assert eval_script.main(["--compare", *folders]) == 0
    assert "mIoU" in capsys.readouterr().out


def test_what_the_export_fixes_is_refused_naming_its_value(tmp_path, exported):
    root = make_folder(tmp_path / "mine")
    with pytest.raises(Exception, match=r"beta=0\.5: the model in .* was exported with beta=0\.4"):
        evaluate(root, tmp_path / "work", "--runtime", "onnx", "--model", str(exported), "--set", "beta=0.5")
    with pytest.raises(Exception, match="--runtime onnx runs the method and backbone exported to .*: drop --method"):
        evaluate(root, tmp_path / "work", "--runtime", "onnx", "--model", str(exported), "--method", "clearclip")
    assert not (tmp_path / "work").exists()


def test_config_by_key_and_method_settings_on_any_config(tiny_checkpoint_path):
    args = eval_script.parse_args(["--config", "voc21", "--backbone", "ViT-L/14", "--method", "clearclip",
                                   "--set", "prob_thd=0.2"])
    assert args.config.endswith("configs/clearclip/cfg_voc21_vitl14.py")
    cfg = eval_script.load_config(args, "cpu")
    assert (cfg.model.method, cfg.model.prob_thd, cfg.model.clip_path) == ("clearclip", 0.2, "ViT-L/14")
    # --method on a config of another method drops that method's own settings; --set is checked for the new one.
    args = eval_script.parse_args(["--config", "configs/clearclip/cfg_voc21.py", "--method", "naclip",
                                   "--set", "gaussian_std=3"])
    cfg = eval_script.load_config(args, "cpu")
    assert cfg.model.method == "naclip" and cfg.model.gaussian_std == 3 and "residual" not in cfg.model
    with pytest.raises(Exception, match="takes no setting 'beta'|model.beta is not a setting of method 'naclip'"):
        eval_script.load_config(eval_script.parse_args(["--config", "voc21", "--method", "naclip",
                                                        "--set", "beta=0.3"]), "cpu")
    assert eval_script.parse_args(["--config", "custom"]).config.endswith("configs/cfg_custom.py")
    with pytest.raises(Exception, match=r"^--config voc12 is neither a config file nor a benchmark key: did you mean "
                                        r"voc\d+\? keys: voc21, .*, custom$"):
        eval_script.main(["--config", "voc12"])
