"""Segment your own images with your own words: `Segmenter(backbone, classes)(image)`.

A thin layer over `SCCLIPForSegmentation` (no second implementation): it picks the published
hyper-parameters for the backbone, prepares images the way the benchmarks do (keep-ratio resize to
fit 2048×336, CLIP normalisation) and returns the prediction at the image's full size.
"""
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import mmcv
import numpy as np
import torch
from mmengine.logging import MMLogger
from mmseg.structures import SegDataSample
from PIL import Image

from .clip import CLIP, load
from .clip.architectures import ARCHITECTURES
from .clip.pretrained import MODEL_URLS
from .errors import CheckpointError, InputError, VocabularyError
from .fileio import write_atomically
from .imageio import ImageSource, read_image
from .segmentor import SCCLIPForSegmentation
from .text import Vocabulary
from .visualize import (
    LegendEntry,
    label_image,
    legend_entries,
    overlay,
    palette,
    pixel_shares,
    side_by_side,
)

SAMPLE_IMAGE = Path(__file__).parent / "assets" / "astronaut.jpg"
SAMPLE_CLASSES = ("wall, background", "astronaut, woman", "space suit", "helmet", "flag", "space shuttle, rocket")

# The benchmarks' test-time resize (SPEC §4): long side at most 2048, short side at most 336.
INFERENCE_SCALE = (2048, 336)
PAMR_STEPS = 10
SYNONYM_MARK = "|"

# Published calibration settings (SPEC §2) by ViT depth.
PUBLISHED_SETTINGS = {
    12: dict(pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10, res_cls=0.3),
    24: dict(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19, res_cls=0.1),
}
PUBLISHED_NAMES = {12: "ViT-B/16", 24: "ViT-L/14"}


def parse_classes(text: str) -> list[str]:
    """'cat,dog|puppy,sky' → vocabulary lines ['cat', 'dog, puppy', 'sky'] ('|' joins synonyms)."""
    lines = []
    for item in text.split(","):
        names = [name.strip() for name in item.split(SYNONYM_MARK) if name.strip()]
        if names:
            lines.append(", ".join(names))
    return lines


def vocabulary_lines(classes: Sequence[str] | str | None = None, vocab: str | os.PathLike | None = None) -> list[str]:
    """Vocabulary lines from a vocabulary file and/or classes (file lines first), checked.

    Args:
        classes: class names, each 'name' or 'name, synonym, ...'; or one string 'cat,dog,sky'
            (see `parse_classes`).
        vocab: a vocabulary file in the benchmarks' format (one class per line, synonyms after ', ').
    Raises:
        VocabularyError: no class at all, or a malformed or repeated class.
    """
    lines: list[str] = []
    if vocab is not None:
        lines += [", ".join(names) for names in Vocabulary.from_file(vocab).classes]
    if isinstance(classes, str):
        lines += parse_classes(classes)
    elif classes is not None:
        lines += [str(line) for line in classes]
    if not any(line.strip() for line in lines):
        raise VocabularyError("no class names given: list some, e.g. 'cat,dog,sky', or give a vocabulary file")
    Vocabulary.from_lines(lines, source="the classes")
    return lines


def load_backbone(backbone: str | os.PathLike, device: str | torch.device | None = None) -> tuple[int, CLIP | None]:
    """Depth of the image tower, and the loaded CLIP when it had to be read to know it.

    Public names come from the architecture table (the segmentor downloads them); a checkpoint
    file is loaded here once and handed on, so it is not read twice.
    """
    if isinstance(backbone, str) and backbone in ARCHITECTURES:
        return ARCHITECTURES[backbone]["vision_layers"], None
    if isinstance(backbone, str) and backbone in MODEL_URLS:
        raise CheckpointError(f"{backbone} is a ResNet CLIP; SC-CLIP needs a ViT: use ViT-B/16 or ViT-L/14")
    model, _ = load(backbone, device=device)
    return len(model.visual.transformer.resblocks), model


