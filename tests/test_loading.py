"""scclip.clip.load and the pretrained registry: both checkpoint formats, downloads, every error."""
import hashlib
import os
import pickle
import pickletools
import re
import shutil
import socket
import struct
import sys
import types
import urllib.error
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from scclip.clip import CLIP, available_models, load, load_state_dict, openclip, pretrained, tokenize, torchscript
from scclip.clip.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from scclip.clip.model import openai_config
from scclip.errors import CheckpointError, DownloadError

PUBLIC_NAMES = ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B/32", "ViT-B/16", "ViT-L/14", "ViT-L/14@336px"]


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))  # a 7×7 grid keeps it fast
    return images, tokenize(["a photo of a cat.", "a diagram"])


def encode(model: CLIP, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    images, tokens = inputs
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


# Loading local checkpoints


def test_plain_and_torchscript_checkpoints_give_the_same_model(tiny_checkpoint_path, tiny_jit_checkpoint_path, inputs):
    plain, _ = load(tiny_checkpoint_path, device="cpu")
    scripted, _ = load(str(tiny_jit_checkpoint_path), device="cpu")
    assert plain.state_dict().keys() == scripted.state_dict().keys()
    for key, value in plain.state_dict().items():
        assert torch.equal(value, scripted.state_dict()[key]), key
    for a, b in zip(encode(plain, inputs), encode(scripted, inputs)):
        assert torch.equal(a, b)


def test_loaded_model_is_fp32_eval_on_cpu_with_fp16_values(tiny_checkpoint_path, tiny_state_dict):
    model, _ = load(tiny_checkpoint_path, device="cpu")
    assert isinstance(model, CLIP)
    assert not model.training and all(not module.training for module in model.modules())
    for name, param in model.state_dict().items():
        assert param.device.type == "cpu", name
        if param.is_floating_point():
            assert param.dtype == torch.float32, name
            assert torch.equal(param, param.half().float()), f"{name} is not fp16-representable"
            assert torch.equal(param, tiny_state_dict[name].float()), name


def test_shapes_and_determinism(tiny_checkpoint_path, inputs):
    model, _ = load(tiny_checkpoint_path, device="cpu")
    image_features, text_features = encode(model, inputs)
    assert image_features.shape == (2, 32) and text_features.shape == (2, 32)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()
    again, _ = load(tiny_checkpoint_path, device="cpu")
    for a, b in zip(encode(model, inputs), encode(again, inputs)):
        assert torch.equal(a, b)


def test_default_device_is_cpu_without_cuda(tiny_checkpoint_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model, _ = load(tiny_checkpoint_path)
    assert next(model.parameters()).device.type == "cpu"


def test_load_state_dict_reads_both_formats_and_unwraps(
    tiny_checkpoint_path, tiny_jit_checkpoint_path, tiny_state_dict, tmp_path
):
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": tiny_state_dict, "epoch": 3}, wrapped)
    for path in (tiny_checkpoint_path, tiny_jit_checkpoint_path, wrapped):
        state_dict = load_state_dict(path)
        assert state_dict.keys() >= tiny_state_dict.keys()
        for key, value in tiny_state_dict.items():
            assert torch.equal(state_dict[key].half(), value), (path, key)


def test_preprocess_resizes_crops_and_normalises(tiny_checkpoint_path):
    _, preprocess = load(tiny_checkpoint_path, device="cpu")
    colour = (200, 100, 50)
    image = Image.new("RGBA", (300, 260), colour + (255,))
    pixels = preprocess(image)
    assert pixels.shape == (3, 224, 224) and pixels.dtype == torch.float32
    expected = [(c / 255 - m) / s for c, m, s in zip(colour, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)]
    assert torch.allclose(pixels.mean(dim=(1, 2)), torch.tensor(expected), atol=1e-4)
    assert preprocess(Image.new("L", (224, 400))).shape == (3, 224, 224)


# Errors users hit


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(CheckpointError, match=r"checkpoint not found: ViT-B/61 \(give a model name: RN50, .*ViT-B/16"):
        load("ViT-B/61", device="cpu")


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "clip.pt"
    with pytest.raises(CheckpointError, match=f"checkpoint not found: {re.escape(str(missing))}"):
        load(missing, device="cpu")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"just some notes\n", "torch.load failed"),
        (bytes(range(256)) * 7, "torch.load failed"),
        (b"", "torch.load failed"),
    ],
)
def test_file_that_is_not_a_checkpoint(tmp_path, content, reason):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"not a CLIP checkpoint: {re.escape(str(path))} \\({reason}"):
        load(path, device="cpu")


