"""The web demo: segment your own photo with your own words in the browser (`python demo.py --web`).

A Gradio app over `Segmenter` (no second pipeline): the CLIP model loads once, at start; the
segmenters of the vocabularies asked for share it and are kept, most recently used first, so a
second request with the same classes costs one image encoding (a new vocabulary is encoded once
and, through the on-disk text-feature cache, never again for this checkpoint). Requests go through
Gradio's queue one at a time; every input problem is a message in the page (`gr.Error`), never a
traceback, and the server keeps serving. Uploads and results live in one private temporary folder
that is pruned while serving and removed on exit. Gradio's usage analytics are off and nothing
else is fetched from the internet.

The same event is the HTTP API `segment`:

    from gradio_client import Client, handle_file
    picture, label_files, shares = Client("http://127.0.0.1:7860/").predict(
        handle_file("cat.jpg"), "cat, sofa, wall", api_name="/segment")
"""
from __future__ import annotations

import html
import importlib
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .api import SAMPLE_CLASSES, SAMPLE_IMAGE, SegmentationResult, Segmenter, parse_classes, vocabulary_lines
from .clip import load
from .clip.openclip import split_backbone
from .errors import ImageError, InputError, ScclipError
from .imageio import read_image
from .methods import available_methods

INSTALL_HINT = 'pip install -e ".[web]"'
GRADIO_MAJOR = 6
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
VOCABULARY_FOLDER = Path(__file__).resolve().parents[1] / "configs"
NO_VOCABULARY = "none: the classes typed above"
# Shown names of the benchmark vocabularies shipped as configs/cls_<key>.txt.
VOCABULARY_TITLES = {
    "voc21": "PASCAL VOC with background",
    "voc20": "PASCAL VOC",
    "context60": "PASCAL Context with background",
    "context59": "PASCAL Context",
    "coco_object": "COCO-Object",
    "coco_stuff": "COCO-Stuff",
    "ade20k": "ADE20K",
    "city_scapes": "Cityscapes",
}
# Sample photos: the bundled one, and scikit-image's public-domain photos when it is installed.
SKIMAGE_SAMPLES = (
    ("chelsea.png", "cat, wall, floor, blanket"),
    ("coffee.png", "coffee cup, saucer, spoon, table"),
    ("rocket.jpg", "rocket, sky, tree, launch tower"),
)
DEFAULT_METHOD = "scclip"
PANEL_SIDE = 512
DEFAULT_OPACITY = 0.5


@dataclass(frozen=True)
class Limits:
    """What one request may ask for.

    Attributes:
        max_side: the largest image side in pixels: a phone's 12-megapixel photo (4032×3024)
            fits. The model never sees more than 2048×336 (the benchmarks' resize); the labels
            come back at full size, in bounded memory, and the picture is drawn from them.
        max_classes: the most classes per request; 256 is what a palette label PNG can hold.
        max_file_mb: the largest upload, in megabytes (refused by Gradio before it is stored).
        queue_size: requests waiting at most; more get "the queue is full" in the page.
    """

    max_side: int = 4096
    max_classes: int = 256
    max_file_mb: int = 50
    queue_size: int = 32

    def __post_init__(self) -> None:
        for name in ("max_side", "max_classes", "max_file_mb", "queue_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} {getattr(self, name)} must be at least 1")
        if self.max_classes > 256:
            raise InputError(f"--max-classes {self.max_classes}: a label PNG holds at most 256 classes: use 256 or fewer")


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


def benchmark_vocabularies(folder: Path = VOCABULARY_FOLDER) -> dict[str, Path]:
    """Shown name → file of the benchmark vocabularies found in `folder` (empty when not shipped)."""
    found = {}
    for key, title in VOCABULARY_TITLES.items():
        path = folder / f"cls_{key}.txt"
        if path.is_file():
            count = sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
            found[f"{title} ({count} classes)"] = path
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


