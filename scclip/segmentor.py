"""SCCLIPForSegmentation: SC-CLIP and its baselines as one mmseg segmentor (docs/method.md#the-segmentor)."""
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmengine.structures import PixelData
from mmseg.models import BaseSegmentor
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from .benchmarks import vocabulary_file
from .clip import CLIP, load
from .clip.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .clip.loading import default_device
from .clip.records import pixel_normalisation
from .errors import InputError, VocabularyError
from .methods import get_method, resolve_settings
from .pamr import pamr
from .postprocess import PostProcessing
from .settings import DEFAULTS, check_settings
from .text import Vocabulary, encode_queries, load_templates
from .text_cache import TextFeatureCache
from .windows import patch_padding, window_batches

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
        return dict(inputs=self.normalise(inputs), data_samples=data.get("data_samples"))

    def normalise(self, images: Sequence[Tensor]) -> Tensor:
        """B×3×H×W normalised batch of 3×h×w RGB pixel tensors (0–255), zero-padded to the largest."""
        images = [(image.to(self.device).float() - self.mean) / self.std for image in images]
        height = max(image.shape[-2] for image in images)
        width = max(image.shape[-1] for image in images)
        batch = images[0].new_zeros(len(images), images[0].shape[0], height, width)
        for index, image in enumerate(images):
            batch[index, :, : image.shape[-2], : image.shape[-1]] = image
        return batch


def default_preprocessor(clip_model: CLIP) -> SCCLIPDataPreProcessor:
    """The normalisation the checkpoint was trained with (CLIP's, or some open_clip tags' own); images are
    read as BGR by mmcv and flipped to RGB."""
    mean, std = pixel_normalisation(getattr(clip_model, "image_mean", OPENAI_CLIP_MEAN),
                                    getattr(clip_model, "image_std", OPENAI_CLIP_STD))
    return SCCLIPDataPreProcessor(mean=mean, std=std, bgr_to_rgb=True)


