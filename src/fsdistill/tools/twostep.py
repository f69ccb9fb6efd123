"""The twostep task's data: every problem "What is (a + b) * c?" with a, b in 1..20 and c in {2, 5, 10}
(1,200 distinct problems), split once, by a seeded shuffle, into disjoint train / validation / test files.

    python scripts/make_twostep_data.py                 # writes data/twostep/{train,validation,test}.jsonl
    python scripts/make_twostep_data.py --out DIR --seed 0

Rows: {"question": "What is (7 + 18) * 10?", "answer": "7 + 18 = 25, 25 * 10 = 250. Answer: 250",
"final": "250", "a": 7, "b": 18, "c": 10}. The format instruction is the task's user-turn template
(configs/tasks/twostep.yaml), not part of the row. Pure Python and deterministic: the same seed writes
byte-identical files on any machine (random.Random's shuffle has been stable since Python 3.2), so the
files are not committed; result files record their sha256.

Why this task: SmolLM2-135M-Instruct with the chat template and greedy decoding solves it 0-shot almost
never (it answers "The answer is X." with a guess, or writes the sum and stops), and with two worked
examples in its prompt about half the time, while 100% of its 0-shot generations end by themselves within
40 new tokens: an in-context gain in carrying out a two-step procedure, not an artefact of truncation.
c in {2, 5, 10} keeps the multiplication within what the model can do at all (x3, x4, x6..x9 it mostly
cannot, with or without exemplars).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.files import write_text_atomic

OPERANDS = range(1, 21)
MULTIPLIERS = (2, 5, 10)
SPLITS = {"train": 500, "validation": 200, "test": 500}  # 1,200 = 20 x 20 x 3 problems in all
DEFAULT_OUT = "data/twostep"


def problem(a: int, b: int, c: int) -> dict:
    """One row: the question, its worked answer (the two steps, then 'Answer: N') and the gold number."""
    s, f = a + b, (a + b) * c
    return {
        "question": f"What is ({a} + {b}) * {c}?",
        "answer": f"{a} + {b} = {s}, {s} * {c} = {f}. Answer: {f}",
        "final": str(f),
        "a": a,
        "b": b,
        "c": c,
    }


def make_splits(seed: int = 0) -> dict[str, list[dict]]:
    """Every problem once, shuffled with random.Random(seed), cut into SPLITS' sizes in their order."""
    problems = [problem(a, b, c) for a in OPERANDS for b in OPERANDS for c in MULTIPLIERS]
    random.Random(f"twostep:{seed}").shuffle(problems)
    out, start = {}, 0
    for split, size in SPLITS.items():
        out[split] = problems[start : start + size]
        start += size
    assert start == len(problems)
    return out


def write_splits(out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write {split}.jsonl for each split (atomically); returns the paths."""
    out_dir = Path(out_dir)
    paths = {}
    for split, rows in make_splits(seed).items():
        paths[split] = out_dir / f"{split}.jsonl"
        write_text_atomic(paths[split], "".join(json.dumps(r) + "\n" for r in rows))
    return paths


@exit_on_user_error
def main(argv=None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder to write (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: exists and is not a folder")
    paths = write_splits(args.out, args.seed)
    print("wrote " + ", ".join(f"{p} ({SPLITS[s]} rows)" for s, p in paths.items()))
    return paths
