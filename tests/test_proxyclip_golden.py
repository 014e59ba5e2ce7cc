"""ProxyCLIP against its release's golden outputs (golden/proxyclip/, SPEC §12), and the defects we fix.

The proxy mask `A < 0` is a hard threshold: an entry within float rounding of it may fall on either
side in two correct implementations, so the comparison uses SPEC §12's tolerance (dense features
and class scores ≤ 2e-3 everywhere and ≤ 1e-4 on all but 0.2 % of entries; labels equal outside
ties on all but 0.05 % of pixels).
"""
import copy
import json
import pickle
import shutil
import urllib.error
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import golden_file

from scclip import SCCLIPForSegmentation
from scclip.clip import load
from scclip.clip.loading import load_state_dict
from scclip.clip.pretrained import sha256_of
from scclip.dino import download_vfm, load_vfm
from scclip.errors import CheckpointError, DownloadError, InputError
from scclip.proxyclip import proxy_attention, to_vfm_input
from scclip.vfm import VFM_BACKBONES
from scclip.windows import patch_padding

QUERY_ATOL = 1e-4
LOOSE_ATOL = 2e-3  # every entry
TIGHT_ATOL = 1e-4  # all entries but TIGHT_SHARE
TIGHT_SHARE = 0.002
LABEL_SHARE = 0.0005
TIE_ATOL = 1e-5
MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
CASES = ("proxyclip_b16_voc21", "proxyclip_b16_city")


@lru_cache(maxsize=2)
def clip_model(path: Path):
    return load(path, device="cpu")[0]


class Case:
    """One golden case: its JSON, arrays, image, and a segmentor built with its settings."""

    def __init__(self, root: Path, name: str, **overrides) -> None:
        case_file = root / "proxyclip" / f"{name}.json"
        self.meta = json.loads(case_file.read_text())
        self.expected = np.load(golden_file(case_file.with_suffix(".npz")))
        image = torch.from_numpy(np.load(golden_file(case_file.parent / self.meta["image"])))
        self.image = (image.permute(2, 0, 1).float() / 255 - MEAN) / STD
        checkpoint = golden_file(case_file.parent / self.meta["checkpoint"])
        self.vfm_path = golden_file(case_file.parent / self.meta["vfm_checkpoint"])
        self.segmentor = SCCLIPForSegmentation(
            clip_path=str(checkpoint), name_path=str(golden_file(case_file.parent / f"{name}_classes.txt")),
            device="cpu", clip_model=clip_model(checkpoint), vfm_path=str(self.vfm_path),
            **{**self.meta["settings"], **overrides},
        )

    def first_window(self) -> torch.Tensor:
        crop = self.segmentor.slide_crop
        window = self.image[None, :, :crop, :crop]
        padding = patch_padding(*window.shape[-2:], self.segmentor.pad_multiple)
        assert list(padding) == self.meta["crop0_padding_lrtb"]
        return F.pad(window, padding)


@pytest.fixture(scope="module", params=CASES)
def case(request, golden_dir) -> Case:
    return Case(golden_dir, request.param)


@pytest.fixture(scope="module")
def city(golden_dir) -> Case:
    return Case(golden_dir, "proxyclip_b16_city")


def assert_within_tolerance(actual: np.ndarray, expected: np.ndarray) -> None:
    """SPEC §12: ≤ 2e-3 everywhere, ≤ 1e-4 on all but 0.2 % of the entries."""
    difference = np.abs(actual - expected)
    assert difference.max() <= LOOSE_ATOL, f"largest difference {difference.max():.2e}"
    share = (difference > TIGHT_ATOL).mean()
    assert share <= TIGHT_SHARE, f"{share:.3%} of entries differ by more than {TIGHT_ATOL}"


def test_settings_name_the_vfm(case):
    assert case.meta["settings"]["vfm"] == "dino_vitb8" and case.segmentor.pad_multiple == 56
    assert case.meta["vfm_arch"]["num_heads"] == case.meta["vfm_arch"]["embed_dim"] // 64
    vfm = case.segmentor.encoder.vfm
    assert (vfm.width, len(vfm.model.blocks), vfm.patch_size) == (128, 12, 8)
    assert vfm.model.blocks[0].attn.num_heads == 2


def test_query_features(case):
    np.testing.assert_allclose(case.segmentor.query_features.numpy(), case.expected["query_features"],
                               atol=QUERY_ATOL, rtol=0)


