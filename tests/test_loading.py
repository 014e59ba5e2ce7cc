"""scclip.clip.load and the pretrained registry: both checkpoint formats, downloads, every error."""
import hashlib
import re
import shutil
import socket
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image

from scclip.clip import CLIP, available_models, load, load_state_dict, pretrained, tokenize
from scclip.clip.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
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
