"""One JSON that states an experiment's result: the base references, each method's runs (one per training
seed) at the checkpoint chosen on validation, their mean and spread, and the paired tests.

    python scripts/summarize_evals.py --icl icl_eval.json --evals test_eval.json --selected selected.json \
        --group "SFT=sft_seed1,sft_seed2" --group "SFT + 2-shot distillation=distill_seed1,distill_seed2" \
        --compare distill_seed1:sft_seed1 --compare distill_seed1:base@2 --output summary.json

Everything in it is read from the result files named (and the selection file that chose the checkpoints),
with the data they were all measured on ("data": each split file's sha256 and the data's version; inputs
measured on different data are refused); scripts/gen_summary_fig.py draws it. A group's runs must each have exactly one entry in --evals (the test
split is scored at the chosen checkpoint only), all on the same problems.
"""

from __future__ import annotations

import argparse
import statistics

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.eval.compare import compare_pair, side_entries
from fsdistill.eval.figures import base_references
from fsdistill.eval.results import (
    ResultsError,
    entries_for,
    load_pooled,
    load_results,
    require_accuracy,
    require_same_examples,
    shared_data,
)
from fsdistill.eval.select import read_selection
from fsdistill.files import write_json_atomic

KIND = "summary"


def parse_group(spec: str) -> tuple[str, list[str]]:
    """'LABEL=cond1,cond2' -> (LABEL, [cond1, cond2])."""
    label, sep, conditions = spec.partition("=")
    names = [c for c in conditions.split(",") if c]
    if not sep or not label or not names:
        raise UserError(f"--group {spec!r}: expected LABEL=CONDITION[,CONDITION...]")
    return label, names


def parse_comparison(spec: str) -> tuple[str, str]:
    """'A:B' -> (A, B), each a run name or NAME@K."""
    a, sep, b = spec.partition(":")
    if not sep or not a or not b:
        raise UserError(f"--compare {spec!r}: expected A:B (run names or NAME@SHOTS)")
    return a, b


def _single_entry(results: dict, condition: str) -> dict:
    entries = [e for e in entries_for(results, condition, 0) if e["step"] is not None]
    if len(entries) != 1:
        steps = [e["step"] for e in entries]
        raise ResultsError(
            f"condition {condition!r} has {len(entries)} checkpoint entries (steps {steps}); a summary reads "
            "the one chosen on validation (eval_checkpoints.py --selected)"
        )
    require_accuracy(entries[0])
    return entries[0]


def _run_record(entry: dict, selection: dict[str, int] | None) -> dict:
    if selection is not None and selection.get(entry["condition"]) != entry["step"]:
        raise ResultsError(
            f"{entry['condition']!r} is evaluated at step {entry['step']}, but the selection chose "
            f"{selection.get(entry['condition'])}"
        )
    return {k: entry[k] for k in ("condition", "method", "step", "accuracy", "n", "n_correct", "ci95")}


def summarize(
    icl: dict,
    icl_name: str,
    evals: dict,
    groups: list[tuple[str, list[str]]],
    comparisons: list[tuple[str, str]],
    selection: dict[str, int] | None,
    n_boot: int = 10000,
) -> dict:
    """The summary dict (see the module docstring); accuracies stay fractions as in the result files."""
    references = base_references(icl, icl_name)
    out_groups, labelled = [], list(references)
    for label, conditions in groups:
        entries = [_single_entry(evals, c) for c in conditions]
        labelled += [(f"{label} ({e['condition']})", e) for e in entries]
        accuracies = [e["accuracy"] for e in entries]
        out_groups.append(
            {
                "label": label,
                "runs": [_run_record(e, selection) for e in entries],
                "mean_accuracy": statistics.fmean(accuracies),
                "min_accuracy": min(accuracies),
                "max_accuracy": max(accuracies),
                "spread_pp": 100 * (max(accuracies) - min(accuracies)),
            }
        )
    require_same_examples(labelled)
    pooled = {**evals, "results": [*evals["results"], *icl["results"]]}
    rows = []
    for spec_a, spec_b in comparisons:
        a, b = side_entries(pooled, spec_a), side_entries(pooled, spec_b)
        if len(a) != 1 or len(b) != 1:
            raise ResultsError(f"--compare {spec_a}:{spec_b}: each side must be one entry")
        rows.append({"spec": [spec_a, spec_b], **compare_pair(*a.values(), *b.values(), n_boot, 0)})
    settings = evals["settings"]
    return {
        "kind": KIND,
        "task": settings.get("task", settings.get("task.name")),
        "split": settings.get("split"),
        "model": settings.get("model.name"),
        "n": references[0][1]["n"],
        "references": [
            {
                "label": label,
                **{k: e[k] for k in ("condition", "shots", "accuracy", "n", "n_correct", "ci95")},
            }
            for label, e in references
        ],
        "groups": out_groups,
        "comparisons": rows,
        "n_boot": n_boot,
    }


