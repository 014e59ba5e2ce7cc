"""The CLIP backbones this project names: one record each, like timm's pretrained configs.

Everything that needs a fact about a named backbone reads its record: the loader (OpenAI's download
addresses and digests), `scclip.backbones` (the names `--backbone` accepts, whose published
benchmark settings a depth takes, the work-dir name, the normalisation), SC-CLIP's calibration
defaults (`scclip.methods`), eval.py (which config holds a backbone's published settings) and
`scclip backbones`. Standard library only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

OPENAI_BASE_URL = "https://openaipublic.azureedge.net/clip/models"
HALF = (0.5, 0.5, 0.5)
# CLIP's normalisation on 0-255 pixels as the SC-CLIP release's configs write it.
PIXEL_MEAN = (122.771, 116.746, 104.094)
PIXEL_STD = (68.501, 66.632, 70.323)


@dataclass(frozen=True)
class BackboneRecord:
    """One named CLIP backbone.

    Attributes:
        name: what `--backbone`, `BACKBONE=` and `Segmenter(backbone=)` accept.
        arch: OpenAI's architecture name (`scclip.clip.architectures.ARCHITECTURES`) or open_clip's
            (`-quickgelu` for weights trained with QuickGELU).
        depth: blocks of the image tower.
        url: where the weights come from: OpenAI's file, or the Hugging Face repository open_clip
            downloads the tag from.
        sha256: the file's SHA-256 (OpenAI's, which its address carries); None for an open_clip tag,
            whose file the Hugging Face hub checks by its own SHA-256 (`scclip.clip.openclip`).
        tag: open_clip's pretrained tag; None for OpenAI's weights.
        mean, std: the RGB normalisation (in [0, 1]) the weights were trained with.
        calibration: SC-CLIP's published calibration settings for this backbone (None: not published;
            other depths follow `scclip.methods.calibration_defaults`).
        config_suffix: the ending of the benchmark configs with its published settings
            (`configs/cfg_<benchmark><suffix>.py`); None where none were published.
        folder: its runs' work-dir name (dist_test.sh: `work_dirs/<folder>/`).
        description: what the weights are.
    """

    name: str
    arch: str
    depth: int
    url: str
    sha256: str | None = None
    tag: str | None = None
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    calibration: Mapping[str, Any] | None = field(default=None)
    config_suffix: str | None = None
    folder: str = ""
    description: str = ""

    @property
    def is_open_clip(self) -> bool:
        return self.tag is not None


def _openai(name: str, digest: str, file: str, depth: int, folder: str, **published: Any) -> BackboneRecord:
    return BackboneRecord(name, name, depth, f"{OPENAI_BASE_URL}/{digest}/{file}", digest, folder=folder,
                          description=f"OpenAI CLIP {name}", **published)


def _open_clip(name: str, arch: str, tag: str, depth: int, repo: str, description: str,
               mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
               std: tuple[float, float, float] = OPENAI_CLIP_STD) -> BackboneRecord:
    return BackboneRecord(name, arch, depth, f"https://huggingface.co/{repo}", tag=tag, mean=mean, std=std,
                          folder=name, description=description)


BACKBONES: Mapping[str, BackboneRecord] = MappingProxyType({record.name: record for record in (
    _openai("ViT-B/32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt", 12,
            "vitb32"),
    _openai("ViT-B/16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt", 12,
            "vitb16", config_suffix="",
            calibration=dict(pre_adjust_idx=8, post_adjust_idx=3, multi_start_idx=3, multi_end_idx=10, res_cls=0.3)),
    _openai("ViT-L/14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt", 24,
            "vitl14", config_suffix="_vitl14",
            calibration=dict(pre_adjust_idx=16, post_adjust_idx=6, multi_start_idx=8, multi_end_idx=19, res_cls=0.1)),
    _openai("ViT-L/14@336px", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
            "ViT-L-14-336px.pt", 24, "vitl14_336px"),
    _open_clip("openclip_vitb16_laion2b", "ViT-B-16", "laion2b_s34b_b88k", 12, "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
               "OpenCLIP ViT-B/16 trained on LAION-2B (GELU)"),
    _open_clip("metaclip_vitb16_fullcc", "ViT-B-16-quickgelu", "metaclip_fullcc", 12,
               "timm/vit_base_patch16_clip_224.metaclip_2pt5b",
               "MetaCLIP ViT-B/16 trained on the 2.5B-pair full CommonCrawl curation (QuickGELU)"),
    _open_clip("openclip_vitl14_laion2b", "ViT-L-14", "laion2b_s32b_b82k", 24, "laion/CLIP-ViT-L-14-laion2B-s32B-b82K",
               "OpenCLIP ViT-L/14 trained on LAION-2B (GELU; images normalised with mean = std = 0.5)",
               mean=HALF, std=HALF),
    _open_clip("metaclip_vitl14_fullcc", "ViT-L-14-quickgelu", "metaclip_fullcc", 24,
               "timm/vit_large_patch14_clip_224.metaclip_2pt5b",
               "MetaCLIP ViT-L/14 trained on the 2.5B-pair full CommonCrawl curation (QuickGELU)"),
    _open_clip("openclip_vith14_laion2b", "ViT-H-14", "laion2b_s32b_b79k", 32, "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
               "OpenCLIP ViT-H/14 trained on LAION-2B (GELU; 32 blocks, 16 heads of width 80)"),
    _open_clip("metaclip_vith14_fullcc", "ViT-H-14-quickgelu", "metaclip_fullcc", 32,
               "timm/vit_huge_patch14_clip_224.metaclip_2pt5b",
               "MetaCLIP ViT-H/14 trained on the 2.5B-pair full CommonCrawl curation (QuickGELU)"),
)})


def openai_records() -> list[BackboneRecord]:
    """OpenAI's ViT CLIPs (downloaded by name by `scclip.clip.load`)."""
    return [record for record in BACKBONES.values() if not record.is_open_clip]


def open_clip_records() -> list[BackboneRecord]:
    """The open_clip backbones under a short name (`scclip backbones` lists them)."""
    return [record for record in BACKBONES.values() if record.is_open_clip]


def with_published_settings() -> list[BackboneRecord]:
    """The backbones whose benchmark and calibration settings were published (ViT-B/16, ViT-L/14)."""
    return [record for record in BACKBONES.values() if record.config_suffix is not None]


def settings_backbone(depth: int) -> BackboneRecord:
    """The published backbone whose benchmark settings a ViT with `depth` blocks takes: the nearer depth.

    Up to 18 blocks (ViT-S, ViT-M, ViT-B) take ViT-B/16's settings; deeper ViTs (ViT-L, ViT-H, ViT-g,
    ViT-bigG) take ViT-L/14's, tuned for the larger model. A tie goes to the shallower one.
    """
    return min(with_published_settings(), key=lambda record: (abs(record.depth - depth), record.depth))


def pixel_normalisation(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The pre-processor's mean and std on 0–255 pixels for a normalisation given on [0, 1]; CLIP's own
    as the SC-CLIP release writes it (rounded to three decimals), so its outputs are reproduced exactly."""
    if (tuple(mean), tuple(std)) == (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD):
        return PIXEL_MEAN, PIXEL_STD
    return tuple(255 * value for value in mean), tuple(255 * value for value in std)
