"""The paper's figures, drawn only from result files (results.py) and training metrics.jsonl files.

Every plotting function writes exactly one PNG and returns the numbers it drew, so tests can check a
figure against the JSON it came from. Figures are drawn on a bare :class:`Figure` with the Agg
canvas: no pyplot, no global backend state, no display needed.

Percentages on the axes are accuracies x 100; returned values stay fractions, as in the files.
:func:`main_comparison` is the one command line behind gen_main_fig.py, gen_llama_fig.py and
gen_gemma_fig.py.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fsdistill.errors import UserError
from fsdistill.eval.results import (
    BASE,
    ResultsError,
    best_of,
    entries_for,
    entry_key,
    find_entry,
    load_pooled,
    load_results,
    require_accuracy,
    require_same_examples,
)

SELECTED_ON_TEST = "best checkpoint, selected on test"
CI_NOTE = "error bars: 95% Wilson interval"
ACCURACY_LABEL = "GSM8K test accuracy (%)"  # what files written before tasks other than GSM8K measured
TASK_NAMES = {"gsm8k": "GSM8K", "twostep": "twostep"}
# Training metrics (metrics.jsonl keys) as a reader should see them: axis label with its unit, and a title.
METRIC_LABELS = {
    "train/ce_loss": ("cross-entropy on the answer tokens (nats / token)", "Training cross-entropy"),
    "train/dist_loss": ("distillation loss (per answer token)", "Distillation loss"),
    "train/total_loss": ("CE + λ · distillation (per answer token)", "Training loss"),
    "train/lr": ("learning rate", "Learning rate"),
    "train/grad_norm": ("gradient norm before clipping", "Gradient norm"),
    "train/tokens_per_s": ("tokens / s", "Training throughput"),
    "train/divergence": (
        "teacher-student divergence (per trained answer token)",
        "Teacher-student divergence",
    ),
    "rollout/accuracy": ("accuracy of the sampled answers (fraction)", "Accuracy of the sampled answers"),
    "rollout/mean_length": ("sampled answer length (tokens)", "Sampled answer length"),
    "rollout/ended_fraction": ("fraction of samples reaching end-of-turn", "Samples reaching end-of-turn"),
}
MIN_POINTS_FOR_A_LINE = 3  # two checkpoints are two measurements: no line, let alone a band, between them
FIGSIZE = (8.0, 4.8)
DPI = 150
TICK_LABEL_WIDTH = 22  # characters per line of a bar's label, so neighbouring labels do not overlap
INCHES_PER_BAR = 1.6  # room for TICK_LABEL_WIDTH characters at font size 8, with a gap
TITLE_CHARS_PER_INCH = 10  # at the default title size (12 pt), with a margin


class MetricsError(UserError):
    """A malformed metrics.jsonl or run folder."""


# --------------------------------------------------------------------------------------------------
# Drawing helpers
# --------------------------------------------------------------------------------------------------


def _new_axes(title: str, ylabel: str, bars: int = 0) -> tuple[Figure, Any]:
    """A figure FIGSIZE wide, or wider for many bars (each label gets TICK_LABEL_WIDTH characters); the
    title wrapped to the width."""
    width = max(FIGSIZE[0], INCHES_PER_BAR * bars)
    fig = Figure(figsize=(width, FIGSIZE[1]), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(
        "\n".join(textwrap.fill(line, int(TITLE_CHARS_PER_INCH * width)) for line in title.split("\n"))
    )
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def _save(fig: Figure, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    return out


def _interval(entry: Mapping[str, Any]) -> tuple[float, float]:
    require_accuracy(entry)
    lo, hi = entry["ci95"]
    return float(lo), float(hi)


def accuracy_label(settings: Mapping[str, Any]) -> str:
    """The y label of an accuracy axis from a result file's settings: '<task> <split> accuracy (%)'."""
    task = settings.get("task") or settings.get("task.name")
    if task is None:
        return ACCURACY_LABEL
    return f"{TASK_NAMES.get(task, task)} {settings.get('split', 'test')} accuracy (%)"


