"""The student and its teacher (fsdistill.modeling, fsdistill.distill.teacher): logits at chosen positions, what trains, what
stays frozen, and checkpoint identity. Tiny random models with a small vocabulary: seconds in all."""

from __future__ import annotations

import copy
import functools
import json
from contextlib import nullcontext

import pytest
import torch
from helpers import TINY, student_and_teacher
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from fsdistill.config import load_config, to_yaml
from fsdistill.data.batch import collate
from fsdistill.data.prompts import EncodedExample
from fsdistill.distill.alignment import answer_positions
from fsdistill.modeling import answer_lm as student_module
from fsdistill.modeling.answer_lm import AnswerLogitsLM, check_answer_logits, eval_mode
from fsdistill.modeling.loading import load_causal_lm
from fsdistill.train.checkpoint import CheckpointMismatch, check_checkpoint_matches
from fsdistill.train.step import micro_batch_losses

VOCAB = 128
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
)


@functools.cache
def tiny_model(name: str):
    """A tiny random Qwen3, Llama or Gemma 3 text model (Gemma with final-logit softcapping), eval mode."""
    torch.manual_seed(0)
    if name == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**SMALL)).eval()
    if name == "llama":
        return LlamaForCausalLM(LlamaConfig(**SMALL)).eval()
    gemma = Gemma3TextConfig(
        **SMALL,
        final_logit_softcapping=2.0,
        initializer_range=0.5,  # logits well above the cap, so softcapping changes them
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )
    return Gemma3ForCausalLM(gemma).eval()


def padded_inputs():
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, VOCAB, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # right padding, as in training
    batch_index = torch.tensor([0, 0, 0, 1, 1, 1, 0])
    positions = torch.tensor([0, 4, 9, 0, 3, 5, 7])
    return ids, mask, batch_index, positions


@pytest.mark.parametrize("name", ["qwen3", "llama", "gemma3"])
def test_answer_logits_equal_the_models_own_logits(name):
    model = tiny_model(name)
    ids, mask, batch_index, positions = padded_inputs()
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        ours = AnswerLogitsLM(model).logits_at(ids, mask, batch_index, positions)
    torch.testing.assert_close(ours, full[batch_index, positions], rtol=1e-5, atol=1e-5)
    check_answer_logits(AnswerLogitsLM(model), VOCAB, "cpu")


def test_gemma_softcapping_is_applied(monkeypatch):
    model = tiny_model("gemma3")
    ids, mask, batch_index, positions = padded_inputs()
    with torch.no_grad():
        capped = AnswerLogitsLM(model).logits_at(ids, mask, batch_index, positions)
        raw = model.lm_head(model.model(input_ids=ids, attention_mask=mask).last_hidden_state)
    raw = raw[batch_index, positions]
    assert capped.abs().max() <= 2.0 and raw.abs().max() > 5.0
    torch.testing.assert_close(capped, 2.0 * torch.tanh(raw / 2.0), rtol=1e-5, atol=1e-5)
    # Without the softcap, the start-of-run check refuses the model.
    monkeypatch.setattr(student_module, "head_logits", lambda lm, h: lm.get_output_embeddings()(h))
    with pytest.raises(RuntimeError, match="Gemma3ForCausalLM"):
        check_answer_logits(AnswerLogitsLM(model), VOCAB, "cpu")


# ------------------------------------------------------------------------------------------------
# Student and teacher built from a config
# ------------------------------------------------------------------------------------------------


def tiny_cfg(config: str, *overrides: str):
    cfg, _ = load_config(str(TINY / config), overrides=list(overrides))
    cfg.model.architecture["vocab_size"] = VOCAB  # the real tokenizer is not needed here
    return cfg


def fixed_batch():
    """Two examples whose teacher has 6 exemplar tokens before the student's prompt."""
    g = torch.Generator().manual_seed(5)

    def rand(n):
        return torch.randint(1, VOCAB, (n,), generator=g).tolist()

    encoded = []
    for row, (prompt_len, answer_len) in enumerate([(6, 5), (4, 3)]):
        prompt, answer, shots = rand(prompt_len), rand(answer_len), rand(6)
        encoded.append(
            EncodedExample(
                row=row,
                student_ids=prompt + answer,
                teacher_ids=shots + prompt + answer,
                student_answer_start=prompt_len,
                teacher_answer_start=prompt_len + 6,
            )
        )
    return collate(encoded, pad_id=0)


def logits(pair, batch):
    pos = answer_positions(batch)
    with torch.no_grad(), eval_mode(pair.student):
        s = pair.student.logits_at(
            batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions
        )
    t = pair.teacher.logits_at(batch, pos, torch.arange(VOCAB).expand(pos.count, VOCAB))  # every id: (N, V)
    return s, t


def base_logits(cfg, batch):
    """The base model built anew (seeded random weights) on the teacher's sequences."""
    pos = answer_positions(batch)
    with torch.no_grad():
        return AnswerLogitsLM(load_causal_lm(cfg.model).eval()).logits_at(
            batch.teacher_ids, batch.teacher_mask, pos.batch_index, pos.teacher_positions
        )


def base_logits_student(cfg, batch):
    """The base model built anew on the student's sequences."""
    pos = answer_positions(batch)
    with torch.no_grad():
        return AnswerLogitsLM(load_causal_lm(cfg.model).eval()).logits_at(
            batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions
        )


