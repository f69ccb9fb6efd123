r"""Answer extraction and scoring for GSM8K: the one rule every evaluation uses.

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
from dataclasses import dataclass
from decimal import Decimal

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


def is_correct(prediction_text: str, gold: str) -> bool:
    """Whether the prediction's extracted answer equals the gold number by value (``12.0`` == ``12``)."""
    return _same_number(extract_answer(prediction_text), _gold_value(gold))


@dataclass(frozen=True)
class Score:
    """One scored prediction, kept whole so reports can show what was read, not just right/wrong."""

    extracted: str | None
    gold: str
    correct: bool


def score(prediction_text: str, gold: str) -> Score:
    """Score a prediction against a gold number or a whole GSM8K answer field (one with ``####``)."""
    gold_norm = gold_answer(gold) if "####" in gold else _gold_value(gold)
    extracted = extract_answer(prediction_text)
    return Score(extracted=extracted, gold=gold_norm, correct=_same_number(extracted, gold_norm))
