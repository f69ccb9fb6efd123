"""The one schema of every evaluation result file, with its writer, reader and checks.

Every evaluation script writes through :func:`save_results` and every figure or comparison reads
through :func:`load_results`, so a file is checked the same way everywhere and a malformed one fails
when it is opened, naming the file, the entry and the field, not half-way through a figure.

File layout (``schema_version`` 1)::

    {
      "schema_version": 1,
      "kind": "eval",         # files of earlier versions say "gsm8k_eval" (read, never written)
      "settings": {...},      # free-form; result_settings: script, split, the config's identity
      "provenance": {"git_commit", "git_dirty", "packages", "data_sha256", "data_files", "data_version",
                     "tokenizer", "created",
                     optional "resumed": [provenance of each later session that appended entries],
                     optional "merged_from": [{"file", "provenance"} of each merged input]},
      "results": [entry, ...]
    }
    entry = {
      "condition": str,        # a run's name, or "base" for the untrained model
      "method": str,           # "base", "sft", "few_shot_distillation", ...
      "step": int | None,      # checkpoint step; None for the base model
      "shots": int,            # exemplars in the evaluated prompt (0 for every trained student)
      "checkpoint": str | None,
      "accuracy": float, "n": int, "n_correct": int, "ci95": [lo, hi],     # Wilson interval
      "examples": [{"index", "prediction", "extracted", "gold", "correct", ...per-example metrics}],
      "teacher_forced": None | {metric: {"mean": float, "ci95": [lo, hi], "n": int}},
      optional "run_overrides": {key: {"run": value, "evaluated": value}},   # settings that defined the
                               # model's training (task, template, data source) which this evaluation
                               # changed, by eval_checkpoints.py --override_run_settings
    }

An entry is identified by (condition, step, shots): a file holds at most one entry per key.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fsdistill.config import TEACHER_INPUT_KEYS, Config, config_identity
from fsdistill.errors import UserError
from fsdistill.eval.stats import bootstrap_mean_ci, wilson_interval
from fsdistill.files import file_lock, git_state, package_versions, write_json_atomic
from fsdistill.methods import METHODS as TRAINING_METHODS

SCHEMA_VERSION = 1
KIND = "eval"
KINDS_READ = (KIND, "gsm8k_eval")  # "gsm8k_eval": the same schema, written before tasks other than GSM8K
BASE = "base"
METHODS = (BASE, *TRAINING_METHODS)
# Settings that change only throughput, not what is measured: a resumed sweep or a merge may differ
# on them (the file keeps its first value).
RUNTIME_SETTINGS = frozenset(
    {"batch_size", "tensor_parallel_size", "gpu_memory_utilization", "teacher_forced_batch_size"}
)

SUBSET_SEED = 42  # the original's torch.manual_seed(42); torch.randperm(n)[:k] (evaluate.subset_indices)

_TOP_FIELDS = {"schema_version": int, "kind": str, "settings": dict, "provenance": dict, "results": list}
_PROVENANCE_FIELDS = ("git_commit", "packages", "data_sha256", "tokenizer", "created")
# The data fields of a provenance (fsdistill.tasks.rows.data_provenance); files written before the last two
# existed have data_sha256 only.
DATA_PROVENANCE = ("data_sha256", "data_files", "data_version")
_ENTRY_FIELDS = {
    "condition": str,
    "method": str,
    "step": (int, type(None)),
    "shots": int,
    "checkpoint": (str, type(None)),
    "accuracy": (int, float, type(None)),  # null: not generated (eval.generate=false), teacher-forced only
    "n": int,
    "n_correct": (int, type(None)),
    "ci95": (list, type(None)),
    "examples": list,
    "teacher_forced": (dict, type(None)),
}
_EXAMPLE_FIELDS = {
    "index": int,
    "prediction": (str, type(None)),
    "extracted": (str, type(None)),
    "gold": str,
    "correct": (bool, type(None)),
}
_METRIC_FIELDS = {"mean": (int, float), "ci95": list, "n": int}
_MISSING = object()


class ResultsError(UserError):
    """A result file (or an entry about to be written) that breaks the schema or another file's settings."""


