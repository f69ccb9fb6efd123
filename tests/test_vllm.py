"""The vLLM paths against the real engine: greedy generation, eval_icl.py / eval_checkpoints.py with
--backend vllm, and on-policy rollouts with rollout.backend=vllm on 1 and 2 processes.

They run where vLLM is installed and skip elsewhere: on a CPU, vLLM's CPU build in the environment that
`bash scripts/setup_vllm.sh` makes (`.venv-vllm/bin/python -m pytest -m vllm`; .ci/run does both); on a
GPU machine, the same marker. The model is a tiny random Qwen3 saved to a folder (vLLM loads weights from
a folder; head_dim 64 suits its attention kernels), float32 in both backends, so they must agree to
float32 rounding: log-probabilities within LOGPROB_TOL, greedy text equal (vLLM's LoRA kernels add the
adapter in another order than peft: there a greedy path may part at a near-tie, so one text may differ).
Engines are eager (vllm.enforce_eager) with a 1 GiB KV cache on a CPU (VLLM_CPU_KVCACHE_SPACE).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from helpers import run_cli, write_short_gsm8k
from vllm_helpers import PROBE_TEXT, EngineProbe, max_diff

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Engines in this process start faster than a spawned engine core; test_eval_icl_through_vllm_equals_hf
# runs the user's path (a spawned engine core) in a subprocess without it.
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"

LOGPROB_TOL = 1e-4  # float32, vLLM vs transformers, per token (measured: see the tests' messages)
MOVED = 1e-2  # a trained student's log-probabilities move by more than this from step 0's
N_EVAL = 8  # problems per evaluation
MAX_NEW = 12  # greedy tokens per problem (random weights never end their turn)


def tiny_qwen3(seed: int = 0):
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = AutoConfig.for_model(
        "qwen3",
        vocab_size=151936,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(arch, dtype=torch.float32)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, qwen3_tokenizer) -> Path:
    """The tiny Qwen3 and the real Qwen3 tokenizer in one folder: what an engine loads."""
    folder = tmp_path_factory.mktemp("tiny_qwen3")
    tiny_qwen3().save_pretrained(folder)
    qwen3_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, gsm8k_dir) -> Path:
    return write_short_gsm8k(tmp_path_factory.mktemp("short_gsm8k"))


@pytest.fixture(scope="session")
def config(tmp_path_factory, model_dir, data_dir) -> Path:
    """A training and evaluation config on the tiny model: float32, LoRA r 8, eager engines."""
    path = tmp_path_factory.mktemp("config") / "tiny_vllm.yaml"
    path.write_text(
        f"""
inherit: {REPO / "configs" / "tasks" / "gsm8k.yaml"}
model: {{name: "{model_dir}", init: pretrained, dtype: float32}}
data: {{source: "{data_dir}", max_student_len: 256, max_teacher_len: 768}}
lora: {{r: 8, alpha: 16, dropout: 0.0}}
training: {{use_lora: true, max_steps: 2, save_every: 1, warmup_steps: 0, lr: 2.0e-2, per_device_batch_size: 2,
           grad_accum_steps: 1, mixed_precision: "no", log_every: 1, seed: 1}}