def _integer_steps(ax: Any) -> None:
    """Optimizer steps are whole numbers: no 12.5 on a step axis."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _step_ticks(ax: Any, steps: Sequence[int]) -> None:
    """Ticks at the evaluated checkpoints when there are few of them, else whole numbers."""
    if 0 < len(steps) <= 12:
        ax.set_xticks(list(steps))
    else:
        _integer_steps(ax)


def _dodge(index: int, count: int, steps: Sequence[int]) -> float:
    """A small horizontal offset per curve, so error bars at the same step do not hide each other."""
    span = (max(steps) - min(steps)) if len(steps) > 1 else 1.0
    return (index - (count - 1) / 2) * 0.012 * span


def _draw_points(ax: Any, steps, means, los, his, color: str, label: str, offset: float) -> None:
    """Measured points with their intervals as error bars; a line joins them only when there are enough
    points for it to suggest a trend (MIN_POINTS_FOR_A_LINE), and nothing is ever filled between them."""
    xs = [x + offset for x in steps]
    yerr = [[m - lo for m, lo in zip(means, los)], [hi - m for m, hi in zip(means, his)]]
    line = "-" if len(xs) >= MIN_POINTS_FOR_A_LINE else "none"
    ax.errorbar(
        xs, means, yerr=yerr, fmt="o", linestyle=line, color=color, label=label, capsize=4, markersize=5
    )


def _n_note(ns: Sequence[int]) -> str:
    """'n = 1319 problems', or every n when they differ (which the scripts refuse, callers may not)."""
    distinct = sorted(set(ns))
    return f"n = {distinct[0]} problems" if len(distinct) == 1 else f"n = {', '.join(map(str, distinct))}"


def _wrapped(label: str) -> str:
    return "\n".join(textwrap.fill(line, TICK_LABEL_WIDTH) for line in label.split("\n"))


def _draw_bars(ax: Any, values: list[dict]) -> None:
    """Bars at accuracy x 100 with asymmetric Wilson error bars and the value printed above each."""
    xs = range(len(values))
    heights = [100 * v["accuracy"] for v in values]
    yerr = [
        [100 * (v["accuracy"] - v["lo"]) for v in values],
        [100 * (v["hi"] - v["accuracy"]) for v in values],
    ]
    colors = [f"C{i}" for i in xs]
    ax.bar(xs, heights, yerr=yerr, capsize=5, color=colors, alpha=0.85)
    for x, v in zip(xs, values):
        ax.annotate(
            f"{100 * v['accuracy']:.1f}%",
            (x, 100 * v["hi"]),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(list(xs), [_wrapped(v["label"]) for v in values], fontsize=8)
    ax.set_ylim(0, min(100, 100 * max(v["hi"] for v in values) * 1.15 + 5))


def _bar_values(bars: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict]:
    if not bars:
        raise ValueError("a bar chart needs at least one bar")
    values = []
    for label, entry in bars:
        lo, hi = _interval(entry)
        values.append({"label": label, "accuracy": entry["accuracy"], "lo": lo, "hi": hi, "n": entry["n"]})
    return values


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------


def comparison_bars(
    bars: Sequence[tuple[str, Mapping[str, Any]]],
    out_png: str | Path,
    title: str,
    ylabel: str = ACCURACY_LABEL,
) -> list[dict]:
    """One bar per (label, entry); returns [{label, accuracy, lo, hi, n}] in bar order."""
    values = _bar_values(bars)
    fig, ax = _new_axes(title, ylabel, len(values))
    _draw_bars(ax, values)
    ax.set_xlabel(f"{CI_NOTE}; {_n_note([v['n'] for v in values])}", fontsize=8)
    _save(fig, out_png)
    return values


def best_accuracy_bars(
    conditions: Mapping[str, Sequence[Mapping[str, Any]]],
    out_png: str | Path,
    title: str,
    ylabel: str = ACCURACY_LABEL,
    split: str = "test",
) -> list[dict]:
    """For each label, its best entry over checkpoints, labelled as selected on `split` (on test, that
    number is optimistic, and the title says so).

    Returns [{label, step, accuracy, lo, hi, n}] in the order of ``conditions``.
    """
    values = []
    for label, entries in conditions.items():
        if not entries:
            raise ValueError(f"best_accuracy_bars: no entries for {label!r}")
        best = best_of(entries)
        values.append({**_bar_values([(label, best)])[0], "step": best["step"]})
    note = SELECTED_ON_TEST if split == "test" else f"best checkpoint, selected on {split}"
    fig, ax = _new_axes(f"{title}\n({note})", ylabel, len(values))
    _draw_bars(ax, [{**v, "label": f"{v['label']}\n(step {v['step']})"} for v in values])
    ax.set_xlabel(f"{CI_NOTE}; {_n_note([v['n'] for v in values])}", fontsize=8)
    _save(fig, out_png)
    return values


def summary_bars(summary: Mapping[str, Any], out_png: str | Path, title: str) -> list[dict]:
    """An experiment summary (eval/summary.py) as bars: each base reference with its Wilson interval; each
    method a bar at its mean over training seeds with every seed's run drawn on it as a point with its own
    Wilson interval (so the seed-to-seed spread and the per-run uncertainty are both visible).

    Returns [{label, accuracy (the bar), runs: [(condition, accuracy, lo, hi)]}] in drawing order.
    """
    bars = len(summary["references"]) + len(summary["groups"])
    ylabel = accuracy_label({"task": summary.get("task"), "split": summary.get("split")})
    fig, ax = _new_axes(title, ylabel, bars)
    drawn = []
    for ref in summary["references"]:
        lo, hi = ref["ci95"]
        drawn.append(
            {
                "label": ref["label"],
                "accuracy": ref["accuracy"],
                "runs": [(ref["condition"], ref["accuracy"], lo, hi)],
            }
        )
    for group in summary["groups"]:
        runs = [(r["condition"], r["accuracy"], *r["ci95"]) for r in group["runs"]]
        seeds = f"{len(runs)} seeds" if len(runs) > 1 else "1 seed"
        drawn.append(
            {"label": f"{group['label']}\n({seeds})", "accuracy": group["mean_accuracy"], "runs": runs}
        )
    xs = range(len(drawn))
    ax.bar(xs, [100 * d["accuracy"] for d in drawn], color=[f"C{i}" for i in xs], alpha=0.45)
    for x, d in zip(xs, drawn):
        width = 0.5 if len(d["runs"]) > 1 else 0.0
        for j, (_, acc, lo, hi) in enumerate(d["runs"]):
            dx = (j / (len(d["runs"]) - 1) - 0.5) * width if len(d["runs"]) > 1 else 0.0
            ax.errorbar(
                x + dx,
                100 * acc,
                yerr=[[100 * (acc - lo)], [100 * (hi - acc)]],
                fmt="o",
                color="black",
                capsize=4,
                markersize=4,
            )
        top = max(100 * r[3] for r in d["runs"])
        ax.annotate(
            f"{100 * d['accuracy']:.1f}%",
            (x, top),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(list(xs), [_wrapped(d["label"]) for d in drawn], fontsize=8)
    ax.set_ylim(0, min(100, max(100 * r[3] for d in drawn for r in d["runs"]) * 1.15 + 5))
    ax.set_xlabel(
        f"bars: accuracy (mean over training seeds); points: each run, {CI_NOTE}\n"
        f"n = {summary['n']} problems; trained models at the checkpoint chosen on validation",
        fontsize=8,
    )
    _save(fig, out_png)
    return drawn


def _curve_points(label: str, entries: Sequence[Mapping[str, Any]]) -> list[tuple[int, float, float, float]]:
    """(step, accuracy, lo, hi) sorted by step; a step-less or repeated step has no place on a curve."""
    points = []
    for entry in entries:
        if entry["step"] is None:
            raise ValueError(
                f"curve {label!r}: entry {entry_key(entry)} has no step (pass it as a reference)"
            )
        points.append((entry["step"], entry["accuracy"], *_interval(entry)))
    points.sort()
    steps = [p[0] for p in points]
    if len(set(steps)) != len(steps):
        raise ValueError(f"curve {label!r}: repeated steps in {steps}")
    return points


def accuracy_curves(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    out_png: str | Path,
    title: str,
    references: Mapping[str, Mapping[str, Any]] | None = None,
    ylabel: str = ACCURACY_LABEL,
) -> dict[str, list[tuple]]:
    """Accuracy vs. step per label: each checkpoint a point with its Wilson interval (joined by a line
    only from MIN_POINTS_FOR_A_LINE points on); ``references`` (e.g. the base model) are horizontal dashed
    lines with their interval shaded.

    Returns {label: [(step, accuracy, lo, hi), ...]}, references as [(None, accuracy, lo, hi)].
    """
    fig, ax = _new_axes(title, ylabel)
    drawn: dict[str, list[tuple]] = {}
    all_steps = sorted({e["step"] for entries in curves.values() for e in entries if e["step"] is not None})
    ns = [e["n"] for entries in curves.values() for e in entries]
    for i, (label, entries) in enumerate(curves.items()):
        points = _curve_points(label, entries)
        _draw_points(
            ax,
            [p[0] for p in points],
            [100 * p[1] for p in points],
            [100 * p[2] for p in points],
            [100 * p[3] for p in points],
            f"C{i}",
            label,
            _dodge(i, len(curves), all_steps or [0]),
        )
        drawn[label] = points
    for j, (label, entry) in enumerate((references or {}).items(), start=len(drawn)):
        lo, hi = _interval(entry)
        ax.axhline(100 * entry["accuracy"], color=f"C{j}", linestyle="--", label=label)
        ax.axhspan(100 * lo, 100 * hi, color=f"C{j}", alpha=0.1)
        drawn[label] = [(None, entry["accuracy"], lo, hi)]
        ns.append(entry["n"])
    _step_ticks(ax, all_steps)
    ax.set_xlabel(f"training step (optimizer steps); {CI_NOTE}; {_n_note(ns)}", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, out_png)
    return drawn


def teacher_forced_label(metric: str, teacher_shots: int | None = None) -> str:
    """The y label of a teacher-forced metric; the KL names its teacher's shot count when known."""
    if metric == "nll":
        return "gold-answer NLL per answer token (nats)"
    if metric == "kl":
        k = "k" if teacher_shots is None else str(teacher_shots)
        return f"KL({k}-shot base teacher ‖ model) per answer token (nats)"
    return metric


