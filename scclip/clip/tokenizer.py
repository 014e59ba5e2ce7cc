"""CLIP's byte-level BPE tokenizer for the torch path: `tokenize(texts)` → a LongTensor of token ids.

The tokenizer itself lives in `scclip.bpe` (torch-free, shared with the ONNX runtime); this
module reads the vocabulary shipped next to it and wraps the ids in a tensor.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from scclip.bpe import (  # noqa: F401  (re-exported: the tokenizer's public names)
    CONTEXT_LENGTH,
    END_OF_TEXT,
    EOT_ID,
    NUM_MERGES,
    SOT_ID,
    START_OF_TEXT,
    VOCAB_FILE,
    SimpleTokenizer,
    bytes_to_unicode,
    clean_text,
    read_merges,
    token_rows,
)

VOCAB_PATH = Path(__file__).parent / VOCAB_FILE


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> SimpleTokenizer:
    """The shared tokenizer; the vocabulary file is read on first use, not at import."""
    return SimpleTokenizer(read_merges(VOCAB_PATH))


def tokenize(
    texts: str | list[str], context_length: int = CONTEXT_LENGTH, truncate: bool = False
) -> torch.Tensor:
    """Token ids of `texts` as a LongTensor N×context_length, zero padded (see `scclip.bpe.token_rows`)."""
    if isinstance(texts, str):
        texts = [texts]
    return torch.tensor(token_rows(get_tokenizer(), texts, context_length, truncate), dtype=torch.long).view(
        len(texts), context_length
    )