class SegmenterPool:
    """One loaded CLIP and the segmenters built on it, one per (method, classes, PAMR, threshold).

    Building a segmenter for new classes encodes their text (or reads it from the on-disk
    text-feature cache); the `capacity` most recently used are kept, so repeating a request
    encodes nothing. Thread-safe: Gradio may call from several worker threads.

    Args:
        backbone: a public CLIP name or a checkpoint file, as for `Segmenter`.
        device: 'cpu', 'cuda' or None (CUDA when available).
        method: the method used when a request names none (None: `Segmenter`'s default, scclip).
        slide: sliding-window inference (False: whole image at once).
        capacity: how many segmenters to keep.
        **options: further `Segmenter` options (e.g. clip_arch, download_root, logit_scale).
    """

    def __init__(
        self,
        backbone: str | os.PathLike,
        device: str | None = None,
        method: str | None = None,
        slide: bool = True,
        capacity: int = 8,
        **options: Any,
    ) -> None:
        backbone, clip_arch = split_backbone(backbone, options.pop("clip_arch", None))
        if clip_arch is not None:
            options["clip_arch"] = clip_arch
        self.backbone = backbone
        self.device = device
        self.method = method
        self.slide = slide
        self.options = options
        self.capacity = capacity
        self.clip_model, _ = load(backbone, device=device, download_root=options.get("download_root"), arch=clip_arch)
        self._segmenters: OrderedDict[tuple, Segmenter] = OrderedDict()
        self._lock = threading.Lock()
        self.builds = 0  # segmenters built so far (a repeated request builds none)

    def get(self, lines: Sequence[str], method: str | None = None, pamr: bool = False, prob_thd: float = 0.0) -> Segmenter:
        """The segmenter for these vocabulary lines and settings, built (text encoded) on first use."""
        method = method or self.method
        key = (method, tuple(lines), bool(pamr), float(prob_thd))
        with self._lock:
            segmenter = self._segmenters.get(key)
            if segmenter is not None:
                self._segmenters.move_to_end(key)
                return segmenter
            extra = dict(self.options)
            if method is not None:
                extra["method"] = method
            segmenter = Segmenter(self.backbone, classes=list(lines), device=self.device, pamr=pamr,
                                  prob_thd=prob_thd, slide=self.slide, clip_model=self.clip_model, **extra)
            self.builds += 1
            self._segmenters[key] = segmenter
            while len(self._segmenters) > self.capacity:
                self._segmenters.popitem(last=False)
            return segmenter


class ResultFolder:
    """Where the label PNGs and JSONs of requests are written before Gradio copies them out.

    Gradio copies each returned file into its cache (which `delete_cache` prunes), so a request's
    folder is no longer needed once the request is over; folders of finished requests are removed
    when the next request starts, and the whole folder on exit.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._finished: list[Path] = []
        self._lock = threading.Lock()

    def new(self) -> Path:
        with self._lock:
            for folder in self._finished:
                shutil.rmtree(folder, ignore_errors=True)
            self._finished.clear()
        folder = self.root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return folder

    def finished(self, folder: Path) -> None:
        with self._lock:
            self._finished.append(folder)


def uploaded_path(payload: Any) -> tuple[Path, str]:
    """The stored file of an uploaded image and the name the user gave it."""
    if not payload:
        raise InputError("no image: upload, paste or drop one, or pick a sample photo below the image box")
    path = payload.get("path") if isinstance(payload, dict) else None
    if not path:
        raise InputError("the image did not arrive as a file: upload it again")
    name = payload.get("orig_name") or Path(path).name
    return Path(path), Path(name).name


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


def request_lines(classes: str | None, vocabulary: str | None, vocabularies: dict[str, Path], max_classes: int) -> list[str]:
    """The vocabulary lines of a request: the chosen benchmark vocabulary's, then the typed classes."""
    vocab_file = None
    if vocabulary and vocabulary != NO_VOCABULARY:
        if vocabulary not in vocabularies:
            raise InputError(f"unknown vocabulary {vocabulary!r}: pick one of {', '.join(vocabularies)}")
        vocab_file = vocabularies[vocabulary]
    typed = (classes or "").strip()
    if vocab_file is None and not parse_classes(typed):
        raise InputError("no class names: type some, e.g. 'cat, dog|puppy, sky', or pick a benchmark vocabulary")
    lines = vocabulary_lines(typed if parse_classes(typed) else None, vocab_file)
    if len(lines) > max_classes:
        raise InputError(
            f"{len(lines)} classes is more than this demo's limit of {max_classes}: "
            f"name fewer, or start the demo with --max-classes {min(len(lines), 256)}"
        )
    return lines


def shares_of(result: SegmentationResult) -> dict[str, float]:
    """Pixel share of each class present, largest first (what the legend lists)."""
    return {entry.name: round(entry.share, 6) for entry in result.legend()}