def test_vfm_features_of_first_window(case):
    with torch.no_grad():
        features = case.segmentor.encoder.vfm(to_vfm_input(case.first_window()))[0]
    assert list(features.shape[:1]) == [np.prod(case.meta["crop0_vfm_grid"])]
    np.testing.assert_allclose(features.numpy(), case.expected["vfm_crop0_features"], atol=1e-4, rtol=0)


def test_dense_features_of_first_window(case):
    window = case.first_window()
    assert case.segmentor.output_grid(*window.shape[-2:]) == tuple(case.meta["crop0_vfm_grid"])
    features = case.segmentor.dense_features(window)[0]
    assert_within_tolerance(features.numpy(), case.expected["crop0_features"])


def test_scores_and_labels(case):
    (sample,) = case.segmentor.predict(case.image[None])
    scores = sample.seg_logits.data.numpy()
    assert list(scores.shape) == case.meta["scores_shape"]
    stride = case.meta["probs_stride"]
    assert_within_tolerance(scores[:, ::stride, ::stride], case.expected["class_probs_sub"])
    at_threshold = np.abs(scores.max(axis=0) - case.segmentor.post.prob_thd) <= TIE_ATOL
    differ = (sample.pred_sem_seg.data[0].numpy() != case.expected["pred"]) & ~case.expected["tie"] & ~at_threshold
    assert differ.mean() <= LABEL_SHARE, f"{differ.sum()} pixels differ outside ties"


def test_batch_of_two_gives_each_own_result(city):
    """The release takes the proxy mean over the whole batch; ours is per window."""
    image, other = city.image, city.image.flip(-1) * 0.5
    alone = [city.segmentor.predict(x[None])[0] for x in (image, other)]
    together = city.segmentor.predict(torch.stack([image, other]))
    for one, batched in zip(alone, together):
        torch.testing.assert_close(batched.seg_logits.data, one.seg_logits.data, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.pred_sem_seg.data, one.pred_sem_seg.data)


def transposed(encoder):
    """A copy of the encoder whose every spatial weight is transposed (patch kernels, position grids)."""
    encoder = copy.deepcopy(encoder)
    visual, dino = encoder.visual, encoder.vfm.model
    visual.conv1.weight.data = visual.conv1.weight.data.transpose(-1, -2).contiguous()
    grid = visual.trained_grid
    positions = visual.positional_embedding.data
    patch = positions[1:].view(grid, grid, -1).transpose(0, 1).reshape(grid * grid, -1)
    visual.positional_embedding.data = torch.cat([positions[:1], patch])
    dino.patch_embed.proj.weight.data = dino.patch_embed.proj.weight.data.transpose(-1, -2).contiguous()
    grid = encoder.vfm.trained_grid
    positions = dino.pos_embed.data[0]
    patch = positions[1:].view(grid, grid, -1).transpose(0, 1).reshape(grid * grid, -1)
    dino.pos_embed.data = torch.cat([positions[:1], patch])[None]
    return encoder


def test_non_square_window_uses_the_true_grids(city):
    """A 224×336 window through the model equals, transposed, its transpose through the transposed model.

    This holds only when every map (VFM tokens, CLIP's values, both position grids) keeps its
    (rows, cols): the release swaps CLIP's grid sides and squares the VFM's, and fails it.
    """
    window = city.image[None, :, :224, :]  # 224×336: rows and columns differ in both grids
    encoder = city.segmentor.encoder
    with torch.no_grad():
        wide = encoder(window)  # B×(28·42)×D
        tall = transposed(encoder)(window.transpose(-1, -2).contiguous())  # B×(42·28)×D
    assert encoder.output_grid(224, 336) == (28, 42)
    tall_as_wide = tall.view(1, 42, 28, -1).transpose(1, 2).reshape(1, 28 * 42, -1)
    torch.testing.assert_close(tall_as_wide, wide, atol=2e-4, rtol=0)


def test_narrow_image_is_padded_and_cut_back(city):
    """An image narrower than the window: one 224×200 window, padded to 224×224 (56's multiple) and cut back."""
    image = city.image[:, :224, :200]
    logits = city.segmentor.coarse_logits(image[None], [dict(img_shape=(224, 200))])[0][0]
    padded = F.pad(image[None], patch_padding(224, 200, 56))
    assert padded.shape[-2:] == (224, 224)
    whole = city.segmentor.crop_logits(padded)[0]
    torch.testing.assert_close(logits, whole[:, :, 12:212], atol=1e-5, rtol=0)


