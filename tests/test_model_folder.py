"""An exported model folder a stranger made (scclip/runtime/folder.py): every field of model.json is checked
when the folder is opened, and a graph reading data from outside its folder is refused, each in one line
from every command that opens a folder."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from scclip.cli import main as scclip_main
from scclip.errors import CheckpointError
from scclip.runtime import ModelFolder, OnnxSegmenter
from scclip.runtime.cli import main as runtime_main
from test_onnx import tiny_export  # noqa: F401  (a fixture)

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGE = REPO_ROOT / "scclip" / "assets" / "astronaut.jpg"


def altered_manifest(source: Path, folder: Path, edit) -> Path:
    """A copy of `source`'s model.json alone (the fields are checked before any file), edited by `edit(meta)`."""
    meta = json.loads((source / "model.json").read_text())
    edit(meta)
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def setter(field: str, value):
    *parents, last = field.split(".")

    def edit(meta):
        for part in parents:
            meta = meta[part]
        meta[last] = value
    return edit


# (field, value, what the message must say): the trials first, then one of each kind of check.
BAD_FIELDS = [
    ("graphs", ["x"], "graphs is [\"x\"], it must be an object"),
    ("files", ["image_encoder.onnx"], "files is [\"image_encoder.onnx\"], it must be an object of plain file names"),
    ("resize_scale", "big", "resize_scale is \"big\", it must be a list of 2 values, each a whole number from 1 to 8192"),
    ("patch_size", 0, "patch_size is 0, it must be a whole number from 1 to 1024"),
    ("settings.logit_scale", "x", "settings.logit_scale=\"x\" must be a number (default 40)"),
    ("prompt_templates", "a photo of a {}.", "prompt_templates is \"a photo of a {}.\", it must be a non-empty list"),
    ("normalisation.std", [0, 0, 0], "normalisation.std is [0, 0, 0], it must be a list of 3 values, each a finite "
                                     "number above 0"),
    ("normalisation.mean", [1, 2], "normalisation.mean is [1, 2], it must be a list of 3 values"),
    ("prompt_templates", ["a {0} and {1}"], "each text with one '{}' for the class name"),
    ("tokenizer.context_length", 10**9, "tokenizer.context_length is 1000000000, it must be a whole number from 2 to 77"),
    ("tokenizer.vocabulary", "../../etc/passwd", "it must be a plain file name of the folder"),
    ("graphs.image.file", 7, "graphs.image.file is 7, it must be a plain file name"),
    ("embed_dim", True, "embed_dim is true, it must be a whole number"),
    ("method", {"a": 1}, "method is {\"a\": 1}, it must be text"),
    ("renormalise_scores", "yes", "renormalise_scores is \"yes\", it must be true or false"),
    ("settings.prob_thd", 2, "settings.prob_thd=2 must lie in [0, 1]"),
    ("settings.pamr_stride", [], "settings.pamr_stride=[] must be a list of whole numbers"),
    ("settings.slide_stride", 0, "settings.slide_stride=0 must be at least 1"),
    ("settings.secret", 1, "settings.\"secret\" is not a maths setting"),
    ("settings.method", "naclip", "settings.method is \"naclip\", it must be the method \"scclip\""),
    ("parity.checked_on", "all", "parity.checked_on is \"all\""),
    ("source.sha256", "abc", "source.sha256 is \"abc\", it must be text matching [0-9a-f]{64} or null"),
    ("export_seconds", -1, "export_seconds is -1, it must be a finite number of at least 0"),
    ("format_version", "1", "is format \"1\", this runtime reads format 1"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS, ids=[f"{field}={value!r}"[:40] for field, value, _ in BAD_FIELDS])
def test_every_field_of_model_json_is_checked_in_one_line(tiny_export, tmp_path, capsys, field, value, message):
    folder = altered_manifest(tiny_export[0], tmp_path / "model", setter(field, value))
    assert runtime_main(["segment", "--model", str(folder), "--image", str(IMAGE), "--classes", "a,b"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {folder / 'model.json'}"), err
    assert message in err and "export the model again" in err and "Traceback" not in err


def test_missing_fields_and_non_finite_numbers_are_refused(tiny_export, tmp_path):
    def drop(field):
        def edit(meta):
            *parents, last = field.split(".")
            for part in parents:
                meta = meta[part]
            del meta[last]
        return edit

    for index, (edit, message) in enumerate([
        (drop("embed_dim"), "lacks embed_dim (a whole number from 1 to 65536)"),
        (drop("normalisation.std"), "lacks normalisation.std"),
        (drop("settings.slide_crop"), "lacks settings.slide_crop"),
        (drop("graphs.text"), "lacks graphs.text (an object)"),
    ]):
        folder = altered_manifest(tiny_export[0], tmp_path / f"m{index}", edit)
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
            ModelFolder.open(folder)
    folder = tmp_path / "infinite"
    folder.mkdir()
    text = (tiny_export[0] / "model.json").read_text()
    (folder / "model.json").write_text(text.replace('"logit_scale": 40', '"logit_scale": Infinity'))
    assert text != (folder / "model.json").read_text()
    with pytest.raises(CheckpointError, match="model.json is unreadable \\(Infinity is not a JSON number\\)"):
        ModelFolder.open(folder)


def test_the_scclip_command_and_the_web_page_refuse_the_same_way(tiny_export, tmp_path, capsys):
    import importlib.util

    folder = altered_manifest(tiny_export[0], tmp_path / "model", setter("patch_size", 0))
    expected = f"error: {folder / 'model.json'}: patch_size is 0, it must be a whole number from 1 to 1024: " \
               "export the model again\n"
    assert scclip_main(["segment", "--runtime", "onnx", "--model", str(folder), "--image", str(IMAGE),
                        "--classes", "a,b"]) == 1
    assert capsys.readouterr().err == expected
    spec = importlib.util.spec_from_file_location("demo", REPO_ROOT / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    assert demo.main(["--web", "--runtime", "onnx", "--model", str(folder), "--port", "7869"]) == 1
    assert capsys.readouterr().err == expected


def rechecksummed(folder: Path, name: str) -> None:
    """model.json's checksum of `name` made to match the file now there (as a stranger making a folder would)."""
    from scclip.runtime.folder import sha256_of

    meta = json.loads((folder / "model.json").read_text())
    meta["files"][name] = sha256_of(folder / name)
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
def test_a_graph_whose_external_data_lies_outside_the_folder_is_refused_in_one_line(tiny_export, tmp_path, capsys,
                                                                                    where):
    """The attack of the issue: a folder whose model.json checksums a graph that reads its weights from a file
    outside the folder, by '..', an absolute path or a link in the folder (made with onnx's external-data
    helpers). ONNX Runtime 1.32 refuses these itself, but 1.20 reads them: the folder check refuses any
    external data, in one line, whatever ONNX Runtime is installed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import set_external_data

    folder = Path(shutil.copytree(tiny_export[0], tmp_path / "model"))
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    location = {"parent": "../secret.bin", "absolute": str(secret), "link": "weights.bin"}[where]
    (folder / "weights.bin").symlink_to(secret)
    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    set_external_data(weight, location=location)
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    graph = helper.make_graph([helper.make_node("Add", ["tokens", "w"], ["features"])], "text",
                              [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, [4])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "text_encoder.onnx")
    rechecksummed(folder, "text_encoder.onnx")
    with pytest.raises(CheckpointError) as error:
        OnnxSegmenter(folder, classes="a,b")
    message = str(error.value)
    assert "\n" not in message and "text_encoder.onnx reads tensor data from other files" in message
    assert "outside the model folder" in message
    assert runtime_main(["segment", "--model", str(folder), "--image", str(IMAGE), "--classes", "a,b"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_a_graph_that_is_not_onnx_is_refused_in_one_line(tiny_export, tmp_path):
    folder = Path(shutil.copytree(tiny_export[0], tmp_path / "model"))
    (folder / "image_encoder.onnx").write_bytes(b"\xff" * 64)
    rechecksummed(folder, "image_encoder.onnx")
    with pytest.raises(CheckpointError, match=r"image_encoder.onnx is not an ONNX graph \(.*\): export the model again"):
        ModelFolder.open(folder)
