"""The public OpenAI CLIP checkpoints and their verified download.

OpenAI's download addresses carry each file's SHA-256 as the second-to-last path component,
so the address alone is enough to check what arrived.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
from pathlib import Path

import torch
from mmengine.logging import MMLogger

from scclip.errors import CheckpointError, DownloadError

from .records import OPENAI_BASE_URL, openai_records

_BASE_URL = OPENAI_BASE_URL
# OpenAI's ResNet CLIPs: downloadable by name, refused by SC-CLIP (it needs a ViT); the ViTs are records.
_RESNET_URLS = {
    "RN50": f"{_BASE_URL}/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",
    "RN101": f"{_BASE_URL}/8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599/RN101.pt",
    "RN50x4": f"{_BASE_URL}/7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd/RN50x4.pt",
    "RN50x16": f"{_BASE_URL}/52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa/RN50x16.pt",
    "RN50x64": f"{_BASE_URL}/be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c/RN50x64.pt",
}
MODEL_URLS: dict[str, str] = {**_RESNET_URLS, **{record.name: record.url for record in openai_records()}}

DEFAULT_CACHE_DIR = "~/.cache/clip"
_CHUNK_BYTES = 1 << 20


def available_models() -> list[str]:
    """Names accepted by `scclip.clip.load` besides local checkpoint paths."""
    return list(MODEL_URLS)


def expected_sha256(url: str) -> str:
    """The SHA-256 that an OpenAI download address carries in its second-to-last component."""
    return url.rstrip("/").split("/")[-2]


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints are up to ~1.5 GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """Where the checkpoint of model `name` is kept: `<root or ~/.cache/clip>/<file name>`."""
    url = _url_of(name)
    return Path(root or DEFAULT_CACHE_DIR).expanduser() / url.rsplit("/", 1)[-1]


def _url_of(name: str) -> str:
    if name not in MODEL_URLS:
        raise CheckpointError(
            f"unknown CLIP model name {name!r}; give one of {', '.join(MODEL_URLS)}, or a path to a .pt file"
        )
    return MODEL_URLS[name]


def _fetch(url: str, target: Path, sha256: str | None) -> bool:
    """Download `url` beside `target` and move it into place only when its SHA-256 matches.

    `sha256` may be a prefix of the digest (open_clip's release names carry 8 hex digits), or
    None where the source publishes none. The rename is atomic, so `target` is either absent or
    complete and verified; the temporary file is removed whatever happens. Returns False when
    the digest did not match.
    """
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    try:
        try:
            torch.hub.download_url_to_file(url, temp_name, hash_prefix=None, progress=True)
        except (OSError, http.client.HTTPException) as error:  # URLError, socket and HTTP errors
            reason = getattr(error, "reason", None) or error
            raise DownloadError(
                f"could not download {url} ({reason}); put the file at {target} by hand, "
                f"or pass a local checkpoint path instead of the model name"
            ) from error
        if sha256 is not None and not sha256_of(temp_name).startswith(sha256):
            return False
        os.replace(temp_name, target)
        return True
    finally:
        if os.path.exists(temp_name):
            os.remove(temp_name)


def download(name: str, root: str | os.PathLike | None = None) -> Path:
    """Path of the verified checkpoint of model `name`, downloading it on first use.

    A cached file is checked against the SHA-256 in its address. One bad digest (a corrupt
    cached file, or a download that arrived damaged) is deleted and fetched again; a second
    one raises DownloadError.
    """
    url = _url_of(name)
    target = cache_path(name, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = expected_sha256(url)
    logger = MMLogger.get_current_instance()
    retries = 1
    if target.is_file():
        if sha256_of(target) == expected:
            return target
        logger.warning(f"{target} does not match its SHA-256 {expected}; downloading it again")
        target.unlink()
        retries = 0
    while True:
        logger.info(f"downloading CLIP {name} from {url} to {target}")
        if _fetch(url, target, expected):
            return target
        if retries == 0:
            raise DownloadError(
                f"{url} arrived with a SHA-256 other than {expected}; put a good copy at {target} "
                f"by hand, or pass a local checkpoint path instead of the model name"
            )
        retries -= 1
        logger.warning(f"download of {url} does not match its SHA-256; trying once more")


def fetch_verified(url: str, target: Path, sha256: str | None) -> Path:
    """Download `url` to `target` (atomically), checked against `sha256` (a digest or its prefix) when known."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not _fetch(url, target, sha256):
        raise DownloadError(
            f"{url} arrived with a SHA-256 not starting with {sha256}; put a good copy at {target} by hand, "
            f"or pass a local checkpoint file"
        )
    return target
