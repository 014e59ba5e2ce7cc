"""datasets/cvt_coco_object.py on a synthetic COCO-Stuff 164k tree: mapping, resume, --check, bad trees."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "datasets" / "cvt_coco_object.py"
TABLE = {int(key): value
         for key, value in json.loads((SCRIPT.parent / "coco_stuff_to_coco_object.json").read_text()).items()}

spec = importlib.util.spec_from_file_location("cvt_coco_object", SCRIPT)
cvt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cvt)

RAW_IDS = sorted(TABLE)  # 0…181 with COCO's gaps, and 255 (unlabelled)
SHAPE = (24, 32)


def raw_map(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(RAW_IDS, size=SHAPE).astype(np.uint8)


def expected_objects(raw: np.ndarray) -> np.ndarray:
    return np.vectorize(TABLE.__getitem__)(raw).astype(np.uint8)


def to_mmseg_train_ids(raw: np.ndarray) -> np.ndarray:
    """mmseg's coco_stuff164k converter: the used raw ids numbered 0…170 in order, 255 kept."""
    used = [raw_id for raw_id in RAW_IDS if raw_id != 255]
    return np.vectorize(lambda value: 255 if value == 255 else used.index(value))(raw).astype(np.uint8)


@pytest.fixture
def coco_stuff(tmp_path) -> Path:
    """val2017: three raw maps (each also with its mmseg train-id map); train2017: one train-id map only."""
    root = tmp_path / "coco_stuff164k"
    splits = {"val2017": ["000000000139", "000000000285", "000000000632"], "train2017": ["000000000009"]}
    for split, stems in splits.items():
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for seed, stem in enumerate(stems, start=len(split)):
            raw = raw_map(seed)
            Image.fromarray(np.zeros((*SHAPE, 3), np.uint8)).save(root / "images" / split / f"{stem}.jpg")
            Image.fromarray(to_mmseg_train_ids(raw)).save(root / "annotations" / split / f"{stem}_labelTrainIds.png")
            if split == "val2017":
                Image.fromarray(raw).save(root / "annotations" / split / f"{stem}.png")
            else:
                np.save(root / f"expected_{stem}.npy", expected_objects(raw))
    return root


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_lookup_tables_follow_the_shared_table():
    tables = cvt.lookup_tables()
    raw = np.array(RAW_IDS, dtype=np.uint8)
    np.testing.assert_array_equal(tables["raw"][raw], expected_objects(raw))
    np.testing.assert_array_equal(tables["train_ids"][to_mmseg_train_ids(raw)], expected_objects(raw))
    assert expected_objects(raw).max() == 80 and len(set(expected_objects(raw)) - {0}) == 80
    assert tables["raw"][255] == 0 and tables["raw"][91] == 0 and tables["raw"][0] == 1  # stuff/unlabelled → 0


def test_converts_both_splits_and_links_the_images(coco_stuff, tmp_path, capsys):
    out = tmp_path / "coco_object"
    assert cvt.main([str(coco_stuff), "-o", str(out), "--nproc", "1"]) == 0
    for stem in ("000000000139", "000000000285", "000000000632"):
        converted = read(out / "annotations/val2017" / f"{stem}_instanceTrainIds.png")
        raw = read(coco_stuff / "annotations/val2017" / f"{stem}.png")
        np.testing.assert_array_equal(converted, expected_objects(raw))
    converted = read(out / "annotations/train2017/000000000009_instanceTrainIds.png")
    np.testing.assert_array_equal(converted, np.load(coco_stuff / "expected_000000000009.npy"))
    assert (out / "images").is_symlink()
    assert min(path.name for path in (out / "images/val2017").iterdir()) == "000000000139.jpg"
    assert "wrote 4 COCO-Object maps, kept 0 finished ones" in capsys.readouterr().out
    assert not list(out.rglob("*.tmp"))