def test_pickle_that_is_not_a_state_dict(tmp_path):
    path = tmp_path / "tensors.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="not a CLIP checkpoint: .*holds a list"):
        load_state_dict(path)


def test_directory_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a CLIP checkpoint: .*directory"):
        load(tmp_path, device="cpu")


def test_state_dict_missing_keys_names_them(tmp_path, tiny_state_dict):
    path = tmp_path / "partial.pt"
    partial = {k: v for k, v in tiny_state_dict.items() if k not in ("visual.proj", "ln_final.weight")}
    torch.save(partial, path)
    with pytest.raises(CheckpointError) as info:
        load(path, device="cpu")
    message = str(info.value)
    assert str(path) in message and "visual.proj" in message and "ln_final.weight" in message
    assert "\n" not in message


def test_missing_block_key_and_wrong_shape_are_named(tmp_path, tiny_state_dict):
    path = tmp_path / "damaged.pt"
    damaged = {k: v for k, v in tiny_state_dict.items() if k != "visual.transformer.resblocks.3.ln_1.weight"}
    torch.save(damaged, path)
    with pytest.raises(CheckpointError, match="missing keys visual.transformer.resblocks.3.ln_1.weight"):
        load(path, device="cpu")
    reshaped = dict(tiny_state_dict, **{"visual.proj": torch.zeros(5, 5, dtype=torch.float16)})
    torch.save(reshaped, path)
    with pytest.raises(CheckpointError, match="visual.proj is 5×5, expected 64×32") as info:
        load(path, device="cpu")
    assert "\n" not in str(info.value)


def test_resnet_clip_says_a_vit_is_needed(tmp_path, tiny_state_dict):
    path = tmp_path / "rn50.pt"
    resnet = {k: v for k, v in tiny_state_dict.items() if not k.startswith("visual.")}
    resnet["visual.conv1.weight"] = torch.zeros(8, 3, 3, 3, dtype=torch.float16)
    resnet["visual.layer1.0.conv1.weight"] = torch.zeros(8, 8, 1, 1, dtype=torch.float16)
    resnet["visual.attnpool.positional_embedding"] = torch.zeros(50, 8, dtype=torch.float16)
    torch.save(resnet, path)
    with pytest.raises(CheckpointError, match="ResNet.*needs a ViT"):
        load(path, device="cpu")


# The pretrained registry and downloads


def test_registry_lists_the_public_openai_models():
    assert available_models() == PUBLIC_NAMES
    for name in PUBLIC_NAMES:
        url = pretrained.MODEL_URLS[name]
        assert url.startswith("https://openaipublic.azureedge.net/clip/models/")
        assert re.fullmatch(r"[0-9a-f]{64}", pretrained.expected_sha256(url)), name
        assert url.endswith("/" + name.replace("/", "-").replace("@", "-") + ".pt")