task: {{max_new_tokens: {MAX_NEW}}}
eval: {{batch_size: 8, n_samples: {N_EVAL}, icl_shots: [0, 2]}}
vllm: {{enforce_eager: true}}
output: {{log_with: []}}
"""
    )
    return path


def generation_settings():
    from fsdistill.eval.generation import GenerationSettings

    # <|endoftext|>, <|im_end|>: the Qwen3 template's stop ids
    return GenerationSettings(max_new_tokens=MAX_NEW, stop_token_ids=(151643, 151645))


def chat_prompts(tokenizer, n: int) -> list[list[int]]:
    questions = [f"What is {a} plus {b}? Answer with the number." for a, b in zip(range(3, 40, 7), range(n))]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, enable_thinking=False, tokenize=True
        )["input_ids"]
        for q in questions[:n]
    ]


@pytest.fixture(scope="session")
def engine(model_dir):
    """One engine with LoRA support for the generation tests (the evaluation commands build their own)."""
    from fsdistill.eval.generation import VLLMGenerator

    generator = VLLMGenerator(
        str(model_dir),
        tokenizer=None,
        settings=generation_settings(),
        tensor_parallel_size=1,
        dtype="float32",
        max_lora_rank=8,
        gpu_memory_utilization=0.3,
        enforce_eager=True,
    )
    yield generator
    generator.close()


def random_adapter(model_dir: Path, folder: Path, seed: int) -> Path:
    """A LoRA adapter (r 8) with random A and B, saved as peft saves one."""
    import peft
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    lora = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"])
    model = peft.get_peft_model(base, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(std=0.5)
    model.save_pretrained(str(folder))
    return folder


def hf_greedy(model_or_dir, tokenizer, prompts, adapter: Path | None = None) -> list[str]:
    from fsdistill.eval.generation import generate_hf

    model = model_or_dir
    if isinstance(model_or_dir, Path):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(model_or_dir), dtype=torch.float32)
    if adapter is not None:
        import peft

        model = peft.PeftModel.from_pretrained(model, str(adapter))
    return generate_hf(model, tokenizer, prompts, generation_settings(), batch_size=8, progress=False)


def same_texts(a: list[str], b: list[str]) -> int:
    return sum(x == y for x, y in zip(a, b))


# --------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------


def test_greedy_generation_equals_hf(engine, model_dir, qwen3_tokenizer):
    prompts = chat_prompts(qwen3_tokenizer, 6)
    expected = hf_greedy(model_dir, qwen3_tokenizer, prompts)
    assert engine.generate(prompts) == expected
    assert len(set(expected)) > 1  # the prompts are told apart


def test_each_adapter_is_served_under_its_own_id(engine, model_dir, qwen3_tokenizer, tmp_path):
    """Two checkpoints' adapters, then the first again: each gets what peft gives with that adapter. A
    LoRA id reused across paths would serve the first adapter for the second (vLLM caches by id)."""
    prompts = chat_prompts(qwen3_tokenizer, 6)
    first = random_adapter(model_dir, tmp_path / "checkpoint-1", seed=1)
    second = random_adapter(model_dir, tmp_path / "checkpoint-2", seed=2)
    hf_first = hf_greedy(model_dir, qwen3_tokenizer, prompts, first)
    hf_second = hf_greedy(model_dir, qwen3_tokenizer, prompts, second)
    assert same_texts(hf_first, hf_second) == 0, "the adapters must change the greedy texts"
    got = [engine.generate(prompts, lora_path=str(path)) for path in (first, second, first)]
    assert got[2] == got[0]  # the same id again: the same adapter
    assert same_texts(got[0], hf_first) >= len(prompts) - 1, (got[0], hf_first)
    assert same_texts(got[1], hf_second) >= len(prompts) - 1, (got[1], hf_second)
    assert [lora.lora_int_id for lora in map(engine.lora_request, map(str, (first, second)))] == [1, 2]


# --------------------------------------------------------------------------------------------------
# Evaluation commands
# --------------------------------------------------------------------------------------------------


def predictions(result_file: Path) -> dict[tuple, list[str]]:
    from fsdistill.eval.results import entry_key, load_results

    results = load_results(result_file)
    return {entry_key(e): [ex["prediction"] for ex in e["examples"]] for e in results["results"]}


def test_eval_icl_through_vllm_equals_hf(config, tmp_path):
    """scripts/eval_icl.py --backend vllm as a user runs it (the engine core a spawned process), 0 and 2
    shots on the base model, against --backend hf in the same environment: the same predictions."""
    from fsdistill.eval import icl

    out = tmp_path / "vllm.json"
    command = [sys.executable, str(REPO / "scripts" / "eval_icl.py"), "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    proc = subprocess.run(
        [*command, "--backend", "vllm", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    icl.main(["--config", str(config), "--backend", "hf", "--output", str(tmp_path / "hf.json")])
    got, expected = predictions(out), predictions(tmp_path / "hf.json")
    assert sorted(got) == sorted(expected) == [("base", None, 0), ("base", None, 2)]
    assert got == expected


@pytest.fixture(scope="module")
def runs(tmp_path_factory, config) -> Path:
    """Three SFT runs of the tiny model: LoRA (checkpoints 1 and 2), full fine-tuning (checkpoint 1), and full
    fine-tuning sharded by FSDP on 2 processes (checkpoint 1: each rank's shards, consolidated on use)."""
    from eval_helpers import train
    from test_distributed import accelerate_two_processes

    root = tmp_path_factory.mktemp("runs")
    train("train_baseline", str(config), root / "lora")
    full = ["training.use_lora=false", "training.max_steps=1", "training.lr=1.0e-3"]
    train("train_baseline", str(config), root / "full", *full)
    script = REPO / "src" / "training" / "train_baseline.py"
    args = ["--config", str(config), "--output_dir", str(root / "fsdp"), *full, "training.distributed=fsdp"]
    accelerate_two_processes(script, [*args, "training.per_device_batch_size=1"], timeout=600)
    return root


def test_eval_checkpoints_through_vllm_equals_hf(runs, config, tmp_path, monkeypatch):
    """eval_checkpoints.py --backend vllm on a LoRA run (one engine, an adapter id per checkpoint), a full
    fine-tuning checkpoint and an FSDP one (consolidated first: vLLM cannot read shards), against hf. The
    vLLM sweep loads no hf model, and holds one engine at a time (each claims its share of the GPU)."""
    from fsdistill.eval import checkpoints, generation
    from fsdistill.train import checkpoint as train_checkpoint

    def evaluate(backend: str) -> dict:
        out = tmp_path / f"{backend}.json"
        argv = ["--config", str(config), "--backend", backend, "--base_dir", str(runs), "--output", str(out)]
        checkpoints.main([*argv, "--conditions", "lora", "full", "fsdp"])
        return predictions(out)

    def no_hf(*args, **kwargs):
        raise AssertionError("the vllm backend without --teacher_forced must not load or run a hf model")

    events = []
    start, close = generation.VLLMGenerator.__init__, generation.VLLMGenerator.close

    def recorded_start(self, model, **kwargs):
        start(self, model, **kwargs)
        events.append(("open", model, kwargs["max_lora_rank"]))

    def recorded_close(self):
        events.append(("closed",) if self.llm is not None else ("again",))
        close(self)

    assert not (runs / "fsdp" / "checkpoint-1" / "consolidated").exists()
    with monkeypatch.context() as patch:
        patch.setattr(generation, "generate_hf", no_hf)
        patch.setattr(train_checkpoint, "load_checkpoint_model", no_hf)
        patch.setattr(generation.VLLMGenerator, "__init__", recorded_start)
        patch.setattr(generation.VLLMGenerator, "close", recorded_close)
        got = evaluate("vllm")  # first: the vLLM path must consolidate the FSDP checkpoint itself
    expected = evaluate("hf")
    keys = [("lora", 1, 0), ("lora", 2, 0), ("full", 1, 0), ("fsdp", 1, 0)]
    assert sorted(got) == sorted(expected) == sorted(keys)
    for key in keys[2:]:
        assert got[key] == expected[key], key
    for key in keys[:2]:
        assert same_texts(got[key], expected[key]) >= N_EVAL - 1, (key, got[key], expected[key])
    opened = [e for e in events if e[0] == "open"]
    assert [(model == str(config_model(config)), rank) for _, model, rank in opened] == [
        (True, 8),  # the LoRA run's base model, both checkpoints as adapters
        (False, None),  # the full fine-tuning checkpoint's model files
        (False, None),  # the FSDP checkpoint's, consolidated
    ]
    kinds = [e[0] for e in events if e[0] != "again"]
    assert kinds == ["open", "closed"] * 3  # one engine at a time, the last released at the end


# --------------------------------------------------------------------------------------------------
# Rollouts: rollout.backend=vllm
# --------------------------------------------------------------------------------------------------

ROLLOUTS = [
    "fewshot.k=2",
    "distill.top_k=8",
    "rollout.source=student",
    "rollout.backend=vllm",
    "rollout.max_new_tokens=6",
]


def rollout_run(config, out: Path, *overrides: str, flags=()) -> EngineProbe:
    """train_online_v1 in this process with a colocated engine, probed after every sync."""
    from transformers import AutoTokenizer

    from fsdistill.train.entry import train_online_v1

    tokenizer = AutoTokenizer.from_pretrained(str(config_model(config)))
    probe = EngineProbe(tokenizer(PROBE_TEXT)["input_ids"])
    argv = ["--config", str(config), "--output_dir", str(out), *ROLLOUTS, *overrides, *flags]
    with pytest.MonkeyPatch.context() as patch:
        probe.install(patch.setattr)
        assert run_cli(train_online_v1, argv) == 0
    return probe


def config_model(config: Path) -> Path:
    from fsdistill.config import load_config

    return Path(load_config(str(config))[0].model.name)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, config) -> EngineProbe:
    return rollout_run(config, tmp_path_factory.mktemp("rollouts") / "lora", "training.max_steps=3")