# What a result file's numbers do not depend on (config_identity patterns): training and distillation
# settings, throughput knobs and where runs are written. The rest of the config (model, tokenizer, chat
# template, task, data, the exemplar protocol of k-shot prompts and of the teacher-forced teacher, the
# evaluation settings) is the file's identity: a resumed sweep must match it (load_or_new).
RESULT_MAY_DIFFER = (
    "training.*",
    "!training.seed",  # draws the validation rows
    "lora.*",
    "distill.*",
    "teacher.*",
    "output.*",
    "fewshot.selection",
    "fewshot.shuffle_answers",
    "fewshot.shuffle_mode",
    "data.num_workers",
    "data.group_by_length",
    "data.max_student_len",
    "data.max_teacher_len",
    "model.gradient_checkpointing",
    "eval.batch_size",
    "eval.tensor_parallel_size",
    "eval.gpu_memory_utilization",
    "eval.teacher_forced_batch_size",
    "eval.icl_shots",  # each entry records its shot count
    # How a vLLM engine runs (compiled or eager) changes its speed, not what greedy decoding answers
    # (experiments/vllm/agreement.json); eval.backend, which picks the engine, stays in the identity.
    "vllm.*",
)


def result_settings(cfg: Config, script: str, split: str, teacher: dict | None = None) -> dict:
    """What a result file's numbers depend on: the script, the split, and the config's identity; with
    teacher-forced metrics also the teacher's (its model and context settings, and `teacher`: the
    identity of what it reads, modeling.identity.teacher_identity)."""
    # The exemplar protocol and the teacher only matter to teacher-forced metrics (their teacher); where
    # exemplars come from (fewshot.pool) matters to k-shot prompts too. training.seed only draws validation
    # rows. Teacher-forced evaluation keeps each row's own context, so teacher.shuffle_context may differ.
    if cfg.eval.teacher_forced:
        teacher_keys = tuple(f"!{k}" for k in TEACHER_INPUT_KEYS if k != "teacher.shuffle_context")
        may_differ = RESULT_MAY_DIFFER + teacher_keys
    else:
        may_differ = RESULT_MAY_DIFFER + ("fewshot.*", "!fewshot.pool")
    if cfg.data.validation_size == 0:
        may_differ += ("training.seed",)
    return {
        "script": script,
        "split": split,
        "task": cfg.task.name,
        "subset_seed": SUBSET_SEED,
        **config_identity(cfg, may_differ),
        **({"teacher": teacher} if cfg.eval.teacher_forced and teacher else {}),
    }


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def _json_normalised(value: Any, what: str) -> Any:
    """value as it will read back from JSON (tuples become lists, ...), refusing what JSON cannot hold."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise ResultsError(f"{what} is not JSON-serialisable: {e}") from e


def new_results(settings: dict, provenance: dict) -> dict:
    """An empty result file with these settings and provenance."""
    results = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "settings": _json_normalised(settings, "settings"),
        "provenance": _json_normalised(provenance, "provenance"),
        "results": [],
    }
    validate_results(results, "new_results()")
    return results


def _metric_summary(name: str, values: Sequence[float], n_examples: int) -> dict:
    if len(values) != n_examples:
        raise ResultsError(
            f"teacher-forced metric {name!r} has {len(values)} values for {n_examples} examples"
        )
    # numbers.Real also admits numpy scalars, which an evaluation loop often hands over.
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ResultsError(f"teacher-forced metric {name!r} has a non-numeric or non-finite value")
    mean, lo, hi = bootstrap_mean_ci(values)
    return {"mean": mean, "ci95": [lo, hi], "n": len(values)}


def make_entry(
    condition: str,
    method: str,
    step: int | None,
    shots: int,
    examples: Sequence[Mapping[str, Any]],
    checkpoint: str | None = None,
    teacher_forced_metrics: Mapping[str, Sequence[float]] | None = None,
    run_overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict:
    """One evaluated (condition, step, shots): accuracy, Wilson ci95 and per-example records.

    ``run_overrides`` ({key: {"run": ..., "evaluated": ...}}): training-defining settings this evaluation
    changed on purpose; recorded in the entry when given.

    Each teacher-forced metric is a list aligned with ``examples``; its mean and bootstrap ci95 go in
    ``teacher_forced`` and each value is copied into its example under the metric's name. The input
    example dicts are not modified.
    """
    rows = [dict(ex) for ex in examples]
    if not rows:
        raise ResultsError(f"make_entry({condition!r}, step={step}, shots={shots}): no examples")
    teacher_forced = None
    if teacher_forced_metrics:
        teacher_forced = {}
        for name, values in teacher_forced_metrics.items():
            if name in _EXAMPLE_FIELDS:
                raise ResultsError(f"teacher-forced metric name {name!r} clashes with an example field")
            teacher_forced[name] = _metric_summary(name, values, len(rows))
            for row, value in zip(rows, values):
                row[name] = float(value)
    n = len(rows)
    if any("prediction" in row for row in rows):
        n_correct = sum(1 for row in rows if row.get("correct") is True)
        accuracy, ci95 = n_correct / n, list(wilson_interval(n_correct, n))
    else:  # teacher-forced only: nothing was generated
        for row in rows:
            row.update(prediction=None, extracted=None, correct=None)
        n_correct = accuracy = ci95 = None
    entry = {
        "condition": condition,
        "method": method,
        "step": step,
        "shots": shots,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "accuracy": accuracy,
        "n": n,
        "n_correct": n_correct,
        "ci95": ci95,
        "examples": rows,
        "teacher_forced": teacher_forced,
    }
    if run_overrides:
        entry["run_overrides"] = {key: dict(change) for key, change in run_overrides.items()}
    validate_entry(entry, f"make_entry({condition!r}, step={step}, shots={shots})")
    return _json_normalised(entry, f"entry {condition!r}")


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _type_name(t: type | tuple) -> str:
    types = t if isinstance(t, tuple) else (t,)
    return " or ".join("null" if x is type(None) else x.__name__ for x in types)


def _check_fields(obj: Any, fields: Mapping[str, type | tuple], where: str) -> None:
    """Every field present with its type; bool is refused where an int is expected (JSON true is not 1)."""
    if not isinstance(obj, dict):
        raise ResultsError(f"{where}: expected an object, got {type(obj).__name__}")
    for name, t in fields.items():
        if name not in obj:
            raise ResultsError(f"{where}: missing field {name!r}")
        value = obj[name]
        types = t if isinstance(t, tuple) else (t,)
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise ResultsError(f"{where}: field {name!r} must be {_type_name(t)}, got {value!r:.60}")


def _check_interval(ci: list, where: str) -> None:
    if len(ci) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in ci):
        raise ResultsError(f"{where}: 'ci95' must be [lo, hi], got {ci!r:.60}")
    if not ci[0] <= ci[1]:
        raise ResultsError(f"{where}: 'ci95' lo > hi: {ci!r}")


# _EXAMPLE_FIELDS as exact types, for the fast check of every example (JSON yields exactly these types, and
# bool is not an int here, as in _check_fields).
_EXAMPLE_TYPES = tuple(
    (name, frozenset(t if isinstance(t, tuple) else (t,))) for name, t in _EXAMPLE_FIELDS.items()
)


def _examples_are_valid(examples: list) -> bool:
    """True when every example has every field with its type: the check _check_fields makes, a column at
    a time (a result file may hold millions of examples; one Python call per field per example is most of
    the time it takes to read them)."""
    if set(map(type, examples)) - {dict}:
        return False
    return all(
        set(map(type, [ex.get(name, _MISSING) for ex in examples])) <= types for name, types in _EXAMPLE_TYPES
    )


def _check_examples(entry: dict, where: str) -> None:
    examples = entry["examples"]
    if _examples_are_valid(examples) and len({ex["index"] for ex in examples}) == len(examples):
        return
    _explain_examples(entry, where)


def _explain_examples(entry: dict, where: str) -> None:
    """Raise the ResultsError of the first bad example (field by field), or of the first repeated index."""
    seen: set[int] = set()
    for i, ex in enumerate(entry["examples"]):
        _check_fields(ex, _EXAMPLE_FIELDS, f"{where}, examples[{i}]")
        if ex["index"] in seen:
            raise ResultsError(f"{where}, examples[{i}]: duplicate example index {ex['index']}")
        seen.add(ex["index"])


def _check_counts(entry: dict, where: str) -> None:
    """n, n_correct and accuracy agree with the examples, so no summary can drift from its data.

    An entry without generation (accuracy null) has no prediction or correctness anywhere and must carry
    teacher-forced metrics instead.
    """
    n = len(entry["examples"])
    if entry["n"] != n:
        raise ResultsError(f"{where}: field 'n' is {entry['n']} but there are {n} examples")
    if entry["accuracy"] is None:
        generated = [f for f in ("n_correct", "ci95") if entry[f] is not None]
        generated += [
            f"examples[{i}].{f}"
            for i, ex in enumerate(entry["examples"])
            for f in ("prediction", "extracted", "correct")
            if ex[f] is not None
        ][:3]
        if generated:
            raise ResultsError(f"{where}: accuracy is null (nothing generated) but {generated} are set")
        if not entry["teacher_forced"]:
            raise ResultsError(f"{where}: an entry without accuracy must carry teacher_forced metrics")
        return
    missing = [f for f in ("n_correct", "ci95") if entry[f] is None]
    missing += [
        f"examples[{i}].{f}"
        for i, ex in enumerate(entry["examples"])
        for f in ("prediction", "correct")
        if ex[f] is None
    ][:3]
    if missing:
        raise ResultsError(f"{where}: accuracy is set but {missing} are null")
    _check_interval(entry["ci95"], where)
    n_correct = sum(ex["correct"] for ex in entry["examples"])
    if entry["n_correct"] != n_correct:
        raise ResultsError(
            f"{where}: field 'n_correct' is {entry['n_correct']} but {n_correct} examples are correct"
        )
    if n and not math.isclose(entry["accuracy"], n_correct / n, abs_tol=1e-12):
        raise ResultsError(
            f"{where}: field 'accuracy' is {entry['accuracy']} but n_correct/n is {n_correct / n}"
        )


def validate_entry(entry: Any, where: str = "entry") -> None:
    """Raise ResultsError naming ``where`` and the field when an entry breaks the schema."""
    _check_fields(entry, _ENTRY_FIELDS, where)
    if entry["method"] not in METHODS:
        raise ResultsError(f"{where}: field 'method' is {entry['method']!r}, expected one of {METHODS}")
    if entry["method"] == BASE and entry["step"] is not None:
        raise ResultsError(f"{where}: field 'step' must be null for the base model, got {entry['step']}")
    if entry["shots"] < 0:
        raise ResultsError(f"{where}: field 'shots' must be >= 0, got {entry['shots']}")
    if entry["step"] is not None and entry["step"] < 0:
        raise ResultsError(f"{where}: field 'step' must be >= 0 (optimizer steps), got {entry['step']}")
    _check_examples(entry, where)
    _check_counts(entry, where)
    if not isinstance(entry.get("run_overrides", {}), dict):
        raise ResultsError(
            f"{where}: field 'run_overrides' must be an object, got {entry['run_overrides']!r:.60}"
        )
    for name, summary in (entry["teacher_forced"] or {}).items():
        _check_fields(summary, _METRIC_FIELDS, f"{where}, teacher_forced[{name!r}]")
        _check_interval(summary["ci95"], f"{where}, teacher_forced[{name!r}]")


def validate_results(results: Any, source: str) -> None:
    """Raise ResultsError naming ``source`` (a file) when a whole result file breaks the schema."""
    if not isinstance(results, dict):
        raise ResultsError(f"{source}: expected a JSON object, got {type(results).__name__}")
    if results.get("kind") not in KINDS_READ:
        raise ResultsError(
            f"{source}: 'kind' is {results.get('kind')!r}, not an evaluation result file of this project ({KIND!r})"
        )
    if results.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(
            f"{source}: schema_version {results.get('schema_version')!r}, this code reads version {SCHEMA_VERSION}"
        )
    _check_fields(results, _TOP_FIELDS, source)
    for name in _PROVENANCE_FIELDS:
        if name not in results["provenance"]:
            raise ResultsError(f"{source}: provenance: missing field {name!r}")
    keys: dict[tuple, int] = {}
    for i, entry in enumerate(results["results"]):
        validate_entry(entry, f"{source}: results[{i}]")
        key = entry_key(entry)
        if key in keys:
            raise ResultsError(
                f"{source}: results[{i}] repeats (condition, step, shots) {key} of results[{keys[key]}]"
            )
        keys[key] = i


# --------------------------------------------------------------------------------------------------
# Lookup and update
# --------------------------------------------------------------------------------------------------


def entry_key(entry: Mapping[str, Any]) -> tuple[str, int | None, int]:
    """(condition, step, shots): what identifies an entry within a file."""
    return entry["condition"], entry["step"], entry["shots"]


def find_entry(results: dict, condition: str, step: int | None = None, shots: int = 0) -> dict | None:
    """The entry with exactly this key, or None. step=None is the base model's (step-less) entry."""
    for entry in results["results"]:
        if entry_key(entry) == (condition, step, shots):
            return entry
    return None


