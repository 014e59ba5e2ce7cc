"""The web demo (scclip/web.py, `demo.py --web`): the vocabulary pool, request checks, and the served app
driven by gradio_client from several threads and by a real headless Chromium.

The app runs as `python demo.py --web` in its own process on a free port with a tiny random
checkpoint, as a user would start it; the browser is Debian's chromium with its chromedriver
(installed by .ci/run), never downloaded.
"""
import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as sample_data

from scclip.api import SAMPLE_IMAGE, display_names
from scclip.benchmarks import BENCHMARKS
from scclip.errors import InputError, ScclipError
from scclip.imageio import NOT_AN_IMAGE
from scclip.vocabulary import SAMPLE_CLASSES, Vocabulary
from scclip.web import (
    ENCODER_BUSY,
    NO_VOCABULARY,
    NOT_UPLOADED,
    Limits,
    OnnxSegmenterPool,
    ResultFolder,
    SegmenterPool,
    WebDemo,
    benchmark_vocabularies,
    check_address,
    request_lines,
    serve,
    uploaded_path,
)
from test_onnx import assert_labels_equal_outside_ties, tiny_export  # noqa: F401  (tiny_export: a fixture)

REPO_ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 180
MAX_SIDE = 640
MAX_CLASSES = 24

spec = importlib.util.spec_from_file_location("demo", REPO_ROOT / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)


def small_photo(folder: Path, name: str, array: np.ndarray, width: int = 160) -> Path:
    """A real photo scaled down to `width` pixels (the model upsamples to 336 anyway), as PNG."""
    image = Image.fromarray(array)
    image = image.resize((width, round(image.height * width / image.width)), Image.BILINEAR)
    path = folder / name
    image.save(path)
    return path


# ---------------------------------------------------------------- without a server


def test_request_lines_reads_typed_classes_and_benchmark_vocabularies():
    vocabularies = benchmark_vocabularies()
    assert len(vocabularies) == 8, "the eight shipped vocabularies (scclip/data/vocabularies) are offered"
    assert request_lines("cat, dog|puppy , sky", NO_VOCABULARY, vocabularies, 10) == ["cat", "dog, puppy", "sky"]
    voc = next(name for name in vocabularies if name.startswith("PASCAL VOC ("))
    lines = request_lines("", voc, vocabularies, 256)
    assert len(lines) == 20 and lines[0] == "aeroplane"
    assert request_lines("unicorn", voc, vocabularies, 256)[-1] == "unicorn"  # typed classes come after


@pytest.mark.parametrize(
    "classes, vocabulary, message",
    [
        ("", NO_VOCABULARY, "no class names"),
        (" , | ,", NO_VOCABULARY, "no class names"),
        ("a, b, c, d", NO_VOCABULARY,
         "this request has 4 classes, more than this demo's limit of 3: name fewer, or start the demo with --max-classes 4"),
        ("a|b|c, d|e", NO_VOCABULARY, "this request has 5 names (classes and their synonyms), more than this demo's limit of 4"),
        ("cat, cat", NO_VOCABULARY, "cat"),
        ("cat", "Imaginary (3 classes)", "unknown vocabulary"),
        # A vocabulary is one of the menu's names, never a file of the server.
        ("cat", str(BENCHMARKS["voc20"].vocabulary), "unknown vocabulary"),
        ("cat", "scclip/data/vocabularies/voc20.txt", "unknown vocabulary 'scclip/data/vocabularies/voc20.txt'"),
        ("cat", "/etc/passwd", "unknown vocabulary '/etc/passwd'"),
        ("cat", ["PASCAL VOC (20 classes)"], "unknown vocabulary 'list'"),
        ({"path": "/etc/passwd"}, NO_VOCABULARY, "the classes must be text, not dict"),
    ],
)
def test_request_lines_refuses_bad_vocabularies_with_a_message(classes, vocabulary, message):
    with pytest.raises(ScclipError, match=re.escape(message)):
        request_lines(classes, vocabulary, benchmark_vocabularies(), 3, max_names=4)


def test_too_many_classes_hint_names_what_this_request_needs():
    classes = ", ".join(f"class {i}" for i in range(300))
    with pytest.raises(InputError) as error:
        request_lines(classes, NO_VOCABULARY, {}, 256, max_names=1000)
    # A label PNG holds 256 classes: no --max-classes would let 300 through, so none is suggested.
    assert str(error.value) == "this request has 300 classes; a label map holds at most 256: name 256 or fewer"
    with pytest.raises(InputError, match=re.escape("this request has 200 classes, more than this demo's limit of 24: "
                                                   "name fewer, or start the demo with --max-classes 200")):
        request_lines(", ".join(f"class {i}" for i in range(200)), NO_VOCABULARY, {}, 24)


