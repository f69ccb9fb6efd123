"""Rollouts in the training recipe (train/rollouts.py), on the tiny random Qwen3 with the real tokenizer:
what a sampled batch holds and masks, seeded sampling, zero loss and gradient when the teacher is the
student, gradients only where they belong, the config's refusals, and CLI runs: one per loss family, exact
resumption mid-run, two processes. The vLLM backend against the real engine: tests/test_vllm.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import TINY, cli_argv, common_overrides, metrics, run_cli, student_and_teacher

from fsdistill.config import ConfigError, load_config
from fsdistill.data.batch import IGNORE_INDEX, build_training_batches
from fsdistill.data.prompts import load_tokenizer
from fsdistill.distill.alignment import answer_positions
from fsdistill.modeling.generation import SamplingSettings, sample_hf, through_stop
from fsdistill.train.entry import train_baseline, train_online_v1
from fsdistill.train.rollouts import Rollouts, sampling_seed, step_source
from fsdistill.train.step import backward_step

ON_POLICY = ["fewshot.k=2", "distill.top_k=8", "rollout.source=student", "rollout.max_new_tokens=6"]


def tiny_cfg(short_gsm8k: Path, *overrides: str, config: str = "online_v1.yaml"):
    cfg, _ = load_config(str(TINY / config), overrides=[*common_overrides(short_gsm8k), *overrides])
    return cfg


class ScriptedLM(torch.nn.Module):
    """A stand-in causal LM whose generate returns each prompt followed by scripted new tokens."""

    def __init__(self, new_tokens: list[list[int]]):
        super().__init__()
        self.new_tokens = new_tokens
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    @property
    def device(self):
        return torch.device("cpu")

    def generate(self, input_ids, attention_mask, generation_config):
        self.calls.append((input_ids, attention_mask, generation_config, self.training))
        width = max(len(t) for t in self.new_tokens)
        pad = generation_config.pad_token_id
        rows = [t + [pad] * (width - len(t)) for t in self.new_tokens[: input_ids.shape[0]]]
        return torch.cat([input_ids, torch.tensor(rows)], dim=1)


@pytest.fixture(scope="module")
def setting(short_gsm8k):
    cfg = tiny_cfg(short_gsm8k, *ON_POLICY)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    batches = build_training_batches(cfg, tokenizer, True, 1)
    return cfg, tokenizer, batches


def make_rollouts(cfg, tokenizer, batches, tmp_path):
    return Rollouts(
        cfg,
        tokenizer,
        batches.prompts,
        batches.by_row,
        tmp_path,
        0,
        lambda: torch.autocast("cpu", enabled=False),
    )


def step_micro_batches(cfg, batches, step: int):
    return [batches.micro_batch(step, m, 0, 1, cfg.training.per_device_batch_size) for m in range(2)]


def test_a_sampled_batch_labels_exactly_the_sampled_tokens_through_end_of_turn(setting, tmp_path):
    cfg, tokenizer, batches = setting
    rollouts = make_rollouts(cfg, tokenizer, batches, tmp_path)
    eot = batches.prompts.end_of_turn_ids()[0]
    assert eot in rollouts.settings.stop_token_ids
    a, b, junk = 100, 200, 300
    script = [[a, b, eot, junk, junk], [a, a, a, a, a, a], [b, eot], [eot]]  # 4 rows: 2 micro-batches of 2
    model = ScriptedLM(script)
    micro = step_micro_batches(cfg, batches, 0)
    data, source, stats = rollouts.step_batches(1, micro, SimpleNamespace(model=model), None)
    assert source == "student" and data.ce_weight == 0.0 and data.gold == []
    assert not model.calls[0][3]  # sampled in eval mode
    assert len(model.calls) == 1  # one generation call for the whole step
    expected = [[a, b, eot], [a, a, a, a, a, a], [b, eot], [eot]]
    gold = [e for mb in micro for e in mb.encoded]
    got = []
    for mb in data.micro_batches:
        batch = mb.batch
        pos = answer_positions(batch)  # student and teacher hold the same ids at the same answer offsets
        for i, e in enumerate(mb.encoded):
            source_row = next(g for g in gold if g.row == e.row)
            s_prompt = source_row.student_ids[: source_row.student_answer_start]
            t_prompt = source_row.teacher_ids[: source_row.teacher_answer_start]
            assert e.student_ids[: e.student_answer_start] == s_prompt  # the prompt ids, verbatim
            assert e.teacher_ids[: e.teacher_answer_start] == t_prompt
            labelled = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
            assert labelled == e.student_ids[e.student_answer_start :]  # no prompt, no padding labelled
            got.append(labelled)
        assert pos.count == sum(len(e.student_ids) - e.student_answer_start for e in mb.encoded)
    assert got == expected  # junk after end-of-turn is never trained on
    assert (stats.samples, stats.sampled_tokens, stats.ended) == (4, 12, 3)


def test_rows_without_room_are_dropped_and_samples_are_cut_to_the_length_limits(setting, tmp_path):
    cfg, tokenizer, batches = setting
    cfg = copy.deepcopy(cfg)
    micro = step_micro_batches(cfg, batches, 0)
    prompts = [e.student_answer_start for mb in micro for e in mb.encoded]
    cfg.data.max_student_len = sorted(prompts)[1] + 2  # the longest two prompts: no room or less than 6
    rollouts = make_rollouts(cfg, tokenizer, batches, tmp_path)
    model = ScriptedLM([[7] * 6] * 4)
    data, _, stats = rollouts.step_batches(1, micro, SimpleNamespace(model=model), None)
    for mb in data.micro_batches:
        for e in mb.encoded:
            assert len(e.student_ids) <= cfg.data.max_student_len
    dropped = [r for mb in data.micro_batches for r in mb.dropped_rows]
    assert len(dropped) == sum(p >= cfg.data.max_student_len for p in prompts) and stats.samples == 4 - len(
        dropped
    )


def test_through_stop_keeps_the_end_of_turn_and_drops_what_follows():
    assert through_stop([5, 6, 2, 9, 2], (2, 3)) == [5, 6, 2]
    assert through_stop([5, 6], (2,)) == [5, 6]


def test_sampling_is_a_function_of_its_seed_and_leaves_the_global_rng(short_gsm8k):
    cfg = tiny_cfg(short_gsm8k, *ON_POLICY)
    torch.manual_seed(0)
    model = student_and_teacher(cfg, with_teacher=False).student.model
    settings = SamplingSettings(1.0, 1.0, 0, 5, stop_token_ids=(1,))
    prompts = [[10, 11, 12], [13, 14]]
    state = torch.get_rng_state()
    first = sample_hf(model, prompts, settings, 0, seed=sampling_seed(0, 1, 0))
    assert torch.equal(torch.get_rng_state(), state)  # dropout and data streams untouched
    again = sample_hf(model, prompts, settings, 0, seed=sampling_seed(0, 1, 0))
    other_rank = sample_hf(model, prompts, settings, 0, seed=sampling_seed(0, 1, 1))
    assert first == again and first != other_rank
    assert len({sampling_seed(0, s, r) for s in range(50) for r in range(4)}) == 200


def test_mixed_source_is_drawn_per_step_from_the_seed_alone(short_gsm8k):
    cfg = tiny_cfg(short_gsm8k, *ON_POLICY, "rollout.source=mixed", "rollout.mix_probability=0.5")
    sources = [step_source(cfg, s) for s in range(1, 201)]
    assert set(sources) == {"student", "gold"} and 70 < sources.count("student") < 130
    assert sources == [step_source(copy.deepcopy(cfg), s) for s in range(1, 201)]
    cfg.training.seed = 1
    assert sources != [step_source(cfg, s) for s in range(1, 201)]


def on_policy_step(cfg, pair, tokenizer, tmp_path, step: int = 1):
    from accelerate import Accelerator

    batches = build_training_batches(cfg, tokenizer, True, 1)
    rollouts = make_rollouts(cfg, tokenizer, batches, tmp_path)
    data, _, _ = rollouts.step_batches(
        step, step_micro_batches(cfg, batches, step - 1), pair.student, pair.teacher
    )
    pair.student.zero_grad(set_to_none=True)
    return backward_step(cfg, Accelerator(mixed_precision="no"), pair.student, pair.teacher, data)


@pytest.mark.parametrize(
    "loss",
    [
        ["distill.loss=sampled_token", "distill.top_k=null", "distill.baseline=true"],
        ["distill.loss=reverse_kl", "distill.topk_from=student"],
    ],
)
def test_with_no_exemplars_the_teacher_is_the_student_loss_and_gradient_zero(short_gsm8k, tmp_path, loss):
    """k = 0 and a fresh adapter (B = 0): teacher and student are one function of the same ids. The loss is
    exactly 0; so is the sampled-token gradient. Reverse KL's gradient is p_s (1 - sum p_s) in float32
    arithmetic: zero up to the rounding of a softmax's sum (< 1e-6 here)."""
    cfg = tiny_cfg(short_gsm8k, *ON_POLICY, "fewshot.k=0", *loss)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    torch.manual_seed(0)
    pair = student_and_teacher(cfg)
    sums = on_policy_step(cfg, pair, tokenizer, tmp_path)
    assert sums.answer_tokens > 0 and sums.dist_sum == 0.0 and sums.divergence_sum == 0.0
    grads = [p.grad for p in pair.student.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    worst = max(g.abs().max().item() for g in grads)
    if cfg.distill.loss == "sampled_token":
        assert worst == 0.0
    else:
        assert worst < 1e-6


def test_gradients_reach_only_the_trainable_parameters(short_gsm8k, tmp_path):
    cfg = tiny_cfg(short_gsm8k, *ON_POLICY, "distill.loss=generalized_jsd", "rollout.gold_ce=true")
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    torch.manual_seed(0)
    pair = student_and_teacher(cfg)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in pair.student.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    sums = on_policy_step(cfg, pair, tokenizer, tmp_path)
    assert sums.dist_sum > 0 and sums.gold_tokens > 0 and sums.gold_ce_sum > 0
    for name, p in pair.student.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["rollout.source=student", "teacher.cache=memory"], "teacher.cache"),
        (["distill.loss=sampled_token", "distill.top_k=null"], "distill.loss"),
        (["rollout.source=student", "distill.loss=sampled_token"], "distill.top_k"),
        (["distill.topk_from=student", "distill.loss=topk_logit_mse"], "distill.topk_from"),
        (
            ["distill.topk_from=student", "distill.loss=reverse_kl", "teacher.cache=memory"],
            "distill.topk_from",
        ),
        (["distill.baseline=true"], "distill.baseline"),
        (["rollout.gold_ce=true"], "rollout.gold_ce"),
        (
            ["rollout.source=student", "training.distributed=fsdp", "training.use_lora=false"],
            "rollout.backend",
        ),
        (["rollout.source=sometimes"], "rollout.source"),
    ],
)
def test_config_refuses_what_rollouts_cannot_do(short_gsm8k, overrides, key):
    with pytest.raises(ConfigError) as e:
        tiny_cfg(short_gsm8k, "fewshot.k=2", "distill.top_k=8", *overrides)
    assert key in str(e.value)