def test_default_cache_is_home_cache_clip(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert pretrained.cache_path("ViT-B/16") == tmp_path / ".cache" / "clip" / "ViT-B-16.pt"
    assert pretrained.cache_path("ViT-L/14", root="~/models") == tmp_path / "models" / "ViT-L-14.pt"


@pytest.fixture
def fake_release(monkeypatch, tmp_path, tiny_checkpoint_path):
    """Registers the tiny checkpoint as model "tiny", served by a fake download that counts calls.

    `served` holds what each download delivers in turn (the last entry repeats); an exception
    instance is raised instead of delivering.
    """
    digest = hashlib.sha256(tiny_checkpoint_path.read_bytes()).hexdigest()
    url = f"https://openaipublic.azureedge.net/clip/models/{digest}/tiny.pt"
    monkeypatch.setitem(pretrained.MODEL_URLS, "tiny", url)

    class Release:
        root = tmp_path / "cache"
        cached = tmp_path / "cache" / "tiny.pt"
        good = tiny_checkpoint_path.read_bytes()
        served: list = [good]
        calls: list = []

    def download_url_to_file(source, destination, hash_prefix=None, progress=True):
        assert source == url and hash_prefix is None
        assert Path(destination).parent == Release.root and Path(destination) != Release.cached
        item = Release.served[min(len(Release.calls), len(Release.served) - 1)]
        Release.calls.append(destination)
        if isinstance(item, BaseException):
            Path(destination).write_bytes(Release.good[:100])  # a partial file left behind
            raise item
        Path(destination).write_bytes(item)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)
    return Release


def test_download_verifies_and_loads_by_name(fake_release, inputs, tiny_checkpoint_path):
    path = pretrained.download("tiny", root=fake_release.root)
    assert path == fake_release.cached and path.read_bytes() == fake_release.good
    assert sorted(fake_release.root.iterdir()) == [fake_release.cached]
    model, _ = load("tiny", device="cpu", download_root=fake_release.root)
    reference, _ = load(tiny_checkpoint_path, device="cpu")
    assert len(fake_release.calls) == 1
    for a, b in zip(encode(model, inputs), encode(reference, inputs)):
        assert torch.equal(a, b)


def test_cached_good_file_is_not_downloaded_again(fake_release):
    fake_release.root.mkdir()
    fake_release.cached.write_bytes(fake_release.good)
    assert pretrained.download("tiny", root=fake_release.root) == fake_release.cached
    assert fake_release.calls == []


def test_corrupt_cached_file_is_downloaded_again(fake_release):
    fake_release.root.mkdir()
    fake_release.cached.write_bytes(fake_release.good[:-10])
    assert pretrained.download("tiny", root=fake_release.root).read_bytes() == fake_release.good
    assert len(fake_release.calls) == 1


def test_corrupt_download_is_retried_once(fake_release):
    fake_release.served = [b"garbage", fake_release.good]
    assert pretrained.download("tiny", root=fake_release.root).read_bytes() == fake_release.good
    assert len(fake_release.calls) == 2
    assert sorted(fake_release.root.iterdir()) == [fake_release.cached]


def test_download_that_stays_corrupt_fails_and_leaves_nothing(fake_release):
    fake_release.served = [b"garbage"]
    with pytest.raises(DownloadError, match=f"SHA-256.*{re.escape(str(fake_release.cached))}"):
        pretrained.download("tiny", root=fake_release.root)
    assert len(fake_release.calls) == 2
    assert list(fake_release.root.iterdir()) == []


def test_corrupt_cache_and_corrupt_download_fail_after_one_retry(fake_release):
    fake_release.root.mkdir()
    fake_release.cached.write_bytes(b"old garbage")
    fake_release.served = [b"new garbage"]
    with pytest.raises(DownloadError):
        pretrained.download("tiny", root=fake_release.root)
    assert len(fake_release.calls) == 1
    assert list(fake_release.root.iterdir()) == []


def test_no_network_says_where_to_put_the_file(fake_release):
    fake_release.served = [urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))]
    with pytest.raises(DownloadError) as info:
        load("tiny", device="cpu", download_root=fake_release.root)
    message = str(info.value)
    assert pretrained.MODEL_URLS["tiny"] in message
    assert f"put the file at {fake_release.cached} by hand" in message
    assert "local checkpoint path" in message and "\n" not in message
    assert list(fake_release.root.iterdir()) == []


def test_interrupted_download_leaves_no_partial_file(fake_release):
    fake_release.served = [KeyboardInterrupt()]
    with pytest.raises(KeyboardInterrupt):
        pretrained.download("tiny", root=fake_release.root)
    assert list(fake_release.root.iterdir()) == []


