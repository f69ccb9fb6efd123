"""The figures quoted in the README's prose, rendered from the committed JSON like the tables (never typed in).

A figure sits between two inline markers that say what it is and which file it comes from (paths relative
to the document's folder); the Markdown shows only the figure:

    the 2-shot base model gets the first step right on
    <!-- value: first-step experiments/twostep/icl_eval.json base@2 -->62.0%<!-- end value --> of problems

`python scripts/gen_result_tables.py` rewrites every figure from its file, `--check` (CI) fails when one
differs, so an edited or typed-in figure is caught as a stale table is. A marker and its figure stay on
one line. What a marker may say (RUNS: run names, comma-separated, or base@K for the base model with K
exemplars; A:B a paired test of a summary; FORMAT optional, last):

    accuracy SUMMARY RUNS [FORMAT]        test accuracy; several runs: their range ("76.4–79.6%")
    mean SUMMARY RUNS [FORMAT]            the runs' mean accuracy
    diff | interval | p | only-a | only-b SUMMARY A:B
                                          a paired test: a − b in points, its bootstrap 95% interval ("−14.6
                                          to −6.4"), exact McNemar p, problems only a / only b got right
    first-step EVAL RUNS [FORMAT]         twostep: share of answers whose first step, a + b = s, has the
                                          question's sum (the first "x + y = s" written)
    two-step-format EVAL RUNS [FORMAT]    twostep: share of answers written "a + b = s, s * c = p. Answer: p"
    shared-answer EVAL [FORMAT]           twostep: share of EVAL's problems with a training problem of the
                                          same (a + b, c), hence the same answer
    twins EVAL ROLE [FORMAT]              twostep: EVAL's problems whose swapped-operand twin is in ROLE's
                                          split (train, validation, test)
    distinct EVAL ROLE [FORMAT]           twostep: distinct problems up to operand order in ROLE's split
    twin-accuracy EVAL RUNS ROLE with|without [FORMAT]
                                          twostep: accuracy on EVAL's problems whose twin is / is not in
                                          ROLE's split
    field JSON KEY[.KEY...] [FORMAT]      a number in any JSON file (a timing file's total_seconds, ...)
    metric RUN_DIR KEY first|last N [mean|min|max|range] [FORMAT]
                                          a logged value of a run (metrics.jsonl) over its first / last N
                                          logged steps

FORMAT: pct:D (a percentage, D decimals), num:D, signed:D (with its sign, "−0.2", "+3.0"), abs:D (the
size, "10.4" for −10.4), minutes:D (seconds shown in minutes), int (with thousands separators, "1,609"). The twostep
figures read the evaluated problems themselves: the split files are regenerated from the version the
result file's provenance records (fsdistill.tools.twostep.rows_of_file) and must have the sha256 it
records.
"""

from __future__ import annotations

import inspect
import json
import re
import statistics
from collections.abc import Callable
from pathlib import Path

from fsdistill.errors import UserError
from fsdistill.eval.compare import side_entries
from fsdistill.eval.results import load_results
from fsdistill.eval.summary import format_p_value, signed
from fsdistill.tools import twostep

VALUE = re.compile(r"<!-- value: (?P<spec>[^>\n]+?) -->(?P<text>[^\n]*?)<!-- end value -->")
FORMAT = re.compile(r"(pct|num|signed|abs|minutes):(\d)|int")


class FigureError(UserError):
    """A prose figure's marker that cannot be rendered; the message names the document and line."""


# --------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------


def formatted(value: float, fmt: str) -> str:
    """One value in a FORMAT (module docstring)."""
    match = FORMAT.fullmatch(fmt)
    if match is None:
        raise FigureError(f"format {fmt!r}: expected pct:D, num:D, signed:D, abs:D, minutes:D or int")
    if fmt == "int":
        return f"{round(value):,}"
    kind, digits = match[1], int(match[2])
    if kind == "pct":
        return f"{100 * value:.{digits}f}%"
    if kind == "signed":
        return signed(value, digits)
    if kind == "minutes":
        return f"{value / 60:.{digits}f}"
    return f"{abs(value) if kind == 'abs' else value:.{digits}f}"


def value_range(values: list[float], fmt: str) -> str:
    """One value, or "lo–hi" when the values differ as formatted (the unit once: "92–93%")."""
    lo, hi = formatted(min(values), fmt), formatted(max(values), fmt)
    if lo == hi:
        return lo
    return f"{lo.removesuffix('%')}–{hi}"


# --------------------------------------------------------------------------------------------------
# Figures from a summary (fsdistill.eval.summary)
# --------------------------------------------------------------------------------------------------


