"""The sixteen benchmark configs: published settings (docs/method.md#calibration-settings, #published-settings), mmseg layouts, and they build."""
import dataclasses
import inspect
from pathlib import Path

import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS, MODELS

import scclip.datasets  # noqa: F401  (registers the benchmark datasets)
from scclip.benchmarks import BENCHMARKS
from scclip.methods import CALIBRATION_INDICES, METHODS
from scclip.segmentor import SCCLIPForSegmentation

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
SHARED_VOCABULARIES = REPO_ROOT.parent / "shared" / "reference" / "class_names"

# benchmark → (dataset type, data root, image folder, label folder, split file, vocabulary)
DATA = {
    "voc21": ("PascalVOCDataset", "./datasets/VOCdevkit/VOC2012", "JPEGImages", "SegmentationClass",
              "ImageSets/Segmentation/val.txt", "cls_voc21.txt"),
    "voc20": ("PascalVOC20Dataset", "./datasets/VOCdevkit/VOC2012", "JPEGImages", "SegmentationClass",
              "ImageSets/Segmentation/val.txt", "cls_voc20.txt"),
    "context60": ("PascalContext60Dataset", "./datasets/VOCdevkit/VOC2010", "JPEGImages", "SegmentationClassContext",
                  "ImageSets/SegmentationContext/val.txt", "cls_context60.txt"),
    "context59": ("PascalContext59Dataset", "./datasets/VOCdevkit/VOC2010", "JPEGImages", "SegmentationClassContext",
                  "ImageSets/SegmentationContext/val.txt", "cls_context59.txt"),
    "coco_object": ("COCOObjectDataset", "./datasets/coco_object", "images/val2017", "annotations/val2017", None,
                    "cls_coco_object.txt"),
    "coco_stuff164k": ("COCOStuffDataset", "./datasets/coco_stuff164k", "images/val2017", "annotations/val2017",
                       None, "cls_coco_stuff.txt"),
    "city_scapes": ("CityscapesDataset", "./datasets/cityscapes", "leftImg8bit/val", "gtFine/val", None,
                    "cls_city_scapes.txt"),
    "ade20k": ("ADE20KDataset", "./datasets/ade/ADEChallengeData2016", "images/validation",
               "annotations/validation", None, "cls_ade20k.txt"),
}
# Published extras over the defaults (logit_scale 40, prob_thd 0, no area_thd).
B16_EXTRAS = {"voc21": dict(area_thd=0.1, logit_scale=50, prob_thd=0.15), "context60": dict(prob_thd=0.15),
              "coco_object": dict(logit_scale=55, prob_thd=0.35)}
L14_EXTRAS = {"voc21": dict(area_thd=0.1, prob_thd=0.2), "context60": dict(prob_thd=0.15),
              "coco_object": dict(prob_thd=0.25)}
B16 = dict(clip_path="ViT-B/16", pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10, res_cls=0.3)
L14 = dict(clip_path="ViT-L/14", pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19, res_cls=0.1)
PUBLISHED_COMMON = dict(logit_scale=40, prob_thd=0.0, area_thd=None, slide_crop=224, slide_stride=112, pamr_steps=0,
                        beta=0.4, lof_neighbors=30, contamination=0.05)
CASES = [(f"cfg_{benchmark}.py", benchmark, {**PUBLISHED_COMMON, **B16, **B16_EXTRAS.get(benchmark, {})})
         for benchmark in DATA]
CASES += [(f"cfg_{benchmark}_vitl14.py", benchmark, {**PUBLISHED_COMMON, **L14, **L14_EXTRAS.get(benchmark, {})})
          for benchmark in DATA]


def test_there_are_sixteen_benchmark_configs_a_folder_config_and_a_base():
    names = sorted(path.name for path in CONFIGS.glob("*.py"))
    assert names == sorted(["base_config.py", "cfg_custom.py", *(case[0] for case in CASES)])


