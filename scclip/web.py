"""The web demo: segment your own photo with your own words in the browser (`python demo.py --web`).

A Gradio app over `Segmenter` (no second pipeline): the CLIP model loads once, at start, with one
model per method on it; the class embeddings of the vocabularies asked for are kept, most recently
used first, and a request's PAMR and threshold are options of its call (`scclip.protocol`), so a
second request with the same classes costs one image encoding whatever its settings (a new vocabulary
is encoded once and, through the on-disk text-feature cache, never again for this checkpoint). Work goes in two
lanes, one request at a time in each: encoding the text of a new vocabulary (minutes for hundreds
of classes on a CPU, with progress shown in the page) and segmenting images, so a request whose
classes are ready is never held behind another's new vocabulary; when new vocabularies pile up the
next one is refused with "busy, try again". Every input problem is a message in the page
(`gr.Error`), never a traceback, and the server keeps serving. The handler reads only files uploaded
through the page (a path that points anywhere else is refused with one message, whether or not it
exists). Uploads and results live in one private temporary folder that is pruned while serving and
removed on exit. Gradio's usage analytics are off and nothing else is fetched from the internet.

`scclip web --runtime onnx --model DIR` serves the same page over an exported model folder with the
torch-free runtime (`OnnxSegmenterPool`, `scclip.runtime.OnnxSegmenter`): same limits, checks and
answers; the method is the export's. This module imports nothing torch-side until a torch pool is made.

The same event is the HTTP API `segment`:

    from gradio_client import Client, handle_file
    picture, label_files, shares = Client("http://127.0.0.1:7860/").predict(
        handle_file("cat.jpg"), "cat, sofa, wall", api_name="/segment")
"""
from __future__ import annotations

import errno
import html
import importlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from .benchmarks import BENCHMARKS
from .errors import ImageError, InputError, ScclipError
from .imageio import read_image
from .result import SegmentationResult
from .options import onnx_providers
from .settings import DEFAULTS, MODEL_SETTINGS, PAMR_ON_STEPS, Setting, check_call_settings, check_value
from .vocabulary import SAMPLE_CLASSES, SAMPLE_IMAGE, SYNONYM_SEPARATOR, parse_classes, vocabulary_lines

if TYPE_CHECKING:  # the torch side is imported only by the pool that runs it
    from .api import Segmenter
    from .protocol import ClassEmbedding
    from .runtime import OnnxSegmenter

INSTALL_HINT = 'pip install -e ".[web]"'
GRADIO_MAJOR = 6
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
NO_VOCABULARY = "none: the classes typed above"
# Sample photos: the bundled one, and scikit-image's public-domain photos when it is installed.
SKIMAGE_SAMPLES = (
    ("chelsea.png", "cat, wall, floor, blanket"),
    ("coffee.png", "coffee cup, saucer, spoon, table"),
    ("rocket.jpg", "rocket, sky, tree, launch tower"),
)
DEFAULT_METHOD = DEFAULTS["method"]
PANEL_SIDE = 512
DEFAULT_OPACITY = 0.5
# A palette label PNG has 256 values: no request can have more classes.
LABEL_PNG_CLASSES = 256
# Requests the app works on at once. They wait in two lanes (encoding new vocabularies, segmenting
# images), each doing one thing at a time; the names waiting for the encoder are bounded (see
# `SegmenterPool`), so even with every worker waiting for it, a request whose classes are ready gets
# one when the current encoding ends. More requests wait in Gradio's queue (`Limits.queue_size`).
WORKERS = 8
# The one answer to an image path that is not a file uploaded to this server, whether or not it
# exists, is a folder, an image or a link: it tells nothing about the server's files.
NOT_UPLOADED = "the image was not uploaded to this page: upload it (the demo reads only files uploaded to it)"
ENCODER_BUSY = (
    "the server is busy encoding the text of other requests' new classes: try again in a few minutes "
    "(classes this server has already used are answered meanwhile)"
)


@dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    Attributes:
        max_side: the largest image side in pixels: a phone's 12-megapixel photo (4032×3024)
            fits. The model never sees more than 2048×336 (the benchmarks' resize); the labels
            come back at full size, in bounded memory, and the picture is drawn from them.
        max_classes: the most classes per request; 256 is what a palette label PNG can hold.
        max_names: the most names per request, synonyms included: the text encoder's work grows
            with names, not classes (80 prompts each, about 1.3 s per name for ViT-B/16 on one
            CPU core), so 'a|b|c|...' cannot make one request hold the encoder for hours.
        max_file_mb: the largest upload, in megabytes (refused by Gradio before it is stored).
        queue_size: requests waiting at most; more get "the queue is full" in the page.
    """

    max_side: int = 4096
    max_classes: int = LABEL_PNG_CLASSES
    max_names: int = 2 * LABEL_PNG_CLASSES
    max_file_mb: int = 50
    queue_size: int = 32

    def __post_init__(self) -> None:
        for name in ("max_side", "max_classes", "max_names", "max_file_mb", "queue_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        if self.max_classes > LABEL_PNG_CLASSES:
            raise InputError(
                f"--max-classes {self.max_classes}: a label PNG holds at most {LABEL_PNG_CLASSES} classes: "
                f"use {LABEL_PNG_CLASSES} or fewer"
            )


def require_gradio() -> Any:
    """The `gradio` module, imported with its usage analytics off; a one-line error when it is missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    try:
        gradio = importlib.import_module("gradio")
        importlib.import_module("gradio_client")
    except ImportError as error:
        raise ScclipError(f"the web demo needs Gradio {GRADIO_MAJOR} ({error}): {INSTALL_HINT}") from None
    major = int(gradio.__version__.split(".")[0])
    if major != GRADIO_MAJOR:
        raise ScclipError(f"the web demo needs Gradio {GRADIO_MAJOR}.x, found {gradio.__version__}: {INSTALL_HINT}")
    return gradio


def benchmark_vocabularies() -> dict[str, Path]:
    """Shown name → file of the benchmark vocabularies shipped with the package (empty when none is)."""
    found = {}
    for benchmark in BENCHMARKS.values():
        path = benchmark.vocabulary
        if path.is_file():
            count = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
            found[f"{benchmark.menu} ({count} classes)"] = path
    return found


def sample_photos() -> list[tuple[Path, str]]:
    """(photo, classes) pairs offered under the upload: the bundled photo and scikit-image's, if installed."""
    samples = [(SAMPLE_IMAGE, ", ".join(line.replace(", ", "|") for line in SAMPLE_CLASSES))]
    try:
        skimage_data = Path(importlib.import_module("skimage.data").__file__).parent
    except ImportError:
        return samples
    samples += [(skimage_data / name, classes) for name, classes in SKIMAGE_SAMPLES if (skimage_data / name).is_file()]
    return samples


def name_count(lines: Sequence[str]) -> int:
    """Names in vocabulary lines, synonyms included: what the text encoder's work grows with."""
    return sum(len(line.split(SYNONYM_SEPARATOR)) for line in lines)


class SegmenterPool:
    """One loaded CLIP, one model per method on it (loaded once), and the class embeddings of recent requests.

    A request's PAMR and threshold are options of its call (`scclip.protocol`), so they build nothing;
    only new classes cost work: their text is encoded (or read from the on-disk text-feature cache) into a
    `ClassEmbedding` that every method's model uses, since all run on the one CLIP. The `capacity` most
    recently used embeddings are kept, so repeating a request encodes nothing. Thread-safe: Gradio
    calls from several worker threads. New vocabularies are encoded one at a time; while one is,
    others wait only as long as all names waiting (the encoding one's included) stay within
    `encode_budget`, else they are refused as busy, so the wait for the encoder stays bounded (about
    1.3 s per name for ViT-B/16 on one CPU core). A vocabulary encoded once in this process (with the
    text cache on) is read back at once, beside them.

    Args:
        backbone: a public CLIP name or a checkpoint file, as for `Segmenter`.
        device: 'cpu', 'cuda' or None (CUDA when available).
        method: the method used when a request names none (None: `Segmenter`'s default, scclip).
        slide: sliding-window inference (False: whole image at once).
        capacity: how many class embeddings to keep.
        encode_budget: names (synonyms included) allowed to wait for the encoder (None: no bound).
        **options: further `Segmenter` options that change the features (e.g. clip_arch, download_root, logit_scale).
    """

    def __init__(
        self,
        backbone: str | os.PathLike,
        device: str | None = None,
        method: str | None = None,
        slide: bool = True,
        capacity: int = 8,
        encode_budget: int | None = None,
        **options: Any,
    ) -> None:
        from .backbones import checkpoint_and_arch
        from .clip import load

        backbone, clip_arch = checkpoint_and_arch(backbone, options.pop("clip_arch", None))
        if clip_arch is not None:
            options["clip_arch"] = clip_arch
        self.backbone = backbone
        self.device = device
        self.method = method
        self.slide = slide
        self.options = options
        self.clip_model, _ = load(backbone, device=device, download_root=options.get("download_root"), arch=clip_arch)
        self._start_lanes(capacity, encode_budget)

    def _start_lanes(self, capacity: int, encode_budget: int | None) -> None:
        """The models, the kept embeddings and the two lanes' bookkeeping (shared by both runtimes' pools)."""
        self.capacity = capacity
        self.encode_budget = encode_budget
        self._models: dict[str, Segmenter | OnnxSegmenter] = {}
        self._loading = threading.Lock()  # held while a method's model is made
        self._embeddings: OrderedDict[tuple[str, ...], ClassEmbedding] = OrderedDict()
        self._lock = threading.Lock()  # guards the fields below; never held while text is encoded
        self._encoding = threading.Lock()  # held while a new vocabulary is encoded
        self._encode_queue = 0  # names of the vocabularies encoding or waiting to
        # Vocabularies whose text features are in the on-disk cache (encoded here with it on): cheap to embed.
        self._stored: set[tuple[str, ...]] = set()
        self.builds = 0  # vocabularies embedded so far (a repeated request embeds none)

    def model_of(self, method: str | None = None) -> Segmenter | OnnxSegmenter:
        """The model of `method` (None: the pool's), made on first use on the one loaded CLIP."""
        method = method or self.method or DEFAULT_METHOD
        with self._loading:
            if method not in self._models:
                self._models[method] = self._load(method)
            return self._models[method]

    def get(
        self,
        lines: Sequence[str],
        method: str | None = None,
        on_wait: Callable[[], None] | None = None,
    ) -> tuple[Segmenter | OnnxSegmenter, ClassEmbedding]:
        """The model of `method` and the embedding of these vocabulary lines, encoded on first use; the
        request's PAMR and threshold go to the call: `model(image, embedding, pamr=..., prob_thd=...)`.

        `on_wait` is called when this request must wait for another vocabulary's encoding.
        Raises ScclipError (busy) when this new vocabulary's names would overrun `encode_budget`
        (never when the encoder is idle).
        """
        model = self.model_of(method)
        key = tuple(lines)
        with self._lock:
            embedding = self._kept(key)
            if embedding is not None:
                return model, embedding
            cheap = self._ready(key, model)
            names = name_count(key)
            if not cheap:
                budget = self.encode_budget
                if budget is not None and self._encode_queue and self._encode_queue + names > budget:
                    raise ScclipError(ENCODER_BUSY)
                self._encode_queue += names
        if cheap:
            return model, self._embed(model, key)
        try:
            if on_wait is not None and self._encoding.locked():
                on_wait()
            with self._encoding:
                with self._lock:
                    embedding = self._kept(key)  # encoded by a request that was encoding it meanwhile
                return model, embedding or self._embed(model, key)
        finally:
            with self._lock:
                self._encode_queue -= names

    def _kept(self, key: tuple[str, ...]) -> ClassEmbedding | None:
        """The kept embedding of `key`, marked most recently used (call with the lock held)."""
        embedding = self._embeddings.get(key)
        if embedding is not None:
            self._embeddings.move_to_end(key)
        return embedding

    def _ready(self, lines: tuple[str, ...], model: Segmenter | OnnxSegmenter) -> bool:
        """Whether `lines` embed without encoding text: the model's own classes, or in the disk cache."""
        return lines in self._stored or lines == model.classes.lines

    def _embed(self, model: Segmenter | OnnxSegmenter, key: tuple[str, ...]) -> ClassEmbedding:
        """Encode `key` and keep it, the most recently used (its text features go to the disk cache when it is on)."""
        embedding = model.embed(list(key))
        with self._lock:
            self.builds += 1
            self._embeddings[key] = embedding
            if self.options.get("text_cache", True):
                self._stored.add(key)
            while len(self._embeddings) > self.capacity:
                self._embeddings.popitem(last=False)
        return embedding

    def _load(self, method: str) -> Segmenter:
        from .api import Segmenter

        from .settings import model_settings
        from .vfm import VFM_SETTINGS

        # --vfm is ProxyCLIP's: the page's other methods are built without it.
        taken = model_settings(method)
        extra = {name: value for name, value in self.options.items() if name not in VFM_SETTINGS or name in taken}
        return Segmenter(self.backbone, classes=list(SAMPLE_CLASSES), device=self.device, slide=self.slide,
                         clip_model=self.clip_model, method=method, **extra)


class OnnxSegmenterPool(SegmenterPool):
    """`SegmenterPool` over an exported model folder (`scclip export`), run by `scclip.runtime` without torch.

    The folder is checked and its two graphs loaded once, as the one model; only a new vocabulary encodes
    text, in the encoding lane, with the same budget. The method and the maths settings are the export's;
    a request's PAMR and threshold are options of its call.

    Args:
        model: the exported model folder.
        providers: ONNX Runtime execution providers, best first (None: CPU).
        slide: None keeps the exported windows; False encodes the whole image at once.
        capacity, encode_budget: as for `SegmenterPool`.
        threads: ONNX Runtime's threads per graph (None: its default).
    """

    def __init__(
        self,
        model: str | os.PathLike,
        providers: Sequence[str] | None = None,
        slide: bool | None = None,
        capacity: int = 8,
        encode_budget: int | None = None,
        threads: int | None = None,
    ) -> None:
        from .runtime import OnnxSegmenter

        # The sample classes (what `serve` asks for first) load the model; their features are its own.
        loaded = OnnxSegmenter(model, classes=list(SAMPLE_CLASSES), providers=providers, slide=slide, threads=threads)
        self.backbone = Path(model)
        self.device = None
        self.method = loaded.method
        self.slide = slide
        self.options = {"text_cache": False}  # the runtime keeps no text features on disk: new ones go in the lane
        self._start_lanes(capacity, encode_budget)
        self._models[self.method] = loaded

    def _load(self, method: str) -> OnnxSegmenter:
        raise InputError(f"method {method!r}: the exported model {self.backbone} runs {self.method} only")


class ResultFolder:
    """Where the label PNGs and JSONs of requests are written before Gradio copies them out.

    Gradio copies each returned file into its cache (which `delete_cache` prunes) just after the
    handler returns, so a request's folder is no longer needed soon after; folders of requests
    finished more than `grace_s` ago are removed when a request starts (not at once: requests run
    side by side, and another's files may not be copied yet), and the whole folder on exit.
    """

    def __init__(self, root: Path, grace_s: float = 60.0) -> None:
        self.root = root
        self.grace_s = grace_s
        self._finished: list[tuple[float, Path]] = []
        self._lock = threading.Lock()

    def new(self) -> Path:
        with self._lock:
            cutoff = time.monotonic() - self.grace_s
            for finished, folder in self._finished:
                if finished <= cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
            self._finished = [(finished, folder) for finished, folder in self._finished if finished > cutoff]
        folder = self.root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def finished(self, folder: Path) -> None:
        with self._lock:
            self._finished.append((time.monotonic(), folder))


def uploaded_path(payload: Any, upload_root: Path) -> tuple[Path, str]:
    """The stored file of an uploaded image (links resolved) and the name the user gave it.

    The API takes the image as {"path": ...}; only a file inside `upload_root` (Gradio's upload
    folder) is read. Anything else gets `NOT_UPLOADED`, decided before the file system is asked
    when the path names a place outside the folder, so the answer tells nothing about that place.
    """
    if not payload:
        raise InputError("no image: upload, paste or drop one, or pick a sample photo below the image box")
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path or not isinstance(path, str):
        raise InputError("the image did not arrive as a file: upload it again")
    roots = {Path(os.path.abspath(upload_root)), upload_root.resolve()}
    named = Path(os.path.normpath(os.path.join(os.path.abspath(upload_root), path)))
    if "\0" in path or not any(named.is_relative_to(root) for root in roots):
        raise InputError(NOT_UPLOADED)
    try:
        resolved = named.resolve(strict=True)  # every link followed: one inside may point outside
    except (OSError, RuntimeError):
        raise InputError(NOT_UPLOADED) from None
    if not resolved.is_relative_to(upload_root.resolve()) or not resolved.is_file():
        raise InputError(NOT_UPLOADED)
    name = payload.get("orig_name")
    name = name if isinstance(name, str) and name else resolved.name
    return resolved, Path(name).name


def check_image_size(path: Path, name: str, max_side: int) -> None:
    """Refuse an image whose larger side is over `max_side` before it is decoded."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return  # not readable as an image: read_image says why, naming the file
    if max(width, height) > max_side:
        raise InputError(
            f"{name} is {width}×{height} pixels, more than this demo's limit of {max_side} on the larger side: "
            f"downscale it (the model sees at most 2048×336 anyway), or start the demo with --max-side {max(width, height)}"
        )


def request_lines(
    classes: Any, vocabulary: Any, vocabularies: dict[str, Path], max_classes: int,
    max_names: int = 2 * LABEL_PNG_CLASSES,
) -> list[str]:
    """The vocabulary lines of a request: the chosen benchmark vocabulary's, then the typed classes.

    A vocabulary is chosen by its name in the menu (a key of `vocabularies`), never by a path.
    """
    if classes is not None and not isinstance(classes, str):
        raise InputError(
            f"the classes must be text, not {type(classes).__name__}: type them, e.g. 'cat, dog|puppy, sky'"
        )
    vocab_file = None
    if vocabulary and vocabulary != NO_VOCABULARY:
        if not isinstance(vocabulary, str) or vocabulary not in vocabularies:
            shown = vocabulary if isinstance(vocabulary, str) else type(vocabulary).__name__
            raise InputError(f"unknown vocabulary {shown!r}: pick one of {', '.join(vocabularies)}")
        vocab_file = vocabularies[vocabulary]
    typed = (classes or "").strip()
    if vocab_file is None and not parse_classes(typed):
        raise InputError("no class names: type some, e.g. 'cat, dog|puppy, sky', or pick a benchmark vocabulary")
    lines = vocabulary_lines(typed if parse_classes(typed) else None, vocab_file)
    count = len(lines)
    if count > LABEL_PNG_CLASSES:
        raise InputError(
            f"this request has {count} classes; a label map holds at most {LABEL_PNG_CLASSES}: "
            f"name {LABEL_PNG_CLASSES} or fewer"
        )
    if count > max_classes:
        raise InputError(
            f"this request has {count} classes, more than this demo's limit of {max_classes}: "
            f"name fewer, or start the demo with --max-classes {count}"
        )
    names = name_count(lines)
    if names > max_names:
        raise InputError(
            f"this request has {names} names (classes and their synonyms), more than this demo's limit of "
            f"{max_names}: name fewer classes or synonyms"
        )
    return lines


def fraction(value: Any, what: str, setting: Setting | None = None) -> float:
    """A request's number that must lie in [0, 1], or in a setting's bounds (the API may send anything)."""
    low, high = (setting.minimum, setting.maximum) if setting is not None else (0.0, 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InputError(f"{what} {value!r} must be a number in [{low:g}, {high:g}]")
    return float(value)


def shares_of(result: SegmentationResult) -> dict[str, float]:
    """Pixel share of each class present, largest first (what the legend lists)."""
    return {entry.name: round(entry.share, 6) for entry in result.legend()}


def guarded_blocks(gr: Any, check_files: Callable[[Sequence[Any]], None]) -> type:
    """`gr.Blocks` whose events first pass their raw inputs to `check_files`, before Gradio's own preprocessing.

    Gradio copies every file payload of a request into its cache, downloads the http(s) URLs given
    as one, and remembers the paths to delete them on exit (a folder there fails the shutdown), each
    with messages of its own that name server paths; checked here first, a request that names anything
    but a file uploaded to the page gets the page's one refusal and Gradio never touches the path.
    """

    class GuardedBlocks(gr.Blocks):
        async def preprocess_data(self, block_fn: Any, inputs: list[Any], state: Any, explicit_call: bool = False):
            check_files(inputs)
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)

    return GuardedBlocks


def result_stem(name: str, limit_bytes: int = 100) -> str:
    """A safe, short stem for the result files of an upload named `name`: letters, digits, '.', '-' and '_'
    (others become '_'), at most `limit_bytes` in UTF-8, so that any upload's name makes a writable file name."""
    stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip("._")
    return stem.encode("utf-8")[:limit_bytes].decode("utf-8", errors="ignore").rstrip("._") or "image"


def shown_name(name: str, limit: int = 80) -> str:
    """An upload's name as messages show it: one line, shortened in the middle when long."""
    name = " ".join(name.split())
    return name if len(name) <= limit else f"{name[: limit // 2]}…{name[-(limit // 2 - 1):]}"


class WebDemo:
    """The page, its events and its server.

    Args:
        pool: the models and the kept class embeddings.
        limits: what one request may ask for.
        methods: the methods the page offers (empty: the pool's method only, no choice shown).
        pamr, prob_thd: the page's initial PAMR and threshold (the CLI's --pamr and --prob-thd).
        temp_root: the private folder for uploads and results (None: a new one under the system's).
    """

    def __init__(
        self,
        pool: SegmenterPool,
        limits: Limits = Limits(),
        methods: Sequence[str] = (),
        pamr: bool = False,
        prob_thd: float = 0.0,
        temp_root: Path | None = None,
    ) -> None:
        self.gr = require_gradio()
        self.pool = pool
        self.limits = limits
        self.methods = list(methods)
        self.pamr = pamr
        self.prob_thd = prob_thd
        self.temp_root = Path(temp_root or tempfile.mkdtemp(prefix="scclip-web-"))
        self.vocabularies = benchmark_vocabularies()
        # Every component reads the upload folder when it is made: point Gradio at ours first.
        self.upload_root = self.temp_root / "gradio"
        os.environ["GRADIO_TEMP_DIR"] = str(self.upload_root)
        self.results = ResultFolder(self.temp_root / "results")
        self._segmenting = threading.Lock()  # one image through the model at a time
        self.blocks = self.build()

    def segment(
        self,
        image: Any,
        classes: str,
        vocabulary: str = NO_VOCABULARY,
        method: str | None = None,
        pamr: bool = False,
        prob_thd: float = 0.0,
        opacity: float = DEFAULT_OPACITY,
        progress: Any = None,
    ) -> tuple[Image.Image, list[str], dict[str, float], SegmentationResult]:
        """One request: (picture, [label PNG, its JSON], shares of the classes present, result kept for redraws)."""
        gr = self.gr
        progress = progress or (lambda *args, **kwargs: None)
        try:
            progress(0.0, desc="checking the request")
            path, name = uploaded_path(image, self.upload_root)
            shown = shown_name(name)
            limits = self.limits
            lines = request_lines(classes, vocabulary, self.vocabularies, limits.max_classes, limits.max_names)
            offered = self.methods or [self.pool.method or DEFAULT_METHOD]
            if method and method not in offered:
                raise InputError(f"unknown method {method!r}: use one of {', '.join(offered)}")
            if not isinstance(pamr, bool):
                raise InputError(f"PAMR must be true or false, not {pamr!r}")
            prob_thd = fraction(prob_thd, "probability threshold", MODEL_SETTINGS["prob_thd"])
            opacity = fraction(opacity, "overlay opacity")
            check_image_size(path, shown, self.limits.max_side)
            progress(0.1, desc="reading the image")
            try:
                rgb = read_image(path)
            except ImageError as error:
                raise ImageError(str(error).replace(str(path), shown)) from None
            progress(0.2, desc=f"text features of {len(lines)} classes")
            # Encoding a new vocabulary reports the prompts done through a tqdm bar (scclip.text), which
            # Gradio's track_tqdm shows in the page.
            model, embedding = self.pool.get(lines, method or None, on_wait=lambda: progress(
                0.2, desc="waiting: the text encoder is busy with another request's new classes"))
            if self._segmenting.locked():
                progress(0.3, desc="waiting for the image model (another request is segmenting)")
            with self._segmenting:
                progress(0.4, desc="segmenting")
                result = model(rgb, embedding, pamr=pamr, prob_thd=prob_thd)
            progress(0.9, desc="drawing")
            picture = result.picture(PANEL_SIDE, alpha=float(opacity))
            folder = self.results.new()
            files = [str(written) for written in result.save_mask(folder / f"{result_stem(name)}_mask.png")]
            self.results.finished(folder)
            return picture, files, shares_of(result), result
        except ScclipError as error:
            raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # the server keeps serving; the page says what happened, the log has the trace
            traceback.print_exc()  # its text may name server paths: only the log has it
            message = f"segmentation failed ({type(error).__name__}); the server log has the details"
            raise gr.Error(html.escape(message, quote=False), print_exception=False) from None

    def copy_samples(self) -> list[tuple[Path, str]]:
        """The sample photos, copied into the private folder (Gradio serves files only from allowed places)."""
        folder = self.temp_root / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        copies = []
        for path, classes in sample_photos():
            copy = folder / path.name
            shutil.copyfile(path, copy)
            copies.append((copy, classes))
        return copies

    def redraw(self, result: SegmentationResult | None, opacity: float) -> Image.Image | None:
        """The last picture again at a new overlay opacity (no model call)."""
        if result is None:
            return None
        return result.picture(PANEL_SIDE, alpha=float(opacity))

    def check_files(self, inputs: Sequence[Any]) -> None:
        """Refuse a request any of whose inputs, at any depth, is a file payload (a dict with a "path") that is
        not a file uploaded to this page: `NOT_UPLOADED`, the one answer to every foreign path."""
        pending = list(inputs)  # a stack, not recursion: a request may nest its JSON deeply
        while pending:
            value = pending.pop()
            if isinstance(value, dict):
                if "path" in value:
                    try:
                        uploaded_path(value, self.upload_root)
                    except ScclipError as error:
                        raise self.gr.Error(html.escape(str(error), quote=False), print_exception=False) from None
                pending.extend(value.values())
            elif isinstance(value, list):
                pending.extend(value)

    def build(self) -> Any:
        gr = self.gr
        samples = self.copy_samples()
        with guarded_blocks(gr, self.check_files)(title="SC-CLIP: segment your photo with your words", analytics_enabled=False,
                       delete_cache=(600, 3600)) as blocks:
            gr.Markdown(
                "## SC-CLIP: open-vocabulary segmentation\n"
                "Upload, paste or drop a photo (or pick a sample), name the classes, press **Segment**. "
                f"Model: `{Path(str(self.pool.backbone)).name}`. Limits: {self.limits.max_side} px on the larger side, "
                f"{self.limits.max_classes} classes."
            )
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(label="photo", type="filepath", image_mode=None,
                                     sources=["upload", "clipboard"], elem_id="image")
                    classes = gr.Textbox(label="classes", value=samples[0][1], elem_id="classes",
                                         placeholder="cat, dog|puppy, sky",
                                         info="comma-separated; '|' joins synonyms of one class (dog|puppy)")
                    vocabulary = gr.Dropdown([NO_VOCABULARY, *self.vocabularies], value=NO_VOCABULARY,
                                             label="or a benchmark vocabulary", elem_id="vocabulary",
                                             info="its classes come first, then any typed above")
                    default_method = self.pool.method or DEFAULT_METHOD
                    method = gr.Dropdown(self.methods or [default_method], value=default_method, label="method",
                                         visible=bool(self.methods), elem_id="method",
                                         info="SC-CLIP, or one of the methods it is compared with")
                    with gr.Row():
                        pamr = gr.Checkbox(value=self.pamr, label="PAMR refinement (slower)", elem_id="pamr")
                        prob_thd = gr.Slider(0.0, 1.0, value=self.prob_thd, step=0.05, elem_id="prob_thd",
                                             label="probability threshold (below it: the first class)")
                    button = gr.Button("Segment", variant="primary", elem_id="segment")
                    gr.Examples([[str(path), text] for path, text in samples], inputs=[image, classes],
                                label="sample photos")
                with gr.Column(scale=2):
                    picture = gr.Image(label="image | prediction | overlay", type="pil", format="png",
                                       interactive=False, elem_id="picture")
                    opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="overlay opacity",
                                        elem_id="opacity")
                    shares = gr.Label(label="share of the pixels", show_heading=False, elem_id="shares")
                    files = gr.File(label="label map (PNG, pixel value = class index) and its JSON",
                                    file_count="multiple", interactive=False, elem_id="files")
            kept = gr.State(None)

            def segment_event(image, classes, vocabulary, method, pamr, prob_thd, opacity,
                              progress=gr.Progress(track_tqdm=True)):
                # Gradio hands a progress tracker to the parameter whose default is one.
                return self.segment(image, classes, vocabulary, method, pamr, prob_thd, opacity, progress)

            button.click(
                segment_event, inputs=[image, classes, vocabulary, method, pamr, prob_thd, opacity],
                outputs=[picture, files, shares, kept], api_name="segment", preprocess=False,
                concurrency_limit=WORKERS,  # the handler's lanes take turns on the model
                api_description="Segment an image into the named classes: returns the picture "
                                "(image | prediction | overlay with legend), the label PNG and its JSON, and the pixel shares.",
            )
            opacity.release(self.redraw, inputs=[kept, opacity], outputs=picture, api_visibility="private",
                            concurrency_limit=4, show_progress="hidden")
        blocks.queue(max_size=self.limits.queue_size, default_concurrency_limit=1)
        return blocks

    def launch(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
        """Start serving in the background; returns the page's address.

        Raises InputError when host:port cannot be served (a bad port, an address of another
        machine, a port in use).
        """
        check_address(host, port)
        try:
            self.blocks.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                               share=False, ssr_mode=False, max_file_size=f"{self.limits.max_file_mb}mb",
                               show_error=True)
        except OSError:  # taken since it was checked: Gradio's own message names its launch() options
            raise InputError(f"--port {port}: {host}:{port} is in use: pick another --port") from None
        return self.blocks.local_url

    def close(self) -> None:
        """Stop serving and remove the uploads and results."""
        self.blocks.close(verbose=False)
        shutil.rmtree(self.temp_root, ignore_errors=True)


