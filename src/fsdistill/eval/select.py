"""Choose each run's checkpoint on the validation split, never on test, and record the choice.

    python scripts/select_checkpoints.py --evals experiments/x/validation_eval.json \
        --conditions sft distill --output experiments/x/selected.json
    python scripts/eval_checkpoints.py ... --selected experiments/x/selected.json   # test: those steps only

The rule: the highest validation accuracy; ties go to the earliest step (results.best_of). A result file
scored on the test split is refused: choosing on test makes the chosen number optimistic, which is what
this command exists to avoid.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.eval.results import ResultsError, best_of, entries_for, load_pooled, shared_data
from fsdistill.files import write_json_atomic

KIND = "checkpoint_selection"
RULE = "highest validation accuracy; ties: the earliest step"


def select_checkpoints(results: dict, conditions: list[str]) -> dict[str, dict]:
    """{condition: {step, accuracy, n, ci95, candidates: {step: accuracy}}} of each condition's best
    0-shot checkpoint entry in a validation result file."""
    split = results["settings"].get("split")
    if split != "validation":
        raise ResultsError(
            f"checkpoints are chosen on the validation split; these results are on split {split!r}"
        )
    chosen = {}
    for condition in conditions:
        entries = [e for e in entries_for(results, condition, 0) if e["step"] is not None]
        if not entries:
            have = sorted({e["condition"] for e in results["results"]})
            raise ResultsError(
                f"no checkpoint entries for condition {condition!r}; conditions present: {have}"
            )
        best = best_of(entries)
        chosen[condition] = {
            "step": best["step"],
            "accuracy": best["accuracy"],
            "n": best["n"],
            "ci95": best["ci95"],
            "candidates": {str(e["step"]): e["accuracy"] for e in entries},
        }
    return chosen


def read_selection(path: str | Path) -> dict[str, int]:
    """{condition: step} from a file select_checkpoints wrote (eval_checkpoints.py --selected)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"--selected {path}: cannot read a checkpoint selection ({e})") from None
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("selected"), dict):
        raise UserError(f"--selected {path}: not a file written by select_checkpoints.py (kind {KIND!r})")
    try:
        return {name: int(entry["step"]) for name, entry in data["selected"].items()}
    except (TypeError, KeyError, ValueError) as e:
        raise UserError(f"--selected {path}: malformed selection entry ({e})") from None


@exit_on_user_error
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--evals",
        required=True,
        nargs="+",
        help="validation result files (eval_checkpoints.py --split validation)",
    )
    parser.add_argument("--conditions", required=True, nargs="+", help="run names")
    parser.add_argument(
        "--output", required=True, help="selection JSON (read by eval_checkpoints.py --selected)"
    )
    args = parser.parse_args(argv)
    evals = load_pooled(args.evals)
    chosen = select_checkpoints(evals, args.conditions)
    report = {
        "kind": KIND,
        "evals": list(args.evals),
        "data": shared_data([(" ".join(args.evals), evals)]),
        "split": "validation",
        "rule": RULE,
        "selected": chosen,
    }
    write_json_atomic(args.output, report)
    for name, c in chosen.items():
        candidates = ", ".join(f"step {s}: {100 * a:.1f}%" for s, a in c["candidates"].items())
        print(f"{name}: step {c['step']} ({candidates}; n={c['n']})")
    print(f"wrote {args.output}")
    return report