def check_served(probe: EngineProbe, steps: int) -> list[float]:
    """The engine served the student of every step: its log-probabilities equal the hf student's within
    LOGPROB_TOL, through its prefix cache too, and they moved from step 0's. Returns each step's error."""
    assert [r["step"] for r in probe.records] == list(range(steps + 1))  # at start, then after each step
    errors = []
    for record in probe.records:
        token, engine_next, hf_next = record["next"]
        errors.append(max(max_diff(record["engine"], record["hf"]), abs(engine_next - hf_next)))
    assert max(errors) <= LOGPROB_TOL, errors
    start = probe.records[0]["hf"]
    moved = [max_diff(r["hf"], start) for r in probe.records[1:]]
    assert min(moved) > MOVED, moved
    assert probe.threads and all(asked == got for asked, got in probe.threads), probe.threads
    return errors


def test_rollout_engine_serves_each_steps_adapter(lora_run):
    errors = check_served(lora_run, steps=3)
    assert [r["lora_id"] for r in lora_run.records] == [1, 2, 3, 4]  # a new id per step
    # A seed per request: one prompt twice in a batch gets two samples; the same seed, the same two.
    first, again = lora_run.draws
    assert first == again and first[0] != first[1]
    print(f"LoRA: max |engine - hf| log-probability per step {errors}")


