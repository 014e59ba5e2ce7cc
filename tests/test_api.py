"""The Python API: Segmenter(backbone, classes)(image) on every kind of input users have."""
import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as sample_data

from scclip.benchmarks import BENCHMARKS
from scclip.api import (
    INFERENCE_SCALE, SegmentationResult, Segmenter, display_names, load_backbone, parse_classes,
    resize_for_inference, vocabulary_lines,
)
from scclip.errors import CheckpointError, ImageError, InputError, VocabularyError
from scclip.methods import PUBLISHED_CALIBRATION
from scclip.visualize import palette

CLASSES = ["person, astronaut", "flag", "wall"]
REPO_ROOT = Path(__file__).resolve().parents[1]
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
    coarse_logits = segmenter.segmentor.coarse_logits

    def spy(inputs, metas):
        logits = coarse_logits(inputs, metas)
        seen.append((tuple(inputs.shape), metas[0], tuple(logits[0][0].shape)))
        return logits

    monkeypatch.setattr(segmenter.segmentor, "coarse_logits", spy)
    large = np.asarray(Image.fromarray(sample_data.astronaut()).resize((3000, 2000)))
    result = segmenter(large)
    assert seen[0][0] == (1, 3, 336, 504)
    # The segmentor's logits stay at inference size; the full size is built in strips (scclip.fullres).
    assert tuple(seen[0][1]["img_shape"]) == (336, 504) and seen[0][2][-2:] == (336, 504)
    assert result.labels.shape == (2000, 3000)
    assert callable(result._scores), "full-size scores are only computed when read"
    assert result.scores.shape == (3, 2000, 3000)


def reference(segmenter: Segmenter, image: np.ndarray):
    """What the segmentor itself predicts at full size (everything materialised, PAMR included)."""
    from mmseg.structures import SegDataSample

    resized = resize_for_inference(image, segmenter.scale)
    bgr = torch.from_numpy(np.ascontiguousarray(resized[..., ::-1].transpose(2, 0, 1)))
    sample = SegDataSample(metainfo=dict(ori_shape=image.shape[:2], img_shape=resized.shape[:2]))
    output = segmenter.segmentor.test_step(dict(inputs=[bgr], data_samples=[sample]))[0]
    return output.pred_sem_seg.data[0].numpy(), output.seg_logits.data.numpy()


@pytest.mark.parametrize("options", [
    dict(area_thd=0.3, prob_thd=0.34), dict(slide=False), dict(pamr=True, scale=(2048, 224)),
    dict(method="naclip", slide=False),
], ids=["area-prob", "whole-image", "pamr", "naclip-whole"])
def test_full_size_in_blocks_equals_the_segmentor(tiny_checkpoint_path, options):
    size = (350, 260) if options.get("pamr") else (700, 520)  # PAMR at full size is the slow part
    image = np.asarray(Image.fromarray(sample_data.astronaut()).resize(size))
    segmenter = Segmenter(tiny_checkpoint_path, classes=CLASSES, device="cpu", **options)
    result = segmenter(image)
    expected_labels, expected_scores = reference(segmenter, image)
    differ = result.labels != expected_labels
    top2 = np.sort(expected_scores, axis=0)[-2:]
    assert ((top2[1] - top2[0])[differ] <= 1e-5).all(), f"{differ.sum()} labels differ outside ties"
    np.testing.assert_allclose(result.scores, expected_scores, atol=1e-5, rtol=0)


def test_result_pictures_and_files(quick_segmenter, astronaut, tmp_path):
    result = quick_segmenter(astronaut)
    assert result.overlay().size == (160, 120)
    assert result.colours.tolist() == palette(3).tolist()
    assert abs(sum(result.shares.values()) - 1) < 1e-9
    assert {e.name for e in result.legend()} == {n for n, s in result.shares.items() if s > 0}
    assert result.picture(panel_side=256).size[0] == 3 * 256 + 4 * 8

    assert repr(result).startswith("SegmentationResult(160×120, 3 classes; ") and len(repr(result)) < 200
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
    with pytest.raises(ImageError, match=r"text\.png: not an image that can be read"):
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


