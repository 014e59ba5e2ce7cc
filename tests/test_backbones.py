"""Backbones by option: the table of named backbones, the published-settings rule, eval.py --backbone on any
config, `scclip backbones` and dist_test.sh's BACKBONE=, offline (no download, no real weights)."""
import dataclasses
import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
from mmengine.config import Config
from safetensors.torch import save

from scclip import cli
from scclip.backbones import (
    model_settings,
    parse_backbone,
    settings_backbone,
    valid_names,
)
from scclip.benchmarks import BENCHMARKS
from scclip.clip import openclip
from scclip.clip.architectures import ARCHITECTURES
from scclip.clip.pretrained import MODEL_URLS, expected_sha256
from scclip.clip.records import BACKBONES, open_clip_records, openai_records, with_published_settings
from scclip.errors import CheckpointError, InputError

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from scclip.evaluation import command as eval_script  # noqa: E402

FAMILY_DEPTHS = {"_vitb": 12, "_vitl": 24, "_vith": 32}
NAMED = [record.name for record in open_clip_records()]
PUBLISHED = {record.name: record for record in with_published_settings()}


@pytest.mark.parametrize("name", NAMED)
def test_named_backbones_are_runnable_tags_with_their_settings(name):
    named = BACKBONES[name]
    config = openclip.architecture_config(named.arch)  # refuses what SC-CLIP cannot run
    assert openclip.is_pretrained_tag(named.arch, named.tag)
    (family,) = [family for family in FAMILY_DEPTHS if family in name]
    assert config["vision_layers"] == FAMILY_DEPTHS[family] == named.depth
    tag = openclip.pretrained_settings(named.arch, named.tag)
    if tag["activation"]:
        assert config["activation"] == tag["activation"], "name the -quickgelu architecture of QuickGELU weights"
    # The record's normalisation and source are open_clip's for this tag.
    assert (named.mean, named.std) == (tuple(tag["image_mean"]), tuple(tag["image_std"]))
    hub = open_clip.pretrained.get_pretrained_cfg(named.arch, named.tag)["hf_hub"]
    assert named.url == f"https://huggingface.co/{hub.rstrip('/')}"
    backbone = parse_backbone(name)
    assert (backbone.label, backbone.clip_path, backbone.clip_arch) == (name, named.tag, named.arch)
    assert backbone.settings == ("ViT-B/16" if family == "_vitb" else "ViT-L/14")
    assert backbone.folder_name == name


def test_settings_follow_the_nearer_published_depth():
    assert {depth: settings_backbone(depth) for depth in (6, 12, 18, 19, 24, 32, 48)} == {
        6: "ViT-B/16", 12: "ViT-B/16", 18: "ViT-B/16", 19: "ViT-L/14", 24: "ViT-L/14", 32: "ViT-L/14", 48: "ViT-L/14"}
    assert all(settings_backbone(record.depth) == name for name, record in PUBLISHED.items())
    assert parse_backbone("ViT-B/32").settings == "ViT-B/16"
    assert parse_backbone("ViT-L/14@336px").settings == "ViT-L/14"
    assert settings_backbone(openclip.architecture_config("ViT-M-16")["vision_layers"]) == "ViT-B/16"
    assert settings_backbone(openclip.architecture_config("ViT-bigG-14")["vision_layers"]) == "ViT-L/14"


@pytest.mark.parametrize("settings", PUBLISHED)
def test_each_benchmark_has_a_config_declaring_each_published_settings(settings):
    for key in BENCHMARKS:
        assert Config.fromfile(REPO_ROOT / "configs" / f"cfg_{key}{PUBLISHED[settings].config_suffix}.py").backbone == settings


def test_openai_records_are_the_loaders_names_with_their_architecture_and_digest():
    assert [record.name for record in openai_records()] == list(ARCHITECTURES)
    for record in openai_records():
        assert record.depth == ARCHITECTURES[record.name]["vision_layers"] and record.arch == record.name
        assert MODEL_URLS[record.name] == record.url and expected_sha256(record.url) == record.sha256
    assert len({record.folder for record in BACKBONES.values()}) == len(BACKBONES)
    assert all(record.calibration is not None for record in PUBLISHED.values())


