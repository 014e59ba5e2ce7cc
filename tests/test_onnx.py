"""ONNX export and the torch-free runtime (docs/deploy.md): the graphs, the numpy pipeline and parity with PyTorch."""
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, golden_dir_or_none, golden_file

from scclip import calibration, encoders
from scclip.api import Segmenter
from scclip.cli import main
from scclip.clip import load
from scclip.clip.model import resample_position_embedding
from scclip.errors import CheckpointError, InputError
from scclip.export import MODEL_JSON, export_model
from scclip.export import detect_anomalies as graph_detect_anomalies
from scclip.export import detect_anomalies_by_norm as graph_detect_by_norm
from scclip.export import gaussian_bias as graph_gaussian_bias
from scclip.export import quantile as graph_quantile
from scclip.export import resample_position_embedding as graph_resample
from scclip.export import resolve_anomalies as graph_resolve
from scclip.fullres import resize_block
from scclip.pamr import pamr
from scclip.postprocess import class_scores
from scclip.runtime import OnnxSegmenter, numerics
from scclip.runtime.fullsize import FullSize

FEATURE_ATOL = 1e-4
SCORE_ATOL = 1e-4
TEXT_ATOL = 1e-5
TIE_ATOL = 1e-5
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def assert_labels_equal_outside_ties(onnx_labels: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                                     prob_thd: float = 0.0) -> None:
    """The golden tie rule: labels may differ only where the two best scores lie within 1e-5 (or the best
    within 1e-5 of prob_thd)."""
    top2 = np.sort(scores, axis=0)[-2:]
    tie = (top2[1] - top2[0]) <= TIE_ATOL
    at_threshold = np.abs(top2[1] - prob_thd) <= TIE_ATOL
    differ = (onnx_labels != labels) & ~tie & ~at_threshold
    assert not differ.any(), f"{differ.sum()} pixels differ outside ties"


# ---------------------------------------------------------------- the graph-friendly maths equals PyTorch's


@pytest.mark.parametrize("grid", [(14, 14), (21, 28), (5, 3), (1, 1), (30, 9)])
def test_position_embedding_resampling_equals_bicubic_interpolate(grid):
    pos = torch.randn(1 + 14 * 14, 32)
    expected = resample_position_embedding(pos, grid, 14)
    torch.testing.assert_close(graph_resample(pos, grid, 14), expected, atol=1e-5, rtol=0)
    if grid == (14, 14):  # the trained grid: the embedding itself, bit for bit
        assert torch.equal(graph_resample(pos, grid, 14), pos)


@pytest.mark.parametrize("tokens", [196, 20, 2])
def test_anomaly_detection_equals_pytorch(tokens):
    generator = torch.Generator().manual_seed(tokens)
    x = torch.randn(3, tokens, 16, generator=generator)
    x[0, 5 % tokens] *= 8  # one clear outlier
    assert torch.equal(graph_detect_anomalies(x), calibration.detect_anomalies(x))
    assert torch.equal(graph_detect_by_norm(x), calibration.detect_anomalies_by_norm(x))
    lof = calibration.local_outlier_factor(x)
    torch.testing.assert_close(graph_quantile(lof, 0.95), torch.quantile(lof, 0.95, dim=-1, keepdim=True),
                               atol=1e-6, rtol=0)  # torch's lerp may fuse one rounding


def test_quantile_of_a_row_with_nan_is_nan_as_torch_quantile():
    values = torch.tensor([[0.5, float("nan"), 1.0], [0.1, 0.2, 0.3]])
    assert torch.isnan(graph_quantile(values, 0.95)[0]).all()
    assert torch.isnan(torch.quantile(values, 0.95, dim=-1, keepdim=True)[0]).all()


def test_gaussian_bias_and_resolution_equal_pytorch():
    torch.testing.assert_close(graph_gaussian_bias((4, 7), 5.0), encoders.gaussian_bias((4, 7), 5.0), atol=0, rtol=0)
    tokens = torch.randn(2, 4 * 5, 8)
    anomalies = torch.rand(2, 20) > 0.7
    torch.testing.assert_close(graph_resolve(tokens, anomalies, (4, 5)),
                               calibration.resolve_anomalies(tokens, anomalies, (4, 5)), atol=0, rtol=0)


# ---------------------------------------------------------------- the numpy pipeline equals PyTorch's


