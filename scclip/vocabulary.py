"""Class names as people give them, parsed and checked once for every entry point, torch-free.

The syntax of `scclip segment`, `Segmenter`, the web page and the ONNX runtime: a string
'cat,dog|puppy,sky' ('|' joins synonyms of one class), or vocabulary lines 'name, synonym, ...'
(one class per line in a file; a shipped benchmark's vocabulary by name). Everything is refused
before a model loads, in one line: no class, a malformed or repeated class, a name given to two
classes, a name too long for CLIP's text context. Imports only the standard library, ftfy and
regex (through `scclip.bpe`), so `scclip.runtime` shares it; `scclip.api` and `scclip.text`
re-export these names.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .benchmarks import vocabulary_file
from .bpe import CONTEXT_LENGTH, VOCAB_FILE, SimpleTokenizer, tokenizer_from_file
from .errors import VocabularyError
from .fileio import read_user_text

PACKAGE = Path(__file__).parent
TEMPLATES_FILE = PACKAGE / "data" / "prompt_templates.txt"
SAMPLE_IMAGE = PACKAGE / "assets" / "astronaut.jpg"
SAMPLE_CLASSES = ("wall, background", "astronaut, woman", "space suit", "helmet", "flag", "space shuttle, rocket")
SYNONYM_SEPARATOR = ","  # in vocabulary lines: 'dog, puppy'
SYNONYM_MARK = "|"  # in a class string: 'dog|puppy'
# Characters people use to separate classes; a single class holding one looks like a mistake.
OTHER_SEPARATORS = (";", "/", "|", "\t", "\n")
# Tokens a prompt template may add around a name before the exact count is worth taking.
_PROMPT_LENGTH_MARGIN = 8


def _warn(message: str) -> None:
    """A warning through mmengine's logger where it is installed (eval.py's log), else Python's logging."""
    try:
        from mmengine.logging import MMLogger
    except ImportError:  # the torch-free runtime's environment
        logging.getLogger("scclip").warning(message)
        return
    MMLogger.get_current_instance().warning(message)


