"""Segment your own images with your own words: `Segmenter(backbone, classes)(image)`.

A thin layer over `SCCLIPForSegmentation` (no second implementation): it prepares images the way
the benchmarks do (keep-ratio resize to fit 2048×336, CLIP normalisation), lets the segmentor
compute the query logits, and returns the prediction at the image's full size, built block by
block (`scclip.fullres`) so that memory does not grow with classes × megapixels.
"""
import os
from collections.abc import Sequence
from dataclasses import replace

import mmcv
import numpy as np
import torch

from .backbones import checkpoint_and_arch
from .benchmarks import benchmark_of_vocabulary
from .clip import CLIP, load
from .clip.architectures import ARCHITECTURES
from .clip.pretrained import MODEL_URLS
from .errors import CheckpointError, InputError
from .benchmarks import inference_scale
from .fullres import FullSizePrediction
from .imageio import ImageSource, read_image
from .protocol import ClassEmbedding, call_settings, chosen_embedding
from .result import MASK_SUFFIX, SegmentationResult  # noqa: F401  (re-exported: the result type lives torch-free)
from .segmentor import SCCLIPForSegmentation
from .settings import CALL_SETTINGS, DEFAULTS, PAMR_ON_STEPS, check_settings
from .vocabulary import (  # noqa: F401  (re-exported: the parsing lives torch-free, shared with scclip.runtime)
    SAMPLE_CLASSES,
    SAMPLE_IMAGE,
    SYNONYM_MARK,
    Vocabulary,
    check_class_string,
    check_names_given_once,
    check_prompt_lengths,
    parse_classes,
    vocabulary_lines,
)
from .visualize import palette

# The benchmarks' test-time resize (docs/method.md#test-time-resize): the short side becomes 336 unless the
# long side would pass 2048; small images are enlarged. configs/base_config.py states it.
INFERENCE_SCALE = inference_scale()


def display_names(lines: Sequence[str]) -> list[str]:
    """The name to show for each class: a benchmark's own class names where the lines begin with its
    shipped vocabulary ('background', not its first synonym 'sky'), else the first name of each class."""
    names = [line.split(",")[0].strip() for line in lines]
    benchmark = benchmark_of_vocabulary(lines)
    if benchmark is None:
        return names
    shipped = benchmark.class_names()
    return list(shipped) + names[len(shipped):]


def load_backbone(
    backbone: str | os.PathLike,
    device: str | torch.device | None = None,
    clip_arch: str | None = None,
    download_root: str | os.PathLike | None = None,
) -> CLIP | None:
    """The CLIP of a checkpoint file or an open_clip backbone, loaded once here and handed on to the
    segmentor; None for a public OpenAI name, which `scclip.clip.load` downloads (`Segmenter` calls it)."""
    if clip_arch is not None:
        return load(backbone, device=device, download_root=download_root, arch=clip_arch)[0]
    if isinstance(backbone, str) and backbone in ARCHITECTURES:
        return None
    if isinstance(backbone, str) and backbone in MODEL_URLS:
        raise CheckpointError(f"{backbone} is a ResNet CLIP; SC-CLIP needs a ViT: use ViT-B/16 or ViT-L/14")
    return load(backbone, device=device)[0]


def resize_for_inference(image: np.ndarray, scale: tuple[int, int] = INFERENCE_SCALE, min_side: int = 1) -> np.ndarray:
    """Keep-ratio bilinear resize so the image fits `scale` (long, short), as mmseg's test `Resize` does.

    A side that would come out shorter than `min_side` (one patch; 1×5000 fitted to 2048×336 would
    be 0×2048) is stretched to `min_side` instead, so that very thin images are segmented too; the
    prediction is resized back to the image's own size either way.
    """
    width, height = mmcv.rescale_size((image.shape[1], image.shape[0]), scale)
    size = (max(width, min_side), max(height, min_side))
    return mmcv.imresize(image, size, interpolation="bilinear", backend="cv2")


