"""dist_test.sh: two torchrun processes on the CPU (gloo) give the metrics of one process, then the table."""
import json
import os
import subprocess
import sys

import pytest
from test_datasets import make_dataset
from test_eval import (
    REPO_ROOT,
    cfg_options,
    eval_script,
    isolate,
    plant_predictions,
    predict_independently,
)


@pytest.mark.slow
def test_dist_test_on_two_cpu_processes_matches_one_process(tmp_path, tmp_path_factory, tiny_checkpoint_path,
                                                            monkeypatch):
    isolate(monkeypatch, tmp_path_factory.getbasetemp() / "text_cache")
    root = make_dataset(tmp_path / "datasets", "voc20")
    plant_predictions(root, "voc20", predict_independently("voc20", tiny_checkpoint_path, root))
    options = cfg_options("voc20", tiny_checkpoint_path, root)

    eval_script.main(["--config", "configs/cfg_voc20.py", "--work-dir", str(tmp_path / "single"), "--device", "cpu",
                      "--cfg-options", *options])
    (single_path,) = (tmp_path / "single").glob("cfg_voc20-*/metrics.json")
    single = json.loads(single_path.read_text())

    env = dict(os.environ, GPUS="2", PORT="29531", DATASETS="voc20", WORK_DIR=str(tmp_path / "dist"),
               PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(["bash", "dist_test.sh", "--device", "cpu", "--cfg-options", *options],
                               check=False, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]

    (dist_path,) = (tmp_path / "dist").glob("cfg_voc20-*/metrics.json")
    distributed = json.loads(dist_path.read_text())
    assert dist_path.parent.name == single_path.parent.name  # the process count is not part of a run's identity
    assert (distributed["world_size"], single["world_size"]) == (2, 1)
    assert distributed["num_images"] == single["num_images"] == 2
    assert distributed["metrics"] == single["metrics"] and single["metrics"]["mIoU"] > 0
    assert distributed["per_class"] == single["per_class"]
    table = completed.stdout.strip().splitlines()
    start = table.index("| method | backbone | dataset | mIoU (ours) | mIoU (published) | diff | images | note |")
    miou = single["metrics"]["mIoU"]
    assert table[start + 2] == (f"| scclip | ViT-B/16 | VOC20 | {miou:.2f} | 84.3 | — | 2 | not comparable: "
                                "2 of 1449 images; not the published weights; settings changed: "
                                "test_dataloader.dataset.pipeline.1.scale |")
    log = next(dist_path.parent.glob("*/*.log")).read_text()
    assert "Iter(test)" in log  # the runs really went through the Runner, logging to the run's folder


@pytest.mark.slow  # an import of scclip (~5 s); scclip backbones' own test checks the message quickly
def test_dist_test_rejects_an_unknown_backbone_in_one_line_listing_the_names():
    completed = subprocess.run(["bash", "dist_test.sh"], env=dict(os.environ, BACKBONE="metaclip_vitl14", GPUS="1",
                                                                  PYTHON=sys.executable),
                               check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.startswith("error: backbone 'metaclip_vitl14' is not a backbone name, an open_clip "
                                       "ARCH:TAG pair or a checkpoint file: did you mean metaclip_vitl14_fullcc? names: "
                                       "ViT-B/32, ViT-B/16, ViT-L/14")
    assert completed.stderr.count("\n") == 1 and "openclip_vith14_laion2b" in completed.stderr
