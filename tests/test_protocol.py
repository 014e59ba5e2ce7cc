"""One protocol, two backends (scclip/protocol.py): `Segmenter` and `OnnxSegmenter` offer the same methods with
the same parameters; a call's options give what building with them gives; a class embedding is encoded once and
serves calls and other segmenters of the same model; settings a call cannot change are refused in one line."""
import inspect

import numpy as np
import pytest

from scclip.api import Segmenter
from scclip.errors import InputError
from scclip.protocol import ClassEmbedding, SegmenterProtocol
from scclip.runtime import OnnxSegmenter
from scclip.settings import check_call_settings, check_settings
from test_onnx import tiny_export  # noqa: F401  (a fixture)

CLASSES = "cat,dog|puppy,sky"
OPTIONS = dict(pamr=True, prob_thd=0.4, area_thd=0.2, pamr_stride=(2, 4))


def photo(seed: int = 3) -> np.ndarray:
    """A 96×144 photo of flat 24-pixel blocks (the tiny model sees 336×504 windows of it)."""
    return np.kron(np.random.default_rng(seed).integers(0, 256, (4, 6, 3)), np.ones((24, 24, 1))).astype(np.uint8)


@pytest.fixture(scope="module")
def segmenter(tiny_b16_model) -> Segmenter:
    return Segmenter("tiny.pt", classes=CLASSES, clip_model=tiny_b16_model, text_cache=False)


def assert_same(first, second) -> None:
    assert first.class_names == second.class_names
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.scores, second.scores)


def test_both_backends_offer_the_protocol_with_the_same_parameters(segmenter, tiny_export):
    runtime = OnnxSegmenter(tiny_export[0], classes=CLASSES)
    for name in ("embed", "predictions", "prediction", "batch", "__call__"):
        ours, theirs = (inspect.signature(getattr(kind, name)).parameters for kind in (Segmenter, OnnxSegmenter))
        assert [(p.name, p.kind) for p in ours.values()] == [(p.name, p.kind) for p in theirs.values()], name
    assert isinstance(segmenter, SegmenterProtocol) and isinstance(runtime, SegmenterProtocol)
    assert isinstance(segmenter.classes, ClassEmbedding) and isinstance(runtime.classes, ClassEmbedding)
    with pytest.raises(InputError, match="encoded by another model .*onnx:.*embed them with this segmenter"):
        segmenter(photo(), runtime.classes)
    with pytest.raises(InputError, match="must be a ClassEmbedding .* not str: embed them first"):
        runtime(photo(), "cat,dog")


def test_options_of_a_call_equal_building_with_them_on_pytorch(segmenter, tiny_b16_model):
    built = Segmenter("tiny.pt", classes=CLASSES, clip_model=tiny_b16_model, text_cache=False,
                      pamr=True, prob_thd=0.4, area_thd=0.2, pamr_stride=(2, 4))
    image = photo()
    assert_same(segmenter(image, **OPTIONS), built(image))
    assert_same(built(image, pamr=False, prob_thd=0.0, area_thd=None), segmenter(image))  # and back
    # A call's options last for that call only.
    assert segmenter.segmentor.post.pamr_steps == 0
    (first, second) = segmenter.batch([image, photo(4)], prob_thd=0.4)
    assert_same(first, segmenter(image, prob_thd=0.4))


def test_options_of_a_call_equal_building_with_them_on_onnx_runtime(tiny_export):
    folder, record = tiny_export
    runtime = OnnxSegmenter(folder, classes=CLASSES)
    built = OnnxSegmenter(folder, classes=CLASSES, pamr=True, prob_thd=0.4)
    image = photo()
    assert_same(runtime(image, pamr=True, prob_thd=0.4), built(image))
    assert record["settings"]["area_thd"] == 0.1 and 2 in runtime(image).labels  # sky: 22% of the foreground
    raised = runtime(image, area_thd=0.3)
    assert 2 not in raised.labels and raised.scores[2].max() == 0
    assert_same(runtime.batch([image], area_thd=0.3)[0], raised)
    assert 2 in runtime(image).labels  # the call's threshold was that call's only


def test_an_embedding_serves_calls_and_other_segmenters_of_the_same_model(segmenter, tiny_b16_model, monkeypatch):
    import scclip.segmentor

    other = Segmenter("tiny.pt", classes="tree, wall", clip_model=tiny_b16_model, text_cache=False)
    encoded = []
    encode = scclip.segmentor.encode_queries
    monkeypatch.setattr(scclip.segmentor, "encode_queries",
                        lambda model, queries, *args, **kwargs: encoded.append(list(queries)) or encode(model, queries, *args, **kwargs))
    assert segmenter.embed(CLASSES) is segmenter.classes and not encoded  # the built classes: nothing encoded
    embedding = other.embed(CLASSES)
    assert encoded == [["cat", "dog", "puppy", "sky"]] and embedding.class_names == ("cat", "dog", "sky")
    image = photo()
    assert_same(other(image, embedding), segmenter(image))
    assert_same(segmenter(image, other.classes), other(image))  # the other segmenter's classes, here
    assert other.class_names == ["tree", "wall"]  # a call's classes are that call's only


def test_onnx_embedding_equals_building_with_the_classes(tiny_export):
    runtime = OnnxSegmenter(tiny_export[0], classes="tree")
    built = OnnxSegmenter(tiny_export[0], classes=CLASSES)
    embedding = runtime.embed(CLASSES)
    np.testing.assert_array_equal(embedding.query_features, built.query_features)
    assert_same(runtime(photo(), embedding, pamr=True), built(photo(), pamr=True))


def test_settings_a_call_cannot_take_are_refused_in_one_line_as_at_build_time(segmenter, tiny_b16_model):
    with pytest.raises(InputError, match="'slide_crop' is not a per-call option .* give it when the model is built"):
        segmenter(photo(), slide_crop=0)
    with pytest.raises(InputError, match=r"prob_thd=2 must lie in \[0, 1\]"):
        segmenter(photo(), prob_thd=2)
    with pytest.raises(InputError, match="pamr='yes' must be True or False"):
        segmenter(photo(), pamr="yes")
    for method, values in (("resclip", {"area_thd": 0.1}), ("proxyclip", {"pamr_steps": 10})):
        with pytest.raises(InputError) as at_build:
            check_settings(method, values)
        with pytest.raises(InputError) as per_call:
            check_call_settings(method, values)
        assert str(per_call.value) == str(at_build.value) and "cannot take" in str(at_build.value)
    resclip = Segmenter("tiny.pt", classes="cat,sky", clip_model=tiny_b16_model, text_cache=False, method="resclip")
    with pytest.raises(InputError, match="method 'resclip' cannot take area_thd=0.1: its release cannot apply it"):
        resclip(photo(), area_thd=0.1)
    assert resclip(photo(), pamr=True).labels.shape == (96, 144)
