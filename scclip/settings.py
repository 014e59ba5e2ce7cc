"""Every setting of the segmentor and of an evaluation run, declared once: role, default, valid values, help.

A config's `model` dict, `SCCLIPForSegmentation(...)`, `Segmenter(...)`, the `scclip` command and the
web page all name the same settings; this table says what each one is, and everything that needs
to know reads it: the segmentor and eval.py validate with `check_settings`, the run folder's
identity (`scclip.evaluation.runs`) keeps the predictive ones, the summary
(`scclip.evaluation.summary`) ignores the harmless overrides, and the command line and the web
page check their numbers with `check_value`.

Roles (`Role`), decided by two questions: does the setting change what is predicted (it is then
part of a run's identity, so another value gets another run folder), and does overriding it
still leave a run comparable with the published number?

- model maths: the numbers of a method's maths (windows, logit scale, thresholds, PAMR, padding,
  and each method's own settings). Predictive; an override makes a run not comparable.
- pipeline: what the model is built from and fed with (method, architecture, vocabulary,
  pre-processor). Predictive (the vocabulary by its hash); an override makes a run not comparable.
- harmless override: predictive, or at least part of a run's identity, but an override keeps a run
  comparable: the checkpoint (whether it is the published one is checked on its own, by its
  SHA-256), the precision (half-precision rounding), where the data lies.
- not predictive: where and how fast things run (device, batch sizes, workers, caches,
  compilation). Not part of a run's identity; an override keeps a run comparable.

Which methods take a setting: every method takes the shared ones; a method's own setting (`own`)
is taken by the methods whose preset (`scclip.methods.METHODS[...].settings`) names it, and its
default is that preset.

This module imports nothing torch-side (the ONNX runtime reads it too): `scclip.methods` is
imported only when a method's name or preset is needed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import get_close_matches
from enum import Enum
from types import MappingProxyType, ModuleType
from typing import Any

from .errors import InputError
from .vfm import VFM_BACKBONES


class Role(Enum):
    """What a setting is for; see the module docstring."""

    MATHS = "model maths"
    PIPELINE = "pipeline"
    HARMLESS = "harmless override"
    NOT_PREDICTIVE = "not predictive"

    @property
    def predictive(self) -> bool:
        """Part of a run's identity: another value is another run."""
        return self is not Role.NOT_PREDICTIVE

    @property
    def comparable(self) -> bool:
        """An override still leaves a run comparable with the published number."""
        return self in (Role.HARMLESS, Role.NOT_PREDICTIVE)