def test_numpy_resizes_equal_pytorch_and_opencv():
    import mmcv

    maps = torch.randn(5, 14, 21)
    expected = F.interpolate(maps[None], size=(224, 336), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(numerics.resize(maps.numpy(), (224, 336)), expected.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(numerics.resize_block(maps.numpy(), (224, 336), (10, 50), (3, 300)),
                               resize_block(maps, (224, 336), (10, 50), (3, 300)).numpy(), atol=1e-6, rtol=0)
    rng = np.random.default_rng(0)
    for height, width in [(480, 640), (700, 4000), (1000, 1000)]:  # downscaling: OpenCV's values exactly
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        size = mmcv.rescale_size((width, height), (2048, 336))
        assert numerics.rescale_size(width, height, (2048, 336)) == size
        assert np.array_equal(numerics.resize_uint8(image, *size), mmcv.imresize(image, size, interpolation="bilinear"))
    image = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)  # enlarging: one grey level at most
    difference = numerics.resize_uint8(image, 504, 336).astype(int) - mmcv.imresize(image, (504, 336)).astype(int)
    assert np.abs(difference).max() <= 1


def test_numpy_postprocessing_and_pamr_equal_pytorch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 40, 48, generator=generator) * 0.1
    query_to_class = torch.tensor([0, 1, 1, 2, 3])
    expected = class_scores(logits, query_to_class, 4, 40.0)
    np.testing.assert_allclose(numerics.class_scores(logits.numpy(), query_to_class.numpy(), 4, 40.0), expected.numpy(),
                               atol=1e-6, rtol=0)
    image = torch.randn(1, 3, 40, 48, generator=generator)
    refined = pamr(image, expected[None], 3, (2, 4))[0]
    affinity = numerics.pixel_affinities(image[0].numpy(), (2, 4))
    np.testing.assert_allclose(numerics.refine(expected.numpy(), affinity, 3, (2, 4)), refined.numpy(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- export and runtime on a tiny checkpoint


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory, tiny_b16_model):
    folder = tmp_path_factory.mktemp("onnx") / "tiny_scclip"
    record = export_model("tiny.pt", folder, method="scclip", settings={"area_thd": 0.1}, clip_model=tiny_b16_model)
    return folder, record


def test_export_writes_checked_graphs_and_everything_the_runtime_needs(tiny_export):
    folder, record = tiny_export
    meta = json.loads((folder / MODEL_JSON).read_text())
    assert meta == record
    assert sorted(meta["files"]) == ["bpe_simple_vocab_16e6.txt.gz", "image_encoder.onnx", "text_encoder.onnx"]
    assert meta["settings"]["anomaly_detector"] == "lof" and meta["settings"]["area_thd"] == 0.1
    assert meta["settings"]["slide_crop"] == 224 and meta["patch_size"] == 16 and meta["opset"] >= 17
    assert len(meta["prompt_templates"]) > 1 and meta["normalisation"]["mean"][0] == pytest.approx(122.771)
    assert meta["parity"]["image_features_max_difference"] <= FEATURE_ATOL
    assert meta["parity"]["text_features_max_difference"] <= TEXT_ATOL


def test_runtime_equals_segmenter_on_a_photo(tiny_export, tiny_b16_model):
    folder, _ = tiny_export
    rng = np.random.default_rng(1)
    image = np.kron(rng.integers(0, 256, (12, 17, 3)), np.ones((32, 32, 1))).astype(np.uint8)  # 384×544, blocks
    segmenter = Segmenter("tiny.pt", classes="cat,dog|puppy,sky", clip_model=tiny_b16_model, text_cache=False,
                          area_thd=0.1)
    runtime = OnnxSegmenter(folder, classes="cat,dog|puppy,sky")
    np.testing.assert_allclose(runtime.query_features, segmenter.segmentor.query_features.numpy(), atol=TEXT_ATOL, rtol=0)
    expected, result = segmenter(image), runtime(image)
    np.testing.assert_allclose(result.scores, expected.scores, atol=SCORE_ATOL, rtol=0)
    assert_labels_equal_outside_ties(result.labels, expected.labels, expected.scores)
    assert type(result) is type(expected) and result.class_names == expected.class_names


def test_a_missing_or_altered_file_is_refused_in_one_line(tiny_export, tmp_path):
    folder, _ = tiny_export
    altered = shutil.copytree(folder, tmp_path / "altered")
    with open(altered / "text_encoder.onnx", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(CheckpointError, match=r"text_encoder.onnx differs .* \(SHA-256\)") as error:
        OnnxSegmenter(altered, classes="cat,dog")
    assert "\n" not in str(error.value)
    missing = shutil.copytree(folder, tmp_path / "missing")
    (missing / "bpe_simple_vocab_16e6.txt.gz").unlink()
    with pytest.raises(CheckpointError, match="bpe_simple_vocab_16e6.txt.gz is missing"):
        OnnxSegmenter(missing, classes="cat,dog")
    with pytest.raises(CheckpointError, match="holds no model.json"):
        OnnxSegmenter(tmp_path, classes="cat,dog")


def test_export_refuses_bad_settings_in_one_line(tiny_b16_model, tmp_path):
    with pytest.raises(InputError, match="anomaly_detector='median' is not one of lof, norm"):
        export_model("tiny.pt", tmp_path / "m", settings={"anomaly_detector": "median"}, clip_model=tiny_b16_model)
    with pytest.raises(InputError, match="takes no setting 'beta'"):
        export_model("tiny.pt", tmp_path / "m", method="clearclip", settings={"beta": 0.3}, clip_model=tiny_b16_model)
    assert not (tmp_path / "m").exists()


def test_importing_scclip_without_torch_imports_nothing_torch_side(tiny_export):
    """A meta-path finder makes torch (and mmcv, mmengine, cv2) uninstallable: scclip and its runtime still import."""
    code = (
        "import sys, importlib.abc\n"
        "BLOCKED = ('torch', 'mmcv', 'mmengine', 'mmseg', 'cv2', 'torchvision')\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import scclip, scclip.runtime\n"
        "assert not scclip.HAS_TORCH\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in BLOCKED], 'torch side imported'\n"
        "try:\n    scclip.Segmenter\nexcept ImportError as e:\n    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "scclip.Segmenter needs PyTorch" in done.stdout


@pytest.mark.slow
def test_export_and_segment_commands(tiny_checkpoint_path, tmp_path, capsys):
    """`scclip export` then `scclip segment --runtime onnx` write the files `scclip segment` writes."""
    model = tmp_path / "model"
    assert main(["export", "--backbone", str(tiny_checkpoint_path), "--method", "naclip",
                 "--setting", "slide_crop=0", "--out", str(model)]) == 0
    assert "exported naclip (fp32)" in capsys.readouterr().out
    image = REPO_ROOT / "scclip" / "assets" / "astronaut.jpg"
    assert main(["segment", "--runtime", "onnx", "--model", str(model), "--image", str(image),
                 "--classes", "person,sky", "--out", str(tmp_path / "out"), "--save-mask"]) == 0
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["astronaut_scclip.png", "astronaut_scclip_mask.json", "astronaut_scclip_mask.png"]
    assert main(["segment", "--runtime", "onnx", "--image", str(image), "--classes", "a,b"]) == 1
    assert "--runtime onnx needs --model DIR" in capsys.readouterr().err


# ---------------------------------------------------------------- parity on the golden cases, every method


# One or more cases per method, SC-CLIP's switches and both anomaly detectors: (folder, case).
GOLDEN_CASES = [
    ("methods", "vanilla_b16_voc21"), ("methods", "maskclip_b16_pad_obj"), ("methods", "sclip_l14_pamr"),
    ("methods", "clearclip_b16_pad_obj"), ("methods", "naclip_b16_voc21"), ("methods", "naclip_b16_context60"),
    ("methods", "scclip_abl_all_off_b16_voc"), ("methods", "scclip_abl_no_aggregation_b16_voc"),
    ("methods", "scclip_abl_no_anomaly_b16_voc"), ("methods", "scclip_abl_no_calibration_b16_voc"),
    ("methods", "scclip_abl_no_multilevel_b16_voc"), ("methods", "scclip_abl_l14_no_calibration_no_multilevel_voc"),
    (".", "b16_voc_like"), (".", "b16_whole_image"), (".", "l14_whole_image"),
    ("init_commit", "b16_voc_like"), ("init_commit", "b16_whole_image"),
]


def golden_case(root: Path, folder: str, name: str) -> tuple[dict, Path, Path, Path]:
    """(settings, checkpoint, image, classes file) of a golden case."""
    case_file = root / folder / f"{name}.json"
    meta = json.loads(case_file.read_text())
    if folder == "methods":
        settings = {key: value for key, value in meta["settings"].items() if key != "method"}
        method, image = meta["method"], golden_file(case_file.parent / meta["image"])
        checkpoint = golden_file(case_file.parent / meta["checkpoint"])
    else:
        settings = dict(meta["hyper_parameters"], **({"anomaly_detector": "norm"} if folder == "init_commit" else {}))
        method, image = "scclip", golden_file(root / f"{name}_image.npy")
        checkpoint = golden_file(root / meta["checkpoint"])
    return dict(method=method, settings=settings), checkpoint, image, root / folder / f"{name}_classes.txt"


@pytest.mark.slow
@pytest.mark.parametrize("folder,name", GOLDEN_CASES, ids=[f"{f}/{n}" for f, n in GOLDEN_CASES])
def test_onnx_runtime_equals_pytorch_on_golden_case(folder, name, tmp_path):
    from scclip import SCCLIPForSegmentation

    root = golden_dir_or_none()
    if root is None:
        pytest.skip("golden data not found")
    case, checkpoint, image_file, classes = golden_case(root, folder, name)
    clip, _ = load(checkpoint, device="cpu")
    segmentor = SCCLIPForSegmentation(clip_path=str(checkpoint), name_path=str(classes), device="cpu",
                                      method=case["method"], clip_model=clip, text_cache=False, **case["settings"])
    model = tmp_path / "model"
    export_model(checkpoint, model, method=case["method"], settings=case["settings"], clip_model=clip)
    runtime = OnnxSegmenter(model, vocab=classes)
    np.testing.assert_allclose(runtime.query_features, segmentor.query_features.numpy(), atol=TEXT_ATOL, rtol=0)

    pixels = torch.from_numpy(np.load(image_file)).permute(2, 0, 1).float() / 255
    image = (pixels - MEAN) / STD
    crop = segmentor.slide_crop or max(image.shape[-2:])
    window = image[:, :crop, :crop]
    batch = torch.stack([window, window.flip(-1), -window])  # batches of 1 and 3
    for crops in (batch[:1], batch):
        np.testing.assert_allclose(runtime.dense_features(crops.numpy()), segmentor.dense_features(crops).numpy(),
                                   atol=FEATURE_ATOL, rtol=0)

    (sample,) = segmentor.predict(image[None])
    scores, labels = sample.seg_logits.data.numpy(), sample.pred_sem_seg.data[0].numpy()
    prediction = FullSize(runtime.coarse_logits(image.numpy()), tuple(image.shape[-2:]), runtime.query_to_class,
                          runtime.num_classes, runtime.logit_scale, runtime.prob_thd, runtime.area_thd,
                          runtime.pamr_steps, runtime.pamr_stride, runtime.renormalise, image=image.numpy())
    np.testing.assert_allclose(prediction.scores(), scores, atol=SCORE_ATOL, rtol=0)
    assert_labels_equal_outside_ties(prediction.labels(), labels, scores, runtime.prob_thd)


@pytest.mark.slow
def test_a_4000_pixel_wide_photo_in_bounded_memory(tmp_path):
    """Strip-wise full size: the runtime's labels equal Segmenter's on a 4000×900 photo."""
    root = golden_dir_or_none()
    if root is None:
        pytest.skip("golden data not found")
    checkpoint = golden_file(root / "clip_b16_seed0.pt")
    clip, _ = load(checkpoint, device="cpu")
    export_model(checkpoint, tmp_path / "model", settings={"anomaly_detector": "norm"}, clip_model=clip)
    rng = np.random.default_rng(2)
    photo = np.kron(rng.integers(0, 256, (9, 40, 3)), np.ones((100, 100, 1))).astype(np.uint8)  # 900×4000
    classes = "wall,cat,dog|puppy,sky"
    expected = Segmenter(checkpoint, classes=classes, clip_model=clip, text_cache=False, anomaly_detector="norm")(photo)
    runtime = OnnxSegmenter(tmp_path / "model", classes=classes)
    _, prediction = runtime.prediction(photo)
    prediction.block_bytes = 2**20  # many strips
    assert len(list(prediction.blocks())) > 10
    labels = prediction.labels()
    assert labels.shape == (900, 4000)
    assert_labels_equal_outside_ties(labels, expected.labels, expected.scores)


@pytest.mark.slow
def test_runtime_runs_in_a_fresh_venv_without_torch(tiny_export, tmp_path):
    """A virtual environment where the torch-free install of docs/deploy.md, `pip install ./runtime`, is all
    that was installed: torch cannot be imported there and `python -m scclip.runtime segment` (run outside
    the checkout) writes its files."""
    folder, _ = tiny_export
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO_ROOT / "runtime")],
                             capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, f"pip install ./runtime failed: {install.stderr[-2000:]}"
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONHOME", "VIRTUAL_ENV", "PYTHONPATH")}
    no_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True, env=env)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    image = REPO_ROOT / "scclip" / "assets" / "astronaut.jpg"
    done = subprocess.run([str(python), "-m", "scclip.runtime", "segment", "--model", str(folder), "--image", str(image),
                           "--classes", "person,sky,flag", "--out", str(tmp_path / "out"), "--save-mask"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr
    names = sorted(path.name for path in (tmp_path / "out").iterdir())
    assert names == ["astronaut_scclip.png", "astronaut_scclip_mask.json", "astronaut_scclip_mask.png"]
    shares = json.loads((tmp_path / "out" / "astronaut_scclip_mask.json").read_text())["pixel_shares"]
    assert sorted(shares) == ["flag", "person", "sky"]