class Segmenter:
    """Open-vocabulary segmentation of single images with SC-CLIP or one of its baselines.

    The model and the text features of the classes are built once, here; each call then costs one
    image encoding. Predictions come back at the image's full size in bounded memory (see
    `scclip.fullres`): a 12-megapixel photo with 171 classes needs well under 2 GB beyond the model.
    Other classes are encoded once with `embed` and passed to a call; a call's options (`prob_thd`,
    `area_thd`, `pamr`, `pamr_steps`, `pamr_stride`) override the built ones for that call
    (`scclip.protocol`: the same protocol as `scclip.runtime.OnnxSegmenter`).

    Example:
        >>> seg = Segmenter("ViT-B/16", classes=["cat", "dog", "sky"])
        >>> result = seg("photo.jpg")
        >>> result.labels.shape, result.overlay().size
        >>> seg("photo.jpg", seg.embed("car, road|street"), pamr=True, prob_thd=0.3)

    Args:
        backbone: a public CLIP name ('ViT-B/16', 'ViT-L/14', ...; downloaded on first use) or a
            checkpoint file. SC-CLIP's calibration follows its depth (chosen by the segmentor, logged).
            open_clip backbones: its 'model:pretrained' pair ('ViT-B-16:laion2b_s34b_b88k'), or a
            pretrained tag or open_clip checkpoint file with `clip_arch`.
        classes: class names, each 'name' or 'name, synonym, ...', or one string 'cat,dog|puppy,sky'.
        vocab: a vocabulary file (one class per line, synonyms after ', '); combined with `classes`.
        device: 'cpu', 'cuda' or a torch device; None = CUDA when available.
        pamr: refine the masks with PAMR (10 steps), at full size in exact overlapping tiles.
        prob_thd: pixels whose best class score is below this (in [0, 1]) go to the first class.
        slide: sliding-window inference (224 crops, stride 112); False = whole image at once.
        scale: (long, short) bound of the keep-ratio resize before inference.
        method: 'scclip' (default) or a baseline: see `scclip.methods.available_methods()`.
        clip_arch: the open_clip architecture ('ViT-B-16', 'ViT-L-14-quickgelu', ...) of an open_clip
            tag or checkpoint file given as `backbone`.
        **options: further `SCCLIPForSegmentation` arguments (e.g. logit_scale, area_thd,
            download_root; for scclip its switches such as attention_calibration=False, or
            calibration indices instead of the depth-based ones; clip_model: the CLIP of
            `backbone` already loaded, shared by several segmenters).
    """

    def __init__(
        self,
        backbone: str | os.PathLike = "ViT-B/16",
        classes: Sequence[str] | str | None = None,
        vocab: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        pamr: bool = False,
        prob_thd: float = 0.0,
        slide: bool = True,
        scale: tuple[int, int] = INFERENCE_SCALE,
        method: str = DEFAULTS["method"],
        clip_arch: str | None = None,
        **options,
    ) -> None:
        lines = vocabulary_lines(classes, vocab)
        # Every setting is checked (scclip.settings) before the backbone loads.
        check_settings(method, {"prob_thd": prob_thd, "clip_arch": clip_arch,
                                "pamr_steps": PAMR_ON_STEPS if pamr else 0, **options})
        if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise InputError("CUDA is not available here: use device 'cpu' (or install a CUDA build of torch)")
        self.backbone = str(backbone)
        backbone, clip_arch = checkpoint_and_arch(backbone, clip_arch)
        clip_model = options.pop("clip_model", None)  # `backbone` already loaded: several segmenters share it
        if clip_model is None:
            clip_model = load_backbone(backbone, device, clip_arch, options.get("download_root"))
        if clip_model is None:  # a public OpenAI name: loaded here, as other classes are encoded with it
            clip_model = load(backbone, device=device, download_root=options.get("download_root"))[0]
        self.clip_model = clip_model
        self.scale = scale
        arguments = dict(prob_thd=prob_thd, slide_crop=DEFAULTS["slide_crop"] if slide else 0,
                         pamr_steps=PAMR_ON_STEPS if pamr else 0)
        arguments.update(options)
        # An open_clip tag stands for the file it was resolved to (the text cache hashes that file).
        checkpoint = getattr(clip_model, "checkpoint_path", None) if clip_arch else None
        self.segmentor = SCCLIPForSegmentation(
            clip_path=str(checkpoint or backbone),
            vocabulary=lines, device=device, method=method, clip_model=clip_model,
            clip_arch=clip_arch, **arguments,
        )
        # Which model encodes the classes (two segmenters on one file share embeddings).
        self.model_key = f"torch:{self.segmentor.clip_path}:{clip_arch}:{self.segmentor.precision}"
        self.classes = ClassEmbedding(tuple(lines), tuple(display_names(lines)), self.segmentor.query_features,
                                      self.segmentor.query_to_class, self.model_key)

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.class_names)

    @property
    def colours(self) -> list:
        return palette(self.classes.num_classes)

    @property
    def method(self) -> str:
        return self.segmentor.method

    @property
    def device(self) -> torch.device:
        return self.segmentor.device

    def embed(self, classes: Sequence[str] | str | None = None, vocab: str | os.PathLike | None = None) -> ClassEmbedding:
        """The text features of other classes (`classes` and `vocab` as at build time), to pass to calls; encoded
        with this segmenter's CLIP once (the on-disk text cache keeps them for this checkpoint)."""
        lines = tuple(vocabulary_lines(classes, vocab))
        if lines == self.classes.lines:
            return self.classes
        vocabulary = Vocabulary.from_lines(lines)
        features = self.segmentor.encode_vocabulary(vocabulary, self.clip_model).to(self.device)
        return ClassEmbedding(lines, tuple(display_names(lines)), features,
                              torch.tensor(vocabulary.query_to_class, device=self.device), self.model_key)

    @torch.no_grad()
    def __call__(self, image: ImageSource, classes: ClassEmbedding | None = None, **options) -> SegmentationResult:
        """Segment one image (a file path, a PIL image, or an H×W[×3|4] uint8/uint16/float array) into `classes`
        (from `embed`; default: the built ones), with this call's options (see the class)."""
        (result,) = self.batch([image], classes, **options)
        return result

    @torch.no_grad()
    def batch(self, images: Sequence[ImageSource], classes: ClassEmbedding | None = None,
              **options) -> list[SegmentationResult]:
        """Segment several images (each as `__call__` takes it); the results are those of one call each.

        Images of the same inference size are encoded in one batch (see `predictions`), so pass as
        many as memory allows: each holds its Q×h×w coarse logits until its result is made.
        """
        embedding = chosen_embedding(classes, self.classes)
        colours = palette(embedding.num_classes)
        return [
            SegmentationResult(image=rgb, labels=prediction.labels(), class_names=list(embedding.class_names),
                               colours=colours, scores=prediction.scores)
            for rgb, prediction in self.predictions(images, embedding, **options)
        ]

    @torch.no_grad()
    def prediction(self, image: ImageSource, classes: ClassEmbedding | None = None,
                   **options) -> tuple[np.ndarray, FullSizePrediction]:
        """The image as read (H×W×3 uint8 RGB) and its full-size prediction (see `predictions`)."""
        return self.predictions([image], classes, **options)[0]

    @torch.no_grad()
    def predictions(self, images: Sequence[ImageSource], classes: ClassEmbedding | None = None,
                    **options) -> list[tuple[np.ndarray, FullSizePrediction]]:
        """Each image as read (H×W×3 uint8 RGB) and its full-size prediction, whose labels and scores are
        computed when asked for (`FullSizePrediction.labels()`, `.scores()`).

        The one prediction path: keep-ratio resize, CLIP normalisation, the segmentor's coarse logits.
        Images that come out of the resize at the same size go through `coarse_logits` together (no
        padding; their windows are encoded in shared batches), others alone. Every window is encoded
        on its own, so a batch gives each image the labels it gets alone (bit for bit on the CPU; on
        CUDA, kernels chosen for another batch size may change the last bits of a logit).
        """
        segmentor = self.segmentor
        embedding = chosen_embedding(classes, self.classes)
        built = {name: getattr(segmentor.post, name) for name in CALL_SETTINGS}
        post = replace(segmentor.post, **call_settings(segmentor.method, built, options))
        rgbs = [read_image(image) for image in images]
        inputs = [resize_for_inference(rgb, self.scale, min_side=segmentor.encoder.patch_size) for rgb in rgbs]
        same_size: dict[tuple[int, int], list[int]] = {}
        for index, resized in enumerate(inputs):
            same_size.setdefault(resized.shape[:2], []).append(index)
        predictions: dict[int, FullSizePrediction] = {}
        for (height, width), members in same_size.items():
            pixels = [torch.from_numpy(np.ascontiguousarray(inputs[index].transpose(2, 0, 1))) for index in members]
            batch = segmentor.data_preprocessor.normalise(pixels)
            metas = [dict(img_shape=(height, width))] * len(members)
            # The built classes are the segmentor's own: given only for others (its mmseg signature stays).
            coarse = (segmentor.coarse_logits(batch, metas) if embedding is self.classes
                      else segmentor.coarse_logits(batch, metas, queries=embedding.query_features))
            for index, (logits, image) in zip(members, coarse):
                predictions[index] = FullSizePrediction(logits, rgbs[index].shape[:2], embedding.query_to_class,
                                                        embedding.num_classes, post, image=image)
        return [(rgb, predictions[index]) for index, rgb in enumerate(rgbs)]