class Marker:
    """A default that is not a value: shown by name in messages and documentation."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


PRESET = Marker("the method's preset")
REQUIRED = Marker("required")
FROM_CONFIG = Marker("the config's value")

@dataclass(frozen=True)
class Setting:
    """One setting.

    Attributes:
        name: the argument name (in a config: `<section>.<name>`).
        role: what it is for (`Role`).
        help: what it does, in one line.
        default: its default value, or PRESET (a method's own), REQUIRED or FROM_CONFIG.
        kind: how a value is checked: 'number', 'whole' (number), 'switch' (True/False), 'choice'
            (one of `choices`), 'wholes' (a non-empty list of whole numbers), 'weights' (a pair
            [τ, λ]: a scale above 0 and a share in [0, 1]), 'method' (a method's name), 'none' (None
            only: a key other tools set that means nothing here), or 'any'
            (checked where it is used: a file, a device, a callable).
        minimum, maximum: inclusive bounds of a number (and of each of 'wholes').
        above: an exclusive lower bound of a number.
        choices: the valid values of a 'choice'.
        optional: None is valid too.
        why: why the bounds, said after a value out of them.
        own: a method's own setting (taken by the methods whose preset names it), else every method's.
        section: the config section it lives in: 'model', or 'test_dataloader' for the data loader's.
    """

    name: str
    role: Role
    help: str
    default: Any = REQUIRED
    kind: str = "any"
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    choices: tuple[str, ...] = ()
    optional: bool = False
    why: str = ""
    own: bool = False
    section: str = "model"

    @property
    def key(self) -> str:
        """Its name in a config and in `--cfg-options`: 'model.prob_thd'."""
        return f"{self.section}.{self.name}"

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods that take it (a shared setting: all but those that refuse it)."""
        if self.own:
            return tuple(method for method, spec in _methods().METHODS.items() if self.name in spec.settings)
        return tuple(method for method, spec in _methods().METHODS.items() if self.name not in spec.refuses)

    def default_for(self, method: str) -> Any:
        """Its default under `method` (a method's own setting: that method's preset)."""
        return _methods().get_method(method).settings[self.name] if self.own else self.default

    def check(self, value: Any, label: str | None = None, method: str | None = None) -> None:
        """One line when `value` is not valid for this setting.

        Args:
            value: the value given.
            label: how the value is named in the message (default 'name=value').
            method: the method it is given to, whose default a wrong type's message mentions.
        """
        if value is None and self.optional:
            return
        shown = label or f"{self.name}={value!r}"
        default = self.default_for(method) if method is not None else self.default
        if self.kind == "none":
            if value is not None:
                raise InputError(f"{shown} must be None: {self.why}")
        elif self.kind == "method":
            if not isinstance(value, str):
                raise InputError(f"{shown} must be a method's name: one of {', '.join(_methods().METHODS)}")
            _methods().get_method(value)
        elif self.kind == "choice":
            if not isinstance(value, str) or value not in self.choices:
                raise InputError(f"{shown} is not one of {', '.join(self.choices)}")
        elif self.kind == "switch":
            if not isinstance(value, bool):
                raise InputError(f"{shown} must be True or False (default {default!r})")
        elif self.kind in ("number", "whole"):
            if not _is_number(value, whole=self.kind == "whole"):
                what = "a whole number" if self.kind == "whole" else "a number"
                raise InputError(f"{shown} must be {what}{' or None' if self.optional else ''} (default {default!r})")
            self._check_bounds(float(value), label or f"{self.name}={value}")
        elif self.kind == "weights":
            if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2
                    or not all(_is_number(item, whole=False) for item in value)):
                raise InputError(f"{shown} must be a pair [scale, share] of numbers (default {default!r})")
            scale, share = (float(item) for item in value)
            if not (scale > 0 and 0 <= share <= 1):
                raise InputError(f"{shown}: the scale must be above 0 and the share lie in [0, 1] "
                                 f"({self.why or 'a mix τ·((1−λ)·A + λ·B)'})")
        elif self.kind == "wholes":
            if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value
                    or not all(_is_number(item, whole=True) for item in value)):
                raise InputError(f"{shown} must be a list of whole numbers (default {default!r})")
            for item in value:
                self._check_bounds(float(item), label or f"{self.name}={list(value)!r}", each=True)

    def _check_bounds(self, number: float, shown: str, each: bool = False) -> None:
        """One line for a number outside this setting's bounds (NaN is outside any)."""
        reason = f": {self.why}" if self.why else ""
        none = " or be None" if self.optional else ""
        subject = f"{shown}: each value must" if each else f"{shown} must"
        low, high = self.minimum, self.maximum
        if low is not None and high is not None and not low <= number <= high:
            raise InputError(f"{subject} lie in [{low:g}, {high:g}]{none}{reason}")
        if low is not None and high is None and not number >= low:
            raise InputError(f"{subject} be at least {low:g}{none}{reason}")
        if self.above is not None and not number > self.above:
            raise InputError(f"{subject} be above {self.above:g}{none}{reason}")


def _methods() -> ModuleType:
    """scclip.methods (torch-side), imported when a method's name or preset is first needed."""
    from . import methods

    return methods


