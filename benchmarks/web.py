"""Time the web demo (`python demo.py --web`) as its users meet it: start-up and per-request latency.

A full-size CLIP with random weights stands in for the real one (no download needed; no step's
cost depends on the weights' values). The app runs in its own process, as started from a shell:
- start-up: from launching the process to the page answering (imports, model load, the sample
  vocabulary's text features, the server), with the text-feature cache empty and then warm;
- per request, through `gradio_client` (upload, queue, segmentation, picture, label files, download
  of the answer): a new vocabulary (its text is encoded), the same vocabulary again (kept: image
  only), with PAMR, and a 12-megapixel phone-size photo;
- four clients at once: all answered (text encoding and segmentation each serve one at a time);
- the same photo segmented in-process with `Segmenter`, in turns with the app, so the web's own
  overhead shows.

The machine's load average is recorded with the numbers: on a shared machine they vary with it.

    python benchmarks/web.py                      # ViT-B/16, CPU
    python benchmarks/web.py --repeats 5 --json web.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

START_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(checkpoint: Path, cache: Path, device: str) -> tuple[subprocess.Popen, str, float]:
    """Launch `demo.py --web`; returns the process, its address and the seconds until the page answered."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "demo.py"), "--web", "--backbone", str(checkpoint), "--device", device,
         "--port", str(port)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "SCCLIP_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"},
    )
    output: list[str] = []
    for line in process.stdout:
        output.append(line)
        if match := re.match(r"scclip web demo: (http\S+)", line):
            url = match.group(1)
            break
        if time.perf_counter() - started > START_TIMEOUT_S:
            break
    else:
        raise RuntimeError("the web demo did not start:\n" + "".join(output))
    threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # keep the pipe drained
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return process, url, time.perf_counter() - started


def stop_app(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def timed(function, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": len(times)}


def photo(folder: Path, name: str, size: tuple[int, int]) -> Path:
    """A real photo (the bundled astronaut) resized to `size`, as JPEG like a camera's."""
    from scclip.api import SAMPLE_IMAGE

    path = folder / name
    Image.open(SAMPLE_IMAGE).convert("RGB").resize(size, Image.BILINEAR).save(path, quality=90)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default="ViT-B/16", help="architecture of the random full-size CLIP")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    from scclip import Segmenter
    from scclip.clip.architectures import random_clip, save_checkpoint

    results: dict = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "device": args.device,
                    "cpu_threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "cpu": platform.processor() or platform.machine()},
        "backbone": f"{args.backbone} (random weights, full size)",
    }
    with tempfile.TemporaryDirectory(prefix="scclip-web-bench-") as temp:
        folder = Path(temp)
        checkpoint = save_checkpoint(random_clip(args.backbone, seed=0), folder / "clip.pt")
        small = photo(folder, "photo_640x480.jpg", (640, 480))
        large = photo(folder, "photo_4032x3024.jpg", (4032, 3024))
        cache = folder / "cache"

        process, url, cold = start_app(checkpoint, cache, args.device)
        stop_app(process)
        process, url, warm = start_app(checkpoint, cache, args.device)  # serves the requests below
        startups = {"empty text cache": round(cold, 2), "warm text cache": round(warm, 2)}
        results["startup_s"] = startups
        print(f"start-up: {startups}", flush=True)

        try:
            client = Client(url, verbose=False)
            vocabularies = iter(f"cat, dog, sky, tree{i}" for i in range(1000))
            cases = {
                "640×480, new classes (text encoded)":
                    lambda: client.predict(handle_file(small), next(vocabularies), api_name="/segment"),
                "640×480, same classes again":
                    lambda: client.predict(handle_file(small), "cat, dog, sky", api_name="/segment"),
                "640×480, same classes, PAMR":
                    lambda: client.predict(handle_file(small), "cat, dog, sky", pamr=True, api_name="/segment"),
                "4032×3024 (12 MP), same classes":
                    lambda: client.predict(handle_file(large), "cat, dog, sky", api_name="/segment"),
            }
            client.predict(handle_file(small), "cat, dog, sky", api_name="/segment")  # warm-up: builds the segmenter
            client.predict(handle_file(small), "cat, dog, sky", pamr=True, api_name="/segment")
            latency = {}
            for name, call in cases.items():
                latency[name] = summary(timed(call, args.repeats))
                print(f"{name}: {latency[name]}", flush=True)

            # The web's own cost: the same request in-process and through the app, taken in turns so
            # that a change in the machine's load touches both alike.
            segmenter = Segmenter(checkpoint, classes="cat, dog, sky", device=args.device)
            image = np.asarray(Image.open(small))
            segmenter(image)
            web, direct = [], []
            for _ in range(args.repeats):
                web += timed(cases["640×480, same classes again"], 1)
                direct += timed(lambda: segmenter(image).picture(), 1)
            results["web_vs_in_process_640x480"] = {
                "through the app": summary(web), "Segmenter + picture in-process": summary(direct),
                "overhead_median_s": round(statistics.median(w - d for w, d in zip(web, direct)), 3),
            }
            print(f"web vs in-process: {results['web_vs_in_process_640x480']}", flush=True)

            def four_at_once() -> None:
                def ask(_):
                    return Client(url, verbose=False).predict(handle_file(small), "cat, dog, sky", api_name="/segment")

                with ThreadPoolExecutor(4) as executor:
                    list(executor.map(ask, range(4)))

            latency["4 clients at once, 640×480 (all answered)"] = summary(timed(four_at_once, 1))
            print(f"4 clients at once: {latency['4 clients at once, 640×480 (all answered)']}", flush=True)
            results["latency"] = latency
        finally:
            stop_app(process)


    results["machine"]["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
