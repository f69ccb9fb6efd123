"""Helpers of tests/test_eval.py: a tiny arithmetic data set and the training entry points run in-process."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "tiny"

# 16 additions with distinct operands and distinct sums.
PAIRS = [
    (7, 5),
    (12, 9),
    (3, 21),
    (25, 4),
    (9, 13),
    (14, 30),
    (31, 2),
    (6, 17),
    (18, 6),
    (2, 44),
    (40, 3),
    (11, 19),
    (5, 28),
    (27, 10),
    (16, 23),
    (8, 35),
]


def arithmetic_rows() -> list[dict[str, str]]:
    """GSM8K-form rows with the shortest answers, `#### N` alone.

    Every answer token costs a (vocabulary 151,936) x (hidden 64) output layer forward and backward. With
    a rationale (`7 + 5 = <<7+5=12>>12\n#### 12`, ~4x the tokens) the tiny model needed 150 steps instead
    of 100 to memorise the rows, each ~3x as slow.
    """
    return [{"question": f"What is {a} plus {b}?", "answer": f"#### {a + b}"} for a, b in PAIRS]


def write_arithmetic_data(dest: Path) -> Path:
    """dest/{train,test}.jsonl holding the same 16 rows (a model overfit on train must ace test)."""
    dest.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in arithmetic_rows())
    for split in ("train", "test"):
        (dest / f"{split}.jsonl").write_text(text)
    return dest


def train(entry: str, config: str, out: Path, *overrides: str) -> Path:
    """Run the training entry point `entry` (train_baseline, train_online_v1, train_ablation) in-process on
    `config` (a path, or a name in configs/tiny); returns the run folder."""
    main = getattr(importlib.import_module("fsdistill.train.entry"), entry)
    main(["--config", str(TINY / config), "--output_dir", str(out), *overrides])
    return out