def test_only_files_inside_the_upload_folder_are_read(tmp_path):
    uploads = tmp_path / "uploads"
    (uploads / "0a1b" / "sub").mkdir(parents=True)
    photo = uploads / "0a1b" / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (uploads / "0a1b" / "link.png").symlink_to(outside)
    (uploads / "0a1b" / "loop.png").symlink_to(uploads / "0a1b" / "loop.png")
    foreign = [
        str(outside),  # an image outside
        str(tmp_path / "missing.png"),  # nothing there
        str(tmp_path),  # a folder
        "/etc/passwd",  # not an image
        str(uploads / "0a1b" / "link.png"),  # a link inside pointing outside
        str(uploads / "0a1b" / "loop.png"),  # a link to itself
        str(uploads / "0a1b" / ".." / ".." / "secret.png"),  # climbing out
        str(uploads / "0a1b" / "sub"),  # a folder inside
        str(uploads / "0a1b" / "gone.png"),  # an upload pruned since
        "secret.png",  # relative: never the server's working folder
        str(photo) + "\0.png",
    ]
    for path in foreign:
        with pytest.raises(InputError) as error:
            uploaded_path({"path": path, "meta": {"_type": "gradio.FileData"}}, uploads)
        assert str(error.value) == NOT_UPLOADED, path
    found, name = uploaded_path({"path": str(photo), "orig_name": "../../holiday.png"}, uploads)
    assert found == photo.resolve() and name == "holiday.png"
    for payload in ("/etc/passwd", {"path": ["/etc/passwd"]}, {"url": "http://example.com/x.png"}):
        with pytest.raises(InputError, match="did not arrive as a file"):
            uploaded_path(payload, uploads)


@pytest.mark.parametrize("port", [99999, 0, -1, 65536])
def test_a_port_out_of_range_is_one_line_before_the_model_loads(port, capsys, tmp_path):
    code = demo.main(["--web", "--port", str(port), "--backbone", str(tmp_path / "never_loaded.pt")])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"error: --port {port} is not a port: use a number from 1 to 65535 (default 7860)\n"


def test_a_port_in_use_or_a_foreign_host_is_one_line_before_the_model_loads(capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = demo.main(["--web", "--port", str(port), "--backbone", str(tmp_path / "never_loaded.pt")])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1
        assert err.startswith(f"error: --port {port}: 127.0.0.1:{port} is in use")
    with pytest.raises(InputError, match="--host 192.0.2.1: cannot serve there"):
        check_address("192.0.2.1", 7860)  # TEST-NET-1: never an address of this machine
    with pytest.raises(InputError, match="--host no-such-host.invalid: not an address"):
        check_address("no-such-host.invalid", 7860)


def test_limits_are_checked():
    with pytest.raises(InputError, match="--max-side 0 must be at least 1"):
        Limits(max_side=0)
    with pytest.raises(InputError, match="256"):
        Limits(max_classes=300)


def test_pool_keeps_one_model_and_encodes_a_vocabulary_once(tiny_checkpoint_path, monkeypatch):
    import scclip.segmentor

    encoded = []
    encode = scclip.segmentor.encode_queries

    def counting_encode(model, queries, *args, **kwargs):
        encoded.append(list(queries))
        return encode(model, queries, *args, **kwargs)

    monkeypatch.setattr(scclip.segmentor, "encode_queries", counting_encode)
    pool = SegmenterPool(tiny_checkpoint_path, device="cpu", capacity=2, text_cache=False)
    model, first = pool.get(["cat", "dog, puppy"])
    sample = Vocabulary.from_lines(SAMPLE_CLASSES).queries
    assert encoded == [sample, ["cat", "dog", "puppy"]]  # the model's own classes when it loads, then the request's
    assert pool.get(["cat", "dog, puppy"]) == (model, first) and len(encoded) == 2
    naclip, same = pool.get(["cat", "dog, puppy"], method="naclip")  # another method: its own model, the same classes
    assert same is first and naclip.method == "naclip" and pool.model_of("naclip") is naclip
    # Every model runs on the one loaded CLIP.
    assert model.segmentor.encoder.visual is naclip.segmentor.encoder.visual is pool.clip_model.visual
    # A request's PAMR and threshold are options of its call: they build and encode nothing.
    image = np.kron(np.random.default_rng(3).integers(0, 256, (4, 6, 3)), np.ones((24, 24, 1))).astype(np.uint8)
    refined = model(image, first, pamr=True, prob_thd=0.2)
    assert refined.class_names == ["cat", "dog"] and pool.builds == 1 and len(encoded) == 3  # naclip's own classes
    assert model.segmentor.post.pamr_steps == 0
    pool.get(["tree"])
    pool.get(["sky"])
    pool.get(["cat", "dog, puppy"])  # pushed out by the two newer ones (capacity 2): encoded again
    assert pool.builds == 4 and encoded[3:] == [["tree"], ["sky"], ["cat", "dog", "puppy"]]


def test_a_new_vocabulary_waits_in_its_own_lane(tiny_checkpoint_path, monkeypatch):
    """While one new vocabulary is encoded: classes already encoded build at once (any method or
    setting), more new vocabularies wait while their names fit the budget, and the next is told the
    server is busy."""
    import scclip.segmentor

    entered, release = threading.Event(), threading.Event()
    encode = scclip.segmentor.encode_queries

    def held_encode(model, queries, *args, **kwargs):
        if queries[0].startswith("held"):
            entered.set()
            assert release.wait(60)
        return encode(model, queries, *args, **kwargs)

    monkeypatch.setattr(scclip.segmentor, "encode_queries", held_encode)
    pool = SegmenterPool(tiny_checkpoint_path, device="cpu", encode_budget=4)
    pool.get(["cat", "wall"])
    waits = []
    with ThreadPoolExecutor(2) as executor:
        slow = executor.submit(pool.get, ["held zebra", "sky"])
        assert entered.wait(60)
        second = executor.submit(pool.get, ["held lion", "grass"], on_wait=lambda: waits.append("lion"))
        deadline = time.monotonic() + 30
        while pool._encode_queue < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ScclipError, match=re.escape(ENCODER_BUSY)):
            pool.get(["owl", "moon"])
        assert pool.get(["cat", "wall"]) is not None
        assert pool.get(["cat", "wall"], method="naclip")[0].method == "naclip"  # a model made beside the lane
        assert not slow.done() and not second.done()
        release.set()
        assert slow.result(60)[1].class_names == ("held zebra", "sky")
        assert second.result(60)[1].class_names == ("held lion", "grass")
    assert waits == ["lion"]
    assert pool.get(["owl", "moon"])[1].class_names == ("owl", "moon")  # the lane is free again
    assert pool.get(["a", "b", "c", "d", "e"])[1].num_classes == 5  # over the budget, but nothing waits