def _is_number(value: Any, whole: bool) -> bool:
    """A number (a whole one: an int-like); True/False are not numbers here, nor strings."""
    if isinstance(value, bool):
        return False
    return hasattr(value, "__index__") if whole else hasattr(value, "__float__") and not isinstance(value, str)


SWITCH_HELP = {  # docs/method.md#component-switches
    "anomaly_resolution": "find anomaly tokens and replace them by their neighbours",
    "attention_calibration": "the calibrated last-block attention (off: plain key–key attention)",
    "feature_aggregation": "aggregate tokens by intermediate layers' similarities around the attention",
    "multi_level_fusion": "add the attention of a sum of intermediate layers",
}

SETTINGS: tuple[Setting, ...] = (
    # What the model is built from.
    Setting("type", Role.PIPELINE, "the mmseg model class (configs only)", "SCCLIPForSegmentation"),
    Setting("clip_path", Role.HARMLESS, "a public CLIP name or a checkpoint file (its SHA-256 names the run)"),
    Setting("clip_arch", Role.PIPELINE, "the open_clip architecture of an open_clip tag or file", None),
    Setting("method", Role.PIPELINE, "which method: docs/method.md#method-table", "scclip", "method"),
    Setting("name_path", Role.PIPELINE, "a vocabulary file, or a benchmark's name (voc21, ade20k, ...)", None),
    Setting("vocabulary", Role.PIPELINE, "vocabulary lines, instead of name_path", None),
    Setting("data_preprocessor", Role.PIPELINE, "mmseg pre-processor (default: CLIP's normalisation)", None),
    Setting("init_cfg", Role.PIPELINE, "mmengine's initialisation config (unused: training-free)", None),
    # mmseg's init_model sets both to None before building any model; they mean nothing to a training-free one.
    *(Setting(name, Role.NOT_PREDICTIVE, f"{what} (mmseg's init_model sets it to None)", None, "none", why=why)
      for name, what, why in (
          ("pretrained", "mmseg's backbone weights", "the CLIP weights are clip_path"),
          ("train_cfg", "mmseg's training settings", "SC-CLIP is training-free"))),
    Setting("precision", Role.HARMLESS, "'auto' (fp16 on CUDA, fp32 on the CPU), 'fp32', 'fp16' or 'bf16'",
            "auto", "choice", choices=("auto", "fp32", "fp16", "bf16")),
    # The maths every method shares.
    Setting("slide_crop", Role.MATHS, "sliding-window crop size; 0: the whole image is one crop", 224, "whole",
            minimum=0, why="a crop size in pixels (0: the whole image)"),
    Setting("slide_stride", Role.MATHS, "sliding-window stride", 112, "whole", minimum=1,
            why="a step in pixels"),
    Setting("logit_scale", Role.MATHS, "temperature of the softmax over queries", 40, "number", above=0,
            why="it multiplies cosine similarities"),
    Setting("prob_thd", Role.MATHS, "pixels whose best class score is below this become class 0", 0.0, "number",
            minimum=0, maximum=1, why="it is compared with class probabilities"),
    Setting("area_thd", Role.MATHS, "classes ≥ 1 covering at most this share of the foreground lose (None: off)",
            None, "number", minimum=0, maximum=1, optional=True, why="a share of the foreground area"),
    Setting("pamr_steps", Role.MATHS, "PAMR iterations (0: off)", 0, "whole", minimum=0),
    Setting("pamr_stride", Role.MATHS, "PAMR dilations", (8, 16), "wholes", minimum=1,
            why="a dilation in pixels"),
    Setting("pad_to_patch", Role.MATHS, "zero-pad windows to a patch multiple and cut their logits back (ClearCLIP)",
            False, "switch"),
    # Each method's own maths: defaults are its preset (scclip.methods).
    Setting("residual", Role.MATHS, "keep the last block's residual (and MLP)", PRESET, "switch", own=True),
    Setting("naclip_arch", Role.MATHS, "NACLIP's last block: 'reduced' to its attention, or 'vanilla'", PRESET,
            "choice", choices=("reduced", "vanilla"), own=True),
    Setting("attention", Role.MATHS, "NACLIP's last-block attention (scclip.methods.NACLIP_ATTENTIONS)", PRESET,
            "choice", choices=("naclip", "kk", "vanilla", "nonly", "csa"), own=True),
    Setting("gaussian_std", Role.MATHS, "σ of the Gaussian neighbourhood bias (NACLIP, ResCLIP), in patches", PRESET,
            "number", own=True),
    Setting("temp_thd", Role.MATHS, "ResCLIP: first-pass pixels whose best query probability is below this get "
            "label 0", PRESET, "number", minimum=0, maximum=1, why="it is compared with probabilities", own=True),
    Setting("rcs_weights", Role.MATHS, "ResCLIP: [τ, λ] mixing blocks 6–9's attention into the last block's (RCS)",
            PRESET, "weights", own=True),
    Setting("sfr_weights", Role.MATHS, "ResCLIP: [τ, λ] mixing the first pass's same-label matrix into the "
            "attention (SFR)", PRESET, "weights", own=True),
    Setting("delete_same_entity", Role.MATHS, "ResCLIP: same-label pairs whose path crosses another label decay",
            PRESET, "switch", own=True),
    Setting("rcs", Role.MATHS, "ResCLIP: mix in the intermediate blocks' attention (off: an ablation)", PRESET,
            "switch", own=True),
    Setting("sfr", Role.MATHS, "ResCLIP: the second, label-fed pass (off: an ablation; the first pass's features)",
            PRESET, "switch", own=True),
    *(Setting(name, Role.MATHS, f"{what} (None: follows the backbone's depth)", PRESET, "whole", minimum=0,
              optional=True, why="an index of an intermediate feature", own=True)
      for name, what in (("pre_adjust_idx", "layer whose similarities aggregate before the attention"),
                         ("post_adjust_idx", "layer whose similarities aggregate after the attention"),
                         ("multi_start_idx", "first layer summed for the fusion"),
                         ("multi_end_idx", "one past the last layer summed for the fusion"))),
    Setting("res_cls", Role.MATHS,
            "weight of the class token added after the attention (None: follows the backbone's depth)", PRESET,
            "number", optional=True, own=True),
    Setting("beta", Role.MATHS, "similarity floor of the aggregation", PRESET, "number", own=True),
    Setting("lof_neighbors", Role.MATHS, "k of the Local Outlier Factor", PRESET, "whole", minimum=1,
            own=True),
    Setting("contamination", Role.MATHS, "share of tokens above the LOF quantile (anomalies)", PRESET,
            "number", minimum=0, maximum=1, why="a share of the tokens", own=True),
    Setting("anomaly_detector", Role.MATHS, "how anomaly tokens are found: 'lof' or 'norm' (the first commit)",
            PRESET, "choice", choices=("lof", "norm"), own=True),
    *(Setting(name, Role.MATHS, what, PRESET, "switch", own=True) for name, what in SWITCH_HELP.items()),
    Setting("vfm", Role.PIPELINE, "ProxyCLIP's vision foundation model, by name (scclip.vfm.VFM_BACKBONES)",
            PRESET, "choice", choices=tuple(VFM_BACKBONES), own=True),
    Setting("vfm_path", Role.HARMLESS, "the VFM's weights file, DINO's .pth or .safetensors (None: download vfm; "
            "its SHA-256 names the run)", PRESET, optional=True, own=True),
    Setting("proxy_beta", Role.MATHS, "ProxyCLIP: VFM similarities below proxy_beta × their window's mean are masked",
            PRESET, "number", own=True),
    Setting("proxy_gamma", Role.MATHS, "ProxyCLIP: scale (inverse temperature) of the unmasked proxy logits", PRESET,
            "number", above=0, why="it scales logits before a softmax", own=True),
    Setting("pad_multiple", Role.MATHS, "ProxyCLIP: windows are zero-padded to a multiple of this, logits cut back",
            PRESET, "whole", minimum=1, why="a size in pixels", own=True),
    # Where and how fast.
    Setting("device", Role.NOT_PREDICTIVE, "where the model runs (None: CUDA when available)", None),
    Setting("crop_batch_size", Role.NOT_PREDICTIVE, "crops per encoder call", 16, "whole", minimum=1),
    Setting("text_batch_size", Role.NOT_PREDICTIVE, "prompts per text-encoder call", 256, "whole", minimum=1),
    Setting("download_root", Role.NOT_PREDICTIVE, "where named checkpoints are cached (None: ~/.cache/clip)", None),
    Setting("text_cache", Role.NOT_PREDICTIVE, "reuse text features stored on disk", True, "switch"),
    Setting("clip_model", Role.NOT_PREDICTIVE, "the CLIP of clip_path, already loaded", None),
    Setting("compile", Role.NOT_PREDICTIVE, "torch.compile the encoder", False, "switch"),
    Setting("text_progress", Role.NOT_PREDICTIVE, "called as text_progress(done, total) while text is encoded", None),
    # The data loader's, in a config.
    Setting("dataset.data_root", Role.HARMLESS, "where the benchmark's data lies", FROM_CONFIG,
            section="test_dataloader"),
    *(Setting(name, Role.NOT_PREDICTIVE, what, FROM_CONFIG, section="test_dataloader")
      for name, what in (("num_workers", "data loading processes"), ("batch_size", "images per batch"),
                         ("persistent_workers", "keep the loading processes between epochs"),
                         ("pin_memory", "page-locked batches for the GPU"))),
)

