r"""The GSM8K task: rows `{"question", "answer": "... #### N"}`, and the one scoring rule of its answers.

The rule
--------
* A prediction's answer is the number right after its FIRST ``####`` marker (``#### 72``, ``####72``,
  ``#### $1,080.`` and ``#### -5 apples`` all count; a model that goes on to write a second ``####``
  or a new question after its answer is judged on the first). Without such a marker it is the LAST
  number anywhere in the text. No number at all gives ``None``, which is never correct.
* A number is an optional sign, an optional ``$``, then digits with optional well-formed thousands
  separators (``1,234,567``) and an optional decimal part (``12.50``, ``.5``). Whatever follows the
  digits is ignored: a sentence-ending period, ``%``, units, and letters (so ``5th`` reads as 5 and
  ``50%`` as 50).
* A ``-`` (or the Unicode minus ``−``) is a sign only when no letter, digit or closing bracket stands
  right before it. So ``-3``, ``= -3`` and ``<<5-8=-3>>`` end in -3, but ``5-3`` is read as the two
  numbers 5 and 3 (a range or a subtraction, whose last number is 3), never as 5 and -3.
* Calculator annotations need no special case: in ``<<48+24=72>>72 clips`` the last number is 72,
  and an annotation's last number is its result anyway.
* Numbers are compared by value with :class:`decimal.Decimal` (exact, no float rounding), through a
  canonical string: integers without a decimal point, other decimals without trailing zeros, so
  ``12``, ``12.0`` and ``12.00`` are the same answer, as are ``0.5`` and ``.5``.

How it differs from the original work
-------------------------------------
The original extraction was ``####\s*([\d,]+)``, else the last integer, then an exact string match
against the gold. It could not read a negative answer (``#### -5`` gave 5), cut decimals
(``12.5`` became 12 or 5) and compared strings, so ``12.0`` was wrong against gold ``12``. Fractions
such as ``3/4`` are still not parsed as one number here (its last number is 4); GSM8K finals are all
integers.
"""

from __future__ import annotations

import re
from decimal import Decimal

from fsdistill.config import TaskConfig
from fsdistill.tasks.base import Example, Scored, TaskGeneration
from fsdistill.tasks.rows import DataError, load_split

_MINUS_SIGNS = ("-", "\u2212")
_UNSIGNED = r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+"
# The sign's lookbehind keeps "5-3" as 5 and 3 (see the module docstring).
_NUMBER = rf"(?:(?<![\w)\]])(?P<sign>[-+\u2212]))?\$?(?P<digits>{_UNSIGNED})"

_NUMBER_RE = re.compile(_NUMBER)
_MARKED_RE = re.compile(rf"####\s*{_NUMBER}")
_WHOLE_NUMBER_RE = re.compile(rf"{_NUMBER}\.?")


def _to_decimal(match: re.Match[str]) -> Decimal:
    """The exact value of a matched number, so no float rounding enters a comparison."""
    value = Decimal(match["digits"].replace(",", ""))
    return -value if match["sign"] in _MINUS_SIGNS else value


def _canonical(value: Decimal) -> str:
    """One string per value, so equal numbers print the same: ``12.50`` -> ``12.5``, ``12.0`` -> ``12``."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if value == 0 else text


def normalize_number(text: str) -> str | None:
    """Canonical form of a number written alone (``" $1,080. "`` -> ``"1080"``), or None if not one.

    Strict on purpose: the whole text must be one number, so gold answers with junk are caught
    rather than silently read; finding a number inside prose is :func:`extract_answer`'s job.
    """
    match = _WHOLE_NUMBER_RE.fullmatch(text.strip())
    return None if match is None else _canonical(_to_decimal(match))


def extract_answer(text: str) -> str | None:
    """The normalised answer of a generation: first ``#### N``, else the last number, else None."""
    match = _MARKED_RE.search(text)
    if match is None:
        match = next(reversed(list(_NUMBER_RE.finditer(text))), None)
    return None if match is None else _canonical(_to_decimal(match))


def gold_answer(answer_field: str) -> str:
    """The normalised final answer of a GSM8K answer field: the number on its last ``####`` line.

    Raises rather than returning None: a gold answer that cannot be read is a data error, and
    scoring against it would silently count every prediction wrong.
    """
    marker = answer_field.rfind("####")
    if marker < 0:
        raise ValueError(f"GSM8K answer has no '#### N' line: ...{answer_field[-80:]!r}")
    final_line = answer_field[marker + 4 :].strip().split("\n", 1)[0]
    gold = normalize_number(final_line)
    if gold is None:
        raise ValueError(f"GSM8K answer's final line '#### {final_line}' is not a number")
    return gold


def _gold_value(gold: str) -> str:
    """The normalised gold, raising on a non-number (a caller's bug, not a wrong prediction)."""
    value = normalize_number(gold)
    if value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    return value


def _same_number(extracted: str | None, gold: str) -> bool:
    """Compare by value, not by string; a missing answer is never correct."""
    return extracted is not None and Decimal(extracted) == Decimal(gold)


# --------------------------------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------------------------------


def parse_row(obj: object, row: int, where: str) -> Example:
    """A GSM8K row: string fields question (non-empty) and answer, the answer ending in '#### N'."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{where}: a row must be a JSON object with 'question' and 'answer', got {type(obj).__name__}"
        )
    for key in ("question", "answer"):
        if key not in obj:
            raise DataError(f"{where}: missing field '{key}'")
        if not isinstance(obj[key], str):
            raise DataError(f"{where}: field '{key}' must be a string, got {type(obj[key]).__name__}")
    if not obj["question"].strip():
        raise DataError(f"{where}: field 'question' is empty")
    try:
        gold = gold_answer(obj["answer"])
    except ValueError as e:
        raise DataError(f"{where}: field 'answer' has no valid '#### N' final answer ({e})") from None
    return Example(row=row, question=obj["question"], answer=obj["answer"], gold=gold)


class GSM8K:
    """Grade-school math word problems (openai/gsm8k, config main): the user turn is
    task.question_template with the question; the student trains on the whole answer field (rationale
    with <<calc>> annotations, then '#### N'); a generation is scored by extract_answer."""

    name = "gsm8k"

    def __init__(self, settings: TaskConfig):
        self.settings = settings

    def load(self, source: str, split: str, hub_config: str) -> list[Example]:
        return load_split(source, split, hub_config, parse_row)

    def user_turn(self, example: Example) -> str:
        return self.settings.question_template.format(question=example.question)

    def score(self, generation: str, gold: str) -> Scored:
        extracted = extract_answer(generation)
        return Scored(extracted, _same_number(extracted, _gold_value(gold)))

    def generation(self) -> TaskGeneration:
        return TaskGeneration(self.settings.max_new_tokens, tuple(self.settings.stop_strings))
