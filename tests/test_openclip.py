"""open_clip backbones against open_clip itself, offline.

Two randomly initialised open_clip models with the real depths and activations of ViT-H/14 (GELU,
32 blocks, heads of width 80) and ViT-B/16-quickgelu (QuickGELU, 12 blocks), at small widths, are
registered with open_clip's own config registry and saved in open_clip's two file formats
(.safetensors and a torch.save state dict). scclip loads them with `clip_arch` and must give what
open_clip gives: the prompt-ensembled text features and the projected output tokens.
"""
import json
import socket
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from safetensors.torch import save_file

from scclip import SCCLIPForSegmentation
from scclip.clip import load, openclip, tokenize
from scclip.clip.model import CLIP, build_model
from scclip.errors import CheckpointError, DownloadError
from scclip.text import load_templates

# Real image-tower depth, patch, image size, head width and activation; small widths.
TINY = {
    "scclip-test-ViT-H-14": dict(base="ViT-H-14", vision=dict(width=160, head_width=80), fmt="safetensors"),
    "scclip-test-ViT-B-16-quickgelu": dict(base="ViT-B-16-quickgelu", vision=dict(width=64, head_width=32), fmt="pt"),
}
# The text tower keeps its activation, mask and pooling but only 2 blocks: open_clip runs all 77
# positions of every prompt, which is what takes the time here.
TEXT = dict(width=64, heads=2, layers=2)
QUERIES = ["traffic light", "sky"]
# Float32 rounding of unit vectors through 12-32 blocks is ~1e-6; the other activation gives ~1e-2.
TOLERANCE = 2e-5
GELU_NAME, QUICKGELU_NAME = TINY


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """The tiny architectures, added to open_clip's registry like any config file."""
    folder = tmp_path_factory.mktemp("open_clip_configs")
    for name, spec in TINY.items():
        config = open_clip.get_model_config(spec["base"])
        config["embed_dim"] = 32
        config["vision_cfg"].update(spec["vision"])
        config["text_cfg"].update(TEXT)
        (folder / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder)
    return list(TINY)


@pytest.fixture(scope="module")
def open_clip_models(registered, tmp_path_factory):
    """name → (open_clip model, checkpoint file in open_clip's format)."""
    folder = tmp_path_factory.mktemp("open_clip_checkpoints")
    models = {}
    for seed, name in enumerate(registered):
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None).eval()
        state_dict = {key: value.contiguous() for key, value in model.state_dict().items()}
        if TINY[name]["fmt"] == "safetensors":
            path = folder / f"{name}.safetensors"
            save_file(state_dict, str(path))
        else:
            path = folder / f"{name}.pt"
            torch.save(state_dict, path)
        models[name] = (model, path)
    return models


@pytest.fixture(scope="module")
def loaded(open_clip_models) -> dict[str, CLIP]:
    return {name: load(path, device="cpu", arch=name)[0] for name, (_, path) in open_clip_models.items()}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))


def other_activation(model: CLIP, name: str) -> CLIP:
    config = openclip.architecture_config(name)
    config["activation"] = {"gelu": "quick_gelu", "quick_gelu": "gelu"}[config["activation"]]
    return build_model(model.state_dict(), config=config)


def open_clip_queries(model, name: str) -> torch.Tensor:
    """open_clip's own zero-shot recipe: tokenize the templates, encode_text, normalise, mean, normalise."""
    tokenizer = open_clip.get_tokenizer(name)
    features = []
    with torch.no_grad():
        for query in QUERIES:
            prompts = [template.format(query) for template in load_templates()]
            embeddings = model.encode_text(tokenizer(prompts), normalize=True)
            features.append(F.normalize(embeddings.mean(dim=0), dim=-1))
    return torch.stack(features)


def open_clip_patch_features(model, images: torch.Tensor) -> torch.Tensor:
    """open_clip's output tokens (after ln_post, before proj) projected, L2-normalised."""
    model.visual.output_tokens = True
    try:
        with torch.no_grad():
            _, tokens = model.visual(images)
    finally:
        model.visual.output_tokens = False
    return F.normalize(tokens @ model.visual.proj, dim=-1)


