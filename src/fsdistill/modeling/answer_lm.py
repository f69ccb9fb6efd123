"""A causal LM that returns logits (or final hidden states) only at the positions a loss reads.

The decoder's hidden states are gathered at the answer positions and only those go through the output
head, so no (batch, sequence, vocabulary) tensor is ever made (for the teacher's ~2k-token k-shot
sequence it would be ~2.8 GB at batch 4 in bf16).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Eval mode (no dropout) inside the block, the previous mode after it."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def head_logits(causal_lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The output head on hidden states (N, H) -> logits (N, V), including Gemma's final softcapping."""
    logits = causal_lm.get_output_embeddings()(hidden)
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)  # a transformers config attribute
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


class AnswerLogitsLM(nn.Module):
    """A causal LM that computes logits (or final hidden states) only at requested positions.

    hidden_at(input_ids (B, T), attention_mask (B, T), batch_index (N,), positions (N,)) -> (N, H): the
    final hidden states at input_ids[batch_index[i], positions[i]]; head(hidden (n, H)) -> logits (n, V);
    logits_at = head(hidden_at(...)): the model's next-token logits there.

    forward(computation) runs computation(self) and returns its result. Training and the teacher put
    every use of the parameters (decoder, output head, the answer losses) inside one such call, so the
    wrapper's forward hooks see all of it: DDP's gradient bookkeeping, and FSDP's gathering of sharded
    parameters (a head applied outside forward would see only this rank's shard).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # a CausalLM or a peft model around one

    def forward(self, computation: Callable[[AnswerLogitsLM], Any]) -> Any:
        return computation(self)

    @property
    def causal_lm(self) -> nn.Module:
        return base_causal_lm(self.model)

    def hidden_at(self, input_ids, attention_mask, batch_index, positions) -> torch.Tensor:
        decoder = self.causal_lm.get_decoder()
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state[batch_index, positions]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head: hidden states (n, H) -> logits (n, V)."""
        return head_logits(self.causal_lm, hidden)

    def logits_at(self, input_ids, attention_mask, batch_index, positions) -> torch.Tensor:
        return self.head(self.hidden_at(input_ids, attention_mask, batch_index, positions))


def check_answer_logits(model: AnswerLogitsLM, vocab_size: int, device) -> None:
    """Fail early if gathering hidden states + head differs from the model's own forward logits."""
    causal_lm = base_causal_lm(model.model)
    ids = torch.arange(1, 9, device=device).unsqueeze(0) % vocab_size
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = causal_lm(input_ids=ids, attention_mask=mask, use_cache=False).logits[0].float()
        pos = torch.arange(ids.shape[1], device=device)
        ours = model(lambda lm: lm.logits_at(ids, mask, torch.zeros_like(pos), pos)).float()
    tol = 1e-3 if full.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32 else 5e-2
    diff = (full - ours).abs().max().item()
    if diff > tol * max(1.0, full.abs().max().item()):
        raise RuntimeError(
            f"{type(causal_lm).__name__}: logits from hidden states + output head differ from the model's "
            f"forward by {diff:.3g}; this architecture post-processes logits in a way head_logits() lacks"
        )