@pytest.mark.parametrize("key", ["rollout.backend", "eval.backend"])
def test_vllm_backends_refuse_a_model_the_engine_cannot_load(short_gsm8k, key):
    """The engine loads model.name's own weights and config.json: random init (the tiny config's) or
    architecture overrides would leave it serving another model than training or hf evaluation."""
    with pytest.raises(ConfigError) as e:
        tiny_cfg(short_gsm8k, *ON_POLICY, f"{key}=vllm")
    message = str(e.value)
    assert f"'{key}' is vllm, whose engine loads model.name's weights" in message
    assert "model.init is 'random'" in message and "model.architecture overrides" in message


def test_sft_refuses_rollout_settings(short_gsm8k, tmp_path, capsys):
    argv = cli_argv("base.yaml", tmp_path / "sft", *common_overrides(short_gsm8k), "rollout.source=student")
    assert run_cli(train_baseline, argv) == 2
    assert "rollout.source" in capsys.readouterr().err and not (tmp_path / "sft").exists()


# ------------------------------------------------------------------------------------------------
# CLI runs
# ------------------------------------------------------------------------------------------------

CLI = ["training.max_steps=4", "training.save_every=2", "rollout.log_samples=1", "output.log_with=[]"]


def train(short_gsm8k, out: Path, *overrides: str, flags=()) -> Path:
    argv = cli_argv(
        "online_v1.yaml", out, *common_overrides(short_gsm8k), *ON_POLICY, *CLI, *overrides, flags=flags
    )
    assert run_cli(train_online_v1, argv) == 0
    return out