def test_class_list_mistakes_are_named():
    for text, shown in (("cat;dog", "';'"), ("cat / dog", "'/'"), ("cat|dog", r"'\|' \(it joins synonyms of one class\)")):
        with pytest.raises(VocabularyError, match=f"give a single class .*not {shown}, e.g. 'cat,dog'"):
            vocabulary_lines(text)
    with pytest.raises(VocabularyError, match=r"the classes, class 2 repeats class 1 \('cat'\)"):
        vocabulary_lines("Cat,cat")
    assert vocabulary_lines("sky") == ["sky"]  # one class without another separator is taken as meant


def test_bad_thresholds(tiny_checkpoint_path):
    for bad in (-0.1, 5):
        with pytest.raises(InputError, match=f"prob_thd={bad} must lie in \\[0, 1\\]"):
            Segmenter(tiny_checkpoint_path, classes="a,b", device="cpu", prob_thd=bad)


def test_benchmark_vocabularies_show_the_benchmark_names():
    voc = [line.strip() for line in BENCHMARKS["voc21"].vocabulary.read_text().splitlines()]
    assert voc[0].startswith("sky, wall")
    names = display_names(voc + ["rainbow, arc"])
    assert names[:3] == ["background", "aeroplane", "bicycle"] and names[-1] == "rainbow" and len(names) == 22
    stuff = [line.strip() for line in BENCHMARKS["coco_stuff164k"].vocabulary.read_text().splitlines()]
    assert display_names(stuff)[0] == "person" and len(display_names(stuff)) == 171
    assert display_names(["sky, wall", "cat"]) == ["sky", "cat"]  # not a benchmark vocabulary


def test_saving_needs_usable_names(quick_segmenter, astronaut, tmp_path):
    result = quick_segmenter(astronaut)
    with pytest.raises(InputError, match=r"cannot write a picture to .*out: its name needs a picture suffix"):
        result.save(tmp_path / "out")
    with pytest.raises(InputError, match=r"name it m\.png instead of m\.jpg"):
        result.save_mask(tmp_path / "m.jpg")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary file left
    png, report = result.save_mask(tmp_path / "m")
    assert (png.name, report.name) == ("m.png", "m.json")


def test_published_settings_follow_depth(tiny_l14_checkpoint_path, tiny_checkpoint_path):
    assert load_backbone("ViT-B/16") is None and load_backbone("ViT-L/14@336px") is None  # the segmentor downloads
    assert len(load_backbone(tiny_checkpoint_path, "cpu").visual.transformer.resblocks) == 12
    assert len(load_backbone(tiny_l14_checkpoint_path, "cpu").visual.transformer.resblocks) == 24
    l14 = Segmenter(tiny_l14_checkpoint_path, classes="a,b", device="cpu")
    config = l14.segmentor.encoder.config
    assert (config.pre_adjust_idx, config.post_adjust_idx, config.multi_start_idx, config.multi_end_idx,
            config.res_cls) == tuple(PUBLISHED_CALIBRATION[24].values())
    assert l14(np.zeros((40, 30, 3), np.uint8)).labels.shape == (40, 30)


def test_scaled_depth_end_to_end(tmp_path):
    from scclip.clip.architectures import random_clip, save_checkpoint

    model = random_clip("ViT-B/16", seed=2, vision_layers=4, vision_width=64, transformer_width=64,
                        transformer_heads=1, transformer_layers=1, embed_dim=32)
    shallow = Segmenter(save_checkpoint(model, tmp_path / "four_blocks.pt"), classes="a,b", device="cpu")
    assert len(shallow.segmentor.encoder.visual.transformer.resblocks) == 4
    assert shallow.segmentor.encoder.config.pre_adjust_idx == 2  # round(8 · 4/12)
    assert shallow(np.zeros((40, 30, 3), np.uint8)).labels.shape == (40, 30)


def test_options_reach_the_segmentor(tiny_checkpoint_path):
    configured = Segmenter(tiny_checkpoint_path, classes="a,b", device="cpu", pamr=True, prob_thd=0.7, slide=False,
                          logit_scale=50, pre_adjust_idx=5, attention_calibration=False)
    model = configured.segmentor
    assert model.post.pamr_steps == 10
    assert (model.post.prob_thd, model.slide_crop, model.post.logit_scale) == (0.7, 0, 50)
    assert model.method_settings["pre_adjust_idx"] == 5 and model.method_settings["attention_calibration"] is False
    result = configured(np.zeros((40, 30, 3), np.uint8))
    assert (result.labels[result.scores.max(axis=0) < 0.7] == 0).all()


