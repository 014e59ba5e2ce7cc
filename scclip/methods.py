"""The methods scclip runs, as data: which last block, which knobs, which pipeline differences (docs/method.md#baselines).

A method is a `MethodSpec`: its own settings with their preset values, a function that turns the
resolved settings into an encoder (one of the encoder family, or SC-CLIP's calibrated encoder),
and the two pipeline differences a release has (NACLIP renormalises its stored scores and resizes
whole-image logits through the input size). Settings shared by every method (windows, thresholds,
PAMR, padding) are the segmentor's own arguments and keep SC-CLIP's defaults whatever the method.
What each setting is, its valid values and who takes it are declared in `scclip.settings`, which
checks given values; a method keeps here only its presets and the rules that tie its settings together.
"""
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from difflib import get_close_matches
from typing import Any

from torch import nn

from .calibration import CalibrationConfig, SCCLIPEncoder
from .clip.model import VisionTransformer
from .clip.records import settings_backbone, with_published_settings
from .encoders import DenseEncoder, LastBlock
from .errors import CheckpointError, InputError
from .resclip import ResCLIPEncoder, resclip_config
from .settings import REFUSED, SWITCH_HELP
from .vfm import DEFAULT_VFM

SWITCHES = tuple(SWITCH_HELP)  # SC-CLIP's component switches, in the settings table
CALIBRATION_INDICES = ("pre_adjust_idx", "post_adjust_idx", "multi_start_idx", "multi_end_idx", "res_cls")
CALIBRATION_SETTINGS = (*CALIBRATION_INDICES, "beta", "lof_neighbors", "contamination", "anomaly_detector")

# The backbones with published calibration settings, by ViT depth (docs/method.md#calibration-settings;
# others: #other-depths); the settings are their records' (scclip.clip.records).
_CALIBRATED = {record.depth: record for record in with_published_settings()}
PUBLISHED_CALIBRATION = {depth: dict(record.calibration) for depth, record in _CALIBRATED.items()}

NACLIP_ATTENTIONS = {"naclip": "gaussian+kk", "kk": "kk", "vanilla": "qk", "nonly": "gaussian", "csa": "qq+kk"}


@dataclass(frozen=True)
class MethodSpec:
    """One method: what it changes, where it comes from, its settings and how to build its encoder.

    Attributes:
        name: the `method=` value.
        summary: what the method changes, in one line.
        source: its paper and release.
        settings: the method's own settings (each declared in `scclip.settings`) and their preset
            values (None: chosen from the backbone).
        build_encoder: (image tower, resolved settings) → encoder module.
        renormalise_scores: stored class scores are divided by their sum over classes (NACLIP).
        resize_through_input: whole-image logits go grid → input size → original size (NACLIP).
        checks: rules between the method's settings (each value alone is checked by `scclip.settings`).
        refuses: shared settings the method cannot apply, each with the reason: any value but the
            setting's default is refused (`scclip.settings.check_settings`); the table is `scclip.settings.REFUSED`.
    """

    name: str
    summary: str
    source: str
    settings: Mapping[str, Any]
    build_encoder: Callable[[VisionTransformer, Mapping[str, Any]], nn.Module]
    renormalise_scores: bool = False
    resize_through_input: bool = False
    checks: tuple[Callable[[Mapping[str, Any]], None], ...] = field(default=())
    refuses: Mapping[str, str] = field(default_factory=dict)


def calibration_defaults(depth: int) -> tuple[dict, str]:
    """SC-CLIP's calibration indices and `res_cls` for a ViT with `depth` blocks, and a sentence saying which.

    12 and 24 blocks get the published ViT-B/16 and ViT-L/14 settings; other depths get ViT-B/16's
    layer indices scaled by depth/12 (rounded half up, kept inside the network) and the `res_cls`
    of the nearer published depth (`scclip.clip.records.settings_backbone`).
    """
    if depth in _CALIBRATED:
        return dict(PUBLISHED_CALIBRATION[depth]), f"{depth} blocks: the published {_CALIBRATED[depth].name} settings"
    if depth < 2:
        raise CheckpointError(f"a ViT with {depth} block cannot be calibrated: SC-CLIP needs at least 2 blocks")
    base = min(_CALIBRATED.values(), key=lambda record: record.depth)
    last = depth - 2  # the last intermediate feature index

    def scaled(name: str) -> int:
        return int(base.calibration[name] * depth / base.depth + 0.5)

    end = min(max(scaled("multi_end_idx"), 1), last + 1)
    settings = dict(
        pre_adjust_idx=min(scaled("pre_adjust_idx"), last),
        post_adjust_idx=min(scaled("post_adjust_idx"), last),
        multi_start_idx=min(scaled("multi_start_idx"), end - 1),
        multi_end_idx=end,
        res_cls=settings_backbone(depth).calibration["res_cls"],
    )
    described = ", ".join(f"{name} {value}" for name, value in settings.items())
    return settings, f"{depth} blocks: ViT-B/16's settings scaled to this depth ({described})"


