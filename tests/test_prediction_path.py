"""One prediction path: for every method, the full-size photo path (`Segmenter`, built in blocks by
`scclip.fullres`) equals the benchmark path (`SCCLIPForSegmentation.test_step`, everything at full
size at once), in sliding-window and whole-image mode."""
import numpy as np
import pytest
from PIL import Image
from skimage import data as sample_data
from test_api import reference
from test_fullres import assert_same_labels

from scclip.api import Segmenter
from scclip.methods import available_methods, get_method

CLASSES = "person, astronaut, flag, wall, space suit"


@pytest.mark.parametrize("slide", [True, False], ids=["windows", "whole-image"])
@pytest.mark.parametrize("method", available_methods())
def test_photo_path_equals_the_benchmark_path(tiny_checkpoint_path, tiny_dino_path, method, slide):
    image = np.asarray(Image.fromarray(sample_data.astronaut()).resize((410, 300)))
    # ProxyCLIP runs with the tiny VFM; a method that refuses area_thd (ResCLIP, ProxyCLIP) runs without it.
    options = dict(vfm_path=str(tiny_dino_path)) if method == "proxyclip" else {}
    if "area_thd" not in get_method(method).refuses:
        options["area_thd"] = 0.2
    segmenter = Segmenter(tiny_checkpoint_path, classes=CLASSES, device="cpu", method=method, slide=slide,
                          prob_thd=0.2, **options)
    result = segmenter(image)
    expected_labels, expected_scores = reference(segmenter, image)
    assert_same_labels(result.labels, expected_labels, expected_scores)
    np.testing.assert_allclose(result.scores, expected_scores, atol=1e-5, rtol=0)
    assert result.labels.shape == image.shape[:2]
