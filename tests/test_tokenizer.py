"""CLIP tokenizer: parity with the ids of OpenAI's tokenizer, cleaning, padding and length limits."""
import json

import numpy as np
import pytest
import torch

from scclip.clip import tokenize
from scclip.clip.tokenizer import EOT_ID, SOT_ID, bytes_to_unicode, get_tokenizer
from scclip.errors import InputError


def ids_of(text: str) -> list[int]:
    """The non-padding ids of one text."""
    row = tokenize(text)[0]
    return row[row != 0].tolist()


def test_golden_tokens_match_openai(golden_dir):
    texts = json.loads((golden_dir / "tokens.json").read_text(encoding="utf-8"))
    expected = np.load(golden_dir / "tokens.npy")
    tokens = tokenize(texts)
    assert tokens.dtype == torch.long
    assert tokens.shape == expected.shape == (len(texts), 77)
    np.testing.assert_array_equal(tokens.numpy(), expected)


def test_known_ids_and_padding():
    tokens = tokenize("a photo of a cat.")
    assert tokens.shape == (1, 77)
    assert tokens[0, :8].tolist() == [SOT_ID, 320, 1125, 539, 320, 2368, 269, EOT_ID]
    assert not tokens[0, 8:].any()


def test_vocabulary_layout():
    tokenizer = get_tokenizer()
    assert len(tokenizer.encoder) == 49408
    assert (tokenizer.sot_id, tokenizer.eot_id) == (49406, 49407)
    mapping = bytes_to_unicode()
    assert sorted(mapping) == list(range(256))
    assert len(set(mapping.values())) == 256
    assert all(char.isprintable() and not char.isspace() for char in mapping.values())


def test_list_and_single_string_agree():
    texts = ["a photo of a cat.", "person in jeans"]
    batch = tokenize(texts)
    assert batch.shape == (2, 77)
    assert torch.equal(batch[1], tokenize(texts[1])[0])


def test_empty_text_is_start_and_end_only():
    assert ids_of("") == [SOT_ID, EOT_ID]
    assert ids_of("   \n\t ") == [SOT_ID, EOT_ID]


@pytest.mark.parametrize(
    "variant",
    ["A PHOTO OF A CAT.", "a   photo\tof\n a cat.", "  a photo of a cat.  ", "a\u00a0photo\u3000of a cat."],
)
def test_case_and_white_space_do_not_matter(variant):
    assert ids_of(variant) == ids_of("a photo of a cat.")


@pytest.mark.parametrize("escaped", ["fish &amp; chips", "fish &amp;amp; chips", "fish &#38; chips"])
def test_html_entities_are_decoded_twice(escaped):
    assert ids_of(escaped) == ids_of("fish & chips")


@pytest.mark.parametrize(
    ("broken", "fixed"), [("cafÃ©", "café"), ("ﬁsh", "fish"), ("â€œquotedâ€\x9d", '"quoted"')]
)
def test_unicode_is_repaired_by_ftfy(broken, fixed):
    assert ids_of(broken) == ids_of(fixed)


def test_digits_are_single_tokens_and_contractions_split():
    assert len(ids_of("2024")) == 2 + 4
    assert ids_of("it's")[2:-1] == ids_of("'s")[1:-1]


@pytest.mark.parametrize("text", ["a photo of a cat.", "ünïcödé café", "🙂 zzqx 42"])
def test_decode_round_trip(text):
    tokenizer = get_tokenizer()
    assert "".join(tokenizer.decode(tokenizer.encode(text)).split()) == "".join(text.split())


def test_too_long_text_names_it_and_the_fix():
    text = "cat " * 100
    with pytest.raises(InputError, match=r"'cat cat .*truncate=True"):
        tokenize(["short", text])
    assert issubclass(InputError, ValueError)


def test_truncate_keeps_the_start_and_ends_with_end_of_text():
    text = "a photo of " + "cat " * 100
    tokens = tokenize(text, truncate=True)
    assert tokens.shape == (1, 77)
    assert tokens[0, -1] == EOT_ID
    assert tokens[0].ne(0).all()
    assert tokens[0, :76].tolist() == [SOT_ID] + get_tokenizer().encode(text)[:75]


def test_text_that_fits_exactly_is_not_truncated():
    text = "cat " * 75
    tokens = tokenize(text)
    assert tokens[0, -1] == EOT_ID
    assert tokens[0, :-1].ne(EOT_ID).all()


def test_custom_context_length():
    assert tokenize("a photo of a cat.", context_length=8).tolist() == [
        [SOT_ID, 320, 1125, 539, 320, 2368, 269, EOT_ID]
    ]
    with pytest.raises(InputError):
        tokenize("a photo of a cat.", context_length=7)