def calibration_settings(depth: int) -> tuple[dict, str]:
    """The calibration hyper-parameters for a ViT with `depth` blocks, and a sentence saying which.

    12 and 24 blocks get the published ViT-B/16 and ViT-L/14 settings; other depths get ViT-B/16's
    layer indices scaled by depth/12 (rounded half up, kept inside the network) and the `res_cls`
    of the nearer published depth.
    """
    if depth in PUBLISHED_SETTINGS:
        return dict(PUBLISHED_SETTINGS[depth]), f"{depth} blocks: the published {PUBLISHED_NAMES[depth]} settings"
    if depth < 2:
        raise CheckpointError(f"a ViT with {depth} block cannot be calibrated: SC-CLIP needs at least 2 blocks")
    base = PUBLISHED_SETTINGS[12]
    last = depth - 2  # the last intermediate feature index

    def scaled(name: str) -> int:
        return int(base[name] * depth / 12 + 0.5)

    end = min(max(scaled("multi_end_idx"), 1), last + 1)
    settings = dict(
        pre_adjust_idx=min(scaled("pre_adjust_idx"), last),
        post_adjust_idx=min(scaled("post_adjust_idx"), last),
        multi_start_idx=min(scaled("multi_start_idx"), end - 1),
        multi_end_idx=end,
        res_cls=PUBLISHED_SETTINGS[12 if depth <= 18 else 24]["res_cls"],
    )
    described = ", ".join(f"{name} {value}" for name, value in settings.items())
    return settings, f"{depth} blocks: ViT-B/16's settings scaled to this depth ({described})"


def resize_for_inference(image: np.ndarray, scale: tuple[int, int] = INFERENCE_SCALE) -> np.ndarray:
    """Keep-ratio bilinear resize so the image fits `scale` (long, short), as mmseg's test `Resize` does."""
    return mmcv.imrescale(image, scale, interpolation="bilinear", backend="cv2")