def _metric_point(label: str, entry: Mapping[str, Any], metric: str) -> tuple[Any, float, float, float]:
    summary = (entry.get("teacher_forced") or {}).get(metric)
    if summary is None:
        raise ResultsError(
            f"{label!r}: entry {entry_key(entry)} has no teacher-forced metric {metric!r} "
            "(evaluate with --teacher_forced)"
        )
    return entry["step"], summary["mean"], *map(float, summary["ci95"])


def teacher_forced_curves(
    curves: Mapping[str, Sequence[Mapping[str, Any]]],
    metric: str,
    out_png: str | Path,
    title: str,
    references: Mapping[str, Mapping[str, Any]] | None = None,
    teacher_shots: int | None = None,
) -> dict[str, list[tuple]]:
    """A teacher-forced metric (``nll`` or ``kl``) vs. step per label, each checkpoint a point with its
    bootstrap 95% interval (joined by a line only from MIN_POINTS_FOR_A_LINE points on); ``references``
    (base model entries) are dashed lines with their interval shaded. ``teacher_shots`` names the KL's
    teacher in the axis label.

    Returns {label: [(step, mean, lo, hi), ...]}, references as [(None, mean, lo, hi)].
    """
    fig, ax = _new_axes(title, teacher_forced_label(metric, teacher_shots))
    drawn: dict[str, list[tuple]] = {}
    all_steps = sorted({e["step"] for entries in curves.values() for e in entries if e["step"] is not None})
    ns = [e["n"] for entries in curves.values() for e in entries]
    for i, (label, entries) in enumerate(curves.items()):
        points = sorted(_metric_point(label, e, metric) for e in entries)
        steps = [p[0] for p in points]
        if None in steps or len(set(steps)) != len(steps):
            raise ValueError(f"curve {label!r}: steps must be distinct checkpoint steps, got {steps}")
        _draw_points(
            ax,
            steps,
            [p[1] for p in points],
            [p[2] for p in points],
            [p[3] for p in points],
            f"C{i}",
            label,
            _dodge(i, len(curves), all_steps or [0]),
        )
        drawn[label] = points
    for j, (label, entry) in enumerate((references or {}).items(), start=len(drawn)):
        _, mean, lo, hi = _metric_point(label, entry, metric)
        ax.axhline(mean, color=f"C{j}", linestyle="--", label=label)
        ax.axhspan(lo, hi, color=f"C{j}", alpha=0.1)
        drawn[label] = [(None, mean, lo, hi)]
        ns.append(entry["n"])
    _step_ticks(ax, all_steps)
    ax.set_xlabel(
        f"training step (optimizer steps); error bars: 95% bootstrap interval over problems; {_n_note(ns)}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    _save(fig, out_png)
    return drawn


def loss_curves(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    out_png: str | Path,
    key: str = "train/ce_loss",
    title: str | None = None,
) -> dict[str, list[tuple[int, float]]]:
    """``key`` vs. step for each run's metrics rows (rows without ``key`` are skipped: not every metric
    is logged at every step). Axis label and default title say what the key measures (METRIC_LABELS).
    Returns {label: [(step, value), ...]} in row order."""
    ylabel, default_title = METRIC_LABELS.get(key, (key, key))
    fig, ax = _new_axes(title or default_title, ylabel)
    drawn: dict[str, list[tuple[int, float]]] = {}
    for label, rows in runs.items():
        points = [(row["step"], row[key]) for row in rows if key in row]
        bad = [
            step for step, value in points if isinstance(value, bool) or not isinstance(value, (int, float))
        ]
        if bad:
            raise MetricsError(f"run {label!r}: {key!r} is not a number at step(s) {bad[:5]}")
        if not points:
            raise MetricsError(f"run {label!r}: no metrics row has {key!r}")
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        drawn[label] = points
    ax.set_xlabel("optimizer step (values as logged, every training.log_every steps)")
    _integer_steps(ax)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_png)
    return drawn


