r"""Numbers in free text: the grammar shared by the numeric scoring rules (gsm8k, last_number).

* A number is an optional sign, an optional ``$``, then digits with optional well-formed thousands
  separators (``1,234,567``) and an optional decimal part (``12.50``, ``.5``). Whatever follows the
  digits is ignored: a sentence-ending period, ``%``, units, and letters (so ``5th`` reads as 5 and
  ``50%`` as 50).
* A ``-`` (or the Unicode minus ``−``) is a sign only when no letter, digit or closing bracket stands
  right before it. So ``-3``, ``= -3`` and ``<<5-8=-3>>`` end in -3, but ``5-3`` is read as the two
  numbers 5 and 3 (a range or a subtraction, whose last number is 3), never as 5 and -3.
* Numbers are compared by value with :class:`decimal.Decimal` (exact, no float rounding), through a
  canonical string: integers without a decimal point, other decimals without trailing zeros, so
  ``12``, ``12.0`` and ``12.00`` are the same answer, as are ``0.5`` and ``.5``.
* Fractions such as ``3/4`` are not parsed as one number (the last number of ``3/4`` is 4).
"""

from __future__ import annotations

import re
from decimal import Decimal

_MINUS_SIGNS = ("-", "\u2212")
_UNSIGNED = r"(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+"
# The sign's lookbehind keeps "5-3" as 5 and 3 (see the module docstring).
NUMBER = rf"(?:(?<![\w)\]])(?P<sign>[-+\u2212]))?\$?(?P<digits>{_UNSIGNED})"

NUMBER_RE = re.compile(NUMBER)
_WHOLE_NUMBER_RE = re.compile(rf"{NUMBER}\.?")


def to_decimal(match: re.Match[str]) -> Decimal:
    """The exact value of a matched number, so no float rounding enters a comparison."""
    value = Decimal(match["digits"].replace(",", ""))
    return -value if match["sign"] in _MINUS_SIGNS else value


def canonical(value: Decimal) -> str:
    """One string per value, so equal numbers print the same: ``12.50`` -> ``12.5``, ``12.0`` -> ``12``."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if value == 0 else text


def normalize_number(text: str) -> str | None:
    """Canonical form of a number written alone (``" $1,080. "`` -> ``"1080"``), or None if not one.

    Strict on purpose: the whole text must be one number, so gold answers with junk are caught
    rather than silently read; finding a number inside prose is :func:`last_number`'s job.
    """
    match = _WHOLE_NUMBER_RE.fullmatch(text.strip())
    return None if match is None else canonical(to_decimal(match))


def last_number(text: str) -> str | None:
    """The canonical form of the last number anywhere in `text`, or None when it has none."""
    match = next(reversed(list(NUMBER_RE.finditer(text))), None)
    return None if match is None else canonical(to_decimal(match))


def number_gold(gold: str) -> str:
    """A gold answer as a canonical number, raising ValueError on anything else (a data error: scoring
    against an unreadable gold would silently count every prediction wrong)."""
    value = normalize_number(gold)
    if value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    return value


def same_number(extracted: str | None, gold: str) -> bool:
    """Compare by value, not by string; a missing answer is never correct."""
    return extracted is not None and Decimal(extracted) == Decimal(gold)