def test_rollout_engine_loads_full_finetuning_weights(tmp_path, config):
    probe = rollout_run(config, tmp_path / "full", "training.use_lora=false", "training.lr=1.0e-3")
    errors = check_served(probe, steps=2)
    assert all(r["lora_id"] is None for r in probe.records)
    print(f"full fine-tuning: max |engine - hf| log-probability per step {errors}")


def test_rollouts_after_resume_equal_the_straight_run(lora_run, tmp_path, config):
    """Per-request seeds: the first step after --resume samples what the straight run sampled."""
    out = tmp_path / "resumed"
    first = rollout_run(config, out, "training.max_steps=3", "training.stop_after=1")
    resumed = rollout_run(config, out, "training.max_steps=3", flags=("--resume",))
    assert first.samples == lora_run.samples[:1]
    assert resumed.samples == lora_run.samples[1:]
    assert max_diff(resumed.records[0]["engine"], lora_run.records[1]["engine"]) <= LOGPROB_TOL


def test_rollouts_on_two_processes_each_beside_its_engine(tmp_path, config, model_dir):
    """2 processes under accelerate launch, LoRA sharded by FSDP: each process's engine (external_launcher)
    serves the student after every step (the adapter gathered whole from the shards), and samples its
    own rows."""
    from test_distributed import accelerate_two_processes

    worker = REPO / "tests" / "vllm_rollout_worker.py"
    run = ["--config", str(config), "--output_dir", str(tmp_path / "run"), *ROLLOUTS, "training.max_steps=2"]
    args = [str(tmp_path), str(model_dir), *run, "training.distributed=fsdp"]
    tests = str(REPO / "tests")
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    accelerate_two_processes(worker, args, timeout=900, PYTHONPATH=path)
    ranks = [json.loads((tmp_path / f"probe_rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:
        probe = EngineProbe([])
        probe.records, probe.samples, probe.threads = rank["records"], rank["samples"], rank["threads"]
        check_served(probe, steps=2)
        assert [r["lora_id"] for r in probe.records] == [1, 2, 3]
    assert ranks[0]["samples"] != ranks[1]["samples"]  # each process its own rows


# --------------------------------------------------------------------------------------------------
# Generation speed
# --------------------------------------------------------------------------------------------------


def test_bench_on_policy_times_a_colocated_engine_beside_hf(config, tmp_path):
    """`bench_step.py --on_policy` where vLLM is importable: in every round an engine built as
    rollout.backend=vllm builds it samples the rows hf sampled (same prompts, same max_new_tokens); the JSON
    and both tables give each backend's sampled tokens / s; the engine's adapter lives in a temporary
    folder (nothing is written beside the output)."""
    from fsdistill.tools.bench_cli import main as bench_step
    from fsdistill.tools.bench_on_policy import generation_backends_markdown, on_policy_markdown

    out = tmp_path / "bench" / "on_policy.json"
    argv = ["--on_policy", "--config", str(config), "data.max_train_examples=16", "fewshot.k=2"]
    argv += ["distill.top_k=8", "teacher.prefix_min_tokens=16", "--rounds", "2", "--output", str(out)]
    result = bench_step(argv)
    engine = json.loads(out.read_text())["rollout_vllm"]
    assert engine == json.loads(json.dumps(result["rollout_vllm"])) and engine["measured"] is True
    assert all(r["seconds"]["generation_vllm"] > 0 for r in result["rounds_detail"])
    assert engine["sampled_tokens_per_step"]["n"] == 2 and engine["sampled_tokens_per_step"]["min"] > 0
    assert engine["tokens_per_s"] > 0 and engine["hf_tokens_per_s"] == result["rollout"]["tokens_per_s"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["on_policy.json"]
    assert any("colocated vLLM engine" in line for line in on_policy_markdown(result).splitlines())
    table = generation_backends_markdown([result, result, result]).splitlines()
    assert table[2].startswith("| hf (") and table[3].startswith("| vLLM (") and "3 runs" in table[0]
    steps = engine["decode_steps"]["median"]
    assert engine["seconds_per_decode_step"] == pytest.approx(
        result["seconds"]["generation_vllm"]["median"] / steps
    )
