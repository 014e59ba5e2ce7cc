"""The one table of settings (scclip/settings.py): every setting declared once with a role, validated in one
place, and read by the segmentor, eval.py, the run identity, the summary and the command line, API and web page."""
import ast
import inspect
import sys

import pytest

from scclip import SCCLIPForSegmentation, Segmenter
from scclip import settings
from scclip.calibration import ANOMALY_DETECTORS
from scclip.errors import InputError
from scclip.evaluation.runs import DEFAULT_METHOD, run_identity
from scclip.evaluation.summary import not_comparable_reasons
from scclip.methods import METHODS, NACLIP_ATTENTIONS
from scclip.segmentor import HALF_DTYPES
from scclip.settings import (
    BY_KEY,
    DEFAULTS,
    MODEL_SETTINGS,
    PRESET,
    SETTINGS,
    Role,
    check_settings,
    check_value,
    harmless_override,
    predictive,
    settings_for,
)
from scclip.web import fraction

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from scclip.evaluation import command as eval_script  # noqa: E402

KINDS = ("number", "whole", "switch", "choice", "wholes", "weights", "method", "none", "any")
# A value of the wrong kind for each checked kind.
WRONG = {"number": "abc", "whole": 1.5, "switch": "yes", "choice": "nope", "wholes": "8,16", "weights": [2.0],
         "method": "nope", "none": "ViT-B-16.pt"}


def constructor_parameters() -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(SCCLIPForSegmentation.__init__).parameters
    return {name: parameter for name, parameter in parameters.items()
            if name != "self" and parameter.kind is not parameter.VAR_KEYWORD}


def a_method_taking(name: str) -> str:
    return MODEL_SETTINGS[name].methods[-1]


def test_every_constructor_argument_and_method_setting_has_exactly_one_declaration_with_a_role():
    assert len(BY_KEY) == len(SETTINGS)  # no key declared twice
    assert all(isinstance(setting.role, Role) and setting.help and setting.kind in KINDS for setting in SETTINGS)
    shared = {name for name, setting in MODEL_SETTINGS.items() if not setting.own}
    assert shared == {*constructor_parameters(), "type"}  # type: the registry's key in a config
    for method, spec in METHODS.items():
        own = {name for name, setting in MODEL_SETTINGS.items() if setting.own and method in setting.methods}
        assert own == set(spec.settings), method
        taken = (shared - set(spec.refuses)) | own  # refused: shared settings the method's release has not
        assert settings_for(method) == [name for name in MODEL_SETTINGS
                                        if MODEL_SETTINGS[name].role is Role.MATHS and name in taken]
    assert all(setting.methods for setting in SETTINGS)  # a method's own setting is some method's
    assert all(setting.default is PRESET for setting in SETTINGS if setting.own)


def test_a_shared_setting_a_release_has_not_is_accepted_only_at_its_default():
    check_settings("proxyclip", dict(area_thd=None, pamr_steps=0, pamr_stride=[8, 16], pad_to_patch=False))
    for name, value in (("area_thd", 0.1), ("pamr_steps", 10), ("pamr_stride", (4,)), ("pad_to_patch", True)):
        with pytest.raises(InputError, match=f"method 'proxyclip' cannot take {name}="):
            check_settings("proxyclip", {name: value})
    assert "area_thd" not in settings_for("proxyclip") and "proxy_beta" in settings_for("proxyclip")


def test_the_choices_are_those_the_code_knows():
    assert MODEL_SETTINGS["attention"].choices == tuple(NACLIP_ATTENTIONS)
    assert MODEL_SETTINGS["anomaly_detector"].choices == ANOMALY_DETECTORS
    assert MODEL_SETTINGS["precision"].choices == ("auto", "fp32", *HALF_DTYPES)