def read_metrics_jsonl(path: str | Path) -> list[dict]:
    """The rows of a training run's metrics.jsonl; a malformed line fails naming file and line number."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise MetricsError(f"{path}: cannot read metrics file: {e.strerror or e}") from e
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise MetricsError(f"{path}:{lineno}: not valid JSON: {e.msg}") from e
        if not isinstance(row, dict):
            raise MetricsError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        if not isinstance(row.get("step"), int) or isinstance(row.get("step"), bool):
            raise MetricsError(f"{path}:{lineno}: missing or non-integer field 'step'")
        rows.append(row)
    if not rows:
        raise MetricsError(f"{path}: no metrics rows")
    return rows


# --------------------------------------------------------------------------------------------------
# Shared command-line plumbing of the figure scripts
# --------------------------------------------------------------------------------------------------


def split_label(spec: str) -> tuple[str, str]:
    """'NAME:LABEL' -> (NAME, LABEL); 'NAME' -> (NAME, NAME)."""
    name, sep, label = spec.partition(":")
    if not name:
        raise UserError(f"{spec!r}: expected NAME or NAME:LABEL")
    return name, (label if sep and label else name)


def checkpoint_entry(results: dict, condition: str, step: str) -> tuple[dict, str]:
    """A trained condition's entry at ``step`` ('best' or a number) and the label suffix saying which."""
    if step == "best":
        entry = best_of(checkpoint_entries(results, condition))
        return entry, f"(best ckpt = step {entry['step']}, selected on test)"
    try:
        wanted = int(step)
    except ValueError:
        raise UserError(f"--step must be 'best' or an integer, got {step!r}") from None
    entry = find_entry(results, condition, wanted, 0)
    if entry is None:
        have = [e["step"] for e in checkpoint_entries(results, condition)]
        raise ResultsError(
            f"condition {condition!r} has no 0-shot entry at step {wanted}; steps present: {have}"
        )
    return entry, f"(step {wanted})"


