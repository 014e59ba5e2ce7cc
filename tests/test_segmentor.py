"""SCCLIPForSegmentation: its contract on inputs the golden cases do not cover, and bad input."""
import pytest
import torch
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from scclip import SCCLIPForSegmentation
from scclip.errors import InputError, VocabularyError

VOCABULARY = ["sky, cloud", "person", "rocket", "tree, grass"]


@pytest.fixture(scope="module")
def segmentor(tiny_checkpoint_path):
    return SCCLIPForSegmentation(clip_path=str(tiny_checkpoint_path), vocabulary=VOCABULARY, device="cpu")


def image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, height, width, generator=torch.Generator().manual_seed(seed))


def test_built_through_the_mmseg_registry(tiny_checkpoint_path, tmp_path):
    vocabulary_file = tmp_path / "classes.txt"
    vocabulary_file.write_text("\n".join(VOCABULARY) + "\n")
    model = MODELS.build(dict(type="SCCLIPForSegmentation", clip_path=str(tiny_checkpoint_path),
                              name_path=str(vocabulary_file), device="cpu", slide_crop=0))
    assert model.class_names == ["sky", "person", "rocket", "tree"]
    assert model.query_features.shape == (6, 32)


@pytest.mark.parametrize("size", [(100, 150), (150, 100), (224, 500), (37, 261)])
def test_any_image_size_gives_full_size_results(segmentor, size):
    (sample,) = segmentor.predict(image(*size)[None])
    assert sample.seg_logits.data.shape == (4, *size)
    assert sample.pred_sem_seg.data.shape == (1, *size)
    assert torch.isfinite(sample.seg_logits.data).all()


def test_results_come_back_at_the_original_shape(segmentor):
    resized = image(112, 168)
    sample = SegDataSample(metainfo=dict(ori_shape=(200, 300), img_shape=(112, 168)))
    (result,) = segmentor.predict(resized[None], [sample])
    assert result.pred_sem_seg.data.shape == (1, 200, 300)


def test_mixed_size_batch_through_the_preprocessor_equals_each_alone(segmentor):
    pixels = [torch.randint(0, 256, (3, 120, 180), dtype=torch.uint8),
              torch.randint(0, 256, (3, 240, 150), dtype=torch.uint8)]
    samples = [SegDataSample(metainfo=dict(ori_shape=p.shape[1:], img_shape=p.shape[1:])) for p in pixels]
    batch = segmentor.data_preprocessor(dict(inputs=pixels, data_samples=samples), False)
    together = segmentor.predict(batch["inputs"], batch["data_samples"])
    for p, result in zip(pixels, together):
        sample = SegDataSample(metainfo=dict(ori_shape=p.shape[1:], img_shape=p.shape[1:]))
        alone = segmentor.data_preprocessor(dict(inputs=[p], data_samples=[sample]), False)
        (expected,) = segmentor.predict(alone["inputs"], alone["data_samples"])
        torch.testing.assert_close(result.seg_logits.data, expected.seg_logits.data, atol=1e-5, rtol=0)


def test_whole_image_mode_and_pamr(tiny_checkpoint_path):
    plain = SCCLIPForSegmentation(clip_path=str(tiny_checkpoint_path), vocabulary=VOCABULARY, device="cpu",
                                  slide_crop=0)
    refined = SCCLIPForSegmentation(clip_path=str(tiny_checkpoint_path), vocabulary=VOCABULARY, device="cpu",
                                    slide_crop=0, pamr_steps=3)
    x = image(160, 208)[None]
    a, b = plain.predict(x)[0].seg_logits.data, refined.predict(x)[0].seg_logits.data
    assert a.shape == b.shape == (4, 160, 208)
    assert not torch.allclose(a, b)