def test_resumes_an_interrupted_run_and_check_verifies_it(coco_stuff, tmp_path, capsys):
    out = tmp_path / "coco_object"
    cvt.main([str(coco_stuff), "-o", str(out), "--splits", "val2017", "--nproc", "1"])
    annotations = out / "annotations/val2017"
    (annotations / "000000000285_instanceTrainIds.png").unlink()
    (annotations / ".000000000285_instanceTrainIds.png.999.tmp").write_bytes(b"half a file")  # an interrupted write
    finished = annotations / "000000000139_instanceTrainIds.png"
    finished_bytes = finished.read_bytes()
    capsys.readouterr()

    cvt.main([str(coco_stuff), "-o", str(out), "--splits", "val2017", "--nproc", "1"])
    assert "wrote 1 COCO-Object maps, kept 2 finished ones" in capsys.readouterr().out
    assert finished.read_bytes() == finished_bytes
    assert not list(annotations.glob("*.tmp")) and not list(annotations.glob(".*"))

    assert cvt.main([str(coco_stuff), "-o", str(out), "--splits", "val2017", "--check", "--nproc", "1"]) == 0
    assert "checked 3 COCO-Object maps" in capsys.readouterr().out


def test_check_finds_missing_and_wrong_maps(coco_stuff, tmp_path):
    out = tmp_path / "coco_object"
    cvt.main([str(coco_stuff), "-o", str(out), "--splits", "val2017", "--nproc", "1"])
    wrong = out / "annotations/val2017/000000000632_instanceTrainIds.png"
    Image.fromarray(np.zeros(SHAPE, np.uint8)).save(wrong)
    message = f"1 of 3 COCO-Object maps are missing or wrong, e.g. wrong labels in {wrong}"
    with pytest.raises(cvt.ConversionError, match=message):
        cvt.main([str(coco_stuff), "-o", str(out), "--splits", "val2017", "--check", "--nproc", "1"])
    wrong.unlink()
    with pytest.raises(cvt.ConversionError, match=f"e.g. missing {wrong}; rerun the conversion"):
        cvt.main([str(coco_stuff), "-o", str(out), "--splits", "val2017", "--check", "--nproc", "1"])


def test_converts_in_place_without_an_output_folder(coco_stuff):
    cvt.main([str(coco_stuff), "--splits", "val2017", "--nproc", "1"])
    assert len(list((coco_stuff / "annotations/val2017").glob("*_instanceTrainIds.png"))) == 3
    assert not (coco_stuff / "images").is_symlink()


def test_a_wrong_input_tree_is_a_clear_error(tmp_path, coco_stuff):
    message = f"{tmp_path / 'images'}/annotations not found: give the COCO-Stuff 164k root"
    with pytest.raises(cvt.ConversionError, match=message):
        cvt.main([str(tmp_path / "images"), "-o", str(tmp_path / "out")])
    (coco_stuff / "annotations/train2017").rename(tmp_path / "moved")
    message = f"{coco_stuff}/annotations/train2017 not found: drop --splits train2017"
    with pytest.raises(cvt.ConversionError, match=message):
        cvt.main([str(coco_stuff), "--splits", "train2017"])
    for path in (coco_stuff / "annotations/val2017").iterdir():
        path.unlink()
    with pytest.raises(cvt.ConversionError, match="no COCO-Stuff label maps"):
        cvt.main([str(coco_stuff)])


def test_command_line_runs_in_parallel_with_a_progress_bar(coco_stuff, tmp_path):
    out = tmp_path / "coco_object"
    command = [sys.executable, str(SCRIPT), str(coco_stuff), "-o", str(out), "--nproc", "2"]
    completed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "4/4" in completed.stdout and "ETA" in completed.stdout
    assert len(list(out.rglob("*_instanceTrainIds.png"))) == 4

    completed = subprocess.run([*command[:2], str(tmp_path / "nowhere")], check=False, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 1
    assert completed.stderr.strip() == (f"error: {tmp_path / 'nowhere'}/annotations not found: give the COCO-Stuff "
                                        "164k root, which holds annotations/train2017 and annotations/val2017 "
                                        "(see docs/evaluation.md#datasets)")
