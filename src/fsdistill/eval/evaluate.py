"""What eval_icl.py and eval_checkpoints.py share: test subsets, prompts, scoring and teacher-forced metrics.

Prompts and scoring are the same functions for both generation backends; only the engine differs.

Teacher-forced metrics need no generation, so they show what a 135M-parameter model learns even where
its accuracy is ~0: per example, over the gold answer's tokens,
  nll: mean -log p_model(token | 0-shot prompt, earlier answer tokens),
  kl:  mean KL(p_teacher || p_model), the teacher being the configured teacher (the training teacher):
       the base model, or teacher.model, with k exemplars and its context (teacher.*) in its prompt, the
       model seeing the bare question; another model's logits compared on the ids both tokenizers share.
They reuse the training code's alignment (`answer_positions`) and loss functions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from fsdistill.config import Config, setting_source
from fsdistill.data.batch import collate
from fsdistill.data.prompts import EncodedExample, PromptBuilder, load_tokenizer
from fsdistill.distill.alignment import answer_positions
from fsdistill.distill.losses import TeacherTargets, cross_entropy, forward_kl
from fsdistill.errors import UserError
from fsdistill.eval.generation import GenerationSettings, load_generation_config, stop_token_ids_for
from fsdistill.eval.results import (
    SUBSET_SEED,
    collect_provenance,
    has_entry,
    load_or_new,
    record_entry,
    result_settings,
)
from fsdistill.modeling.answer_lm import AnswerLogitsLM
from fsdistill.modeling.identity import teacher_identity
from fsdistill.tasks import Example, Task
from fsdistill.tasks.rows import data_provenance, data_roles, exemplar_pool, is_file_split, training_rows


def subset_indices(n_total: int, n_samples: int | None) -> list[int]:
    """The original's test subset: the same examples for every condition, so comparisons are paired.
    More than the split holds is refused rather than silently clipped."""
    if n_samples is not None and n_samples > n_total:
        raise UserError(f"eval.n_samples={n_samples} but the evaluated split has {n_total} rows")
    if n_samples is None or n_samples == n_total:
        return list(range(n_total))
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(n_total, generator=generator)[:n_samples].tolist()


@dataclass
class EvalData:
    split: str  # "test", or "validation" (held out of train, for honest checkpoint selection)
    examples: list[Example]  # the evaluated examples, in subset order
    train: list[Example]  # exemplar pool: fewshot.pool's rows, else the training rows


def load_eval_data(cfg: Config, task: Task, split: str) -> EvalData:
    """The examples to score (subset by eval.n_samples) and the pool exemplars come from.

    Evaluated rows must have a gold answer when generations are scored, and a worked answer for
    teacher-forced metrics; exemplars must have worked answers. A row lacking one is refused naming its
    file and line, before any model loads.
    """
    need = ("gold",) * cfg.eval.generate + ("answer",) * cfg.eval.teacher_forced
    if cfg.eval.teacher_forced and cfg.teacher.row_fields():
        need += ("teacher",)  # the teacher-forced teacher reads them
    # The training rows are the exemplars unless fewshot.pool names others: then they may be questions only.
    train_need = ("answer",) if cfg.fewshot.pool is None else ()
    train, validation = training_rows(cfg, task, train_need, need)
    if split == "validation":
        if not validation:
            raise UserError(
                "--split validation needs a validation set: data.validation_split, or data.validation_size > 0 "
                "(rows held out of training)"
            )
        rows = validation
    elif split == "test":
        rows = task.load(cfg.data.source, test_split_source(cfg.data), cfg.data.hub_config, need)
    else:
        raise UserError(f"--split must be 'test' or 'validation', got {split!r}")
    check_subset_size(cfg, len(rows), split)
    picked = [rows[i] for i in subset_indices(len(rows), cfg.eval.n_samples)]
    return EvalData(split=split, examples=picked, train=exemplar_pool(cfg, task, train))


def check_subset_size(cfg: Config, n_rows: int, split: str) -> None:
    """Refuse an eval.n_samples beyond the split, naming where it was set and what to set instead (a value
    inherited from a model config, e.g. 16, meets a task's 10-row split)."""
    n = cfg.eval.n_samples
    if n is not None and n > n_rows:
        raise UserError(
            f"eval.n_samples={n} (set in {setting_source(cfg, 'eval.n_samples')}) but the evaluated {split} "
            f"split has {n_rows} rows: score them all with eval.n_samples=null (or --n_samples {n_rows}), or a "
            f"subset of at most {n_rows}"
        )


def test_split_source(data) -> str:
    """The test split to load: data.test_split, a split name or an explicit .jsonl path. A data.source that
    is one JSONL file is the training file only: scoring it as "test" would score trained-on rows."""
    if is_file_split(data.test_split) or not Path(data.source).expanduser().is_file():
        return data.test_split
    raise UserError(
        f"data.source {data.source} is a single JSONL file, which is the training file: evaluation never scores "
        f"the training rows by accident. Give a folder holding {data.test_split}.jsonl, or point "
        "data.test_split at a .jsonl file (or use --split validation with data.validation_size > 0)"
    )


def icl_exemplars(train: list[Example], k: int, seed: int) -> list[Example]:
    """k seeded training exemplars, the same for every evaluated question (k-shot ICL evaluation)."""
    if k > len(train):
        raise UserError(
            f"{k}-shot evaluation needs {k} training rows as exemplars, the pool has {len(train)}"
        )
    return random.Random(f"icl:{seed}").sample(train, k)


def teacher_exemplars(train: list[Example], k: int, seed: int, row: int) -> list[Example]:
    """The k-shot teacher's exemplars for an evaluated row: the training protocol's per-row seeded draw."""
    return random.Random(seed + row).sample(train, k)


def score_examples(task: Task, examples: list[Example], predictions: list[str] | None) -> list[dict]:
    """Per-example records of the result schema: index (row in the split), prediction, extracted, gold, correct.

    predictions None (eval.generate=false, teacher-forced metrics only): index and gold alone, which
    results.make_entry records as an entry without accuracy.
    """
    if predictions is None:
        return [{"index": e.row, "gold": e.gold} for e in examples]
    records = []
    for example, text in zip(examples, predictions, strict=True):
        scored = task.score(text, example.gold)
        records.append(
            {
                "index": example.row,
                "prediction": text,
                "extracted": scored.extracted,
                "gold": example.gold,
                "correct": scored.correct,
            }
        )
    return records


def describe_entry(label: str, entry: dict) -> str:
    """One line for the console: accuracy with its interval (when generated) and teacher-forced means."""
    if entry["accuracy"] is None:
        text = f"{label}: n={entry['n']}, not generated"
    else:
        lo, hi = entry["ci95"]
        text = f"{label}: accuracy {entry['accuracy']:.2%} (n={entry['n']}, 95% CI {lo:.2%}-{hi:.2%})"
    return text + "".join(f", {k} {m['mean']:.4f}" for k, m in (entry["teacher_forced"] or {}).items())


def generation_prompts(
    prompts: PromptBuilder, examples: list[Example], shots: list[Example]
) -> list[list[int]]:
    return [prompts.generation_prompt_ids(e, shots) for e in examples]


# ------------------------------------------------------------------------------------------------
# Teacher-forced metrics
# ------------------------------------------------------------------------------------------------


def encode_teacher_forced(prompts: PromptBuilder, data: EvalData, k: int, seed: int) -> list[EncodedExample]:
    """Student (0-shot) and teacher (k-shot, with the teacher's context of `prompts`, each row's own) sequences
    of each evaluated example with its gold answer."""
    return [
        prompts.encode_pair(e, teacher_exemplars(data.train, k, seed, e.row) if k else [])
        for e in data.examples
    ]


@torch.no_grad()
def teacher_forced_metrics(
    model_logits,
    teacher_logits,
    encoded: list[EncodedExample],
    pad_id: int,
    batch_size: int,
    device,
    desc: str = "teacher-forced",
    vocab_size: int | None = None,
) -> dict[str, list[float]]:
    """Per-example mean NLL of the gold answer under `model_logits` and, if `teacher_logits` is given,
    mean KL(teacher || model) over the answer tokens.

    model_logits(batch, positions: AnswerPositions) -> (N, V) logits of the evaluated model at its
    0-shot positions; teacher_logits(batch, positions) -> (N, V') at the teacher's positions. vocab_size:
    the KL compares the first vocab_size logits of both (another model as teacher: the shared ids), else
    V' must equal V.
    """
    nll: list[float] = []
    kl: list[float] = []
    for start in tqdm(range(0, len(encoded), batch_size), desc=desc, leave=False):
        batch = collate(encoded[start : start + batch_size], pad_id).to(device)
        pos = answer_positions(batch)
        logits = model_logits(batch, pos).float()
        shared = logits if vocab_size is None else logits[:, :vocab_size]
        teacher = None
        if teacher_logits:
            teacher_full = teacher_logits(batch, pos).float()
            teacher = TeacherTargets(
                logits=teacher_full if vocab_size is None else teacher_full[:, :vocab_size]
            )
        for b in range(batch.size):
            mask = pos.batch_index == b
            ce_sum, count = cross_entropy(logits, pos.targets, mask)
            nll.append((ce_sum / count).item())
            if teacher is not None:
                kl_sum, _ = forward_kl(
                    shared, teacher, mask, temperature=1.0, support="full", scale_by_temperature_squared=False
                )
                kl.append((kl_sum / count).item())
    return {"nll": nll, "kl": kl} if teacher_logits else {"nll": nll}


# ------------------------------------------------------------------------------------------------
# Backends and settings
# ------------------------------------------------------------------------------------------------


def eval_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generation_settings(cfg: Config, prompts: PromptBuilder) -> GenerationSettings:
    """The task's length limit and stop strings; stop ids from the tokenizer, its chat template and the
    model's generation config (looked for beside the tokenizer, then the model)."""
    task = prompts.task.generation()
    config = load_generation_config(cfg.model.tokenizer, cfg.model.name)
    stop_ids = stop_token_ids_for(prompts.tokenizer, prompts.end_of_turn_ids(), config)
    return GenerationSettings(task.max_new_tokens, stop_ids, task.stop_strings)


def hf_answer_logits(model, device):
    """model_logits callback for teacher_forced_metrics: the model on the 0-shot (student) sequences."""
    lm = AnswerLogitsLM(model).to(device).eval()
    return lambda batch, pos: lm.logits_at(
        batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions
    )


def hf_teacher_logits(base_model, device, adapter_off=None):
    """teacher_logits callback: the BASE model on the k-shot (teacher) sequences (adapter off for LoRA)."""
    import contextlib

    lm = AnswerLogitsLM(base_model).to(device).eval()

    def logits(batch, pos):
        with adapter_off() if adapter_off else contextlib.nullcontext():
            return lm.logits_at(batch.teacher_ids, batch.teacher_mask, pos.batch_index, pos.teacher_positions)

    return logits


@dataclass
class EvalSession:
    """What both evaluation scripts open first: task, tokenizer, prompt builder, examples, the result file."""

    task: Task
    tokenizer: object
    prompts: PromptBuilder
    data: EvalData
    output: str
    settings: dict
    provenance: dict

    def has(self, condition: str, step: int | None, shots: int) -> bool:
        """Whether the result file already holds this entry (read now: another sweep may have added it)."""
        return has_entry(self.output, (condition, step, shots))

    def record(self, entry: dict) -> None:
        """Add an entry to the result file (under its lock, merged with what other sweeps wrote)."""
        record_entry(self.output, entry, self.settings, self.provenance)


def open_session(cfg: Config, script: str, split: str, output: str) -> EvalSession:
    """Load the tokenizer and the evaluated examples; check that the result file to resume, if any, was
    measured with these settings (refused before any model loads otherwise)."""
    tokenizer_name = cfg.model.tokenizer or cfg.model.name
    tokenizer = load_tokenizer(tokenizer_name)
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    data = load_eval_data(cfg, prompts.task, split)
    provenance = collect_provenance(
        data_provenance(cfg.data.source, data_roles(cfg, split)), tokenizer=tokenizer_name
    )
    teacher = teacher_identity(cfg, prompts.teacher) if cfg.eval.teacher_forced else None
    settings = result_settings(cfg, script, split, teacher)
    load_or_new(output, settings, provenance)  # the settings check, before any work
    return EvalSession(prompts.task, tokenizer, prompts, data, output, settings, provenance)


def teacher_forced_teacher(cfg: Config, tokenizer, device):
    """The configured teacher's model for teacher-forced KL when it is another model (teacher.model):
    (that model, frozen, on `device`; the ids both tokenizers share), or (None, None): the base model is
    the teacher (the caller has it: a checkpoint's adapter switched off, or the base itself)."""
    from fsdistill.modeling.loading import load_teacher_model, teacher_vocabulary

    vocab_size = teacher_vocabulary(cfg, tokenizer)
    if vocab_size is None:
        return None, None
    return load_teacher_model(cfg, vocab_size, len(tokenizer)).to(device), vocab_size
