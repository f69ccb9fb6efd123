"""Ablation figures: accuracy vs. step of each condition, and each condition's best checkpoint."""

from __future__ import annotations

import argparse

from fsdistill.errors import exit_on_user_error
from fsdistill.evaluation.figures import (
    accuracy_curves,
    best_accuracy_bars,
    checkpoint_entries,
    split_label,
)
from fsdistill.evaluation.results import ResultsError, load_pooled, require_same_examples


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--evals", required=True, nargs="+", help="result files holding the conditions")
    p.add_argument(
        "--conditions", required=True, nargs="+", metavar="NAME[:LABEL]", help="conditions, in order"
    )
    p.add_argument("--out_curve", default="assets/ablation_curve.png")
    p.add_argument("--out_bar", default="assets/ablation_bar.png")
    p.add_argument("--title", default="Ablations on GSM8K")
    return p


@exit_on_user_error
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    pooled = load_pooled(args.evals)
    conditions = {}
    for spec in args.conditions:
        name, label = split_label(spec)
        if label in conditions:
            raise ResultsError(
                f"two conditions labelled {label!r}: give them distinct labels with NAME:LABEL"
            )
        conditions[label] = checkpoint_entries(pooled, name)
    require_same_examples([(label, e) for label, entries in conditions.items() for e in entries])
    curves = accuracy_curves(conditions, args.out_curve, f"{args.title}: accuracy vs. training step")
    print(f"wrote {args.out_curve}")
    bars = best_accuracy_bars(conditions, args.out_bar, args.title)
    print(f"wrote {args.out_bar}")
    return {"curves": curves, "bars": bars}


if __name__ == "__main__":
    main()