def test_architecture_follows_open_clip_config(loaded):
    gelu, quick = loaded[GELU_NAME], loaded[QUICKGELU_NAME]
    assert len(gelu.visual.transformer.resblocks) == 32 and len(quick.visual.transformer.resblocks) == 12
    assert gelu.visual.transformer.resblocks[0].attn.heads == 2  # width 160 / head width 80
    assert gelu.visual.transformer.resblocks[0].attn.head_dim == 80
    assert isinstance(gelu.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    assert not isinstance(quick.visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    assert gelu.architecture == GELU_NAME and gelu.checkpoint_path.suffix == ".safetensors"


@pytest.mark.parametrize("name", TINY)
def test_open_clip_weights_are_kept_exactly(open_clip_models, loaded, name):
    theirs = open_clip_models[name][0].state_dict()
    ours = loaded[name].state_dict()
    assert ours.keys() == theirs.keys()
    for key, value in ours.items():
        assert torch.equal(value, theirs[key]), key  # not rounded to fp16, unlike OpenAI's files


def test_tokenizer_gives_open_clip_ids(registered):
    prompts = [template.format(query) for query in QUERIES for template in load_templates()]
    assert torch.equal(tokenize(prompts), open_clip.get_tokenizer(GELU_NAME)(prompts))


@pytest.mark.parametrize("name", TINY)
def test_query_features_equal_open_clip_prompt_ensemble(open_clip_models, loaded, name):
    segmentor = SCCLIPForSegmentation(
        str(open_clip_models[name][1]), clip_arch=name, vocabulary=QUERIES, device="cpu", text_cache=False
    )
    expected = open_clip_queries(open_clip_models[name][0], name)
    error = (segmentor.query_features - expected).abs().max().item()
    assert error < TOLERANCE
    wrong_model = other_activation(loaded[name], name)
    from scclip.text import encode_queries

    wrong = encode_queries(wrong_model, QUERIES, load_templates())
    assert (wrong - expected).abs().max().item() > 10 * TOLERANCE  # the tolerance tells the activations apart


@pytest.mark.parametrize("name", TINY)
def test_plain_dense_features_equal_open_clip_output_tokens(open_clip_models, loaded, images, name):
    expected = open_clip_patch_features(open_clip_models[name][0], images)
    vanilla = SCCLIPForSegmentation(
        name, clip_model=loaded[name], clip_arch=name, method="vanilla", vocabulary=QUERIES, device="cpu",
        text_cache=False,
    )
    features = vanilla.dense_features(images)
    assert features.shape == expected.shape
    assert (features - expected).abs().max().item() < TOLERANCE
    wrong = other_activation(loaded[name], name)
    with torch.no_grad():
        tokens = wrong.visual.transformer(wrong.visual.embed(images))[:, 1:]
        wrong_features = F.normalize(wrong.visual.ln_post(tokens) @ wrong.visual.proj, dim=-1)
    assert (wrong_features - expected).abs().max().item() > 10 * TOLERANCE


@pytest.mark.parametrize("name", TINY)
def test_sc_clip_runs_batch_invariant(loaded, name):
    segmentor = SCCLIPForSegmentation(
        name, clip_model=loaded[name], clip_arch=name, vocabulary=QUERIES, device="cpu", text_cache=False,
        slide_crop=0,
    )
    images = torch.randn(2, 3, 150, 180, generator=torch.Generator().manual_seed(6))
    together = segmentor.predict(images)
    for index in range(len(images)):
        alone = segmentor.predict(images[index : index + 1])[0]
        scores = together[index].seg_logits.data
        assert torch.isfinite(scores).all()
        assert torch.allclose(scores, alone.seg_logits.data, atol=1e-5)
        assert torch.equal(together[index].pred_sem_seg.data, alone.pred_sem_seg.data)


def test_half_precision_runs_an_open_clip_backbone(loaded, images):
    common = dict(clip_model=loaded[QUICKGELU_NAME], clip_arch=QUICKGELU_NAME, vocabulary=QUERIES, device="cpu",
                  text_cache=False)
    crop = images[:1, :, :128, :128]  # an 8×8 grid
    full = SCCLIPForSegmentation(QUICKGELU_NAME, precision="fp32", **common).dense_features(crop)
    half = SCCLIPForSegmentation(QUICKGELU_NAME, precision="bf16", **common).dense_features(crop)
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert F.cosine_similarity(full, half, dim=-1).min() > 0.95


def test_our_modules_have_open_clip_keys_and_shapes():
    """Every tensor of open_clip's plain CLIPs has its place in our CLIP (heads, MLP ratio included)."""
    for name in ["ViT-B-16", "ViT-H-14", "ViT-bigG-14"]:  # head width 64, 80 and 104; MLP ratio 4 and 4.9231
        with torch.device("meta"):
            theirs = open_clip.model.CLIP(**open_clip.get_model_config(name)).state_dict()
            ours = CLIP(**openclip.architecture_config(name)).state_dict()
        assert ours.keys() == theirs.keys(), name
        assert all(ours[key].shape == theirs[key].shape for key in ours), name


# Bad input: one clear line each


def test_siglip_is_refused_saying_why(open_clip_models):
    with pytest.raises(CheckpointError, match="ViT-B-16-SigLIP cannot run SC-CLIP: its image tower is timm's") as info:
        load(open_clip_models[GELU_NAME][1], device="cpu", arch="ViT-B-16-SigLIP")
    assert "tokenizer" in str(info.value) and "\n" not in str(info.value)


def test_resnet_is_refused_saying_why():
    with pytest.raises(CheckpointError, match="RN50 cannot run SC-CLIP: its image tower is a ResNet, not a ViT") as info:
        load("openai", device="cpu", arch="RN50")
    assert "\n" not in str(info.value)


def test_openai_spelling_of_an_architecture_gets_the_open_clip_name():
    with pytest.raises(CheckpointError, match="unknown open_clip architecture 'ViT-B/16': did you mean ViT-B-16"):
        load("laion2b_s34b_b88k", arch="ViT-B/16")


def test_wrong_arch_for_a_file_names_the_fitting_one(open_clip_models):
    path = open_clip_models[QUICKGELU_NAME][1]
    with pytest.raises(CheckpointError) as info:
        load(path, device="cpu", arch="ViT-L-14")
    message = str(info.value)
    assert message.startswith(f"{path} does not fit open_clip architecture ViT-L-14 (")
    assert "visual.positional_embedding is 197×64, expected 257×1024" in message
    assert f"it fits {QUICKGELU_NAME}: give that as clip_arch / --clip-arch" in message
    assert "\n" not in message


def test_unknown_tag_lists_the_tags():
    with pytest.raises(CheckpointError, match="'laion5b' is neither a file nor an open_clip pretrained tag of ViT-B-16 "
                                              r"\(its tags: openai, laion400m_e31,.*laion2b_s34b_b88k"):
        load("laion5b", arch="ViT-B-16")


@pytest.fixture
def offline(monkeypatch):
    """No network: open_clip's hub client in offline mode, and no host name resolves."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)


def test_tag_without_network_names_repository_file_and_local_form(offline, tmp_path):
    with pytest.raises(DownloadError) as info:
        load("laion2b_s34b_b88k", device="cpu", download_root=tmp_path, arch="ViT-B-16")
    message = str(info.value)
    assert "cannot download open_clip ViT-B-16:laion2b_s34b_b88k" in message
    assert "fetch open_clip_model.safetensors from https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message
    assert "--backbone FILE --clip-arch ViT-B-16" in message and "\n" not in message
    assert list(tmp_path.rglob("*")) == []  # nothing half-written


def fake_hub_cache(root, repo: str, filename: str, content: bytes, digest: str):
    """A Hugging Face cache entry as hf_hub_download leaves it: blob named by its SHA-256 (the LFS ETag)."""
    import hashlib

    folder = root / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / digest
    blob.parent.mkdir(parents=True)
    blob.write_bytes(content)
    revision = hashlib.sha1(b"revision").hexdigest()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(blob)
    return snapshot, blob


def test_cached_tag_is_verified_against_its_lfs_etag(offline, tmp_path):
    import hashlib

    content = b"weights"
    repo = "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"
    snapshot, _ = fake_hub_cache(tmp_path / "good", repo, "open_clip_model.safetensors", content,
                                 hashlib.sha256(content).hexdigest())
    assert openclip.download_pretrained("ViT-B-16", "laion2b_s34b_b88k", tmp_path / "good") == snapshot
    link, blob = fake_hub_cache(tmp_path / "bad", repo, "open_clip_model.safetensors", b"damaged",
                             hashlib.sha256(content).hexdigest())
    with pytest.raises(DownloadError, match=r"does not match its SHA-256 \w+ \(Hugging Face LFS ETag.*removed"):
        openclip.download_pretrained("ViT-B-16", "laion2b_s34b_b88k", tmp_path / "bad")
    assert not blob.exists() and not link.is_symlink()


def test_tags_bring_their_activation_and_normalisation():
    assert openclip.pretrained_settings("ViT-B-16", "metaclip_fullcc")["activation"] == "quick_gelu"
    assert openclip.pretrained_settings("ViT-B-16", "laion2b_s34b_b88k")["activation"] is None
    assert openclip.pretrained_settings("ViT-L-14", "laion2b_s32b_b82k")["image_mean"] == (0.5, 0.5, 0.5)


# eval.py --backbone, Segmenter and demo.py with open_clip backbones

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_backbone_option_runs_a_deeper_file_with_depth_chosen_calibration(open_clip_models, monkeypatch):
    """eval.py --backbone FILE --clip-arch on a ViT-L/14 config: the model takes the file and its architecture,
    the benchmark settings stay, and the segmentor picks the calibration by the 32 blocks."""
    from mmseg.registry import MODELS

    from scclip.methods import calibration_defaults

    sys.path.insert(0, str(CONFIGS.parent))
    from scclip.evaluation import command as eval_script

    monkeypatch.chdir(CONFIGS.parent)
    checkpoint = str(open_clip_models[GELU_NAME][1])
    args = eval_script.parse_args(["--config", "configs/cfg_context59_vitl14.py", "--backbone", checkpoint,
                                   "--clip-arch", GELU_NAME])
    cfg = eval_script.load_config(args, "cpu")
    published = Config.fromfile(CONFIGS / "cfg_context59_vitl14.py")
    assert (cfg.model.clip_path, cfg.model.clip_arch, cfg.backbone) == (checkpoint, GELU_NAME, checkpoint)
    kept = {name: value for name, value in cfg.model.items() if name not in ("clip_path", "clip_arch", "device")}
    assert kept == {name: value for name, value in published.model.items() if name != "clip_path"}
    # (two classes instead of 59, which only saves time)
    cfg.model.pop("name_path")
    cfg.model.update(vocabulary=["sky", "person"])
    segmentor = MODELS.build(cfg.model)
    expected, _ = calibration_defaults(32)
    assert {name: segmentor.method_settings[name] for name in expected} == expected
    assert segmentor.clip_arch == GELU_NAME


def test_split_backbone_reads_open_clip_pairs():
    assert openclip.split_backbone("ViT-B-16:laion2b_s34b_b88k") == ("laion2b_s34b_b88k", "ViT-B-16")
    assert openclip.split_backbone("ViT-B/16") == ("ViT-B/16", None)
    assert openclip.split_backbone("weights.pt", "ViT-L-14") == ("weights.pt", "ViT-L-14")
    assert openclip.split_backbone("not-an-arch:tag") == ("not-an-arch:tag", None)


@pytest.mark.slow
def test_demo_runs_an_open_clip_file_with_clip_arch(open_clip_models, tmp_path, monkeypatch, capsys):
    """demo.py with --clip-arch; the architecture comes from an open_clip config folder (`local-dir:`)."""
    sys.path.insert(0, str(CONFIGS.parent))
    import demo

    monkeypatch.chdir(CONFIGS.parent)
    folder = tmp_path / "arch"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": open_clip.get_model_config(QUICKGELU_NAME)})
    )
    checkpoint = str(open_clip_models[QUICKGELU_NAME][1])
    out = tmp_path / "out.png"
    assert demo.main(["--classes", "sky,person", "--backbone", checkpoint, "--clip-arch", f"local-dir:{folder}",
                      "--device", "cpu", "--no-slide", "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert demo.main(["--classes", "sky,person", "--backbone", checkpoint, "--clip-arch", "ViT-L-14",
                      "--device", "cpu", "--out", str(tmp_path / "wrong.png")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "does not fit open_clip architecture ViT-L-14" in errors[0]
    assert not (tmp_path / "wrong.png").exists()


def test_a_tag_from_the_hub_cache_runs_through_segmenter_with_the_text_cache(open_clip_models, offline, tmp_path,
                                                                             monkeypatch):
    """The whole tag path offline: registry entry → Hugging Face cache → LFS ETag check → Segmenter."""
    import hashlib

    from scclip import Segmenter

    from safetensors.torch import save

    open_clip_model = open_clip_models[QUICKGELU_NAME][0]
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, QUICKGELU_NAME, {
        "tiny": dict(hf_hub="scclip-test/tiny/", quick_gelu=True, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    })
    content = save({key: value.contiguous() for key, value in open_clip_model.state_dict().items()})
    fake_hub_cache(tmp_path, "scclip-test/tiny", "open_clip_model.safetensors", content,
                   hashlib.sha256(content).hexdigest())
    segmenter = Segmenter(f"{QUICKGELU_NAME}:tiny", classes=["sky", "person"], device="cpu", slide=False,
                          download_root=tmp_path)
    assert segmenter.segmentor.clip_arch == QUICKGELU_NAME
    model = segmenter.segmentor.encoder.visual
    assert torch.equal(model.conv1.weight, open_clip_model.visual.conv1.weight)
    result = segmenter(torch.rand(40, 50, 3).numpy())
    assert result.labels.shape == (40, 50)
    _, preprocess = load("tiny", device="cpu", download_root=tmp_path, arch=QUICKGELU_NAME)
    assert preprocess.transforms[-1].mean == (0.5, 0.5, 0.5)  # the tag's normalisation


@pytest.mark.slow
def test_eval_runs_an_open_clip_file_given_as_backbone(open_clip_models, tiny_checkpoint_path, tmp_path, monkeypatch):
    """eval.py --backbone FILE --clip-arch on a 2-image VOC20 copy: metrics.json names the backbone, and the run's
    folder is not the one of the config's own backbone (the checkpoint's SHA-256 and the architecture are in it)."""
    sys.path.insert(0, str(CONFIGS.parent))
    from scclip.evaluation import command as eval_script
    from test_datasets import make_dataset

    from scclip.evaluation.data import list_split
    from scclip.evaluation.runs import RunFolder, run_identity

    monkeypatch.chdir(CONFIGS.parent)
    root = make_dataset(tmp_path / "datasets", "voc20")
    checkpoint = str(open_clip_models[QUICKGELU_NAME][1])
    options = [f"test_dataloader.dataset.data_root={root}", "test_dataloader.num_workers=0",
               "test_dataloader.persistent_workers=False", "test_dataloader.dataset.pipeline.1.scale=(2048, 224)"]
    command = ["--config", "configs/cfg_voc20.py", "--backbone", checkpoint, "--clip-arch", QUICKGELU_NAME,
               "--work-dir", str(tmp_path / "work"), "--device", "cpu", "--cfg-options", *options]
    assert eval_script.main(command) == 0
    (metrics,) = (tmp_path / "work").glob("cfg_voc20-*/metrics.json")
    result = json.loads(metrics.read_text())
    assert result["num_images"] == 2 and 0 <= result["metrics"]["mIoU"] <= 100
    assert result["backbone"] == checkpoint and result["checkpoint"] == checkpoint
    assert not result["published_weights"]

    def run_folder(arguments: list[str]) -> str:
        cfg = eval_script.load_config(eval_script.parse_args(arguments), "cpu")
        split = list_split(cfg.test_dataloader.dataset)
        return RunFolder.for_identity(tmp_path / "work", "cfg_voc20",
                                      run_identity(cfg, split.relative_image_paths, "fp32")).path.name

    assert run_folder(command) == metrics.parent.name  # the same command finds its run again
    own = ["--config", "configs/cfg_voc20.py", "--cfg-options", f"model.clip_path={tiny_checkpoint_path}", *options]
    assert run_folder(own) != metrics.parent.name
