"""eval.py --show-dir pictures: image | prediction | ground truth under titles, over a legend of the classes
present in either, drawn by scclip.visualize like the demo's picture."""
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from PIL import Image, ImageDraw

from scclip.visualize import BACKGROUND, comparison, draw_runs, overlay, palette, text_runs

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
from scclip.evaluation import command as eval_script  # noqa: E402

CLASSES = ("background", "aeroplane", "person", "猫", "never seen")
IGNORE = 255


def fake_sample(tmp_path: Path, with_truth: bool = True) -> tuple[SegDataSample, np.ndarray]:
    """A 48×64 photo predicted as background | person and labelled person | 猫 with an ignored border."""
    y, x = np.mgrid[0:48, 0:64]
    image = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    prediction = np.zeros((48, 64), np.int64)
    prediction[:, 32:] = 2
    sample = SegDataSample(metainfo=dict(img_path=str(path)))
    sample.pred_sem_seg = PixelData(data=torch.from_numpy(prediction)[None])
    if with_truth:
        truth = np.full((48, 64), 2, np.int64)
        truth[:, 40:] = 3
        truth[:4] = IGNORE
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(truth)[None])
    return sample, image


def run_hook(tmp_path: Path, sample: SegDataSample) -> np.ndarray:
    runner = SimpleNamespace(test_dataloader=SimpleNamespace(dataset=SimpleNamespace(
        metainfo=dict(classes=CLASSES, palette=[[0, 128, 0]] * len(CLASSES)),
        data_prefix=dict(img_path=str(Path(sample.img_path).parent)))))
    hook = eval_script.ComparisonHook(tmp_path / "pictures")
    hook.before_test(runner)
    hook.after_test_iter(runner, 0, outputs=[sample])
    return np.asarray(Image.open(tmp_path / "pictures" / "photo.png").convert("RGB"))


def title_ink(title: str, size: tuple[int, int], left_middle: tuple[int, int]) -> tuple[np.ndarray, tuple]:
    reference = Image.new("RGB", size, BACKGROUND)
    draw_runs(ImageDraw.Draw(reference), left_middle, text_runs(title), 16)
    box = Image.fromarray(255 - np.asarray(reference)).getbbox()
    return np.asarray(reference), box


def test_show_dir_picture_has_titles_panels_and_a_legend(tmp_path):
    sample, image = fake_sample(tmp_path)
    picture = run_hook(tmp_path, sample)
    prediction = sample.pred_sem_seg.data[0].numpy()
    truth = sample.gt_sem_seg.data[0].numpy()
    _, layout = comparison(image, prediction, truth, list(CLASSES))
    assert picture.shape == (layout.size[1], layout.size[0], 3)
    colours = palette(len(CLASSES))  # the demo's palette, not the dataset's (all one green here)

    def panel(column: int) -> np.ndarray:
        x, y = layout.panel_origin(column)
        return picture[y : y + 48, x : x + 64]

    assert layout.panel == (64, 48)  # full size: nothing resampled
    np.testing.assert_array_equal(panel(0), image)
    np.testing.assert_array_equal(panel(1), overlay(image, prediction, colours))
    np.testing.assert_array_equal(panel(2), overlay(image, truth, colours))
    np.testing.assert_array_equal(panel(2)[:4], image[:4])  # ignored pixels stay bare

    band = picture[: layout.panel_origin(0)[1]]
    for column, title in enumerate(("image", "prediction", "ground truth")):
        x = layout.panel_origin(column)[0]
        reference, box = title_ink(title, (picture.shape[1], picture.shape[0]),
                                   (x, layout.margin + layout.title_height // 2))
        region = (slice(box[1], box[3]), slice(box[0], box[2]))
        assert box[3] <= band.shape[0]  # inside the title band, above the panels
        np.testing.assert_array_equal(picture[region], reference[region], err_msg=title)
        assert (picture[region] != BACKGROUND).any(axis=-1).sum() > 20

    legend = picture[layout.legend_top :]
    # Present in prediction or ground truth, most pixels first: person, background, 猫; not aeroplane.
    expected = [2, 0, 3]
    for position, index in enumerate(expected):
        x, y = layout.legend_cell(position)
        assert (picture[y + layout.swatch // 2, x + layout.swatch // 2] == colours[index]).all(), CLASSES[index]
    for absent in (1, 4):
        assert not (legend == colours[absent]).all(axis=-1).any(), CLASSES[absent]
    rows = -(-len(expected) // layout.legend_columns)  # three entries, no more
    assert picture.shape[0] == layout.legend_top + rows * layout.legend_row_height + layout.margin


def test_show_dir_picture_without_ground_truth_has_two_titled_panels(tmp_path):
    sample, image = fake_sample(tmp_path, with_truth=False)
    picture = run_hook(tmp_path, sample)
    _, layout = comparison(image, sample.pred_sem_seg.data[0].numpy(), None, list(CLASSES))
    assert picture.shape == (layout.size[1], layout.size[0], 3)
    x = layout.panel_origin(1)[0]
    reference, box = title_ink("prediction", (picture.shape[1], picture.shape[0]),
                               (x, layout.margin + layout.title_height // 2))
    region = (slice(box[1], box[3]), slice(box[0], box[2]))
    np.testing.assert_array_equal(picture[region], reference[region])
    assert picture.shape[1] < 3 * 64  # no third panel


def test_images_of_one_name_in_two_folders_keep_two_pictures(tmp_path):
    images = tmp_path / "images"
    samples = []
    for folder in ("a", "b"):
        (images / folder).mkdir(parents=True)
        sample, _ = fake_sample(images / folder)
        samples.append(sample)
    runner = SimpleNamespace(test_dataloader=SimpleNamespace(dataset=SimpleNamespace(
        metainfo=dict(classes=CLASSES), data_prefix=dict(img_path=str(images)))))
    hook = eval_script.ComparisonHook(tmp_path / "pictures")
    hook.before_test(runner)
    hook.after_test_iter(runner, 0, outputs=samples)
    assert sorted(str(path.relative_to(tmp_path / "pictures")) for path in (tmp_path / "pictures").rglob("*.png")) == [
        "a/photo.png", "b/photo.png"]