def entries_for(results: dict, condition: str, shots: int = 0) -> list[dict]:
    """Every entry of a condition at this shot count, sorted by step (the base model's None first)."""
    found = [e for e in results["results"] if e["condition"] == condition and e["shots"] == shots]
    return sorted(found, key=lambda e: -1 if e["step"] is None else e["step"])


def require_accuracy(entry: Mapping[str, Any]) -> None:
    """Accuracy-reading code calls this: a teacher-forced-only entry has none."""
    if entry["accuracy"] is None:
        raise ResultsError(
            f"entry {entry_key(entry)} has no accuracy: it was evaluated without generation "
            "(eval.generate=false), with teacher-forced metrics only"
        )


def best_of(entries: Sequence[dict]) -> dict:
    """The most accurate entry (ties: the earliest step).

    Choosing the checkpoint by its accuracy on the evaluated split is "selected on test" when that split
    is the test split: the number is optimistic, and every figure that shows it says so.
    """
    if not entries:
        raise ResultsError("best_of: no entries")
    for entry in entries:
        require_accuracy(entry)
    ordered = sorted(entries, key=lambda e: -1 if e["step"] is None else e["step"])
    return max(ordered, key=lambda e: e["accuracy"])  # max keeps the first of equals


def paired_correctness(entry_a: dict, entry_b: dict) -> tuple[list[bool], list[bool]]:
    """Both entries' correctness aligned by example index; they must cover exactly the same examples."""
    require_accuracy(entry_a)
    require_accuracy(entry_b)
    a = {ex["index"]: ex["correct"] for ex in entry_a["examples"]}
    b = {ex["index"]: ex["correct"] for ex in entry_b["examples"]}
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ResultsError(
            f"{entry_key(entry_a)} and {entry_key(entry_b)} were scored on different examples: "
            f"{len(only_a)} indices only in the first (e.g. {only_a[:5]}), "
            f"{len(only_b)} only in the second (e.g. {only_b[:5]})"
        )
    order = sorted(a)
    return [a[i] for i in order], [b[i] for i in order]


