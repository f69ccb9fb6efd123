"""The figure commands (scripts/gen_*_fig.py; installed as fsdistill-fig-*): figures drawn only from
result files (results.py) and training metrics.jsonl files, through the functions of figures.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fsdistill.errors import exit_on_user_error
from fsdistill.eval.figures import (
    TASK_NAMES,
    MetricsError,
    accuracy_curves,
    accuracy_label,
    best_accuracy_bars,
    checkpoint_entries,
    loss_curves,
    main_comparison,
    read_metrics_jsonl,
    split_label,
    summary_bars,
    teacher_forced_curves,
)
from fsdistill.eval.results import BASE, ResultsError, load_pooled, load_results, require_same_examples


@exit_on_user_error
def main_fig(argv=None) -> dict:
    """Main comparison figure: base 0-shot, base k-shot ICL, SFT, SFT + few-shot distillation (Qwen3)."""
    return main_comparison(argv, "assets/main_comparison.png", "Qwen3-1.7B on GSM8K")


@exit_on_user_error
def llama_fig(argv=None) -> dict:
    """Main comparison figure for Llama-3.2-3B-Instruct (same bars as main_fig)."""
    return main_comparison(argv, "assets/llama_comparison.png", "Llama-3.2-3B-Instruct on GSM8K")


@exit_on_user_error
def gemma_fig(argv=None) -> dict:
    """Gemma-3-270M figures: the comparison bars and an accuracy-vs-step curve of the trained conditions.
    Pass the 0-shot-teacher KD control with ``--extra NAME:LABEL``."""
    return main_comparison(
        argv,
        "assets/gemma_comparison.png",
        "Gemma-3-270M on GSM8K",
        default_curve_out="assets/gemma_curve.png",
    )


# --------------------------------------------------------------------------------------------------
# Training-loss curves of several runs, read from each run folder's metrics.jsonl.
# --------------------------------------------------------------------------------------------------


def parse_run(spec: str) -> tuple[Path, str | None]:
    """'DIR' or 'DIR:LABEL' (a folder whose own name holds ':' is taken whole)."""
    if Path(spec).is_dir():
        return Path(spec), None
    folder, sep, label = spec.rpartition(":")
    if sep and folder and label:
        return Path(folder), label
    return Path(spec), None


def run_label(run_dir: Path) -> str:
    """The run's name from run.json, else its folder name."""
    run_json = run_dir / "run.json"
    if not run_json.exists():
        return run_dir.name
    try:
        name = json.loads(run_json.read_text(encoding="utf-8")).get("name")
    except (json.JSONDecodeError, AttributeError) as e:
        raise MetricsError(f"{run_json}: not a JSON object: {e}") from e
    if not isinstance(name, str):
        raise MetricsError(f"{run_json}: missing field 'name'")
    return name


def loss_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Training-loss curves of several runs, read from each run folder's metrics.jsonl."
    )
    p.add_argument(
        "--run",
        required=True,
        nargs="+",
        action="extend",
        metavar="DIR[:LABEL]",
        help="run folder holding metrics.jsonl; LABEL defaults to run.json's name",
    )
    p.add_argument("--key", default="train/ce_loss", help="metrics field to plot (default train/ce_loss)")
    p.add_argument("--out", default="assets/loss_comparison.png")
    p.add_argument("--title", default=None, help="default: what the key measures ('Training cross-entropy')")
    return p


@exit_on_user_error
def loss_fig(argv=None) -> dict:
    args = loss_parser().parse_args(argv)
    runs: dict[str, list[dict]] = {}
    for spec in args.run:
        run_dir, label = parse_run(spec)
        if not run_dir.is_dir():
            raise MetricsError(f"{run_dir}: run folder not found")
        label = label or run_label(run_dir)
        if label in runs:
            raise MetricsError(f"two runs labelled {label!r}: give them distinct labels with DIR:LABEL")
        runs[label] = read_metrics_jsonl(run_dir / "metrics.jsonl")
    drawn = loss_curves(runs, args.out, key=args.key, title=args.title)
    print(f"wrote {args.out}")
    return drawn


# --------------------------------------------------------------------------------------------------
# Ablation figures: accuracy vs. step of each condition, and each condition's best checkpoint.
# --------------------------------------------------------------------------------------------------


