"""Teacher-forced metrics (gold-answer NLL, KL to the k-shot teacher) vs. training step, from result JSON.

    python scripts/gen_teacher_forced_fig.py --icl experiments/smollm2/icl_eval.json \
        --evals experiments/smollm2/checkpoints_eval.json --conditions sft:SFT "distill:SFT + distillation" \
        --metric nll --out assets/smollm2/nll_curve.png

Reference lines come from the ICL file's base-model entries: for nll the 0-shot and every k-shot entry
(the k-shot NLL is what the teacher achieves with exemplars in context), for kl the 0-shot entry.
"""

from __future__ import annotations

import argparse

from fsdistill.errors import exit_on_user_error
from fsdistill.evaluation.figures import checkpoint_entries, split_label, teacher_forced_curves
from fsdistill.evaluation.results import BASE, load_pooled, load_results, require_same_examples


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--icl", required=True, help="eval_icl.py result file (base-model references)")
    p.add_argument("--evals", required=True, nargs="+", help="eval_checkpoints.py result files")
    p.add_argument("--conditions", required=True, nargs="+", metavar="NAME[:LABEL]")
    p.add_argument("--metric", required=True, choices=["nll", "kl"])
    p.add_argument("--out", required=True)
    p.add_argument("--title", default=None)
    return p


@exit_on_user_error
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    icl = load_results(args.icl)
    evals = load_pooled(args.evals)
    curves = {label: checkpoint_entries(evals, name) for name, label in map(split_label, args.conditions)}
    references = {}
    for entry in sorted(icl["results"], key=lambda e: e["shots"]):
        if entry["condition"] == BASE and entry["step"] is None and metric_present(entry, args.metric):
            references[f"Base {entry['shots']}-shot prompt"] = entry
    require_same_examples([*references.items(), *((lab, e) for lab, es in curves.items() for e in es)])
    title = args.title or f"Teacher-forced {args.metric} on GSM8K test"
    drawn = teacher_forced_curves(curves, args.metric, args.out, title, references)
    print(f"wrote {args.out}")
    return drawn


def metric_present(entry: dict, metric: str) -> bool:
    return metric in (entry.get("teacher_forced") or {})


if __name__ == "__main__":
    main()
