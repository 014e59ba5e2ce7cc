"""The on-disk text-feature cache: hits, misses, invalidation, damaged entries, where it writes."""
import shutil
from pathlib import Path

import pytest
import torch

import scclip.segmentor
import scclip.text
import scclip.text_cache
from scclip import SCCLIPForSegmentation
from scclip.clip.pretrained import MODEL_URLS
from scclip.errors import InputError
from scclip.text_cache import (
    TextFeatureCache,
    cache_key,
    checkpoint_digest,
    file_digest,
)

VOCABULARY = ["sky", "person, man", "tree"]


@pytest.fixture(autouse=True)
def cache_root(tmp_path, monkeypatch) -> Path:
    """Every test gets its own cache folder; nothing is written to the real ~/.cache/scclip."""
    root = tmp_path / "scclip_cache"
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(root))
    return root


@pytest.fixture(autouse=True)
def few_templates(monkeypatch) -> None:
    """Six of the 80 prompt templates keep each build fast; one test uses them all."""
    monkeypatch.setattr(scclip.segmentor, "load_templates", lambda: scclip.text.load_templates()[:6])


@pytest.fixture
def encode_calls(monkeypatch) -> list[int]:
    """Counts the runs of the text tower over a vocabulary (one entry per run)."""
    calls = []
    original = scclip.segmentor.encode_queries

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(scclip.segmentor, "encode_queries", counting)
    return calls


@pytest.fixture
def checkpoint(tmp_path, tiny_checkpoint_path) -> Path:
    """A private copy of the tiny checkpoint, free to be overwritten by a test."""
    return Path(shutil.copy(tiny_checkpoint_path, tmp_path / "model.pt"))


def build(checkpoint: Path, vocabulary=VOCABULARY, **kwargs) -> SCCLIPForSegmentation:
    return SCCLIPForSegmentation(clip_path=str(checkpoint), vocabulary=vocabulary, device="cpu", **kwargs)


def entries(root: Path) -> list[Path]:
    return sorted((root / "text_features").glob("*.pt"))


def test_second_build_hits_the_cache_and_gets_identical_features(checkpoint, cache_root, encode_calls):
    first = build(checkpoint)
    assert len(encode_calls) == 1 and len(entries(cache_root)) == 1
    second = build(checkpoint)
    assert len(encode_calls) == 1, "the text tower ran again on a cache hit"
    assert torch.equal(second.query_features, first.query_features)


def test_cached_features_equal_freshly_computed_ones_exactly(checkpoint, monkeypatch):
    monkeypatch.setattr(scclip.segmentor, "load_templates", scclip.text.load_templates)
    build(checkpoint)
    cached = build(checkpoint)
    fresh = build(checkpoint, text_cache=False)
    assert cached.query_features.dtype == fresh.query_features.dtype == torch.float32
    assert torch.equal(cached.query_features, fresh.query_features)


def test_text_cache_false_writes_nothing(checkpoint, cache_root, encode_calls):
    build(checkpoint, text_cache=False)
    build(checkpoint, text_cache=False)
    assert len(encode_calls) == 2
    assert not cache_root.exists()


def test_cache_dir_is_read_each_time_a_segmentor_is_built(checkpoint, tmp_path, monkeypatch, encode_calls):
    other = tmp_path / "other_cache"
    build(checkpoint)
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(other))
    build(checkpoint)
    assert len(encode_calls) == 2, "a new cache folder must start empty"
    assert len(entries(other)) == 1


def test_changed_vocabulary_is_a_miss(checkpoint, cache_root, encode_calls):
    build(checkpoint)
    changed = build(checkpoint, vocabulary=["sky", "person, man", "bush"])
    assert len(encode_calls) == 2 and len(entries(cache_root)) == 2
    assert changed.query_features.shape[0] == 4
    reordered = build(checkpoint, vocabulary=["tree", "sky", "person, man"])
    assert len(encode_calls) == 3, "the order of the queries is part of the key"
    assert torch.equal(reordered.query_features, build(checkpoint, vocabulary=["tree", "sky", "person, man"],
                                                       text_cache=False).query_features)


def test_changed_templates_are_a_miss(checkpoint, cache_root, encode_calls, monkeypatch):
    first = build(checkpoint)
    monkeypatch.setattr(scclip.segmentor, "load_templates", lambda: ("a photo of a {}.", "a sketch of a {}."))
    second = build(checkpoint)
    assert len(encode_calls) == 2 and len(entries(cache_root)) == 2
    assert not torch.equal(first.query_features, second.query_features)


