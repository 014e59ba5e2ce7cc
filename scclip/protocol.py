"""One protocol, two backends: a loaded model, a class embedding, and a call (docs/api.md#three-lifetimes).

As SAM's predictor separates the image embedding from the prompts, a segmenter separates what lives
long from what each request changes:
- the loaded model: backbone, method and every setting that changes the dense features, loaded once
  (`scclip.Segmenter` on PyTorch, `scclip.runtime.OnnxSegmenter` on an exported folder);
- a `ClassEmbedding`: a vocabulary's text features, encoded once by `embed` and reusable across calls
  and across segmenters of the same model (the web page keeps one model per method and many of these);
- a call: images, an embedding (default: the classes the segmenter was built with) and the per-call
  options, which act after the dense features: `prob_thd`, `area_thd`, `pamr_steps`, `pamr_stride`
  and the switch `pamr` (`scclip.settings.CALL_SETTINGS`). A call with options gives what a segmenter
  built with them gives; an option the method refuses is refused in the line it gets at build time.

Both backends satisfy `SegmenterProtocol` with the same method and parameter names and return the same
`SegmentationResult`. Standard library only (and the torch-free result type), so the runtime reads it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import InputError
from .result import SegmentationResult
from .settings import CALL_SETTINGS, PAMR_ON_STEPS, check_call_settings


@dataclass(frozen=True, eq=False)
class ClassEmbedding:
    """A vocabulary encoded by one model: what a call needs of its classes.

    Attributes:
        lines: the vocabulary lines ('name, synonym, ...' per class).
        class_names: the name shown for each class.
        query_features: Q×D normalised text features, in the backend's array type.
        query_to_class: the class of each of the Q queries (names and synonyms), in the backend's array type.
        model: which model encoded it; a segmenter refuses another model's embedding.
    """

    lines: tuple[str, ...]
    class_names: tuple[str, ...]
    query_features: Any
    query_to_class: Any
    model: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@runtime_checkable
class SegmenterProtocol(Protocol):
    """What `scclip.Segmenter` and `scclip.runtime.OnnxSegmenter` both offer (tests/test_protocol.py checks it)."""

    method: str

    def embed(self, classes: Sequence[str] | str | None = None, vocab: Any = None) -> ClassEmbedding:
        """The text features of these classes (the same arguments as at build time), encoded once."""

    def predictions(self, images: Sequence[Any], classes: ClassEmbedding | None = None,
                    **options: Any) -> list[tuple[Any, Any]]:
        """Each image as read and its full-size prediction (labels and scores computed when asked)."""

    def prediction(self, image: Any, classes: ClassEmbedding | None = None, **options: Any) -> tuple[Any, Any]:
        """One image as read and its full-size prediction."""

    def batch(self, images: Sequence[Any], classes: ClassEmbedding | None = None,
              **options: Any) -> list[SegmentationResult]:
        """Several images, each segmented as alone."""

    def __call__(self, image: Any, classes: ClassEmbedding | None = None, **options: Any) -> SegmentationResult:
        """One image."""


def call_settings(method: str, model: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The post-processing settings of one call: the model's (`CALL_SETTINGS`), with the call's options.

    `pamr` is a switch, as at build time: True is the model's PAMR steps, or `PAMR_ON_STEPS` where it
    has none; False is none; `pamr_steps` given beside it wins. Each option is checked under `method`
    (`check_call_settings`) before anything runs.
    """
    options = dict(options)
    if "pamr" in options:
        pamr = options.pop("pamr")
        if not isinstance(pamr, bool):
            raise InputError(f"pamr={pamr!r} must be True or False (pamr_steps sets the number of steps)")
        options.setdefault("pamr_steps", (model["pamr_steps"] or PAMR_ON_STEPS) if pamr else 0)
    check_call_settings(method, options)
    return {**{name: model[name] for name in CALL_SETTINGS}, **options}


def chosen_embedding(classes: ClassEmbedding | None, own: ClassEmbedding) -> ClassEmbedding:
    """The embedding a call runs with: `classes`, checked to come from the same model as `own`; else `own`."""
    if classes is None:
        return own
    if not isinstance(classes, ClassEmbedding):
        raise InputError(f"classes of a call must be a ClassEmbedding (from segmenter.embed(...)), "
                         f"not {type(classes).__name__}: embed them first")
    if classes.model != own.model:
        raise InputError(f"these classes were encoded by another model ({classes.model}), not {own.model}: "
                         "embed them with this segmenter")
    return classes
