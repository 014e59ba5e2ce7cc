"""`scclip export`: every method as ONNX graphs and a model.json, for the torch-free runtime (docs/deploy.md).

The graphs are traced from the very modules the PyTorch path runs (`SCCLIPForSegmentation`'s
encoder and CLIP's text tower), with the TorchScript-based exporter (`torch.onnx.export(...,
dynamo=False)`): it records the size arithmetic of a trace as graph operations, so one graph serves
every batch size and crop size, while the torch.export-based exporter needs onnxscript (not a
dependency here) and guards on the data-dependent sizes below. Five computations of the PyTorch
path do not trace into a graph valid for every size; while exporting (`traceable_maths`) they are
replaced by these equivalents, which compute the same values with operations ONNX has:
- the bicubic resampling of the position embedding to the crop's patch grid (its scale depends on
  the grid): a product with two interpolation matrices built in the graph, PyTorch's bicubic
  kernel's source positions and weights (A = −0.75, edges clamped), the identity at the trained grid;
- LOF's k nearest neighbours (k = min(neighbours, N−1) from the token count) and the
  (1 − contamination) quantile: a sort and `torch.quantile`'s own interpolation between the two
  ranks, rows with a NaN giving no anomaly as `torch.quantile`'s NaN does;
- the norm detector's top-k scatter: a comparison of token indices with the top-k indices;
- anomaly resolution's 3×3 neighbour sums: the same convolution, its kernel shaped by the (fixed)
  token width rather than a traced size;
- NACLIP's Gaussian neighbourhood bias: built from the grid in float64 in the graph;
- ResCLIP's patch vote (a bincount): a comparison with every query index, summed per patch;
- ResCLIP's path check (chunks of pairs in a loop whose length depends on the grid): the release's
  direct form, every pair's D+1 walk points at once, with the steps t_k read from a table of
  `torch.linspace` itself (its rounding decides walks that pass exactly between two patches).
ResCLIP's image graph takes the query features as a second input (`queries`, Q×D, L2-normalised):
its first pass labels the crop with them. ProxyCLIP's VFM (DINO) is traced into the same image
graph; its positions use the first replacement.
Each replacement is checked against the original (tests/test_onnx.py), and every export is
compared with the PyTorch path on the spot: a difference beyond tolerance fails the export.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import calibration, dino, encoders, resclip
from .bpe import CONTEXT_LENGTH, VOCAB_FILE
from .clip import model as clip_model_module
from .clip.tokenizer import VOCAB_PATH, tokenize
from .errors import InputError, ScclipError
from .settings import DEFAULTS

OPSET = 17
FORMAT_VERSION = 1
IMAGE_GRAPH = "image_encoder.onnx"
TEXT_GRAPH = "text_encoder.onnx"
MODEL_JSON = "model.json"
PRECISIONS = ("fp32", "fp16")
# On-the-spot comparison with PyTorch: features are unit vectors; fp16 graphs keep about 3 digits.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
TEXT_TOLERANCE = {"fp32": 1e-5, "fp16": 2e-2}
BICUBIC_A = -0.75  # PyTorch's bicubic kernel
MAX_GRID_SIDE = 512  # ResCLIP's walk steps are tabulated up to this many patches per side (8192 px at patch 16)
CHECK_QUERIES = 5  # query features the image graph of a method that takes them is checked with


class ExportError(ScclipError):
    """An export could not be written or does not reproduce the PyTorch path."""


# ---------------------------------------------------------------- graph-friendly equivalents


def _size(x: torch.Tensor, dim: int) -> torch.Tensor:
    """A size of `x` as a 0-dim int64 tensor: recorded as a graph operation while tracing."""
    return torch._shape_as_tensor(x)[dim]


def bicubic_matrix(out_size: torch.Tensor | int, in_size: int, identity: torch.Tensor) -> torch.Tensor:
    """out×in float32 matrix M with M·x = PyTorch's bicubic resize (align_corners=False) of x along one axis
    with scale_factor (out + 0.1)/in, as `resample_position_embedding` calls it; the identity where `identity`."""
    out_size = torch.as_tensor(out_size)
    scale = (1.0 / ((out_size.double() + 0.1) / in_size)).float()
    source = scale * (torch.arange(out_size, dtype=torch.float32) + 0.5) - 0.5
    start = torch.floor(source)
    t = source - start
    a = BICUBIC_A

    def near(x: torch.Tensor) -> torch.Tensor:  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x: torch.Tensor) -> torch.Tensor:  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = (far(t + 1), near(t), near(1 - t), far(2 - t))
    columns = torch.arange(in_size, dtype=torch.int64)
    first = start.to(torch.int64)
    matrix = torch.zeros(1, in_size)
    for offset, weight in enumerate(weights):
        index = torch.clamp(first - 1 + offset, 0, in_size - 1)
        matrix = matrix + weight[:, None] * (index[:, None] == columns[None, :]).float()
    eye = (torch.arange(out_size, dtype=torch.int64)[:, None] == columns[None, :]).float()
    return torch.where(identity, eye, matrix)


def resample_position_embedding(pos_embed: torch.Tensor, grid: tuple[Any, Any], trained_grid: int) -> torch.Tensor:
    """`scclip.clip.model.resample_position_embedding` as two matrix products, for any traced grid."""
    h, w = (torch.as_tensor(size) for size in grid)
    identity = (h == trained_grid) & (w == trained_grid)
    cls_pos, patch_pos = pos_embed[:1], pos_embed[1:]
    width = pos_embed.shape[-1]
    patch_pos = patch_pos.float().reshape(trained_grid, trained_grid, width).permute(2, 0, 1)  # C×g×g
    rows = bicubic_matrix(h, trained_grid, identity)
    cols = bicubic_matrix(w, trained_grid, identity)
    resampled = rows @ patch_pos @ cols.T  # C×h×w
    patch_pos = resampled.permute(1, 2, 0).reshape(-1, width).to(pos_embed.dtype)
    return torch.cat([cls_pos, patch_pos], dim=0)


def local_outlier_factor(x: torch.Tensor, neighbors: int = 30) -> torch.Tensor:
    """`scclip.calibration.local_outlier_factor` with k taken from the token count in the graph."""
    n = _size(x, 1)
    k = torch.clamp(n - 1, min=1, max=neighbors)
    dist = calibration.squared_distances(x)
    index = torch.arange(n)
    dist = dist.masked_fill(index[:, None] == index[None, :], float("inf"))  # a token is not its own neighbour
    knn_dist, knn_idx = torch.topk(dist, k, dim=-1, largest=False)  # B×N×k
    kdist = knn_dist[..., -1].float()
    finite_max = torch.finfo(torch.float32).max
    kdist = torch.where(torch.isnan(kdist), torch.full_like(kdist, calibration.NAN_REACH), kdist)  # nan_to_num
    kdist = torch.where(torch.isinf(kdist) & (kdist > 0), torch.full_like(kdist, finite_max), kdist)
    lrd = 1.0 / kdist
    neighbour_lrd = torch.gather(lrd[:, None, :].expand(-1, n, -1), 2, knn_idx)
    lof = (neighbour_lrd / lrd[..., None]).mean(-1)
    return torch.where(n > 1, lof, torch.ones_like(lof))


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """`torch.quantile(values, q, dim=-1, keepdim=True)` (linear interpolation, NaN rows → NaN) in graph operations."""
    ordered, _ = torch.sort(values, dim=-1)
    last = _size(values, -1) - 1
    rank = torch.tensor(q, dtype=values.dtype) * last.to(values.dtype)
    below = rank.to(torch.int64)
    above = torch.ceil(rank).to(torch.int64)
    weight = rank - below.to(values.dtype)
    batch = values.shape[:-1]
    low = torch.gather(ordered, -1, below.expand(*batch, 1))
    high = torch.gather(ordered, -1, above.expand(*batch, 1))
    # torch.lerp's two formulas, chosen by the weight as its CPU kernel chooses them
    mixed = torch.where(weight < 0.5, low + weight * (high - low), high - (high - low) * (1 - weight))
    has_nan = torch.isnan(values).any(dim=-1, keepdim=True)
    return torch.where(has_nan, torch.full_like(mixed, float("nan")), mixed)


def detect_anomalies(x: torch.Tensor, neighbors: int = 30, contamination: float = 0.05) -> torch.Tensor:
    """`scclip.calibration.detect_anomalies`: LOF strictly above its (1 − contamination) quantile."""
    lof = calibration.local_outlier_factor(x, neighbors)
    return lof > quantile(lof, 1.0 - contamination)


def detect_anomalies_by_norm(x: torch.Tensor, count: int = calibration.NORM_ANOMALIES) -> torch.Tensor:
    """`scclip.calibration.detect_anomalies_by_norm` without a scatter: token index ∈ top-k indices."""
    norms = torch.linalg.vector_norm(x.float(), dim=-1)  # B×N
    n = _size(x, 1)
    top = torch.topk(norms, torch.clamp(n, max=count), dim=-1).indices  # B×k
    index = torch.arange(n)
    return (index[None, :, None] == top[:, None, :]).any(dim=-1)


def resolve_anomalies(tokens: torch.Tensor, anomalies: torch.Tensor, grid: tuple[Any, Any]) -> torch.Tensor:
    """`scclip.calibration.resolve_anomalies` with the token width as a constant, so the convolution's
    kernel has a known shape in the graph (the width is fixed by the weights)."""
    b, n, _ = tokens.shape
    c = int(tokens.shape[-1])
    h, w = grid
    x = tokens.transpose(1, 2).reshape(b, c, h, w)
    valid = (~anomalies).to(tokens.dtype).view(b, 1, h, w)
    ring = torch.ones(1, 1, 3, 3, dtype=tokens.dtype)
    ring[0, 0, 1, 1] = 0
    total = F.conv2d(x * valid, ring.expand(c, 1, 3, 3), padding=1, groups=c)
    count = F.conv2d(valid, ring, padding=1)
    mean = total / count.clamp_min(1)
    replace = anomalies.view(b, 1, h, w) & (count > 0)
    return torch.where(replace, mean, x).flatten(2).transpose(1, 2)


def gaussian_bias(grid: tuple[Any, Any], std: float, device: torch.device | None = None) -> torch.Tensor:
    """`scclip.encoders.gaussian_bias` built from a traced grid (float64, as the original)."""
    h, w = (torch.as_tensor(size) for size in grid)
    position = torch.arange(h * w, dtype=torch.int64)
    rows = torch.div(position, w, rounding_mode="floor").double()
    cols = torch.remainder(position, w).double()
    squared = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    bias = torch.exp(-squared / (2 * float(std) ** 2))
    return F.pad(bias, (1, 0, 1, 0)).float()


def patch_mode(labels: torch.Tensor, grid: tuple[Any, Any], patch: int, num_labels: Any) -> torch.Tensor:
    """`scclip.resclip.patch_mode` as a comparison with every label, summed over each patch (first maximum)."""
    h, w = (torch.as_tensor(size) for size in grid)
    batch = _size(labels, 0)
    blocks = labels[:, : h * patch, : w * patch]
    one_hot = (blocks[..., None] == torch.arange(num_labels)).to(torch.int32)  # B×H×W×Q
    counts = one_hot.reshape(batch, h, patch, w, patch, -1).sum(dim=(2, 4))
    return counts.argmax(dim=-1)


_WALK_STEPS = None


def walk_steps_table() -> torch.Tensor:
    """MAX_GRID_SIDE×MAX_GRID_SIDE: row D holds torch.linspace(0, 1, D+1), then zeros."""
    global _WALK_STEPS
    if _WALK_STEPS is None:
        table = torch.zeros(MAX_GRID_SIDE, MAX_GRID_SIDE)
        for reach in range(MAX_GRID_SIDE):
            table[reach, : reach + 1] = torch.linspace(0, 1, reach + 1)
        _WALK_STEPS = table
    return _WALK_STEPS


def path_valid(labels: torch.Tensor, budget_bytes: int = 0) -> torch.Tensor:
    """`scclip.resclip.path_valid` in the release's direct form (B×T×T×(D+1) points at once) for a traced grid."""
    h, w = _size(labels, 1), _size(labels, 2)
    tokens = h * w
    reach = torch.maximum(h, w) - 1
    steps = walk_steps_table()[reach][: reach + 1]  # K
    index = torch.arange(tokens)
    rows = torch.div(index, w, rounding_mode="floor")
    cols = torch.remainder(index, w)
    rest = 1 - steps

    def walk(coordinates: torch.Tensor) -> torch.Tensor:  # T×T×K
        start = coordinates.float()
        return torch.round(start[:, None, None] * rest + start[None, :, None] * steps).long()

    at = walk(rows) * w + walk(cols)
    flat = labels.flatten(1)
    on_path = flat[:, at] == flat[:, :, None, None]  # B×T×T×K
    distance = torch.maximum((rows[:, None] - rows).abs(), (cols[:, None] - cols).abs())
    walked = torch.arange(reach + 1) <= distance[..., None]
    return (on_path | ~walked).all(dim=-1)


