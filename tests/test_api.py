"""The Python API: Segmenter(backbone, classes)(image) on every kind of input users have."""
import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as sample_data

from scclip.api import (
    INFERENCE_SCALE, PUBLISHED_SETTINGS, SegmentationResult, Segmenter, load_backbone, calibration_settings,
    parse_classes, resize_for_inference, vocabulary_lines,
)
from scclip.calibration import CalibrationConfig
from scclip.errors import CheckpointError, ImageError, InputError, VocabularyError
from scclip.visualize import palette

CLASSES = ["person, astronaut", "flag", "wall"]
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint_path) -> Segmenter:
    return Segmenter(tiny_checkpoint_path, classes=CLASSES, device="cpu")


@pytest.fixture(scope="module")
def quick_segmenter(segmenter) -> Segmenter:
    """The same model with a smaller inference size (2 windows instead of 6): for tests about reading inputs."""
    quick = copy.copy(segmenter)
    quick.scale = (2048, 224)
    return quick


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    """The astronaut photo cropped to 120×160 (H×W): non-square, small enough to be fast."""
    return np.asarray(Image.fromarray(sample_data.astronaut()).resize((160, 160)))[20:140]


def check_result(result: SegmentationResult, height: int, width: int) -> None:
    assert result.labels.shape == (height, width) and result.labels.dtype == np.int64
    assert result.scores.shape == (len(CLASSES), height, width) and result.scores.dtype == np.float32
    assert result.image.shape == (height, width, 3)
    assert ((result.scores >= 0) & (result.scores <= 1)).all()
    assert np.array_equal(result.labels, result.scores.argmax(axis=0))
    assert result.class_names == ["person", "flag", "wall"]


def save_kind(kind: str, image: np.ndarray, folder) -> tuple[object, tuple[int, int]]:
    """The photo as one input kind, and the (height, width) the result must have."""
    height, width = image.shape[:2]
    pil = Image.fromarray(image)
    path = folder / f"{kind}.img"
    if kind in ("jpeg", "png", "webp", "bmp"):
        path = path.with_suffix("." + kind)
        pil.save(path)
    elif kind == "grayscale":
        pil.convert("L").save(path := path.with_suffix(".png"))
    elif kind == "rgba":
        rgba = np.dstack([image, np.full((height, width), 200, np.uint8)])
        Image.fromarray(rgba).save(path := path.with_suffix(".png"))
    elif kind == "png16":
        Image.fromarray(np.asarray(pil.convert("L")).astype(np.uint16) * 257).save(path := path.with_suffix(".png"))
    elif kind == "cmyk":
        pil.convert("CMYK").save(path := path.with_suffix(".jpg"))
    elif kind in ("exif6", "exif8"):
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = int(kind[-1])
        pil.save(path := path.with_suffix(".jpg"), exif=exif)
        return path, (width, height)  # displayed rotated by 90°
    elif kind == "pil":
        return pil, (height, width)
    elif kind == "uint8":
        return image, (height, width)
    elif kind == "uint16":
        return image.astype(np.uint16) * 257, (height, width)
    elif kind == "float":
        return image / 255.0, (height, width)
    elif kind == "gray_array":
        return image[..., 0], (height, width)
    return path, (height, width)