def test_degenerate_window_keeps_row_maxima_and_logs_once(golden_dir, capsys):
    """β·μ ≥ 1 masks every similarity: the release gives NaN and class 0; ours keeps each row's maximum."""
    case = Case(golden_dir, "proxyclip_b16_city", proxy_beta=50.0)
    (sample,) = case.segmentor.predict(case.image[None])
    case.segmentor.predict(case.image[None])
    assert torch.isfinite(sample.seg_logits.data).all()
    assert capsys.readouterr().out.count("every proxy similarity") == 1
    features = torch.rand(2, 20, 8)  # positive: every similarity, and their mean, above 0
    attention, degenerate = proxy_attention(features, beta=1e3, gamma=3.0)
    assert degenerate.all() and torch.isfinite(attention).all()
    torch.testing.assert_close(attention, torch.eye(20).expand(2, 20, 20))  # the diagonal: similarity 1


def test_proxy_attention_is_the_release_formula_where_finite():
    features = torch.randn(3, 30, 16)
    attention, degenerate = proxy_attention(features, beta=1.2, gamma=3.0)
    unit = F.normalize(features, dim=-1)
    similarity = unit @ unit.transpose(1, 2)
    logits = (similarity - similarity.mean(dim=(1, 2), keepdim=True) * 1.2) * 3.0
    expected = logits.masked_fill(logits < 0, float("-inf")).softmax(dim=-1)
    assert not degenerate.any()
    torch.testing.assert_close(attention, expected)


def test_safetensors_and_pth_load_identically(golden_dir, tmp_path):
    from safetensors.torch import save_file

    pth = golden_file(golden_dir / "dino_b8_seed0.pth")
    safetensors = tmp_path / "dino.safetensors"
    save_file(load_state_dict(pth, kind="DINO"), str(safetensors))
    image = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        outputs = [load_vfm("dino_vitb8", path)(image) for path in (pth, safetensors)]
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)


class RunsCode:
    def __reduce__(self):
        return (print, ("this would run",))


def test_dino_pickle_that_asks_for_code_is_refused(tmp_path, capsys):
    path = tmp_path / "dino.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 64), "payload": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_vfm("dino_vitb8", path)
    assert "this would run" not in capsys.readouterr().out
    path.write_bytes(pickle.dumps({"pos_embed": [1, 2]}))
    with pytest.raises(CheckpointError, match="not a DINO checkpoint"):
        load_vfm("dino_vitb8", path)


def test_state_dict_of_another_layout_is_refused(golden_dir, tmp_path):
    state = load_state_dict(golden_file(golden_dir / "dino_b8_seed0.pth"), kind="DINO")
    del state["norm.bias"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="vit_base_patch8_224.dino layout: norm.bias is missing"):
        load_vfm("dino_vitb8", tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="not a DINO ViT state dict"):
        torch.save({"weight": torch.zeros(2)}, tmp_path / "other.pth")
        load_vfm("dino_vitb8", tmp_path / "other.pth")


@pytest.mark.parametrize("refused", [dict(area_thd=0.1), dict(pamr_steps=10), dict(pad_to_patch=True),
                                     dict(beta=0.4), dict(residual=False)])
def test_settings_proxyclip_does_not_take_are_refused_before_loading(refused):
    with pytest.raises(InputError, match="method 'proxyclip' (cannot take|takes no setting)"):
        SCCLIPForSegmentation(clip_path="no-such-file.pt", name_path="voc21", method="proxyclip", **refused)


def test_per_call_pamr_is_refused(golden_dir):
    from scclip import Segmenter

    with pytest.raises(InputError, match="method 'proxyclip' cannot take pamr_steps=10"):
        Segmenter("no-such-file.pt", classes=["cat"], method="proxyclip", pamr=True)


