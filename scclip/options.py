"""The command-line flags every entry point shares, declared once: one spelling per meaning.

`scclip segment`, `scclip web`, `scclip export`, `scclip predict` (predict.py), `scclip eval` (eval.py)
and `python -m scclip.runtime segment` build their parsers from these functions, so a flag means
the same thing and is written the same way everywhere (docs/flags.md lists them and who takes which;
tests/test_flags.py reads every parser). Standard library only: the runtime's command imports it
without torch.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import InputError
from .settings import DEFAULTS, SWITCH_HELP, check_settings
from .vfm import add_vfm_option, vfm_settings

RUNTIMES = ("torch", "onnx")
DEVICES = ("cpu", "cuda")
LAUNCHERS = ("none", "pytorch", "slurm", "mpi")
DEFAULT_BACKBONE = "ViT-B/16"
# ONNX Runtime's providers for each --device, best first.
ONNX_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
SWITCHES = tuple(SWITCH_HELP)


def add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """--runtime torch|onnx and --model DIR (an exported model folder)."""
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="torch (default), or onnx: run an exported model folder (--model) with ONNX Runtime")
    add_model_option(parser, help="with --runtime onnx: the folder `scclip export` wrote")


def add_model_option(parser: argparse.ArgumentParser, required: bool = False,
                     help: str = "the exported model folder (scclip export)") -> None:
    """--model DIR: an exported model folder."""
    parser.add_argument("--model", type=Path, metavar="DIR", required=required, help=help)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """--device cpu|cuda (for ONNX Runtime: its CPU or CUDA execution provider)."""
    parser.add_argument("--device", choices=DEVICES,
                        help="where to run (default: cuda when available, else cpu); with --runtime onnx, ONNX "
                             "Runtime's CUDA or CPU execution provider")


def add_backbone_options(parser: argparse.ArgumentParser, default: str | None = DEFAULT_BACKBONE) -> None:
    """--backbone (and --clip-arch, the architecture of an open_clip file or tag; --vfm, ProxyCLIP's second
    backbone)."""
    shown = f" (default: {default})" if default else " (default: the config's)"
    parser.add_argument("--backbone", default=default,
                        help="CLIP name (ViT-B/16, ViT-L/14, ...), a name of `scclip backbones` "
                             "(metaclip_vitl14_fullcc, ...), open_clip's model:pretrained pair "
                             f"(ViT-B-16:laion2b_s34b_b88k) or a checkpoint file{shown}")
    parser.add_argument("--clip-arch",
                        help="open_clip architecture (ViT-B-16, ViT-H-14, ...) of an open_clip checkpoint file or "
                             "pretrained tag given as --backbone")
    add_vfm_option(parser)


def add_method_options(parser: argparse.ArgumentParser, default: str | None = DEFAULTS["method"]) -> None:
    """--method and --set KEY=VALUE (with its aliases --setting, --ablate and --anomaly-detector)."""
    shown = f" (default: {default})" if default else " (default: the config's)"
    parser.add_argument("--method", default=default,
                        help=f"scclip, a baseline (vanilla, maskclip, sclip, clearclip, naclip), resclip or "
                             f"proxyclip{shown}")
    parser.add_argument("--set", "--setting", dest="set", action="append", default=[], metavar="KEY=VALUE",
                        help="a method setting (scclip/settings.py), repeatable: e.g. --set prob_thd=0.3 "
                             "--set anomaly_detector=norm --set slide_crop=0")
    parser.add_argument("--ablate", metavar="SWITCHES",
                        help="switch SC-CLIP components off, comma-separated (--set NAME=false for each): "
                             f"{', '.join(SWITCHES)}")
    parser.add_argument("--anomaly-detector",
                        help="SC-CLIP's anomaly tokens (--set anomaly_detector=...): lof (default, the release) or "
                             "norm (the release's first commit)")


def add_image_option(parser: argparse.ArgumentParser, required: bool = False,
                     help: str = "an image file, or a folder of images") -> None:
    """--image (a file or a folder; --images is the same flag)."""
    parser.add_argument("--image", "--images", dest="image", type=Path, required=required, help=help)


def add_vocabulary_options(parser: argparse.ArgumentParser) -> None:
    """--classes and --vocab."""
    parser.add_argument("--classes",
                        help="comma-separated class names, e.g. 'cat,dog,sky'; join synonyms with '|' ('dog|puppy')")
    parser.add_argument("--vocab",
                        help="a benchmark's vocabulary by name (voc21, ade20k, ...) or a vocabulary file: one class "
                             "per line, synonyms after ', '")


def add_call_options(parser: argparse.ArgumentParser) -> None:
    """The per-call options of a prediction: --pamr, --prob-thd, --no-slide."""
    parser.add_argument("--pamr", action="store_true", help="refine the masks with PAMR")
    parser.add_argument("--prob-thd", type=float,
                        help="pixels whose best score is below this go to the first class (default: "
                             f"{DEFAULTS['prob_thd']:g}, or an exported model's own)")
    parser.add_argument("--no-slide", action="store_true",
                        help="encode the whole image at once instead of 224-pixel sliding windows")


def add_launcher_option(parser: argparse.ArgumentParser, script: str) -> None:
    """`--launcher` (and the `--local_rank` that older launchers pass), for a command that runs as many processes."""
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none",
                        help=f"how the processes were started: none (one process), pytorch (torchrun --nproc_per_node=N "
                             f"{script} ... --launcher pytorch), slurm (srun) or mpi (mpirun; Open MPI)")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse.SUPPRESS)


def parse_setting(text: str) -> tuple[str, Any]:
    """'KEY=VALUE' → (key, value): JSON values (numbers, true/false, null, lists), else the text itself."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise InputError(f"--set {text!r} is not KEY=VALUE, e.g. --set prob_thd=0.3")
    value = value.strip()
    aliases = {"True": "true", "False": "false", "None": "null"}
    try:
        parsed = json.loads(aliases.get(value, value))
    except json.JSONDecodeError:
        parsed = value
    return name.strip(), parsed


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The method settings the command line gives (--set, --ablate, --anomaly-detector, --vfm), not yet checked
    against a method (an exported model checks them against its own, `fixed_by_export`)."""
    settings: dict[str, Any] = dict(parse_setting(text) for text in args.set)
    method = args.method or DEFAULTS["method"]
    if args.ablate:
        names = [name.strip() for name in args.ablate.split(",") if name.strip()]
        unknown = [name for name in names if name not in SWITCHES]
        if unknown:
            raise InputError(f"--ablate {unknown[0]!r} is not a switch of SC-CLIP: choose from {', '.join(SWITCHES)}")
        if method != "scclip":
            raise InputError(f"--ablate switches off parts of SC-CLIP, but --method is {method!r}: use --method scclip")
        settings.update(dict.fromkeys(names, False))
    if args.anomaly_detector is not None:
        if method != "scclip":
            raise InputError(f"--anomaly-detector chooses SC-CLIP's anomaly tokens, but --method is {method!r}: "
                             "use --method scclip")
        settings["anomaly_detector"] = args.anomaly_detector
    settings.update(vfm_settings(getattr(args, "vfm", None), args.method))
    return settings


def method_settings(args: argparse.Namespace) -> dict[str, Any]:
    """`given_settings`, checked against the settings table for --method (`scclip.settings.check_settings`):
    one line for the first problem."""
    settings = given_settings(args)
    check_settings(args.method or DEFAULTS["method"], settings)
    return settings


def command_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Everything --set (and its aliases) and --prob-thd give, checked before anything loads: for --method on
    PyTorch, against the exported model on ONNX Runtime (`prob_thd` acts after the graphs on both)."""
    from .settings import check_value

    settings = given_settings(args)
    if args.prob_thd is not None:
        check_value("prob_thd", args.prob_thd, label=f"--prob-thd {args.prob_thd:g}")
        settings["prob_thd"] = args.prob_thd
    if args.runtime == "torch":
        check_settings(args.method or DEFAULTS["method"], settings)
    elif set(settings) - {"prob_thd"}:
        from .runtime.folder import ModelFolder

        fixed = {name: value for name, value in settings.items() if name != "prob_thd"}
        fixed_by_export(fixed, ModelFolder.open(args.model).meta["settings"], args.model)
    return settings


