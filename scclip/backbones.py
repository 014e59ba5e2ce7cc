"""Backbones as users write them, the open_clip backbones we name, and which published settings each takes.

A backbone is written the same way for `eval.py --backbone`, `dist_test.sh BACKBONE=` and
`scclip backbones --resolve`:

- a name of an open_clip backbone record (`metaclip_vitl14_fullcc`, `openclip_vitb16_laion2b`, ...;
  `scclip.clip.records`, one record per named backbone; `scclip backbones` lists them);
- an OpenAI CLIP name (`ViT-B/16`, `ViT-L/14`, ...);
- open_clip's `model:pretrained` pair (`ViT-B-16:laion2b_s34b_b88k`), or a pretrained tag with
  `clip_arch` (`--clip-arch`);
- a checkpoint file: OpenAI's layout, or open_clip's with `clip_arch`.

SC-CLIP's calibration follows the checkpoint's depth inside the segmentor
(`scclip.methods.calibration_defaults`). The benchmark settings (`logit_scale`, `prob_thd`,
`area_thd`) were published for ViT-B/16 and ViT-L/14 only; `scclip.clip.records.settings_backbone`
is the one rule saying whose a backbone of another depth takes, and each record's `config_suffix`
where those settings are (`configs/cfg_<benchmark>.py` and `configs/cfg_<benchmark>_vitl14.py`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from .clip import records
from .clip.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .clip.pretrained import MODEL_URLS
from .clip.records import BACKBONES
from .errors import CheckpointError, InputError

_RESBLOCK_KEY = re.compile(r"visual\.transformer\.resblocks\.(\d+)\.")
_UNSAFE_IN_FOLDER_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def settings_backbone(depth: int) -> str:
    """The name of the published backbone whose benchmark settings a ViT with `depth` blocks takes."""
    return records.settings_backbone(depth).name


@dataclass(frozen=True)
class Backbone:
    """A backbone as given, read enough to configure a model (nothing downloaded yet).

    Attributes:
        label: its name in configs (`backbone`), metrics.json and the summary: the OpenAI or table name,
            the `arch:tag` pair, or the file.
        clip_path: the segmentor's `clip_path`: an OpenAI name, an open_clip tag or a file.
        clip_arch: the segmentor's `clip_arch` (open_clip architecture), None for OpenAI's layout.
        depth: blocks of the image tower.
    """

    label: str
    clip_path: str
    clip_arch: str | None
    depth: int

    @property
    def settings(self) -> str:
        """The published backbone whose benchmark settings this one takes (`settings_backbone`)."""
        return settings_backbone(self.depth)

    @property
    def config_suffix(self) -> str:
        """The ending of the benchmark configs with those settings (`cfg_<benchmark><suffix>.py`)."""
        return BACKBONES[self.settings].config_suffix

    @property
    def folder_name(self) -> str:
        """A file-name-safe name for its runs' work dir (dist_test.sh)."""
        if self.label in BACKBONES:
            return BACKBONES[self.label].folder
        if self.is_tag:
            name = f"{self.clip_arch}_{self.clip_path}"
        else:
            name = Path(self.clip_path).stem
        return _UNSAFE_IN_FOLDER_NAMES.sub("_", name)

    @property
    def is_tag(self) -> bool:
        """Whether `clip_path` is an open_clip pretrained tag (downloaded by `model_settings`)."""
        return self.clip_arch is not None and not Path(self.clip_path).is_file()


def valid_names() -> list[str]:
    """The backbone names accepted besides pairs and files: OpenAI's ViTs and the table's names."""
    return list(BACKBONES)


