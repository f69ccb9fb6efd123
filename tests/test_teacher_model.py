"""Another model as the teacher (teacher.model): the vocabulary check of two tokenizers, and a teacher of
another width and another embedding row count sharing the real Qwen3 tokenizer (151,669 tokens; the
student's tiny Qwen3 has 151,936 embedding rows, the teacher 151,680): targets on the shared ids only, LoRA
and full fine-tuning students, a training run with the teacher cache, teacher samples, and teacher-forced
evaluation against the configured teacher.
"""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import CONFIGS, OFFLINE_OVERRIDES, prepared_smollm2_dir
from helpers import cli_argv, common_overrides, metrics, run_cli, student_and_teacher, train_online

from fsdistill.config import load_config
from fsdistill.data.batch import build_training_batches
from fsdistill.data.prompts import load_tokenizer
from fsdistill.distill.alignment import answer_positions
from fsdistill.distill.teacher_cache import cache_key
from fsdistill.modeling.answer_lm import AnswerLogitsLM
from fsdistill.modeling.vocabulary import VocabularyMismatch, shared_vocabulary
from fsdistill.train.step import micro_batch_losses

QWEN3_TOKENS = 151669
TEACHER_ROWS = 151680


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory, qwen3_tokenizer_path):
    """A random Qwen3 of another width (hidden 96, 3 layers) and embedding row count, with the Qwen3
    tokenizer, saved as a model folder."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen3",
        vocab_size=TEACHER_ROWS,
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path_factory.mktemp("teacher") / "qwen3-wide"
    model.save_pretrained(folder)
    load_tokenizer(str(qwen3_tokenizer_path)).save_pretrained(folder)
    return folder


def tiny(*overrides: str):
    cfg, _ = load_config(
        str(CONFIGS / "tiny" / "online_v1.yaml"),
        overrides=[*OFFLINE_OVERRIDES, "data.max_train_examples=32", *overrides],
    )
    return cfg


def first_batch(cfg):
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    b = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    return b.micro_batch(0, 0, 0, 1, cfg.training.per_device_batch_size).batch


# --------------------------------------------------------------------------------------------------
# The vocabulary check, a function of two tokenizers
# --------------------------------------------------------------------------------------------------


class FakeTokenizer:
    def __init__(self, tokens: list[str], name: str):
        self.tokens, self.name_or_path = tokens, name

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.tokens)}

    def __len__(self):
        return len(self.tokens)


def test_shared_vocabulary_is_the_smaller_size_when_they_agree(qwen3_tokenizer):
    assert shared_vocabulary(qwen3_tokenizer, qwen3_tokenizer) == QWEN3_TOKENS
    small, large = FakeTokenizer(["a", "b", "c"], "small"), FakeTokenizer(["a", "b", "c", "d", "e"], "large")
    assert shared_vocabulary(small, large) == 3 == shared_vocabulary(large, small)


def test_a_differing_token_is_named_with_both_sizes():
    student = FakeTokenizer(["a", "b", "c", "d"], "student-tok")
    teacher = FakeTokenizer(["a", "b", "x", "d", "e"], "teacher-tok")
    with pytest.raises(VocabularyMismatch) as e:
        shared_vocabulary(student, teacher)
    message = str(e.value)
    assert "teacher-tok, 5 tokens" in message and "student-tok, 4 tokens" in message
    assert "differ at id 2" in message and "'c'" in message and "'x'" in message


def test_a_mismatched_real_tokenizer_is_refused(qwen3_tokenizer):
    folder = prepared_smollm2_dir()
    with pytest.raises(VocabularyMismatch, match=r"49,152 tokens.*151,669 tokens.*differ at id 0"):
        shared_vocabulary(qwen3_tokenizer, load_tokenizer(str(folder)))


def test_mismatched_teacher_model_fails_before_any_weights_load(tmp_path, short_gsm8k):
    from fsdistill.train.entry import train_online_v1

    folder = prepared_smollm2_dir()
    argv = cli_argv(
        "online_v1.yaml", tmp_path / "run", *common_overrides(short_gsm8k), f"teacher.model={folder}"
    )
    assert run_cli(train_online_v1, argv) == 2  # a UserError, exit status 2
    assert not list((tmp_path / "run").glob("checkpoint-*"))


# --------------------------------------------------------------------------------------------------
# A teacher of another width and row count
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [True, False])
def test_targets_come_from_the_other_model_on_the_shared_ids(teacher_folder, lora):
    cfg = tiny(f"teacher.model={teacher_folder}", f"training.use_lora={str(lora).lower()}")
    pair = student_and_teacher(cfg)
    teacher = pair.teacher
    assert teacher.vocab_size == QWEN3_TOKENS and teacher.adapter_off is None
    assert teacher.answer_lm.causal_lm.config.hidden_size == 96  # not the student (64), not a copy of it
    batch = first_batch(cfg)
    pos = answer_positions(batch)
    got = teacher.targets(batch, pos)
    assert int(got.topk_indices.max()) < QWEN3_TOKENS
    # Against the teacher model's own forward, cut to the shared ids.
    with torch.no_grad():
        full = teacher.answer_lm.causal_lm(
            input_ids=batch.teacher_ids, attention_mask=batch.teacher_mask
        ).logits
    assert full.shape[-1] == TEACHER_ROWS
    want = full[pos.batch_index, pos.teacher_positions][:, :QWEN3_TOKENS].topk(cfg.distill.top_k)
    assert torch.allclose(got.topk_values, want.values, atol=1e-5)


@pytest.mark.parametrize(
    "loss",
    [
        ["distill.loss=forward_kl", "distill.top_k=null"],
        ["distill.loss=reverse_kl", "distill.topk_from=student"],
    ],
)
def test_losses_compare_the_shared_ids_and_train_the_student(teacher_folder, loss):
    """Full-vocabulary KL (151,669 teacher logits against the student's 151,936) and a support from the
    student's own top-K: both need the student's logits cut to the shared ids too."""
    cfg = tiny(f"teacher.model={teacher_folder}", *loss)
    pair = student_and_teacher(cfg)
    losses = micro_batch_losses(cfg, pair.student, pair.teacher, first_batch(cfg), contextlib.nullcontext)
    assert torch.isfinite(losses.dist_sum) and losses.dist_sum > 0
    losses.dist_sum.backward()
    grads = [p.grad for p in pair.student.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert all(p.grad is None for p in pair.teacher.answer_lm.parameters())  # the teacher is frozen


def test_the_other_models_shared_prefix_is_reused_exactly(teacher_folder):
    """A teacher system text is a prefix of every teacher sequence: the other model runs it once and
    reuses its keys/values, with the same targets as its plain forward."""
    system = "teacher.system=" + " ".join(f"Rule {i}: check every step twice." for i in range(20))
    cfg = tiny(f"teacher.model={teacher_folder}", "fewshot.k=0", "distill.top_k=16", system)
    pair = student_and_teacher(cfg)
    plain = student_and_teacher(
        tiny(
            f"teacher.model={teacher_folder}",
            "fewshot.k=0",
            "distill.top_k=16",
            system,
            "teacher.prefix_cache=false",
        )
    )
    assert pair.teacher.prefix is not None and plain.teacher.prefix is None
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    b = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
    for step in range(2):
        batch = b.micro_batch(step, 0, 0, 1, 2).batch
        pos = answer_positions(batch)
        got, want = pair.teacher.targets(batch, pos), plain.teacher.targets(batch, pos)
        assert torch.allclose(got.topk_values, want.topk_values, atol=1e-5, rtol=1e-5)
        # The same ids, but where two logits of this random model tie to float32 rounding at the K-th place.
        differ = got.topk_indices != want.topk_indices
        assert differ.float().mean() < 0.01 and bool((differ.nonzero()[:, 1] > 0).all())
    assert pair.teacher.prefix.computed == 1 and pair.teacher.prefix.reused == 1


def test_teacher_that_cannot_read_the_students_ids_is_refused(tmp_path, qwen3_tokenizer_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(
        "qwen3", vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
    )  # fmt: skip
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "small")
    load_tokenizer(str(qwen3_tokenizer_path)).save_pretrained(tmp_path / "small")
    with pytest.raises(VocabularyMismatch, match=r"input embedding has 1,000 rows, fewer than the 151,669"):
        student_and_teacher(tiny(f"teacher.model={tmp_path / 'small'}"))


def test_cache_key_is_the_teacher_models_weights(teacher_folder):
    own, other = (
        cache_key(tiny("teacher.cache=memory")),
        cache_key(tiny("teacher.cache=memory", f"teacher.model={teacher_folder}")),
    )
    assert own["weights"] == {"random": True}
    assert set(other["weights"]["files"]) == {"model.safetensors"}


def test_teacher_samples_come_from_the_teacher_model(teacher_folder):
    pair = student_and_teacher(tiny(f"teacher.model={teacher_folder}", "rollout.source=teacher"))
    with pair.teacher.sampling_model() as model:
        assert model.config.hidden_size == 96


def test_training_with_the_teacher_cache_records_the_teacher(teacher_folder, tmp_path, short_gsm8k):
    out = train_online(
        tmp_path / "run",
        short_gsm8k,
        f"teacher.model={teacher_folder}",
        "teacher.dtype=float32",
        "teacher.cache=memory",
        "training.max_steps=2",
        "training.save_every=2",
    )
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["method"] == "few_shot_distillation" and manifest["status"] == "finished"
    assert set(manifest["identity"]["teacher_weights"]["files"]) == {"model.safetensors"}
    values = metrics(out)
    assert all(v["train/dist_loss"] > 0 for v in values) and "train/teacher_cache_hit_rate" in values[-1]

    # Teacher-forced evaluation of the checkpoint: the KL is to teacher.model (the shared ids), recorded.
    from fsdistill.eval.checkpoints import main as eval_checkpoints

    evaluated = tmp_path / "eval.json"
    argv = [
        "--config", str(CONFIGS / "tiny" / "online_v1.yaml"), *OFFLINE_OVERRIDES, f"data.source={short_gsm8k}",
        f"teacher.model={teacher_folder}", "eval.generate=false", "eval.n_samples=4", "--teacher_forced",
        "--conditions", "run", "--base_dir", str(tmp_path), "--output", str(evaluated),
    ]  # fmt: skip
    assert run_cli(eval_checkpoints, argv) == 0
    plain = [a for a in argv if not a.startswith("teacher.model=")]
    assert run_cli(eval_checkpoints, [*plain[:-1], str(tmp_path / "eval_base.json")]) == 0
    result = json.loads(evaluated.read_text())
    base = json.loads((tmp_path / "eval_base.json").read_text())
    kl = [r["results"][0]["teacher_forced"]["kl"]["mean"] for r in (base, result)]
    assert kl[1] > 5 * kl[0] > 0  # the other model, not the run's own base with its adapter off
    assert set(result["settings"]["teacher"]["teacher_weights"]["files"]) == {"model.safetensors"}


def test_teacher_samples_run(teacher_folder, tmp_path, short_gsm8k):
    out = train_online(
        tmp_path / "run",
        short_gsm8k,
        f"teacher.model={teacher_folder}",
        "rollout.source=teacher",
        "rollout.max_new_tokens=6",
        "training.max_steps=1",
        "training.save_every=1",
    )
    assert metrics(out)[0]["rollout/samples"] == 4


def test_teacher_forced_kl_is_to_the_configured_teacher(teacher_folder, tmp_path, short_gsm8k):
    from fsdistill.eval.icl import main

    common = [
        "--config", str(CONFIGS / "tiny" / "online_v1.yaml"),
        *OFFLINE_OVERRIDES, f"data.source={short_gsm8k}", "eval.generate=false", "eval.teacher_forced=true",
        "eval.n_samples=4",
    ]  # fmt: skip
    assert run_cli(main, [*common, "--output", str(tmp_path / "base.json"), "--shots", "0"]) == 0
    other_argv = [*common, f"teacher.model={teacher_folder}", "--output", str(tmp_path / "other.json")]
    assert run_cli(main, [*other_argv, "--shots", "0"]) == 0
    base, other = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("base", "other"))
    kl = [SimpleNamespace(**r["results"][0]["teacher_forced"]["kl"]).mean for r in (base, other)]
    # Another random model is much further from the student's base than the base's own 2-shot view is.
    assert kl[1] > 5 * kl[0] > 0
    assert other["settings"]["teacher.model"] == str(teacher_folder)
    assert set(other["settings"]["teacher"]["teacher_weights"]["files"]) == {"model.safetensors"}
    assert "teacher" not in base["settings"]


def test_answer_logits_lm_of_the_teacher_keeps_its_rows(teacher_folder):
    """The teacher model's head keeps all its rows; only the compared logits are cut (vocab_size)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_folder)
    assert AnswerLogitsLM(model).head(torch.zeros(1, 96)).shape == (1, TEACHER_ROWS)


@pytest.mark.slow
def test_fsdp_shards_the_teacher_model_and_equals_ddp(teacher_folder, tmp_path, short_gsm8k):
    """Full fine-tuning under FSDP on 2 processes with teacher.model (sharded like the student, as the
    frozen copy is): the same losses as DDP."""
    from test_fsdp import launch, rank_records, settings

    extra = [f"teacher.model={teacher_folder}", "training.max_steps=2", "training.save_every=2"]
    for mode in ("fsdp", "ddp"):
        launch(
            "full_ft_distill.yaml",
            tmp_path / mode,
            *settings(short_gsm8k, f"training.distributed={mode}", *extra),
        )
    sharded, replicated = metrics(tmp_path / "fsdp"), metrics(tmp_path / "ddp")
    for a, b in zip(sharded, replicated, strict=True):
        for key in ("train/ce_loss", "train/dist_loss"):
            assert a[key] == pytest.approx(b[key], rel=1e-5), (a["step"], key)
    assert all(r["sharded"] for r in rank_records(tmp_path / "fsdp"))