@MODELS.register_module()
class SCCLIPForSegmentation(BaseSegmentor):
    """Training-free open-vocabulary segmentation with CLIP: SC-CLIP, its ablations and its baselines.

    Args:
        clip_path: a public CLIP model name (e.g. 'ViT-B/16') or a checkpoint file.
        name_path: vocabulary file, one class per line, synonyms separated by ', '; or a benchmark's name
            ('voc21', 'ade20k', ...: its vocabulary shipped with the package).
        device: where the model runs; None = CUDA when available, else CPU.
        method: 'scclip' (default), 'vanilla', 'maskclip', 'sclip', 'clearclip', 'naclip' or 'proxyclip'
            (docs/method.md#method-table).
        clip_arch: an open_clip architecture name when `clip_path` is an open_clip tag or file.
        pamr_steps: PAMR iterations (0 = off).
        pamr_stride: PAMR dilations.
        prob_thd: pixels whose best class score is below this become class 0.
        logit_scale: temperature of the softmax over queries.
        slide_stride: sliding-window stride.
        slide_crop: sliding-window crop size; 0 = the whole image is one crop.
        area_thd: classes ≥ 1 whose predicted area is at most this share of the foreground lose.
        pad_to_patch: zero-pad windows to a patch multiple and cut their logits back (ClearCLIP's release).
        vocabulary: vocabulary lines, used instead of `name_path`.
        precision: 'auto' = fp16 autocast on CUDA and fp32 on CPU; 'fp32', 'fp16' or 'bf16' force one.
        crop_batch_size: crops per encoder call.
        text_batch_size: prompts per text-encoder call.
        download_root: where named checkpoints are cached (default ~/.cache/clip).
        text_cache: reuse query features stored on disk for this checkpoint, vocabulary and templates
            (folder `$SCCLIP_CACHE_DIR`, default ~/.cache/scclip); False encodes them and writes nothing.
        clip_model: the CLIP of `clip_path`, already loaded (saves reading the file again).
        compile: `torch.compile` the encoder (worth it on CUDA for long runs; each new crop shape
            compiles once, tens of seconds).
        text_progress: called as `text_progress(done, total)` (prompts) while the vocabulary is encoded
            (not when its features come from the text cache); default: a bar or log line for long encodings.
        pretrained, train_cfg: None only; mmseg's `init_model` sets them before building any segmentor.
        **settings: the method's own settings (`scclip.settings.settings_for(method)`): `residual`
            (vanilla, maskclip, sclip, clearclip); `naclip_arch`, `attention`, `gaussian_std` (naclip);
            calibration indices, `res_cls`, `beta`, `lof_neighbors`, `contamination`, `anomaly_detector`
            ('lof' or 'norm') and the switches
            `anomaly_resolution`, `attention_calibration`, `feature_aggregation`, `multi_level_fusion`
            (scclip; indices not given follow the backbone's depth); `vfm`, `vfm_path`, `proxy_beta`,
            `proxy_gamma`, `pad_multiple` (proxyclip, which takes no area_thd, PAMR or pad_to_patch).
    """

    def __init__(
        self,
        clip_path: str,
        name_path: str | None = None,
        device: str | torch.device | None = None,
        method: str = DEFAULTS["method"],
        clip_arch: str | None = DEFAULTS["clip_arch"],
        pamr_steps: int = DEFAULTS["pamr_steps"],
        pamr_stride: Sequence[int] = DEFAULTS["pamr_stride"],
        prob_thd: float = DEFAULTS["prob_thd"],
        logit_scale: float = DEFAULTS["logit_scale"],
        slide_stride: int = DEFAULTS["slide_stride"],
        slide_crop: int = DEFAULTS["slide_crop"],
        area_thd: float | None = DEFAULTS["area_thd"],
        pad_to_patch: bool = DEFAULTS["pad_to_patch"],
        vocabulary: Sequence[str] | None = DEFAULTS["vocabulary"],
        precision: Precision = DEFAULTS["precision"],
        crop_batch_size: int = DEFAULTS["crop_batch_size"],
        text_batch_size: int = DEFAULTS["text_batch_size"],
        download_root: str | None = DEFAULTS["download_root"],
        text_cache: bool = DEFAULTS["text_cache"],
        clip_model: CLIP | None = DEFAULTS["clip_model"],
        compile: bool = DEFAULTS["compile"],
        text_progress: Callable[[int, int], None] | None = DEFAULTS["text_progress"],
        data_preprocessor: dict | None = DEFAULTS["data_preprocessor"],
        init_cfg: dict | None = DEFAULTS["init_cfg"],
        pretrained: None = DEFAULTS["pretrained"],
        train_cfg: None = DEFAULTS["train_cfg"],
        **settings,
    ) -> None:
        # Defaults, valid values and who takes each setting: scclip.settings. Checked before a checkpoint is read.
        check_settings(method, dict(
            pamr_steps=pamr_steps, pamr_stride=pamr_stride, prob_thd=prob_thd, logit_scale=logit_scale,
            slide_stride=slide_stride, slide_crop=slide_crop, area_thd=area_thd, pad_to_patch=pad_to_patch,
            precision=precision, crop_batch_size=crop_batch_size, text_batch_size=text_batch_size,
            text_cache=text_cache, compile=compile, pretrained=pretrained, train_cfg=train_cfg, **settings,
        ))
        spec = get_method(method)
        if (name_path is None) == (vocabulary is None):
            raise VocabularyError("give exactly one of name_path (a vocabulary file) and vocabulary (a list of lines)")
        device = torch.device(device) if device is not None else default_device()
        parsed_vocabulary = (
            Vocabulary.from_file(vocabulary_file(name_path)) if name_path is not None
            else Vocabulary.from_lines(vocabulary)
        )
        if clip_model is None:
            load_options = dict(device=device, download_root=download_root)
            if clip_arch is not None:
                load_options["arch"] = clip_arch
            clip_model, _ = load(clip_path, **load_options)
        if data_preprocessor is None:
            data_preprocessor = default_preprocessor(clip_model)
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.vocabulary = parsed_vocabulary
        clip_model = clip_model.to(device)
        depth = len(clip_model.visual.transformer.resblocks)
        own_settings, calibration_note = resolve_settings(method, settings, depth)
        if calibration_note is not None:
            MMLogger.get_current_instance().info(f"SC-CLIP calibration for {clip_path}: {calibration_note}")
        self.encoder = spec.build_encoder(clip_model.visual, own_settings)
        self.method = method
        self.method_spec = spec
        self.clip_path = str(clip_path)
        self.clip_arch = clip_arch
        self.precision = precision
        self.text_settings = dict(batch_size=text_batch_size, cache=text_cache, progress=text_progress)
        query_features = self.encode_vocabulary(self.vocabulary, clip_model)
        self.register_buffer("query_features", query_features, persistent=False)
        self.register_buffer(
            "query_to_class", torch.tensor(self.vocabulary.query_to_class, device=device), persistent=False
        )
        self.post = PostProcessing(
            logit_scale=logit_scale, prob_thd=prob_thd, area_thd=area_thd, pamr_steps=pamr_steps,
            pamr_stride=tuple(pamr_stride), renormalise=spec.renormalise_scores,
        )
        self.slide_stride = slide_stride
        self.slide_crop = slide_crop
        self.pad_to_patch = pad_to_patch
        # Windows are padded to a multiple of this (0: never): the encoder's own rule (ProxyCLIP's 56), else the
        # patch with pad_to_patch (ClearCLIP).
        self.pad_multiple = getattr(self.encoder, "pad_multiple", 0) or (self.encoder.patch_size if pad_to_patch else 0)
        self.crop_batch_size = crop_batch_size
        self.method_settings = dict(
            method=method, slide_crop=slide_crop, slide_stride=slide_stride, logit_scale=logit_scale,
            prob_thd=prob_thd, area_thd=area_thd, pamr_steps=pamr_steps, pamr_stride=list(self.post.pamr_stride),
            pad_to_patch=pad_to_patch, **own_settings,
        )
        self.requires_grad_(False)  # training-free: also keeps DDP wrappers from syncing gradients
        self.to(device)
        if compile:
            self.encoder.compile()

    def encode_vocabulary(self, vocabulary: Vocabulary, clip_model: CLIP) -> Tensor:
        """Q×D float32 query features of a vocabulary with `clip_model` (this segmentor's CLIP), read from the
        on-disk text cache when it is on; a `scclip.Segmenter` encodes other vocabularies with it."""
        device = next(clip_model.parameters()).device
        text = self.text_settings
        templates = load_templates()

        def encode() -> torch.Tensor:
            with self._autocast(device, self.precision):
                return encode_queries(clip_model, vocabulary.queries, templates, batch_size=text["batch_size"],
                                      progress=text["progress"])

        if not text["cache"]:
            return encode().float()
        cache_settings = dict(precision=self.precision, device=device.type, batch_size=text["batch_size"])
        if self.clip_arch is not None:
            cache_settings["clip_arch"] = self.clip_arch
        # An open_clip tag names no file: the cache keys on the file the loader resolved it to.
        checkpoint = getattr(clip_model, "checkpoint_path", None) if self.clip_arch is not None else None
        return TextFeatureCache().get_or_compute(
            checkpoint or self.clip_path, vocabulary.queries, templates, cache_settings, encode
        ).to(device).float()

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

    def encoder_queries(self, queries: Tensor | None = None) -> dict[str, Tensor | float]:
        """What an encoder that declares `needs_queries` (ResCLIP's first pass) is handed with each call:
        `queries` (default: this segmentor's vocabulary's query features)."""
        if not getattr(self.encoder, "needs_queries", False):
            return {}
        return dict(queries=self.query_features if queries is None else queries, logit_scale=self.post.logit_scale)

    def output_grid(self, height: int, width: int) -> tuple[int, int]:
        """The grid of the encoder's dense features for an H×W crop: CLIP's patch grid, or the encoder's own
        (`output_grid`, e.g. ProxyCLIP's VFM grid)."""
        encoder_grid = getattr(self.encoder, "output_grid", None)
        return encoder_grid(height, width) if encoder_grid is not None else self.encoder.visual.grid_size(height, width)

    @torch.no_grad()
    def dense_features(
        self, crops: Tensor, return_anomalies: bool = False, queries: Tensor | None = None
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """B×N×D L2-normalised calibrated features of B×3×H×W crops (and each crop's anomaly indices); `queries`:
        the query features an encoder that needs them is given (default: this segmentor's)."""
        crops = self._check_images(crops, "crops")
        with self._autocast(self.device, self.precision):
            features, anomalies = self.encoder(crops, return_anomalies=True, **self.encoder_queries(queries))
        features = F.normalize(features.float(), dim=-1)
        if return_anomalies:
            return features, [mask.nonzero().flatten() for mask in anomalies]
        return features

    def crop_logits(self, crops: Tensor, size: tuple[int, int] | str | None = None, pad: bool = False,
                    queries: Tensor | None = None) -> Tensor:
        """B×Q×h×w query cosine logits of crops, resized (bilinear) to `size` (default: the crop size;
        'grid': not resized, one logit per patch); `queries`: Q×D query features (default: this segmentor's).

        With `pad`, a crop whose sides are not multiples of `pad_multiple` is zero-padded to them first,
        and its logits are resized to the padded size and cut back to the crop (ClearCLIP's and
        ProxyCLIP's windows).
        """
        height, width = crops.shape[-2:]
        left, right, top, bottom = patch_padding(height, width, self.pad_multiple or self.encoder.patch_size) if pad else (0, 0, 0, 0)
        if left or right or top or bottom:
            crops = F.pad(crops, (left, right, top, bottom))
        grid = self.output_grid(*crops.shape[-2:])
        queries = self.query_features if queries is None else queries
        features = self.dense_features(crops, queries=queries)  # B×N×D
        logits = (features @ queries.T).transpose(1, 2)  # B×Q×N
        logits = logits.reshape(crops.shape[0], -1, *grid)
        if size == "grid":
            return logits
        logits = F.interpolate(logits, size=crops.shape[-2:] if pad else size or crops.shape[-2:],
                               mode="bilinear", align_corners=False)
        if pad:
            logits = logits[..., top : top + height, left : left + width]
            if size is not None and tuple(size) != (height, width):
                logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits

    def _sliding_logits(self, images: list[Tensor], queries: Tensor) -> list[Tensor]:
        """Per image Q×H×W logits averaged over windows; windows of all images run batched."""
        sums = [image.new_zeros(len(queries), *image.shape[-2:]) for image in images]
        counts = [image.new_zeros(1, *image.shape[-2:]) for image in images]
        sizes = [tuple(image.shape[-2:]) for image in images]
        for chunk in window_batches(sizes, self.slide_crop, self.slide_stride, self.crop_batch_size):
            crops = torch.stack([images[i][:, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk])
            for (i, (y1, y2, x1, x2)), logits in zip(chunk, self.crop_logits(crops, pad=self.pad_multiple > 0,
                                                                              queries=queries)):
                sums[i][:, y1:y2, x1:x2] += logits
                counts[i][:, y1:y2, x1:x2] += 1
        return [total / count for total, count in zip(sums, counts)]

    @torch.no_grad()
    def coarse_logits(self, inputs: Tensor, metas: Sequence[dict],
                      queries: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Per image: Q×h×w query logits before the final resize, and the 3×H'×W' input they came from;
        `queries`: the Q×D query features of another vocabulary (default: this segmentor's).

        The logits are at the input size with windows (and for methods that resize through the
        input size), else at the patch grid; `full_size_logits` (or `scclip.fullres` for photos, in
        blocks) resizes them to the original size and applies PAMR.
        """
        inputs = self._check_images(inputs)
        images = [image[:, : meta["img_shape"][0], : meta["img_shape"][1]] for image, meta in zip(inputs, metas)]
        queries = self.query_features if queries is None else queries
        if self.slide_crop > 0:
            logits = self._sliding_logits(images, queries)
        else:
            # Whole image: one crop, never padded; NACLIP resizes through the input size first.
            size = None if self.method_spec.resize_through_input else "grid"
            logits = [self.crop_logits(image[None], size=size, queries=queries)[0] for image in images]
        return list(zip(logits, images))

    def full_size_logits(self, logits: Tensor, image: Tensor, size: tuple[int, int]) -> Tensor:
        """Q×H×W logits at the original `size`: bilinear from the coarse logits, then PAMR when enabled."""
        logits = logits[None]
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if self.post.pamr_steps > 0:
            resized = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)
            logits = pamr(resized, logits, self.post.pamr_steps, self.post.pamr_stride)
        return logits[0]

    @torch.no_grad()
    def query_logits(self, inputs: Tensor, metas: Sequence[dict]) -> list[Tensor]:
        """Per image Q×H×W query cosine logits at its `ori_shape` (PAMR applied when enabled)."""
        return [self.full_size_logits(logits, image, tuple(meta["ori_shape"][:2]))
                for (logits, image), meta in zip(self.coarse_logits(inputs, metas), metas)]

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
            scores, pred = self.post(logits, self.query_to_class, self.num_classes)
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