def _unknown(text: str) -> InputError:
    close = get_close_matches(text, valid_names(), n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return InputError(
        f"backbone {text!r} is not a backbone name, an open_clip ARCH:TAG pair or a checkpoint file: {hint}"
        f"names: {', '.join(valid_names())} (`scclip backbones` describes them)"
    )


def checkpoint_and_arch(text: str | os.PathLike, clip_arch: str | None = None) -> tuple[str, str | None]:
    """(checkpoint, open_clip architecture) to load a backbone as users write it: a name of the table
    becomes its tag and architecture, open_clip's `ARCH:TAG` pair is split, anything else stays."""
    named = BACKBONES.get(str(text))
    if clip_arch is None and named is not None and named.is_open_clip:
        return named.tag, named.arch
    from .clip.openclip import split_backbone

    return split_backbone(text, clip_arch)


def parse_backbone(text: str | os.PathLike, clip_arch: str | None = None) -> Backbone:
    """A backbone as users write it (see the module docstring), checked; open_clip is imported only for its forms.

    Raises:
        InputError: not a name, pair or file (one line listing the names), or a name given with `clip_arch`.
        CheckpointError: an architecture SC-CLIP cannot run, a tag the architecture does not have, a
            ResNet, or a file that is not a ViT CLIP checkpoint.
    """
    text = str(text)
    named = BACKBONES.get(text)
    if named is not None and named.is_open_clip:
        if clip_arch is not None:
            raise InputError(f"backbone {text} is open_clip's {named.arch} already: drop --clip-arch")
        return _open_clip_backbone(text, named.tag, named.arch)
    if clip_arch is None and named is not None:
        return Backbone(text, text, None, named.depth)
    if clip_arch is None and text in MODEL_URLS:
        raise CheckpointError(f"backbone {text} is a ResNet CLIP; SC-CLIP needs a ViT: use one of "
                              f"{', '.join(valid_names())}")
    if clip_arch is not None or ":" in text:
        from .clip.openclip import split_backbone

        path_or_tag, arch = split_backbone(text, clip_arch)
        if arch is not None:
            label = str(path_or_tag) if Path(path_or_tag).is_file() else f"{arch}:{path_or_tag}"
            return _open_clip_backbone(label, str(path_or_tag), arch)
    if Path(text).is_file():
        return _openai_layout_file(Path(text))
    raise _unknown(text)


def _open_clip_backbone(label: str, path_or_tag: str, arch: str) -> Backbone:
    """An open_clip file or tag of `arch`; a QuickGELU tag under a GELU name runs its `-quickgelu` architecture."""
    from .clip import openclip

    depth = openclip.architecture_config(arch)["vision_layers"]  # refuses what SC-CLIP cannot run
    if Path(path_or_tag).is_file():
        return Backbone(label, path_or_tag, arch, depth)
    if not openclip.is_pretrained_tag(arch, path_or_tag):
        raise CheckpointError(
            f"{path_or_tag!r} is neither a file nor an open_clip pretrained tag of {arch} "
            f"(its tags: {', '.join(openclip.pretrained_tags(arch)) or 'none'}); give one of them or a checkpoint file"
        )
    activation = openclip.pretrained_settings(arch, path_or_tag)["activation"]
    if activation and openclip.architecture_config(arch)["activation"] != activation:
        quick = f"{arch}-quickgelu"
        if not openclip.is_pretrained_tag(quick, path_or_tag):
            raise CheckpointError(f"open_clip {arch}:{path_or_tag} was trained with QuickGELU but {arch} runs GELU "
                                  f"and open_clip has no {quick}: give a QuickGELU architecture")
        arch = quick
    return Backbone(label, path_or_tag, arch, depth)


def _openai_layout_file(path: Path) -> Backbone:
    """A checkpoint in OpenAI's layout: a published one goes by its name (found by SHA-256), else by its path."""
    from .clip.loading import load_state_dict
    from .text_cache import file_digest

    digest = file_digest(path)
    for record in records.openai_records():
        if record.sha256 == digest:
            return Backbone(record.name, str(path), None, record.depth)
    # Only the keys are looked at: the tensors are mapped, not read (eval.py locks its run folder after this).
    blocks = {int(match.group(1)) for key in load_state_dict(path, mapped=True)
              if (match := _RESBLOCK_KEY.match(key))}
    if not blocks:
        raise CheckpointError(f"{path} has no ViT image tower (visual.transformer.resblocks): SC-CLIP needs a ViT "
                              "CLIP; for open_clip files give --clip-arch")
    return Backbone(str(path), str(path), None, max(blocks) + 1)


def model_settings(backbone: Backbone, download_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The segmentor settings (`clip_path`, `clip_arch`, `data_preprocessor`) that run `backbone`.

    An open_clip tag is downloaded (on first use) and given as its file, so that the run's identity
    hashes the weights themselves; the normalisation the tag was trained with, when it is not
    CLIP's, becomes the data pre-processor, as the segmentor would choose it for the tag.
    """
    if backbone.clip_arch is None or not backbone.is_tag:
        return dict(clip_path=backbone.clip_path, clip_arch=backbone.clip_arch)
    from .clip import openclip

    path = openclip.download_pretrained(backbone.clip_arch, backbone.clip_path, download_root)
    settings: dict[str, Any] = dict(clip_path=str(path), clip_arch=backbone.clip_arch)
    tag = openclip.pretrained_settings(backbone.clip_arch, backbone.clip_path)
    if (tuple(tag["image_mean"]), tuple(tag["image_std"])) != (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD):
        mean, std = records.pixel_normalisation(tag["image_mean"], tag["image_std"])
        settings["data_preprocessor"] = dict(type="SCCLIPDataPreProcessor", bgr_to_rgb=True, mean=list(mean),
                                             std=list(std))
    return settings


def describe_named() -> list[str]:
    """One line per named open_clip backbone, for `scclip backbones`: name, open_clip pair, depth and settings,
    description and source."""
    rows = [(record.name, f"{record.arch}:{record.tag}",
             f"{record.depth} blocks, {settings_backbone(record.depth)} settings", f"{record.description}, {record.url}")
            for record in records.open_clip_records()]
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return ["  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[3]]) for row in rows]
