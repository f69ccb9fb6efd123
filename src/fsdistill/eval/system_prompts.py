"""Choose a system prompt worth distilling, on validation: each candidate's 0-shot accuracy with it against
the same model without it, paired, and the rule that picks one (or none).

    python scripts/select_system_prompt.py --baseline val_none.json \
        --candidates val_steps.json val_format.json val_careful.json --output selection.json

Each file is an eval_icl.py result (0 shots, --split validation) of the base model: the baseline without a
system prompt of ours, each candidate with its `task.system_prompt` (read from the file's settings), its
entry named by eval_icl.py --condition. A candidate qualifies when its gain over the baseline is positive
and its exact McNemar p is below alpha / (number of candidates) (Bonferroni: several candidates are tried
on the same problems); the qualifying candidate with the largest gain is chosen (ties: the first given).
Nothing qualifies: `chosen` is null, and nothing should be distilled. Test is never read here.
"""

from __future__ import annotations

import argparse

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.eval.compare import compare_pair
from fsdistill.eval.results import ResultsError, load_results, require_accuracy, require_same_examples
from fsdistill.files import write_json_atomic

KIND = "system_prompt_selection"


def zero_shot_entry(results: dict, path: str) -> dict:
    """The file's one 0-shot base-model entry (eval_icl.py), with accuracy."""
    entries = [e for e in results["results"] if e["step"] is None and e["shots"] == 0]
    if len(entries) != 1:
        raise ResultsError(
            f"{path}: expected one 0-shot base-model entry (eval_icl.py --shots 0), got {len(entries)}"
        )
    require_accuracy(entries[0])
    return entries[0]


def select(baseline: tuple[str, dict], candidates: list[tuple[str, dict]], alpha: float, n_boot: int) -> dict:
    """The selection dict (module docstring) from (path, results) of the baseline and of each candidate."""
    base_path, base_results = baseline
    if base_results["settings"].get("split") != "validation":
        raise UserError(
            f"{base_path}: a system prompt is chosen on the validation split, this file is not one"
        )
    base = zero_shot_entry(base_results, base_path)
    threshold = alpha / len(candidates)
    rows, labelled = [], [(base_path, base)]
    for path, results in candidates:
        entry = zero_shot_entry(results, path)
        labelled.append((path, entry))
        prompt = results["settings"].get("task.system_prompt")
        if prompt is None:
            raise UserError(f"{path}: a candidate needs task.system_prompt set (the baseline has none)")
        if results["settings"].get("split") != "validation":
            raise UserError(f"{path}: a candidate is scored on the validation split, this file is not")
        paired = compare_pair(entry, base, n_boot, 0)
        rows.append(
            {
                "name": entry["condition"],
                "system_prompt": prompt,
                "accuracy": entry["accuracy"],
                "ci95": entry["ci95"],
                "diff_pp": paired["diff_pp"],
                "diff_ci95_pp": paired["diff_ci95_pp"],
                "mcnemar_p": paired["mcnemar_p"],
                "only_with": paired["a_only_correct"],
                "only_without": paired["b_only_correct"],
                "qualifies": paired["diff_pp"] > 0 and paired["mcnemar_p"] < threshold,
            }
        )
    require_same_examples(labelled)
    qualifying = [r for r in rows if r["qualifies"]]
    chosen = (
        max(qualifying, key=lambda r: r["diff_pp"]) if qualifying else None
    )  # max keeps the first of ties
    return {
        "kind": KIND,
        "split": "validation",
        "n": base["n"],
        "model": base_results["settings"].get("model.name"),
        "rule": f"gain > 0 and exact McNemar p < {alpha} / {len(candidates)} candidates (Bonferroni); the largest gain",
        "alpha": alpha,
        "threshold": threshold,
        "baseline": {"name": base["condition"], "accuracy": base["accuracy"], "ci95": base["ci95"]},
        "candidates": rows,
        "chosen": None if chosen is None else chosen["name"],
        "n_boot": n_boot,
    }


@exit_on_user_error
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", required=True, help="eval_icl.py result without a system prompt of ours")
    p.add_argument("--candidates", required=True, nargs="+", help="eval_icl.py results, one per candidate")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--n_boot", type=int, default=10000)
    p.add_argument("--output", required=True)
    args = p.parse_args(argv)
    selection = select(
        (args.baseline, load_results(args.baseline)),
        [(path, load_results(path)) for path in args.candidates],
        args.alpha,
        args.n_boot,
    )
    selection["inputs"] = {"baseline": args.baseline, "candidates": list(args.candidates)}
    write_json_atomic(args.output, selection)
    print(system_prompts_markdown(selection), end="")
    print(f"chosen: {selection['chosen']}\nwrote {args.output}")
    return selection


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def system_prompts_markdown(selection: dict) -> str:
    """The selection as a Markdown table (the docs render it from the JSON, never typed in)."""
    b = selection["baseline"]
    lines = [
        f"| candidate system prompt ({selection['split']}, n = {selection['n']}, base model 0-shot) | accuracy "
        "with it [Wilson 95%] | with − without, points [paired bootstrap 95%] | exact McNemar p | qualifies |",
        "| --- | --- | --- | --- | --- |",
        f"| none (without) | {_pct(b['accuracy'])}% [{_pct(b['ci95'][0])}, {_pct(b['ci95'][1])}] | | | |",
    ]
    for r in selection["candidates"]:
        lo, hi = r["diff_ci95_pp"]
        mark = "**chosen**" if r["name"] == selection["chosen"] else ("yes" if r["qualifies"] else "no")
        lines.append(
            f"| {r['name']}: “{r['system_prompt']}” | {_pct(r['accuracy'])}% [{_pct(r['ci95'][0])}, "
            f"{_pct(r['ci95'][1])}] | {r['diff_pp']:+.1f} [{lo:+.1f}, {hi:+.1f}] | {r['mcnemar_p']:.2g} | {mark} |"
        )
    lines += ["", f"Rule: {selection['rule']}; chosen: {selection['chosen'] or 'none (nothing to distil)'}."]
    return "\n".join(lines) + "\n"
