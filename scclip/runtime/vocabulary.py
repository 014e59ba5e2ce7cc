"""Class names for the runtime: the syntax of `scclip segment` (`'cat,dog|puppy,sky'`, vocabulary files
with one class per line and synonyms after ', ', shipped benchmark vocabularies by name), torch-free."""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..benchmarks import vocabulary_file
from ..errors import VocabularyError

SYNONYM_MARK = "|"
SYNONYM_SEPARATOR = ","


def parse_classes(text: str) -> list[str]:
    """'cat,dog|puppy,sky' → vocabulary lines ['cat', 'dog, puppy', 'sky'] (as `scclip.api.parse_classes`)."""
    lines = []
    for item in text.split(","):
        names = [name.strip() for name in item.split(SYNONYM_MARK) if name.strip()]
        if names:
            lines.append(", ".join(names))
    return lines


@dataclass(frozen=True)
class Classes:
    """Classes, each with one or more names; every name is a text query, a class scores the max."""

    classes: tuple[tuple[str, ...], ...]

    @property
    def class_names(self) -> list[str]:
        return [names[0] for names in self.classes]

    @property
    def queries(self) -> list[str]:
        return [name for names in self.classes for name in names]

    @property
    def query_to_class(self) -> list[int]:
        return [index for index, names in enumerate(self.classes) for _ in names]


def read_classes(classes: Sequence[str] | str | None = None, vocab: str | os.PathLike | None = None) -> Classes:
    """The classes of a vocabulary file (or shipped benchmark name) followed by `classes`, checked.

    Raises:
        VocabularyError: no class, a blank name, or a class given twice (names compare case-insensitively).
    """
    lines: list[str] = []
    if vocab is not None:
        path = vocabulary_file(vocab)
        try:
            lines += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise VocabularyError(f"cannot read vocabulary file {path}: {error}") from None
    if isinstance(classes, str):
        lines += parse_classes(classes)
    elif classes is not None:
        lines += [str(line) for line in classes]
    if not any(line.strip() for line in lines):
        raise VocabularyError("no class names given: list some, e.g. 'cat,dog,sky', or give a vocabulary file")
    parsed: list[tuple[str, ...]] = []
    seen: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(lines, start=1):
        names = tuple(name.strip() for name in line.split(SYNONYM_SEPARATOR))
        if not all(names):
            raise VocabularyError(f"class {number} ({line.strip()!r}) has an empty name: separate synonyms with ', '")
        folded = tuple(name.casefold() for name in names)
        if folded in seen:
            raise VocabularyError(f"class {number} repeats class {seen[folded]} ({line.strip()!r}): remove one")
        seen[folded] = number
        parsed.append(names)
    return Classes(tuple(parsed))