def effective_model_settings(cfg: Config) -> dict:
    """The config's model arguments over the segmentor's and SC-CLIP's own defaults: what the model will run with."""
    defaults = {name: parameter.default
                for name, parameter in inspect.signature(SCCLIPForSegmentation.__init__).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    return {**defaults, **METHODS["scclip"].settings, **cfg.model}


@pytest.mark.parametrize("config, benchmark, expected", CASES, ids=[case[0] for case in CASES])
def test_config_has_the_published_settings(config, benchmark, expected):
    cfg = Config.fromfile(CONFIGS / config)
    assert cfg.model.type == "SCCLIPForSegmentation"
    settings = effective_model_settings(cfg)
    # Calibration indices follow the checkpoint's depth unless a config gives them: the build test checks them.
    pipeline = {key: value for key, value in expected.items() if key not in CALIBRATION_INDICES}
    assert {key: settings[key] for key in pipeline} == pipeline
    assert settings["name_path"] == benchmark

    dataset = cfg.test_dataloader.dataset
    dataset_type, root, images, labels, split, _ = DATA[benchmark]
    assert (dataset.type, dataset.data_root) == (dataset_type, root)
    assert dataset.data_prefix == dict(img_path=images, seg_map_path=labels)
    assert dataset.get("ann_file") == split
    steps = [step["type"] for step in dataset.pipeline]
    assert steps == ["LoadImageFromFile", "Resize", "LoadAnnotations", "PackSegInputs"]
    short_side = 560 if benchmark == "city_scapes" else 336
    assert dataset.pipeline[1] == dict(type="Resize", scale=(2048, short_side), keep_ratio=True)

    assert cfg.test_dataloader.batch_size == 1
    assert cfg.test_evaluator == dict(type="IoUMetric", iou_metrics=["mIoU"])
    assert cfg.test_cfg.type == "TestLoop" and cfg.default_scope == "mmseg"
    assert cfg.custom_imports == dict(imports=["scclip"], allow_failed_imports=False)
    assert cfg.model_wrapper_cfg.type == "MMSeparateDistributedDataParallel"


@pytest.mark.parametrize("benchmark", list(DATA))
def test_vocabulary_has_one_line_per_dataset_class(benchmark):
    dataset_type, *_, vocabulary = DATA[benchmark]
    lines = BENCHMARKS[benchmark].vocabulary.read_text().splitlines()
    assert len(lines) == len(DATASETS.get(dataset_type).METAINFO["classes"])
    if SHARED_VOCABULARIES.is_dir():
        assert BENCHMARKS[benchmark].vocabulary.read_bytes() == (SHARED_VOCABULARIES / vocabulary).read_bytes()


@pytest.mark.parametrize("config, benchmark, expected", CASES, ids=[case[0] for case in CASES])
def test_config_builds_its_model(config, benchmark, expected, tiny_checkpoint_path, tiny_l14_checkpoint_path,
                                 monkeypatch, tmp_path_factory):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "text_cache"))
    cfg = Config.fromfile(CONFIGS / config)
    checkpoint = tiny_l14_checkpoint_path if config.endswith("_vitl14.py") else tiny_checkpoint_path
    cfg.model.update(clip_path=str(checkpoint), device="cpu")

    model = MODELS.build(cfg.model)

    assert isinstance(model, SCCLIPForSegmentation)
    assert model.num_classes == len(DATASETS.get(DATA[benchmark][0]).METAINFO["classes"])
    calibration = dataclasses.asdict(model.encoder.config)
    assert {key: calibration[key] for key in ("pre_adjust_idx", "post_adjust_idx", "multi_start_idx",
                                              "multi_end_idx", "res_cls")} == {
        key: expected[key] for key in ("pre_adjust_idx", "post_adjust_idx", "multi_start_idx",
                                       "multi_end_idx", "res_cls")}
    assert (model.post.logit_scale, model.post.prob_thd, model.post.area_thd) == (
        expected["logit_scale"], expected["prob_thd"], expected["area_thd"])


@pytest.mark.slow
def test_custom_imports_alone_register_the_benchmark_datasets():
    """A fresh process that only loads a config (as mmseg's own tools do) finds our datasets."""
    import subprocess
    import sys

    script = ("from mmengine.config import Config; from mmseg.registry import DATASETS; "
              "Config.fromfile('configs/cfg_voc20.py'); "
              "print([DATASETS.get(name) is not None for name in ('PascalVOC20Dataset', 'PascalContext60Dataset', "
              "'PascalContext59Dataset', 'COCOObjectDataset')])")
    completed = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=False, capture_output=True,
                               text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip().splitlines()[-1] == "[True, True, True, True]"
