"""What eval_icl.py and eval_checkpoints.py share: test subsets, prompts, scoring and teacher-forced metrics.

Prompts and scoring are the same functions for both generation backends; only the engine differs.

Teacher-forced metrics need no generation, so they show what a 135M-parameter model learns even where
its accuracy is ~0: per example, over the gold answer's tokens,
  nll: mean -log p_model(token | 0-shot prompt, earlier answer tokens),
  kl:  mean KL(p_teacher || p_model), the teacher being the BASE model with k exemplars in its prompt
       (the training teacher), the model seeing the bare question.
They reuse the training code's alignment (`answer_positions`) and loss functions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from fsdistill.config import Config
from fsdistill.data.batch import collate
from fsdistill.data.gsm8k_loader import Example, load_split, split_train_validation
from fsdistill.data.prompts import EncodedExample, PromptBuilder
from fsdistill.errors import UserError
from fsdistill.evaluation.scoring import extract_answer, gold_answer, is_correct
from fsdistill.training.alignment import answer_positions
from fsdistill.training.losses import TeacherTargets, cross_entropy, forward_kl

SUBSET_SEED = 42  # the original's torch.manual_seed(42); torch.randperm(n)[:k]


def subset_indices(n_total: int, n_samples: int | None) -> list[int]:
    """The original's test subset: the same examples for every condition, so comparisons are paired."""
    if n_samples is None or n_samples >= n_total:
        return list(range(n_total))
    generator = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(n_total, generator=generator)[:n_samples].tolist()


@dataclass
class EvalData:
    split: str  # "test", or "validation" (held out of train, for honest checkpoint selection)
    examples: list[Example]  # the evaluated examples, in subset order
    train: list[Example]  # exemplar pool


def load_eval_data(cfg: Config, split: str) -> EvalData:
    """The examples to score (subset by eval.n_samples) and the training rows exemplars come from."""
    rows = load_split(cfg.data.source, cfg.data.train_split, cfg.data.hub_config)
    if cfg.data.max_train_examples is not None:
        rows = rows[: cfg.data.max_train_examples]
    train, validation = split_train_validation(rows, cfg.data.validation_size, cfg.training.seed)
    if split == "validation":
        if not validation:
            raise UserError("--split validation needs data.validation_size > 0 (rows held out of training)")
        pool = validation
    elif split == "test":
        pool = load_split(cfg.data.source, cfg.data.test_split, cfg.data.hub_config)
    else:
        raise UserError(f"--split must be 'test' or 'validation', got {split!r}")
    picked = [pool[i] for i in subset_indices(len(pool), cfg.eval.n_samples)]
    return EvalData(split=split, examples=picked, train=train)


def icl_exemplars(train: list[Example], k: int, seed: int) -> list[tuple[str, str]]:
    """k seeded training exemplars, the same for every evaluated question (k-shot ICL evaluation)."""
    if k > len(train):
        raise UserError(
            f"{k}-shot evaluation needs {k} training rows as exemplars, the pool has {len(train)}"
        )
    return [(e.question, e.answer) for e in random.Random(f"icl:{seed}").sample(train, k)]


def teacher_exemplars(train: list[Example], k: int, seed: int, row: int) -> list[tuple[str, str]]:
    """The k-shot teacher's exemplars for an evaluated row: the training protocol's per-row seeded draw."""
    return [(e.question, e.answer) for e in random.Random(seed + row).sample(train, k)]


def score_examples(examples: list[Example], predictions: list[str] | None) -> list[dict]:
    """Per-example records of the result schema: index (row in the split), prediction, extracted, gold, correct.

    predictions None (eval.generate=false, teacher-forced metrics only): index and gold alone, which
    results.make_entry records as an entry without accuracy.
    """
    if predictions is None:
        return [{"index": e.row, "gold": gold_answer(e.answer)} for e in examples]
    records = []
    for example, text in zip(examples, predictions, strict=True):
        gold = gold_answer(example.answer)
        records.append(
            {
                "index": example.row,
                "prediction": text,
                "extracted": extract_answer(text),
                "gold": gold,
                "correct": is_correct(text, gold),
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
    prompts: PromptBuilder, examples: list[Example], shots: list[tuple[str, str]]
) -> list[list[int]]:
    return [prompts.generation_prompt_ids(e.question, shots) for e in examples]


# ------------------------------------------------------------------------------------------------
# Teacher-forced metrics
# ------------------------------------------------------------------------------------------------


def encode_teacher_forced(prompts: PromptBuilder, data: EvalData, k: int, seed: int) -> list[EncodedExample]:
    """Student (0-shot) and teacher (k-shot) sequences of each evaluated example with its gold answer."""
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
) -> dict[str, list[float]]:
    """Per-example mean NLL of the gold answer under `model_logits` and, if `teacher_logits` is given,
    mean KL(teacher || model) over the answer tokens.

    model_logits(batch, positions: AnswerPositions) -> (N, V) logits of the evaluated model at its
    0-shot positions; teacher_logits(batch, positions) -> (N, V) at the teacher's positions.
    """
    nll: list[float] = []
    kl: list[float] = []
    for start in tqdm(range(0, len(encoded), batch_size), desc=desc, leave=False):
        batch = collate(encoded[start : start + batch_size], pad_id).to(device)
        pos = answer_positions(batch)
        logits = model_logits(batch, pos).float()
        teacher = TeacherTargets(logits=teacher_logits(batch, pos).float()) if teacher_logits else None
        for b in range(batch.size):
            mask = pos.batch_index == b
            ce_sum, count = cross_entropy(logits, pos.targets, mask)
            nll.append((ce_sum / count).item())
            if teacher is not None:
                kl_sum, _ = forward_kl(
                    logits, teacher, mask, temperature=1.0, support="full", scale_by_temperature_squared=False
                )
                kl.append((kl_sum / count).item())
    return {"nll": nll, "kl": kl} if teacher_logits else {"nll": nll}