def _plain_encoder(attention: str) -> Callable[[VisionTransformer, Mapping[str, Any]], nn.Module]:
    def build(visual: VisionTransformer, settings: Mapping[str, Any]) -> nn.Module:
        return DenseEncoder(visual, LastBlock(attention=attention, residual=settings["residual"]))

    return build


def _naclip_encoder(visual: VisionTransformer, settings: Mapping[str, Any]) -> nn.Module:
    block = LastBlock(
        attention=NACLIP_ATTENTIONS[settings["attention"]],
        residual=settings["naclip_arch"] == "vanilla",
        gaussian_std=settings["gaussian_std"],
    )
    return DenseEncoder(visual, block)


def _scclip_encoder(visual: VisionTransformer, settings: Mapping[str, Any]) -> nn.Module:
    return SCCLIPEncoder(visual, CalibrationConfig(**{name: settings[name] for name in (*CALIBRATION_SETTINGS, *SWITCHES)}))


def _resclip_encoder(visual: VisionTransformer, settings: Mapping[str, Any]) -> nn.Module:
    return ResCLIPEncoder(visual, resclip_config(settings))


def _check_resclip(settings: Mapping[str, Any]) -> None:
    if not settings["gaussian_std"] > 0:
        raise InputError(f"gaussian_std={settings['gaussian_std']} must be positive for ResCLIP (its bias and smoothing)")


def _proxyclip_encoder(visual: VisionTransformer, settings: Mapping[str, Any]) -> nn.Module:
    from .dino import load_vfm
    from .proxyclip import ProxyCLIPEncoder

    return ProxyCLIPEncoder(visual, load_vfm(settings["vfm"], settings["vfm_path"]), beta=settings["proxy_beta"],
                            gamma=settings["proxy_gamma"], pad_multiple=settings["pad_multiple"])


def _check_naclip(settings: Mapping[str, Any]) -> None:
    if settings["attention"] == "csa" and settings["naclip_arch"] != "vanilla":
        raise InputError("attention='csa' needs naclip_arch='vanilla' (as in NACLIP's release)")
    if settings["attention"] in ("naclip", "nonly") and not settings["gaussian_std"] > 0:
        raise InputError(f"gaussian_std={settings['gaussian_std']} must be positive for attention={settings['attention']!r}")