# Shared settings a method's release cannot apply, each with the reason: any value but the default is
# refused (`check_settings`, and per call `check_call_settings`, which the torch-free runtime runs too).
# `scclip.methods` gives each method its row.
REFUSED: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "resclip": {"area_thd": "its release cannot apply it (the branch fails for one image and edits the "
                            "logits after the scores are taken)"},
    "proxyclip": {**dict.fromkeys(("area_thd", "pamr_steps", "pamr_stride"),
                                  "its release has no area threshold and no PAMR"),
                  "pad_to_patch": "its windows are padded to pad_multiple (56) instead"},
})
# The settings that act after the dense features (post-processing): a call may change them
# (`scclip.protocol`); every other setting is the loaded model's.
CALL_SETTINGS = ("prob_thd", "area_thd", "pamr_steps", "pamr_stride")

# What `pamr=True` means where PAMR is a switch (Segmenter, the command line, the web page, the runtime).
PAMR_ON_STEPS = 10
# PAMR's affinity divides each neighbour difference by PAMR_STD_SCALE × the local spread + PAMR_STD_EPS
# (docs/method.md#pamr): constants of the maths, shared by scclip.pamr and the runtime's numpy copy.
PAMR_STD_SCALE = 0.1
PAMR_STD_EPS = 1e-8