def read_selections(paths: list[str]) -> dict[str, int]:
    """{condition: step} of several selection files; a condition two of them choose differently is refused."""
    merged: dict[str, int] = {}
    for path in paths:
        for condition, step in read_selection(path).items():
            if merged.get(condition, step) != step:
                raise UserError(
                    f"--selected: {condition!r} is chosen at step {merged[condition]} in one file and {step} in {path}"
                )
            merged[condition] = step
    return merged


@exit_on_user_error
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--icl", required=True, help="eval_icl.py result file (the base model's 0- and k-shot entries)"
    )
    p.add_argument("--evals", required=True, nargs="+", help="result files of the chosen checkpoints (test)")
    p.add_argument(
        "--selected",
        nargs="+",
        help="the selection file(s) that chose the checkpoints (checked against --evals; several when the "
        "runs come from several experiments)",
    )
    p.add_argument(
        "--group",
        action="append",
        required=True,
        metavar="LABEL=RUN[,RUN...]",
        help="a method's runs (seeds)",
    )
    p.add_argument("--compare", action="append", default=[], metavar="A:B", help="a paired test, a - b")
    p.add_argument("--n_boot", type=int, default=10000)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    icl = load_results(args.icl)
    selection = read_selections(args.selected) if args.selected else None
    evals = load_pooled(args.evals)
    summary = summarize(
        icl,
        args.icl,
        evals,
        [parse_group(g) for g in args.group],
        [parse_comparison(c) for c in args.compare],
        selection,
        args.n_boot,
    )
    summary["inputs"] = {"icl": args.icl, "evals": list(args.evals), "selected": args.selected}
    # The data every number rests on (sha256 of each split file and the data's version), checked to be
    # the same for the base model's file and the trained models' files.
    summary["data"] = shared_data([(args.icl, icl), (" ".join(args.evals), evals)])
    write_json_atomic(args.output, summary)
    for r in summary["references"]:
        print(
            f"{r['label']}: {100 * r['accuracy']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"
        )
    for g in summary["groups"]:
        runs = ", ".join(
            f"{r['condition']} step {r['step']}: {100 * r['accuracy']:.1f}% [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]"
            for r in g["runs"]
        )
        print(f"{g['label']}: mean {100 * g['mean_accuracy']:.1f}% ({runs})")
    for c in summary["comparisons"]:
        lo, hi = c["diff_ci95_pp"]
        print(
            f"{c['spec'][0]} - {c['spec'][1]}: {c['diff_pp']:+.1f} pp [{lo:+.1f}, {hi:+.1f}], McNemar p = {c['mcnemar_p']:.3g} "
            f"({c['a_only_correct']} vs {c['b_only_correct']} discordant)"
        )
    print(f"wrote {args.output}")
    return summary


# ------------------------------------------------------------------------------------------------
# Markdown: the README's result tables are rendered from summary JSON (fsdistill.tools.result_tables)
# ------------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _accuracy_cell(record: dict) -> str:
    lo, hi = record["ci95"]
    return f"{_pct(record['accuracy'])}% [{_pct(lo)}, {_pct(hi)}]"


def _side_name(side: dict) -> str:
    if side["condition"] == "base":
        return f"base {side['shots']}-shot"
    return side["condition"]


def format_p_value(p: float | None) -> str:
    """A p-value as the tables and the prose show it: 0.21, 0.064, 9.3e-7."""
    if p is None:
        return ""
    if p >= 0.001:
        return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def signed(x: float, digits: int = 1) -> str:
    """x with its sign and a typographic minus: +3.0, −10.4."""
    return f"{x:+.{digits}f}".replace("-", "−")


