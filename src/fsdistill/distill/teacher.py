"""The teacher: a frozen model on the teacher's sequence, reduced to what the loss reads.

The teacher's sequence (its context, exemplars, the answer) is made by the data code
(data/teacher_prompt.py, data/prompts.py) as token ids in `batch.teacher_ids`; a teacher only runs it.
What the training loop calls on a teacher is the :class:`Teacher` protocol; its implementations:

- `LiveTeacher` runs the model (the student with its LoRA adapter switched off, a frozen copy of the
  initial weights for full fine-tuning, or another model, teacher.model) and returns `TeacherTargets` at the
  N answer positions: top-K logits and their vocabulary ids (and the log-normaliser when a tail bucket needs
  it), computed chunk by chunk so no (N, V) tensor outlives a chunk; full-vocabulary losses get the
  teacher's hidden states and its head instead, applied per chunk by the loss. It reuses the keys/values of
  a prefix its sequences share (exemplars with `fixed`/`per_batch` shots, a teacher system text or shared
  context file; modeling/prefix.py). Another model's logits are cut to the ids its tokenizer shares with the
  student's (`vocab_size`; modeling/vocabulary.py).
- `ServedTeacher` (served_teacher.py) asks a running vLLM server (teacher.server) for the top-K
  log-probabilities of teacher.model at the answer positions (for sampled_token: the answer token's own).
- `CachedTeacher` (teacher_cache.py) puts a per-example store of those top-K targets in front of one.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Optional, Protocol

import torch

from fsdistill.config import Config
from fsdistill.distill.losses import TeacherTargets, teacher_targets_from_logits
from fsdistill.distill.objective import TargetSpec, target_spec
from fsdistill.distill.served_teacher import make_served_teacher
from fsdistill.distill.teacher_cache import CachedTeacher, open_store
from fsdistill.modeling.answer_lm import AnswerLogitsLM, base_causal_lm, eval_mode
from fsdistill.modeling.loading import load_teacher_model, teacher_vocabulary
from fsdistill.modeling.prefix import PrefixKV, all_layers_full_attention, check_prefix_forward, suffix_hidden
from fsdistill.modeling.sharding import shard


class Teacher(Protocol):
    """What the training loop calls on a teacher. `batch` is a data.batch.Batch, `pos` its
    distill.alignment.AnswerPositions (N answer tokens).

    vocab_size: the number of leading vocabulary ids the teacher's logits cover and the student's are
    compared on (another model with a smaller vocabulary), or None: the whole head.
    """

    vocab_size: Optional[int]

    def targets(self, batch, pos) -> TeacherTargets:
        """The loss's targets at the N answer positions (what target_spec asks for)."""
        ...

    def logits_at(self, batch, pos, token_ids: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (N, K) at vocabulary ids token_ids (N, K) the caller names, at the N answer
        positions (e.g. a loss over the student's own top-K support)."""
        ...

    def sampling_model(self) -> contextlib.AbstractContextManager:
        """A context yielding the causal LM that writes the teacher's answers (rollout.source=teacher): the
        frozen weights (the student's model with its adapter off, or the frozen copy)."""
        ...

    def self_check(self, vocab_size: int, device) -> None:
        """Start-up check that the teacher's fast paths equal the plain forward on this model."""
        ...

    def prepare_step(self, micro_batches) -> Optional[str]:
        """Called once per optimizer step on every process before its micro-batches run (a data.batch
        MicroBatch list): a teacher run elsewhere fetches the step's targets here. The reason it could not,
        or None (the loop agrees on it across processes and stops cleanly)."""
        ...

    def end_step(self, accelerator) -> None:
        """Called once per optimizer step on every process (a cache shares its new entries here)."""
        ...

    def metrics(self) -> dict[str, float]:
        """Values to log with the step's metrics (names without the train/ prefix)."""
        ...


class LiveTeacher:
    """The frozen base model run on the k-shot sequence at every call.

    answer_lm: the student's AnswerLogitsLM (LoRA: `adapter_off` switches the adapter off, no second copy
    of the weights) or a frozen copy's (full fine-tuning: adapter_off None).
    prefix: a PrefixKV when shared exemplar prefixes should be reused (fixed / per_batch shots), else None.
    sharded: the weights are sharded (FSDP): every use of them happens inside answer_lm's forward, so
    full-vocabulary targets are computed there as logits instead of being left to the loss (which would
    apply a head whose weights it cannot gather); (N, V) logits then exist for the micro-batch.
    vocab_size: keep only the first vocab_size logits of every position (another model: the ids its
    tokenizer shares with the student's), or None.
    """

    def __init__(
        self,
        answer_lm: AnswerLogitsLM,
        adapter_off,
        spec: TargetSpec,
        chunk_size: int,
        prefix: Optional[PrefixKV] = None,
        sharded: bool = False,
        vocab_size: Optional[int] = None,
    ):
        self.answer_lm = answer_lm
        self.adapter_off = adapter_off
        self.spec = spec
        self.chunk_size = chunk_size
        self.prefix = prefix
        self.sharded = sharded
        self.vocab_size = vocab_size

    def _logits(self, lm: AnswerLogitsLM, hidden: torch.Tensor) -> torch.Tensor:
        """The head on hidden states (n, H) -> (n, V), cut to the shared ids (n, vocab_size) if any."""
        logits = lm.head(hidden)
        return logits if self.vocab_size is None else logits[..., : self.vocab_size]

    def _run(self, computation):
        """computation(answer_lm) inside its forward, without grad, adapter off, in eval mode (no dropout)."""
        off = self.adapter_off() if self.adapter_off else contextlib.nullcontext()
        with torch.no_grad(), off, eval_mode(self.answer_lm):
            return self.answer_lm(computation)

    def _hidden(
        self, lm: AnswerLogitsLM, batch, batch_index: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Final hidden states (N, H) at teacher positions (N,), the shared exemplar prefix reused if any."""
        if self.prefix is not None:
            # Every predicting position must stay in the suffix: prefix <= first one.
            limit = int(batch.teacher_answer_start.min()) - 1
            action, length = self.prefix.plan(batch.teacher_ids, batch.teacher_mask, limit)
            if action != "none":
                decoder = lm.causal_lm.get_decoder()
                if action == "compute":
                    self.prefix.compute(decoder, batch.teacher_ids, length)
                hidden = suffix_hidden(
                    decoder, self.prefix.stored, batch.teacher_ids, batch.teacher_mask, length
                )
                return hidden[batch_index, positions - length]
        return lm.hidden_at(batch.teacher_ids, batch.teacher_mask, batch_index, positions)

    def hidden_at(self, batch, batch_index: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Final hidden states (N, H) at teacher positions (N,) of the batch's teacher sequences."""
        return self._run(lambda lm: self._hidden(lm, batch, batch_index, positions))

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head (n, H) -> (n, V) without grad (the head is the same with the adapter off)."""
        return self._run(lambda lm: self._logits(lm, hidden))

    def targets(self, batch, pos) -> TeacherTargets:
        return self._run(lambda lm: self._targets(lm, batch, pos))

    def _targets(self, lm: AnswerLogitsLM, batch, pos) -> TeacherTargets:
        hidden = self._hidden(lm, batch, pos.batch_index, pos.teacher_positions)
        spec = self.spec
        if spec.top_k is None:
            if self.sharded:
                chunks = [self._logits(lm, chunk) for chunk in hidden.split(self.chunk_size)]
                return TeacherTargets(logits=torch.cat(chunks) if chunks else self._logits(lm, hidden))
            return TeacherTargets(hidden=hidden, head=self.head)
        parts = [
            teacher_targets_from_logits(
                self._logits(lm, chunk),
                top_k=spec.top_k,
                keep_full=False,
                logsumexp_temperature=spec.logsumexp_temperature,
            )
            for chunk in hidden.split(self.chunk_size)
        ]
        if not parts:  # no answer tokens (an all-dropped micro-batch)
            empty = hidden.new_zeros((0, spec.top_k))
            return TeacherTargets(
                topk_values=empty, topk_indices=empty.long(), logsumexp_temperature=spec.logsumexp_temperature
            )
        return TeacherTargets.cat(parts)

    def logits_at(self, batch, pos, token_ids: torch.Tensor) -> torch.Tensor:
        def gathered(lm):
            hidden = self._hidden(lm, batch, pos.batch_index, pos.teacher_positions)
            parts = [
                self._logits(lm, h).gather(-1, ids)
                for h, ids in zip(hidden.split(self.chunk_size), token_ids.split(self.chunk_size))
            ]
            return torch.cat(parts) if parts else hidden.new_zeros(token_ids.shape)

        return self._run(gathered)

    @contextlib.contextmanager
    def sampling_model(self):
        off = self.adapter_off() if self.adapter_off else contextlib.nullcontext()
        with off:
            yield self.answer_lm.model

    def self_check(self, vocab_size: int, device) -> None:
        """Reusing a prefix must equal the plain forward on this model (the only fast path here)."""
        if self.prefix is not None:
            self._run(lambda lm: check_prefix_forward(lm.causal_lm.get_decoder(), vocab_size, device))

    def prepare_step(self, micro_batches) -> Optional[str]:
        """Nothing to fetch: the model runs at each call."""
        return None

    def end_step(self, accelerator) -> None:
        """Nothing to share between processes."""

    def metrics(self) -> dict[str, float]:
        return {}


def make_prefix_kv(cfg: Config, causal_lm) -> Optional[PrefixKV]:
    """A PrefixKV when a micro-batch's teacher sequences share a prefix by construction and the model
    supports it, else None: exemplars shared by the micro-batch (fixed or per_batch shots), or a teacher
    system text or single shared context file (a prefix whatever the exemplar selection, k = 0 included)."""
    f, t = cfg.fewshot, cfg.teacher
    shared_exemplars = f.k > 0 and f.selection != "per_example"
    if not t.prefix_cache or not (shared_exemplars or t.shared_prefix):
        return None
    if not all_layers_full_attention(causal_lm.config):
        return None
    return PrefixKV(t.prefix_min_tokens)


def make_live_teacher(
    cfg: Config,
    answer_lm: AnswerLogitsLM,
    adapter_off,
    sharded: bool = False,
    vocab_size: Optional[int] = None,
) -> LiveTeacher:
    """The live teacher cfg describes (with a prefix cache for a shared prefix), without a top-K cache."""
    return LiveTeacher(
        answer_lm,
        adapter_off,
        target_spec(cfg),
        cfg.training.logits_chunk_size,
        make_prefix_kv(cfg, base_causal_lm(answer_lm.model)),
        sharded,
        vocab_size,
    )


def make_teacher(cfg: Config, student: AnswerLogitsLM, sharded: bool = False, tokenizer=None) -> Teacher:
    """The teacher of `student` cfg describes, made before training changes (or shards) the student.

    teacher.model: that model, frozen, on the student's device, after the vocabulary check against the
    student's `tokenizer` (loaded from model.tokenizer / model.name when not given). Otherwise LoRA: the
    student module itself with its adapter switched off; full fine-tuning: a frozen copy of the student's
    (initial) weights. A frozen model is sharded like the student with sharded=True (FSDP; no optimizer
    state). Live, with a prefix cache for a shared prefix, behind a top-K cache when teacher.cache is on.
    teacher.server: teacher.model served by vLLM elsewhere (served_teacher.py), after the same vocabulary
    check.
    """
    vocab_size = None
    if cfg.teacher.model is not None:
        if tokenizer is None:
            from fsdistill.data.prompts import load_tokenizer

            tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
        vocab_size = teacher_vocabulary(cfg, tokenizer)
    if cfg.teacher.server is not None:
        return make_served_teacher(cfg, vocab_size)
    if cfg.teacher.model is not None:
        device = next(student.parameters()).device
        answer_lm = AnswerLogitsLM(load_teacher_model(cfg, vocab_size, len(tokenizer)).to(device))
        adapter_off = None
    elif cfg.training.use_lora:
        answer_lm, adapter_off = student, student.model.disable_adapter
    else:
        frozen = copy.deepcopy(student.model)
        frozen.requires_grad_(False)
        frozen.eval()
        answer_lm, adapter_off = AnswerLogitsLM(frozen), None
    if sharded and adapter_off is None:
        shard(answer_lm, cfg.training.mixed_precision)
    live = make_live_teacher(cfg, answer_lm, adapter_off, sharded, vocab_size)
    if cfg.teacher.cache == "off":
        return live
    return CachedTeacher(live, open_store(cfg))