def test_results_of_finished_requests_go_after_a_grace_time(tmp_path):
    results = ResultFolder(tmp_path, grace_s=0.5)
    first = results.new()
    results.finished(first)
    second = results.new()  # the first request's files may still be being copied out: kept
    assert first.is_dir() and second.is_dir()
    time.sleep(0.6)
    results.new()
    assert not first.exists() and second.is_dir(), "only finished requests' folders go"


def test_web_without_gradio_says_what_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail
    code = demo.main(["--web", "--backbone", str(tmp_path / "never_loaded.pt")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: the web demo needs Gradio 6")
    assert 'pip install -e ".[web]"' in err


# ---------------------------------------------------------------- the served app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# `python -c` prelude that makes torch and the OpenMMLab stack uninstallable, then runs demo.py with the arguments.
WITHOUT_TORCH = (
    "import importlib.abc, runpy, sys\n"
    "BLOCKED = ('torch', 'torchvision', 'mmcv', 'mmengine', 'mmseg', 'cv2')\n"
    "class Block(importlib.abc.MetaPathFinder):\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in BLOCKED:\n"
    "            raise ModuleNotFoundError(f'{name} is blocked by the test')\n"
    "sys.meta_path.insert(0, Block())\n"
    "sys.argv[0] = 'demo.py'\n"
    "runpy.run_path('demo.py', run_name='__main__')\n"
)


class Server:
    """`python demo.py --web` in its own process, with its output collected line by line.

    `model_arguments` choose the model (`--backbone CKPT`, or `--runtime onnx --model DIR`); with
    `without_torch`, torch cannot be imported in that process.
    """

    def __init__(self, model_arguments: list[str], log: Path, without_torch: bool = False) -> None:
        self.port = free_port()
        script = ["-c", WITHOUT_TORCH] if without_torch else [str(REPO_ROOT / "demo.py")]
        command = [sys.executable, *script, "--web", *model_arguments, "--device", "cpu", "--port", str(self.port),
                   "--max-side", str(MAX_SIDE), "--max-classes", str(MAX_CLASSES)]
        self.log = log
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url, self.temp_root = self._wait_until_ready()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def _wait_until_ready(self) -> tuple[str, Path]:
        deadline = time.monotonic() + START_TIMEOUT_S
        url = None
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            if match := re.match(r"scclip web demo: (http\S+)", line):
                url = match.group(1)
            elif (match := re.match(r"uploads and results: (.+) \(removed on exit\)", line)) and url:
                return url, Path(match.group(1))
        self.stop()
        pytest.fail(f"the web demo did not start within {START_TIMEOUT_S} s:\n{''.join(self.output)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.write_text("".join(self.output), encoding="utf-8")
        return self.process.returncode


@pytest.fixture(scope="module")
def server(tiny_checkpoint_path, tmp_path_factory):
    app = Server(["--backbone", str(tiny_checkpoint_path)], tmp_path_factory.mktemp("web") / "server.log")
    yield app
    code = app.stop()
    output = "".join(app.output)
    assert code == 0, output
    assert "Traceback" not in output and "shutdown failed" not in output, output
    assert not app.temp_root.exists(), "uploads and results are removed when the server stops"


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    return {
        "chelsea": small_photo(folder, "chelsea.png", sample_data.chelsea()),
        "coffee": small_photo(folder, "coffee.png", sample_data.coffee(), width=128),
        "rocket": small_photo(folder, "rocket.png", sample_data.rocket(), width=96),
        "astronaut": small_photo(folder, "astronaut.png", np.asarray(Image.open(SAMPLE_IMAGE).convert("RGB")), 144),
    }


def check_answer(answer, photo: Path, class_names: list[str]) -> None:
    """A `segment` answer: the picture, the label PNG + JSON of this photo and classes, and the shares."""
    picture, label_files, shares = answer
    width, height = Image.open(photo).size
    assert Image.open(picture).width > 2 * width, "image | prediction | overlay side by side"
    png, report = sorted(label_files, key=lambda path: Path(path).suffix != ".png")
    assert Path(png).name == f"{photo.stem}_mask.png"
    mask = Image.open(png)
    assert mask.mode == "P" and mask.size == (width, height)
    summary = json.loads(Path(report).read_text(encoding="utf-8"))
    assert summary["classes"] == class_names
    assert sum(summary["pixel_shares"].values()) == pytest.approx(1.0, abs=1e-4)
    counts = np.bincount(np.asarray(mask).ravel(), minlength=len(class_names))
    present = {class_names[i]: counts[i] / counts.sum() for i in np.flatnonzero(counts)}
    shown = {entry["label"]: entry["confidence"] for entry in shares["confidences"]}
    assert shown.keys() == present.keys(), "the shares name exactly the classes in the label map"
    for name, share in present.items():
        assert shown[name] == pytest.approx(share, abs=1e-4)


@pytest.mark.slow
def test_segment_endpoint_answers_four_clients_at_once(server, photos):
    from gradio_client import Client, handle_file

    voc20 = next(name for name in benchmark_vocabularies() if name.startswith("PASCAL VOC ("))
    voc20_names = display_names(request_lines("", voc20, benchmark_vocabularies(), 256))
    assert len(voc20_names) == 20 and "tvmonitor" in voc20_names  # the benchmark's own names
    # Each client asks something different: its own classes, a benchmark vocabulary, other methods.
    requests = [
        (photos["chelsea"], dict(classes="cat, wall, floor|ground", method="resclip"), ["cat", "wall", "floor"]),
        (photos["coffee"], dict(classes="", vocabulary=voc20), voc20_names),
        (photos["rocket"], dict(classes="rocket, sky, tree", method="naclip"), ["rocket", "sky", "tree"]),
        (photos["astronaut"], dict(classes="astronaut|woman, flag, wall", pamr=True), ["astronaut", "flag", "wall"]),
    ]

    def ask(request):
        photo, arguments, _ = request
        return Client(server.url, verbose=False).predict(handle_file(photo), **arguments, api_name="/segment")

    with ThreadPoolExecutor(len(requests)) as executor:
        answers = list(executor.map(ask, requests))
    for (photo, _, names), answer in zip(requests, answers):
        check_answer(answer, photo, names)


@pytest.mark.slow
def test_bad_requests_get_a_message_and_the_server_keeps_serving(server, photos, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False)
    not_an_image = tmp_path / "holiday.png"
    not_an_image.write_text("this is a text file, not a photo")
    too_large = tmp_path / "panorama.png"
    Image.new("RGB", (MAX_SIDE + 1, 8)).save(too_large)
    bad = [
        ((handle_file(not_an_image), "cat, dog"), "holiday.png: not an image that can be read"),
        ((handle_file(too_large), "cat, dog"), f"panorama.png is {MAX_SIDE + 1}×8 pixels, more than this demo's limit of {MAX_SIDE}"),
        ((handle_file(photos["chelsea"]), " , "), "no class names"),
        ((handle_file(photos["chelsea"]), ",".join(f"class {i}" for i in range(MAX_CLASSES + 1))),
         f"this request has {MAX_CLASSES + 1} classes, more than this demo's limit of {MAX_CLASSES}: "
         f"name fewer, or start the demo with --max-classes {MAX_CLASSES + 1}"),
        ((handle_file(photos["chelsea"]), "cat", NO_VOCABULARY, "scclip", False, 1.5),
         "threshold 1.5 must be a number in [0, 1]"),
        ((handle_file(photos["chelsea"]), "cat", NO_VOCABULARY, "/etc/passwd"), "unknown method '/etc/passwd'"),
    ]
    for arguments, message in bad:
        with pytest.raises(AppError) as error:
            client.predict(*arguments, api_name="/segment")
        assert message in str(error.value)
        assert "Traceback" not in str(error.value)
    answer = client.predict(handle_file(photos["chelsea"]), "cat, wall", api_name="/segment")
    check_answer(answer, photos["chelsea"], ["cat", "wall"])
    assert server.process.poll() is None
    # Uploads and results stay in the app's private folder, and finished requests' results go.
    assert list((server.temp_root / "gradio").rglob("chelsea.png")), "uploads are kept in the private folder"


@pytest.mark.slow
def test_api_reads_no_file_that_was_not_uploaded(server, photos, tmp_path, monkeypatch):
    """The issue's attack: a request naming a server path. gradio_client uploads a FileData path of
    its own machine first, so the client's upload is switched off here: the server gets the raw path,
    as from a client elsewhere. Without "meta" Gradio passes the path through and the handler refuses
    it; with it Gradio's own check does. Either way one answer, whatever is (not) at the path."""
    from gradio_client import Client, handle_file
    from gradio_client.client import Endpoint
    from gradio_client.exceptions import AppError

    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 48), "red").save(secret)
    link = server.temp_root / "gradio" / "link.png"  # inside the upload folder, pointing out of it
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(secret)
    foreign = {"image": secret, "nothing": tmp_path / "missing.png", "folder": tmp_path, "link": link}
    monkeypatch.setattr(Endpoint, "_upload_file", lambda self, payload, data_index: payload)
    client = Client(server.url, verbose=False)
    for meta in ({}, {"meta": {"_type": "gradio.FileData"}}):
        answers = {}
        for what, path in foreign.items():
            with pytest.raises(AppError) as error:
                client.predict({"path": str(path), **meta}, "cat, wall", api_name="/segment")
            answers[what] = str(error.value).replace(str(path), "PATH")
        assert len(set(answers.values())) == 1, f"the answers tell the paths apart: {answers}"
        assert NOT_UPLOADED in answers["image"] if not meta else "not uploaded" in answers["image"]
    assert not list(server.temp_root.rglob("secret_mask*")) and not list(server.temp_root.rglob("link_mask*"))

    # A sample photo (cached by Gradio in the upload folder when the app started) is accepted.
    config = json.loads(urllib.request.urlopen(server.url.rstrip("/") + "/config", timeout=30).read())
    samples = [value for component in config["components"] if component.get("type") == "dataset"
               for row in component["props"]["samples"] for value in row if isinstance(value, dict)]
    assert samples, "the page offers sample photos"
    answer = client.predict(samples[0], "astronaut, wall", api_name="/segment")
    assert answer[2]["confidences"]
    monkeypatch.undo()
    check_answer(Client(server.url, verbose=False).predict(handle_file(photos["chelsea"]), "cat, wall",
                                                           api_name="/segment"), photos["chelsea"], ["cat", "wall"])


def raw_call(url: str, data: list) -> tuple[str, object]:
    """One request to the `segment` API as plain HTTP (no gradio_client, which would upload local files
    first): the server reads exactly what is sent (the image and the classes, or more; the page's defaults
    for the rest). Returns the event ('complete' or 'error') and its data (an error's message)."""
    data = [*data, *[NO_VOCABULARY, "scclip", False, 0.0, 0.5][len(data) - 2:]]  # the page's other inputs
    post = urllib.request.Request(url.rstrip("/") + "/gradio_api/call/segment", json.dumps({"data": data}).encode(),
                                  {"Content-Type": "application/json"})
    event_id = json.loads(urllib.request.urlopen(post, timeout=60).read())["event_id"]
    stream = urllib.request.urlopen(f"{url.rstrip('/')}/gradio_api/call/segment/{event_id}", timeout=300).read()
    events = re.findall(r"^event: (\w+)\ndata: (.*)$", stream.decode("utf-8"), flags=re.MULTILINE)
    event, payload = next((event, payload) for event, payload in events if event in ("complete", "error"))
    payload = json.loads(payload)
    return event, payload["error"] if event == "error" and isinstance(payload, dict) else payload


def raw_upload(url: str, name: str, content: bytes) -> str:
    """Upload one file as a browser does (multipart POST to /gradio_api/upload); returns the stored path."""
    boundary = "scclip-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url.rstrip("/") + "/gradio_api/upload", body,
                                     {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    (stored,) = json.loads(urllib.request.urlopen(request, timeout=60).read())
    return stored


class CountingHandler(__import__("http.server").server.BaseHTTPRequestHandler):
    """A loopback web server that counts the requests it gets (none must come)."""

    hits: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        CountingHandler.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def foreign_paths(upload_root: Path, tmp_path: Path, web_port: int) -> list[str]:
    """Every kind of path a stranger may name instead of an upload (the issue's list)."""
    secret = tmp_path / "secret.png"
    Image.new("RGB", (64, 48), "red").save(secret)
    return ["relative.png", str(secret), str(tmp_path / "missing.png"), "/" + "x" * 10_000, str(secret) + "\0.png",
            str(tmp_path), str(upload_root), f"{upload_root}/", str(upload_root / ".." / "results"),
            f"http://127.0.0.1:{web_port}/cat.png", f"https://127.0.0.1:{web_port}/cat.png"]


@pytest.mark.slow
def test_every_foreign_path_gets_one_refusal_and_odd_upload_names_are_served(tiny_checkpoint_path, photos, tmp_path):
    """Raw HTTP against a live app: each foreign path (relative, absolute, missing, 10,000 characters, a NUL, a
    folder, the upload folder itself, an http(s) URL on loopback) gets exactly the refusal docs/web.md promises,
    with or without Gradio's FileData "meta", in the image or in another slot; no URL is fetched; uploads with a
    400-character or odd name are served under shortened, sanitised names; and the server stops cleanly."""
    from http.server import ThreadingHTTPServer

    CountingHandler.hits = []
    web = ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    app = Server(["--backbone", str(tiny_checkpoint_path)], tmp_path / "server.log")
    try:
        upload_root = app.temp_root / "gradio"
        for meta in ({}, {"meta": {"_type": "gradio.FileData"}}):
            for path in foreign_paths(upload_root, tmp_path, web.server_address[1]):
                for data in ([{"path": path, **meta}, "cat, wall"], [None, {"path": path, **meta}]):
                    assert raw_call(app.url, data) == ("error", NOT_UPLOADED), (path[:80], meta, data[1])
        assert CountingHandler.hits == [], "a URL given as a file was fetched"

        content = photos["chelsea"].read_bytes()
        long_name = "a" * 396 + ".png"
        odd_name = "../ça; va? $(rm -rf ~) *\n\t'\"|<>.png"
        for upload_name, orig_name, stem in ((long_name, long_name, "a" * 100), ("odd.png", odd_name, "ça_va_rm_-rf")):
            stored = raw_upload(app.url, upload_name, content)
            event, answer = raw_call(app.url, [{"path": stored, "orig_name": orig_name, "meta": meta["meta"]},
                                               "cat, wall"])
            assert event == "complete", answer
            assert sorted(Path(item["path"]).name for item in answer[1]) == [f"{stem}_mask.json", f"{stem}_mask.png"]
        event, answer = raw_call(app.url, [{"path": raw_upload(app.url, long_name, b"not a picture"),
                                            "orig_name": long_name, "meta": meta["meta"]}, "cat"])
        assert event == "error" and NOT_AN_IMAGE in answer and str(app.temp_root) not in answer
        assert len(answer) < 300, "the name is shortened in messages"
    finally:
        code = app.stop()
        web.shutdown()
    output = "".join(app.output)
    assert code == 0, output
    for problem in ("Traceback", "IsADirectoryError", "shutdown failed"):
        assert problem not in output, output


@pytest.fixture
def live_demo(tiny_checkpoint_path, tmp_path, monkeypatch):
    """A `WebDemo` served in this process (so that the text encoder can be held or slowed)."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # WebDemo points it at its own folder; restored after
    pool = SegmenterPool(tiny_checkpoint_path, device="cpu", encode_budget=4)
    app = WebDemo(pool, Limits(max_side=MAX_SIDE, max_classes=MAX_CLASSES), temp_root=tmp_path / "web")
    url = app.launch("127.0.0.1", free_port())
    yield app, url
    app.close()


@pytest.mark.slow
def test_a_new_vocabulary_holds_up_neither_ready_requests_nor_the_page(live_demo, photos, monkeypatch):
    import scclip.segmentor
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    app, url = live_demo
    app.pool.get(request_lines("cat, wall", NO_VOCABULARY, {}, MAX_CLASSES))  # encoded before
    entered, release = threading.Event(), threading.Event()
    encode = scclip.segmentor.encode_queries

    def held_encode(model, queries, *args, **kwargs):
        if queries[0].startswith("held"):
            entered.set()
            assert release.wait(120)
        return encode(model, queries, *args, **kwargs)

    monkeypatch.setattr(scclip.segmentor, "encode_queries", held_encode)
    photo = photos["chelsea"]
    client = Client(url, verbose=False)
    # Names no other test encodes (the text-feature cache on disk lasts the whole session).
    slow = client.submit(handle_file(photo), "held giraffe, field", api_name="/segment")
    assert entered.wait(60)
    waiting = client.submit(handle_file(photo), "held camel, sand", api_name="/segment")
    deadline = time.monotonic() + 60
    while app.pool._encode_queue < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(AppError) as error:
        client.predict(handle_file(photo), "bat, cave", api_name="/segment")
    assert ENCODER_BUSY in str(error.value)
    check_answer(client.predict(handle_file(photo), "cat, wall", api_name="/segment"), photo, ["cat", "wall"])
    assert not slow.done() and not waiting.done()
    release.set()
    check_answer(slow.result(timeout=120), photo, ["held giraffe", "field"])
    check_answer(waiting.result(timeout=120), photo, ["held camel", "sand"])


@pytest.mark.slow
def test_the_page_shows_progress_while_text_is_encoded(live_demo, photos, monkeypatch):
    from gradio_client import Client, handle_file

    app, url = live_demo
    encode_text = app.pool.clip_model.encode_text

    def slow_encode_text(tokens):
        time.sleep(0.4)  # a full-size text tower takes seconds per batch on a CPU
        return encode_text(tokens)

    monkeypatch.setattr(app.pool.clip_model, "encode_text", slow_encode_text)
    names = [f"thing {i}" for i in range(8)]  # 8 × 80 = 640 prompts: 3 batches of 256
    job = Client(url, verbose=False).submit(handle_file(photos["chelsea"]), ", ".join(names), api_name="/segment")
    seen = []
    while not job.done():
        seen += job.status().progress_data or []
        time.sleep(0.05)
    check_answer(job.result(), photos["chelsea"], names)
    counts = [unit.index for unit in seen if unit.length == 640]  # prompts encoded so far, of 640
    assert len(set(counts)) >= 2, f"no text-encoding progress in {seen}"
    assert counts == sorted(counts) and counts[-1] <= 640, f"the progress overshoots: {counts}"


def chromium_driver(downloads: Path):
    """Headless Debian Chromium driven through its chromedriver (skips with the reason when absent)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("Chromium and chromedriver not found on PATH: install Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1250", "--disable-extensions", "--no-first-run"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.mark.slow
def test_browser_uploads_a_photo_segments_it_and_downloads_the_labels(server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as expected
    from selenium.webdriver.support.ui import WebDriverWait

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a photo")
    driver = chromium_driver(downloads)
    try:
        wait = WebDriverWait(driver, 90)
        driver.get(server.url)
        upload = wait.until(expected.presence_of_element_located((By.CSS_SELECTOR, "#image input[type=file]")))

        # A file that is not an image: a message in the page, no picture.
        upload.send_keys(str(not_an_image))
        classes = driver.find_element(By.CSS_SELECTOR, "#classes textarea")
        classes.clear()
        classes.send_keys("astronaut|woman, flag, wall")
        driver.find_element(By.ID, "segment").click()
        toast = wait.until(expected.visibility_of_element_located((By.CSS_SELECTOR, "[data-testid='toast-body']")))
        assert "notes.png: not an image that can be read" in toast.text and "Traceback" not in toast.text
        toast.find_element(By.CSS_SELECTOR, "[data-testid='toast-close']").click()

        # The bundled sample photo, uploaded: the shares and the label files appear.
        driver.find_element(By.CSS_SELECTOR, "#image button[aria-label='Remove Image']").click()
        upload = wait.until(expected.presence_of_element_located((By.CSS_SELECTOR, "#image input[type=file]")))
        upload.send_keys(str(SAMPLE_IMAGE))
        driver.find_element(By.ID, "segment").click()
        links = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#files a[download$='_mask.png']"))
        shares = driver.find_element(By.ID, "shares").text
        named = [name for name in ("astronaut", "flag", "wall") if name in shares]
        assert named, f"the shares name the classes found: {shares!r}"
        assert "%" in shares
        picture = driver.find_element(By.CSS_SELECTOR, "#picture img")
        assert picture.get_attribute("naturalWidth") and int(picture.get_attribute("naturalWidth")) > 1000

        # The opacity slider redraws the picture (without the model).
        first_picture = picture.get_attribute("src")
        slider = driver.find_element(By.CSS_SELECTOR, "#opacity input[type=range]")
        ActionChains(driver).click_and_hold(slider).move_by_offset(slider.size["width"] // 3, 0).release().perform()
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#picture img").get_attribute("src") != first_picture)
        assert float(slider.get_attribute("value")) > 0.7

        links[0].click()
        deadline = time.monotonic() + 30
        while not (downloaded := list(downloads.glob("astronaut_mask*.png"))) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert downloaded, "the label PNG downloads"
        mask = Image.open(downloaded[0])
        assert mask.mode == "P" and mask.size == Image.open(SAMPLE_IMAGE).size
        assert {int(v) for v in np.unique(np.asarray(mask))} <= {0, 1, 2}

        # Nothing is fetched from anywhere but the app itself.
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        outside = [name for name in resources if not name.startswith(server.url.rstrip("/")) and not name.startswith("data:")]
        assert not outside, f"the page fetched from outside the app: {outside}"

        screenshot = tmp_path / "web.png"
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(screenshot))
        assert Image.open(screenshot).size[0] >= 1000
        if os.environ.get("SCCLIP_UPDATE_SCREENSHOT"):
            shutil.copyfile(screenshot, REPO_ROOT / "docs" / "web.png")
    finally:
        driver.quit()


# ---------------------------------------------------------------- the page on the torch-free runtime (--runtime onnx)


def test_onnx_pool_shares_one_model_and_encodes_a_vocabulary_once(tiny_export, monkeypatch):
    from scclip.runtime import OnnxSegmenter

    folder, record = tiny_export
    direct = OnnxSegmenter(folder, classes="cat,dog|puppy")
    encoded = []
    encode = OnnxSegmenter.encode_queries

    def counting_encode(self, queries):
        encoded.append(list(queries))
        return encode(self, queries)

    monkeypatch.setattr(OnnxSegmenter, "encode_queries", counting_encode)
    pool = OnnxSegmenterPool(folder, capacity=2)
    model = pool.model_of()
    assert pool.method == record["method"] and encoded == [Vocabulary.from_lines(SAMPLE_CLASSES).queries]
    assert pool.get(list(SAMPLE_CLASSES)) == (model, model.classes)  # the model's own classes
    _, first = pool.get(["cat", "dog, puppy"])
    assert pool.get(["cat", "dog, puppy"])[1] is first and encoded[1:] == [["cat", "dog", "puppy"]]
    image = np.kron(np.random.default_rng(3).integers(0, 256, (6, 9, 3)), np.ones((24, 24, 1))).astype(np.uint8)
    assert np.array_equal(model(image, first).labels, direct(image).labels)
    # A request's PAMR and threshold are options of its call, on the one model: nothing built or encoded.
    refined = model(image, first, pamr=True, prob_thd=0.2)
    built = OnnxSegmenter(folder, classes="cat,dog|puppy", pamr=True, prob_thd=0.2)
    assert np.array_equal(refined.labels, built(image).labels) and model.pamr_steps == 0
    pool.get(["tree"])
    pool.get(["sky"])
    pool.get(["cat", "dog, puppy"])  # pushed out (capacity 2): encoded again
    # Kept: the model's own classes (nothing encoded) and four; encoded: `built`'s own classes second.
    assert pool.builds == 5 and encoded[1:] == [["cat", "dog", "puppy"], ["cat", "dog", "puppy"], ["tree"], ["sky"],
                                                ["cat", "dog", "puppy"]]
    with pytest.raises(InputError, match="method 'naclip': the exported model .* runs scclip only"):
        pool.get(["cat"], method="naclip")


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--runtime", "onnx"], "--runtime onnx needs --model DIR, a folder written by scclip export"),
        (["--runtime", "onnx", "--model", "m", "--method", "naclip"],
         "--runtime onnx runs the method and backbone exported to m: drop --method (export another model"),
        (["--runtime", "onnx", "--model", "m", "--backbone", "ViT-L/14"], "--runtime onnx runs the method and"),
        (["--model", "m"], "--model m is an exported model folder: add --runtime onnx to run it"),
    ],
)
def test_web_runtime_onnx_refuses_what_the_export_fixes_in_one_line(arguments, message, capsys):
    assert demo.main(["--web", *arguments]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {message}")


def test_web_runtime_onnx_refuses_a_missing_folder_and_torch_options(tmp_path, capsys, tiny_export):
    missing = tmp_path / "never_exported"
    assert demo.main(["--web", "--runtime", "onnx", "--model", str(missing), "--port", str(free_port())]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: model folder not found: {missing}")
    with pytest.raises(InputError, match="fixes the method and its settings: leave out backbone, logit_scale"):
        serve("ViT-B/16", port=free_port(), model=tiny_export[0], logit_scale=50.0)


@pytest.mark.slow
def test_onnx_page_answers_like_the_runtime_and_refuses_raw_paths_without_torch(
        tiny_export, photos, tmp_path, monkeypatch):
    """`demo.py --web --runtime onnx --model DIR` in a process where torch cannot be imported: a request
    through gradio_client gets the picture and the labels `OnnxSegmenter` gives directly; the page's
    limits and its refusal of paths that were not uploaded are those of the torch page."""
    from gradio_client import Client, handle_file
    from gradio_client.client import Endpoint
    from gradio_client.exceptions import AppError

    from scclip.runtime import OnnxSegmenter

    folder, _ = tiny_export
    app = Server(["--runtime", "onnx", "--model", str(folder)], tmp_path / "server.log", without_torch=True)
    try:
        client = Client(app.url, verbose=False)
        photo = photos["chelsea"]
        answer = client.predict(handle_file(photo), "cat, wall, floor|ground", api_name="/segment")
        check_answer(answer, photo, ["cat", "wall", "floor"])
        png = next(path for path in answer[1] if path.endswith(".png"))
        _, prediction = OnnxSegmenter(folder, classes="cat, wall, floor|ground").prediction(photo)
        assert_labels_equal_outside_ties(np.asarray(Image.open(png)), prediction.labels(), prediction.scores())

        with pytest.raises(AppError, match=re.escape(f"this request has {MAX_CLASSES + 1} classes, more than this "
                                                     f"demo's limit of {MAX_CLASSES}")):
            client.predict(handle_file(photo), ",".join(f"class {i}" for i in range(MAX_CLASSES + 1)),
                           api_name="/segment")
        with pytest.raises(AppError, match=re.escape("unknown method 'naclip': use one of scclip")):
            client.predict(handle_file(photo), "cat", NO_VOCABULARY, "naclip", api_name="/segment")

        secret = tmp_path / "secret.png"
        Image.new("RGB", (64, 48), "red").save(secret)
        monkeypatch.setattr(Endpoint, "_upload_file", lambda self, payload, data_index: payload)
        raw = Client(app.url, verbose=False)
        answers = []
        for path in (secret, tmp_path / "missing.png"):
            with pytest.raises(AppError) as error:
                raw.predict({"path": str(path)}, "cat, wall", api_name="/segment")
            answers.append(str(error.value).replace(str(path), "PATH"))
        assert answers[0] == answers[1] and NOT_UPLOADED in answers[0]
        assert not list(app.temp_root.rglob("secret_mask*"))
        for path in foreign_paths(app.temp_root / "gradio", tmp_path, free_port()):
            assert raw_call(app.url, [{"path": path, "meta": {"_type": "gradio.FileData"}}, "cat"]) == \
                ("error", NOT_UPLOADED), path[:80]
    finally:
        code = app.stop()
    output = "".join(app.output)
    assert code == 0, output
    assert "IsADirectoryError" not in output and "shutdown failed" not in output, output
    assert not app.temp_root.exists()


def test_file_payloads_are_checked_in_every_input_at_any_depth(tmp_path, monkeypatch):
    """`WebDemo.check_files` (run before Gradio's own processing of a request) refuses a foreign path wherever
    it sits in the request, passes an upload, and walks deep nesting without recursion."""
    uploads = tmp_path / "gradio"
    (uploads / "0a1b").mkdir(parents=True)
    photo = uploads / "0a1b" / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    page = WebDemo.__new__(WebDemo)  # only the upload folder and Gradio are needed here
    page.gr, page.upload_root = __import__("gradio"), uploads
    page.check_files([{"path": str(photo), "meta": {"_type": "gradio.FileData"}}, "cat", None, 0.5])
    deep: list = [{"path": "http://127.0.0.1:9/x.png"}]
    for _ in range(5000):
        deep = [deep]
    for inputs in (["cat", {"a": [{"path": str(uploads)}]}], [None, deep]):
        with pytest.raises(page.gr.Error) as error:
            page.check_files(inputs)
        assert error.value.message == NOT_UPLOADED