def checkpoint_entries(results: dict, condition: str) -> list[dict]:
    """A trained condition's 0-shot checkpoint entries, by step; none at all is an error naming what exists."""
    entries = [e for e in entries_for(results, condition, 0) if e["step"] is not None]
    if not entries:
        have = sorted({e["condition"] for e in results["results"]})
        raise ResultsError(
            f"no 0-shot checkpoint entries for condition {condition!r}; conditions present: {have}"
        )
    return entries


def base_references(icl: dict, source: str) -> list[tuple[str, dict]]:
    """[("Base 0-shot", entry), ("k-shot ICL", entry)] with k the largest shot count in the ICL file."""
    zero = find_entry(icl, BASE, None, 0)
    if zero is None:
        raise ResultsError(f"{source}: no 0-shot entry of condition {BASE!r} (step null)")
    shots = [
        e["shots"] for e in icl["results"] if e["condition"] == BASE and e["step"] is None and e["shots"] > 0
    ]
    if not shots:
        raise ResultsError(f"{source}: no k-shot (shots > 0) entry of condition {BASE!r}")
    k = max(shots)
    return [("Base 0-shot", zero), (f"{k}-shot ICL", find_entry(icl, BASE, None, k))]


def _comparison_parser(
    default_out: str, default_title: str, default_curve_out: str | None
) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Bar chart: base 0-shot, base k-shot ICL, SFT and SFT + few-shot distillation "
        "(and --extra conditions), with 95% Wilson intervals."
    )
    p.add_argument("--icl", required=True, help="result file with the base model's 0-shot and k-shot entries")
    p.add_argument("--evals", required=True, nargs="+", help="result files holding the trained conditions")
    p.add_argument("--sft", required=True, metavar="NAME", help="condition (run name) of the SFT baseline")
    p.add_argument(
        "--distill", required=True, metavar="NAME", help="condition of SFT + few-shot distillation"
    )
    p.add_argument(
        "--extra",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME:LABEL",
        help="more trained conditions",
    )
    p.add_argument(
        "--step",
        default="best",
        help="'best' (selected on test, labelled so) or a checkpoint step, for every trained condition",
    )
    p.add_argument("--out", default=default_out, help=f"bar chart PNG (default {default_out})")
    p.add_argument("--title", default=default_title)
    if default_curve_out:
        p.add_argument(
            "--out_curve",
            default=default_curve_out,
            help=f"accuracy-vs-step PNG (default {default_curve_out})",
        )
        p.add_argument("--curve_title", default=f"{default_title}: accuracy vs. training step")
    return p