def test_real_downloader_with_a_file_url(monkeypatch, tmp_path, tiny_checkpoint_path):
    """The unmocked torch.hub downloader, served from a local file:// address."""
    digest = hashlib.sha256(tiny_checkpoint_path.read_bytes()).hexdigest()
    served = tmp_path / "server" / digest / "tiny.pt"
    served.parent.mkdir(parents=True)
    shutil.copyfile(tiny_checkpoint_path, served)
    monkeypatch.setitem(pretrained.MODEL_URLS, "tiny", served.as_uri())
    path = pretrained.download("tiny", root=tmp_path / "cache")
    assert path.read_bytes() == tiny_checkpoint_path.read_bytes()

    monkeypatch.setitem(pretrained.MODEL_URLS, "gone", (tmp_path / "server" / digest / "gone.pt").as_uri())
    with pytest.raises(DownloadError, match="could not download file://"):
        pretrained.download("gone", root=tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["tiny.pt"]


# TorchScript archives are read without running their code


class EvilSetstate(torch.nn.Module):
    """A module whose TorchScript `__setstate__` overwrites the file named in its state (torch.jit.load runs it)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))
        self.target = target

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, str, bool]:
        return self.weight, self.target, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, str, bool]) -> None:
        written = torch.from_file(state[1], shared=True, size=32, dtype=torch.uint8).fill_(88)
        self.weight = state[0] + written[:2].float()
        self.target = state[1]
        self.training = state[2]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class WithEvilChild(torch.nn.Module):
    def __init__(self, target: str) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(2, 2)
        self.evil = EvilSetstate(target)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.evil(self.proj(x))


class Attributes(torch.nn.Module):
    """Every kind of attribute a TorchScript module stores: only parameters and buffers are state."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(3, 2, bias=False)
        self.register_buffer("count", torch.tensor([1, 2, 3]))
        self.register_buffer("nothing", None)
        self.register_buffer("scale", torch.full((2,), 0.5, dtype=torch.float64))
        self.plain = torch.ones(2)  # a tensor attribute that is neither: not in the state dict
        self.ints: list[int] = [1, 2]
        self.table: dict[str, float] = {"a": 1.0}
        self.maybe: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + self.plain.sum() + self.count.sum() + self.scale.sum() + self.ints[0] + self.table["a"]


class SharedStorage(torch.nn.Module):
    """Parameters that are strided views into one storage, at offsets, plus nested children."""

    def __init__(self) -> None:
        super().__init__()
        base = torch.arange(12.0).reshape(3, 4)
        self.transposed = torch.nn.Parameter(base.t())
        self.window = torch.nn.Parameter(base[1:, 1:3])
        self.attributes = Attributes()
        self.head = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2)).to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.attributes(x).to(torch.bfloat16)).float()
        return y + self.transposed.sum() + self.window.sum()


