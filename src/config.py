"""The one typed config schema, its composition (``inherit:``, files, overrides) and its validation.

Every setting of every entry point is a field below, documented once, next to its definition, with
its default. Nothing else in the package holds a default for a setting. This module imports only
omegaconf and yaml, so a mistake in a config fails in well under a second, before torch loads.

Composition, the same for every entry point:
  1. ``--base_config FILE`` (optional, the original's flag), then ``--config FILE``; a YAML file may
     say ``inherit: OTHER.yaml`` (a path relative to that file; chains allowed, cycles refused);
  2. ``--output_dir DIR`` (sets ``output.dir``);
  3. ``key.sub=value`` overrides from the command line, last.
A later setting of a key replaces the earlier one, except the dict field ``model.architecture``, whose
fields merge. YAML timestamps are not resolved (``2024-07-26`` is a string), and a string-typed
override keeps its text as typed (``data.question_template=Q: {question}``).
All errors (unknown key, wrong type, missing value, out-of-range value) are collected, each naming
the key and where it was set, and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fsdistill.errors import UserError

COMMAND_LINE = "the command line"
DEFAULT = "the schema default"


def opt(default: Any = MISSING, help: str = "", choices: tuple = ()) -> Any:  # noqa: A002
    """A schema field with its one-line documentation (and allowed values, when a closed set)."""
    meta = {"help": help, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    name: Optional[str] = opt(
        help="Hub id or local folder of the base model (weights, config and, unless model.tokenizer is set, "
        "tokenizer). May be null only with model.init=random and an architecture that names its model_type."
    )
    init: str = opt(
        "pretrained",
        "pretrained: load model.name's weights. random: build the architecture with random weights "
        "(tests, benchmarks; never for accuracy).",
        ("pretrained", "random"),
    )
    architecture: dict[str, Any] = opt(
        {},
        "Model config fields. With init=random and name=null, a full config including model_type; "
        "otherwise fields that override model.name's config. Later files and model.architecture.FIELD=value "
        "overrides change single fields (merged, not replaced).",
    )
    tokenizer: Optional[str] = opt(None, "Hub id or local folder of the tokenizer; null means model.name.")
    dtype: str = opt(
        "bfloat16",
        "dtype the weights are loaded in. Full fine-tuning should keep float32 weights and train under "
        "training.mixed_precision=bf16.",
        ("float32", "bfloat16", "float16"),
    )
    gradient_checkpointing: bool = opt(False, "Recompute activations in the backward pass to save memory.")
    attn_implementation: Optional[str] = opt(
        None,
        "transformers attention backend (sdpa, eager, flash_attention_2); null lets transformers choose.",
    )


@dataclass
class DataConfig:
    source: str = opt(
        "openai/gsm8k",
        "Hub dataset id (loaded with datasets), or a local JSONL file or folder holding {train,test}.jsonl "
        "with string fields question and answer.",
    )
    hub_config: str = opt("main", "Dataset config name on the Hub (ignored for local files).")
    train_split: str = opt("train", "Split the student trains on and few-shot exemplars come from.")
    test_split: str = opt("test", "Split evaluation scores.")
    max_train_examples: Optional[int] = opt(
        None, "Use only the first N training rows (row ids keep their position in the source file)."
    )
    validation_size: int = opt(
        0,
        "Rows held out of the training split (seeded by training.seed) to select checkpoints honestly; "
        "they are never trained on nor used as exemplars.",
    )
    question_template: str = opt("Question: {question}", "User turn text; {question} is replaced.")
    max_student_len: int = opt(512, "Longest student sequence; a longer example is dropped and counted.")
    max_teacher_len: int = opt(4096, "Longest teacher sequence; a longer example is dropped and counted.")
    chat_template_date: str = opt(
        "26 Jul 2024",
        "Passed to chat templates as date_string (Llama 3 inserts today's date otherwise), so prompts do "
        "not change from day to day.",
    )
    num_workers: int = opt(0, "DataLoader worker processes that tokenise the next micro-batches.")
    group_by_length: bool = opt(
        True,
        "Within each optimizer step, order the step's examples by sequence length before cutting them into "
        "micro-batches, so examples of similar length are padded together. The step's set of examples, and "
        "so its gradient, is unchanged.",
    )


@dataclass
class FewShotConfig:
    k: int = opt(8, "Exemplars in the teacher's prompt. 0 gives the zero-shot-teacher control.")
    selection: str = opt(
        "per_example",
        "per_example: a fixed seeded sample for each training row, the same every epoch (the original); "
        "per_batch: one sample per optimizer step, shared by all its micro-batches and processes; "
        "fixed: one seeded set for the whole run, removed from the training examples.",
        ("per_example", "per_batch", "fixed"),
    )
    seed: int = opt(42, "Seed of the exemplar draw (per_example uses seed + row id, as the original).")
    shuffle_answers: bool = opt(
        False, "Permute the exemplar answers among the exemplar questions (the shuffled-answers control)."
    )


@dataclass
class LoraConfig:
    r: int = opt(16, "LoRA rank.")
    alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / r).")
    dropout: float = opt(0.05, "Dropout on the LoRA branch input.")
    target_modules: list[str] = opt(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that get an adapter.",
    )


@dataclass
class TrainingConfig:
    use_lora: bool = opt(
        True,
        "true: train a LoRA adapter, the teacher is the adapter switched off. "
        "false: full fine-tuning, the teacher is a frozen copy of the initial weights.",
    )
    max_steps: int = opt(1000, "Optimizer steps of the schedule.")
    stop_after: Optional[int] = opt(
        None, "End the run after this many optimizer steps without changing the schedule (resume later)."
    )
    save_every: int = opt(200, "Write checkpoint-{step}/ every N optimizer steps (and at max_steps).")
    keep_last: Optional[int] = opt(None, "Keep only the newest N checkpoints; null keeps all.")
    lr: float = opt(2.0e-4, "Peak learning rate of AdamW.")
    weight_decay: float = opt(0.01, "AdamW weight decay.")
    lr_schedule: str = opt("cosine", "Decay after warmup.", ("cosine", "linear", "constant"))
    warmup_steps: int = opt(50, "Linear warmup, in optimizer steps.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm; 0 disables clipping.")
    per_device_batch_size: int = opt(4, "Examples per micro-batch on each process.")
    grad_accum_steps: int = opt(4, "Micro-batches per optimizer step on each process.")
    global_batch_size: Optional[int] = opt(
        None,
        "If set, must equal processes x per_device_batch_size x grad_accum_steps, checked at launch "
        "(the reference recipe's 32 silently becomes 64 on 4 GPUs otherwise).",
    )
    mixed_precision: str = opt(
        "bf16",
        "Autocast precision. The one place it is set: an accelerate launch flag that disagrees is refused.",
        ("no", "bf16", "fp16"),
    )
    seed: int = opt(42, "Seeds data order, adapter init, dropout and the validation split.")
    log_every: int = opt(10, "Optimizer steps between metrics.jsonl / TensorBoard records.")
    logits_chunk_size: int = opt(
        1024,
        "Answer positions sent through the output head at once (student and teacher): the loss's extra "
        "memory is O(chunk x vocabulary) whatever the batch and sequence length.",
    )


@dataclass
class DistillConfig:
    loss: str = opt(
        "topk_logit_mse",
        "topk_logit_mse: the paper's squared error of raw logits at the teacher's top-K indices; "
        "forward_kl: KL(teacher||student); reverse_kl: KL(student||teacher); generalized_jsd: see beta.",
        ("topk_logit_mse", "forward_kl", "reverse_kl", "generalized_jsd"),
    )
    weight: float = opt(0.5, "lambda in CE + lambda * distillation.")
    top_k: Optional[int] = opt(
        256, "Teacher vocabulary entries used per answer token; null uses the full vocabulary (KL losses)."
    )
    topk_support: str = opt(
        "renormalize",
        "KL losses with top_k: renormalize both distributions over the teacher's K entries, or add a "
        "tail bucket holding the rest of each distribution's mass.",
        ("renormalize", "tail_bucket"),
    )
    temperature: float = opt(1.0, "Softmax temperature of the KL losses (topk_logit_mse uses raw logits).")
    scale_by_temperature_squared: bool = opt(False, "Multiply the KL losses by T^2 (Hinton et al.).")
    beta: float = opt(
        0.5, "generalized_jsd mixing weight, TRL's convention: 0 is forward KL, 1 is reverse KL."
    )


@dataclass
class TeacherConfig:
    cache: str = opt(
        "off",
        "Teacher top-K cache, exact when an example's teacher input never changes (per_example or fixed "
        "shots, shuffled answers, 0-shot teacher). memory: filled on an example's first visit and reused "
        "(shared across processes); disk: memory-mapped folder teacher.cache_dir written by "
        "scripts/precompute_teacher.py; off: the teacher runs at every visit.",
        ("off", "memory", "disk"),
    )
    cache_dir: Optional[str] = opt(
        None, "teacher.cache=disk: the folder scripts/precompute_teacher.py wrote for this config."
    )
    cache_top_k: Optional[int] = opt(
        None,
        "Entries cached per answer token when distill.top_k is null (full-vocabulary KL/JSD): the cache holds "
        "the teacher's top-K plus one tail bucket, and the loss runs on those K+1 entries (an approximation "
        "of the full-vocabulary loss). Must stay null when distill.top_k is set (the cache then uses it).",
    )
    prefix_cache: bool = opt(
        True,
        "With fewshot.selection fixed or per_batch, run the exemplar prefix that a micro-batch's teacher "
        "sequences share once and reuse its keys/values (fixed: once per run); only question + answer "
        "tokens are run per example.",
    )
    prefix_min_tokens: int = opt(64, "Shortest shared prefix worth caching (tokens).")


@dataclass
class EvalConfig:
    backend: str = opt(
        "hf", "Generation backend: hf (transformers, tested on CPU) or vllm (GPU).", ("hf", "vllm")
    )
    max_new_tokens: int = opt(512, "Greedy generation length limit.")
    batch_size: int = opt(16, "Prompts per generate call (hf backend).")
    n_samples: Optional[int] = opt(
        None,
        "Score a subset of the test split: torch.manual_seed(42); torch.randperm(n_test)[:n] (the "
        "original's subset, the same for every condition). null scores all.",
    )
    icl_shots: list[int] = opt([0, 8], "Shot counts eval_icl.py scores the base model with.")
    icl_seed: int = opt(42, "Seed of the exemplars drawn from train for k-shot evaluation.")
    tensor_parallel_size: int = opt(1, "vLLM tensor parallel degree.")
    gpu_memory_utilization: float = opt(0.85, "vLLM fraction of GPU memory.")
    generate: bool = opt(
        True,
        "Score accuracy by greedy generation. false: teacher-forced metrics only (needs eval.teacher_forced).",
    )
    teacher_forced: bool = opt(
        False,
        "Also compute teacher-forced metrics: gold-answer NLL (0-shot prompt) and KL from the "
        "k-shot base-model teacher, without generation.",
    )
    teacher_forced_batch_size: int = opt(4, "Examples per forward pass for teacher-forced metrics.")


@dataclass
class OutputConfig:
    dir: Optional[str] = opt(None, "Run folder (--output_dir). Checkpoints, run.json, metrics.jsonl, events.")
    name: Optional[str] = opt(
        None, "Run name, what eval_checkpoints.py --conditions matches; null means basename of output.dir."
    )
    tensorboard: bool = opt(True, "Write TensorBoard event files under output.dir/tensorboard.")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


SECTIONS: dict[str, type] = typing.get_type_hints(Config)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


class ConfigError(UserError):
    """One or more config mistakes, each naming the key and the file (or command line) that set it."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))

    def __str__(self) -> str:
        n = len(self.problems)
        head = f"config error{'s' if n > 1 else ''} ({n}):"
        return head + "".join(f"\n  - {p}" for p in self.problems)


