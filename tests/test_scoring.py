"""GSM8K answer extraction and scoring: every real gold answer, then the tricky generations."""

from __future__ import annotations

import json

import pytest

from fsdistill.config import TaskConfig
from fsdistill.tasks import ConfiguredTask, Scored
from fsdistill.tasks.gsm8k import extract_answer, gold_answer, normalize_number
from fsdistill.tasks.scoring import make_scoring

TASK = ConfiguredTask(TaskConfig(), make_scoring(TaskConfig()))  # GSM8K: the schema's default task


def is_correct(generated: str, gold: str) -> bool:
    """The GSM8K task's verdict on a generation against a normalised gold number."""
    return TASK.score(generated, gold).correct


GSM8K_ROWS = 7473 + 1319


def _independent_gold(answer_field: str) -> str:
    """A parse that shares no code with the module: GSM8K finals are plain (possibly comma'd) integers."""
    return str(int(answer_field.split("####")[-1].strip().replace(",", "")))


def test_all_gsm8k_gold_answers_parse_and_score_correct(gsm8k_dir):
    agreed = with_commas = negative = 0
    for split in ("train", "test"):
        for line in (gsm8k_dir / f"{split}.jsonl").read_text().splitlines():
            answer = json.loads(line)["answer"]
            expected = _independent_gold(answer)
            assert gold_answer(answer) == expected, answer[-60:]
            assert extract_answer(answer) == expected, answer[-60:]
            assert is_correct(answer, expected), answer[-60:]
            agreed += 1
            with_commas += "," in answer.split("####")[-1]
            negative += expected.startswith("-")
    assert agreed == GSM8K_ROWS
    # The awkward finals were really exercised, not just the easy ones.
    assert (with_commas, negative) == (79 + 14, 3 + 2)


@pytest.mark.parametrize(
    ("generated", "expected"),
    [
        ("The answer is 18 dollars.", "18"),
        ("She has 3 apples and 4 pears, so 7 fruits in all", "7"),
        ("Total: 1080 dollars.\n#### $1,080.", "1080"),
        ("So it costs $1,000.50 in total.", "1000.5"),
        ("The temperature drops to -3 degrees.", "-3"),
        ("The temperature drops to \u22123 degrees.", "-3"),
        ("#### -5", "-5"),
        ("It takes 5-3 days", "3"),  # a range or subtraction, not 5 and -3
        ("She paid 12.50 for it", "12.5"),
        ("That is 3.5.", "3.5"),
        ("It grew by 50%", "50"),
        ("It grew by 12.5% this year", "12.5"),
        ("The population is 1,234,567 people", "1234567"),
        ("Then 1,2345 more", "2345"),  # malformed grouping: not one number
        ("He gets 48/2 = <<48/2=24>>24 clips.", "24"),
        ("Altogether 48+24 = <<48+24=72>>72 clips", "72"),
        ("Altogether she sold <<48+24=72>>", "72"),
        ("She owes <<5-8=-3>>-3 dollars", "-3"),
        ("She finished 5th", "5"),
        ("She ran 12 miles on the 5th day", "5"),  # last number, ordinals included
        ("#### 72\n\nQuestion: Tom has 5 apples and eats 2.", "72"),
        ("####72", "72"),
        ("#### 72 clips. Next he buys 9.", "72"),
        ("#### 72\n#### 80", "72"),
        ("#### 3.5.", "3.5"),
        ("#### The answer is 14", "14"),  # no number right after ####: falls back to last number
        ("Half is .5 of it", "0.5"),
        ("I cannot solve this.", None),
        ("", None),
    ],
)
def test_extract_answer(generated, expected):
    assert extract_answer(generated) == expected


@pytest.mark.parametrize(
    ("generated", "gold", "correct"),
    [
        ("So she pays 12.50 in all", "12.5", True),
        ("#### 12.0", "12", True),
        ("#### 12", "12.00", True),
        ("#### $1,080.", "1080", True),
        ("#### 1080", "1,080", True),
        ("#### -5", "-5", True),
        ("#### 5", "-5", False),  # the original [\d,]+ rule read "#### -5" as 5
        ("The answer is 12.5", "12", False),
        ("No idea.", "0", False),
        ("#### 72\n#### 80", "80", False),
    ],
)
def test_is_correct_compares_numbers(generated, gold, correct):
    assert is_correct(generated, gold) is correct


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12", "12"),
        ("12.0", "12"),
        ("12.00", "12"),
        ("0.5", "0.5"),
        (".5", "0.5"),
        ("1,080", "1080"),
        (" $1,080. ", "1080"),
        ("+7", "7"),
        ("-5", "-5"),
        ("\u22125", "-5"),
        ("-0.0", "0"),
        ("007", "7"),
        ("100", "100"),
        ("1.50", "1.5"),
        ("123456789012345678901234567890123", "123456789012345678901234567890123"),
        ("1,23", None),
        ("1e5", None),
        ("NaN", None),
        ("Infinity", None),
        ("12 apples", None),
        ("abc", None),
        ("", None),
        ("-", None),
        ("$", None),
    ],
)
def test_normalize_number(text, expected):
    assert normalize_number(text) == expected


def test_gold_answer_takes_the_last_marker_line():
    assert gold_answer("First #### 3 was a draft\nThen 4+5=<<4+5=9>>9\n#### 9") == "9"
    assert gold_answer("It costs $1,080.\n#### 1,080") == "1080"


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("Natalia sold 72 clips.", "no '#### N' line"),
        ("Natalia sold clips.\n#### seventy-two", "'#### seventy-two' is not a number"),
        ("Natalia sold 72 clips.\n####", "'#### ' is not a number"),
        ("#### 72 clips", "'#### 72 clips' is not a number"),
    ],
)
def test_gold_answer_rejects_malformed_gold(field, message):
    with pytest.raises(ValueError, match=message):
        gold_answer(field)


def test_non_numeric_gold_raises_instead_of_scoring_wrong():
    with pytest.raises(ValueError, match="'seventy' is not a number"):
        is_correct("#### 70", "seventy")


def test_the_task_reports_what_it_read():
    assert TASK.score("so #### 1,080.", "1080") == Scored(extracted="1080", correct=True)
    assert TASK.score("It is 12.0", "12") == Scored(extracted="12", correct=True)
    assert TASK.score("nothing here", "4") == Scored(extracted=None, correct=False)