def test_named_vfm_is_downloaded_once_pinned_and_refetched_when_damaged(golden_dir, tmp_path, monkeypatch):
    source = golden_file(golden_dir / "dino_b8_seed0.pth")
    fetched = []

    def download(url, destination, hash_prefix=None, progress=True):
        fetched.append(url)
        shutil.copyfile(source, destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    path = download_vfm("dino_vitb8", tmp_path)
    assert fetched == [VFM_BACKBONES["dino_vitb8"].url] and path == tmp_path / "dino_vitbase8_pretrain.pth"
    assert (tmp_path / "dino_vitbase8_pretrain.pth.sha256").read_text().strip() == sha256_of(source)
    assert download_vfm("dino_vitb8", tmp_path) == path and len(fetched) == 1  # verified against the pin
    path.write_bytes(b"damaged")
    assert sha256_of(download_vfm("dino_vitb8", tmp_path)) == sha256_of(source) and len(fetched) == 2


def test_named_vfm_without_network_says_so_in_one_line(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DownloadError) as error:
        load_vfm("dino_vitb8", download_root=tmp_path)
    message = str(error.value)
    assert "\n" not in message and "dino_vitbase8_pretrain.pth" in message and "by hand" in message
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow  # an export (~20 s) and the runtime on the case's image
@pytest.mark.parametrize("name", CASES)
def test_exported_model_meets_the_golden_case(golden_dir, name, tmp_path):
    """The VFM travels inside image_encoder.onnx; the torch-free runtime meets SPEC §12's tolerance."""
    from scclip.export import export_model
    from scclip.runtime import OnnxSegmenter
    from scclip.runtime.fullsize import FullSize

    case = Case(golden_dir, name)
    settings = {key: value for key, value in case.meta["settings"].items() if key != "method"}
    checkpoint = golden_file(golden_dir / "proxyclip" / case.meta["checkpoint"])
    record = export_model(checkpoint, tmp_path / "model", method="proxyclip",
                          settings=dict(settings, vfm_path=str(case.vfm_path)), clip_model=clip_model(checkpoint))
    assert (record["feature_stride"], record["pad_multiple"]) == (8, 56)
    assert record["source"]["vfm_sha256"] == sha256_of(case.vfm_path) and "vfm_path" not in record["settings"]
    runtime = OnnxSegmenter(tmp_path / "model", vocab=golden_dir / "proxyclip" / f"{name}_classes.txt")
    np.testing.assert_allclose(runtime.query_features, case.expected["query_features"], atol=QUERY_ATOL, rtol=0)
    image = case.image.numpy()
    prediction = FullSize(runtime.coarse_logits(image), tuple(image.shape[-2:]), runtime.query_to_class,
                          runtime.num_classes, runtime.logit_scale, runtime.prob_thd, runtime.area_thd,
                          runtime.pamr_steps, runtime.pamr_stride, runtime.renormalise, image=image)
    stride = case.meta["probs_stride"]
    scores = prediction.scores()
    assert_within_tolerance(scores[:, ::stride, ::stride], case.expected["class_probs_sub"])
    differ = (prediction.labels() != case.expected["pred"]) & ~case.expected["tie"]
    assert differ.mean() <= LABEL_SHARE


def test_segmentors_of_one_vfm_file_share_one_model(tiny_dino_path, tiny_b16_model):
    """The web page keeps a segmentor per vocabulary: they hold one DINO, not one each."""
    built = [SCCLIPForSegmentation(clip_path="tiny", vocabulary=[name], device="cpu", clip_model=tiny_b16_model,
                                   method="proxyclip", vfm_path=str(tiny_dino_path), text_cache=False)
             for name in ("cat", "dog")]
    assert built[0].encoder.vfm is built[1].encoder.vfm


@pytest.mark.parametrize("change, message", [
    (lambda state: state.update({"blocks.900.norm1.weight": torch.zeros(1)}), "numbered 0..900 with gaps"),
    (lambda state: state.update({"cls_token": torch.zeros(1, 1, 100)}), "width 100 is not a multiple of 64"),
    (lambda state: state.update({"pos_embed": torch.zeros(1, 51, 128)}), "50 patch positions, not a square grid"),
    (lambda state: state.update({"pos_embed": torch.zeros(128)}), "do not have DINO ViT's shapes"),
    (lambda state: state["norm.weight"].fill_(float("nan")), "norm.weight holds NaN or infinite values"),
    (lambda state: state.update({"blocks.3.mlp.fc2.weight": torch.zeros(128, 9)}),
     r"blocks\.3\.mlp\.fc2\.weight is \[128, 9\], expected \[128, 512\]"),
])
def test_crafted_dino_shapes_are_refused_before_any_model_is_built(golden_dir, tmp_path, change, message):
    state = load_state_dict(golden_file(golden_dir / "dino_b8_seed0.pth"), kind="DINO")
    change(state)
    torch.save(state, tmp_path / "crafted.pth")
    with pytest.raises(CheckpointError, match=message):
        load_vfm("dino_vitb8", tmp_path / "crafted.pth")