# --------------------------------------------------------------------------------------------------
# Schema introspection
# --------------------------------------------------------------------------------------------------


def schema_fields() -> list[tuple[str, Any, Any, str, tuple]]:
    """Every leaf key as (dotted name, type, default, help, choices), in schema order."""
    rows = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = f.default
            rows.append(
                (f"{section}.{f.name}", hints[f.name], default, f.metadata["help"], f.metadata["choices"])
            )
    return rows


def valid_keys() -> list[str]:
    return [r[0] for r in schema_fields()]


# Names other training scripts (HF Trainer, the original's argparse) use for a setting here.
_ALIASES = {
    "learning_rate": "training.lr",
    "gradient_accumulation_steps": "training.grad_accum_steps",
    "per_device_train_batch_size": "training.per_device_batch_size",
    "max_train_steps": "training.max_steps",
    "lr_scheduler_type": "training.lr_schedule",
    "num_shots": "fewshot.k",
    "n_shots": "fewshot.k",
    "shots": "fewshot.k",
    "lambda": "distill.weight",
    "distill_weight": "distill.weight",
    "topk": "distill.top_k",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "model_name_or_path": "model.name",
    "output_dir": "output.dir",
}


def _nearest(key: str) -> str:
    """'; did you mean ...?' naming the valid key closest to an unknown one."""
    keys = valid_keys()
    section, _, leaf = key.rpartition(".")
    same_section = [k for k in keys if k.split(".")[0] == section]
    leaf_matches = [k for k in keys if k.split(".")[-1] == leaf]
    close_leaf = difflib.get_close_matches(leaf, [k.split(".")[-1] for k in same_section], n=1, cutoff=0.6)
    close = difflib.get_close_matches(key, leaf_matches or keys, n=1, cutoff=0.0)
    if leaf in _ALIASES:
        best = _ALIASES[leaf]
    elif close_leaf:
        best = f"{section}.{close_leaf[0]}"
    else:
        best = close[0] if close else None
    return f"; did you mean '{best}'?" if best else ""


