"""The twostep task's data: every problem "What is (a + b) * c?" with a, b in 1..20 and c in {2, 5, 10}
(1,200 distinct problems), split once, by a seeded shuffle, into disjoint train / validation / test files.

    python scripts/make_twostep_data.py                 # writes data/twostep/{train,validation,test}.jsonl
    python scripts/make_twostep_data.py --out DIR --seed 0
    python scripts/make_twostep_data.py --version 1     # the layout the first results were measured on

Data versions (``data_version.json`` beside the files records which one, its seed and each file's sha256;
every evaluation result file copies it into its provenance, fsdistill.eval.results.collect_provenance):

- **2** (default): problems grouped by the unordered pair {a, b} and c, so a problem and its
  swapped-operand twin, (b + a) * c with the same answer, always share a split; the groups are shuffled
  with the seed and packed in that order into 500 train, 200 validation and 500 test problems (a group
  that would overflow a split goes to the next one with room, so the sizes are exact).
- **1**: the 1,200 problems shuffled one by one and cut into the same sizes. The splits are disjoint as
  strings but not as problems: 217 test problems have their twin in train. Kept, byte-identical, so the
  results measured on it (experiments/*/v1/) stay traceable to their data.

Still shared by design, in every version: a + b lies in 2..40 and c in {2, 5, 10}, so most test problems
share (a + b, c), and so the answer, with some training problem (:func:`shared_sum_and_multiplier`): the
task measures carrying out the arithmetic, not producing unseen answers.

Rows: {"question": "What is (7 + 18) * 10?", "answer": "7 + 18 = 25, 25 * 10 = 250. Answer: 250",
"final": "250", "a": 7, "b": 18, "c": 10}. The format instruction is the task's user-turn template
(configs/tasks/twostep.yaml), not part of the row. Pure Python and deterministic: the same version and
seed write byte-identical files on any machine (random.Random's shuffle has been stable since Python 3.2),
so the files are not committed; result files record their sha256.

Why this task: SmolLM2-135M-Instruct with the chat template and greedy decoding solves it 0-shot almost
never (it answers "The answer is X." with a guess, or writes the sum and stops), and with two worked
examples in its prompt about half the time, while 100% of its 0-shot generations end by themselves within
40 new tokens: an in-context gain in carrying out a two-step procedure, not an artefact of truncation.
c in {2, 5, 10} keeps the multiplication within what the model can do at all (x3, x4, x6..x9 it mostly
cannot, with or without exemplars).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.files import sha256_file, write_json_atomic, write_text_atomic

OPERANDS = range(1, 21)
MULTIPLIERS = (2, 5, 10)
SPLITS = {"train": 500, "validation": 200, "test": 500}  # 1,200 = 20 x 20 x 3 problems in all
VERSIONS = (1, 2)
VERSION = 2  # what make_splits / the script write unless told otherwise
DEFAULT_OUT = "data/twostep"
VERSION_FILE = "data_version.json"  # its name is the one collect_provenance looks for beside data files
# Reading a model's answer: its first sum "x + y = s", and the whole answer in the worked format.
FIRST_SUM = re.compile(r"(\d+)\s*\+\s*(\d+)\s*=\s*(\d+)")
TWO_STEP = re.compile(r"\s*\d+ \+ \d+ = \d+, \d+ \* \d+ = \d+\. Answer: \d+\s*")


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


def twin_key(row: dict) -> tuple[int, int, int]:
    """What a problem and its swapped-operand twin share: the unordered pair {a, b} and c."""
    return min(row["a"], row["b"]), max(row["a"], row["b"]), row["c"]


def all_problems() -> list[dict]:
    return [problem(a, b, c) for a in OPERANDS for b in OPERANDS for c in MULTIPLIERS]


def _cut_in_order(problems: list[dict]) -> dict[str, list[dict]]:
    """Version 1: the shuffled problems cut into SPLITS' sizes in their order."""
    out, start = {}, 0
    for split, size in SPLITS.items():
        out[split] = problems[start : start + size]
        start += size
    return out


def _pack_groups(groups: list[list[dict]]) -> dict[str, list[dict]]:
    """Version 2: whole groups, in their (shuffled) order, each into the first split it still fits."""
    out: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for group in groups:
        split = next((s for s, size in SPLITS.items() if len(out[s]) + len(group) <= size), None)
        if split is None:  # cannot happen with 60 one-problem groups (a = b) to fill the gaps; checked anyway
            raise AssertionError(f"twostep: a group of {len(group)} fits no split")
        out[split].extend(group)
    return out


