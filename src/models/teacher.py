"""The teacher: the frozen base model on the k-shot sequence, reduced to what the loss reads.

`LiveTeacher` runs the model (with the LoRA adapter switched off, or a frozen copy for full fine-tuning)
and returns `TeacherAnswers`: at the N answer positions, the top-K logits and their vocabulary ids (and
the log-normaliser when a tail bucket needs it), computed chunk by chunk so no (N, V) tensor outlives a
chunk. Only full-vocabulary losses keep the teacher's hidden states instead, and the loss applies the
output head chunk by chunk.

`CachedTeacher` puts a per-example store of those top-K targets in front of it (see teacher_cache.py):
the teacher is frozen and, unless shots are redrawn every step, its input for an example never changes,
so the targets of the first visit serve every later one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from fsdistill.config import Config
from fsdistill.models.prefix import PrefixKV, all_layers_full_attention, check_prefix_forward, suffix_hidden
from fsdistill.models.student import AnswerLogitsLM, base_causal_lm, eval_mode, head_logits
from fsdistill.training.losses import TeacherTargets, teacher_targets_from_logits


@dataclass(frozen=True)
class TargetSpec:
    """What the distillation loss reads from the teacher at each answer token.

    top_k: K vocabulary entries kept (None: the full distribution, via hidden states + head per chunk).
    support: the loss's support ("full", "renormalize", "tail_bucket"; see losses.log_probs_on_support).
    logsumexp_temperature: set when the tail bucket needs the teacher's full-softmax normaliser.
    """

    top_k: Optional[int]
    support: str
    logsumexp_temperature: Optional[float]


def target_spec(cfg: Config) -> TargetSpec:
    """The targets distill.* asks for. With a teacher cache and a full-vocabulary loss, the cache keeps
    teacher.cache_top_k entries plus a tail bucket, so the loss runs on that K+1 support instead."""
    d = cfg.distill
    if d.top_k is not None:
        top_k, support = d.top_k, d.topk_support
    elif cfg.teacher.cache != "off":
        top_k, support = cfg.teacher.cache_top_k, "tail_bucket"
    else:
        top_k, support = None, "full"
    needs_lse = support == "tail_bucket" and d.loss != "topk_logit_mse"
    return TargetSpec(top_k, support, d.temperature if needs_lse else None)


@dataclass
class TeacherAnswers:
    """The teacher at the N answer positions of a micro-batch, in `AnswerPositions` order.

    Either top-K targets: topk_values (N, K) raw logits in the logits dtype, topk_indices (N, K) long,
    logsumexp (N,) float32 or None; or, for full-vocabulary losses, hidden (N, H) with `head` mapping
    (n, H) -> (n, V), applied per chunk by `chunk`.
    """

    topk_values: Optional[torch.Tensor] = None
    topk_indices: Optional[torch.Tensor] = None
    logsumexp: Optional[torch.Tensor] = None
    logsumexp_temperature: Optional[float] = None
    hidden: Optional[torch.Tensor] = None
    head: Optional[object] = None

    def chunk(self, start: int, end: int) -> TeacherTargets:
        """TeacherTargets of positions [start, end) (full logits computed here, without grad)."""
        if self.hidden is not None:
            with torch.no_grad():
                return TeacherTargets(logits=self.head(self.hidden[start:end]))
        return TeacherTargets(
            topk_values=self.topk_values[start:end],
            topk_indices=self.topk_indices[start:end],
            logsumexp=None if self.logsumexp is None else self.logsumexp[start:end],
            logsumexp_temperature=self.logsumexp_temperature,
        )

    @staticmethod
    def cat(parts: list[TeacherAnswers]) -> TeacherAnswers:
        """Concatenate top-K answers along positions."""
        first = parts[0]
        return TeacherAnswers(
            topk_values=torch.cat([p.topk_values for p in parts]),
            topk_indices=torch.cat([p.topk_indices for p in parts]),
            logsumexp=None if first.logsumexp is None else torch.cat([p.logsumexp for p in parts]),
            logsumexp_temperature=first.logsumexp_temperature,
        )


class LiveTeacher:
    """The frozen base model run on the k-shot sequence at every call.

    answer_lm: the student's AnswerLogitsLM (LoRA: `adapter_off` switches the adapter off, no second copy
    of the weights) or a frozen copy's (full fine-tuning: adapter_off None).
    prefix: a PrefixKV when shared exemplar prefixes should be reused (fixed / per_batch shots), else None.
    """

    def __init__(
        self,
        answer_lm: AnswerLogitsLM,
        adapter_off,
        spec: TargetSpec,
        chunk_size: int,
        prefix: Optional[PrefixKV] = None,
    ):
        self.answer_lm = answer_lm
        self.adapter_off = adapter_off
        self.spec = spec
        self.chunk_size = chunk_size
        self.prefix = prefix

    @contextlib.contextmanager
    def _frozen(self):
        off = self.adapter_off() if self.adapter_off else contextlib.nullcontext()
        with torch.no_grad(), off, eval_mode(self.answer_lm):
            yield

    def _causal_lm(self):
        return base_causal_lm(self.answer_lm.model)

    def hidden_at(self, batch, batch_index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Final hidden states (N, H) at teacher positions (N,) of the batch's teacher sequences."""
        with self._frozen():
            if self.prefix is not None:
                # Every predicting position must stay in the suffix: prefix <= first one.
                limit = int(batch.teacher_answer_start.min()) - 1
                action, length = self.prefix.plan(batch.teacher_ids, batch.teacher_mask, limit)
                if action != "none":
                    decoder = self._causal_lm().get_decoder()
                    if action == "compute":
                        self.prefix.compute(decoder, batch.teacher_ids, length)
                    hidden = suffix_hidden(
                        decoder, self.prefix.stored, batch.teacher_ids, batch.teacher_mask, length
                    )
                    return hidden[batch_index, positions - length]
            return self.answer_lm(
                batch.teacher_ids, batch.teacher_mask, batch_index, positions, return_hidden=True
            )

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head (n, H) -> (n, V) without grad (the head is the same with the adapter off)."""
        with torch.no_grad():
            return head_logits(self._causal_lm(), hidden)

    def logits_at(self, batch, batch_index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Full logits (N, V) at the given teacher positions (evaluation and tests; training uses answers)."""
        return self.head(self.hidden_at(batch, batch_index, positions))

    def self_check(self, vocab_size: int, device) -> None:
        """Start-up check of the fast path: reusing a prefix must equal the plain forward on this model."""
        if self.prefix is not None:
            with self._frozen():
                check_prefix_forward(self._causal_lm().get_decoder(), vocab_size, device)

    def end_step(self, accelerator) -> None:
        """Nothing to share between processes (CachedTeacher shares its new entries here)."""

    def answers(self, batch, pos) -> TeacherAnswers:
        """TeacherAnswers at the answer positions `pos` (an AnswerPositions of this batch)."""
        hidden = self.hidden_at(batch, pos.batch_index, pos.teacher_positions)
        spec = self.spec
        if spec.top_k is None:
            return TeacherAnswers(hidden=hidden, head=self.head)
        parts = []
        for chunk in hidden.split(self.chunk_size):
            t = teacher_targets_from_logits(
                self.head(chunk),
                top_k=spec.top_k,
                keep_full=False,
                logsumexp_temperature=spec.logsumexp_temperature,
            )
            parts.append(
                TeacherAnswers(t.topk_values, t.topk_indices, t.logsumexp, spec.logsumexp_temperature)
            )
        if not parts:  # no answer tokens (an all-dropped micro-batch)
            empty = hidden.new_zeros((0, spec.top_k))
            return TeacherAnswers(empty, empty.long(), None, spec.logsumexp_temperature)
        return TeacherAnswers.cat(parts)