def onnx_providers(device: str | None) -> list | None:
    """ONNX Runtime's execution providers for --device (None: its default, the CPU); 'cuda:N' (a process of
    a distributed job) runs on GPU N."""
    if device is None:
        return None
    kind, _, index = device.partition(":")
    providers: list = list(ONNX_PROVIDERS[kind])
    if index:
        providers[0] = (providers[0], {"device_id": int(index)})
    return providers


def check_runtime(args: argparse.Namespace, torch_only: tuple[str, ...] = ()) -> None:
    """--runtime and --model agree: onnx needs a model folder, torch takes none; `torch_only` flags
    (given as their attribute names) are refused with onnx, whose exported model fixes them."""
    if args.runtime == "onnx" and args.model is None:
        raise InputError("--runtime onnx needs --model DIR, a folder written by scclip export")
    if args.runtime == "torch" and args.model is not None:
        raise InputError(f"--model {args.model} is an exported model folder: add --runtime onnx to run it")
    if args.runtime != "onnx":
        return
    defaults = {"backbone": DEFAULT_BACKBONE, "method": DEFAULTS["method"]}
    given = [name for name in torch_only if getattr(args, name, None) not in (None, defaults.get(name), [], False)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise InputError(f"--runtime onnx runs the method and backbone exported to {args.model}: drop {flags} "
                         "(export another model to change them)")


def fixed_by_export(settings: Mapping[str, Any], exported: Mapping[str, Any], model: object) -> None:
    """Refuse, in one line naming the exported value, a setting given with another value than the exported
    model in `model` was exported with (the callers leave out what acts after the graphs)."""
    for name, value in settings.items():
        if exported.get(name) == value:
            continue
        if name not in exported:
            raise InputError(f"{name}={value!r}: the model exported to {model} has no setting {name!r} "
                             "(export another model to set it)")
        raise InputError(f"{name}={value!r}: the model in {model} was exported with {name}={exported[name]!r}, which "
                         "it cannot change (export another model with --set to change it)")