def require_same_examples(labelled: Sequence[tuple[str, dict]]) -> None:
    """Refuse to put side by side entries scored on different problems (their accuracies do not compare)."""
    if not labelled:
        return
    ref_label, ref = labelled[0]
    ref_indices = sorted(ex["index"] for ex in ref["examples"])
    for label, entry in labelled[1:]:
        if sorted(ex["index"] for ex in entry["examples"]) != ref_indices:
            raise ResultsError(
                f"{label!r} {entry_key(entry)} and {ref_label!r} {entry_key(ref)} were scored on different "
                f"examples ({entry['n']} vs {ref['n']} problems, or different indices)"
            )


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def save_results(path: str | Path, results: dict) -> None:
    """Check then atomically write a result file (parent folders are created)."""
    validate_results(results, f"{path} (about to be written)")
    try:
        write_json_atomic(path, results, indent=1)
    except (TypeError, ValueError) as e:
        raise ResultsError(f"{path}: result file is not JSON-serialisable: {e}") from e


def load_results(path: str | Path) -> dict:
    """Read and check a result file; any problem raises ResultsError naming the file (and entry, field)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultsError(f"{path}: cannot read result file: {e.strerror or e}") from e
    try:
        results = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from e
    validate_results(results, str(path))
    return results


def settings_mismatch(
    a: Mapping[str, Any], b: Mapping[str, Any], ignore: Iterable[str] = RUNTIME_SETTINGS
) -> list[str]:
    """Sorted keys whose values differ between two settings dicts (a key missing on one side differs)."""
    skip = set(ignore)
    return sorted(k for k in set(a) | set(b) if k not in skip and a.get(k, _MISSING) != b.get(k, _MISSING))


def _describe_mismatch(keys: list[str], a: Mapping, b: Mapping) -> str:
    return ", ".join(f"{k}: {a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}" for k in keys)


def load_pooled(paths: Sequence[str | Path]) -> dict:
    """All entries of several result files, for lookup by figures and comparisons.

    Files that evaluated different runs may legitimately differ in settings, so a difference is
    printed to stderr as a note rather than refused; a key present in two files with different
    content is refused.
    """
    inputs = [(str(p), load_results(p)) for p in paths]
    first_name, first = inputs[0]
    for name, results in inputs[1:]:
        differ = settings_mismatch(first["settings"], results["settings"])
        if differ:
            print(f"note: settings of {name} differ from {first_name} on {differ}", file=sys.stderr)
    # The inputs were read here and nothing else holds them: the pooled file may share their entries
    # (a copy of a million examples would double the memory and take longer than the statistics).
    return merge_results(inputs, check_settings=False, copy_entries=False)


def load_or_new(
    path: str | Path, settings: dict, provenance: dict, ignore: Iterable[str] = RUNTIME_SETTINGS
) -> dict:
    """The result file at ``path`` to resume a sweep into, or a new one when it does not exist.

    An existing file's settings must equal ``settings`` on every key but ``ignore`` (throughput knobs),
    and a data file it hashed must still have that hash, so a resumed sweep never mixes entries measured
    differently or on other data. The new session's provenance is
    appended to ``provenance["resumed"]``: entries may come from different code versions.
    """
    if not Path(path).exists():
        return new_results(settings, provenance)
    results = load_results(path)
    wanted = _json_normalised(settings, "settings")
    differ = settings_mismatch(results["settings"], wanted, ignore)
    if differ:
        raise ResultsError(
            f"{path}: existing result file has different settings, refusing to mix them "
            f"(differing keys: {_describe_mismatch(differ, results['settings'], wanted)}); "
            "write to a new file or delete the old one"
        )
    session = _json_normalised(provenance, "provenance")
    changed = [
        c
        for p in (results["provenance"], *results["provenance"].get("resumed", []))
        for c in data_changes(p, session)
    ]
    if changed:
        raise ResultsError(
            f"{path}: its entries were measured on other data under the same path, refusing to mix them: "
            f"{'; '.join(dict.fromkeys(changed))}; write to a new file or delete the old one"
        )
    first = {k: v for k, v in results["provenance"].items() if k not in ("resumed", "merged_from")}
    resumed = results["provenance"].setdefault("resumed", [])
    if session != first and session not in resumed:  # each session once, however many entries it adds
        resumed.append(session)
    return results


def lock_path(path: str | Path) -> Path:
    """The lock file beside a result file (left in place: an unlocked lock file is harmless)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