def make_prefix_kv(cfg: Config, causal_lm) -> Optional[PrefixKV]:
    """A PrefixKV when the shots are shared across a micro-batch and the model supports it, else None."""
    f, t = cfg.fewshot, cfg.teacher
    if not t.prefix_cache or f.k == 0 or f.selection == "per_example":
        return None
    if not all_layers_full_attention(causal_lm.config):
        return None
    return PrefixKV(t.prefix_min_tokens)


def make_live_teacher(cfg: Config, answer_lm: AnswerLogitsLM, adapter_off) -> LiveTeacher:
    """The live teacher cfg describes (with a prefix cache for shared shots), without a top-K cache."""
    return LiveTeacher(
        answer_lm,
        adapter_off,
        target_spec(cfg),
        cfg.training.logits_chunk_size,
        make_prefix_kv(cfg, base_causal_lm(answer_lm.model)),
    )


def make_teacher(cfg: Config, answer_lm: AnswerLogitsLM, adapter_off):
    """The teacher cfg describes: live, with a prefix cache for shared shots, behind a top-K cache."""
    live = make_live_teacher(cfg, answer_lm, adapter_off)
    if cfg.teacher.cache == "off":
        return live
    from fsdistill.models.teacher_cache import CachedTeacher, open_store

    return CachedTeacher(live, open_store(cfg))