def test_the_table_imports_nothing_torch_side():
    """The torch-free ONNX runtime can read it: only the standard library, scclip.errors and the VFM names
    (scclip.vfm, itself the standard library and scclip.errors) at import time."""
    from scclip import vfm

    for module, ours in ((settings, {("errors", 1), ("vfm", 1)}), (vfm, {("errors", 1)})):
        tree = ast.parse(inspect.getsource(module))
        imported = {(node.module if isinstance(node, ast.ImportFrom) else alias.name, getattr(node, "level", 0))
                    for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        assert {(name, level) for name, level in imported if level > 0} == ours
        assert all(name.split(".")[0] in sys.stdlib_module_names for name, level in imported if level == 0)


def test_the_segmentor_takes_its_defaults_from_the_table():
    for name, parameter in constructor_parameters().items():
        if parameter.default is not parameter.empty:
            assert DEFAULTS[name] == parameter.default, name
    assert "clip_path" not in DEFAULTS and DEFAULT_METHOD == DEFAULTS["method"] == "scclip"


def test_every_preset_is_a_valid_value():
    for method, spec in METHODS.items():
        check_settings(method, {name: value for name, value in spec.settings.items() if value is not None})
        check_settings(method, dict(spec.settings))  # None: the calibration follows the depth


@pytest.mark.parametrize("values, message", [
    (dict(prob_thd=2), r"^prob_thd=2 must lie in \[0, 1\]: it is compared with class probabilities$"),
    (dict(prob_thd=float("nan")), r"^prob_thd=nan must lie in \[0, 1\]"),
    (dict(prob_thd=True), r"^prob_thd=True must be a number \(default 0\.0\)$"),
    (dict(area_thd=-0.5), r"^area_thd=-0\.5 must lie in \[0, 1\] or be None: a share of the foreground area$"),
    (dict(slide_crop=-1), r"^slide_crop=-1 must be at least 0: a crop size in pixels \(0: the whole image\)$"),
    (dict(slide_stride=0), r"^slide_stride=0 must be at least 1"),
    (dict(logit_scale=0), r"^logit_scale=0 must be above 0: it multiplies cosine similarities$"),
    (dict(pamr_steps=-1), r"^pamr_steps=-1 must be at least 0$"),
    (dict(pamr_stride=[8, 0]), r"^pamr_stride=\[8, 0\]: each value must be at least 1"),
    (dict(pamr_stride=[]), r"^pamr_stride=\[\] must be a list of whole numbers \(default \(8, 16\)\)$"),
    (dict(precision="fp8"), r"^precision='fp8' is not one of auto, fp32, fp16, bf16$"),
    (dict(beta="0.4"), r"^beta='0\.4' must be a number \(default 0\.4\)$"),  # the method's preset
    (dict(contamination=2), r"^contamination=2 must lie in \[0, 1\]"),
    (dict(lof_neighbors=0), r"^lof_neighbors=0 must be at least 1"),
    (dict(text_cache="no"), r"^text_cache='no' must be True or False \(default True\)$"),
    (dict(gaussian_std=3.0), r"^method 'scclip' takes no setting 'gaussian_std'; it is a setting of naclip, resclip; its settings: "
                             r"slide_crop, .*, multi_level_fusion$"),
    (dict(prob_thdd=0.1), r"^method 'scclip' takes no setting 'prob_thdd' \(did you mean 'prob_thd'\?\)"),
    (dict(text_cach=False), r"did you mean 'text_cache'\?"),  # the closest of every name, not just the maths
])
def test_one_line_for_each_problem(values, message):
    with pytest.raises(InputError, match=message) as error:
        check_settings("scclip", values)
    assert "\n" not in str(error.value)


def test_valid_values_pass():
    check_settings("scclip", dict(prob_thd=1, area_thd=None, pre_adjust_idx=None, res_cls=None, pamr_stride=(8,),
                                  logit_scale=50, precision="bf16", slide_crop=0))
    check_settings("naclip", dict(naclip_arch="vanilla", attention="csa", gaussian_std=0.5))
    with pytest.raises(InputError, match=r"^unknown method 'naclipp' \(did you mean 'naclip'\?\)"):
        check_settings("naclipp", {})


@pytest.mark.parametrize("name", [name for name, setting in MODEL_SETTINGS.items() if setting.kind != "any"])
def test_the_segmentor_checks_every_checked_setting_before_reading_a_checkpoint(name):
    """Each setting the table can check reaches check_settings from the constructor (there is no checkpoint here)."""
    setting = MODEL_SETTINGS[name]
    arguments = {name: WRONG[setting.kind]}
    if name != "method":
        arguments["method"] = a_method_taking(name)
    with pytest.raises(InputError, match=f"^{name}=|^unknown method 'nope'"):
        SCCLIPForSegmentation(clip_path="no-such-checkpoint.pt", vocabulary=["cat"], **arguments)


def test_eval_checks_every_model_setting_before_anything_runs():
    advice = "; fix it in the config or in --cfg-options$"
    with pytest.raises(InputError, match=r"^model\.area_thd=2 must lie in \[0, 1\] or be None: a share" + ".*" + advice):
        eval_script.check_model_settings(dict(method="naclip", area_thd=2))
    with pytest.raises(InputError, match=r"^model\.attention='qq' is not one of naclip, kk, vanilla, nonly, csa" + advice):
        eval_script.check_model_settings(dict(method="naclip", attention="qq"))
    with pytest.raises(InputError, match=r"^model\.residual is not a setting of method 'naclip': "
                                         r"it is a setting of vanilla, maskclip, sclip, clearclip; valid settings: "):
        eval_script.check_model_settings(dict(method="naclip", residual=False))
    eval_script.check_model_settings(dict(type="SCCLIPForSegmentation", clip_path="ViT-B/16", name_path="voc21",
                                          method="naclip", attention="csa", naclip_arch="vanilla", device="cpu"))


def test_roles_decide_the_run_identity(tmp_path):
    checkpoint = tmp_path / "tiny.pt"
    checkpoint.write_bytes(b"weights")

    def identity(**model):
        cfg = dict(model=dict(type="SCCLIPForSegmentation", clip_path=str(checkpoint), vocabulary=["cat"], **model),
                   test_dataloader=dict(dataset=dict(type="Folder", data_root=str(tmp_path))))
        return run_identity(cfg, ["a.jpg"], "fp32")

    plain = identity()
    for name, setting in MODEL_SETTINGS.items():
        assert predictive(name) is (setting.role is not Role.NOT_PREDICTIVE)
    assert identity(device="cuda", crop_batch_size=2, text_batch_size=3, text_cache=False, compile=True,
                    download_root="x") == plain
    assert identity(prob_thd=0.5) != plain and identity(method="naclip") != plain
    assert identity(data_preprocessor=dict(mean=[0, 0, 0])) != plain
    assert plain["model"]["method"] == "scclip"


def test_roles_decide_what_the_summary_compares():
    run = dict(benchmark=None, published_weights=True, num_images=3)
    harmless = [key for key, setting in BY_KEY.items() if setting.role.comparable]
    assert {"model.clip_path", "model.precision", "model.device", "test_dataloader.dataset.data_root",
            "test_dataloader.num_workers"} <= set(harmless)
    assert not_comparable_reasons({**run, "overrides": dict.fromkeys(harmless, 1)}) == []
    assert all(harmless_override(key) for key in harmless)
    changed = ["model.prob_thd", "model.method", "model.name_path", "model.beta", "test_dataloader.dataset.indices"]
    (reason,) = not_comparable_reasons({**run, "overrides": dict.fromkeys(changed, 1)})
    assert reason == "settings changed: " + ", ".join(changed)


def test_command_line_web_and_api_read_the_table(tiny_checkpoint_path):
    with pytest.raises(InputError, match=r"^--prob-thd 5 must lie in \[0, 1\]: it is compared with class probabilities$"):
        check_value("prob_thd", 5, label="--prob-thd 5")
    with pytest.raises(InputError, match=r"^unknown method 'segclip'.*clearclip"):
        check_value("method", "segclip")
    with pytest.raises(InputError, match=r"^probability threshold 1\.5 must be a number in \[0, 1\]$"):
        fraction(1.5, "probability threshold", MODEL_SETTINGS["prob_thd"])
    # The API checks its settings before the backbone is read: no such file is needed to be told.
    with pytest.raises(InputError, match=r"^prob_thd=2 must lie in \[0, 1\]"):
        Segmenter(tiny_checkpoint_path.with_name("absent.pt"), classes="a,b", device="cpu", prob_thd=2)
    with pytest.raises(InputError, match=r"^method 'clearclip' takes no setting 'logit_scal' \(did you mean 'logit_scale'"):
        Segmenter(tiny_checkpoint_path.with_name("absent.pt"), classes="a,b", method="clearclip", logit_scal=3)