def test_backbones_as_users_write_them(tiny_checkpoint_path, tiny_l14_checkpoint_path):
    pair = parse_backbone("ViT-B-16:laion2b_s34b_b88k")
    assert (pair.label, pair.clip_path, pair.clip_arch, pair.depth) == (
        "ViT-B-16:laion2b_s34b_b88k", "laion2b_s34b_b88k", "ViT-B-16", 12)
    assert pair.folder_name == "ViT-B-16_laion2b_s34b_b88k"
    # QuickGELU weights under a GELU name run the -quickgelu architecture (the file carries no activation).
    assert parse_backbone("ViT-B-16:metaclip_fullcc").clip_arch == "ViT-B-16-quickgelu"
    assert parse_backbone("laion2b_s34b_b88k", "ViT-B-16") == pair
    openai = parse_backbone("ViT-L/14")
    assert (openai.label, openai.clip_path, openai.clip_arch, openai.folder_name) == ("ViT-L/14", "ViT-L/14", None,
                                                                                      "vitl14")
    b16, l14 = parse_backbone(tiny_checkpoint_path), parse_backbone(tiny_l14_checkpoint_path)
    assert (b16.label, b16.clip_arch, b16.depth, b16.settings, b16.folder_name) == (
        str(tiny_checkpoint_path), None, 12, "ViT-B/16", "tiny_b16")
    assert (l14.depth, l14.config_suffix) == (24, "_vitl14")


def test_a_published_file_goes_by_its_name(tiny_checkpoint_path, monkeypatch):
    from scclip import backbones

    digest = hashlib.sha256(tiny_checkpoint_path.read_bytes()).hexdigest()
    monkeypatch.setattr(backbones.records, "BACKBONES", {**BACKBONES, "ViT-B/16": dataclasses.replace(
        BACKBONES["ViT-B/16"], sha256=digest)})
    backbone = parse_backbone(tiny_checkpoint_path)
    assert (backbone.label, backbone.clip_path) == ("ViT-B/16", str(tiny_checkpoint_path))


def test_wrong_backbones_are_refused_in_one_line():
    with pytest.raises(InputError) as info:
        parse_backbone("metaclip_vitl14_fullc")
    message = str(info.value)
    assert "did you mean metaclip_vitl14_fullcc?" in message and "\n" not in message
    assert all(name in message for name in valid_names())
    with pytest.raises(CheckpointError, match="RN50 is a ResNet CLIP; SC-CLIP needs a ViT"):
        parse_backbone("RN50")
    with pytest.raises(InputError, match="metaclip_vitb16_fullcc is open_clip's ViT-B-16-quickgelu already"):
        parse_backbone("metaclip_vitb16_fullcc", "ViT-B-16")
    with pytest.raises(CheckpointError, match="'nope' is neither a file nor an open_clip pretrained tag of ViT-B-16"):
        parse_backbone("ViT-B-16:nope")