def serve(
    backbone: str | os.PathLike | None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: str | None = None,
    method: str | None = None,
    pamr: bool = False,
    prob_thd: float | None = None,
    slide: bool = True,
    limits: Limits = Limits(),
    model: str | os.PathLike | None = None,
    **options: Any,
) -> None:
    """Load the model, serve the page at host:port until interrupted (Ctrl+C or SIGTERM), then clean up.

    The address is checked before the model loads (minutes for a large one): a bad or busy port is
    one InputError at once. With `model` (a folder `scclip export` wrote) the page runs it with the
    torch-free runtime (`OnnxSegmenterPool`): its method and maths settings are the export's, so
    `backbone`, `method` and `options` must be left out; `pamr` and `prob_thd` (when given) set the page's
    initial values (else the exported ones) and `device='cuda'` asks ONNX Runtime for CUDA.
    """
    require_gradio()
    started = time.perf_counter()
    check_address(host, port)
    if prob_thd is not None:
        check_value("prob_thd", prob_thd)  # before the model loads
    if model is None:
        from .methods import available_methods

        methods = available_methods()
        check_value("method", method or DEFAULT_METHOD)
        prob_thd = DEFAULTS["prob_thd"] if prob_thd is None else prob_thd
        pool = SegmenterPool(backbone, device=device, method=method, slide=slide, encode_budget=limits.max_names,
                             **options)
    else:
        if backbone is not None or method is not None or options:
            given = ", ".join([*(["backbone"] if backbone is not None else []), *(["method"] if method else []), *options])
            raise InputError(f"the exported model {model} fixes the method and its settings: leave out {given} "
                             "(export another model to change them)")
        methods = []
        pool = OnnxSegmenterPool(model, providers=onnx_providers(device), slide=None if slide else False,
                                 encode_budget=limits.max_names)
        pamr = pamr or pool.model_of().pamr_steps > 0
        prob_thd = pool.model_of().prob_thd if prob_thd is None else prob_thd
    model = pool.model_of(method)  # loaded now: bad options fail before the page starts, as do PAMR and the threshold
    check_call_settings(model.method, {"pamr_steps": PAMR_ON_STEPS if pamr else 0, "prob_thd": prob_thd})
    demo = WebDemo(pool, limits, methods, pamr=pamr, prob_thd=prob_thd)
    on_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)} if on_main_thread else {}
    if on_main_thread:
        # `kill` cleans up like Ctrl+C, and Ctrl+C works even where it was ignored (a script's background job).
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
    try:
        url = demo.launch(host, port)
        print(f"scclip web demo: {url} (ready in {time.perf_counter() - started:.1f} s; Ctrl+C stops it)", flush=True)
        print(f"uploads and results: {demo.temp_root} (removed on exit)", flush=True)
        while demo.blocks.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("stopping the web demo", flush=True)
    finally:
        if on_main_thread:  # a second Ctrl+C must not cut the clean-up short
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        demo.close()
        for number, handler in handlers.items():
            signal.signal(number, handler)


def check_address(host: str, port: int) -> None:
    """Refuse, in one line, a port out of 1–65535, a host that is not an address of this machine, or a
    port in use (tried by binding it, as the server will; SO_REUSEADDR lets a just-closed port pass)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"--port {port} is not a port: use a number from 1 to 65535 (default {DEFAULT_PORT})")
    other_host = f"use {DEFAULT_HOST}, 0.0.0.0 or this machine's address"
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as error:
        raise InputError(f"--host {host}: not an address ({error}): {other_host}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except PermissionError:
            raise InputError(
                f"--port {port}: serving on ports below 1024 needs administrator rights: use --port {DEFAULT_PORT}"
            ) from None
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise InputError(
                    f"--port {port}: {host}:{port} is in use (another server runs there): pick another --port"
                ) from None
            raise InputError(f"--host {host}: cannot serve there ({error.strerror}): {other_host}") from None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