BY_KEY: Mapping[str, Setting] = MappingProxyType({setting.key: setting for setting in SETTINGS})
MODEL_SETTINGS: Mapping[str, Setting] = MappingProxyType(
    {setting.name: setting for setting in SETTINGS if setting.section == "model"})
# The segmentor's defaults (a method's own settings default to its preset instead).
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {name: setting.default for name, setting in MODEL_SETTINGS.items() if not isinstance(setting.default, Marker)})


def settings_for(method: str) -> list[str]:
    """Every maths setting `method` takes: the shared ones, then its own."""
    _methods().get_method(method)
    return [name for name, setting in MODEL_SETTINGS.items()
            if setting.role is Role.MATHS and method in setting.methods]


def model_settings(method: str) -> list[str]:
    """Every name a model takes under `method`: its maths settings, then the pipeline's and the others (with
    the shared settings its release does not have, which are accepted at their default only)."""
    maths = settings_for(method)
    return [*maths, *(name for name, setting in MODEL_SETTINGS.items()
                      if (not setting.own or method in setting.methods) and name not in maths)]


def _check_refused(method: str, name: str, value: Any, prefix: str) -> None:
    """One line for a shared setting `method` refuses, given a value other than its default (a list equals a tuple)."""
    default = MODEL_SETTINGS[name].default
    if value == default or (isinstance(value, (list, tuple)) and isinstance(default, (list, tuple))
                            and list(value) == list(default)):
        return
    reason = REFUSED[method][name]
    raise InputError(f"method {method!r} cannot take {prefix}{name}={value!r}: {reason}; "
                     f"leave {prefix}{name} at {default!r}")


