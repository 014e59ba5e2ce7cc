"""`--vfm NAME|FILE` (ProxyCLIP's VFM) on every command that takes `--backbone`, with one meaning everywhere:
it reaches the segmentor's `vfm` / `vfm_path`, and a method without a VFM refuses it in one line."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import test_eval
from PIL import Image
from test_datasets import make_dataset

from scclip import cli
from scclip import predict as predict_command
from scclip.evaluation import command as eval_command
from scclip.errors import InputError
from scclip.vfm import VFM_HELP, vfm_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def options_of(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser of the scclip command, predict.py and eval.py, by name."""
    (commands,) = [action for action in cli.build_parser()._actions if isinstance(action, argparse._SubParsersAction)]
    return {**{f"scclip {name}": parser for name, parser in commands.choices.items()},
            "predict.py": predict_command.build_parser(), "eval.py": eval_command.build_parser()}


def test_every_command_with_backbone_takes_vfm_spelled_and_explained_the_same():
    with_backbone = {name: parser for name, parser in command_parsers().items() if "--backbone" in options_of(parser)}
    assert set(with_backbone) >= {"scclip segment", "scclip web", "scclip export", "predict.py", "eval.py"}
    for name, parser in with_backbone.items():
        action = options_of(parser).get("--vfm")
        assert action is not None, name
        assert (action.dest, action.metavar, action.help, action.default) == ("vfm", "NAME|FILE", VFM_HELP, None), name


def test_vfm_means_a_name_or_a_file_and_only_proxyclip_takes_it(tiny_dino_path):
    assert vfm_settings(None, "scclip") == {}
    assert vfm_settings("dino_vitb8", "proxyclip") == {"vfm": "dino_vitb8", "vfm_path": None}
    assert vfm_settings(str(tiny_dino_path), "proxyclip") == {"vfm_path": str(tiny_dino_path)}
    with pytest.raises(InputError, match=r"--vfm 'dino_vitb16' is neither a VFM name nor a file: did you mean"):
        vfm_settings("dino_vitb16", "proxyclip")
    with pytest.raises(InputError, match="--vfm chooses the VFM of proxyclip, but the method is 'scclip'"):
        vfm_settings("dino_vitb8", "scclip")


def test_segment_command_runs_proxyclip_with_a_vfm_file(tiny_checkpoint_path, tiny_dino_path, tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((120, 150, 3)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "out.png"
    assert cli.main(["segment", "--backbone", str(tiny_checkpoint_path), "--method", "proxyclip", "--vfm",
                     str(tiny_dino_path), "--image", str(image), "--classes", "cat,sky", "--out", str(out),
                     "--device", "cpu"]) == 0
    assert out.is_file()
    assert cli.main(["segment", "--backbone", str(tiny_checkpoint_path), "--vfm", str(tiny_dino_path),
                     "--image", str(image), "--classes", "cat,sky", "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--vfm chooses the VFM of proxyclip" in error
    assert cli.main(["segment", "--backbone", str(tiny_checkpoint_path), "--method", "proxyclip", "--pamr",
                     "--image", str(image), "--classes", "cat,sky", "--out", str(out)]) == 1
    assert "method 'proxyclip' cannot take pamr_steps=10" in capsys.readouterr().err


def test_predict_names_the_vfm_file_by_its_content(tiny_dino_path, tmp_path):
    from scclip.clip.pretrained import sha256_of

    def identity(*argv: str) -> dict:
        args = predict_command.build_parser().parse_args(
            ["--images", str(tmp_path), "--out", str(tmp_path / "out"), "--classes", "cat", *argv])
        return predict_command.identity_of(args, predict_command.checked_lines(args), "cpu")

    settings = identity("--method", "proxyclip", "--vfm", str(tiny_dino_path))["settings"]
    assert settings == {"vfm_path": sha256_of(tiny_dino_path)}
    assert "settings" not in identity()  # runs made before --vfm keep their identity


def test_web_pool_gives_the_vfm_to_proxyclip_only(tiny_checkpoint_path, tiny_dino_path):
    from scclip.web import SegmenterPool
    from scclip.vocabulary import vocabulary_lines

    pool = SegmenterPool(str(tiny_checkpoint_path), device="cpu", method="proxyclip",
                         **vfm_settings(str(tiny_dino_path), "proxyclip"))
    lines = vocabulary_lines(["cat", "sky"])
    model, classes = pool.get(lines, "proxyclip")
    assert model.segmentor.encoder.vfm.width == 64
    assert pool.get(lines, "scclip")[0].method == "scclip"  # the page's other methods: no VFM
    with pytest.raises(InputError, match="method 'proxyclip' cannot take pamr_steps"):
        model(np.zeros((32, 32, 3), np.uint8), classes, pamr=True, prob_thd=0.0)


@pytest.mark.slow
def test_eval_runs_a_proxyclip_config_with_vfm(tmp_path, tiny_checkpoint_path, tiny_dino_path, monkeypatch):
    """eval.py --vfm FILE on ProxyCLIP's VOC20 config over a synthetic copy: the run records the VFM by content."""
    test_eval.isolate(monkeypatch, tmp_path / "text_cache")
    monkeypatch.setattr(test_eval, "config_path",
                        lambda benchmark: REPO_ROOT / "configs" / "proxyclip" / f"cfg_{benchmark}.py")
    root = make_dataset(tmp_path / "datasets", "voc20")
    args = test_eval.eval_args("voc20", tiny_checkpoint_path, root, tmp_path / "work", "--vfm", str(tiny_dino_path))
    assert eval_command.main(args) == 0
    (metrics,) = (tmp_path / "work").rglob("metrics.json")
    record = json.loads(metrics.read_text())
    assert record["method"] == "proxyclip" and record["num_images"] == 2
    assert record["overrides"]["model.vfm_path"] == str(tiny_dino_path) and "model.vfm" not in record["overrides"]
    with pytest.raises(InputError, match="--vfm 'dino_vitb8x' is neither a VFM name nor a file"):
        eval_command.main([*args[:-2], "--vfm", "dino_vitb8x"])  # one line (eval.py prints it), nothing run