def record_entry(path: str | Path, entry: dict, settings: dict, provenance: dict) -> dict:
    """Add one evaluated entry to the result file at ``path`` and return the file as written.

    Under an exclusive lock the file is read again (another sweep may have added entries since this one
    opened it), its settings checked as load_or_new does, this entry added unless its key is already there
    (an entry already present is never replaced: the first measurement stands), and the whole file
    written atomically. So two sweeps into one file keep every entry of both.
    """
    with file_lock(lock_path(path)):
        results = load_or_new(path, settings, provenance)
        if find_entry(results, *entry_key(entry)) is None:
            validate_entry(entry, "record_entry()")
            results["results"].append(entry)
        save_results(path, results)
    return results


def has_entry(path: str | Path, key: tuple) -> bool:
    """Whether the result file at ``path`` (as it is now, on disk) holds an entry with this key."""
    return Path(path).exists() and find_entry(load_results(path), *key) is not None


def merge_results(
    inputs: Sequence[tuple[str, dict]],
    ignore: Iterable[str] = RUNTIME_SETTINGS,
    check_settings: bool = True,
    copy_entries: bool = True,
) -> dict:
    """One result file holding every entry of ``inputs`` ((name, results) pairs, names for errors).

    All inputs must have equal settings (except ``ignore``) unless ``check_settings`` is False (a
    figure pooling files that evaluated different runs); the first input's settings are kept. An
    entry key present in several inputs must have identical content there (then it is kept once).
    The merged provenance is the first input's, plus every input's under ``merged_from``. With
    ``copy_entries`` False the merged file holds the inputs' entry objects themselves (for a caller that
    only reads it and keeps no other reference to the inputs).
    """
    if not inputs:
        raise ResultsError("merge_results: no inputs")
    first_name, first = inputs[0]
    merged = new_results(first["settings"], copy.deepcopy(first["provenance"]))
    merged["provenance"]["merged_from"] = [
        {"file": name, "provenance": r["provenance"]} for name, r in inputs
    ]
    origin: dict[tuple, str] = {}
    for name, results in inputs:
        differ = settings_mismatch(first["settings"], results["settings"], ignore)
        if differ and check_settings:
            raise ResultsError(
                f"cannot merge {name} into {first_name}: settings differ on "
                f"{_describe_mismatch(differ, first['settings'], results['settings'])}"
            )
        for entry in results["results"]:
            key = entry_key(entry)
            existing = find_entry(merged, *key)
            if existing is None:
                merged["results"].append(copy.deepcopy(entry) if copy_entries else entry)
                origin[key] = name
            elif existing != entry:
                raise ResultsError(
                    f"conflicting entries for (condition, step, shots) {key} in {origin[key]} and {name}"
                )
    return merged


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def collect_provenance(data: Mapping[str, Any] | None = None, tokenizer: str | None = None) -> dict:
    """What produced a result file: code commit (and whether the tree was dirty), package versions, the data
    (`data`: fsdistill.tasks.rows.data_provenance, the sha256 of every split file read, which file served
    as which split and the exemplar pool, and the data's version record; all None without it), tokenizer,
    UTC time."""
    git = git_state()
    data = data or {}
    return {
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "packages": package_versions(),
        **{field: data.get(field) for field in DATA_PROVENANCE},
        "tokenizer": tokenizer,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def data_changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """Files hashed in both provenances whose sha256 differs: the data changed under the same path."""
    a, b = recorded.get("data_sha256") or {}, now.get("data_sha256") or {}
    return [
        f"{path} (sha256 {a[path][:12]}... then, {b[path][:12]}... now)"
        for path in sorted(set(a) & set(b))
        if a[path] != b[path]
    ]


def _sessions(provenance: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    """A provenance and those it holds: later sessions (resumed) and merged files' (merged_from)."""
    yield provenance
    for session in provenance.get("resumed", []):
        yield from _sessions(session)
    for merged in provenance.get("merged_from", []):
        yield from _sessions(merged["provenance"])


def shared_data(inputs: Sequence[tuple[str, Mapping[str, Any]]]) -> dict:
    """The data every session of these result files ((name, results) pairs, pooled ones included) read: the
    union of their data_sha256, data_files and data_version; a path or role two sessions recorded
    differently is refused (entries measured on different data). What a summary or a selection states its
    numbers rest on."""
    out: dict[str, dict] = {field: {} for field in DATA_PROVENANCE}
    seen: dict[tuple[str, str], str] = {}
    for name, results in inputs:
        for session in _sessions(results["provenance"]):
            for field in DATA_PROVENANCE:
                for key, value in (session.get(field) or {}).items():
                    if out[field].setdefault(key, value) != value:
                        raise ResultsError(
                            f"{seen[field, key]} and {name} were measured on different data: provenance "
                            f"{field} {key!r} is {out[field][key]!r} in one and {value!r} in the other"
                        )
                    seen.setdefault((field, key), name)
    return {field: values or None for field, values in out.items()}