def test_changed_precision_or_batch_size_is_a_miss(checkpoint, encode_calls):
    build(checkpoint)
    build(checkpoint, precision="bf16")
    build(checkpoint, text_batch_size=7)
    assert len(encode_calls) == 3


def test_rewritten_checkpoint_is_a_miss(checkpoint, encode_calls):
    first = build(checkpoint)
    state_dict = torch.load(checkpoint, weights_only=True)
    state_dict["text_projection"] = state_dict["text_projection"].flip(0)
    torch.save(state_dict, checkpoint)
    second = build(checkpoint)
    assert len(encode_calls) == 2
    assert not torch.equal(first.query_features, second.query_features)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong_key", "altered_values", "not_finite"])
def test_damaged_entry_is_ignored_and_rewritten(damage, checkpoint, cache_root, encode_calls):
    expected = build(checkpoint).query_features
    (path,) = entries(cache_root)
    if damage == "garbage":
        path.write_bytes(b"not a torch file" * 100)
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        entry = torch.load(path, weights_only=True)
        if damage == "wrong_key":
            entry["key"] = "0" * 64
        elif damage == "altered_values":
            entry["features"][0, 0] += 1.0
        else:
            entry["features"][0, 0] = float("nan")
            entry["sha256"] = scclip.text_cache._tensor_sha256(entry["features"])
        torch.save(entry, path)

    rebuilt = build(checkpoint)
    assert len(encode_calls) == 2, "a damaged entry was trusted"
    assert torch.equal(rebuilt.query_features, expected)
    build(checkpoint)
    assert len(encode_calls) == 2, "the damaged entry was not rewritten"
    assert entries(cache_root) == [path]


def test_unwritable_cache_folder_only_costs_the_cache(checkpoint, tmp_path, monkeypatch, encode_calls):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(blocker))
    cached = build(checkpoint)
    assert torch.equal(cached.query_features, build(checkpoint, text_cache=False).query_features)