def train(cfg, pair, batch, steps=5):
    params = [p for p in pair.student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    pair.student.train()
    for _ in range(steps):
        losses = micro_batch_losses(cfg, pair.student, pair.teacher, batch, nullcontext)
        (losses.ce_sum + cfg.distill.weight * losses.dist_sum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_lora_only_adapter_parameters_train_and_the_teacher_stays_the_base_model():
    cfg = tiny_cfg("online_v1.yaml", "lora.dropout=0.1")
    torch.manual_seed(0)
    pair = student_and_teacher(cfg, with_teacher=True)
    named = dict(pair.student.named_parameters())
    trainable = [n for n, p in named.items() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.requires_grad for n, p in named.items() if "lora_" in n)
    assert not any(p.requires_grad for n, p in named.items() if "lora_" not in n)

    batch = fixed_batch()
    student0, teacher0 = logits(pair, batch)
    train(cfg, pair, batch)
    student1, teacher1 = logits(pair, batch)
    assert (student1 - student0).abs().max() > 1e-2  # the adapter learned
    assert torch.equal(teacher1, teacher0)  # the adapter is really off for the teacher
    assert torch.equal(teacher1, base_logits(cfg, batch))  # ... which is exactly the base model
    # The teacher's passes run in eval mode: LoRA dropout (0.1) never makes them random.
    assert torch.equal(logits(pair, batch)[1], teacher1)
    assert pair.student.training  # and the student is left in train mode


def test_full_finetuning_teacher_is_a_frozen_copy():
    cfg = tiny_cfg("full_ft_distill.yaml")
    torch.manual_seed(0)
    pair = student_and_teacher(cfg, with_teacher=True)
    student_params = list(pair.student.parameters())
    teacher_params = list(pair.teacher.answer_lm.parameters())
    assert all(p.requires_grad for p in student_params)
    assert not any(p.requires_grad for p in teacher_params)
    student_storage = {p.data_ptr() for p in student_params}
    assert not student_storage & {p.data_ptr() for p in teacher_params}

    batch = fixed_batch()
    student0, teacher0 = logits(pair, batch)
    torch.testing.assert_close(student0, base_logits_student(cfg, batch))
    train(cfg, pair, batch)
    student1, teacher1 = logits(pair, batch)
    assert (student1 - student0).abs().max() > 1e-2
    assert torch.equal(teacher1, teacher0)
    assert torch.equal(teacher1, base_logits(cfg, batch))
    assert all(p.grad is None for p in teacher_params)


# ------------------------------------------------------------------------------------------------
# Checkpoint identity
# ------------------------------------------------------------------------------------------------


def write_meta(folder, cfg):
    """A checkpoint's records: checkpoint.json and the config it was trained with."""
    folder.mkdir()
    (folder / "checkpoint.json").write_text(json.dumps({"step": 4}))
    (folder / "config.yaml").write_text(to_yaml(cfg))
    return folder


def test_checkpoint_identity(tmp_path):
    cfg = tiny_cfg("online_v1.yaml")
    assert check_checkpoint_matches(write_meta(tmp_path / "same", cfg), cfg)["step"] == 4

    other = copy.deepcopy(cfg)
    other.model.name = "Qwen/Qwen3-1.7B"
    other.lora.r = 4
    other.lora.target_modules = ["q_proj", "v_proj"]
    with pytest.raises(CheckpointMismatch) as err:
        check_checkpoint_matches(write_meta(tmp_path / "other", other), cfg)
    message = str(err.value)
    assert "model.name: checkpoint has 'Qwen/Qwen3-1.7B', config has None" in message
    assert "lora.r: checkpoint has 4, config has 8" in message
    assert "lora.target_modules: checkpoint has ['q_proj', 'v_proj']" in message
    assert "lora.alpha" not in message  # only the keys that differ

    full = copy.deepcopy(cfg)
    full.training.use_lora = False
    with pytest.raises(CheckpointMismatch, match="training.use_lora: checkpoint has False, config has True"):
        check_checkpoint_matches(write_meta(tmp_path / "full", full), cfg)

    with pytest.raises(CheckpointMismatch, match="no checkpoint.json"):
        check_checkpoint_matches(tmp_path, cfg)


def test_full_weights_load_from_one_file_or_shards(tmp_path):
    """Full fine-tuning checkpoints are reloaded on resume, whether saved whole or sharded."""
    from fsdistill.errors import UserError
    from fsdistill.train.checkpoint import load_full_weights

    torch.manual_seed(1)
    trained = Qwen3ForCausalLM(Qwen3Config(**SMALL, tie_word_embeddings=True))
    trained.save_pretrained(str(tmp_path / "whole"))
    trained.save_pretrained(str(tmp_path / "sharded"), max_shard_size="50KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    for folder in ("whole", "sharded"):
        torch.manual_seed(2)
        fresh = Qwen3ForCausalLM(Qwen3Config(**SMALL, tie_word_embeddings=True))
        load_full_weights(fresh, tmp_path / folder)
        for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
            assert torch.equal(a, b), (folder, name)
    with pytest.raises(UserError, match="no model weights found"):
        load_full_weights(fresh, tmp_path)
    other = Qwen3ForCausalLM(Qwen3Config(**{**SMALL, "num_hidden_layers": 1}))
    with pytest.raises(UserError, match="unexpected"):
        load_full_weights(other, tmp_path / "whole")
