"""Vocabularies, prompt templates and the text queries built from them (docs/method.md#text-queries)."""
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from mmengine.logging import MMLogger
from tqdm import tqdm

from .clip.model import CLIP
from .clip.tokenizer import tokenize
from .errors import VocabularyError

TEMPLATES_FILE = Path(__file__).parent / "data" / "prompt_templates.txt"
SYNONYM_SEPARATOR = ","


@dataclass(frozen=True)
class Vocabulary:
    """Classes, each with one or more names; every name is a text query, a class scores the max.

    A name in two classes is allowed (the published COCO-Object vocabulary has one); the earlier
    class then wins ties.
    """

    classes: tuple[tuple[str, ...], ...]

    @classmethod
    def from_lines(cls, lines: Sequence[str], source: str = "vocabulary", unit: str = "line") -> "Vocabulary":
        """Parse vocabulary lines ("name, synonym, ..." per class); `source` names them in errors
        and `unit` says what one entry is called there ('line' in a file, 'class' on a command line).

        Names compare case-insensitively: 'Cat' and 'cat' are the same class (CLIP's tokenizer
        lower-cases text, so they are the same query too).
        """
        lines = list(lines)
        while lines and not lines[-1].strip():
            lines.pop()
        if not lines:
            raise VocabularyError(f"{source} is empty: give one class per line, e.g. 'sky' or 'person, man'")
        classes = []
        seen_lines: dict[tuple[str, ...], int] = {}
        first_class_of: dict[str, int] = {}
        for number, line in enumerate(lines, start=1):
            names = tuple(name.strip() for name in line.split(SYNONYM_SEPARATOR))
            if not line.strip():
                raise VocabularyError(f"{source}, {unit} {number} is blank: remove it or put a class name there")
            if any(not name for name in names):
                raise VocabularyError(
                    f"{source}, {unit} {number} ({line.strip()!r}) has an empty name: separate synonyms with ', '"
                )
            folded = tuple(name.casefold() for name in names)
            if folded in seen_lines:
                raise VocabularyError(
                    f"{source}, {unit} {number} repeats {unit} {seen_lines[folded]} ({line.strip()!r}): remove one"
                )
            seen_lines[folded] = number
            for name in folded:
                if name in first_class_of and first_class_of[name] != number:
                    MMLogger.get_current_instance().warning(
                        f"{source}: {name!r} is a name of {unit} {first_class_of[name]} and of {unit} {number}; "
                        f"ties go to {unit} {first_class_of[name]}"
                    )
                first_class_of.setdefault(name, number)
            classes.append(names)
        return cls(tuple(classes))

    @classmethod
    def from_file(cls, path: str | Path) -> "Vocabulary":
        """Read a vocabulary file (UTF-8, one class per line)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise VocabularyError(f"vocabulary file not found: {path} (one class per line, synonyms after ', ')")
        except (OSError, UnicodeDecodeError) as error:
            raise VocabularyError(f"cannot read vocabulary file {path}: {error}")
        return cls.from_lines(text.splitlines(), source=f"vocabulary file {path}")

    @property
    def class_names(self) -> list[str]:
        """The first name of each class, used for display."""
        return [names[0] for names in self.classes]

    @property
    def queries(self) -> list[str]:
        """Every name of every class, in order."""
        return [name for names in self.classes for name in names]

    @property
    def query_to_class(self) -> list[int]:
        """The class index of each query."""
        return [index for index, names in enumerate(self.classes) for _ in names]


@lru_cache(maxsize=None)
def load_templates(path: str | Path = TEMPLATES_FILE) -> tuple[str, ...]:
    """The prompt templates, one per line, `{}` standing for the class name."""
    return tuple(line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip())


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
