"""Method configs (configs/<method>/): each release's published settings, read from its settings file;
they build their method; one eval.py run per method scores like an independent computation; the
published-numbers table; dist_test.sh METHOD=... and the ablation table on the CPU.

The releases' settings files are kept in tests/reference/ (copies of the shared
reference/methods/settings_*.json, checked identical to them where those are present).
"""
import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import test_eval
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from test_datasets import make_dataset

import scclip.datasets  # noqa: F401  (registers the benchmark datasets)
from scclip.methods import CALIBRATION_INDICES, METHODS, SWITCHES
from scclip.settings import check_settings, settings_for
from scclip.benchmarks import BENCHMARKS, vocabulary_file
from scclip.published import (
    build_table,
    published_methods,
    published_miou,
    published_record,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import ablation  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
REFERENCE = Path(__file__).resolve().parent / "reference"
SHARED_REFERENCE = REPO_ROOT.parent / "shared" / "reference" / "methods"
NEWER_REFERENCE = SHARED_REFERENCE.parent / "newer_methods"  # later releases' settings files (ProxyCLIP's)
# configs/ folder → (release settings file, method, has ViT-L/14 configs)
FOLDERS = {
    "sclip": ("sclip", "sclip", False),
    "vanilla_sclip": ("sclip", "vanilla", False),
    "clearclip": ("clearclip", "clearclip", True),
    "maskclip": ("clearclip", "maskclip", True),
    "vanilla_clearclip": ("clearclip", "vanilla", True),
    "naclip": ("naclip", "naclip", False),
    "resclip": ("resclip", "resclip", False),  # ViT-L/14: the same configs with --backbone
    "proxyclip": ("proxyclip", "proxyclip", False),
    "vanilla": (None, "vanilla", True),  # SC-CLIP's own settings: configs/cfg_*.py
}
L14 = "_vitl14"
# Model entries that are not maths settings of a method.
NON_SETTINGS = {"type", "clip_path", "name_path", "method"}


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    """Run from the repository root, with the text-feature cache the other config and eval tests use,
    and one torch thread here and in the scripts started (on busy cores, more threads only spin)."""
    test_eval.isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def method_configs() -> list[str]:
    return [f"{folder}/cfg_{benchmark}{suffix}.py" for folder, (_, _, has_l14) in FOLDERS.items()
            for suffix in ("", L14)[:1 + has_l14] for benchmark in BENCHMARKS]


@cache
def load(relative: str) -> dict:
    """A config as plain data (cached: the tests only read it)."""
    return Config.fromfile(CONFIGS / relative).to_dict()


@cache
def release(name: str) -> dict:
    return json.loads((REFERENCE / f"settings_{name}.json").read_text())


def resize_of(cfg: dict) -> tuple[int, int]:
    (scale,) = [step["scale"] for step in cfg["test_dataloader"]["dataset"]["pipeline"] if step["type"] == "Resize"]
    return tuple(scale)


def published_settings(folder: str, benchmark: str) -> tuple[dict, tuple[int, int], str]:
    """What the release publishes for a benchmark: model settings, test resize, vocabulary file."""
    release_name, method, _ = FOLDERS[folder]
    if release_name == "clearclip":
        settings = release("clearclip")
        published = settings["datasets"][benchmark]
        model = {key: published[key] for key in ("slide_crop", "slide_stride", "logit_scale", "prob_thd", "area_thd")}
        model.update(method=method, residual=settings["presets"][method]["residual"],
                     pamr_steps=10 if published["pamr"] else 0,
                     pad_to_patch=settings["segmentor_defaults"]["pad_to_patch"])
        own = published["vocabulary_diff_vs_scclip"] != "none"
        vocabulary = f"./configs/{'clearclip/' if own else ''}{published['vocabulary']}"
        return model, tuple(published["resize"]), vocabulary
    if release_name == "sclip":
        settings = release("sclip")
        published = settings["datasets"][benchmark]
        model = {key: published.get(key, settings["common"][key])
                 for key in ("slide_crop", "slide_stride", "logit_scale", "prob_thd", "area_thd", "pamr_steps")}
        return {**model, "method": method}, tuple(published["resize"]), f"./configs/{published['vocabulary']}"
    if release_name == "naclip":
        published = release("naclip")["benchmarks"][benchmark]
        model = {key: published[key] for key in ("slide_crop", "slide_stride", "logit_scale", "prob_thd", "area_thd",
                                                   "pamr_steps", "pamr_stride", "naclip_arch", "attention",
                                                   "gaussian_std")}
        vocabulary = "./" + published["vocabulary"].split()[0]
        return {**model, "method": method}, tuple(published["test_resize"]["scale"]), vocabulary
    if release_name == "resclip":
        published = release("resclip")["benchmarks"][benchmark]
        model = {key: published[key] for key in ("slide_crop", "slide_stride", "logit_scale", "prob_thd", "area_thd",
                                                   "pamr_steps", "temp_thd", "rcs_weights", "sfr_weights",
                                                   "delete_same_entity", "gaussian_std")}
        assert (published["resclip_arch"], published["attention"], published["rcs_blocks_1based"]) == (
            "wo_resi", "resclip", [6, 7, 8, 9])  # what method='resclip' computes
        vocabulary = "./" + published["vocabulary"].split()[0]
        return {**model, "method": method}, tuple(published["test_resize"]["scale"]), vocabulary
    if release_name == "proxyclip":
        published = release("proxyclip")["benchmarks"][benchmark]
        model = {key: published[key] for key in ("slide_crop", "slide_stride", "logit_scale", "prob_thd", "area_thd",
                                                   "vfm", "pad_multiple")}
        model.update(method=method, proxy_beta=published["beta"], proxy_gamma=published["gamma"])
        assert not published["pamr"]
        own = published["vocabulary_diff_vs_scclip"] != "none"
        vocabulary = f"./configs/{'proxyclip/' if own else ''}{published['vocabulary']}"
        return model, tuple(published["test_resize"]["scale"]), vocabulary
    scclip = load(f"cfg_{benchmark}.py")  # vanilla: SC-CLIP's settings, only the method differs
    model = {key: value for key, value in scclip["model"].items() if key not in NON_SETTINGS}
    return {**model, "method": method}, resize_of(scclip), scclip["model"]["name_path"]


# The releases' vocabulary files (configs/cls_<name>.txt there) are ours shipped under benchmark keys.
RELEASE_VOCABULARIES = {f"cls_{'coco_stuff' if key == 'coco_stuff164k' else key}.txt": key for key in BENCHMARKS}


def as_shipped(vocabulary: str) -> str:
    """A release's vocabulary path as our configs name it: a benchmark key, or the release's own file."""
    name = Path(vocabulary).name
    return RELEASE_VOCABULARIES[name] if vocabulary == f"./configs/{name}" else vocabulary


def plain(value):
    return list(value) if isinstance(value, tuple) else value


def test_each_method_folder_holds_its_benchmark_configs():
    for folder, (_, _, has_l14) in FOLDERS.items():
        found = {path.name for path in (CONFIGS / folder).glob("cfg_*.py")}
        expected = {Path(config).name for config in method_configs() if config.startswith(f"{folder}/")}
        assert found == expected, folder
        assert len(found) == 8 * (1 + has_l14)


def test_reference_copies_equal_the_shared_settings_files():
    if not SHARED_REFERENCE.is_dir():
        pytest.skip(f"shared settings files not found at {SHARED_REFERENCE}")
    for path in REFERENCE.glob("settings_*.json"):
        shared = SHARED_REFERENCE / path.name
        shared = shared if shared.is_file() else NEWER_REFERENCE / path.name
        assert path.read_bytes() == shared.read_bytes(), path.name
    assert {path.name for path in SHARED_REFERENCE.glob("settings_*.json")} <= {
        path.name for path in REFERENCE.glob("settings_*.json")}
    assert "settings_resclip.json" in {path.name for path in REFERENCE.glob("settings_*.json")}


@pytest.mark.parametrize("config", method_configs())
def test_config_has_its_release_settings(config):
    folder, name = config.split("/")
    benchmark = name.removeprefix("cfg_").removesuffix(".py").removesuffix(L14)
    is_l14 = name.endswith(f"{L14}.py")
    cfg = load(config)
    expected, resize, vocabulary = published_settings(folder, benchmark)
    if is_l14 and folder == "vanilla":
        scclip_l14 = load(f"cfg_{benchmark}{L14}.py")["model"]
        expected = {key: value for key, value in scclip_l14.items()
                    if key not in NON_SETTINGS and key not in CALIBRATION_INDICES}
        expected["method"] = "vanilla"

    model = cfg["model"]
    assert model["type"] == "SCCLIPForSegmentation"
    assert model["clip_path"] == ("ViT-L/14" if is_l14 else "ViT-B/16")
    assert {key: plain(model.get(key, "missing")) for key in expected} == {
        key: plain(value) for key, value in expected.items()}
    assert model["name_path"] == as_shipped(vocabulary) and vocabulary_file(model["name_path"]).is_file()
    taken = {name for name in model if name not in NON_SETTINGS}
    # Maths settings, ProxyCLIP's VFM by name, and shared settings a method refuses, at their default (off).
    assert taken - set(settings_for(model["method"])) <= {"vfm", *METHODS[model["method"]].refuses}
    check_settings(model["method"], {name: model[name] for name in taken})

    # The test resize really reaches the dataset (lists are replaced, not merged, by inheritance).
    pipeline = cfg["test_dataloader"]["dataset"]["pipeline"]
    assert [step["type"] for step in pipeline] == ["LoadImageFromFile", "Resize", "LoadAnnotations", "PackSegInputs"]
    assert pipeline[1] == dict(type="Resize", scale=resize, keep_ratio=True)
    assert cfg["test_pipeline"] == pipeline

    # Everything else (dataset, loader, evaluator, runtime) is SC-CLIP's config of the benchmark.
    scclip = load(f"cfg_{benchmark}{L14 if is_l14 else ''}.py")
    ours, theirs = dict(cfg), dict(scclip)
    for entry in (ours, theirs):
        for key in ("model", "test_pipeline", "release_settings", "release_resize", "published_as",
                    "settings_for_every_backbone"):
            entry.pop(key, None)
        entry["test_dataloader"] = {**entry["test_dataloader"],
                                    "dataset": {**entry["test_dataloader"]["dataset"], "pipeline": None}}
    assert ours == theirs


def test_clearclip_vocabularies_differ_from_scclips_only_where_the_release_does():
    datasets = release("clearclip")["datasets"]
    changed = {published["vocabulary"]: published["vocabulary_diff_vs_scclip"] for published in datasets.values()
               if published["vocabulary_diff_vs_scclip"] != "none"}
    assert sorted(path.name for path in (CONFIGS / "clearclip").glob("cls_*.txt")) == sorted(changed)
    for vocabulary, differences in changed.items():
        theirs = (CONFIGS / "clearclip" / vocabulary).read_text().split("\n")
        ours = BENCHMARKS[RELEASE_VOCABULARIES[vocabulary]].vocabulary.read_text().split("\n")
        listed = re.findall(r"line (\d+) '([^']*)' \(SC-CLIP: '([^']*)'\)", differences)
        assert listed and len(theirs) == len(ours)
        expected = list(ours)
        for number, release_line, scclip_line in listed:
            assert ours[int(number) - 1] == scclip_line
            expected[int(number) - 1] = release_line
        assert theirs == expected, vocabulary


def test_proxyclip_vocabularies_differ_from_scclips_only_where_the_release_does():
    benchmarks = release("proxyclip")["benchmarks"]
    changed = {published["vocabulary"]: published["vocabulary_diff_vs_scclip"] for published in benchmarks.values()
               if published["vocabulary_diff_vs_scclip"] != "none"}
    assert sorted(path.name for path in (CONFIGS / "proxyclip").glob("cls_*.txt")) == sorted(changed)
    for vocabulary, differences in changed.items():
        theirs = (CONFIGS / "proxyclip" / vocabulary).read_text().split("\n")
        ours = BENCHMARKS[RELEASE_VOCABULARIES[vocabulary]].vocabulary.read_text().split("\n")
        # "line N 'release line' (SC-CLIP: 'our line')", or for a shorter first line "(K names; SC-CLIP: 'our line', ...".
        listed = re.findall(r"line (\d+) '([^']*)' \((?:\d+ names; )?SC-CLIP: '([^']*)'", differences)
        assert listed and len(theirs) == len(ours)
        expected = list(ours)
        for number, release_line, scclip_line in listed:
            assert ours[int(number) - 1] == scclip_line
            expected[int(number) - 1] = release_line.replace("; ", ", ")  # the release's separator, ours
        assert theirs == expected, vocabulary


def test_published_numbers_are_the_settings_files():
    shipped = json.loads((REPO_ROOT / "scclip" / "data" / "published_miou.json").read_text())
    assert build_table(REFERENCE) == shipped

    assert set(published_methods()) == {"scclip", *FOLDERS}
    scclip = release("scclip_ablation")["scclip_full_miou"]["ViT-B/16"]
    assert published_miou("scclip", "ViT-B/16") == {key: scclip[key] for key in (*BENCHMARKS, "mean")}
    assert published_miou("naclip", "ViT-B/16")["mean"] == release("naclip")["miou"]["vit_b16"]["avg"]
    clearclip = published_miou("clearclip", "ViT-B/16")  # eight paper numbers, their mean computed
    assert clearclip["mean"] == round(sum(clearclip[key] for key in BENCHMARKS) / 8, 2)
    assert published_record("vanilla", "ViT-L/14")["verified"] is False
    assert published_miou("sclip", "ViT-L/14") is None and published_miou("nonexistent", "ViT-B/16") is None


def test_resclip_runs_vit_l14_by_the_backbone_option_with_its_published_numbers(monkeypatch, capsys):
    """The release has one config per benchmark for both backbones: --backbone ViT-L/14 changes only the CLIP."""
    monkeypatch.delenv("RANK", raising=False)
    for benchmark in BENCHMARKS:
        config = f"configs/resclip/cfg_{benchmark}.py"
        own = test_eval.eval_script.load_config(test_eval.eval_script.parse_args(["--config", config]), "cpu")
        cfg = test_eval.eval_script.load_config(
            test_eval.eval_script.parse_args(["--config", config, "--backbone", "ViT-L/14"]), "cpu")
        assert cfg.model.to_dict() == {**own.model.to_dict(), "clip_path": "ViT-L/14"} and cfg.backbone == "ViT-L/14"
    assert capsys.readouterr().err == ""  # no note that ViT-L/14 has settings of its own
    by_key = test_eval.eval_script.parse_args(["--config", "city_scapes", "--backbone", "ViT-L/14", "--method", "resclip"])
    assert by_key.config.endswith("configs/resclip/cfg_city_scapes.py")
    published = release("resclip")["miou"]
    for backbone, key in (("ViT-B/16", "vit_b16"), ("ViT-L/14", "vit_l14")):
        assert {benchmark: published_miou("resclip", backbone)[benchmark] for benchmark in BENCHMARKS} == {
            benchmark: published[key][benchmark] for benchmark in BENCHMARKS}


def test_plain_clip_protocols_are_declared_by_their_configs():
    for folder in ("vanilla_sclip", "vanilla_clearclip"):
        assert {load(str(path.relative_to(CONFIGS)))["published_as"] for path in (CONFIGS / folder).glob("cfg_*.py")} == {folder}
    assert all("published_as" not in load(config) for config in ("cfg_voc21.py", "vanilla/cfg_voc21.py", "sclip/cfg_voc21.py"))
    assert published_miou("vanilla_clearclip", "ViT-B/16")["voc20"] == (
        release("clearclip")["published_miou"]["readme_vit_b16"]["vanilla (CLIP)"]["voc20"])


# Each method's VOC21 config, and vanilla CLIP with SC-CLIP's ViT-L/14 settings (its calibration indices dropped);
# the other ViT-L/14 configs differ from their ViT-B/16 ones only in clip_path.
BUILD_CASES = [f"{folder}/cfg_voc21.py" for folder in FOLDERS] + [f"vanilla/cfg_voc21{L14}.py"]


@pytest.mark.parametrize("config", BUILD_CASES)
def test_config_builds_its_method(config, tiny_checkpoint_path, tiny_l14_checkpoint_path, tiny_dino_path):
    cfg = Config.fromfile(CONFIGS / config)
    checkpoint = tiny_l14_checkpoint_path if config.endswith(f"{L14}.py") else tiny_checkpoint_path
    cfg.model.update(clip_path=str(checkpoint), device="cpu")
    if cfg.model.method == "proxyclip":
        cfg.model.update(vfm_path=str(tiny_dino_path))  # no download here: the tiny DINO

    model = MODELS.build(cfg.model)

    folder = config.split("/")[0]
    assert model.method == FOLDERS[folder][1]
    expected = {key: value for key, value in load(config)["model"].items() if key not in NON_SETTINGS}
    expected.pop("area_thd", None) if model.method == "proxyclip" else None
    assert {key: plain(model.method_settings[key]) for key in expected} == {
        key: plain(value) for key, value in expected.items()}
    assert model.num_classes == 21
    release_vocabulary = FOLDERS[folder][0] == "clearclip"  # its VOC21 line 1 is 'background'
    assert (model.class_names[0] == "background") == release_vocabulary


@pytest.mark.slow  # three runs of dist_test.sh, each importing scclip in new processes (~25 s)
def test_dist_test_names_the_methods_and_refuses_missing_configs():
    def run(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "dist_test.sh"], env=dict(os.environ, GPUS="1", PYTHON=sys.executable, **env), check=False,
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    unknown = run(METHOD="clear_clip")
    assert unknown.returncode == 2
    assert unknown.stderr.strip() == ("error: METHOD=clear_clip has no configs (./configs/clear_clip is not a method's "
                                      "folder); use one of: scclip " + " ".join(sorted(FOLDERS)))
    assert run(METHOD="backbones").returncode == 2  # SC-CLIP with other backbones, chosen by BACKBONE
    no_l14 = run(METHOD="naclip", BACKBONE="ViT-L/14")
    assert no_l14.returncode == 2
    assert "./configs/naclip/cfg_voc21_vitl14.py does not exist: METHOD=naclip has no ViT-L/14 config" in no_l14.stderr


def metrics_of_the_run(work_dir: Path) -> dict:
    """The metrics.json of the one run under `work_dir`."""
    (path,) = work_dir.rglob("metrics.json")
    return json.loads(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("folder", ["vanilla", "maskclip", "sclip", "clearclip", "naclip", "resclip"])
def test_one_eval_run_per_method_scores_like_an_independent_computation(folder, tmp_path, tiny_checkpoint_path,
                                                                        monkeypatch):
    """eval.py on a synthetic VOC20 set with the method's config (short side 224 instead of 336/448, for speed)."""
    monkeypatch.setattr(test_eval, "config_path", lambda benchmark: CONFIGS / folder / f"cfg_{benchmark}.py")
    root = make_dataset(tmp_path / "datasets", "voc20")
    predictions = test_eval.predict_independently("voc20", tiny_checkpoint_path, root)
    test_eval.plant_predictions(root, "voc20", predictions)
    expected = test_eval.independent_miou(root, "voc20", predictions)
    assert expected > 0

    args = test_eval.eval_args("voc20", tiny_checkpoint_path, root, tmp_path / "work")
    assert test_eval.eval_script.main(args) == 0

    record = metrics_of_the_run(tmp_path / "work")
    assert record["num_images"] == 2
    assert record["metrics"]["mIoU"] == pytest.approx(expected, abs=0.005 + 1e-9)  # IoUMetric rounds to 0.01


# One window per image instead of two or three: the scripts are under test here, not the maths.
SMALL_IMAGES = "test_dataloader.dataset.pipeline.1.scale=(2048, 112)"


def run_dist_test(tmp_path: Path, checkpoint: Path, benchmark: str, **env: str) -> subprocess.CompletedProcess:
    """dist_test.sh on the CPU over a synthetic copy of `benchmark`."""
    root = make_dataset(tmp_path / "datasets", benchmark)
    options = [*test_eval.cfg_options(benchmark, checkpoint, root), SMALL_IMAGES]
    env = dict(os.environ, DATASETS=benchmark, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", **env)
    completed = subprocess.run(["bash", "dist_test.sh", "--device", "cpu", "--cfg-options", *options], check=False,
                               env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def table_rows(output: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in output.splitlines()
            if line.startswith("|")]


@pytest.mark.slow
def test_dist_test_runs_a_method_on_two_cpu_processes_and_prints_it_beside_its_published_numbers(
        tmp_path, tiny_checkpoint_path):
    completed = run_dist_test(tmp_path, tiny_checkpoint_path, "voc21", METHOD="clearclip", GPUS="2", PORT="29533",
                              WORK_DIR=str(tmp_path / "dist"))

    record = metrics_of_the_run(tmp_path / "dist")
    assert record["world_size"] == 2 and record["num_images"] == 2
    miou = record["metrics"]["mIoU"]
    published = published_miou("clearclip", "ViT-B/16")["voc21"]
    (row,) = [row for row in table_rows(completed.stdout) if "VOC21" in row]
    assert "clearclip" in row and f"{miou:.2f}" in row and f"{published:.1f}" in row
    assert "configs/clearclip/cfg_voc21.py" in completed.stdout


@pytest.mark.slow
def test_ablation_command_prints_one_table_of_every_variant(tmp_path, tiny_checkpoint_path):
    completed = run_dist_test(tmp_path, tiny_checkpoint_path, "voc20", ABLATION="1", GPUS="1",
                              WORK_DIR=str(tmp_path / "ablation"))

    rows = table_rows(completed.stdout)
    assert rows[0] == ["variant", "VOC20", "mean"]
    variants = ablation.VARIANTS
    names = [variant.name for variant in variants]
    assert [row[0] for row in rows[2:2 + len(variants)]] == [variant.label for variant in variants]
    scclip_variants = variants[1:names.index("vanilla")]
    assert [variant.overrides for variant in scclip_variants] == [
        ("model.anomaly_detector=norm",), *((f"model.{switch}=False",) for switch in SWITCHES)]
    assert [variant.overrides for variant in variants[names.index("resclip"):]] == [
        (), ("model.sfr=False",), ("model.rcs=False",)]
    for variant, row in zip(variants, rows[2:]):
        record = metrics_of_the_run(tmp_path / "ablation" / variant.name / "voc20")
        assert record["method"] == (variant.config_dir.removeprefix("configs").strip("/") or "scclip")
        ablated = {f"{key}={value}" for key, value in record["overrides"].items()
                   if key.removeprefix("model.") in (*SWITCHES, "anomaly_detector", "sfr", "rcs")}
        assert ablated == set(variant.overrides)
        assert row[1:] == [f"{record['metrics']['mIoU']:.2f}"] * 2
    paper = published_miou("scclip", "ViT-B/16")
    vanilla = published_miou("vanilla", "ViT-B/16")
    resclip = published_miou("resclip", "ViT-B/16")
    assert rows[2 + len(variants):] == [
        [f"paper: {variants[0].label}", f"{paper['voc20']:.1f}", f"{paper['voc20']:.1f}"],
        ["paper, unverified: vanilla CLIP", "—", f"{vanilla['mean']:.1f} (all eight)"],
        ["paper: ResCLIP", f"{resclip['voc20']:.1f}", f"{resclip['voc20']:.1f}"],
    ]


def test_ablation_table_of_all_eight_benchmarks_uses_the_published_means(tmp_path, capsys):
    ours = {variant.name: {benchmark: 10.0 + index + position / 8 for position, benchmark in enumerate(BENCHMARKS)}
            for index, variant in enumerate(ablation.VARIANTS)}
    del ours["vanilla"]["ade20k"]  # a run that did not finish
    for variant, results in ours.items():
        for benchmark, miou in results.items():
            path = tmp_path / variant / benchmark / "cfg-0123456789" / "metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps(dict(metrics=dict(mIoU=miou, aAcc=1.0))))

    assert ablation.main(["--table-only", "--work-dir", str(tmp_path), "--datasets", *BENCHMARKS]) == 0
    rows = table_rows(capsys.readouterr().out)

    assert rows[0] == ["variant", *(benchmark.title for benchmark in BENCHMARKS.values()), "mean"]
    first = ours["all_on"]
    assert rows[2] == [ablation.VARIANTS[0].label, *(f"{first[key]:.2f}" for key in BENCHMARKS),
                       f"{sum(first.values()) / 8:.2f}"]
    names = [variant.name for variant in ablation.VARIANTS]
    assert rows[2 + names.index("vanilla")][-2:] == ["—", "—"]  # vanilla: ADE20K missing, so no mean
    paper = published_miou("scclip", "ViT-B/16")
    assert rows[-3] == [f"paper: {ablation.VARIANTS[0].label}", *(f"{paper[key]:.1f}" for key in BENCHMARKS),
                        f"{paper['mean']:.1f}"]
    assert rows[-2] == ["paper, unverified: vanilla CLIP", *["—"] * 8, f"{published_miou('vanilla', 'ViT-B/16')['mean']:.1f}"]
    resclip = published_miou("resclip", "ViT-B/16")  # eight numbers; their mean computed
    assert rows[-1] == ["paper: ResCLIP", *(f"{resclip[key]:.1f}" for key in BENCHMARKS), f"{resclip['mean']:.1f}"]


def test_resclip_ablation_runs_the_same_config_with_the_backbone_option(monkeypatch):
    from scclip.evaluation import command as eval_command

    commands = []
    monkeypatch.setattr(eval_command, "main", lambda command: commands.append(command) or 0)
    args, _ = ablation.parse_args(["--backbone", "ViT-L/14", "--work-dir", "w"])
    variants = {variant.name: variant for variant in ablation.VARIANTS}
    assert ablation.evaluate(variants["resclip_no_sfr"], "voc21", args, [])
    assert ablation.evaluate(variants["all_on"], "voc21", args, [])
    assert commands == [
        ["--config", "configs/resclip/cfg_voc21.py", "--work-dir", "w/resclip_no_sfr/voc21", "--backbone", "ViT-L/14",
         "--cfg-options", "model.sfr=False"],
        ["--config", "configs/cfg_voc21_vitl14.py", "--work-dir", "w/all_on/voc21"],
    ]
