"""Vocabularies, prompt templates and the text queries built from them (docs/method.md#text-queries)."""
import sys
import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from tqdm import tqdm

from .clip.model import CLIP
from .clip.tokenizer import tokenize
from .vocabulary import (  # noqa: F401  (re-exported: vocabularies are parsed torch-free)
    SYNONYM_SEPARATOR,
    TEMPLATES_FILE,
    Vocabulary,
    load_templates,
)

# Default progress of a text encoding: a bar on a terminal once it has run BAR_DELAY_S (so small
# vocabularies show nothing), otherwise (a log file, a pipe) a log line every LOG_EVERY_S.
BAR_DELAY_S = 2.0
LOG_EVERY_S = 30.0
Progress = Callable[[int, int], None]


class DefaultProgress:
    """Reports `(done, total)` prompts of one encoding: a tqdm bar on stderr when it is a terminal, else
    a line through mmengine's logger every LOG_EVERY_S seconds (eval.py's log, the demo's console)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.start = self.last_line = time.monotonic()
        terminal = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="encoding text prompts", unit="prompt", delay=BAR_DELAY_S,
                        leave=False, file=sys.stderr, disable=not terminal)
        self.log = not terminal
        self.done = 0  # a disabled bar does not count, but trackers of its updates (Gradio's) add them up

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(done - self.done)
        self.done = done
        now = time.monotonic()
        if self.log and done < total and now - self.last_line >= LOG_EVERY_S:
            self.last_line = now
            MMLogger.get_current_instance().info(
                f"encoding text prompts: {done}/{total} ({100 * done / total:.0f}%), {now - self.start:.0f} s so far")

    def close(self) -> None:
        self.bar.close()


@torch.no_grad()
def encode_queries(
    model: CLIP, queries: Sequence[str], templates: Sequence[str], batch_size: int = 256,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Q×D query features: per name, the normalised mean of its normalised prompt embeddings.

    Prompts are sorted by length before batching, so each batch stops at a similar end-of-text
    position (the text tower runs only up to the longest one; the result does not depend on it).
    After each batch `progress(done, total)` is called with the prompts encoded so far and their
    number (names × templates); without it, `DefaultProgress` reports.
    """
    device = model.positional_embedding.device
    prompts = [template.format(query) for query in queries for template in templates]
    tokens = tokenize(prompts)
    order = tokens.argmax(dim=-1).argsort()
    features = torch.empty(len(prompts), model.text_projection.shape[1], device=device)
    default = DefaultProgress(len(prompts)) if progress is None else None
    report = progress if progress is not None else default
    try:
        for start in range(0, len(prompts), batch_size):
            index = order[start : start + batch_size]
            features[index.to(device)] = model.encode_text(tokens[index].to(device)).float()
            report(min(start + batch_size, len(prompts)), len(prompts))
    finally:
        if default is not None:
            default.close()
    features = F.normalize(features, dim=-1).view(len(queries), len(templates), -1)
    return F.normalize(features.mean(dim=1), dim=-1)
