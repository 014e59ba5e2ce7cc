"""SCCLIPForSegmentation: SC-CLIP as an mmseg segmentor (SPEC §3)."""
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.models import BaseSegmentor
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from .calibration import CalibrationConfig, SCCLIPEncoder
from .clip import CLIP, load
from .clip.loading import default_device
from .errors import InputError, VocabularyError
from .pamr import pamr
from .postprocess import class_scores, labels, suppress_small_classes
from .text import Vocabulary, encode_queries, load_templates
from .text_cache import TextFeatureCache
from .windows import sliding_windows

# CLIP's normalisation on 0-255 pixels; images are read as BGR by mmcv and flipped to RGB.
PIXEL_MEAN = (122.771, 116.746, 104.094)
PIXEL_STD = (68.501, 66.632, 70.323)
Precision = Literal["auto", "fp32", "fp16", "bf16"]
HALF_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@MODELS.register_module()
class SCCLIPDataPreProcessor(SegDataPreProcessor):
    """mmseg's pre-processor, but a test batch may mix image sizes: they are padded to the largest.

    The segmentor reads each image back at its own `img_shape`, so padding never reaches a result.
    """

    def forward(self, data: dict, training: bool = False) -> dict:
        if training:
            return super().forward(data, training)
        data = self.cast_data(data)
        inputs = data["inputs"]
        if self.channel_conversion and inputs[0].size(0) == 3:
            inputs = [image[[2, 1, 0], ...] for image in inputs]
        inputs = [(image.float() - self.mean) / self.std for image in inputs]
        height = max(image.shape[-2] for image in inputs)
        width = max(image.shape[-1] for image in inputs)
        batch = inputs[0].new_zeros(len(inputs), inputs[0].shape[0], height, width)
        for index, image in enumerate(inputs):
            batch[index, :, : image.shape[-2], : image.shape[-1]] = image
        return dict(inputs=batch, data_samples=data.get("data_samples"))