def _summary_run(summary: dict, name: str) -> dict:
    """A summary's record of a run, or of the base model (base@K)."""
    for ref in summary["references"]:
        if f"{ref['condition']}@{ref['shots']}" == name:
            return ref
    for group in summary["groups"]:
        for run in group["runs"]:
            if run["condition"] == name:
                return run
    known = [f"{r['condition']}@{r['shots']}" for r in summary["references"]]
    known += [r["condition"] for g in summary["groups"] for r in g["runs"]]
    raise FigureError(f"no run {name!r} in the summary (it has {', '.join(known)})")


def _comparison(summary: dict, spec: str) -> dict:
    for row in summary["comparisons"]:
        if ":".join(row["spec"]) == spec:
            return row
    known = [":".join(r["spec"]) for r in summary["comparisons"]]
    raise FigureError(f"no paired test {spec!r} in the summary (it has {', '.join(known)})")


def accuracy(summary: dict, runs: str, fmt: str = "pct:1") -> str:
    return value_range([_summary_run(summary, r)["accuracy"] for r in runs.split(",")], fmt)


def mean(summary: dict, runs: str, fmt: str = "pct:1") -> str:
    return formatted(statistics.fmean(_summary_run(summary, r)["accuracy"] for r in runs.split(",")), fmt)


def diff(summary: dict, spec: str, fmt: str = "signed:1") -> str:
    return formatted(_comparison(summary, spec)["diff_pp"], fmt)


def interval(summary: dict, spec: str, fmt: str = "signed:1") -> str:
    lo, hi = _comparison(summary, spec)["diff_ci95_pp"]
    return f"{formatted(lo, fmt)} to {formatted(hi, fmt)}"


def p_value(summary: dict, spec: str) -> str:
    return format_p_value(_comparison(summary, spec)["mcnemar_p"])


def only_a(summary: dict, spec: str) -> str:
    return str(_comparison(summary, spec)["a_only_correct"])


def only_b(summary: dict, spec: str) -> str:
    return str(_comparison(summary, spec)["b_only_correct"])


# --------------------------------------------------------------------------------------------------
# twostep figures from an evaluation result file and the problems it evaluated
# --------------------------------------------------------------------------------------------------


def _split_rows(results: dict, role: str) -> list[dict]:
    """The rows of the split file that served as `role` in a result file, regenerated from its provenance."""
    prov = results["provenance"]
    path = (prov.get("data_files") or {}).get(role)
    if path is None:  # written before roles were recorded: the file named after the split
        path = next((p for p in prov.get("data_sha256") or {} if Path(p).stem == role), None)
    if path is None:
        raise FigureError(f"its provenance names no {role} file")
    versions = prov.get("data_version") or {}
    record = versions.get(str(Path(path).parent / twostep.VERSION_FILE))
    return twostep.rows_of_file(prov["data_sha256"][path], record)


def _evaluated(results: dict) -> list[dict]:
    """The problems an evaluation result file scored (its split's rows; examples index into them)."""
    return _split_rows(results, results["settings"]["split"])


def _entry(results: dict, name: str) -> dict:
    """The one entry of a run (or base@K) in an evaluation result file."""
    entries = side_entries(results, name)
    if len(entries) != 1:
        raise FigureError(f"{name!r} has {len(entries)} entries (steps {sorted(entries)}); name one")
    return next(iter(entries.values()))


def _answer_shares(results: dict, runs: str, judge: Callable[[dict, dict], bool | None], fmt: str) -> str:
    """The share of each run's examples judge(example, problem) calls True, among those it does not call
    None (not counted); several runs: their range."""
    rows = _evaluated(results)
    shares = []
    for name in runs.split(","):
        judged = [judge(e, rows[e["index"]]) for e in _entry(results, name)["examples"]]
        counted = [j for j in judged if j is not None]
        if not counted:
            raise FigureError(f"{name!r}: no example to count")
        shares.append(sum(counted) / len(counted))
    return value_range(shares, fmt)


def first_step(results: dict, runs: str, fmt: str = "pct:1") -> str:
    return _answer_shares(
        results, runs, lambda e, row: twostep.first_step_right(e["prediction"] or "", row), fmt
    )


def two_step_format(results: dict, runs: str, fmt: str = "pct:1") -> str:
    return _answer_shares(results, runs, lambda e, row: twostep.is_two_step(e["prediction"] or ""), fmt)


def distinct(results: dict, role: str, fmt: str = "int") -> str:
    """How many distinct problems up to operand order ({a, b}, c) role's split holds."""
    return formatted(len({twostep.twin_key(r) for r in _split_rows(results, role)}), fmt)


def twin_accuracy(results: dict, runs: str, role: str, which: str, fmt: str = "pct:1") -> str:
    """Accuracy on the evaluated problems whose twin is (with) or is not (without) in role's split."""
    if which not in ("with", "without"):
        raise FigureError(f"twin-accuracy: expected with|without, got {which!r}")
    elsewhere = twostep.twin_elsewhere(_evaluated(results), _split_rows(results, role))  # by row index
    wanted = which == "with"
    return _answer_shares(
        results, runs, lambda e, row: e["correct"] if elsewhere[e["index"]] == wanted else None, fmt
    )