@dataclass
class SegmentationResult:
    """One segmented image.

    Attributes:
        image: H×W×3 uint8 RGB, the image as segmented (EXIF orientation applied).
        labels: H×W int64 class index per pixel.
        scores: C×H×W float32 class scores (softmax over the queries, max over each class's names).
        class_names: the first name of each class.
        colours: C×3 uint8 colour of each class.
    """

    image: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    class_names: list[str]
    colours: np.ndarray

    @cached_property
    def shares(self) -> dict[str, float]:
        """Fraction of the pixels given to each class (all classes, in vocabulary order)."""
        return dict(zip(self.class_names, pixel_shares(self.labels, len(self.class_names)).tolist()))

    def legend(self) -> list[LegendEntry]:
        """The classes present, largest first, with colour and pixel share."""
        return legend_entries(self.labels, self.class_names, self.colours)

    def overlay(self, alpha: float = 0.5) -> Image.Image:
        """The image with the class colours blended in, at full size."""
        return Image.fromarray(overlay(self.image, self.labels, self.colours, alpha))

    def mask(self) -> Image.Image:
        """The labels as an image: palette mode 'P' (pixel value = class index) for up to 256 classes."""
        return label_image(self.labels, self.colours)

    def picture(self, panel_side: int = 512, alpha: float = 0.5) -> Image.Image:
        """image | prediction | overlay side by side at the image's aspect ratio, over a legend."""
        return side_by_side(self.image, self.labels, self.class_names, self.colours, alpha, panel_side)[0]

    def save(self, path: str | os.PathLike, panel_side: int = 512) -> Path:
        """Write `picture()` to `path` (format from its suffix); never leaves a partial file."""
        picture = self.picture(panel_side)
        return write_atomically(path, picture.save)

    def save_mask(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write the label PNG at `path` and, beside it (same name, .json), the classes and pixel shares."""
        path = Path(path).with_suffix(".png")
        mask = self.mask()
        summary = dict(
            classes=self.class_names,
            pixel_shares={name: round(share, 6) for name, share in self.shares.items()},
            size=dict(width=int(self.labels.shape[1]), height=int(self.labels.shape[0])),
        )
        png = write_atomically(path, mask.save)
        report = write_atomically(path.with_suffix(".json"),
                                  lambda temp: temp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8"))
        return png, report


class Segmenter:
    """Open-vocabulary segmentation of single images with SC-CLIP.

    The model and the text features of the classes are built once, here; each call then costs one
    image encoding.

    Example:
        >>> seg = Segmenter("ViT-B/16", classes=["cat", "dog", "sky"])
        >>> result = seg("photo.jpg")
        >>> result.labels.shape, result.overlay().size

    Args:
        backbone: a public CLIP name ('ViT-B/16', 'ViT-L/14', ...; downloaded on first use) or a
            checkpoint file. The calibration follows its depth (see `calibration_settings`).
        classes: class names, each 'name' or 'name, synonym, ...', or one string 'cat,dog|puppy,sky'.
        vocab: a vocabulary file (one class per line, synonyms after ', '); combined with `classes`.
        device: 'cpu', 'cuda' or a torch device; None = CUDA when available.
        pamr: refine the masks with PAMR (10 steps).
        prob_thd: pixels whose best class score is below this go to the first class.
        slide: sliding-window inference (224 crops, stride 112); False = whole image at once.
        scale: (long, short) bound of the keep-ratio resize before inference.
        **options: further `SCCLIPForSegmentation` arguments (e.g. logit_scale, area_thd,
            download_root, clip_model: the CLIP of `backbone` already loaded, shared by several
            segmenters); calibration indices given here override the depth-based ones.
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
        **options,
    ) -> None:
        lines = vocabulary_lines(classes, vocab)
        if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
            raise InputError("CUDA is not available here: use device 'cpu' (or install a CUDA build of torch)")
        self.backbone = str(backbone)
        clip_model = options.pop("clip_model", None)  # `backbone` already loaded: several segmenters share it
        if clip_model is None:
            self.depth, clip_model = load_backbone(backbone, device)
        else:
            self.depth = len(clip_model.visual.transformer.resblocks)
        settings, self.settings_note = calibration_settings(self.depth)
        MMLogger.get_current_instance().info(f"SC-CLIP on {self.backbone}: {self.settings_note}")
        self.settings = {**settings, **{k: v for k, v in options.items() if k in settings}}
        self.scale = scale
        arguments = dict(pamr_steps=PAMR_STEPS if pamr else 0, prob_thd=prob_thd, slide_crop=224 if slide else 0)
        arguments.update(options)
        arguments.update(self.settings)
        self.segmentor = SCCLIPForSegmentation(
            clip_path=str(backbone), vocabulary=lines, device=device, clip_model=clip_model, **arguments
        )
        self.colours = palette(self.segmentor.num_classes)

    @property
    def class_names(self) -> list[str]:
        return self.segmentor.class_names

    @property
    def device(self) -> torch.device:
        return self.segmentor.device

    @torch.no_grad()
    def __call__(self, image: ImageSource) -> SegmentationResult:
        """Segment one image: a file path, a PIL image, or an H×W[×3|4] uint8/uint16/float array."""
        rgb = read_image(image)
        resized = resize_for_inference(rgb, self.scale)
        bgr = torch.from_numpy(np.ascontiguousarray(resized[..., ::-1].transpose(2, 0, 1)))
        sample = SegDataSample(metainfo=dict(ori_shape=rgb.shape[:2], img_shape=resized.shape[:2]))
        output = self.segmentor.test_step(dict(inputs=[bgr], data_samples=[sample]))[0]
        return SegmentationResult(
            image=rgb,
            labels=output.pred_sem_seg.data[0].cpu().numpy().astype(np.int64),
            scores=output.seg_logits.data.float().cpu().numpy(),
            class_names=list(self.class_names),
            colours=self.colours,
        )
