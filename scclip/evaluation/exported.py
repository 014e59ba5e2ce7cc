"""An exported model folder as an mmseg segmentor: `scclip eval --runtime onnx --model DIR` checks a deployment on data.

The benchmark's pipeline is unchanged (mmcv reads and resizes, the pre-processor normalises with the
export's own mean and std); the torch-free runtime (`scclip.runtime.OnnxSegmenter`) computes each
image's coarse logits and full-size labels, so the run differs from PyTorch's only in the graphs'
arithmetic. What the graphs fix (the method, its own settings, the backbone) comes from the export
and is refused in one line when the config asks for another value; what acts after the graphs
(windows, `logit_scale`, the thresholds, PAMR) is the config's, as for PyTorch.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from mmengine.structures import PixelData
from mmseg.models import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor

from ..errors import InputError
from ..options import fixed_by_export
from ..settings import DEFAULTS, MODEL_SETTINGS, Role

EXPORTED_TYPE = "ExportedSegmentor"
# The settings that act after the graphs: the runtime takes the config's.
AFTER_THE_GRAPHS = ("slide_crop", "slide_stride", "logit_scale", "prob_thd", "area_thd", "pamr_steps", "pamr_stride",
                    "pad_to_patch")


def exported_model_config(model: Mapping[str, Any], folder: str | Path) -> dict[str, Any]:
    """The model section that runs the export in `folder` in place of the config's `model`: its vocabulary and
    the settings that act after the graphs; every other maths setting the config gives must be the export's."""
    from ..runtime.folder import ModelFolder

    meta = ModelFolder.open(folder).meta
    method = model.get("method", DEFAULTS["method"])
    if method != meta["method"]:
        raise InputError(f"method={method!r}: the model in {folder} was exported with method={meta['method']!r}, "
                         "which it cannot change (export another model, or drop --method)")
    fixed = {name: value for name, value in model.items() if name in MODEL_SETTINGS and value is not None
             and MODEL_SETTINGS[name].role is Role.MATHS and name not in AFTER_THE_GRAPHS}
    fixed_by_export(fixed, meta["settings"], folder)
    after = {name: model.get(name, meta["settings"][name]) for name in AFTER_THE_GRAPHS}
    own = {name: value for name, value in meta["settings"].items() if name in MODEL_SETTINGS
           and MODEL_SETTINGS[name].own}
    return dict(type=EXPORTED_TYPE, model=str(Path(folder).resolve()), method=meta["method"],
                precision=meta["precision"], name_path=model.get("name_path"), vocabulary=model.get("vocabulary"),
                **after, **own,
                data_preprocessor=dict(type="SCCLIPDataPreProcessor", bgr_to_rgb=True,
                                       mean=meta["normalisation"]["mean"], std=meta["normalisation"]["std"]))


@MODELS.register_module(name=EXPORTED_TYPE)
class ExportedSegmentor(BaseSegmentor):
    """mmseg's test interface over `OnnxSegmenter` (see the module docstring); `device` picks the ONNX
    Runtime provider."""

    def __init__(self, model: str, method: str, precision: str, name_path: str | None = None,
                 vocabulary: Sequence[str] | None = None, device: str | None = None,
                 data_preprocessor: dict | None = None, **settings: Any) -> None:
        """`method`, `precision` and the method's own settings are the export's, recorded with the run; `settings`
        also holds those that act after the graphs (AFTER_THE_GRAPHS)."""
        super().__init__(data_preprocessor=data_preprocessor)
        from ..benchmarks import vocabulary_file
        from ..options import onnx_providers
        from ..runtime import OnnxSegmenter
        from ..vocabulary import Vocabulary

        lines = list(vocabulary) if vocabulary is not None else [
            ", ".join(names) for names in Vocabulary.from_file(vocabulary_file(name_path)).classes]
        self.runtime = OnnxSegmenter(model, classes=lines, providers=onnx_providers(device))
        for name in ("slide_crop", "slide_stride", "logit_scale", "prob_thd", "area_thd", "pamr_steps"):
            setattr(self.runtime, name, settings[name])
        self.runtime.pamr_stride = tuple(settings["pamr_stride"])
        self.runtime.pad_to_patch = bool(settings["pad_to_patch"])
        self.register_buffer("anchor", torch.zeros(0), persistent=False)  # where mmengine moves "the model"

    @torch.no_grad()
    def predict(self, inputs: Tensor, data_samples: Sequence[SegDataSample] | None = None) -> list[SegDataSample]:
        from ..runtime.fullsize import FullSize

        runtime = self.runtime
        samples = list(data_samples) if data_samples is not None else [
            SegDataSample(metainfo=dict(img_shape=inputs.shape[-2:], ori_shape=inputs.shape[-2:])) for _ in inputs]
        for image, sample in zip(inputs, samples):
            height, width = sample.metainfo["img_shape"][:2]
            normalised = image[:, :height, :width].float().cpu().numpy()
            prediction = FullSize(runtime.coarse_logits(normalised), tuple(sample.metainfo["ori_shape"][:2]),
                                  runtime.query_to_class, runtime.num_classes, runtime.logit_scale, runtime.prob_thd,
                                  runtime.area_thd, runtime.pamr_steps, runtime.pamr_stride, runtime.renormalise,
                                  image=normalised)
            labels = torch.from_numpy(prediction.labels())[None]
            sample.set_data(dict(pred_sem_seg=PixelData(data=labels)))
        return samples

    def _forward(self, inputs: Tensor, data_samples: Sequence[SegDataSample] | None = None) -> list[Tensor]:
        raise NotImplementedError("an exported model only predicts")

    def extract_feat(self, inputs: Tensor) -> Tensor:
        raise NotImplementedError("an exported model only predicts")

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        raise NotImplementedError("an exported model only predicts")

    def loss(self, inputs: Tensor, data_samples: Sequence[SegDataSample]) -> dict:
        raise NotImplementedError("an exported model only predicts: there is no loss")