# --------------------------------------------------------------------------------------------------
# Loading and composition
# --------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """yaml.SafeLoader without implicit timestamps: `2024-07-26` stays a string (no setting is a date,
    and OmegaConf cannot hold a datetime.date)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read config file ({e.strerror})"]) from None
    try:
        data = _yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError([f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: a config file must be a mapping of sections, got {type(data).__name__}"])
    return data


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; dict-typed fields (model.architecture) stay whole.

    An empty section (`fewshot:` with every key commented out) sets nothing.
    """
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if not prefix and key in SECTIONS and (v is None or v == {}):
            continue
        if isinstance(v, dict) and key not in _DICT_FIELDS and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


_DICT_FIELDS = {"model.architecture"}


def _merge_dicts(base: dict, new: dict) -> dict:
    """Recursive merge, `new` winning (a child config or override changes single architecture fields)."""
    out = dict(base)
    for k, v in new.items():
        out[k] = _merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _set(values: dict[str, Any], source: dict[str, str], key: str, value: Any, where: str) -> None:
    """Set one flat key; a dict field merges (whole or `model.architecture.x.y=v`) instead of replacing."""
    for dict_field in _DICT_FIELDS:
        if key.startswith(dict_field + "."):
            for part in reversed(key[len(dict_field) + 1 :].split(".")):
                value = {part: value}
            key = dict_field
        if key == dict_field and isinstance(value, dict) and isinstance(values.get(key), dict):
            value = _merge_dicts(values[key], value)
    values[key] = value
    source[key] = where


def _load_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """The files of an ``inherit:`` chain, base first: [(path, mapping without 'inherit'), ...]."""
    path = path.resolve()
    if path in seen:
        cycle = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError([f"{path}: inherit cycle: {cycle}"])
    data = _read_yaml(path)
    parent = data.pop("inherit", None)
    chain: list[tuple[Path, dict]] = []
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError([f"{path}: 'inherit' must be a path string, got {parent!r}"])
        chain = _load_chain(path.parent / parent, (*seen, path))
    return [*chain, (path, data)]


def parse_override(item: str) -> tuple[str, Any]:
    """'training.lr=1e-4' -> ('training.lr', 1e-4); the value is parsed as YAML.

    A string setting keeps the text as typed unless it is null: `data.question_template=Q: {question}`
    is that text, not the YAML mapping {'Q': {'question': None}}.
    """
    if "=" not in item:
        raise ConfigError([f"{COMMAND_LINE}: override '{item}' is not of the form key.sub=value"])
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("+")
    try:
        value = _yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is not None and not isinstance(value, str) and _is_str_field(key):
        value = raw
    return key, value


def _is_str_field(key: str) -> bool:
    return any(r[0] == key and r[1] in (str, Optional[str]) for r in schema_fields())


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def compose(
    config: Optional[str] = None,
    base_config: Optional[str] = None,
    overrides: Optional[list[str]] = None,
    output_dir: Optional[str] = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge files and overrides into flat {dotted key: value} plus {dotted key: where it was set}."""
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    files: list[tuple[Path, dict]] = []
    if base_config:
        files += _load_chain(Path(base_config))
    if config:
        files += _load_chain(Path(config))
    for path, data in files:
        for key, value in _flatten(data).items():
            _set(values, source, key, value, _display(path))
    if output_dir is not None:
        _set(values, source, "output.dir", output_dir, f"{COMMAND_LINE} (--output_dir)")
    for item in overrides or []:
        key, value = parse_override(item)
        _set(values, source, key, value, COMMAND_LINE)
    return values, source


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


@functools.cache
def _section_node(section: str) -> Any:
    return OmegaConf.structured(SECTIONS[section])


def _type_problems(values: dict[str, Any], source: dict[str, str]) -> tuple[list[str], dict[str, Any]]:
    """Unknown keys and values OmegaConf cannot convert to the field's type, one message each.

    Returns the messages and the values that passed, so later checks can still run on those.
    """
    problems, good = [], {}
    known = set(valid_keys())
    for key, value in values.items():
        where = source[key]
        if key not in known:
            if key in SECTIONS:
                problems.append(f"{where}: '{key}' must be a section of keys, got {value!r}")
            else:
                problems.append(f"{where}: unknown key '{key}'{_nearest(key)}")
            continue
        section, name = key.split(".", 1)
        try:  # the same conversion build_config applies, one key at a time
            OmegaConf.merge(_section_node(section), {name: value})  # merge copies, never mutates
        except OmegaConfBaseException as e:
            msg = str(e).splitlines()[0]
            problems.append(f"{where}: '{key}' has a wrong type or value ({value!r}): {msg}")
            continue
        good[key] = value
    return problems, good


def _check(cond: bool, key: str, message: str, source: dict[str, str], problems: list[str]) -> None:
    if not cond:
        problems.append(f"{source.get(key, DEFAULT)}: '{key}' {message}")


def _range_problems(cfg: Config, source: dict[str, str], missing: frozenset[str] = frozenset()) -> list[str]:
    """Values of the right type that are out of range or inconsistent with each other.

    Keys in `missing` (required, no value: already reported) hold a None stand-in and are not checked.
    """
    p: list[str] = []
    from_fields = {row[0]: row[4] for row in schema_fields()}
    for key, choices in from_fields.items():
        if choices:
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}", source, p)
    m, d, f, t, dist, e = cfg.model, cfg.data, cfg.fewshot, cfg.training, cfg.distill, cfg.eval
    if m.name is None and "model.name" not in missing:
        arch_type = isinstance(m.architecture, dict) and "model_type" in m.architecture
        _check(
            m.init == "random" and arch_type,
            "model.name",
            "may be null only with model.init=random and model.architecture.model_type set",
            source,
            p,
        )
        _check(m.tokenizer is not None, "model.tokenizer", "is required when model.name is null", source, p)
    _check(f.k >= 0, "fewshot.k", f"must be >= 0 (a shot count), got {f.k}", source, p)
    _check(
        math.isfinite(t.lr) and t.lr > 0, "training.lr", f"must be a finite number > 0, got {t.lr}", source, p
    )
    _check(t.max_steps >= 1, "training.max_steps", f"must be >= 1, got {t.max_steps}", source, p)
    _check(t.save_every >= 1, "training.save_every", f"must be >= 1, got {t.save_every}", source, p)
    _check(t.warmup_steps >= 0, "training.warmup_steps", f"must be >= 0, got {t.warmup_steps}", source, p)
    _check(t.weight_decay >= 0, "training.weight_decay", f"must be >= 0, got {t.weight_decay}", source, p)
    _check(t.max_grad_norm >= 0, "training.max_grad_norm", f"must be >= 0, got {t.max_grad_norm}", source, p)
    _check(
        t.per_device_batch_size >= 1,
        "training.per_device_batch_size",
        f"must be >= 1, got {t.per_device_batch_size}",
        source,
        p,
    )
    _check(
        t.grad_accum_steps >= 1,
        "training.grad_accum_steps",
        f"must be >= 1, got {t.grad_accum_steps}",
        source,
        p,
    )
    _check(t.log_every >= 1, "training.log_every", f"must be >= 1, got {t.log_every}", source, p)
    if t.stop_after is not None:
        _check(
            1 <= t.stop_after <= t.max_steps,
            "training.stop_after",
            f"must be between 1 and training.max_steps ({t.max_steps}), got {t.stop_after}",
            source,
            p,
        )
    if t.keep_last is not None:
        _check(t.keep_last >= 1, "training.keep_last", f"must be >= 1 or null, got {t.keep_last}", source, p)
    if t.global_batch_size is not None:
        _check(
            t.global_batch_size >= 1,
            "training.global_batch_size",
            f"must be >= 1 or null, got {t.global_batch_size}",
            source,
            p,
        )
    _check(
        math.isfinite(dist.weight) and dist.weight >= 0,
        "distill.weight",
        f"(lambda) must be a finite number >= 0, got {dist.weight}",
        source,
        p,
    )
    if dist.top_k is not None:
        _check(dist.top_k >= 1, "distill.top_k", f"must be >= 1 or null, got {dist.top_k}", source, p)
    else:
        _check(
            dist.loss != "topk_logit_mse",
            "distill.top_k",
            "must be set (>= 1) for distill.loss=topk_logit_mse",
            source,
            p,
        )
    _check(dist.temperature > 0, "distill.temperature", f"must be > 0, got {dist.temperature}", source, p)
    _check(0.0 <= dist.beta <= 1.0, "distill.beta", f"must be in [0, 1], got {dist.beta}", source, p)
    if dist.loss == "topk_logit_mse":
        _check(
            dist.temperature == 1.0,
            "distill.temperature",
            "is not used by distill.loss=topk_logit_mse (raw logits); leave it at 1.0",
            source,
            p,
        )
        _check(
            not dist.scale_by_temperature_squared,
            "distill.scale_by_temperature_squared",
            "is not used by distill.loss=topk_logit_mse",
            source,
            p,
        )
    _check(
        d.max_student_len >= 8, "data.max_student_len", f"must be >= 8, got {d.max_student_len}", source, p
    )
    _check(
        d.max_teacher_len >= d.max_student_len,
        "data.max_teacher_len",
        f"must be >= data.max_student_len ({d.max_student_len}), got {d.max_teacher_len}",
        source,
        p,
    )
    _check(
        "{question}" in d.question_template,
        "data.question_template",
        "must contain the placeholder {question}",
        source,
        p,
    )
    _check(
        d.validation_size >= 0, "data.validation_size", f"must be >= 0, got {d.validation_size}", source, p
    )
    _check(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}", source, p)
    if d.max_train_examples is not None:
        _check(
            d.max_train_examples >= 1,
            "data.max_train_examples",
            f"must be >= 1 or null, got {d.max_train_examples}",
            source,
            p,
        )
    lo = cfg.lora
    _check(lo.r >= 1, "lora.r", f"must be >= 1, got {lo.r}", source, p)
    _check(lo.alpha > 0, "lora.alpha", f"must be > 0, got {lo.alpha}", source, p)
    _check(0.0 <= lo.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {lo.dropout}", source, p)
    _check(len(lo.target_modules) > 0, "lora.target_modules", "must name at least one module", source, p)
    tc = cfg.teacher
    if tc.cache != "off":
        _check(
            not (f.selection == "per_batch" and f.k > 0),
            "teacher.cache",
            f"is {tc.cache!r}, which needs a teacher input that never changes for an example, but fewshot.selection="
            "per_batch draws new exemplars every step; use teacher.cache=off (teacher.prefix_cache speeds "
            "per_batch up instead)",
            source,
            p,
        )
        if dist.top_k is None:
            _check(
                tc.cache_top_k is not None,
                "teacher.cache_top_k",
                "must be set when distill.top_k is null and teacher.cache is on: the cache stores the top-K "
                "entries plus a tail bucket, never the full vocabulary",
                source,
                p,
            )
    if tc.cache == "disk":
        _check(tc.cache_dir is not None, "teacher.cache_dir", "is required for teacher.cache=disk", source, p)
    if tc.cache_top_k is not None:
        _check(
            dist.top_k is None,
            "teacher.cache_top_k",
            f"is only for full-vocabulary losses (distill.top_k null); the cache uses distill.top_k={dist.top_k}",
            source,
            p,
        )
        _check(tc.cache_top_k >= 1, "teacher.cache_top_k", f"must be >= 1, got {tc.cache_top_k}", source, p)
    _check(
        tc.prefix_min_tokens >= 1,
        "teacher.prefix_min_tokens",
        f"must be >= 1, got {tc.prefix_min_tokens}",
        source,
        p,
    )
    _check(
        t.logits_chunk_size >= 1,
        "training.logits_chunk_size",
        f"must be >= 1, got {t.logits_chunk_size}",
        source,
        p,
    )
    _check(
        e.generate or e.teacher_forced,
        "eval.generate",
        "is false, so eval.teacher_forced must be true (otherwise nothing is measured)",
        source,
        p,
    )
    _check(e.max_new_tokens >= 1, "eval.max_new_tokens", f"must be >= 1, got {e.max_new_tokens}", source, p)
    _check(e.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {e.batch_size}", source, p)
    _check(
        e.teacher_forced_batch_size >= 1,
        "eval.teacher_forced_batch_size",
        f"must be >= 1, got {e.teacher_forced_batch_size}",
        source,
        p,
    )
    _check(
        e.tensor_parallel_size >= 1,
        "eval.tensor_parallel_size",
        f"must be >= 1, got {e.tensor_parallel_size}",
        source,
        p,
    )
    if e.n_samples is not None:
        _check(e.n_samples >= 1, "eval.n_samples", f"must be >= 1 or null, got {e.n_samples}", source, p)
    _check(
        all(s >= 0 for s in e.icl_shots),
        "eval.icl_shots",
        f"must be shot counts >= 0, got {e.icl_shots}",
        source,
        p,
    )
    return p


def _missing_keys(node: Any) -> list[str]:
    return [k for k in valid_keys() if OmegaConf.is_missing(node[k.split(".")[0]], k.split(".", 1)[1])]


def build_config(values: dict[str, Any], source: dict[str, str]) -> Config:
    """Validate flat values against the schema and return a typed :class:`Config`, or raise ConfigError.

    Every problem is collected first (unknown keys, wrong types, missing and out-of-range values) and
    reported in one error.
    """
    problems, good = _type_problems(values, source)
    nested: dict[str, Any] = {}
    for key, value in good.items():
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    node = OmegaConf.merge(OmegaConf.structured(Config), nested)
    missing = _missing_keys(node)
    problems += [
        f"{source.get(key, DEFAULT)}: '{key}' is required but has no value (set it in the config file or as {key}=...)"
        for key in missing
    ]
    # Range checks still run with a None stand-in for each missing value (required fields are Optional:
    # a null is meaningful for some, see model.name), so every mistake is reported in one run.
    try:
        for key in missing:
            OmegaConf.update(node, key, None, merge=False)
        cfg: Config = OmegaConf.to_object(node)  # type: ignore[assignment]
    except OmegaConfBaseException:  # a required field that cannot be null: report what we have
        if not problems:
            raise
    else:
        problems += _range_problems(cfg, source, frozenset(missing))
    if problems:
        raise ConfigError(problems)
    return cfg


def load_config(
    config: Optional[str] = None,
    base_config: Optional[str] = None,
    overrides: Optional[list[str]] = None,
    output_dir: Optional[str] = None,
) -> tuple[Config, dict[str, str]]:
    """Compose and validate; returns the config and, for every key set explicitly, where it was set."""
    values, source = compose(config, base_config, overrides, output_dir)
    return build_config(values, source), source


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), sort_keys=False)


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def from_dict(data: dict[str, Any], where: str) -> Config:
    """Rebuild a config saved in a run or checkpoint (e.g. config.yaml), validating it like a file."""
    flat = _flatten(data)
    return build_config(flat, dict.fromkeys(flat, where))


def run_name(cfg: Config) -> str:
    """output.name, or the basename of output.dir."""
    if cfg.output.name:
        return cfg.output.name
    if not cfg.output.dir:
        raise ConfigError([f"{DEFAULT}: 'output.dir' is required (pass --output_dir DIR)"])
    return Path(cfg.output.dir).resolve().name