def make_splits(seed: int = 0, version: int = VERSION) -> dict[str, list[dict]]:
    """{split: rows} of a data version (module docstring); every problem exactly once."""
    problems = all_problems()
    if version == 1:
        random.Random(f"twostep:{seed}").shuffle(problems)
        out = _cut_in_order(problems)
    elif version == 2:
        groups: dict[tuple, list[dict]] = {}
        for row in problems:
            groups.setdefault(twin_key(row), []).append(row)
        order = list(groups.values())
        random.Random(f"twostep-v2:{seed}").shuffle(order)
        out = _pack_groups(order)
    else:
        raise UserError(f"twostep data version {version}: known versions are {VERSIONS}")
    assert {s: len(r) for s, r in out.items()} == SPLITS
    return out


def split_text(rows: list[dict]) -> str:
    """A split's file content: one JSON row per line."""
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_splits(out_dir: str | Path, seed: int = 0, version: int = VERSION) -> dict[str, Path]:
    """Write {split}.jsonl for each split and data_version.json beside them (atomically); returns the
    split files' paths."""
    out_dir = Path(out_dir)
    paths = {}
    for split, rows in make_splits(seed, version).items():
        paths[split] = out_dir / f"{split}.jsonl"
        write_text_atomic(paths[split], split_text(rows))
    write_json_atomic(
        out_dir / VERSION_FILE,
        {
            "data": "twostep",
            "version": version,
            "seed": seed,
            "files": {p.name: {"rows": SPLITS[s], "sha256": sha256_file(p)} for s, p in paths.items()},
        },
    )
    return paths


def twin_elsewhere(rows: list[dict], others: list[dict]) -> list[bool]:
    """For each problem of `rows`: whether its swapped-operand twin (a != b) is among `others`."""
    keys = {twin_key(r) for r in others}
    return [r["a"] != r["b"] and twin_key(r) in keys for r in rows]


def twins_across(splits: dict[str, list[dict]]) -> dict[tuple[str, str], int]:
    """{(split, other split): how many problems of split have their swapped-operand twin in the other}.
    Version 2 has none; version 1 has 217 test problems with a twin in train."""
    return {(s, o): sum(twin_elsewhere(splits[s], splits[o])) for s in splits for o in splits if o != s}


def shared_sum_and_multiplier(splits: dict[str, list[dict]], split: str = "test") -> float:
    """The share of `split`'s problems with some training problem of the same (a + b, c), hence the same
    answer: shared by design (module docstring)."""
    seen = {(r["a"] + r["b"], r["c"]) for r in splits["train"]}
    rows = splits[split]
    return sum((r["a"] + r["b"], r["c"]) in seen for r in rows) / len(rows)


def rows_of_file(sha256: str, version_record: dict | None = None) -> list[dict]:
    """The rows of the twostep split file whose sha256 a result file recorded, regenerated: the version and
    seed its data_version.json named (files written before versions were recorded: version 1, seed 0).
    A digest no split of that version and seed has is refused."""
    version = (version_record or {}).get("version", 1)
    seed = (version_record or {}).get("seed", 0)
    for rows in make_splits(seed, version).values():
        if hashlib.sha256(split_text(rows).encode()).hexdigest() == sha256:
            return rows
    raise UserError(f"sha256 {sha256[:12]}...: no twostep split of version {version}, seed {seed} has it")


def first_step_right(prediction: str, row: dict) -> bool:
    """Whether an answer's first sum written, "x + y = s", has the question's a + b as s."""
    match = FIRST_SUM.search(prediction)
    return match is not None and int(match[3]) == row["a"] + row["b"]


def is_two_step(prediction: str) -> bool:
    """Whether an answer is written as the worked answers are: "a + b = s, s * c = p. Answer: p" (any
    numbers, right or wrong)."""
    return TWO_STEP.fullmatch(prediction) is not None


@exit_on_user_error
def main(argv=None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder to write (default {DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    parser.add_argument(
        "--version",
        type=int,
        choices=VERSIONS,
        default=VERSION,
        help=f"data version (default {VERSION}: twins share a split; 1: the first results' layout, twins leak)",
    )
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: exists and is not a folder")
    paths = write_splits(args.out, args.seed, args.version)
    print(f"wrote version {args.version}: " + ", ".join(f"{p} ({SPLITS[s]} rows)" for s, p in paths.items()))
    return paths