def ablation_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Ablation figures: accuracy vs. step of each condition, and each condition's best checkpoint."
    )
    p.add_argument("--evals", required=True, nargs="+", help="result files holding the conditions")
    p.add_argument(
        "--conditions", required=True, nargs="+", metavar="NAME[:LABEL]", help="conditions, in order"
    )
    p.add_argument("--out_curve", default="assets/ablation_curve.png")
    p.add_argument("--out_bar", default="assets/ablation_bar.png")
    p.add_argument("--title", default=None, help="default: 'Ablations on <task>'")
    return p


@exit_on_user_error
def ablation_fig(argv=None) -> dict:
    args = ablation_parser().parse_args(argv)
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
    ylabel = accuracy_label(pooled["settings"])
    task = pooled["settings"].get("task") or pooled["settings"].get("task.name") or "gsm8k"
    title = args.title or f"Ablations on {TASK_NAMES.get(task, task)}"
    curves = accuracy_curves(
        conditions, args.out_curve, f"{title}: accuracy vs. training step", ylabel=ylabel
    )
    print(f"wrote {args.out_curve}")
    bars = best_accuracy_bars(
        conditions, args.out_bar, title, ylabel, pooled["settings"].get("split", "test")
    )
    print(f"wrote {args.out_bar}")
    return {"curves": curves, "bars": bars}


# --------------------------------------------------------------------------------------------------
# Teacher-forced metrics (gold-answer NLL, KL to the k-shot teacher) vs. training step, from result JSON.
# --------------------------------------------------------------------------------------------------


def teacher_forced_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Teacher-forced metrics (gold-answer NLL, KL to the k-shot teacher) vs. training step, from result JSON."
    )
    p.add_argument("--icl", required=True, help="eval_icl.py result file (base-model references)")
    p.add_argument("--evals", required=True, nargs="+", help="eval_checkpoints.py result files")
    p.add_argument("--conditions", required=True, nargs="+", metavar="NAME[:LABEL]")
    p.add_argument("--metric", required=True, choices=["nll", "kl"])
    p.add_argument("--out", required=True)
    p.add_argument("--title", default=None)
    return p


@exit_on_user_error
def teacher_forced_fig(argv=None) -> dict:
    args = teacher_forced_parser().parse_args(argv)
    icl = load_results(args.icl)
    evals = load_pooled(args.evals)
    curves = {label: checkpoint_entries(evals, name) for name, label in map(split_label, args.conditions)}
    references = {}
    for entry in sorted(icl["results"], key=lambda e: e["shots"]):
        if entry["condition"] == BASE and entry["step"] is None and metric_present(entry, args.metric):
            references[f"Base {entry['shots']}-shot prompt"] = entry
    require_same_examples([*references.items(), *((lab, e) for lab, es in curves.items() for e in es)])
    settings = evals["settings"]
    task = settings.get("task") or settings.get("task.name") or "gsm8k"
    title = (
        args.title
        or f"Teacher-forced {args.metric} on {TASK_NAMES.get(task, task)} {settings.get('split', 'test')}"
    )
    # The KL's teacher is the evaluation config's fewshot.k (in the settings when teacher-forced metrics ran;
    # files of earlier versions call it teacher_shots).
    teacher_shots = settings.get("fewshot.k", settings.get("teacher_shots"))
    drawn = teacher_forced_curves(curves, args.metric, args.out, title, references, teacher_shots)
    print(f"wrote {args.out}")
    return drawn


def metric_present(entry: dict, metric: str) -> bool:
    return metric in (entry.get("teacher_forced") or {})


# --------------------------------------------------------------------------------------------------
# An experiment summary (eval/summary.py): base references and each method's seeds at their chosen step.
# --------------------------------------------------------------------------------------------------


@exit_on_user_error
def summary_fig(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(
        description="Bar chart of an experiment summary (summarize_evals.py): references, and each method's "
        "mean over training seeds with every run's accuracy and Wilson interval."
    )
    p.add_argument("--summary", required=True, help="summary JSON written by scripts/summarize_evals.py")
    p.add_argument("--out", required=True)
    p.add_argument("--title", required=True)
    args = p.parse_args(argv)
    try:
        summary = json.loads(Path(args.summary).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{args.summary}: cannot read a summary ({e})") from None
    if not isinstance(summary, dict) or summary.get("kind") != "summary":
        raise ResultsError(f"{args.summary}: not a summary written by summarize_evals.py (kind 'summary')")
    drawn = summary_bars(summary, args.out, args.title)
    print(f"wrote {args.out}")
    return drawn