CLEARCLIP_SOURCE = "ClearCLIP (Lan et al., ECCV 2024), mc-lan/ClearCLIP@ad68a404d55d"
METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "vanilla", "plain CLIP: every patch token's final output", "CLIP (Radford et al., 2021); "
            "as run by SCLIP's and ClearCLIP's releases", {"residual": True}, _plain_encoder("qk"),
        ),
        MethodSpec(
            "maskclip", "last block attends each token to itself (value embeddings)",
            f"MaskCLIP (Zhou et al., ECCV 2022); preset of {CLEARCLIP_SOURCE}", {"residual": True},
            _plain_encoder("identity"),
        ),
        MethodSpec(
            "sclip", "correlative self-attention q·q + k·k in the last block",
            "SCLIP (Wang et al., ECCV 2024), wangf3014/SCLIP@b56bd3014b9e", {"residual": True},
            _plain_encoder("qq+kk"),
        ),
        MethodSpec(
            "clearclip", "q·q attention in the last block, without its residual and MLP",
            CLEARCLIP_SOURCE, {"residual": False}, _plain_encoder("qq"),
        ),
        MethodSpec(
            "naclip", "k·k attention plus a Gaussian neighbourhood bias, last block reduced to its attention",
            "NACLIP (Hajimiri et al., WACV 2025), sinahmr/NACLIP@0cac3a651f75",
            {"naclip_arch": "reduced", "attention": "naclip", "gaussian_std": 5.0}, _naclip_encoder,
            renormalise_scores=True, resize_through_input=True, checks=(_check_naclip,),
        ),
        MethodSpec(
            "resclip", "NACLIP's last block plus blocks 6–9's attention (RCS) and a second pass fed by the "
            "first pass's labels (SFR)",
            "ResCLIP (Yang et al., CVPR 2025), yvhangyang/ResCLIP@0e085f7f52f0",
            # The release has no neutral default: outside a benchmark config, Context59's values.
            {"temp_thd": 0.25, "rcs_weights": (2.0, 0.4), "sfr_weights": (1.8, 0.7), "gaussian_std": 5.0,
             "delete_same_entity": True, "rcs": True, "sfr": True},
            _resclip_encoder, renormalise_scores=True, resize_through_input=True, checks=(_check_resclip,),
            refuses=REFUSED["resclip"],
        ),
        MethodSpec(
            "proxyclip", "last block attends CLIP's values with a VFM's (DINO's) patch similarities, at the VFM's grid",
            "ProxyCLIP (Lan et al., ECCV 2024), mc-lan/ProxyCLIP@e7b767fbc58e; VFM DINO ViT-B/8, "
            "facebookresearch/dino@7c446df5b9f4",
            {"vfm": DEFAULT_VFM, "vfm_path": None, "proxy_beta": 1.2, "proxy_gamma": 3.0, "pad_multiple": 56},
            _proxyclip_encoder, refuses=REFUSED["proxyclip"],
        ),
        MethodSpec(
            "scclip", "anomaly resolution, calibrated last-block attention, feature aggregation, multi-level fusion",
            "SC-CLIP (Bai et al., arXiv 2411.15869), SuleBai/SC-CLIP@0417ba92851e",
            {
                **{name: None for name in CALIBRATION_INDICES},
                "beta": 0.4, "lof_neighbors": 30, "contamination": 0.05, "anomaly_detector": "lof",
                **{name: True for name in SWITCHES},
            },
            _scclip_encoder,
        ),
    )
}


def available_methods() -> list[str]:
    """The `method=` values, SC-CLIP's last."""
    return list(METHODS)


def get_method(name: str) -> MethodSpec:
    """The spec of a method, or one line listing the valid names."""
    if name not in METHODS:
        close = get_close_matches(str(name), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown method {name!r}{hint}: use one of {', '.join(METHODS)}")
    return METHODS[name]


def resolve_settings(method: str, given: Mapping[str, Any], depth: int) -> tuple[dict[str, Any], str | None]:
    """The method's own settings: presets, then calibration defaults by depth, then the given values.

    `given` holds only the method's own settings, each already checked (`scclip.settings.check_settings`).
    Returns the settings and, for SC-CLIP, a sentence saying which calibration defaults were used.
    Raises `InputError` in one line for values that do not fit together or do not fit the depth.
    """
    spec = get_method(method)
    settings = dict(spec.settings)
    note = None
    if method == "scclip":
        defaults, note = calibration_defaults(depth)
        settings.update(defaults)
        _check_explicit_indices(given, depth)
    settings.update({name: value for name, value in given.items() if not (name in CALIBRATION_INDICES and value is None)})
    for check in spec.checks:
        check(settings)
    return settings, note


def _check_explicit_indices(given: Mapping[str, Any], depth: int) -> None:
    """Given calibration indices that do not fit this depth: say which backbone they were meant for."""
    indices = {name: value for name, value in given.items() if name in CALIBRATION_INDICES and value is not None}
    if not indices:
        return
    try:
        CalibrationConfig(**{**calibration_defaults(depth)[0], **indices}).check(depth)
    except InputError as error:
        meant = [
            _CALIBRATED[other].name for other, values in PUBLISHED_CALIBRATION.items()
            if other != depth and all(values.get(name) == value for name, value in indices.items())
        ]
        origin = f" (these are {meant[0]}'s settings" if meant else " ("
        raise InputError(
            f"{error}{origin}{'; ' if meant else ''}this checkpoint has {depth} blocks: "
            f"leave the calibration indices out to follow its depth)"
        ) from None
