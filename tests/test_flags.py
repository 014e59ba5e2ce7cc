"""One spelling per meaning: every command's parser against docs/flags.md, and the flags' behaviour on both runtimes."""
import argparse
import re
from pathlib import Path

import pytest

from scclip import cli, options
from scclip import predict as predict_command
from scclip.evaluation import command as eval_command
from scclip.export import export_model
from scclip.runtime import cli as runtime_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
FLAGS_PAGE = REPO_ROOT / "docs" / "flags.md"
# Each shared meaning: its one spelling, and the other names that stay as its aliases.
SPELLINGS = {
    "runtime": ("--runtime", ()), "model": ("--model", ()), "device": ("--device", ()),
    "image": ("--image", ("--images",)), "method": ("--method", ()), "backbone": ("--backbone", ()),
    "set": ("--set", ("--setting",)), "launcher": ("--launcher", ()),
}
# Names another meaning's flag once had, which no command may take any more.
RETIRED = {"--provider", "--providers", "--workdir-onnx"}


def subcommand(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    (choices,) = [action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return choices[name]


def parsers() -> dict[str, argparse.ArgumentParser]:
    scclip = cli.build_parser()
    return {"segment": subcommand(scclip, "segment"), "web": subcommand(scclip, "web"),
            "export": subcommand(scclip, "export"), "predict": predict_command.build_parser(),
            "eval": eval_command.build_parser(), "runtime": subcommand(runtime_cli.build_parser(), "segment")}


def flags_by_destination(parser: argparse.ArgumentParser) -> dict[str, tuple[str, ...]]:
    return {action.dest: tuple(action.option_strings) for action in parser._actions if action.option_strings}


def documented() -> dict[str, set[str]]:
    """flag → the commands docs/flags.md gives it, from the table's ✓ columns."""
    lines = FLAGS_PAGE.read_text().splitlines()
    start = lines.index("<!-- flags table: tests/test_flags.py parses it -->") + 1
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    table = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        for flag in re.findall(r"`(--[a-z-]+)", cells[0]):
            table[flag] = {command for command, cell in zip(header[2:], cells[2:]) if cell == "✓"}
    return table


def test_each_meaning_has_one_spelling_on_every_command():
    for command, parser in parsers().items():
        flags = flags_by_destination(parser)
        every = {flag for names in flags.values() for flag in names}
        assert not every & RETIRED, (command, every & RETIRED)
        for meaning, (spelling, aliases) in SPELLINGS.items():
            if meaning in flags:
                assert flags[meaning][0] == spelling and set(flags[meaning][1:]) <= set(aliases), (command, meaning)
            else:  # the meaning under another destination would be a second spelling
                assert spelling not in every and not set(aliases) & every, (command, meaning)


def test_the_table_is_what_the_parsers_take():
    table, found = documented(), parsers()
    assert set(table) >= {spelling for spelling, _ in SPELLINGS.values()}
    for flag, commands in table.items():
        taking = {command for command, parser in found.items()
                  if any(flag in names for names in flags_by_destination(parser).values())}
        assert taking == commands, (flag, taking, commands)


def test_a_command_with_backbone_takes_every_backbone_flag():
    """Backbone-like flags (--clip-arch; --vfm where a method brings one) go wherever --backbone goes."""
    found = {command: {flag for names in flags_by_destination(parser).values() for flag in names}
             for command, parser in parsers().items()}
    companions = {"--clip-arch"} | ({"--vfm"} if any("--vfm" in flags for flags in found.values()) else set())
    for command, flags in found.items():
        if "--backbone" in flags:
            assert companions <= flags, (command, companions - flags)


def test_scclip_predict_and_eval_are_predict_py_and_eval_py(capsys):
    for name, prog in (("predict", "predict.py"), ("eval", "scclip eval")):
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0 and prog in capsys.readouterr().out


def parsed(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["segment", *argv])


def test_set_and_its_aliases_are_one_dictionary_checked_for_the_method():
    args = parsed("--set", "beta=0.3", "--setting", "slide_crop=0", "--ablate", "anomaly_resolution",
                  "--anomaly-detector", "norm")
    assert options.method_settings(args) == dict(beta=0.3, slide_crop=0, anomaly_resolution=False,
                                                 anomaly_detector="norm")
    with pytest.raises(Exception, match="^method 'clearclip' takes no setting 'beta'"):
        options.method_settings(parsed("--method", "clearclip", "--set", "beta=0.3"))
    with pytest.raises(Exception, match=r"^--set 'beta' is not KEY=VALUE"):
        options.method_settings(parsed("--set", "beta"))
    assert options.onnx_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_b16_model) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "tiny"
    export_model("tiny.pt", folder, settings={"prob_thd": 0.3}, clip_model=tiny_b16_model)
    return folder


def test_segment_on_onnx_takes_prob_thd_zero_and_refuses_what_the_export_fixes(exported):
    lines = ["cat", "dog"]

    def segmenter(*argv: str):
        args = parsed("--runtime", "onnx", "--model", str(exported), *argv)
        return cli.onnx_segmenter(args, lines, options.command_settings(args).get("prob_thd"))

    assert segmenter().prob_thd == 0.3  # the exported value when none is given
    assert segmenter("--prob-thd", "0").prob_thd == 0.0  # 0 is a value, not "not given"
    assert segmenter("--set", "prob_thd=0.1").prob_thd == 0.1  # it acts after the graphs
    with pytest.raises(Exception, match=r"^beta=0\.5: the model in .* was exported with beta=0\.4, which it cannot"):
        segmenter("--set", "beta=0.5")
    with pytest.raises(Exception, match=r"^--prob-thd 2 must lie in \[0, 1\]"):
        segmenter("--prob-thd", "2")
    with pytest.raises(Exception, match=r"drop --method"):
        options.check_runtime(parsed("--runtime", "onnx", "--model", str(exported), "--method", "naclip"),
                              ("backbone", "clip_arch", "method"))


def test_the_runtimes_command_imports_nothing_torch_side():
    """The runtime's command, its flags and its outputs import with torch (and the PyTorch command) blocked."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, importlib.abc\n"
        "BLOCKED = ('torch', 'mmcv', 'mmengine', 'mmseg', 'cv2', 'torchvision', 'scclip.cli', 'scclip.api')\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED or name in BLOCKED:\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from scclip.runtime import cli\n"
        "import scclip.outputs, scclip.options\n"
        "cli.build_parser().parse_args(['segment', '--model', 'm', '--image', 'x', '--device', 'cuda'])\n"
        "print(sorted(name for name in sys.modules if name.startswith('scclip.')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "scclip.outputs" in done.stdout and "scclip.cli'" not in done.stdout