# ------------------------------------------------------------------------------------------------
# Backends and settings
# ------------------------------------------------------------------------------------------------


def eval_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def generation_settings(cfg: Config, tokenizer):
    from fsdistill.evaluation.generation import GenerationSettings, stop_token_ids_for

    return GenerationSettings(
        max_new_tokens=cfg.eval.max_new_tokens, stop_token_ids=stop_token_ids_for(tokenizer)
    )


def result_settings(cfg: Config, script: str, split: str) -> dict:
    """What a result file's numbers depend on; a resumed sweep must match these (results.load_or_new)."""
    e, d = cfg.eval, cfg.data
    return {
        "script": script,
        "model": cfg.model.name,
        "model_init": cfg.model.init,
        "model_architecture": dict(cfg.model.architecture),
        "tokenizer": cfg.model.tokenizer or cfg.model.name,
        "data_source": d.source,
        "split": split,
        # The exemplar pool (k-shot prompts, the teacher of teacher-forced metrics) and the validation
        # rows are cut from the training split by these.
        "train_split": d.train_split,
        "test_split": d.test_split,
        "max_train_examples": d.max_train_examples,
        "validation_size": d.validation_size,
        "validation_seed": cfg.training.seed if d.validation_size else None,
        "question_template": d.question_template,
        "chat_template_date": d.chat_template_date,
        "generate": e.generate,
        "backend": e.backend,
        "max_new_tokens": e.max_new_tokens,
        "n_samples": e.n_samples,
        "subset_seed": SUBSET_SEED,
        "icl_seed": e.icl_seed,
        "teacher_forced": e.teacher_forced,
        "teacher_shots": cfg.fewshot.k if e.teacher_forced else None,
        "teacher_seed": cfg.fewshot.seed if e.teacher_forced else None,
        "batch_size": e.batch_size,
        "tensor_parallel_size": e.tensor_parallel_size,
        "gpu_memory_utilization": e.gpu_memory_utilization,
        "teacher_forced_batch_size": e.teacher_forced_batch_size,
    }


def hf_answer_logits(model, device):
    """model_logits callback for teacher_forced_metrics: the model on the 0-shot (student) sequences."""
    from fsdistill.models.student import AnswerLogitsLM

    lm = AnswerLogitsLM(model).to(device).eval()
    return lambda batch, pos: lm(
        batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions
    )


def hf_teacher_logits(base_model, device, adapter_off=None):
    """teacher_logits callback: the BASE model on the k-shot (teacher) sequences (adapter off for LoRA)."""
    import contextlib

    from fsdistill.models.student import AnswerLogitsLM

    lm = AnswerLogitsLM(base_model).to(device).eval()

    def logits(batch, pos):
        with adapter_off() if adapter_off else contextlib.nullcontext():
            return lm(batch.teacher_ids, batch.teacher_mask, pos.batch_index, pos.teacher_positions)

    return logits


@dataclass
class EvalSession:
    """What both evaluation scripts open first: tokenizer, prompt builder, examples and the result file."""

    tokenizer: object
    prompts: PromptBuilder
    data: EvalData
    results: dict


def open_session(cfg: Config, script: str, split: str, output: str) -> EvalSession:
    """Load the tokenizer and the evaluated examples, and the result file to resume (or a new one)."""
    from fsdistill.data.gsm8k_loader import data_files
    from fsdistill.data.prompts import load_tokenizer
    from fsdistill.evaluation.results import collect_provenance, load_or_new

    tokenizer_name = cfg.model.tokenizer or cfg.model.name
    tokenizer = load_tokenizer(tokenizer_name)
    prompts = PromptBuilder(tokenizer, cfg.data.question_template, cfg.data.chat_template_date)
    data = load_eval_data(cfg, split)
    provenance = collect_provenance(
        data_files(cfg.data.source, [cfg.data.train_split, cfg.data.test_split]), tokenizer=tokenizer_name
    )
    results = load_or_new(output, result_settings(cfg, script, split), provenance)
    return EvalSession(tokenizer, prompts, data, results)