def test_methods(tiny_checkpoint_path, astronaut):
    clearclip = Segmenter(tiny_checkpoint_path, classes=CLASSES, device="cpu", method="clearclip", scale=(2048, 224))
    assert clearclip.method == "clearclip" and clearclip(astronaut).labels.shape == (120, 160)
    with pytest.raises(InputError, match="pre_adjust_idx"):  # calibration indices are SC-CLIP's alone
        Segmenter(tiny_checkpoint_path, classes=CLASSES, device="cpu", method="clearclip", pre_adjust_idx=5)


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
    assert len(jit.segmentor.encoder.visual.transformer.resblocks) == 12
    assert np.allclose(jit(astronaut).scores, quick_segmenter(astronaut).scores, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1), (2, 5000), (1, 300)])
def test_very_thin_images_are_segmented(quick_segmenter, shape):
    """Fitting 1×5000 to the inference size gave a 0-pixel side (an OpenCV traceback), 2×5000 a
    side under one patch; the thin side is stretched to one patch and the prediction comes back at
    the image's own size."""
    image = np.asarray(Image.fromarray(sample_data.astronaut()).resize(shape[::-1]))
    result = quick_segmenter(image)
    assert result.labels.shape == shape and result.scores.shape == (len(CLASSES), *shape)


def test_thin_images_whole_image_mode(tiny_checkpoint_path):
    whole = Segmenter(tiny_checkpoint_path, classes=CLASSES, device="cpu", slide=False)
    assert whole(np.zeros((1, 5000, 3), np.uint8)).labels.shape == (1, 5000)


def test_resize_never_gives_a_side_under_min_side():
    assert resize_for_inference(np.zeros((1, 5000, 3), np.uint8)).shape == (1, 2048, 3)
    assert resize_for_inference(np.zeros((1, 5000, 3), np.uint8), min_side=16).shape == (16, 2048, 3)
    assert resize_for_inference(np.zeros((5000, 2, 3), np.uint8), min_side=14).shape == (2048, 14, 3)
    assert resize_for_inference(np.zeros((120, 160, 3), np.uint8), min_side=16).shape == (336, 448, 3)


def test_a_given_name_of_another_class_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("sky, wall\nperson, man\n")
    with pytest.raises(VocabularyError) as caught:
        vocabulary_lines("Person,tree", tmp_path / "vocab.txt")
    assert str(caught.value) == (f"class name 'Person' is already in vocabulary file {tmp_path / 'vocab.txt'} "
                                 "(line 2: 'person, man'): give each name once, e.g. drop it from the classes")
    with pytest.raises(VocabularyError, match=r"'MAN' is already in vocabulary file .*line 2"):
        vocabulary_lines(["tree", "guy, MAN"], tmp_path / "vocab.txt")
    with pytest.raises(VocabularyError, match=r"class name 'CAT' is given in two classes \('cat' and 'dog, CAT'\)"):
        vocabulary_lines("cat,dog|CAT")
    # A vocabulary file alone may share a name between classes (the published COCO-Object one does).
    (tmp_path / "shared.txt").write_text("person, man\nman, rider\n")
    assert vocabulary_lines("tree", tmp_path / "shared.txt") == ["person, man", "man, rider", "tree"]


def test_too_long_class_name_is_refused_before_the_model_loads(tmp_path):
    fits, too_long = "word " * 66, " ".join(["word"] * 72)  # the longest template adds 9 tokens, + start and end
    assert vocabulary_lines(["cat", fits]) == ["cat", fits]
    with pytest.raises(VocabularyError) as caught:
        Segmenter(tmp_path / "no_checkpoint_here.pt", classes=["cat", f"dog, {too_long}"])
    message = str(caught.value)
    assert message.startswith("class name 'word word word") and "..." in message
    assert "is 6 tokens too long: in the prompt 'a jpeg corrupted photo of the {}.' it takes 83 tokens, " \
           "CLIP reads 77: shorten it by at least 6 tokens" in message