def check_value(name: str, value: Any, label: str | None = None) -> None:
    """One line when `value` is not valid for model setting `name` (e.g. `--prob-thd 5`, given as `label`)."""
    MODEL_SETTINGS[name].check(value, label)


def check_settings(method: str, values: Mapping[str, Any], prefix: str = "", advice: str = "") -> None:
    """Validate a model's settings under `method`, naming the first problem in one line.

    Refused: an unknown method (with the closest name), a setting `method` does not take (with the
    closest valid name and the methods that take it), a value of the wrong type (with the default),
    out of its bounds or not one of its choices.

    Args:
        method: the method the settings are for.
        values: setting name → value; settings not given are not checked.
        prefix: how the names are shown: '' (arguments: 'prob_thd=2') or 'model.' (a config's keys).
        advice: said after a value's problem (e.g. where to fix it).
    """
    _methods().get_method(method)
    valid = model_settings(method)
    for name in values:
        if name not in valid:
            raise InputError(_not_taken(method, name, valid, prefix))
    refused = REFUSED.get(method, {})
    for name, value in values.items():
        setting = MODEL_SETTINGS[name]
        if name in refused:
            _check_refused(method, name, value, prefix)
        try:
            setting.check(value, f"{prefix}{name}={value!r}" if prefix else None, method)
        except InputError as error:
            raise InputError(f"{error}; {advice}" if advice else str(error)) from None


def check_call_settings(method: str, values: Mapping[str, Any]) -> None:
    """Validate one call's settings under `method` (standard library only: the runtime runs it too): only
    `CALL_SETTINGS`, each refused in the one line `check_settings` gives when a model is built with it."""
    for name, value in values.items():
        if name not in CALL_SETTINGS:
            raise InputError(f"{name!r} is not a per-call option (those are {', '.join(CALL_SETTINGS)}, pamr): "
                             "it changes the dense features, so give it when the model is built")
        if name in REFUSED.get(method, {}):
            _check_refused(method, name, value, "")
        MODEL_SETTINGS[name].check(value)


def _not_taken(method: str, name: str, valid: list[str], prefix: str) -> str:
    """The message for a setting `method` does not take: the closest valid name and who takes it."""
    close = get_close_matches(name, valid, n=1)
    owners = [other for other, spec in _methods().METHODS.items() if name in spec.settings]
    where = f"it is a setting of {', '.join(owners)}" if owners else ""
    if prefix:  # a config's key, as eval.py shows it
        hint = f"did you mean {prefix}{close[0]}? " if close else ""
        return (f"{prefix}{name} is not a setting of method {method!r}: {hint}{where + '; ' if where else ''}"
                f"valid settings: {', '.join(valid)}")
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"method {method!r} takes no setting {name!r}{hint}{'; ' + where if where else ''}; "
            f"its settings: {', '.join(settings_for(method))}")


def predictive(name: str) -> bool:
    """Whether model setting `name` is part of a run's identity (an unknown name is, to be safe)."""
    setting = MODEL_SETTINGS.get(name)
    return setting is None or setting.role.predictive


def harmless_override(key: str) -> bool:
    """Whether overriding config entry `key` ('model.device') keeps a run comparable with the published number."""
    setting = BY_KEY.get(key)
    return setting is not None and setting.role.comparable
