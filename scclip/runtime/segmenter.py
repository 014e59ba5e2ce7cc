"""`OnnxSegmenter`: `scclip.api.Segmenter` on an exported model folder, with ONNX Runtime and numpy only."""
from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from ..bpe import token_rows, tokenizer_from_file
from ..errors import CheckpointError, InputError
from ..imageio import ImageSource, read_image
from ..protocol import ClassEmbedding, call_settings, chosen_embedding
from ..result import SegmentationResult
from ..settings import DEFAULTS, PAMR_ON_STEPS
from ..vocabulary import Vocabulary, vocabulary_lines
from ..windows import patch_padding, window_batches
from . import numerics
from .folder import ModelFolder
from .fullsize import FullSize

DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class OnnxSegmenter:
    """Open-vocabulary segmentation of single images with an exported model (`scclip export`), without torch.

    The same pipeline as `Segmenter`: keep-ratio resize, CLIP normalisation, the method's dense features
    (ONNX), window logits, full-size post-processing in bounded memory; it returns the same
    `SegmentationResult`, with the same protocol (`scclip.protocol`): other classes are encoded once with
    `embed` and passed to a call, and a call's options (`prob_thd`, `area_thd`, `pamr`, `pamr_steps`,
    `pamr_stride`) override the built ones for that call. Everything the maths needs comes from the
    folder's model.json; the folder is refused in one line when a file is missing or altered.

    Args:
        model: the exported model folder.
        classes: class names, each 'name' or 'name, synonym, ...', or one string 'cat,dog|puppy,sky'.
        vocab: a vocabulary file or a shipped benchmark's name; combined with `classes`.
        providers: ONNX Runtime execution providers, best first (default: CPU); e.g.
            ['CUDAExecutionProvider', 'CPUExecutionProvider'] on a GPU build of onnxruntime.
        pamr: None keeps the exported setting; True refines with PAMR (10 steps unless the export set some).
        prob_thd: None keeps the exported setting.
        slide: None keeps the exported windows; True uses them (224 when the export ran whole images);
            False encodes the whole image at once (the graph takes any size).
        crop_batch_size: windows per image-encoder call; text_batch_size: prompts per text-encoder call.
        threads: ONNX Runtime's threads per graph (None: its default, one per physical core).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        classes: Sequence[str] | str | None = None,
        vocab: str | os.PathLike | None = None,
        providers: Sequence[str] | None = None,
        pamr: bool | None = None,
        prob_thd: float | None = None,
        slide: bool | None = None,
        crop_batch_size: int = 16,
        text_batch_size: int = 256,
        threads: int | None = None,
    ) -> None:
        self.folder = ModelFolder.open(model)
        meta = self.folder.meta
        settings = meta["settings"]
        if prob_thd is not None and not 0 <= prob_thd <= 1:
            raise InputError(f"prob_thd={prob_thd} must lie in [0, 1]: it is compared with class probabilities")
        if crop_batch_size < 1 or text_batch_size < 1:
            raise InputError(f"crop_batch_size={crop_batch_size} and text_batch_size={text_batch_size} must be at least 1")
        self.method = meta["method"]
        self.patch_size = int(meta["patch_size"])
        self.scale = tuple(meta["resize_scale"])
        self.mean = meta["normalisation"]["mean"]
        self.std = meta["normalisation"]["std"]
        self.logit_scale = float(settings["logit_scale"])
        self.prob_thd = float(settings["prob_thd"] if prob_thd is None else prob_thd)
        self.area_thd = settings["area_thd"]
        self.pamr_steps = int(settings["pamr_steps"] if pamr is None else (settings["pamr_steps"] or PAMR_ON_STEPS) * pamr)
        self.pamr_stride = tuple(settings["pamr_stride"])
        exported_crop = int(settings["slide_crop"])
        self.slide_crop = exported_crop if slide is None else (exported_crop or DEFAULTS["slide_crop"]) * bool(slide)
        self.slide_stride = int(settings["slide_stride"])
        self.pad_to_patch = bool(settings["pad_to_patch"])
        # Checked by the folder's schema; exports before these fields: features on the patch grid, windows
        # padded to the patch with pad_to_patch.
        self.feature_stride = int(meta.get("feature_stride", self.patch_size))
        self.pad_multiple = int(meta.get("pad_multiple", self.patch_size if self.pad_to_patch else 0))
        self.renormalise = bool(meta.get("renormalise_scores", False))
        self.resize_through_input = bool(meta.get("resize_through_input", False))
        self.crop_batch_size = crop_batch_size
        self.text_batch_size = text_batch_size
        self.providers = list(providers or DEFAULT_PROVIDERS)
        self.threads = threads
        self.image_session = self._session(meta["graphs"]["image"]["file"])
        self.text_session = self._session(meta["graphs"]["text"]["file"])
        self.model_key = f"onnx:{self.folder.path.resolve()}"
        self.classes = self.embed(classes, vocab)

    def _session(self, name: str) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        file = self.folder.file(name)
        try:
            return ort.InferenceSession(str(file), options, providers=self.providers)
        except ValueError as error:  # an unknown provider name
            raise InputError(f"providers={self.providers}: {' '.join(str(error).split())[:200]}") from None
        except Exception as error:  # ONNX Runtime's own: Fail, InvalidGraph, InvalidProtobuf, ... (not RuntimeErrors)
            if not type(error).__module__.startswith("onnxruntime"):
                raise
            reason = " ".join(str(error).split())[:200]
            raise CheckpointError(f"{file} is not a graph ONNX Runtime can load ({reason}): export the model again") from None

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.class_names)

    @property
    def colours(self) -> list:
        from ..visualize import palette

        return palette(self.num_classes)

    @property
    def query_features(self) -> np.ndarray:
        return self.classes.query_features

    @property
    def query_to_class(self) -> np.ndarray:
        return self.classes.query_to_class

    def embed(self, classes: Sequence[str] | str | None = None, vocab: str | os.PathLike | None = None) -> ClassEmbedding:
        """The text features of classes (`classes` and `vocab` as at build time), to pass to calls; encoded once
        with the folder's text graph (the built classes are returned as they are)."""
        meta = self.folder.meta
        lines = tuple(vocabulary_lines(classes, vocab, meta["prompt_templates"], int(meta["tokenizer"]["context_length"])))
        if lines == getattr(getattr(self, "classes", None), "lines", None):
            return self.classes
        vocabulary = Vocabulary.from_lines(lines, source="the classes", unit="class")
        return ClassEmbedding(lines, tuple(vocabulary.class_names), self.encode_queries(vocabulary.queries),
                              np.asarray(vocabulary.query_to_class, dtype=np.int64), self.model_key)

    def encode_queries(self, queries: Sequence[str]) -> np.ndarray:
        """Q×D query features: per name, the normalised mean of its normalised prompt embeddings (`encode_queries`)."""
        meta = self.folder.meta
        templates = meta["prompt_templates"]
        tokenizer = tokenizer_from_file(str(self.folder.file(meta["tokenizer"]["vocabulary"])))
        prompts = [template.format(query) for query in queries for template in templates]
        tokens = np.asarray(token_rows(tokenizer, prompts, int(meta["tokenizer"]["context_length"])), dtype=np.int64)
        # By length, each batch cut after its last end-of-text token: with the causal mask exact, and a
        # quarter of the work for short prompts (as `scclip.text.encode_queries` batches them).
        ends = tokens.argmax(axis=1)
        order = np.argsort(ends, kind="stable")
        features = np.empty((len(prompts), int(meta["embed_dim"])), dtype=np.float32)
        for start in range(0, len(prompts), self.text_batch_size):
            index = order[start : start + self.text_batch_size]
            length = int(ends[index].max()) + 1
            features[index] = self.text_session.run(None, {"tokens": tokens[index, :length]})[0]
        features = numerics.l2_normalise(features).reshape(len(queries), len(templates), -1)
        return numerics.l2_normalise(features.mean(axis=1, dtype=np.float32))

    def dense_features(self, crops: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
        """B×N×D L2-normalised dense features of B×3×H×W normalised crops (`SCCLIPForSegmentation.dense_features`);
        `queries`: the query features a graph that takes them is fed (default: the built classes')."""
        crops = np.ascontiguousarray(crops, dtype=np.float32)
        if crops.ndim != 4 or crops.shape[1] != 3:
            raise InputError(f"crops must be a B×3×H×W array of normalised RGB images, got {crops.shape}")
        if min(crops.shape[-2:]) < self.patch_size:
            raise InputError(f"crops of size {crops.shape[-2:]} are smaller than one {self.patch_size}×{self.patch_size} patch")
        feeds = {"images": crops}
        if "queries" in self.folder.meta["graphs"]["image"].get("inputs", []):  # ResCLIP's first pass
            feeds["queries"] = self.query_features if queries is None else queries
        return self.image_session.run(["features"], feeds)[0]

    def crop_logits(self, crops: np.ndarray, size: tuple[int, int] | str | None = None, pad: bool = False,
                    queries: np.ndarray | None = None) -> np.ndarray:
        """B×Q×h×w query logits of crops, as `SCCLIPForSegmentation.crop_logits` (same `size`, `pad`, `queries`)."""
        height, width = crops.shape[-2:]
        multiple = self.pad_multiple or self.patch_size
        left, right, top, bottom = patch_padding(height, width, multiple) if pad else (0, 0, 0, 0)
        if left or right or top or bottom:
            crops = np.pad(crops, ((0, 0), (0, 0), (top, bottom), (left, right)))
        grid = (crops.shape[-2] // self.feature_stride, crops.shape[-1] // self.feature_stride)
        queries = self.query_features if queries is None else queries
        features = self.dense_features(crops, queries)
        logits = (features @ queries.T).transpose(0, 2, 1).reshape(crops.shape[0], -1, *grid)
        if size == "grid":
            return logits
        logits = numerics.resize(logits, tuple(crops.shape[-2:]) if pad else tuple(size or crops.shape[-2:]))
        if pad:
            logits = logits[..., top : top + height, left : left + width]
            if size is not None and tuple(size) != (height, width):
                logits = numerics.resize(logits, tuple(size))
        return logits

    def sliding_logits(self, images: Sequence[np.ndarray], queries: np.ndarray) -> list[np.ndarray]:
        """Per 3×H×W image, Q×H×W logits averaged over its windows (`_sliding_logits`); the windows of all
        images are batched by shape, each encoded on its own."""
        sums = [np.zeros((len(queries), *image.shape[-2:]), dtype=np.float32) for image in images]
        counts = [np.zeros((1, *image.shape[-2:]), dtype=np.float32) for image in images]
        sizes = [image.shape[-2:] for image in images]
        for chunk in window_batches(sizes, self.slide_crop, self.slide_stride, self.crop_batch_size):
            crops = np.stack([images[i][:, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk])
            for (i, (y1, y2, x1, x2)), logits in zip(chunk, self.crop_logits(crops, pad=self.pad_multiple > 0,
                                                                              queries=queries)):
                sums[i][:, y1:y2, x1:x2] += logits
                counts[i][:, y1:y2, x1:x2] += 1
        return [total / count for total, count in zip(sums, counts)]

    def coarse_logits(self, image: np.ndarray) -> np.ndarray:
        """Q×h×w query logits of a 3×H×W normalised image before the final resize (`coarse_logits`)."""
        return self.coarse_logits_of([image], self.query_features)[0]

    def coarse_logits_of(self, images: Sequence[np.ndarray], queries: np.ndarray) -> list[np.ndarray]:
        """`coarse_logits` of several images with Q×D `queries`, their windows encoded in shared batches."""
        if self.slide_crop > 0:
            return self.sliding_logits(images, queries)
        size = None if self.resize_through_input else "grid"
        return [self.crop_logits(image[None], size=size, queries=queries)[0] for image in images]

    def predictions(self, images: Sequence[ImageSource], classes: ClassEmbedding | None = None,
                    **options) -> list[tuple[np.ndarray, FullSize]]:
        """Each image as read (H×W×3 uint8 RGB) and its full-size prediction (labels and scores made when
        asked), as `Segmenter.predictions`: the windows of images that come out of the resize at one
        size are encoded in shared batches, each on its own, so a batch gives each image its labels alone."""
        embedding = chosen_embedding(classes, self.classes)
        built = dict(prob_thd=self.prob_thd, area_thd=self.area_thd, pamr_steps=self.pamr_steps,
                     pamr_stride=self.pamr_stride)
        post = call_settings(self.method, built, options)
        rgbs = [read_image(image) for image in images]
        inputs = [numerics.normalise(numerics.resize_for_inference(rgb, self.scale, min_side=self.patch_size),
                                     self.mean, self.std) for rgb in rgbs]
        same_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, normalised in enumerate(inputs):
            same_size[normalised.shape[-2:]].append(index)
        logits: dict[int, np.ndarray] = {}
        for members in same_size.values():
            logits.update(zip(members, self.coarse_logits_of([inputs[index] for index in members],
                                                              embedding.query_features)))
        return [(rgb, FullSize(
            logits[index], rgb.shape[:2], embedding.query_to_class, embedding.num_classes, self.logit_scale,
            post["prob_thd"], post["area_thd"], post["pamr_steps"], tuple(post["pamr_stride"]), self.renormalise,
            image=inputs[index],
        )) for index, rgb in enumerate(rgbs)]

    def prediction(self, image: ImageSource, classes: ClassEmbedding | None = None,
                   **options) -> tuple[np.ndarray, FullSize]:
        """The image as read (H×W×3 uint8 RGB) and its full-size prediction (labels and scores made when asked)."""
        return self.predictions([image], classes, **options)[0]

    def batch(self, images: Sequence[ImageSource], classes: ClassEmbedding | None = None,
              **options) -> list[SegmentationResult]:
        """Segment several images (each as `__call__` takes it); the results are those of one call each."""
        from ..visualize import palette

        embedding = chosen_embedding(classes, self.classes)
        colours = palette(embedding.num_classes)
        return [SegmentationResult(image=rgb, labels=prediction.labels(), class_names=list(embedding.class_names),
                                   colours=colours, scores=prediction.scores)
                for rgb, prediction in self.predictions(images, embedding, **options)]

    def __call__(self, image: ImageSource, classes: ClassEmbedding | None = None, **options) -> SegmentationResult:
        """Segment one image (a file path, a PIL image, or an H×W[×3|4] uint8/uint16/float array) into `classes`
        (from `embed`; default: the built ones), with this call's options (see the class)."""
        (result,) = self.batch([image], classes, **options)
        return result
