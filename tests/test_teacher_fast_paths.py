"""The fast paths of the distillation step against the original's algorithm, in float32 on the tiny model.

- ours (answer positions only, chunked head, teacher first) == the reference (full-sequence logits);
- the chunked loss == the unchunked one, and the output head never sees more than a chunk of rows;
- a frozen LoRA output head gets no gradient;
- a reused exemplar prefix gives the uncached teacher's logits (with padding), computed once for fixed shots.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from conftest import CONFIGS, OFFLINE_OVERRIDES
from helpers import student_and_teacher

from fsdistill.config import load_config
from fsdistill.data.batch import build_training_batches
from fsdistill.data.prompts import load_tokenizer
from fsdistill.distill.alignment import answer_positions
from fsdistill.modeling.answer_lm import base_causal_lm
from fsdistill.train.reference import reference_micro_batch_losses
from fsdistill.train.step import micro_batch_losses

SMALL = ["data.max_train_examples=64", "data.max_teacher_len=1024", "training.per_device_batch_size=3"]


def tiny(*overrides: str):
    cfg, _ = load_config(
        str(CONFIGS / "tiny" / "online_v1.yaml"), overrides=[*OFFLINE_OVERRIDES, *SMALL, *overrides]
    )
    return cfg


def first_batches(cfg, n: int = 2):
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    batches = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    out = [batches.micro_batch(s, 0, 0, 1, cfg.training.per_device_batch_size).batch for s in range(n)]
    assert all(b.size == cfg.training.per_device_batch_size for b in out)
    return out


def losses_and_grads(cfg, student, teacher, batch, fn):
    params = [p for p in student.parameters() if p.requires_grad]
    out = fn(cfg, student, teacher, batch, contextlib.nullcontext)
    losses = out[0] if isinstance(out, tuple) else out
    ((losses.ce_sum + cfg.distill.weight * losses.dist_sum) / losses.tokens).backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return losses.ce_sum.item(), losses.dist_sum.item(), grads


def assert_grads_close(got, want, rel: float) -> None:
    """max |got - want| <= rel x max |want| per tensor (entries near 0 carry summation-order noise)."""
    for a, b in zip(got, want):
        assert (a - b).abs().max() <= rel * b.abs().max(), (a - b).abs().max() / b.abs().max()


LOSSES = {
    "topk_logit_mse": [],
    "forward_kl_renormalize": ["distill.loss=forward_kl"],
    "reverse_kl_tail_bucket": [
        "distill.loss=reverse_kl",
        "distill.topk_support=tail_bucket",
        "distill.temperature=2.0",
    ],
    "generalized_jsd_full": ["distill.loss=generalized_jsd", "distill.top_k=null"],
}


@pytest.mark.parametrize("name", LOSSES)
def test_ours_equals_the_original_algorithm(qwen3_tokenizer_path, gsm8k_dir, name):
    """Same CE, distillation sum and LoRA gradients as full-sequence logits indexed afterwards."""
    cfg = tiny(*LOSSES[name], "training.logits_chunk_size=50")  # several chunks per micro-batch
    (batch,) = first_batches(cfg, 1)
    pair = student_and_teacher(cfg, with_teacher=True)
    pair.student.eval()
    ce_a, dist_a, grads_a = losses_and_grads(cfg, pair.student, pair.teacher, batch, micro_batch_losses)
    ref = lambda c, s, t, b, a: reference_micro_batch_losses(c, s, t, b, a)  # noqa: E731
    ce_b, dist_b, grads_b = losses_and_grads(cfg, pair.student, pair.teacher, batch, ref)
    assert answer_positions(batch).count > 100
    assert ce_a == pytest.approx(ce_b, rel=1e-5)
    assert dist_a == pytest.approx(dist_b, rel=1e-5, abs=1e-7)
    assert dist_a > 0
    assert_grads_close(grads_a, grads_b, 1e-5)


def test_chunked_loss_is_the_unchunked_loss_with_bounded_head_calls(qwen3_tokenizer_path, gsm8k_dir):
    (batch,) = first_batches(tiny(), 1)
    n = answer_positions(batch).count
    results = {}
    for chunk in (7, 4096):
        cfg = tiny(f"training.logits_chunk_size={chunk}")
        torch.manual_seed(0)  # the same LoRA initialisation for both
        pair = student_and_teacher(cfg, with_teacher=True)
        pair.student.eval()
        head = base_causal_lm(pair.student.model).get_output_embeddings()
        rows = []
        hook = head.register_forward_hook(lambda m, args, out, rows=rows: rows.append(args[0].shape[0]))
        try:
            results[chunk] = losses_and_grads(cfg, pair.student, pair.teacher, batch, micro_batch_losses)
        finally:
            hook.remove()
        assert max(rows) == min(chunk, n), (chunk, rows)
        if chunk == 7:  # forward per chunk, teacher + student, and the student's recompute in backward
            assert len(rows) == 3 * -(-n // 7)
    (ce_a, dist_a, grads_a), (ce_b, dist_b, grads_b) = results[7], results[4096]
    assert ce_a == pytest.approx(ce_b, rel=1e-6)
    assert dist_a == pytest.approx(dist_b, rel=1e-6)
    assert_grads_close(grads_a, grads_b, 1e-5)


def test_frozen_lora_output_head_gets_no_gradient(qwen3_tokenizer_path, gsm8k_dir):
    cfg = tiny()
    (batch,) = first_batches(cfg, 1)
    pair = student_and_teacher(cfg, with_teacher=True)
    head = base_causal_lm(pair.student.model).get_output_embeddings()
    losses = micro_batch_losses(cfg, pair.student, pair.teacher, batch, contextlib.nullcontext)
    (losses.ce_sum + losses.dist_sum).backward()
    assert not head.weight.requires_grad and head.weight.grad is None
    assert all(p.grad is not None for p in pair.student.parameters() if p.requires_grad)


def test_full_finetuning_teacher_is_a_frozen_copy_with_its_own_head(qwen3_tokenizer_path, gsm8k_dir):
    cfg = tiny("training.use_lora=false")
    pair = student_and_teacher(cfg, with_teacher=True)
    teacher_head = base_causal_lm(pair.teacher.answer_lm.model).get_output_embeddings()
    assert not any(p.requires_grad for p in pair.teacher.answer_lm.parameters())
    assert (
        teacher_head.weight.data_ptr()
        != base_causal_lm(pair.student.model).get_output_embeddings().weight.data_ptr()
    )


# ------------------------------------------------------------------------------------------------
# Cached exemplar prefix
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("selection", ["fixed", "per_batch"])
def test_reused_prefix_gives_the_uncached_teacher_logits(qwen3_tokenizer_path, gsm8k_dir, selection):
    """Teacher logits at the answer positions, right-padded batches of 3, fp32: atol 1e-5."""
    cfg = tiny(f"fewshot.selection={selection}", "training.grad_accum_steps=2")
    batches = first_batches(cfg, 3)
    assert len({int(b.teacher_mask.sum(1).min()) for b in batches}) > 1
    assert all(int(b.teacher_mask.sum(1).min()) < b.teacher_ids.shape[1] for b in batches)  # padded
    cached = student_and_teacher(cfg, with_teacher=True).teacher
    plain = student_and_teacher(
        tiny(f"fewshot.selection={selection}", "teacher.prefix_cache=false"), True
    ).teacher
    assert cached.prefix is not None and plain.prefix is None
    for batch in batches:
        pos = answer_positions(batch)
        got = cached.head(cached.hidden_at(batch, pos.batch_index, pos.teacher_positions))
        want = plain.head(plain.hidden_at(batch, pos.batch_index, pos.teacher_positions))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    stored = cached.prefix.stored.ids.numel()
    assert stored > 200  # the 2 exemplars (a couple of hundred tokens) are in the prefix
    if selection == "fixed":  # one exemplar set for the run: the prefix is computed once
        assert (cached.prefix.computed, cached.prefix.reused) == (1, 2)
    else:  # a new draw every step: once per step
        assert (cached.prefix.computed, cached.prefix.reused) == (3, 0)


def test_prefix_mask_must_cover_the_prefix(qwen3_tokenizer_path, gsm8k_dir):
    """The pitfall the prefix path avoids: a suffix-only mask runs and is wrong."""
    from fsdistill.modeling.prefix import PrefixKV, make_prefix_cache

    cfg = tiny("fewshot.selection=fixed")
    (batch,) = first_batches(cfg, 1)
    decoder = base_causal_lm(student_and_teacher(cfg, with_teacher=False).student.model).get_decoder()
    ids, mask = batch.teacher_ids, batch.teacher_mask
    with torch.no_grad():
        kv = PrefixKV(min_tokens=1)
        kv.compute(decoder, ids, 100)
        cache = make_prefix_cache(kv.stored.layers_kv, ids.shape[0], 100)
        wrong = decoder(
            input_ids=ids[:, 100:], attention_mask=mask[:, 100:], past_key_values=cache, use_cache=True
        )
        right = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state[:, 100:]
    valid = mask[:, 100:].bool()
    assert (wrong.last_hidden_state[valid] - right[valid]).abs().max() > 1e-2