def summary_markdown(summary: dict) -> str:
    """Two Markdown tables of a summary dict: accuracy (references, then each group's runs at their chosen
    step, with the groups' mean) and the paired tests (difference a − b in points with its paired
    bootstrap 95% interval, exact McNemar p, problems only a / only b got right)."""
    n = summary["n"]
    lines = [
        f"| {summary['split']}, n = {n} | runs (training seeds) | step chosen on validation | "
        "accuracy [Wilson 95%] |",
        "| --- | --- | --- | --- |",
    ]
    for ref in summary["references"]:
        lines.append(f"| {ref['label']} | | | {_accuracy_cell(ref)} |")
    for group in summary["groups"]:
        runs = group["runs"]
        cells = " / ".join(_accuracy_cell(r) for r in runs)
        if len(runs) > 1:
            cells += f"; mean {_pct(group['mean_accuracy'])}%"
        names = " / ".join(r["condition"] for r in runs)
        steps = " / ".join(str(r["step"]) for r in runs)
        lines.append(f"| {group['label']} | {names} | {steps} | {cells} |")
    if summary["comparisons"]:
        lines += [
            "",
            f"| a − b (same {n} problems) | difference, points [paired bootstrap 95%] | exact McNemar p | "
            "right only in a / only in b |",
            "| --- | --- | --- | --- |",
        ]
        for c in summary["comparisons"]:
            lo, hi = c["diff_ci95_pp"]
            lines.append(
                f"| {_side_name(c['a'])} − {_side_name(c['b'])} | {signed(c['diff_pp'])} "
                f"[{signed(lo)}, {signed(hi)}] | {format_p_value(c['mcnemar_p'])} | "
                f"{c['a_only_correct']} / {c['b_only_correct']} |"
            )
    return "\n".join(lines) + "\n"


def _verdict(lo: float, hi: float) -> str:
    """What a paired 95% interval of a − b says: better, worse, or no difference shown."""
    if lo > 0:
        return "better than"
    if hi < 0:
        return "worse than"
    return "not distinguishable from"


def summary_reading(summary: dict) -> str:
    """One line per paired test of a summary dict, the verdict read off its interval (better / worse / not
    distinguishable): the numbers of an experiment's reading, rendered so they cannot drift from the JSON."""
    lines = []
    for c in summary["comparisons"]:
        lo, hi = c["diff_ci95_pp"]
        a, b = _side_name(c["a"]), _side_name(c["b"])
        lines.append(
            f"- {a} ({_pct(c['a']['accuracy'])}%) is **{_verdict(lo, hi)}** {b} ({_pct(c['b']['accuracy'])}%): "
            f"{signed(c['diff_pp'])} points [{signed(lo)}, {signed(hi)}], exact McNemar p = "
            f"{format_p_value(c['mcnemar_p'])}, on the same {c['n']} problems."
        )
    return "\n".join(lines) + "\n"


def _accuracy_rows(summary: dict) -> dict[tuple[str, ...], tuple[str, str]]:
    """{key: (label, accuracy cell)} of a summary's references and groups, the cells as summary_markdown's."""
    rows = {
        (f"{r['condition']}@{r['shots']}",): (r["label"], _accuracy_cell(r)) for r in summary["references"]
    }
    for group in summary["groups"]:
        runs = group["runs"]
        cell = " / ".join(_accuracy_cell(r) for r in runs)
        if len(runs) > 1:
            cell += f"; mean {_pct(group['mean_accuracy'])}%"
        rows[tuple(r["condition"] for r in runs)] = (group["label"], cell)
    return rows


def before_after_markdown(summaries: list[dict]) -> str:
    """One Markdown table of the same runs' accuracy in two versions of an experiment: `summaries` are
    pairs (before, after), e.g. each experiment's results before and after a data fix. A row is a reference
    or a group of runs (keyed by its run names) of any summary; a run in two pairs must read the same in
    both (a reused result); a row one version lacks shows an empty cell."""
    if not summaries or len(summaries) % 2:
        raise UserError(
            f"a before-after table reads pairs of summaries (before, after), got {len(summaries)}"
        )
    rows: dict[tuple[str, ...], dict] = {}
    for i, summary in enumerate(summaries):
        side = ("before", "after")[i % 2]
        for key, (label, cell) in _accuracy_rows(summary).items():
            row = rows.setdefault(key, {"label": label})
            if row.setdefault(side, cell) != cell:
                raise UserError(f"{' / '.join(key)} reads {row[side]} in one summary, {cell} in another")
    n = sorted({s["n"] for s in summaries})
    lines = [
        f"| {summaries[0]['split']}, n = {' / '.join(map(str, n))} | runs | before [Wilson 95%] | after [Wilson 95%] |",
        "| --- | --- | --- | --- |",
    ]
    for key, row in rows.items():
        names = "" if key[0].startswith("base@") else " / ".join(key)
        cells = (row["label"], names, row.get("before", ""), row.get("after", ""))
        lines.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return "\n".join(lines) + "\n"
