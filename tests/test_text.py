"""Vocabulary parsing and text query features."""
import pytest
import torch

import scclip.text
from scclip.clip.tokenizer import tokenize
from scclip.errors import VocabularyError
from scclip.text import Vocabulary, encode_queries, load_templates


def test_synonyms_map_queries_to_classes():
    vocabulary = Vocabulary.from_lines(["sky, cloud", "cat", "tv monitor, screen, television"])
    assert vocabulary.class_names == ["sky", "cat", "tv monitor"]
    assert vocabulary.queries == ["sky", "cloud", "cat", "tv monitor", "screen", "television"]
    assert vocabulary.query_to_class == [0, 0, 1, 2, 2, 2]


def test_vocabulary_file_with_crlf_and_trailing_newlines(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"sky, wood \r\ncat\r\n\r\n")
    assert Vocabulary.from_file(path).queries == ["sky", "wood", "cat"]


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], "is empty"),
        (["", "  "], "is empty"),
        (["cat", "", "dog"], "line 2 is blank"),
        (["cat, , dog"], "line 1 .* has an empty name"),
        (["cat", "dog", "cat"], "line 3 repeats line 1"),
        (["Cat, kitten", "dog", "cat, KITTEN"], "line 3 repeats line 1"),  # CLIP's tokenizer lower-cases
    ],
)
def test_malformed_vocabularies_are_refused(lines, message):
    with pytest.raises(VocabularyError, match=message):
        Vocabulary.from_lines(lines, source="test vocabulary")


def test_errors_speak_of_classes_on_a_command_line():
    with pytest.raises(VocabularyError, match=r"--classes, class 2 repeats class 1 \('cat'\)"):
        Vocabulary.from_lines(["Cat", "cat"], source="--classes", unit="class")


def test_unreadable_vocabulary_file(tmp_path):
    path = tmp_path / "binary.txt"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(VocabularyError, match="cannot read vocabulary file"):
        Vocabulary.from_file(path)


def test_a_name_in_two_classes_is_allowed_as_published():
    vocabulary = Vocabulary.from_lines(["sky, bed", "bed"])
    assert vocabulary.query_to_class == [0, 0, 1]


def test_published_templates_are_shipped():
    templates = load_templates()
    assert len(templates) == 80 and all("{}" in t for t in templates)


def test_query_features_are_template_means(tiny_b16_model):
    templates = ["a photo of a {}.", "a drawing of the {}, seen from far away."]
    features = encode_queries(tiny_b16_model, ["cat", "traffic light"], templates, batch_size=3)
    with torch.no_grad():
        expected = []
        for name in ["cat", "traffic light"]:
            prompts = torch.nn.functional.normalize(
                tiny_b16_model.encode_text(tokenize([t.format(name) for t in templates])), dim=-1)
            expected.append(torch.nn.functional.normalize(prompts.mean(0), dim=-1))
    torch.testing.assert_close(features, torch.stack(expected), atol=1e-6, rtol=1e-5)


def test_text_tower_truncation_is_exact(tiny_b16_model):
    tokens = tokenize(["a cat", "a much longer prompt about a small cat on a mat"])
    with torch.no_grad():
        short = tiny_b16_model.encode_text(tokens[:1])
        both = tiny_b16_model.encode_text(tokens)
    torch.testing.assert_close(short[0], both[0], atol=1e-6, rtol=1e-5)


def test_progress_reports_every_batch_and_changes_nothing(tiny_b16_model):
    templates = ["a photo of a {}.", "a drawing of the {}.", "art of a {}."]
    queries = ["cat", "traffic light", "sky", "dog"]
    calls = []
    reported = encode_queries(tiny_b16_model, queries, templates, batch_size=5,
                              progress=lambda done, total: calls.append((done, total)))
    assert calls == [(5, 12), (10, 12), (12, 12)]  # 4 names × 3 templates in batches of 5
    silent = encode_queries(tiny_b16_model, queries, templates, batch_size=5)
    assert torch.equal(reported, silent)


def test_long_encodings_log_progress_when_stderr_is_no_terminal(tiny_b16_model, monkeypatch):
    """eval.py's log and redirected output get a line every LOG_EVERY_S (here: every batch but the last)."""
    lines = []

    class Recorder:
        def info(self, message: str) -> None:
            lines.append(message)

    monkeypatch.setattr(scclip.text, "LOG_EVERY_S", 0.0)
    monkeypatch.setattr(scclip.text.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(scclip.text.MMLogger, "get_current_instance", staticmethod(lambda: Recorder()))
    encode_queries(tiny_b16_model, ["cat", "dog", "sky"], ["a {}.", "the {}."], batch_size=2)
    assert [line.split(",")[0] for line in lines] == [
        "encoding text prompts: 2/6 (33%)", "encoding text prompts: 4/6 (67%)"]