def test_no_temporary_files_are_left_behind(checkpoint, cache_root):
    build(checkpoint)
    leftovers = [p for p in cache_root.rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == []


def test_file_digest_is_hashed_once_per_version_of_the_file(checkpoint, cache_root, monkeypatch):
    hashed = []
    original = scclip.text_cache.sha256_of

    def counting(path):
        hashed.append(path)
        return original(path)

    monkeypatch.setattr(scclip.text_cache, "sha256_of", counting)
    digest = file_digest(checkpoint)
    assert file_digest(checkpoint) == digest and len(hashed) == 1

    checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
    changed = file_digest(checkpoint)
    assert changed != digest and len(hashed) == 2

    (memo,) = (cache_root / "file_digests").glob("*.json")
    memo.write_text("{ half a record")
    assert file_digest(checkpoint) == changed and len(hashed) == 3
    assert file_digest(checkpoint) == changed and len(hashed) == 3


def test_public_model_digest_comes_from_its_address(cache_root):
    digest = checkpoint_digest("ViT-B/16")
    assert digest in MODEL_URLS["ViT-B/16"] and len(digest) == 64
    assert not cache_root.exists(), "a public name needs no hashing"


def test_key_depends_on_everything_it_is_made_of():
    base = ("a" * 64, ["sky", "tree"], ["a {}."], {"precision": "fp32"})
    variants = [
        ("b" * 64, ["sky", "tree"], ["a {}."], {"precision": "fp32"}),
        ("a" * 64, ["sky", "trees"], ["a {}."], {"precision": "fp32"}),
        ("a" * 64, ["sky", "tree"], ["an {}."], {"precision": "fp32"}),
        ("a" * 64, ["sky", "tree"], ["a {}."], {"precision": "bf16"}),
        ("a" * 64, ["sky,tree"], ["a {}."], {"precision": "fp32"}),
    ]
    assert len({cache_key(*args) for args in [base, *variants]}) == 1 + len(variants)
    assert cache_key(*base) == cache_key(*base)


def test_cache_object_reads_the_environment_when_made(tmp_path, monkeypatch):
    monkeypatch.setenv("SCCLIP_CACHE_DIR", str(tmp_path / "one"))
    assert TextFeatureCache().root == tmp_path / "one"
    monkeypatch.delenv("SCCLIP_CACHE_DIR")
    assert TextFeatureCache().root == Path("~/.cache/scclip").expanduser()




def _build_in_a_process(checkpoint: Path, start, out: Path) -> None:
    """One of several processes building the same vocabulary at once (the parent's patches are inherited)."""
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP thread pool
    start.wait(timeout=120)
    torch.save(build(checkpoint).query_features, out)


def test_concurrent_builders_share_one_entry(checkpoint, cache_root, tmp_path, monkeypatch):
    """Four processes (think torchrun ranks) build one vocabulary on an empty cache at the same moment."""
    import multiprocessing

    calls = tmp_path / "encoded"
    original = scclip.segmentor.encode_queries

    def recording(*args, **kwargs):
        with open(calls, "a") as file:
            file.write("x")
        return original(*args, **kwargs)

    monkeypatch.setattr(scclip.segmentor, "encode_queries", recording)
    context = multiprocessing.get_context("fork")
    start = context.Barrier(4)
    processes = [context.Process(target=_build_in_a_process, args=(checkpoint, start, tmp_path / f"{rank}.pt"))
                 for rank in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
        process.kill()
    assert [process.exitcode for process in processes] == [0, 0, 0, 0]
    results = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(4)]
    assert all(torch.equal(result, results[0]) for result in results[1:])
    (entry,) = entries(cache_root)
    assert torch.equal(TextFeatureCache(cache_root).load(entry.stem, len(results[0])), results[0])
    assert calls.read_text() == "x", "the text tower ran in more than one process"
    leftovers = [path for path in cache_root.rglob("*") if path.is_file() and path.name.startswith(".")]
    assert leftovers == []


def test_the_cache_stays_within_its_limit_dropping_the_least_recently_used(checkpoint, cache_root, monkeypatch,
                                                                           encode_calls):
    """New vocabularies (a web page's requests) never take more than $SCCLIP_TEXT_CACHE_MB: after each write the
    entries used longest ago go; a hit counts as a use."""
    build(checkpoint, ["cat", "dog"])
    (first,) = entries(cache_root)
    size = first.stat().st_size
    monkeypatch.setenv("SCCLIP_TEXT_CACHE_MB", str(2.5 * size / 2**20))  # room for two entries, not three
    build(checkpoint, ["sky", "sea"])
    build(checkpoint, ["cat", "dog"])  # a hit: now the most recently used
    assert len(encode_calls) == 2
    build(checkpoint, ["tree", "road"])  # the third entry: ["sky", "sea"] goes
    assert len(entries(cache_root)) == 2 and sum(path.stat().st_size for path in entries(cache_root)) <= 2.5 * size
    build(checkpoint, ["cat", "dog"])
    assert len(encode_calls) == 3, "the recently used vocabulary was dropped"
    build(checkpoint, ["sky", "sea"])
    assert len(encode_calls) == 4, "the least recently used vocabulary was kept beyond the limit"
    for index in range(20):
        build(checkpoint, [f"class {index}", "other"])
    assert sum(path.stat().st_size for path in entries(cache_root)) <= 2.5 * size
    assert len(list((cache_root / "locks").iterdir())) <= 256, "one lock file per key prefix"
    monkeypatch.setenv("SCCLIP_TEXT_CACHE_MB", "0")
    build(checkpoint, ["one more"])
    assert entries(cache_root) == [], "a limit of 0 keeps nothing"


@pytest.mark.parametrize("value", ["lots", "-1", "nan", "inf"])
def test_a_bad_cache_limit_is_one_line(checkpoint, monkeypatch, value):
    monkeypatch.setenv("SCCLIP_TEXT_CACHE_MB", value)
    with pytest.raises(InputError, match=f"SCCLIP_TEXT_CACHE_MB='{value}' is not a size in megabytes"):
        build(checkpoint)


def test_the_web_pool_keeps_what_its_requests_write_within_the_limit(tiny_checkpoint_path, cache_root, monkeypatch):
    from scclip.web import SegmenterPool

    monkeypatch.setenv("SCCLIP_TEXT_CACHE_MB", "0.01")  # 10 kB: a few tiny entries
    pool = SegmenterPool(tiny_checkpoint_path, device="cpu", capacity=1)
    for index in range(12):
        pool.get([f"thing {index}", "wall"])
    assert 0 < sum(path.stat().st_size for path in entries(cache_root)) <= 0.01 * 2**20
