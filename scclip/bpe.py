"""CLIP's byte-level BPE tokenizer, free of torch (the ONNX runtime shares it with `scclip.clip.tokenizer`).

Gives the ids OpenAI's CLIP text tower was trained on: the text is repaired (ftfy), HTML
entities are decoded, white space is collapsed and everything is lower-cased; words are split
with CLIP's pattern, mapped byte by byte onto printable characters and merged with the
49,152-merge vocabulary file (`bpe_simple_vocab_16e6.txt.gz`, shipped in scclip/clip/ and copied
into every exported model folder). Imports only ftfy, regex and the standard library.
"""

from __future__ import annotations

import functools
import gzip
import html
import os

import ftfy
import regex

from .errors import InputError

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
NUM_MERGES = 49152 - 256 - 2
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
SOT_ID = 49406
EOT_ID = 49407
CONTEXT_LENGTH = 77

_WORD_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable character, so BPE never sees white space or control bytes.

    Printable Latin-1 bytes map to themselves; the other 68 go to code points from 256 on.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def clean_text(text: str) -> str:
    """Repair mojibake, decode (doubly) escaped HTML entities, collapse white space, lower-case."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class SimpleTokenizer:
    """Byte-level BPE with CLIP's vocabulary; caches the merge result of every word it sees."""

    def __init__(self, merges: list[tuple[str, str]]) -> None:
        self.byte_encoder = bytes_to_unicode()
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [symbol + "</w>" for symbol in symbols]
        vocab += ["".join(pair) for pair in merges]
        vocab += [START_OF_TEXT, END_OF_TEXT]
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.byte_decoder = {char: byte for byte, char in self.byte_encoder.items()}
        self.bpe_ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._cache = {START_OF_TEXT: START_OF_TEXT, END_OF_TEXT: END_OF_TEXT}

    @property
    def sot_id(self) -> int:
        return self.encoder[START_OF_TEXT]

    @property
    def eot_id(self) -> int:
        return self.encoder[END_OF_TEXT]

    def bpe(self, word: str) -> str:
        """Merge the characters of one (byte-encoded) word; returns its tokens joined by spaces."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            ranked = [(self.bpe_ranks.get(pair, NUM_MERGES), pair) for pair in zip(parts, parts[1:])]
            rank, (first, second) = min(ranked, key=lambda item: item[0])
            if rank == NUM_MERGES:
                break
            merged: list[str] = []
            index = 0
            while index < len(parts):
                if index + 1 < len(parts) and parts[index] == first and parts[index + 1] == second:
                    merged.append(first + second)
                    index += 2
                else:
                    merged.append(parts[index])
                    index += 1
            parts = merged
        result = " ".join(parts)
        self._cache[word] = result
        return result

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without start/end markers."""
        ids: list[int] = []
        for word in _WORD_PATTERN.findall(clean_text(text)):
            encoded = "".join(self.byte_encoder[byte] for byte in word.encode("utf-8"))
            ids.extend(self.encoder[token] for token in self.bpe(encoded).split(" "))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` (lower-cased and cleaned, as it was encoded); word ends become spaces."""
        text = "".join(self.decoder[index] for index in ids)
        data = bytearray(self.byte_decoder[char] for char in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")


def read_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The BPE merges of a gzipped vocabulary file (its first line is a version header)."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        text = lines.read()
    rows = text.split("\n")[1 : NUM_MERGES + 1]  # only the first NUM_MERGES merges are used
    return [tuple(row.split()) for row in rows]


@functools.lru_cache(maxsize=4)
def tokenizer_from_file(path: str) -> SimpleTokenizer:
    """The tokenizer of a vocabulary file, built once per file."""
    return SimpleTokenizer(read_merges(path))


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def token_rows(
    tokenizer: SimpleTokenizer, texts: list[str], context_length: int = CONTEXT_LENGTH, truncate: bool = False
) -> list[list[int]]:
    """Per text: `<|startoftext|>`, its tokens, `<|endoftext|>`, zero padded to `context_length`.

    A text that does not fit raises InputError unless `truncate` is set; then its first
    context_length−1 tokens are kept and the last position holds `<|endoftext|>`.
    """
    rows = []
    for text in texts:
        ids = [tokenizer.sot_id, *tokenizer.encode(text), tokenizer.eot_id]
        if len(ids) > context_length:
            if not truncate:
                raise InputError(
                    f"text is {len(ids)} tokens, longer than the context of {context_length}: "
                    f"{_shorten(text)!r} (shorten it or pass truncate=True)"
                )
            ids = ids[:context_length]
            ids[-1] = tokenizer.eot_id
        rows.append(ids + [0] * (context_length - len(ids)))
    return rows