KINDS = ["jpeg", "png", "webp", "bmp", "grayscale", "rgba", "png16", "cmyk", "exif6", "exif8",
         "pil", "uint8", "uint16", "float", "gray_array"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_input_kind(quick_segmenter, astronaut, tmp_path, kind):
    source, (height, width) = save_kind(kind, astronaut, tmp_path)
    check_result(quick_segmenter(source), height, width)


def test_same_pixels_same_result(quick_segmenter, astronaut, tmp_path):
    Image.fromarray(astronaut).save(tmp_path / "a.png")
    from_file, from_array = quick_segmenter(tmp_path / "a.png"), quick_segmenter(astronaut)
    assert np.array_equal(from_file.labels, from_array.labels)
    assert np.array_equal(from_file.scores, from_array.scores)


def test_exif_rotation_is_applied_before_segmenting(quick_segmenter, astronaut, tmp_path):
    source, _ = save_kind("exif6", astronaut, tmp_path)
    result = quick_segmenter(source)
    assert np.abs(result.image.astype(int) - np.rot90(astronaut, k=-1)).mean() < 8


def test_preprocessing_matches_the_benchmark_pipeline(segmenter, astronaut, tmp_path):
    """Same input tensor and metas as mmseg's test pipeline (load, Resize(2048, 336), pack)."""
    from mmcv.transforms import LoadImageFromFile, Resize
    from mmseg.datasets.transforms import PackSegInputs

    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    loaded = LoadImageFromFile()(dict(img_path=str(path)))
    packed = PackSegInputs()(Resize(scale=INFERENCE_SCALE, keep_ratio=True)(loaded))
    expected = segmenter.segmentor.test_step(dict(inputs=[packed["inputs"]], data_samples=[packed["data_samples"]]))[0]
    result = segmenter(path)
    assert tuple(expected.seg_logits.shape) == astronaut.shape[:2]
    assert np.allclose(result.scores, expected.seg_logits.data.numpy(), atol=1e-6)


def test_resize_fits_the_benchmark_scale():
    assert resize_for_inference(np.zeros((120, 160, 3), np.uint8)).shape == (336, 448, 3)  # small: up
    assert resize_for_inference(np.zeros((2000, 3000, 3), np.uint8)).shape == (336, 504, 3)
    assert resize_for_inference(np.zeros((300, 4000, 3), np.uint8)).shape == (154, 2048, 3)  # long side bound


def test_tiny_image(segmenter):
    check_result(segmenter(sample_data.astronaut()[200:250, 200:270]), 50, 70)


def test_large_image_is_resized_for_inference_and_predicted_at_full_size(segmenter, monkeypatch):
    seen = []
    predict = segmenter.segmentor.predict

    def spy(inputs, data_samples=None):
        seen.append((tuple(inputs.shape), data_samples[0].metainfo))
        return predict(inputs, data_samples)

    monkeypatch.setattr(segmenter.segmentor, "predict", spy)
    large = np.asarray(Image.fromarray(sample_data.astronaut()).resize((3000, 2000)))
    result = segmenter(large)
    assert seen[0][0] == (1, 3, 336, 504)
    assert tuple(seen[0][1]["ori_shape"]) == (2000, 3000) and tuple(seen[0][1]["img_shape"]) == (336, 504)
    assert result.labels.shape == (2000, 3000) and result.scores.shape == (3, 2000, 3000)


def test_result_pictures_and_files(quick_segmenter, astronaut, tmp_path):
    result = quick_segmenter(astronaut)
    assert result.overlay().size == (160, 120)
    assert result.colours.tolist() == palette(3).tolist()
    assert abs(sum(result.shares.values()) - 1) < 1e-9
    assert {e.name for e in result.legend()} == {n for n, s in result.shares.items() if s > 0}
    assert result.picture(panel_side=256).size[0] == 3 * 256 + 4 * 8

    saved = result.save(tmp_path / "out" / "picture.jpg")
    assert Image.open(saved).format == "JPEG" and Image.open(saved).size == result.picture().size
    png, report = result.save_mask(tmp_path / "out" / "mask.png")
    mask = Image.open(png)
    assert mask.mode == "P" and np.array_equal(np.asarray(mask), result.labels)
    summary = json.loads(report.read_text())
    assert summary["classes"] == ["person", "flag", "wall"]
    assert summary["pixel_shares"] == pytest.approx(result.shares, abs=1e-6)
    assert summary["size"] == {"width": 160, "height": 120}


def test_repeated_calls_reuse_the_model(quick_segmenter, astronaut):
    model = quick_segmenter.segmentor
    first, second = quick_segmenter(astronaut), quick_segmenter(astronaut)
    assert quick_segmenter.segmentor is model
    assert np.array_equal(first.scores, second.scores)


def test_bad_images(quick_segmenter, tmp_path):
    with pytest.raises(ImageError, match="not found"):
        quick_segmenter(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageError, match=r"text\.png is not an image"):
        quick_segmenter(tmp_path / "text.png")
    with pytest.raises(InputError, match="shape"):
        quick_segmenter(np.zeros((4, 4, 2), np.uint8))


def test_classes_and_vocabulary_files(tmp_path):
    assert parse_classes("cat, dog|puppy ,sky,") == ["cat", "dog, puppy", "sky"]
    (tmp_path / "vocab.txt").write_text("background, wall\nperson, astronaut\n")
    assert vocabulary_lines("flag", tmp_path / "vocab.txt") == ["background, wall", "person, astronaut", "flag"]
    assert vocabulary_lines(["a, b", "c"]) == ["a, b", "c"]
    for empty in ("", " , ,", []):
        with pytest.raises(VocabularyError, match="no class names"):
            vocabulary_lines(empty)
    with pytest.raises(VocabularyError, match="repeats"):
        vocabulary_lines("cat,cat")
    with pytest.raises(VocabularyError, match="not found"):
        vocabulary_lines(vocab=tmp_path / "missing.txt")


def test_published_settings_follow_depth(tiny_l14_checkpoint_path, tiny_checkpoint_path):
    assert load_backbone("ViT-B/16") == (12, None) and load_backbone("ViT-L/14@336px") == (24, None)
    assert load_backbone(tiny_checkpoint_path, "cpu")[0] == 12
    assert load_backbone(tiny_l14_checkpoint_path, "cpu")[0] == 24
    l14 = Segmenter(tiny_l14_checkpoint_path, classes="a,b", device="cpu")
    assert l14.settings == PUBLISHED_SETTINGS[24]
    config = l14.segmentor.encoder.config
    assert (config.pre_adjust_idx, config.post_adjust_idx, config.multi_start_idx, config.multi_end_idx,
            config.res_cls) == (16, 6, 8, 19, 0.1)
    assert "ViT-L/14" in l14.settings_note
    assert l14(np.zeros((40, 30, 3), np.uint8)).labels.shape == (40, 30)


def test_other_depths_are_scaled_and_stated():
    settings, note = calibration_settings(6)
    assert settings == dict(pre_adjust_idx=4, post_adjust_idx=2, multi_start_idx=2, multi_end_idx=5, res_cls=0.3)
    assert "6 blocks" in note and "scaled" in note and "pre_adjust_idx 4" in note
    assert calibration_settings(32)[0]["res_cls"] == 0.1
    for depth in range(2, 49):
        CalibrationConfig(**calibration_settings(depth)[0]).check(depth)  # always fits the network
    with pytest.raises(CheckpointError, match="at least 2 blocks"):
        calibration_settings(1)


def test_scaled_depth_end_to_end(tmp_path):
    from scclip.clip.architectures import random_clip, save_checkpoint

    model = random_clip("ViT-B/16", seed=2, vision_layers=4, vision_width=64, transformer_width=64,
                        transformer_heads=1, transformer_layers=1, embed_dim=32)
    shallow = Segmenter(save_checkpoint(model, tmp_path / "four_blocks.pt"), classes="a,b", device="cpu")
    assert shallow.depth == 4 and shallow.segmentor.encoder.config.pre_adjust_idx == 2  # round(8 · 4/12)
    assert shallow(np.zeros((40, 30, 3), np.uint8)).labels.shape == (40, 30)


def test_options_reach_the_segmentor(tiny_checkpoint_path):
    configured = Segmenter(tiny_checkpoint_path, classes="a,b", device="cpu", pamr=True, prob_thd=0.7, slide=False,
                          logit_scale=50, pre_adjust_idx=5)
    model = configured.segmentor
    assert (model.pamr_steps, model.prob_thd, model.slide_crop, model.logit_scale) == (10, 0.7, 0, 50)
    assert model.encoder.config.pre_adjust_idx == 5 and configured.settings["pre_adjust_idx"] == 5
    result = configured(np.zeros((40, 30, 3), np.uint8))
    assert (result.labels[result.scores.max(axis=0) < 0.7] == 0).all()


def test_bad_backbones(tmp_path):
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(CheckpointError, match=r"notes\.txt"):
        Segmenter(tmp_path / "notes.txt", classes="a")
    with pytest.raises(CheckpointError, match="not found"):
        Segmenter(tmp_path / "missing.pt", classes="a")
    with pytest.raises(CheckpointError, match="needs a ViT"):
        Segmenter("RN50", classes="a")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not a CLIP ViT state dict: missing keys visual\.conv1"):
        Segmenter(tmp_path / "other.pt", classes="a")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda(tiny_checkpoint_path):
    with pytest.raises(InputError, match="CUDA is not available"):
        Segmenter(tiny_checkpoint_path, classes="a", device="cuda")


def test_torchscript_checkpoint(tiny_jit_checkpoint_path, quick_segmenter, astronaut):
    jit = Segmenter(tiny_jit_checkpoint_path, classes=CLASSES, device="cpu", scale=quick_segmenter.scale)
    assert jit.depth == 12 and jit.settings == PUBLISHED_SETTINGS[12]
    assert np.allclose(jit(astronaut).scores, quick_segmenter(astronaut).scores, atol=1e-5)
