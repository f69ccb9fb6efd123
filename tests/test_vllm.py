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
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO
from helpers import run_cli, write_short_gsm8k

pytestmark = pytest.mark.vllm
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

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
