r"""The scoring rules a task chooses with `task.scoring`, and how each reads a gold answer.

Every rule has two halves: how the gold final answer is read (from `task.gold_field` when set, else from
the worked answer by the rule's own reading) and how a generation is judged against it.

* ``gsm8k``: the first ``#### N`` of a generation, else its last number; gold from the answer's last
  ``####`` line (tasks/gsm8k.py). Numbers compare by value (tasks/numbers.py).
* ``last_number``: the last number of a generation; gold from the answer's last number. By value.
* ``exact``: the whole generation against the gold as normalised strings (NFKC, case-folded, runs of
  whitespace made one space, ends stripped, a trailing ``.`` or ``!`` dropped); gold from the whole answer.
* ``choice``: a multiple-choice letter A-E. A generation's letter is the one after its last
  ``answer``/``answer is``/``answer:`` (any case, brackets allowed), else the last letter A-E standing
  alone (``(C)``, ``C.``; not inside a word). Gold: a letter A-E (a number is refused: 0- or 1-based
  would be a guess), or read from the answer the same way.
* ``regex``: `task.scoring_regex` with exactly one group; the group of its LAST match in the generation,
  normalised as ``exact``, against the gold normalised the same way; gold from the answer by the same
  regex.
* ``callable``: `task.scoring_callable`, ``"package.module:function"``, called as
  ``function(generation: str, gold: str)`` and returning a bool or ``(extracted: str | None, correct:
  bool)``; gold is the gold field or the whole answer, stripped. It is imported only from a config given
  on the command line (fsdistill.tasks.make_task), never from one recorded in a run or result file.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from fsdistill.config import TaskConfig
from fsdistill.errors import UserError
from fsdistill.tasks.base import Scored, Scoring
from fsdistill.tasks.gsm8k import GSM8KScoring
from fsdistill.tasks.numbers import last_number, number_gold, same_number


class ScoringError(UserError):
    """A scoring callable that returned something other than a verdict (shown without a traceback)."""


def normalize_text(text: str) -> str:
    """The string form `exact` and `regex` compare: NFKC, case-folded, whitespace collapsed, ends
    stripped, one trailing '.' or '!' dropped (a sentence end is not part of an answer)."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return text[:-1].rstrip() if text.endswith((".", "!")) else text


class LastNumberScoring:
    kind = "last_number"
    gold_description = "number"

    def gold_from_answer(self, answer: str) -> str:
        gold = last_number(answer)
        if gold is None:
            raise ValueError(f"no number in ...{answer[-80:]!r}")
        return gold

    def normalize_gold(self, gold: str) -> str:
        return number_gold(gold)

    def score(self, generation: str, gold: str) -> Scored:
        extracted = last_number(generation)
        return Scored(extracted, same_number(extracted, number_gold(gold)))


class ExactScoring:
    kind = "exact"
    gold_description = "text"

    def gold_from_answer(self, answer: str) -> str:
        return self.normalize_gold(answer)

    def normalize_gold(self, gold: str) -> str:
        gold = normalize_text(gold)
        if not gold:
            raise ValueError("the gold answer is empty")
        return gold

    def score(self, generation: str, gold: str) -> Scored:
        extracted = normalize_text(generation)
        return Scored(extracted or None, bool(extracted) and extracted == normalize_text(gold))


_LETTERS = "ABCDE"
_MARKED_CHOICE = re.compile(r"answer(?:\s+is)?\s*:?\s*\(?([A-E])\)?(?![A-Za-z])", re.IGNORECASE)
_LONE_CHOICE = re.compile(r"(?<![A-Za-z])\(?([A-E])\)?(?![A-Za-z])")


class ChoiceScoring:
    kind = "choice"
    gold_description = "choice letter A-E"

    @staticmethod
    def extract(text: str) -> str | None:
        marked = list(_MARKED_CHOICE.finditer(text))
        if marked:
            return marked[-1].group(1).upper()
        lone = list(_LONE_CHOICE.finditer(text))
        return lone[-1].group(1) if lone else None

    def gold_from_answer(self, answer: str) -> str:
        letter = self.extract(answer)
        if letter is None:
            raise ValueError(f"no choice letter A-E in ...{answer[-80:]!r}")
        return letter

    def normalize_gold(self, gold: str) -> str:
        letter = gold.strip().strip("().").strip().upper()
        if len(letter) != 1 or letter not in _LETTERS:
            raise ValueError(f"gold answer {gold!r} is not a choice letter A-E")
        return letter

    def score(self, generation: str, gold: str) -> Scored:
        extracted = self.extract(generation)
        return Scored(extracted, extracted is not None and extracted == self.normalize_gold(gold))


class RegexScoring:
    kind = "regex"

    def __init__(self, pattern: str):
        self.pattern = re.compile(pattern)  # checked at config load: compiles, exactly one group
        self.gold_description = f"match of task.scoring_regex {pattern!r}"

    def extract(self, text: str) -> str | None:
        matches = list(self.pattern.finditer(text))
        return normalize_text(matches[-1].group(1) or "") if matches else None

    def gold_from_answer(self, answer: str) -> str:
        gold = self.extract(answer)
        if not gold:
            raise ValueError(f"task.scoring_regex does not match ...{answer[-80:]!r}")
        return gold

    def normalize_gold(self, gold: str) -> str:
        return normalize_text(gold)

    def score(self, generation: str, gold: str) -> Scored:
        extracted = self.extract(generation)
        return Scored(extracted, extracted is not None and extracted == normalize_text(gold))


class CallableScoring:
    kind = "callable"
    gold_description = "answer"

    def __init__(self, function: Callable, name: str):
        self.function = function
        self.name = name

    def gold_from_answer(self, answer: str) -> str:
        return self.normalize_gold(answer)

    def normalize_gold(self, gold: str) -> str:
        if not gold.strip():
            raise ValueError("the gold answer is empty")
        return gold.strip()

    def score(self, generation: str, gold: str) -> Scored:
        verdict = self.function(generation, gold)
        if isinstance(verdict, bool):
            return Scored(None, verdict)
        if (
            isinstance(verdict, tuple)
            and len(verdict) == 2
            and isinstance(verdict[1], bool)
            and (verdict[0] is None or isinstance(verdict[0], str))
        ):
            return Scored(*verdict)
        raise ScoringError(
            f"'task.scoring_callable' {self.name} returned {verdict!r:.80}; it must return a bool or "
            "(extracted: str | None, correct: bool)"
        )


def make_scoring(settings: TaskConfig, function: Callable | None = None) -> Scoring:
    """The rule task.scoring names; `function` is the resolved task.scoring_callable (tasks.make_task)."""
    kind = settings.scoring
    if kind == "regex":
        return RegexScoring(settings.scoring_regex)
    if kind == "callable":
        if function is None:
            raise ValueError("task.scoring=callable needs the resolved function (see tasks.make_task)")
        return CallableScoring(function, settings.scoring_callable)
    return {
        "gsm8k": GSM8KScoring,
        "last_number": LastNumberScoring,
        "exact": ExactScoring,
        "choice": ChoiceScoring,
    }[kind]()
