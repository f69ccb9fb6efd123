r"""GSM8K's scoring rule (`task.scoring: gsm8k`): answers end in ``#### N``. Nothing else in the package
knows ``####``; the GSM8K task itself is a config (configs/tasks/gsm8k.yaml: fields question/answer,
user turn ``Question: {question}``, this rule), and the schema's defaults.

The rule
--------
* A prediction's answer is the number right after its FIRST ``####`` marker (``#### 72``, ``####72``,
  ``#### $1,080.`` and ``#### -5 apples`` all count; a model that goes on to write a second ``####``
  or a new question after its answer is judged on the first). Without such a marker it is the LAST
  number anywhere in the text. No number at all gives ``None``, which is never correct.
* Numbers follow tasks/numbers.py (signs, ``$``, thousands separators, decimals; compared by value).
  Calculator annotations need no special case: in ``<<48+24=72>>72 clips`` the last number is 72,
  and an annotation's last number is its result anyway.
* The gold final answer of a row is the number on the answer's LAST ``####`` line.

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

from fsdistill.tasks.base import Scored
from fsdistill.tasks.numbers import (
    NUMBER,
    canonical,
    last_number,
    normalize_number,
    number_gold,
    same_number,
    to_decimal,
)

_MARKED_RE = re.compile(rf"####\s*{NUMBER}")

__all__ = ["GSM8KScoring", "extract_answer", "gold_answer", "normalize_number"]


def extract_answer(text: str) -> str | None:
    """The normalised answer of a generation: first ``#### N``, else the last number, else None."""
    match = _MARKED_RE.search(text)
    if match is None:
        return last_number(text)
    return canonical(to_decimal(match))


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


class GSM8KScoring:
    """`task.scoring: gsm8k`: the first ``#### N`` of a generation (else its last number) against the
    number on the gold answer's last ``####`` line, compared by value."""

    kind = "gsm8k"
    gold_description = "'#### N' final answer"

    def gold_from_answer(self, answer: str) -> str:
        return gold_answer(answer)

    def normalize_gold(self, gold: str) -> str:
        return number_gold(gold)

    def score(self, generation: str, gold: str) -> Scored:
        extracted = extract_answer(generation)
        return Scored(extracted, same_number(extracted, number_gold(gold)))