@MODELS.register_module()
class SCCLIPForSegmentation(BaseSegmentor):
    """Training-free open-vocabulary segmentation with a self-calibrated CLIP ViT.

    Args:
        clip_path: a public CLIP model name (e.g. 'ViT-B/16') or a checkpoint file.
        name_path: vocabulary file, one class per line, synonyms separated by ', '.
        device: where the model runs; None = CUDA when available, else CPU.
        pamr_steps: PAMR iterations (0 = off).
        pamr_stride: PAMR dilations.
        prob_thd: pixels whose best class score is below this become class 0.
        logit_scale: temperature of the softmax over queries.
        slide_stride: sliding-window stride.
        slide_crop: sliding-window crop size; 0 = the whole image is one crop.
        area_thd: classes ≥ 1 whose predicted area is at most this share of the foreground lose.
        pre_adjust_idx, post_adjust_idx, multi_start_idx, multi_end_idx, res_cls: calibration
            settings (SPEC §2; defaults are ViT-B/16's).
        vocabulary: vocabulary lines, used instead of `name_path`.
        beta, lof_neighbors, contamination: further calibration settings (published values).
        precision: 'auto' = fp16 autocast on CUDA and fp32 on CPU; 'fp32', 'fp16' or 'bf16' force one.
        crop_batch_size: crops per encoder call.
        text_batch_size: prompts per text-encoder call.
        download_root: where named checkpoints are cached (default ~/.cache/clip).
        text_cache: reuse query features stored on disk for this checkpoint, vocabulary and templates
            (folder `$SCCLIP_CACHE_DIR`, default ~/.cache/scclip); False encodes them and writes nothing.
        clip_model: the CLIP of `clip_path`, already loaded (saves reading the file again).
        compile: `torch.compile` the calibrated encoder (worth it on CUDA for long runs; each new
            crop shape compiles once, tens of seconds).
    """

    def __init__(
        self,
        clip_path: str,
        name_path: str | None = None,
        device: str | torch.device | None = None,
        pamr_steps: int = 0,
        pamr_stride: Sequence[int] = (8, 16),
        prob_thd: float = 0.0,
        logit_scale: float = 40,
        slide_stride: int = 112,
        slide_crop: int = 224,
        area_thd: float | None = None,
        pre_adjust_idx: int = 8,
        post_adjust_idx: int = 3,
        multi_start_idx: int = 3,
        multi_end_idx: int = 10,
        res_cls: float = 0.3,
        vocabulary: Sequence[str] | None = None,
        beta: float = 0.4,
        lof_neighbors: int = 30,
        contamination: float = 0.05,
        precision: Precision = "auto",
        crop_batch_size: int = 16,
        text_batch_size: int = 256,
        download_root: str | None = None,
        text_cache: bool = True,
        clip_model: CLIP | None = None,
        compile: bool = False,
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        if data_preprocessor is None:
            data_preprocessor = SCCLIPDataPreProcessor(mean=PIXEL_MEAN, std=PIXEL_STD, bgr_to_rgb=True)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if (name_path is None) == (vocabulary is None):
            raise VocabularyError("give exactly one of name_path (a vocabulary file) and vocabulary (a list of lines)")
        if precision not in ("auto", "fp32", *HALF_DTYPES):
            raise InputError(f"precision={precision!r} is not one of 'auto', 'fp32', 'fp16', 'bf16'")
        if slide_crop < 0 or (slide_crop > 0 and slide_stride <= 0):
            raise InputError(f"slide_crop={slide_crop} and slide_stride={slide_stride} must be positive (slide_crop=0: whole image)")
        device = torch.device(device) if device is not None else default_device()
        self.vocabulary = (
            Vocabulary.from_file(name_path) if name_path is not None else Vocabulary.from_lines(vocabulary)
        )
        if clip_model is None:
            clip_model, _ = load(clip_path, device=device, download_root=download_root)
        clip_model = clip_model.to(device)
        self.encoder = SCCLIPEncoder(
            clip_model.visual,
            CalibrationConfig(
                pre_adjust_idx=pre_adjust_idx,
                post_adjust_idx=post_adjust_idx,
                multi_start_idx=multi_start_idx,
                multi_end_idx=multi_end_idx,
                res_cls=res_cls,
                beta=beta,
                lof_neighbors=lof_neighbors,
                contamination=contamination,
            ),
        )
        templates = load_templates()

        def encode() -> torch.Tensor:
            with self._autocast(device, precision):
                return encode_queries(clip_model, self.vocabulary.queries, templates, batch_size=text_batch_size)

        if text_cache:
            settings = dict(precision=precision, device=device.type, batch_size=text_batch_size)
            query_features = TextFeatureCache().get_or_compute(
                clip_path, self.vocabulary.queries, templates, settings, encode
            ).to(device)
        else:
            query_features = encode()
        self.register_buffer("query_features", query_features.float(), persistent=False)
        self.register_buffer(
            "query_to_class", torch.tensor(self.vocabulary.query_to_class, device=device), persistent=False
        )
        self.precision = precision
        self.pamr_steps = pamr_steps
        self.pamr_stride = tuple(pamr_stride)
        self.prob_thd = prob_thd
        self.logit_scale = logit_scale
        self.slide_stride = slide_stride
        self.slide_crop = slide_crop
        self.area_thd = area_thd
        self.crop_batch_size = crop_batch_size
        self.requires_grad_(False)  # training-free: also keeps DDP wrappers from syncing gradients
        self.to(device)
        if compile:
            self.encoder.compile()

    @property
    def class_names(self) -> list[str]:
        return self.vocabulary.class_names

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary.classes)

    @property
    def device(self) -> torch.device:
        return self.query_features.device

    @staticmethod
    def _autocast(device: torch.device, precision: Precision):
        if precision == "auto":
            precision = "fp16" if device.type == "cuda" else "fp32"
        if precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=HALF_DTYPES[precision])

    def _check_images(self, images: Tensor, what: str = "inputs") -> Tensor:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise InputError(f"{what} must be a B×3×H×W tensor of normalised RGB images, got {shape}")
        patch = self.encoder.patch_size
        if min(images.shape[-2:]) < patch:
            raise InputError(f"{what} of size {tuple(images.shape[-2:])} is smaller than one {patch}×{patch} patch")
        return images.to(self.device)

    @torch.no_grad()
    def dense_features(
        self, crops: Tensor, return_anomalies: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """B×N×D L2-normalised calibrated features of B×3×H×W crops (and each crop's anomaly indices)."""
        crops = self._check_images(crops, "crops")
        with self._autocast(self.device, self.precision):
            features, anomalies = self.encoder(crops, return_anomalies=True)
        features = F.normalize(features.float(), dim=-1)
        if return_anomalies:
            return features, [mask.nonzero().flatten() for mask in anomalies]
        return features

    def crop_logits(self, crops: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """B×Q×h×w query cosine logits of crops, resized (bilinear) to `size` (default: the crop size)."""
        grid = self.encoder.visual.grid_size(*crops.shape[-2:])
        features = self.dense_features(crops)  # B×N×D
        logits = (features @ self.query_features.T).transpose(1, 2)  # B×Q×N
        logits = logits.reshape(crops.shape[0], -1, *grid)
        return F.interpolate(logits, size=size or crops.shape[-2:], mode="bilinear", align_corners=False)

    def _sliding_logits(self, images: list[Tensor]) -> list[Tensor]:
        """Per image Q×H×W logits averaged over windows; windows of all images run batched."""
        sums = [image.new_zeros(len(self.query_features), *image.shape[-2:]) for image in images]
        counts = [image.new_zeros(1, *image.shape[-2:]) for image in images]
        by_shape: dict[tuple[int, int], list[tuple[int, tuple[int, int, int, int]]]] = defaultdict(list)
        for index, image in enumerate(images):
            for window in sliding_windows(*image.shape[-2:], self.slide_crop, self.slide_stride):
                y1, y2, x1, x2 = window
                by_shape[(y2 - y1, x2 - x1)].append((index, window))
        for jobs in by_shape.values():
            for start in range(0, len(jobs), self.crop_batch_size):
                chunk = jobs[start : start + self.crop_batch_size]
                crops = torch.stack([images[i][:, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk])
                for (i, (y1, y2, x1, x2)), logits in zip(chunk, self.crop_logits(crops)):
                    sums[i][:, y1:y2, x1:x2] += logits
                    counts[i][:, y1:y2, x1:x2] += 1
        return [total / count for total, count in zip(sums, counts)]

    @torch.no_grad()
    def query_logits(self, inputs: Tensor, metas: Sequence[dict]) -> list[Tensor]:
        """Per image Q×H×W query cosine logits at its `ori_shape` (PAMR applied when enabled)."""
        inputs = self._check_images(inputs)
        images = [image[:, : meta["img_shape"][0], : meta["img_shape"][1]] for image, meta in zip(inputs, metas)]
        if self.slide_crop > 0:
            logits = self._sliding_logits(images)
        else:
            logits = [self.crop_logits(image[None], size=tuple(meta["ori_shape"][:2]))[0]
                      for image, meta in zip(images, metas)]
        results = []
        for image, meta, image_logits in zip(images, metas, logits):
            size = tuple(meta["ori_shape"][:2])
            image_logits = image_logits[None]
            if image_logits.shape[-2:] != size:
                image_logits = F.interpolate(image_logits, size=size, mode="bilinear", align_corners=False)
            if self.pamr_steps > 0:
                resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
                image_logits = pamr(resized, image_logits, self.pamr_steps, self.pamr_stride)
            results.append(image_logits[0])
        return results

    @staticmethod
    def _metas(inputs: Tensor, data_samples: Sequence[SegDataSample] | None) -> list[dict]:
        shape = tuple(inputs.shape[-2:])
        defaults = dict(ori_shape=shape, img_shape=shape, pad_shape=shape, padding_size=[0, 0, 0, 0])
        if data_samples is None:
            return [dict(defaults) for _ in range(inputs.shape[0])]
        return [{**defaults, **sample.metainfo} for sample in data_samples]

    def predict(self, inputs: Tensor, data_samples: Sequence[SegDataSample] | None = None) -> list[SegDataSample]:
        """Segment a B×3×H×W batch of normalised images; each image is processed exactly as if alone."""
        inputs = self._check_images(inputs)
        metas = self._metas(inputs, data_samples)
        if data_samples is None:
            data_samples = [SegDataSample(metainfo=meta) for meta in metas]
        return self.postprocess_result(self.query_logits(inputs, metas), data_samples)

    def postprocess_result(
        self, query_logits: Tensor | Sequence[Tensor], data_samples: Sequence[SegDataSample] | None = None
    ) -> list[SegDataSample]:
        """Post-process B×Q×H×W query logits (or a list of Q×H×W) into class scores and predictions."""
        if data_samples is None:
            data_samples = [SegDataSample() for _ in range(len(query_logits))]
        for logits, sample in zip(query_logits, data_samples):
            if logits.shape[0] != len(self.query_to_class):
                raise InputError(f"query logits have {logits.shape[0]} channels, the vocabulary has {len(self.query_to_class)} queries")
            scores = class_scores(logits, self.query_to_class, self.num_classes, self.logit_scale)
            if self.area_thd is not None:
                scores = suppress_small_classes(scores, self.area_thd)
            pred = labels(scores, self.prob_thd)
            sample.set_data(dict(seg_logits=PixelData(data=scores), pred_sem_seg=PixelData(data=pred)))
        return list(data_samples)

    def extract_feat(self, inputs: Tensor) -> Tensor:
        """Dense calibrated features of whole inputs (B×N×D)."""
        return self.dense_features(inputs)

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> list[Tensor]:
        """Query logits per image at its original size."""
        return self.query_logits(inputs, batch_img_metas)

    def _forward(self, inputs: Tensor, data_samples: Sequence[SegDataSample] | None = None) -> list[Tensor]:
        return self.query_logits(inputs, self._metas(inputs, data_samples))

    def loss(self, inputs: Tensor, data_samples: Sequence[SegDataSample]) -> dict:
        raise NotImplementedError("SC-CLIP is training-free: there is no loss to compute")
