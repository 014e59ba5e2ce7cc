"""OpenMMLab's own entry points on our configs: init_model + inference_model, MMSegInferencer, Runner.test."""
from pathlib import Path

import mmcv
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.apis import MMSegInferencer, inference_model, init_model
from mmseg.registry import DATASETS
from PIL import Image
from test_configs import CASES, DATA
from test_datasets import make_dataset, photo

from scclip.errors import InputError
from scclip.segmentor import SCCLIPForSegmentation

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"


@pytest.fixture(autouse=True)
def in_repository(monkeypatch, tmp_path_factory):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "text_cache"))


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("images") / "astronaut.png"
    Image.fromarray(photo("astronaut")).save(path)
    return path


@pytest.mark.parametrize("config, benchmark", [case[:2] for case in CASES], ids=[case[0] for case in CASES])
def test_init_model_and_inference_model_run_every_benchmark_config(config, benchmark, image_file,
                                                                    tiny_checkpoint_path, tiny_l14_checkpoint_path):
    """mmseg sets model.pretrained and model.train_cfg to None before building: both are accepted."""
    checkpoint = tiny_l14_checkpoint_path if config.endswith("_vitl14.py") else tiny_checkpoint_path
    model = init_model(str(CONFIGS / config), device="cpu", cfg_options={"model.clip_path": str(checkpoint)})
    assert isinstance(model, SCCLIPForSegmentation) and model.cfg.model.pretrained is None

    result = inference_model(model, str(image_file))

    prediction = result.pred_sem_seg.data
    assert tuple(prediction.shape) == (1, *Image.open(image_file).size[::-1])
    classes = len(DATASETS.get(DATA[benchmark][0]).METAINFO["classes"])
    assert result.seg_logits.data.shape[0] == classes and 0 <= int(prediction.min()) <= int(prediction.max()) < classes
    # An array (BGR, as OpenMMLab reads images) is the same input as its file.
    from_array = inference_model(model, mmcv.imread(str(image_file)))
    assert np.array_equal(from_array.pred_sem_seg.data.numpy(), prediction.numpy())


@pytest.mark.parametrize("key", ["pretrained", "train_cfg"])
def test_the_keys_mmseg_sets_mean_nothing_and_take_nothing_else(key):
    with pytest.raises(InputError, match=rf"^{key}='weights\.pth' must be None: "):
        SCCLIPForSegmentation(clip_path="no-such-checkpoint.pt", vocabulary=["cat"], **{key: "weights.pth"})


def test_other_mmseg_keys_are_still_refused():
    with pytest.raises(InputError, match=r"^method 'scclip' takes no setting 'backbone'"):
        SCCLIPForSegmentation(clip_path="no-such-checkpoint.pt", vocabulary=["cat"], backbone=dict(type="ViT"))


def test_mmseg_inferencer_takes_a_config(image_file, tiny_checkpoint_path):
    cfg = Config.fromfile(CONFIGS / "cfg_voc21.py")
    cfg.model.clip_path = str(tiny_checkpoint_path)
    inferencer = MMSegInferencer(model=cfg, device="cpu")

    predictions = inferencer(str(image_file))["predictions"]

    model = init_model(cfg, device="cpu")
    expected = inference_model(model, str(image_file)).pred_sem_seg.data[0].numpy()
    assert np.array_equal(predictions, expected)


def test_runner_from_cfg_tests_a_benchmark(tmp_path, tiny_checkpoint_path):
    root = make_dataset(tmp_path / "datasets", "voc21")
    cfg = Config.fromfile(CONFIGS / "cfg_voc21.py")
    cfg.model.update(clip_path=str(tiny_checkpoint_path), device="cpu")
    cfg.test_dataloader.update(num_workers=0, persistent_workers=False)
    cfg.test_dataloader.dataset.data_root = str(root)
    cfg.work_dir = str(tmp_path / "work")

    metrics = Runner.from_cfg(cfg).test()

    assert 0 <= metrics["mIoU"] <= 100 and set(metrics) >= {"aAcc", "mIoU", "mAcc"}