def test_a_tag_is_given_as_its_downloaded_file_with_its_normalisation(tmp_path, monkeypatch):
    """Offline: a tag in a Hugging Face cache becomes the file (the run hashes the weights) and its mean/std."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "ViT-B-16", {
        **open_clip.pretrained._PRETRAINED["ViT-B-16"],
        "scclip_test": dict(hf_hub="scclip-test/backbones/", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    })
    content = save({"weights": torch.zeros(1)})
    digest = hashlib.sha256(content).hexdigest()
    folder = tmp_path / "models--scclip-test--backbones"
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / digest).write_bytes(content)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    snapshot = folder / "snapshots" / ("0" * 40) / "open_clip_model.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(folder / "blobs" / digest)

    settings = model_settings(parse_backbone("ViT-B-16:scclip_test"), tmp_path)
    assert settings == dict(clip_path=str(snapshot), clip_arch="ViT-B-16", data_preprocessor=dict(
        type="SCCLIPDataPreProcessor", bgr_to_rgb=True, mean=[127.5] * 3, std=[127.5] * 3))
    assert model_settings(parse_backbone("ViT-B/16")) == dict(clip_path="ViT-B/16", clip_arch=None)


def load_config(*arguments: str):
    return eval_script.load_config(eval_script.parse_args(list(arguments)), "cpu")


@pytest.mark.parametrize("suffix", [record.config_suffix for record in PUBLISHED.values()])
def test_backbone_option_keeps_every_benchmark_setting(suffix, tiny_checkpoint_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    for key in BENCHMARKS:
        config = f"configs/cfg_{key}{suffix}.py"
        own = load_config("--config", config)
        cfg = load_config("--config", config, "--backbone", str(tiny_checkpoint_path))
        assert cfg.model.to_dict() == {**own.model.to_dict(), "clip_path": str(tiny_checkpoint_path)}, config
        assert cfg.test_dataloader.to_dict() == own.test_dataloader.to_dict(), config
        assert (cfg.benchmark, cfg.backbone) == (own.benchmark, str(tiny_checkpoint_path))
        same = load_config("--config", config, "--backbone", own.backbone)  # the config's own: nothing changes
        assert (same.model.to_dict(), same.backbone) == (own.model.to_dict(), own.backbone), config


def test_backbone_option_notes_settings_of_the_other_size(tiny_l14_checkpoint_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.delenv("RANK", raising=False)
    cfg = load_config("--config", "configs/cfg_voc21.py", "--backbone", "ViT-L/14")
    assert (cfg.model.clip_path, cfg.backbone, cfg.model.logit_scale) == ("ViT-L/14", "ViT-L/14", 50)
    assert capsys.readouterr().err.strip() == (
        "note: --backbone ViT-L/14 (24 blocks) takes the ViT-L/14 settings, but configs/cfg_voc21.py holds the "
        "ViT-B/16 ones, which this run keeps; configs/cfg_voc21_vitl14.py holds them")
    load_config("--config", "configs/cfg_voc21_vitl14.py", "--backbone", str(tiny_l14_checkpoint_path))
    assert capsys.readouterr().err == ""


def test_cfg_options_win_over_the_backbone_option(tiny_checkpoint_path, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    cfg = load_config("--config", "configs/cfg_voc21.py", "--backbone", "ViT-L/14",
                      "--cfg-options", f"model.clip_path={tiny_checkpoint_path}")
    assert (cfg.model.clip_path, cfg.backbone) == (str(tiny_checkpoint_path), "ViT-L/14")
    with pytest.raises(SystemExit):
        eval_script.parse_args(["--config", "configs/cfg_voc21.py", "--clip-arch", "ViT-B-16"])


def test_scclip_backbones_lists_the_table_and_resolves_for_scripts(capsys):
    assert cli.main(["backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == NAMED
    assert "ViT-L-14-quickgelu:metaclip_fullcc" in lines[3] and "24 blocks, ViT-L/14 settings" in lines[3]
    assert cli.main(["backbones", "--resolve", "metaclip_vitl14_fullcc"]) == 0
    assert capsys.readouterr().out == "_vitl14.py metaclip_vitl14_fullcc ViT-L/14\n"
    assert cli.main(["backbones", "--resolve", "ViT-B/16"]) == 0
    assert capsys.readouterr().out == ".py vitb16 ViT-B/16\n"
    assert cli.main(["backbones", "--resolve", "RN5O"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: backbone 'RN5O' is not a backbone name") and error.count("\n") == 1


def dist_test(**settings: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=sys.executable, GPUS="1", DRY_RUN="1", **settings)
    return subprocess.run(["bash", "dist_test.sh", "--device", "cpu"], env=env, check=False, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def eval_commands(completed: subprocess.CompletedProcess) -> list[list[str]]:
    assert completed.returncode == 0, completed.stderr
    return [shlex.split(line) for line in completed.stdout.splitlines() if "eval.py" in line]


@pytest.mark.slow  # two imports of scclip (the table and the benchmarks), ~10 s
def test_dist_test_passes_a_named_backbone_as_the_option():
    completed = dist_test(BACKBONE="metaclip_vitl14_fullcc", METHOD="clearclip", DATASETS="voc21 ade20k")
    *runs, summary = eval_commands(completed)
    assert [run[run.index("--config") + 1:] for run in runs] == [
        [f"./configs/clearclip/cfg_{key}_vitl14.py", "--backbone", "metaclip_vitl14_fullcc",
         "--work-dir", "./work_dirs/clearclip/metaclip_vitl14_fullcc", "--launcher", "pytorch", "--device", "cpu"]
        for key in ("voc21", "ade20k")]
    assert summary[-2:] == ["--summary", "./work_dirs/clearclip/metaclip_vitl14_fullcc"]


@pytest.mark.slow
@pytest.mark.parametrize("backbone, config, option", [
    ("", "./configs/cfg_voc21.py", []),
    ("ViT-L/14", "./configs/cfg_voc21_vitl14.py", ["--backbone", "ViT-L/14"]),
    ("ViT-B-16:laion2b_s34b_b88k", "./configs/cfg_voc21.py", ["--backbone", "ViT-B-16:laion2b_s34b_b88k"]),
])
def test_dist_test_picks_the_configs_by_the_backbone(backbone, config, option):
    (run, _) = eval_commands(dist_test(BACKBONE=backbone, DATASETS="voc21"))
    assert run[run.index("--config") + 1:run.index("--work-dir")] == [config, *option]



def test_loading_takes_table_names_and_open_clip_pairs():
    from scclip.backbones import checkpoint_and_arch

    for named in open_clip_records():
        assert checkpoint_and_arch(named.name) == (named.tag, named.arch)
    assert checkpoint_and_arch("ViT-B-16:laion2b_s34b_b88k") == ("laion2b_s34b_b88k", "ViT-B-16")
    assert checkpoint_and_arch("ViT-B/16") == ("ViT-B/16", None)
    assert checkpoint_and_arch("weights.pt", "ViT-L-14") == ("weights.pt", "ViT-L-14")