class WebDemo:
    """The page, its events and its server.

    Args:
        pool: the model and its segmenters.
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
        os.environ["GRADIO_TEMP_DIR"] = str(self.temp_root / "gradio")
        self.results = ResultFolder(self.temp_root / "results")
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
            path, name = uploaded_path(image)
            lines = request_lines(classes, vocabulary, self.vocabularies, self.limits.max_classes)
            if method and self.methods and method not in self.methods:
                raise InputError(f"unknown method {method!r}: use one of {', '.join(self.methods)}")
            if not 0.0 <= float(prob_thd) <= 1.0:
                raise InputError(f"probability threshold {prob_thd} must lie in [0, 1]")
            if not 0.0 <= float(opacity) <= 1.0:
                raise InputError(f"overlay opacity {opacity} must lie in [0, 1]")
            check_image_size(path, name, self.limits.max_side)
            progress(0.1, desc="reading the image")
            try:
                rgb = read_image(path)
            except ImageError as error:
                raise ImageError(str(error).replace(str(path), name)) from None
            progress(0.2, desc=f"text features of {len(lines)} classes")
            segmenter = self.pool.get(lines, method or None, bool(pamr), float(prob_thd))
            progress(0.3, desc="segmenting")
            result = segmenter(rgb)
            progress(0.9, desc="drawing")
            picture = result.picture(PANEL_SIDE, alpha=float(opacity))
            folder = self.results.new()
            stem = Path(name).stem or "image"
            files = [str(written) for written in result.save_mask(folder / f"{stem}_mask.png")]
            self.results.finished(folder)
            return picture, files, shares_of(result), result
        except ScclipError as error:
            raise gr.Error(html.escape(str(error), quote=False), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # the server keeps serving; the page says what happened, the log has the trace
            traceback.print_exc()
            message = f"segmentation failed ({type(error).__name__}: {error}); the server log has the details"
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

    def build(self) -> Any:
        gr = self.gr
        samples = self.copy_samples()
        with gr.Blocks(title="SC-CLIP: segment your photo with your words", analytics_enabled=False,
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
                concurrency_limit=1, concurrency_id="model",
                api_description="Segment an image into the named classes: returns the picture "
                                "(image | prediction | overlay with legend), the label PNG and its JSON, and the pixel shares.",
            )
            opacity.release(self.redraw, inputs=[kept, opacity], outputs=picture, api_visibility="private",
                            concurrency_limit=4, show_progress="hidden")
        blocks.queue(max_size=self.limits.queue_size, default_concurrency_limit=1)
        return blocks

    def launch(self, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
        """Start serving in the background; returns the page's address."""
        self.blocks.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                           share=False, ssr_mode=False, max_file_size=f"{self.limits.max_file_mb}mb",
                           show_error=True)
        return self.blocks.local_url

    def close(self) -> None:
        """Stop serving and remove the uploads and results."""
        self.blocks.close(verbose=False)
        shutil.rmtree(self.temp_root, ignore_errors=True)


def serve(
    backbone: str | os.PathLike,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: str | None = None,
    method: str | None = None,
    pamr: bool = False,
    prob_thd: float = 0.0,
    slide: bool = True,
    limits: Limits = Limits(),
    **options: Any,
) -> None:
    """Load the model, serve the page at host:port until interrupted (Ctrl+C or SIGTERM), then clean up."""
    require_gradio()
    started = time.perf_counter()
    methods = available_methods()
    if method is not None and methods and method not in methods:
        raise InputError(f"--method {method!r} is not one of {', '.join(methods)}")
    pool = SegmenterPool(backbone, device=device, method=method, slide=slide, **options)
    pool.get(vocabulary_lines(list(SAMPLE_CLASSES)), method, pamr, prob_thd)  # fail early on bad options
    demo = WebDemo(pool, limits, methods, pamr=pamr, prob_thd=prob_thd)
    on_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)} if on_main_thread else {}
    if on_main_thread:
        # `kill` cleans up like Ctrl+C, and Ctrl+C works even where it was ignored (a script's background job).
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
    try:
        try:
            url = demo.launch(host, port)
        except OSError as error:
            raise InputError(f"cannot serve on {host}:{port} ({error}): pick another --port or --host") from None
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


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