def main_comparison(
    argv: Sequence[str] | None, default_out: str, default_title: str, default_curve_out: str | None = None
) -> dict:
    """The main comparison figure (and, with ``default_curve_out``, an accuracy-vs-step curve of the
    trained conditions against the base references). Returns {"bars": ..., "curves": ... or None}."""
    args = _comparison_parser(default_out, default_title, default_curve_out).parse_args(argv)
    icl = load_results(args.icl)
    pooled = load_pooled(args.evals)
    references = base_references(icl, args.icl)
    trained = [(args.sft, "SFT"), (args.distill, "SFT + few-shot distillation")]
    trained += [split_label(spec) for spec in args.extra]
    bars = list(references)
    for condition, label in trained:
        entry, suffix = checkpoint_entry(pooled, condition, args.step)
        bars.append((f"{label}\n{suffix}", entry))
    require_same_examples(bars)
    ylabel = accuracy_label(pooled["settings"])
    drawn = {"bars": comparison_bars(bars, args.out, args.title, ylabel), "curves": None}
    print(f"wrote {args.out}")
    if default_curve_out:
        curves = {label: checkpoint_entries(pooled, condition) for condition, label in trained}
        require_same_examples(references + [(label, e) for label, es in curves.items() for e in es])
        drawn["curves"] = accuracy_curves(curves, args.out_curve, args.curve_title, dict(references), ylabel)
        print(f"wrote {args.out_curve}")
    return drawn
