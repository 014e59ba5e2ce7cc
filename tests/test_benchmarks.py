"""The one table of benchmarks: vocabularies by name, the dataset each reads, and its command-line entry."""
import subprocess
import sys

import pytest

from scclip.api import Segmenter, display_names, vocabulary_lines
from scclip.benchmarks import BENCHMARKS, benchmark_of_vocabulary, shipped_lines, vocabulary_file
from scclip.cli import main
from scclip.errors import VocabularyError


@pytest.mark.parametrize("key", list(BENCHMARKS))
def test_each_benchmark_ships_a_vocabulary_of_its_dataset_classes(key):
    benchmark = BENCHMARKS[key]
    assert vocabulary_file(key) == benchmark.vocabulary and benchmark.vocabulary.is_file()
    assert len(shipped_lines(key)) == len(benchmark.class_names())
    assert benchmark_of_vocabulary(list(shipped_lines(key))) is benchmark
    assert display_names(list(shipped_lines(key))) == list(benchmark.class_names())


def test_a_file_wins_over_a_name_and_mistakes_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "voc21").write_text("cat\ndog\n")
    assert vocabulary_file("voc21").resolve() == tmp_path / "voc21"
    with pytest.raises(VocabularyError, match=r"'voc2l' is neither a file nor a benchmark name \(did you mean 'voc21'\?\)"):
        vocabulary_file("voc2l")
    with pytest.raises(VocabularyError, match="vocabulary file not found: missing/classes.txt"):
        vocabulary_file("missing/classes.txt")
    (tmp_path / "folder").mkdir()
    with pytest.raises(VocabularyError, match="is a folder"):
        vocabulary_file("folder")


def test_vocabulary_lines_and_extra_classes_after_a_named_vocabulary():
    lines = vocabulary_lines("astronaut", "voc20")
    assert lines[:2] == ["aeroplane", "bicycle"] and lines[-1] == "astronaut" and len(lines) == 21
    names = display_names(lines)
    assert names[0] == "aeroplane" and names[-1] == "astronaut"


def test_segmenter_named_vocabulary_shows_the_benchmark_class_names(tiny_checkpoint_path):
    import numpy as np

    result = Segmenter(tiny_checkpoint_path, vocab="voc21", device="cpu")(np.zeros((40, 50, 3), np.uint8))
    assert result.class_names[:2] == ["background", "aeroplane"] and len(result.class_names) == 21


def test_benchmarks_command(capsys):
    assert main(["benchmarks"]) == 0
    assert capsys.readouterr().out.split() == list(BENCHMARKS)
    assert main(["benchmarks", "--check", "voc21", "ade20k"]) == 0
    assert main(["benchmarks", "--check", "voc21", "ade2k"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: 'ade2k' is not a benchmark (did you mean 'ade20k'?): use {' '.join(BENCHMARKS)}")


@pytest.mark.slow
def test_python_dash_m_scclip_is_the_command():
    process = subprocess.run([sys.executable, "-m", "scclip", "benchmarks"], capture_output=True, text=True, timeout=120)
    assert process.returncode == 0 and process.stdout.split() == list(BENCHMARKS)
    assert "Traceback" not in process.stderr and "RuntimeWarning" not in process.stderr
