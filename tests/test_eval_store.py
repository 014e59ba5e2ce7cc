"""The per-image store and the integer metrics: exact areas, records that survive a kill, foreign shards refused."""
import errno
import os

import numpy as np
import pytest
import torch
from mmseg.evaluation.metrics.iou_metric import IoUMetric

from scclip.errors import DatasetError
from scclip.evaluation.metrics import image_areas, metrics_from_areas, total_areas
from scclip.evaluation.store import SHARD_MAGIC, ImageAreas, ShardWriter, read_shard, read_store


def random_pair(rng, num_classes: int, size=(60, 80)) -> tuple[torch.Tensor, torch.Tensor]:
    label = rng.integers(0, num_classes, size)
    label[rng.random(size) < 0.1] = 255
    label[:3, :3] = num_classes + 7  # out of the classes' range: counts for the prediction only
    prediction = np.where(rng.random(size) < 0.6, np.minimum(label, num_classes - 1), rng.integers(0, num_classes, size))
    return torch.from_numpy(prediction)[None], torch.from_numpy(label.astype(np.uint8))[None]


@pytest.mark.parametrize("num_classes", [2, 21, 171])
def test_areas_equal_mmseg_intersect_and_union(num_classes):
    prediction, label = random_pair(np.random.default_rng(num_classes), num_classes)
    areas = image_areas(prediction, label, num_classes, 255)
    expected = IoUMetric.intersect_and_union(prediction[0], label[0].long(), num_classes, 255)
    assert areas.dtype == np.int64 and areas.shape == (4, num_classes)
    for ours, theirs in zip(areas, expected):
        np.testing.assert_array_equal(ours, theirs.numpy().astype(np.int64))


def test_metrics_follow_mmseg_formulas():
    total = np.array([[2, 0, 3], [4, 0, 6], [3, 0, 4], [3, 0, 5]], dtype=np.int64)  # class 1 absent everywhere
    result = metrics_from_areas(total, ["a", "b", "c"])
    assert result["per_class"]["b"] == dict(IoU=None, Acc=None)
    assert result["per_class"]["a"] == dict(IoU=50.0, Acc=66.67)
    assert result["summary"] == dict(aAcc=62.5, mIoU=round((0.5 + 0.5) / 2 * 100, 2), mAcc=round((2 / 3 + 0.6) / 2 * 100, 2))


def write_shard(folder, items, run_key="run-a"):
    writer = ShardWriter(folder, run_key, num_images=10, num_classes=3, rank=0)
    for item in items:
        writer.append(item)
    writer.close()
    return writer.path


def items(count: int) -> list[ImageAreas]:
    return [ImageAreas(index, f"img{index}.jpg", np.full((4, 3), index, dtype=np.int64) + np.arange(3))
            for index in range(count)]


def test_a_record_cut_short_by_a_kill_is_not_read_back(tmp_path):
    path = write_shard(tmp_path, items(3))
    data = path.read_bytes()
    path.write_bytes(data[:-5])  # the last record was being written
    stored, ignored = read_shard(path, "run-a")
    assert [item.index for item in stored] == [0, 1] and ignored > 0
    np.testing.assert_array_equal(stored[1].areas, items(3)[1].areas)
    assert stored[1].path == "img1.jpg"


def test_a_damaged_record_ends_what_is_trusted_in_its_shard(tmp_path):
    path = write_shard(tmp_path, items(3))
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF  # flip bits inside the last record's areas
    path.write_bytes(bytes(data))
    stored, _ = read_shard(path, "run-a")
    assert [item.index for item in stored] == [0, 1]


def test_shards_of_several_processes_are_merged_and_sums_do_not_depend_on_the_split(tmp_path):
    everything = items(6)
    write_shard(tmp_path / "one", everything)
    write_shard(tmp_path / "two", everything[0::2])
    write_shard(tmp_path / "two", everything[1::2] + everything[:1])  # a duplicate from padding
    one, _ = read_store(tmp_path / "one", "run-a")
    two, _ = read_store(tmp_path / "two", "run-a")
    assert sorted(one) == sorted(two) == list(range(6))
    np.testing.assert_array_equal(total_areas(one.values(), 3), total_areas(two.values(), 3))


def test_a_shard_of_another_run_is_refused(tmp_path):
    write_shard(tmp_path, items(2), run_key="run-a")
    path = write_shard(tmp_path, items(2), run_key="run-b")
    with pytest.raises(DatasetError, match=f"{path} holds results of another run \\(run-b, not run-a\\)"):
        read_store(tmp_path, "run-a")


def test_a_shard_killed_while_writing_its_header_holds_nothing(tmp_path):
    path = write_shard(tmp_path, [])
    path.write_bytes(path.read_bytes()[:20])
    assert read_store(tmp_path, "run-a")[0] == {}
    for cut in (0, 5):  # created, not written yet (a live run a moment after it started, or one killed then)
        path.write_bytes(SHARD_MAGIC[:cut])
        assert read_store(tmp_path, "run-a") == ({}, cut)


def test_a_short_write_on_a_full_disk_stops_the_writer(tmp_path, monkeypatch):
    """os.write may write part of a record when the disk fills: that is an error, never a silent gap
    (a later whole record after the cut one would be unreadable)."""
    writer = ShardWriter(tmp_path, "run-a", num_images=10, num_classes=3, rank=0)
    writer.append(items(1)[0])
    write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: write(fd, data[:-5] if fd == writer._fd else data))
    with pytest.raises(OSError) as error:
        writer.append(items(2)[1])
    monkeypatch.undo()
    writer.close()
    assert error.value.errno == errno.ENOSPC
    stored, ignored = read_shard(writer.path, "run-a")
    assert [item.index for item in stored] == [0] and ignored > 0
