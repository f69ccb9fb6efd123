"""Paired comparison of two conditions scored on the same problems, and merging of result files.

For each compared checkpoint: both accuracies, their difference a - b in percentage points with a
paired bootstrap 95% interval, the exact McNemar p-value and n; and for every teacher-forced metric both
entries carry (per-example gold NLL, KL to the teacher), both means and the mean per-example difference
a - b with a paired bootstrap 95% interval. Entries without accuracy (teacher-forced only) are compared
on their metrics alone. A condition is a run name (its 0-shot checkpoint entries) or NAME@K for a
step-less entry with K shots, e.g. ``base@0`` or ``base@8``. Two runs each evaluated at one checkpoint
only (the one chosen on validation, select_checkpoints.py) are compared at those steps, whatever they are.
"""

from __future__ import annotations

import argparse
import re

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.eval.results import (
    ResultsError,
    entries_for,
    entry_key,
    find_entry,
    load_pooled,
    load_results,
    merge_results,
    paired_correctness,
    save_results,
)
from fsdistill.eval.stats import (
    discordant_counts,
    mcnemar_exact_from_counts,
    paired_bootstrap_diff_from_counts,
    paired_bootstrap_mean_diff,
)
from fsdistill.files import write_json_atomic

_FIXED_SPEC = re.compile(r"(?P<condition>.+)@(?P<shots>\d+)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--evals", required=True, nargs="+", help="result files holding both conditions")
    p.add_argument("--a", required=True, metavar="NAME", help="first condition (NAME or NAME@SHOTS)")
    p.add_argument("--b", required=True, metavar="NAME", help="second condition (NAME or NAME@SHOTS)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--steps", nargs="+", type=int, metavar="N", help="compare at these checkpoint steps")
    which.add_argument(
        "--matching", action="store_true", help="compare at every step both have (the default)"
    )
    p.add_argument("--n_boot", type=int, default=10000, help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--output", default=None, metavar="JSON", help="also write the comparisons here")
    return p


def side_entries(results: dict, spec: str) -> dict[int | None, dict]:
    """{step: entry} of one side: NAME@K is the single step-less entry with K shots (key None);
    NAME is the condition's 0-shot checkpoint entries."""
    fixed = _FIXED_SPEC.fullmatch(spec)
    if fixed:
        entry = find_entry(results, fixed["condition"], None, int(fixed["shots"]))
        if entry is None:
            raise ResultsError(
                f"{spec!r}: no step-less entry of {fixed['condition']!r} with {fixed['shots']} shots"
            )
        return {None: entry}
    entries = {e["step"]: e for e in entries_for(results, spec, 0) if e["step"] is not None}
    if not entries:
        have = sorted({e["condition"] for e in results["results"]})
        raise ResultsError(f"{spec!r}: no 0-shot checkpoint entries; conditions present: {have}")
    return entries


def pair_steps(a: dict, b: dict, steps: list[int] | None) -> list[tuple[int | None, int | None]]:
    """(step of a, step of b) pairs to compare; a step-less side pairs with every step of the other."""
    if None in a and None in b:
        return [(None, None)]
    if None in a or None in b:
        other = b if None in a else a
        chosen = sorted(other) if steps is None else steps
        missing = [s for s in chosen if s not in other]
        if missing:
            raise ResultsError(f"steps {missing} not evaluated; steps present: {sorted(other)}")
        return [(None, s) if None in a else (s, None) for s in chosen]
    if steps is None:
        if len(a) == 1 and len(b) == 1:  # one chosen checkpoint each: compare them, whatever their steps
            return [(next(iter(a)), next(iter(b)))]
        chosen = sorted(set(a) & set(b))
        if not chosen:
            raise ResultsError(f"no step evaluated for both: a has {sorted(a)}, b has {sorted(b)}")
        return [(s, s) for s in chosen]
    missing = [s for s in steps if s not in a or s not in b]
    if missing:
        raise ResultsError(f"steps {missing} not evaluated for both: a has {sorted(a)}, b has {sorted(b)}")
    return [(s, s) for s in steps]


def paired_metric(entry_a: dict, entry_b: dict, metric: str) -> tuple[list[float], list[float]]:
    """Both entries' per-example values of a teacher-forced metric, aligned by example index."""
    a = {ex["index"]: ex.get(metric) for ex in entry_a["examples"]}
    b = {ex["index"]: ex.get(metric) for ex in entry_b["examples"]}
    if a.keys() != b.keys():
        raise ResultsError(
            f"{entry_key(entry_a)} and {entry_key(entry_b)} were scored on different examples "
            f"({len(a)} vs {len(b)} problems, or different indices)"
        )
    missing = [i for i in sorted(a) if a[i] is None or b[i] is None]
    if missing:
        raise ResultsError(f"teacher-forced metric {metric!r} is missing for examples {missing[:5]}")
    order = sorted(a)
    return [a[i] for i in order], [b[i] for i in order]


def compare_pair(entry_a: dict, entry_b: dict, n_boot: int, seed: int) -> dict:
    """The paired statistics of two entries over their (identical) examples: accuracy (when both were
    generated) and every teacher-forced metric both carry. Keys of what does not apply are None."""
    fields = ("condition", "step", "shots", "accuracy", "n_correct")
    row: dict = {
        "a": {k: entry_a[k] for k in fields},
        "b": {k: entry_b[k] for k in fields},
        "n": entry_a["n"],
        "diff_pp": None,
        "diff_ci95_pp": None,
        "mcnemar_p": None,
        "a_only_correct": None,
        "b_only_correct": None,
        "teacher_forced": {},
    }
    if entry_a["accuracy"] is not None and entry_b["accuracy"] is not None:
        a, b = paired_correctness(entry_a, entry_b)
        # Both tests read only the paired table's cells: their cost does not grow with n past counting.
        a_only, b_only = discordant_counts(a, b)
        diff, lo, hi = paired_bootstrap_diff_from_counts(a_only, b_only, len(a), n_boot=n_boot, seed=seed)
        row.update(
            n=len(a),
            diff_pp=100 * diff,
            diff_ci95_pp=[100 * lo, 100 * hi],
            mcnemar_p=mcnemar_exact_from_counts(a_only, b_only),
            a_only_correct=a_only,
            b_only_correct=b_only,
        )
    metrics = sorted(set(entry_a["teacher_forced"] or {}) & set(entry_b["teacher_forced"] or {}))
    for metric in metrics:
        values_a, values_b = paired_metric(entry_a, entry_b, metric)
        diff, lo, hi = paired_bootstrap_mean_diff(values_a, values_b, n_boot=n_boot, seed=seed)
        row["n"] = len(values_a)
        row["teacher_forced"][metric] = {
            "a_mean": entry_a["teacher_forced"][metric]["mean"],
            "b_mean": entry_b["teacher_forced"][metric]["mean"],
            "diff": diff,
            "diff_ci95": [lo, hi],
        }
    if row["diff_pp"] is None and not metrics:
        raise ResultsError(
            f"{entry_key(entry_a)} and {entry_key(entry_b)} share nothing to compare: one has no accuracy "
            "(teacher-forced only) and they have no teacher-forced metric in common"
        )
    return row


def _step(side: dict) -> str:
    return f"{side['shots']}-shot" if side["step"] is None else f"step {side['step']}"


def format_row(row: dict) -> str:
    """The accuracy line of a comparison (empty when either side was not generated)."""
    if row["diff_pp"] is None:
        return ""
    lo, hi = row["diff_ci95_pp"]
    return (
        f"{_step(row['a']):>10} {_step(row['b']):>10} {row['n']:>6} {100 * row['a']['accuracy']:>7.2f} "
        f"{100 * row['b']['accuracy']:>7.2f} {row['diff_pp']:>+8.2f} {f'[{lo:+.2f}, {hi:+.2f}]':<18} {row['mcnemar_p']:>10.4g}"
    )


def format_metric_rows(row: dict) -> list[str]:
    """One line per teacher-forced metric of a comparison."""
    lines = []
    for metric, m in row["teacher_forced"].items():
        lo, hi = m["diff_ci95"]
        lines.append(
            f"{_step(row['a']):>10} {_step(row['b']):>10} {row['n']:>6} {metric:>6} {m['a_mean']:>9.4f} "
            f"{m['b_mean']:>9.4f} {m['diff']:>+9.4f} [{lo:+.4f}, {hi:+.4f}]"
        )
    return lines


@exit_on_user_error
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.n_boot < 1:
        raise UserError(f"--n_boot must be >= 1, got {args.n_boot}")
    pooled = load_pooled(args.evals)
    a, b = side_entries(pooled, args.a), side_entries(pooled, args.b)
    rows = [compare_pair(a[sa], b[sb], args.n_boot, args.seed) for sa, sb in pair_steps(a, b, args.steps)]
    print(f"a = {args.a}, b = {args.b}; diff = a - b, paired bootstrap 95% CI ({args.n_boot} resamples)")
    if any(row["diff_pp"] is not None for row in rows):
        print(
            f"{'a':>10} {'b':>10} {'n':>6} {'acc_a%':>7} {'acc_b%':>7} {'diff_pp':>8} {'95% CI':<18} {'McNemar p':>10}"
        )
        for row in rows:
            if row["diff_pp"] is not None:
                print(format_row(row))
    if any(row["teacher_forced"] for row in rows):
        print("teacher-forced metrics (per-example means over answer tokens; diff = mean of a - b):")
        print(f"{'a':>10} {'b':>10} {'n':>6} {'metric':>6} {'mean_a':>9} {'mean_b':>9} {'diff':>9} 95% CI")
        for row in rows:
            for line in format_metric_rows(row):
                print(line)
    report = {
        "evals": list(args.evals),
        "a": args.a,
        "b": args.b,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "comparisons": rows,
    }
    if args.output:
        write_json_atomic(args.output, report)
        print(f"wrote {args.output}")
    return report


# --------------------------------------------------------------------------------------------------
# Merge result files evaluated with the same settings (e.g. a sweep split over machines) into one.
# --------------------------------------------------------------------------------------------------


def merge_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Merge result files evaluated with the same settings (e.g. a sweep split over machines) into one."
    )
    p.add_argument(
        "--inputs", required=True, nargs="+", help="result files; the first one's settings are kept"
    )
    p.add_argument("--output", required=True, help="merged result file (written atomically)")
    return p


@exit_on_user_error
def merge_main(argv=None) -> dict:
    args = merge_parser().parse_args(argv)
    merged = merge_results([(path, load_results(path)) for path in args.inputs])
    save_results(args.output, merged)
    print(f"merged {len(merged['results'])} entries from {len(args.inputs)} files into {args.output}")
    return merged