def shared_answer(results: dict, fmt: str = "pct:1") -> str:
    splits = {"train": _split_rows(results, "train"), "evaluated": _evaluated(results)}
    return formatted(twostep.shared_sum_and_multiplier(splits, "evaluated"), fmt)


def twins(results: dict, role: str, fmt: str = "int") -> str:
    return formatted(sum(twostep.twin_elsewhere(_evaluated(results), _split_rows(results, role))), fmt)


# --------------------------------------------------------------------------------------------------
# Any JSON number; a run's logged values
# --------------------------------------------------------------------------------------------------

STATISTICS = {"mean": statistics.fmean, "min": min, "max": max}


def field(data: dict, keys: str, fmt: str = "int") -> str:
    """The number at a dotted key path of a JSON file ("seconds.test_eval")."""
    value = data
    for key in keys.split("."):
        if not isinstance(value, dict) or key not in value:
            raise FigureError(f"no key {keys!r} (stopped at {key!r})")
        value = value[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise FigureError(f"{keys!r} is {value!r}, not a number")
    return formatted(value, fmt)


def metric(run_dir: Path, key: str, end: str, n: str, *options: str) -> str:
    """A logged value over the first / last n logged steps: its mean (default), min, max or range, in a
    format (default num:2)."""
    how = [o for o in options if o in STATISTICS or o == "range"]
    fmt = [o for o in options if o not in how]
    if end not in ("first", "last") or not n.isdigit() or len(how) > 1 or len(fmt) > 1:
        raise FigureError(
            f"metric: expected KEY first|last N [mean|min|max|range] [FORMAT], got {key} {end} {n}"
        )
    path = run_dir / "metrics.jsonl"
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise FigureError(f"cannot read {path} ({e})") from None
    values = [r[key] for r in records if r.get(key) is not None]
    if len(values) < int(n):
        raise FigureError(f"{path}: {len(values)} logged values of {key!r}, fewer than {n}")
    window = values[: int(n)] if end == "first" else values[-int(n) :]
    how, fmt = (how or ["mean"])[0], (fmt or ["num:2"])[0]
    if how == "range":
        return value_range(window, fmt)
    return formatted(STATISTICS[how](window), fmt)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------

FROM_JSON = {
    "field": field,
    "accuracy": accuracy,
    "mean": mean,
    "diff": diff,
    "interval": interval,
    "p": p_value,
    "only-a": only_a,
    "only-b": only_b,
}
FROM_EVAL = {
    "first-step": first_step,
    "two-step-format": two_step_format,
    "shared-answer": shared_answer,
    "twins": twins,
    "twin-accuracy": twin_accuracy,
    "distinct": distinct,
}
QUANTITIES = (*FROM_JSON, *FROM_EVAL, "metric")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FigureError(f"cannot read {path} ({e})") from None


def figure(spec: str, root: Path) -> str:
    """The text of one marker's figure: QUANTITY FILE ARGS... (module docstring)."""
    quantity, *args = spec.split()
    if quantity not in QUANTITIES:
        raise FigureError(f"unknown quantity {quantity!r} (known: {', '.join(QUANTITIES)})")
    if not args:
        raise FigureError(f"{quantity}: names no file")
    path, rest = root / args[0], args[1:]
    if quantity in FROM_JSON:
        function, read = FROM_JSON[quantity], _read_json
    elif quantity in FROM_EVAL:
        function, read = FROM_EVAL[quantity], load_results
    else:
        function, read = metric, Path
    try:
        inspect.signature(function).bind(None, *rest)
    except TypeError:
        raise FigureError(
            f"{quantity}: wrong arguments {' '.join(rest)!r} (fsdistill.tools.prose_figures)"
        ) from None
    return function(read(path), *rest)


def render_figures(text: str, root: Path, where: str) -> str:
    """The document with every prose figure rewritten from its file; an error names the document's line."""

    def value(match: re.Match) -> str:
        line = text.count("\n", 0, match.start()) + 1
        try:
            rendered = figure(match["spec"], root)
        except UserError as e:
            raise FigureError(f"{where}:{line}: <!-- value: {match['spec']} -->: {e}") from None
        return f"<!-- value: {match['spec']} -->{rendered}<!-- end value -->"

    rendered = VALUE.sub(value, text)
    unmatched = text.count("<!-- value: ") - len(VALUE.findall(text))
    if unmatched:
        raise FigureError(
            f"{where}: {unmatched} '<!-- value: ...' marker(s) without '<!-- end value -->' on the same line"
        )
    return rendered