def script_archive(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notes
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def jit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """What torch.jit.load gives: only ever called on archives the tests built themselves."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location="cpu").state_dict()


def rewrite_archive(source: Path, target: Path, changes: dict[str, bytes], compress: str | None = None) -> Path:
    """A copy of a zip archive with some records' bytes replaced (names relative to its folder)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        prefix = old.namelist()[0].split("/")[0] + "/"
        for info in old.infolist():
            data = changes.get(info.filename.removeprefix(prefix), old.read(info))
            method = zipfile.ZIP_DEFLATED if compress and info.filename == prefix + compress else zipfile.ZIP_STORED
            new.writestr(info.filename, data, compress_type=method)
    return target


def read_record(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(archive.namelist()[0].split("/")[0] + "/" + name)


def assert_same_state_dict(ours: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert list(ours) == list(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        assert torch.equal(ours[key], value), key


def test_torchscript_clip_is_read_as_torch_jit_load_reads_it(tiny_jit_checkpoint_path, monkeypatch):
    monkeypatch.setattr(torch.jit, "load", None)  # the loader itself never calls it
    ours = load_state_dict(tiny_jit_checkpoint_path)
    monkeypatch.undo()
    assert_same_state_dict(ours, jit_state_dict(tiny_jit_checkpoint_path))
    assert {"visual.conv1.weight", "positional_embedding", "logit_scale"} <= ours.keys()


def test_torchscript_reader_keeps_buffers_dtypes_views_and_order(tmp_path):
    path = script_archive(SharedStorage(), tmp_path / "shared.pt")
    ours = torchscript.read_state_dict(path)
    assert_same_state_dict(ours, jit_state_dict(path))
    assert "attributes.count" in ours and ours["attributes.count"].dtype == torch.int64
    assert "attributes.plain" not in ours and "attributes.nothing" not in ours
    assert ours["window"].data_ptr() != ours["transposed"].data_ptr()  # views at an offset into one record
    assert ours["window"].untyped_storage().data_ptr() == ours["transposed"].untyped_storage().data_ptr()


def test_big_endian_archive_is_read_with_its_byte_order(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))  # float32 records only
    little = script_archive(module, tmp_path / "little.pt")
    with zipfile.ZipFile(little) as archive:
        records = [name.split("/", 1)[1] for name in archive.namelist() if "/data/" in name]
    swapped = {name: bytes(torch.frombuffer(bytearray(read_record(little, name)), dtype=torch.uint8)
                           .view(-1, 4).flip(1).flatten().tolist()) for name in records}
    big = rewrite_archive(little, tmp_path / "big.pt", {**swapped, "byteorder": b"big"})
    assert_same_state_dict(torchscript.read_state_dict(big), jit_state_dict(little))


@pytest.mark.parametrize("module", [EvilSetstate, WithEvilChild])
def test_torchscript_code_in_an_archive_never_runs(tmp_path, module):
    target = tmp_path / "precious.bin"
    target.write_bytes(b"precious" * 4)
    path = script_archive(module(str(target)), tmp_path / "evil.pt")
    for attempt in (lambda: load_state_dict(path), lambda: load(path, device="cpu")):
        with pytest.raises(CheckpointError) as info:
            attempt()
        message = str(info.value)
        assert message.startswith(f"checkpoint refused for safety: {path} holds more than tensors")
        assert "__setstate__" in message and "\n" not in message and "weights_only" not in message
    assert target.read_bytes() == b"precious" * 4


class Runs:
    """Pickles as a call of `function(argument)`."""

    def __init__(self, function, argument: str) -> None:
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("function", [os.system, eval], ids=["os.system", "builtins.eval"])
def test_data_pkl_that_calls_a_function_is_refused(tiny_jit_checkpoint_path, tmp_path, function):
    marker = tmp_path / "ran"
    command = f"touch {marker}" if function is os.system else f"open({str(marker)!r}, 'w').close()"
    changes = {"data.pkl": pickle.dumps(Runs(function, command), protocol=2)}  # names __builtin__.eval
    path = rewrite_archive(tiny_jit_checkpoint_path, tmp_path / "calls.pt", changes)
    refusal = r"^checkpoint refused for safety: .* \(it asks for (posix\.system|__builtin__\.eval)\)"
    with pytest.raises(CheckpointError, match=refusal) as info:
        load(path, device="cpu")
    assert "\n" not in str(info.value) and not marker.exists()


def replace_first_storage_key(data: bytes, key: str) -> bytes:
    """data.pkl with its first tensor record named `key` instead of '0'."""
    old = b"X\x01\x00\x00\x000"
    assert old in data
    return data.replace(old, b"X" + len(key).to_bytes(4, "little") + key.encode(), 1)


def with_first_offset(data: bytes, offset: int) -> bytes:
    """data.pkl with the storage offset of its first tensor changed (the argument after the storage)."""
    ops = [op for op in pickletools.genops(data) if op[0].name != "BINPUT"]  # memo stores are not arguments
    index = next(i for i, (op, _, _) in enumerate(ops) if op.name == "BINPERSID") + 1
    op, _, start = ops[index]
    assert op.name == "BININT1"
    return data[:start] + b"J" + offset.to_bytes(4, "little", signed=True) + data[start + 2:]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data, record: ({"data.pkl": replace_first_storage_key(data, "../../0")}, None), "not by a number"),
        (lambda data, record: ({"data.pkl": replace_first_storage_key(data, "987654")}, None), "987654 is missing"),
        (lambda data, record: ({"data/0": record[: len(record) // 2]}, None), "bytes, its tensors need"),
        (lambda data, record: ({"data/0": record + bytes(1 << 20)}, None), "bytes, its tensors need"),
        (lambda data, record: ({}, "data/0"), "data/0 is compressed"),
        (lambda data, record: ({"data.pkl": with_first_offset(data, 10**6)}, None), "reaches element"),
        (lambda data, record: ({"data.pkl": with_first_offset(data, -1)}, None), "malformed offset"),
        (lambda data, record: ({"data.pkl": data[: len(data) // 2]}, None), "damaged archive"),
    ],
    ids=["key-with-dotdot", "missing-key", "truncated-record", "oversized-record", "compressed-record",
         "view-past-its-record", "negative-offset", "truncated-data.pkl"],
)
def test_damaged_or_crafted_archive_is_one_line(tiny_jit_checkpoint_path, tmp_path, damage, reason):
    data, record = read_record(tiny_jit_checkpoint_path, "data.pkl"), read_record(tiny_jit_checkpoint_path, "data/0")
    changes, compress = damage(data, record)
    path = rewrite_archive(tiny_jit_checkpoint_path, tmp_path / "damaged.pt", changes, compress=compress)
    with pytest.raises(CheckpointError) as info:
        load(path, device="cpu")
    message = str(info.value)
    assert message.startswith(f"not a CLIP checkpoint: {path} (unreadable TorchScript archive: ")
    assert reason in message and "\n" not in message


def test_corrupted_tensor_bytes_fail_the_archive_checksum(tiny_jit_checkpoint_path, tmp_path):
    path = tmp_path / "flipped.pt"
    shutil.copyfile(tiny_jit_checkpoint_path, path)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(archive.namelist()[0].split("/")[0] + "/data/0")
    content = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", content[info.header_offset + 26: info.header_offset + 30])
    content[info.header_offset + 30 + name_length + extra_length] ^= 0xFF  # first byte of the record
    path.write_bytes(bytes(content))
    damaged = r"unreadable TorchScript archive: damaged archive \(BadZipFile: Bad CRC-32"
    with pytest.raises(CheckpointError, match=damaged):
        load(path, device="cpu")


class Recorded:
    """Pickles like a TorchScript object of class __torch__.Recorded (GLOBAL, NEWOBJ, BUILD of its attributes)."""


def crafted_archive(path: Path, root: Recorded, declaration: str, monkeypatch) -> Path:
    """A TorchScript-like archive written by torch.save (same pickle conventions) with a `code/` declaration."""
    namespace = types.ModuleType("__torch__")
    monkeypatch.setitem(sys.modules, "__torch__", namespace)
    monkeypatch.setattr(Recorded, "__module__", "__torch__")
    namespace.Recorded = Recorded
    torch.save(root, path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(f"{path.stem}/code/__torch__.py", declaration)
    return path


def test_archive_without_buffer_declarations_takes_tensor_attributes_as_buffers(tmp_path, monkeypatch):
    root, child = Recorded(), Recorded()
    root.w, root.training, root.child = torch.arange(6.0).reshape(2, 3), False, child
    child.mask, child.note = torch.ones(2, dtype=torch.float16), "text"
    declaration = 'class Recorded(Module):\n  __parameters__ = ["w", ]\n  w : Tensor\n'  # before __buffers__ existed
    ours = torchscript.read_state_dict(crafted_archive(tmp_path / "old.pt", root, declaration, monkeypatch))
    assert list(ours) == ["w", "child.mask"]
    assert torch.equal(ours["w"], root.w) and torch.equal(ours["child.mask"], child.mask)


def test_module_tree_that_loops_is_refused(tmp_path, monkeypatch):
    root = Recorded()
    root.w, root.again = torch.zeros(2), root
    declaration = 'class Recorded(Module):\n  __parameters__ = ["w", ]\n  __buffers__ = []\n'
    path = crafted_archive(tmp_path / "loop.pt", root, declaration, monkeypatch)
    with pytest.raises(CheckpointError, match=r"unreadable TorchScript archive: its module again appears twice"):
        load_state_dict(path)


def test_tensor_type_the_reader_does_not_take_is_named(tmp_path, monkeypatch):
    root = Recorded()
    root.w = torch.zeros(2, dtype=torch.complex64)
    declaration = 'class Recorded(Module):\n  __parameters__ = ["w", ]\n  __buffers__ = []\n'
    path = crafted_archive(tmp_path / "complex.pt", root, declaration, monkeypatch)
    with pytest.raises(CheckpointError, match=r"does not take \(torch\.ComplexFloatStorage\)"):
        load_state_dict(path)


# Plain pickles and the values of the weights


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_plain_pickle_that_runs_code_is_refused_without_torch_advice(tmp_path, legacy):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    if legacy:
        path.write_bytes(pickle.dumps({"payload": Runs(os.system, f"touch {marker}")}, protocol=2))
    else:
        torch.save({"visual.proj": torch.zeros(2), "payload": Runs(os.system, f"touch {marker}")}, path)
    with pytest.raises(CheckpointError) as info:
        load(path, device="cpu")
    message = str(info.value)
    assert message == (f"checkpoint refused for safety: {path} holds more than tensors (it asks for posix.system); "
                       f"scclip never runs code from a checkpoint")
    assert not marker.exists()


def test_integer_weights_are_refused_naming_file_key_and_dtype(tmp_path, tiny_state_dict):
    path = tmp_path / "ints.pt"
    metadata = {key: torch.tensor(value) for key, value in (("input_resolution", 224), ("context_length", 77))}
    torch.save({**tiny_state_dict, **metadata}, path)
    load(path, device="cpu")  # integer metadata, as in OpenAI's archives, is fine
    torch.save({**tiny_state_dict, "visual.proj": tiny_state_dict["visual.proj"].long()}, path)
    with pytest.raises(CheckpointError) as info:
        load(path, device="cpu")
    assert str(info.value).startswith(f"{path}: visual.proj holds int64 values: CLIP's weights are floating point")
    assert "\n" not in str(info.value)


def test_non_finite_weights_are_refused_naming_the_first_key(tmp_path, tiny_state_dict):
    path = tmp_path / "nan.pt"
    damaged = dict(tiny_state_dict)
    first = "visual.transformer.resblocks.0.ln_1.weight"
    damaged[first] = torch.full_like(damaged[first], float("nan"))
    damaged["ln_final.weight"] = torch.full_like(damaged["ln_final.weight"], float("inf"))
    torch.save(damaged, path)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: {first} holds NaN or infinite values")):
        load(path, device="cpu")
    huge = dict(tiny_state_dict, **{"visual.proj": tiny_state_dict["visual.proj"].float() * 1e6})
    torch.save(huge, path)
    with pytest.raises(CheckpointError, match=r"visual.proj holds values beyond float16's range"):
        load(path, device="cpu")


def test_open_clip_file_with_nan_names_the_key_not_the_architecture(tmp_path, tiny_state_dict, monkeypatch):
    path = tmp_path / "open_clip.pt"
    torch.save(dict(tiny_state_dict, logit_scale=torch.tensor(float("nan"))), path)
    monkeypatch.setattr(openclip, "architecture_config", lambda arch: openai_config(tiny_state_dict))
    with pytest.raises(CheckpointError) as info:
        load(path, device="cpu", arch="ViT-B-16")
    assert str(info.value) == f"{path}: logit_scale holds NaN or infinite values: the weights are damaged " \
                              f"(e.g. a training run that diverged)"