@dataclass(frozen=True)
class Vocabulary:
    """Classes, each with one or more names; every name is a text query, a class scores the max.

    A name in two classes is allowed (the published COCO-Object vocabulary has one); the earlier
    class then wins ties.
    """

    classes: tuple[tuple[str, ...], ...]

    @classmethod
    def from_lines(cls, lines: Sequence[str], source: str = "vocabulary", unit: str = "line") -> Vocabulary:
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
                    _warn(f"{source}: {name!r} is a name of {unit} {first_class_of[name]} and of {unit} {number}; "
                          f"ties go to {unit} {first_class_of[name]}")
                first_class_of.setdefault(name, number)
            classes.append(names)
        return cls(tuple(classes))

    @classmethod
    def from_file(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary file (UTF-8, a byte-order mark allowed; one class per line)."""
        path = Path(path)
        try:
            text = read_user_text(path)
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
    return tuple(line for line in read_user_text(path).splitlines() if line.strip())


def shipped_tokenizer() -> SimpleTokenizer:
    """CLIP's tokenizer from the vocabulary shipped in scclip/clip/ (read once, on first use)."""
    return tokenizer_from_file(str(PACKAGE / "clip" / VOCAB_FILE))


def parse_classes(text: str) -> list[str]:
    """'cat,dog|puppy,sky' → vocabulary lines ['cat', 'dog, puppy', 'sky'] ('|' joins synonyms)."""
    lines = []
    for item in text.split(","):
        names = [name.strip() for name in item.split(SYNONYM_MARK) if name.strip()]
        if names:
            lines.append(", ".join(names))
    return lines


def check_class_string(text: str) -> None:
    """Refuse a --classes string that gives one class but looks like a list with another separator.

    One class takes every pixel, so 'cat;dog' or 'cat|dog' (synonyms of one class) is surely a mistake.
    """
    lines = parse_classes(text)
    if len(lines) != 1:
        return
    used = [mark for mark in OTHER_SEPARATORS if mark in text]
    if used:
        shown = "'|' (it joins synonyms of one class)" if used == ["|"] else repr(used[0])
        example = ",".join(part.strip() for part in text.replace("|", ",").replace(used[0], ",").split(",") if part.strip())
        raise VocabularyError(
            f"classes {text!r} give a single class (one class takes every pixel): separate classes with ',' "
            f"not {shown}, e.g. {example!r}"
        )


EXAMPLE_CLASSES = "--classes 'cat,sofa,wall'"


def check_vocabulary_arguments(classes: str | None, vocab: str | None, subject: object) -> None:
    """A command line's `--classes` and `--vocab`, before anything loads: one line when they name no class.

    Args:
        classes, vocab: the two options as given (None: not given).
        subject: what the classes are for (an image, a folder), named in the message.
    """
    if classes is None and vocab is None:
        raise VocabularyError(f"no classes given for {subject}: name them, e.g. {EXAMPLE_CLASSES}, "
                              "or give --vocab NAME|FILE")
    if vocab is None and not parse_classes(classes):
        raise VocabularyError(f"--classes {classes!r} holds no class name: give names, e.g. {EXAMPLE_CLASSES}")


def vocabulary_lines(
    classes: Sequence[str] | str | None = None,
    vocab: str | os.PathLike | None = None,
    templates: Sequence[str] | None = None,
    context_length: int = CONTEXT_LENGTH,
) -> list[str]:
    """Vocabulary lines from a vocabulary file and/or classes (file lines first), checked.

    Args:
        classes: class names, each 'name' or 'name, synonym, ...'; or one string 'cat,dog,sky'
            (see `parse_classes`).
        vocab: a vocabulary file in the benchmarks' format (one class per line, synonyms after ', '),
            or a benchmark's name ('voc21', 'ade20k', ...: its shipped vocabulary).
        templates, context_length: the prompts the names go into and the text context they must
            fit (default: the package's templates and CLIP's 77 tokens; an exported model's own).
    Raises:
        VocabularyError: no class at all, a malformed or repeated class (names compare
            case-insensitively), a given name that is also a name of another class, a name too
            long for CLIP's text context, or a class string that yields one class with another
            separator.
    """
    lines: list[str] = []
    if vocab is not None:
        lines += [", ".join(names) for names in Vocabulary.from_file(vocabulary_file(vocab)).classes]
    from_file = len(lines)
    if isinstance(classes, str):
        check_class_string(classes)
        lines += parse_classes(classes)
    elif classes is not None:
        lines += [str(line) for line in classes]
    if not any(line.strip() for line in lines):
        raise VocabularyError("no class names given: list some, e.g. 'cat,dog,sky', or give a vocabulary file")
    check_names_given_once(lines, from_file, vocab)
    vocabulary = Vocabulary.from_lines(lines, source="the classes", unit="class")
    check_prompt_lengths(vocabulary.queries, context_length, templates)
    return lines


def check_names_given_once(lines: Sequence[str], from_file: int, vocab: str | os.PathLike | None = None) -> None:
    """Refuse a name of a given class (every line after the first `from_file`, which come from the
    vocabulary file `vocab`) that is also a name of another class (names compare case-insensitively).

    Two classes sharing a name split its pixels by ties, which nobody typing classes means; a
    vocabulary file alone may do it (the published COCO-Object one does; it is only warned about).
    Malformed and wholly repeated lines are left to `Vocabulary.from_lines`, which names them.
    """
    classes = [tuple(name.strip() for name in line.split(SYNONYM_SEPARATOR)) for line in lines]
    owner: dict[str, int] = {}
    typed: set[tuple[str, ...]] = set()
    for index, names in enumerate(classes):
        folded_names = tuple(name.casefold() for name in names)
        if not all(names) or folded_names in typed:
            continue
        if index >= from_file:
            typed.add(folded_names)
        for name in names:
            folded = name.casefold()
            first = owner.setdefault(folded, index)
            if first == index or index < from_file:
                continue
            if first < from_file:
                raise VocabularyError(
                    f"class name {name!r} is already in vocabulary file {vocab} (line {first + 1}: "
                    f"{', '.join(classes[first])!r}): give each name once, e.g. drop it from the classes"
                )
            raise VocabularyError(
                f"class name {name!r} is given in two classes ({', '.join(classes[first])!r} and "
                f"{', '.join(names)!r}): give each name once"
            )


def check_prompt_lengths(
    names: Sequence[str], context_length: int = CONTEXT_LENGTH, templates: Sequence[str] | None = None
) -> None:
    """Refuse a class name whose longest prompt does not fit CLIP's text context, before any model
    loads (the tokenizer is pure Python); otherwise it would be found only while encoding the text.
    """
    tokenizer = shipped_tokenizer()
    templates = load_templates() if templates is None else tuple(templates)
    # <|startoftext|> and <|endoftext|>, plus the template's own words ('x' stands for the name).
    added = 2 + max(len(tokenizer.encode(template.replace("{}", "x"))) - 1 for template in templates)
    for name in names:
        if len(tokenizer.encode(name)) + added + _PROMPT_LENGTH_MARGIN <= context_length:
            continue
        length, template = max((len(tokenizer.encode(template.format(name))) + 2, template) for template in templates)
        if length > context_length:
            shown = name if len(name) <= 60 else name[:57] + "..."
            raise VocabularyError(
                f"class name {shown!r} is {length - context_length} tokens too long: in the prompt {template!r} "
                f"it takes {length} tokens, CLIP reads {context_length}: shorten it by at least "
                f"{length - context_length} tokens (a short word is one token)"
            )
