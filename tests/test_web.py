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
from scclip.errors import InputError, ScclipError
from scclip.web import NO_VOCABULARY, Limits, SegmenterPool, benchmark_vocabularies, request_lines

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
    assert len(vocabularies) == 8, "the eight shipped vocabularies (configs/cls_*.txt) are offered"
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
        ("a, b, c, d", NO_VOCABULARY, "4 classes is more than this demo's limit of 3"),
        ("cat, cat", NO_VOCABULARY, "cat"),
        ("cat", "Imaginary (3 classes)", "unknown vocabulary"),
    ],
)
def test_request_lines_refuses_bad_vocabularies_with_a_message(classes, vocabulary, message):
    with pytest.raises(ScclipError, match=re.escape(message)):
        request_lines(classes, vocabulary, benchmark_vocabularies(), 3)


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
    first = pool.get(["cat", "dog, puppy"])
    assert pool.get(["cat", "dog, puppy"]) is first and encoded == [["cat", "dog", "puppy"]]
    other = pool.get(["sky"], pamr=True)
    assert other.pamr_steps > 0 and first.pamr_steps == 0
    # Every segmenter runs on the one loaded model.
    assert first.segmentor.encoder.visual is other.segmentor.encoder.visual is pool.clip_model.visual
    pool.get(["tree"])
    pool.get(["cat", "dog, puppy"])  # pushed out by the two newer ones (capacity 2): built again
    assert pool.builds == 4 and len(encoded) == 4


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


class Server:
    """`python demo.py --web` in its own process, with its output collected line by line."""

    def __init__(self, checkpoint: Path, log: Path) -> None:
        self.port = free_port()
        command = [sys.executable, str(REPO_ROOT / "demo.py"), "--web", "--backbone", str(checkpoint),
                   "--device", "cpu", "--port", str(self.port), "--max-side", str(MAX_SIDE),
                   "--max-classes", str(MAX_CLASSES)]
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
    app = Server(tiny_checkpoint_path, tmp_path_factory.mktemp("web") / "server.log")
    yield app
    code = app.stop()
    assert code == 0, "".join(app.output)
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
    # Each client asks something different: its own classes, a benchmark vocabulary, another method.
    requests = [
        (photos["chelsea"], dict(classes="cat, wall, floor|ground"), ["cat", "wall", "floor"]),
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
        ((handle_file(not_an_image), "cat, dog"), "holiday.png is not an image"),
        ((handle_file(too_large), "cat, dog"), f"panorama.png is {MAX_SIDE + 1}×8 pixels, more than this demo's limit of {MAX_SIDE}"),
        ((handle_file(photos["chelsea"]), " , "), "no class names"),
        ((handle_file(photos["chelsea"]), ",".join(f"class {i}" for i in range(MAX_CLASSES + 1))),
         f"{MAX_CLASSES + 1} classes is more than this demo's limit of {MAX_CLASSES}"),
        ((handle_file(photos["chelsea"]), "cat", NO_VOCABULARY, "scclip", False, 1.5), "threshold 1.5 must lie in [0, 1]"),
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
    assert len(list((server.temp_root / "results").iterdir())) <= 1


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
        assert "notes.png is not an image" in toast.text and "Traceback" not in toast.text
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