def test_dense_features_and_anomalies(segmentor):
    features, anomalies = segmentor.dense_features(image(224, 224)[None].repeat(2, 1, 1, 1), return_anomalies=True)
    assert features.shape == (2, 196, 32)
    torch.testing.assert_close(features.norm(dim=-1), torch.ones(2, 196))
    assert all(torch.equal(a, a.sort().values) for a in anomalies)
    assert torch.equal(anomalies[0], anomalies[1])


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.randn(3, 64, 64), "B×3×H×W"),
        (torch.randn(1, 1, 64, 64), "B×3×H×W"),
        ([[0.0]], "B×3×H×W"),
        (torch.randn(1, 3, 8, 64), "smaller than one 16×16 patch"),
    ],
)
def test_bad_inputs_are_named(segmentor, bad, message):
    with pytest.raises(InputError, match=message):
        segmentor.predict(bad)


def test_vocabulary_problems_are_reported(tiny_checkpoint_path, tmp_path):
    def build(**kwargs):
        return SCCLIPForSegmentation(clip_path=str(tiny_checkpoint_path), device="cpu", **kwargs)

    with pytest.raises(VocabularyError, match="not found"):
        build(name_path=str(tmp_path / "missing.txt"))
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(VocabularyError, match="is empty"):
        build(name_path=str(empty))
    with pytest.raises(VocabularyError, match="exactly one of"):
        build()


def test_training_is_refused(segmentor):
    with pytest.raises(NotImplementedError, match="training-free"):
        segmentor.loss(torch.zeros(1, 3, 32, 32), [])


def test_unknown_precision_is_refused(tiny_checkpoint_path):
    with pytest.raises(InputError, match="precision"):
        SCCLIPForSegmentation(clip_path=str(tiny_checkpoint_path), vocabulary=VOCABULARY, precision="fp8")


@pytest.mark.slow
def test_compiled_encoder_gives_the_same_results(tiny_checkpoint_path, segmentor):
    compiled = SCCLIPForSegmentation(clip_path=str(tiny_checkpoint_path), vocabulary=VOCABULARY, device="cpu",
                                     compile=True)
    x = image(224, 336)[None]
    expected = segmentor.predict(x)[0].seg_logits.data
    torch.testing.assert_close(compiled.predict(x)[0].seg_logits.data, expected, atol=1e-5, rtol=1e-5)


def test_normalisation_follows_the_checkpoint(tiny_b16_model, tiny_checkpoint_path):
    """CLIP's statistics by default; an open_clip tag trained with others (mean = std = 0.5) gets its own."""
    openai = SCCLIPForSegmentation(clip_path=str(tiny_checkpoint_path), vocabulary=VOCABULARY, device="cpu",
                                   clip_model=tiny_b16_model)
    assert openai.data_preprocessor.mean.flatten().tolist() == pytest.approx([122.771, 116.746, 104.094])
    saved = tiny_b16_model.image_mean, tiny_b16_model.image_std
    tiny_b16_model.image_mean, tiny_b16_model.image_std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    try:
        other = SCCLIPForSegmentation(clip_path=str(tiny_checkpoint_path), vocabulary=VOCABULARY, device="cpu",
                                   clip_model=tiny_b16_model)
    finally:
        tiny_b16_model.image_mean, tiny_b16_model.image_std = saved
    assert other.data_preprocessor.mean.flatten().tolist() == [127.5] * 3
    assert other.data_preprocessor.std.flatten().tolist() == [127.5] * 3


def test_an_open_clip_tag_keys_the_text_cache_on_its_resolved_file(tiny_checkpoint_path, tiny_b16_model):
    saved = tiny_b16_model.checkpoint_path
    tiny_b16_model.checkpoint_path = tiny_checkpoint_path
    try:
        built = SCCLIPForSegmentation(clip_path="laion2b_s34b_b88k", clip_arch="ViT-B-16", vocabulary=VOCABULARY,
                                      device="cpu", clip_model=tiny_b16_model)
    finally:
        tiny_b16_model.checkpoint_path = saved
    assert built.clip_arch == "ViT-B-16" and built.query_features.shape == (6, 32)