@pytest.fixture(scope="module")
def sampled_token_runs(tmp_path_factory, short_gsm8k):
    """The sampled-token estimator with its baseline and clipping: straight 4 steps; 2 + resumed 2."""
    root = tmp_path_factory.mktemp("on_policy")
    loss = ["distill.loss=sampled_token", "distill.top_k=null", "distill.baseline=true", "distill.clip=5.0"]
    straight = train(short_gsm8k, root / "straight", *loss)
    resumed = train(short_gsm8k, root / "resumed", *loss, "training.stop_after=2")
    train(short_gsm8k, resumed, *loss, flags=("--resume",))
    return straight, resumed


TIMING = ("train/tokens_per_s", "rollout/tokens_per_s")


def test_resumed_on_policy_run_equals_the_straight_run(sampled_token_runs):
    straight, resumed = sampled_token_runs
    a, b = metrics(straight), metrics(resumed)
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in TIMING} == {
            k: v for k, v in y.items() if k not in TIMING
        }
    digest = [
        json.loads((r / "ranks" / "rank0.json").read_text())["trainable_parameters_sha256"]
        for r in (straight, resumed)
    ]
    assert digest[0] == digest[1]
    samples = [json.loads(line) for line in (resumed / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 2, 3, 4]  # one per logged step, none repeated by the resume
    assert samples == [json.loads(line) for line in (straight / "samples.jsonl").read_text().splitlines()]


def test_an_on_policy_run_logs_its_rollouts(sampled_token_runs):
    straight, _ = sampled_token_runs
    record = metrics(straight)[-1]
    assert record["train/on_policy"] == 1.0 and record["train/total_loss"] == pytest.approx(
        0.5 * record["train/dist_loss"]
    )
    assert 1 <= record["rollout/mean_length"] <= 6 and 0 <= record["rollout/ended_fraction"] <= 1
    assert (
        record["rollout/tokens_per_s"] > 0
        and "rollout/accuracy" in record
        and record["train/divergence"] >= 0
    )
    run = json.loads((straight / "run.json").read_text())
    assert run["config"]["rollout"]["source"] == "student" and run["config"]["rollout"]["max_new_tokens"] == 6
    sample = json.loads((straight / "samples.jsonl").read_text().splitlines()[0])
    assert {"row", "question", "completion", "tokens", "ended", "gold", "correct"} <= sample.keys()


def test_teacher_samples_with_reverse_kl_over_the_union_support(tmp_path, short_gsm8k):
    out = train(
        short_gsm8k,
        tmp_path / "teacher",
        "rollout.source=teacher",
        "distill.loss=reverse_kl",
        "distill.topk_from=union",
        "distill.topk_support=tail_bucket",
        "training.max_steps=2",
    )
    records = metrics(out)
    assert all(m["train/on_policy"] == 0.0 for m in records)
    # Teacher samples are trained on with CE + λ·D (c = 1): the total includes the CE.
    assert records[-1]["train/total_loss"] == pytest.approx(
        records[-1]["train/ce_loss"] + 0.5 * records[-1]["train/dist_loss"]
    )
    ranks = json.loads((out / "ranks" / "rank0.json").read_text())
    assert ranks["sources_by_step"] == ["teacher", "teacher"]


@pytest.mark.slow
def test_two_processes_sample_their_own_rows_and_agree_on_each_steps_source(tmp_path, short_gsm8k):
    """mixed + generalized JSD + gold CE on 2 CPU processes (gloo), G = 2 x 2 x 1: the draws agree."""
    from test_fsdp import launch, settings

    cfg = tiny_cfg(short_gsm8k, *ON_POLICY, "rollout.source=mixed")
    draws = [step_source(cfg, s) for s in range(1, 5)]
    assert set(draws) == {"student", "gold"}  # the default seed mixes both within 4 steps
    out = tmp_path / "two"
    launch(
        "online_v1.yaml",
        out,
        *settings(short_gsm8k, *ON_POLICY[2:], "rollout.source=mixed", "distill.loss=generalized_jsd"),
        "rollout.gold_ce=true",
        "output.log_with=[]",
    )
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["sources_by_step"] == ranks[1]["sources_by_step"] == draws
    for a, b in zip(ranks[0]["rows_by_step"], ranks[1]["rows_by_step"]):
        assert a and b and not set(a) & set(b)
    records = metrics(out)
    assert [m["train/on_policy"] for m in records] == [float(d == "student") for d in draws]
    assert all("train/gold_ce_loss" in m for m, d in zip(records, draws) if d == "student")