@contextlib.contextmanager
def traceable_maths() -> Iterator[None]:
    """Swap in the graph-friendly equivalents above while tracing (module docstring); restored after."""
    swaps = [
        (clip_model_module, "resample_position_embedding", resample_position_embedding),
        (dino, "resample_position_embedding", resample_position_embedding),  # ProxyCLIP's VFM: DINO's rule, the same
        (calibration, "local_outlier_factor", local_outlier_factor),
        (calibration, "detect_anomalies", detect_anomalies),
        (calibration, "detect_anomalies_by_norm", detect_anomalies_by_norm),
        (calibration, "resolve_anomalies", resolve_anomalies),
        (encoders, "gaussian_bias", gaussian_bias),
        (resclip, "gaussian_bias", gaussian_bias),
        (resclip, "patch_mode", patch_mode),
        (resclip, "path_valid", path_valid),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in swaps]
    try:
        for module, name, replacement in swaps:
            setattr(module, name, replacement)
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


# ---------------------------------------------------------------- the graphs


class ImageGraph(nn.Module):
    """B×3×H×W normalised crops (and, for an encoder that `needs_queries`, Q×D query features) → (B×N×D
    L2-normalised dense features, B×N anomaly mask): the method's encoder exactly as
    `SCCLIPForSegmentation.dense_features` runs it, with the segmentor's logit scale."""

    def __init__(self, encoder: nn.Module, half: bool = False, logit_scale: float | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.half_precision = half
        self.needs_queries = bool(getattr(encoder, "needs_queries", False))
        self.logit_scale = logit_scale

    @property
    def inputs(self) -> list[str]:
        return ["images", "queries"] if self.needs_queries else ["images"]

    def forward(self, images: torch.Tensor, queries: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.half_precision:
            images = images.half()
        extra = dict(queries=queries, logit_scale=self.logit_scale) if self.needs_queries else {}
        features, anomalies = self.encoder(images, return_anomalies=True, **extra)
        return F.normalize(features.float(), dim=-1), anomalies


class TextGraph(nn.Module):
    """B×L token ids (L ≤ 77, dynamic) → B×D text features (not normalised), CLIP's `encode_text`.

    Like `encode_text`, the ids may stop after the batch's last end-of-text token: with the causal
    mask the later positions cannot change the earlier ones, so any L past it gives the same features.
    """

    def __init__(self, clip: nn.Module, half: bool = False) -> None:
        super().__init__()
        self.clip = clip
        self.half_precision = half

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        positions = clip.positional_embedding[: _size(tokens, 1)]
        x = clip.token_embedding(tokens).to(clip.dtype) + positions.to(clip.dtype)
        x = clip.ln_final(clip.transformer(x, causal=True))
        eot = tokens.argmax(dim=-1)
        rows = torch.arange(_size(tokens, 0))
        return (x[rows, eot] @ clip.text_projection).float()


def _export_graph(module: nn.Module, examples: tuple[torch.Tensor, ...], input_names: list[str],
                  output_names: list[str], dynamic_axes: dict[str, dict[int, str]]) -> bytes:
    """The ONNX bytes of `module` traced on `examples` (TorchScript-based exporter, opset OPSET)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), traceable_maths(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation note and the tracer's size notes
        torch.onnx.export(module, examples, buffer, opset_version=OPSET, dynamo=False,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                          do_constant_folding=True)
    return buffer.getvalue()


def check_queries(dim: int) -> torch.Tensor:
    """CHECK_QUERIES random L2-normalised query features of width `dim` (fixed seed)."""
    return F.normalize(torch.randn(CHECK_QUERIES, dim, generator=torch.Generator().manual_seed(1)), dim=-1)


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_sizes(patch: int, slide_crop: int) -> list[tuple[int, int, int]]:
    """(batch, height, width) inputs an export is compared on: the window (or a whole image) at batch 2, and a
    batch of 3 of another, non-square size, so that a size frozen into the graph shows."""
    first = slide_crop if slide_crop > 0 else 21 * patch
    return [(2, first, first), (3, first + 3 * patch + 5, first - 2 * patch)]


def photo_crops(batch: int, height: int, width: int) -> torch.Tensor:
    """batch×3×H×W CLIP-normalised crops of the bundled sample photo (each shifted and flipped differently)."""
    from PIL import Image

    from .vocabulary import SAMPLE_IMAGE
    from .clip.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    with Image.open(SAMPLE_IMAGE) as photo:
        pixels = torch.from_numpy(np.asarray(photo.convert("RGB").resize((width + batch, height + batch))).copy())
    pixels = pixels.permute(2, 0, 1).float() / 255
    pixels = (pixels - torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1)
    crops = [pixels[:, index : index + height, index : index + width] for index in range(batch)]
    return torch.stack([crop.flip(-1) if index % 2 else crop for index, crop in enumerate(crops)])


def compare_image_graph(graph: ImageGraph, path: Path, sizes: list[tuple[int, int, int]], tolerance: float,
                        same_anomalies: bool = True, photo: bool = False) -> float:
    """Largest feature difference between the ONNX graph and PyTorch on random crops (with `photo`, crops of the
    sample photo: an encoder with a hard threshold is compared on images, not noise); raises when beyond
    tolerance or (with `same_anomalies`) when the anomaly masks differ."""
    session = _session(path)
    generator = torch.Generator().manual_seed(0)
    queries = check_queries(int(graph.encoder.visual.proj.shape[1])) if graph.needs_queries else None
    worst = 0.0
    for batch, height, width in sizes:
        crops = photo_crops(batch, height, width) if photo else torch.randn(batch, 3, height, width, generator=generator)
        with torch.no_grad():
            expected, expected_anomalies = graph(crops, queries)
        feeds = {"images": crops.numpy(), **({"queries": queries.numpy()} if queries is not None else {})}
        features, anomalies = session.run(None, feeds)
        difference = float(np.abs(features - expected.numpy()).max())
        worst = max(worst, difference)
        if not difference <= tolerance:
            raise ExportError(f"{path.name} differs from PyTorch by {difference:.2e} (tolerance {tolerance:g}) on "
                              f"{batch}×3×{height}×{width} crops: the export is not usable, please report it")
        if same_anomalies and not np.array_equal(anomalies, expected_anomalies.numpy()):
            raise ExportError(f"{path.name} finds other anomaly tokens than PyTorch on {batch}×3×{height}×{width} "
                              "crops: the export is not usable, please report it")
    return worst


def compare_text_graph(clip: nn.Module, path: Path, tolerance: float) -> float:
    """Largest text-feature difference between the ONNX graph and CLIP's `encode_text` on sample prompts."""
    tokens = tokenize(["a photo of a cat.", "sky", "a bad photo of the television monitor, tv monitor, screen."])
    with torch.no_grad():
        expected = clip.encode_text(tokens).float().numpy()
    session = _session(path)
    length = int(tokens.argmax(dim=-1).max()) + 1
    difference = max(float(np.abs(session.run(None, {"tokens": ids})[0] - expected).max())
                     for ids in (tokens.numpy(), tokens[:, :length].numpy()))
    if not difference <= tolerance:
        raise ExportError(f"{path.name} differs from CLIP's encode_text by {difference:.2e} (tolerance {tolerance:g}): "
                          "the export is not usable, please report it")
    return difference


def _check_graph(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"{path.name} fails onnx.checker: {' '.join(str(error).split())[:200]}") from None


def _prepare_folder(out: Path) -> None:
    """Refuse an output that is a file, or a non-empty folder that holds no earlier export."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder for the exported model")
    if out.is_dir() and any(out.iterdir()) and not (out / MODEL_JSON).is_file():
        raise InputError(f"--out {out} is a folder holding other files: give a new or empty folder")


def _install(staging: Path, out: Path) -> None:
    """Put the finished staging folder at `out`, replacing an earlier export there only once this one is whole."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def export_model(
    backbone: str | os.PathLike,
    out: str | os.PathLike,
    method: str = DEFAULTS["method"],
    settings: Mapping[str, Any] | None = None,
    precision: str = "fp32",
    clip_arch: str | None = None,
    download_root: str | os.PathLike | None = None,
    clip_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Export `method` on `backbone` to the folder `out`; returns what model.json records.

    Args:
        backbone: a public CLIP name or a checkpoint file (open_clip: 'model:pretrained' or `clip_arch`).
        out: the model folder (created; an earlier export there is replaced only once this one is whole).
        method: one of `scclip.methods.available_methods()`.
        settings: the segmentor's maths settings (the shared ones, e.g. slide_crop, prob_thd, area_thd,
            pamr_steps, and the method's own, e.g. anomaly_detector); the rest keep their defaults.
        precision: 'fp32', or 'fp16' (weights and activations in half precision; LayerNorm, LOF
            and norms stay in float32/64 as in the PyTorch path), compared with the fp32 path at
            TOLERANCE['fp16'] (its anomaly tokens may differ in a few places). An encoder with a hard
            threshold declares a wider `feature_tolerance` (ProxyCLIP's mask: SPEC §12, 2e-3).
        clip_model: the CLIP of `backbone`, already loaded.

    Raises:
        InputError: an unknown precision, method or setting (one line, from the segmentor's checks).
        ExportError: a graph fails onnx.checker or differs from the PyTorch path beyond tolerance.
    """
    from .api import INFERENCE_SCALE
    from .clip import load
    from .backbones import checkpoint_and_arch
    from .segmentor import SCCLIPForSegmentation
    from .text import load_templates

    if precision not in PRECISIONS:
        raise InputError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    out = Path(out)
    _prepare_folder(out)
    settings = dict(settings or {})
    started = time.perf_counter()
    backbone, clip_arch = checkpoint_and_arch(backbone, clip_arch)
    if clip_model is None:
        options = dict(device="cpu", download_root=download_root)
        if clip_arch is not None:
            options["arch"] = clip_arch
        clip_model, _ = load(backbone, **options)
    segmentor = SCCLIPForSegmentation(
        clip_path=str(backbone), vocabulary=["object"], device="cpu", method=method, clip_model=clip_model,
        clip_arch=clip_arch, text_cache=False, precision="fp32", text_progress=lambda done, total: None, **settings,
    )
    half = precision == "fp16"
    encoder = segmentor.encoder
    text_clip = clip_model
    if half:
        import copy

        encoder = copy.deepcopy(encoder).half()
        text_clip = copy.deepcopy(clip_model).half()
    logit_scale = segmentor.post.logit_scale
    image_graph = ImageGraph(encoder, half, logit_scale).eval()
    text_graph = TextGraph(text_clip, half).eval()
    patch = segmentor.encoder.patch_size
    # The grid of the dense features is the patch grid, or (ProxyCLIP) the VFM's: one feature per `stride` pixels.
    stride = getattr(segmentor.encoder, "feature_stride", patch)
    hard_threshold = hasattr(segmentor.encoder, "feature_tolerance")
    tolerance = max(TOLERANCE[precision], getattr(segmentor.encoder, "feature_tolerance", 0.0))
    sizes = check_sizes(patch, segmentor.slide_crop)
    example = torch.zeros(1, 3, sizes[0][1], sizes[0][2])
    examples = (example, check_queries(int(clip_model.visual.proj.shape[1]))) if image_graph.needs_queries else (example,)
    mean = [float(value) for value in segmentor.data_preprocessor.mean.flatten()]
    std = [float(value) for value in segmentor.data_preprocessor.std.flatten()]
    checkpoint = Path(getattr(clip_model, "checkpoint_path", None) or backbone)
    source_sha = sha256_of(checkpoint) if checkpoint.is_file() else None

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create {out.parent}: {error.strerror or error}: choose another --out") from None
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        image_path, text_path = staging / IMAGE_GRAPH, staging / TEXT_GRAPH
        image_path.write_bytes(_export_graph(
            image_graph, examples, image_graph.inputs, ["features", "anomalies"],
            {"images": {0: "batch", 2: "height", 3: "width"}, "queries": {0: "queries"},
             "features": {0: "batch", 1: "tokens"}, "anomalies": {0: "batch", 1: "tokens"}}))
        text_path.write_bytes(_export_graph(
            text_graph, (tokenize(["a photo of a cat."]),), ["tokens"], ["features"],
            {"tokens": {0: "batch", 1: "length"}, "features": {0: "batch"}}))
        for path in (image_path, text_path):
            _check_graph(path)
        # Compared with the float32 path the user would otherwise run. In half precision LOF's inputs round
        # differently, so a few other anomaly tokens may be chosen: only the features' tolerance applies.
        image_difference = compare_image_graph(ImageGraph(segmentor.encoder, logit_scale=logit_scale), image_path,
                                               sizes, tolerance, same_anomalies=not half, photo=hard_threshold)
        text_difference = compare_text_graph(clip_model, text_path, TEXT_TOLERANCE[precision])
        shutil.copyfile(VOCAB_PATH, staging / VOCAB_FILE)
        record = dict(
            format_version=FORMAT_VERSION,
            method=method,
            # The VFM's file is inside the image graph: `source` names it by its SHA-256, not by a path here.
            settings=_jsonable({name: value for name, value in segmentor.method_settings.items() if name != "vfm_path"}),
            renormalise_scores=segmentor.method_spec.renormalise_scores,
            resize_through_input=segmentor.method_spec.resize_through_input,
            patch_size=patch,
            feature_stride=stride,
            pad_multiple=segmentor.pad_multiple,
            embed_dim=int(clip_model.visual.proj.shape[1]),
            depth=len(clip_model.visual.transformer.resblocks),
            resize_scale=list(INFERENCE_SCALE),
            normalisation=dict(mean=mean, std=std, pixels="RGB, 0-255"),
            prompt_templates=list(load_templates()),
            tokenizer=dict(vocabulary=VOCAB_FILE, context_length=CONTEXT_LENGTH, lowercase=True),
            graphs=dict(
                image=dict(file=IMAGE_GRAPH, input="images", outputs=["features", "anomalies"],
                           dynamic=["batch", "height", "width"], inputs=image_graph.inputs),
                text=dict(file=TEXT_GRAPH, input="tokens", outputs=["features"], dynamic=["batch", "length"]),
            ),
            precision=precision,
            opset=OPSET,
            exporter=f"torch.onnx TorchScript-based (torch {torch.__version__})",
            parity=dict(image_features_max_difference=image_difference, text_features_max_difference=text_difference,
                        checked_on=[list(size) for size in sizes]),
            source=dict(backbone=str(backbone), clip_arch=clip_arch, checkpoint=checkpoint.name if source_sha else None,
                        sha256=source_sha, **_vfm_source(segmentor.method_settings)),
            export_seconds=round(time.perf_counter() - started, 2),
            files={path.name: sha256_of(path) for path in sorted(staging.iterdir())},
        )
        (staging / MODEL_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _install(staging, out)
    except OSError as error:
        raise ExportError(f"cannot write the model to {out}: {error.strerror or error}: choose another --out") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def _vfm_source(settings: Mapping[str, Any]) -> dict[str, Any]:
    """ProxyCLIP's VFM in model.json's `source`: its name and its weights' SHA-256 (a named VFM's downloaded file)."""
    if "vfm" not in settings:
        return {}
    from .dino import download_vfm

    path = Path(settings["vfm_path"]) if settings.get("vfm_path") else download_vfm(settings["vfm"])
    return dict(vfm=settings["vfm"], vfm_sha256=sha256_of(path))


def _jsonable(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings with tuples as lists and floats that are whole kept as numbers (JSON has no tuples)."""
    def convert(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [convert(item) for item in value]
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"setting value {value} is not a finite number")
        return value

    return {name: convert(value) for name, value in settings.items()}
