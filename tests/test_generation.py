"""Greedy generation backends: hf on a tiny random Qwen3 (CPU), vLLM only where it is absent (the real
engine: tests/test_vllm.py).

The tiny model uses initializer_range=0.3: with the default 0.02 and tied embeddings it echoes the last
prompt token ("\\n") for every prompt, so order and padding bugs would go unseen; at 0.3 each prompt gets
its own greedy path, and the top-2 logit gap along those paths stays above 4e-3, far above float32
rounding (no near-ties for batching to flip).
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import qwen_cfg
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

from fsdistill.data.prompts import PromptBuilder
from fsdistill.eval.generation import (
    GenerationSettings,
    VLLMGenerator,
    generate_hf,
    left_pad,
    load_generation_config,
    stop_token_ids_for,
)

QUESTIONS = [  # deliberately not in length order
    "What is 2 + 2?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Hi",
    "Janet's ducks lay 16 eggs per day. How many eggs is that per week?",
]
MAX_NEW_TOKENS = 8
IM_END = 151645
ENDOFTEXT = 151643


def tiny_qwen3(**overrides) -> Qwen3ForCausalLM:
    """A 2-layer Qwen3 with the real 151,936-token vocabulary, random weights (seed 0), float32, eval.

    `overrides` replace or add Qwen3Config fields.
    """
    fields = dict(
        vocab_size=151936,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.3,
    )
    config = Qwen3Config(**{**fields, **overrides})
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config).eval()


def chat_prompt_ids(tokenizer, questions: list[str]) -> list[list[int]]:
    """Prompts as the data layer builds them: rendered chat template, tokenised without special tokens."""
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        for question in questions
    ]
    return [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]


@pytest.fixture(scope="module")
def model():
    return tiny_qwen3()


@pytest.fixture(scope="module")
def prompt_ids(qwen3_tokenizer):
    return chat_prompt_ids(qwen3_tokenizer, QUESTIONS)


@pytest.fixture(scope="module")
def settings(qwen3_tokenizer, qwen3_tokenizer_path):
    config = load_generation_config(str(qwen3_tokenizer_path))
    return GenerationSettings(
        max_new_tokens=MAX_NEW_TOKENS, stop_token_ids=stop_token_ids_for(qwen3_tokenizer, [IM_END], config)
    )


@pytest.fixture(scope="module")
def unbatched(model, qwen3_tokenizer, prompt_ids, settings):
    """Reference: each prompt generated alone, so no padding is involved."""
    return [
        generate_hf(model, qwen3_tokenizer, [ids], settings, batch_size=1, progress=False)[0]
        for ids in prompt_ids
    ]


# --------------------------------------------------------------------------------------------------
# stop ids
# --------------------------------------------------------------------------------------------------


def test_stop_token_ids_for_qwen3(qwen3_tokenizer, qwen3_tokenizer_path):
    """eos and the template's end-of-turn (both <|im_end|> for Qwen3), plus the model's generation-config
    eos ids: the tokenizer folder's generation_config.json adds <|endoftext|>."""
    end_of_turn = PromptBuilder.from_config(qwen3_tokenizer, qwen_cfg()).end_of_turn_ids()
    assert end_of_turn == [IM_END]
    assert stop_token_ids_for(qwen3_tokenizer, end_of_turn) == (IM_END,)
    config = load_generation_config(None, str(qwen3_tokenizer_path))
    assert stop_token_ids_for(qwen3_tokenizer, end_of_turn, config) == (ENDOFTEXT, IM_END)
    config = GenerationConfig(eos_token_id=[IM_END, 7])
    assert stop_token_ids_for(qwen3_tokenizer, end_of_turn, config) == (7, IM_END)
    assert stop_token_ids_for(qwen3_tokenizer, end_of_turn, GenerationConfig(eos_token_id=9)) == (9, IM_END)
    assert load_generation_config(None, "/no/such/folder") is None


def test_stop_token_ids_for_llama_style_ids():
    """An end-of-turn marker other than eos (Llama 3's <|eot_id|>) is added to eos."""
    tokenizer = SimpleNamespace(eos_token_id=128001)
    assert stop_token_ids_for(tokenizer, [128009]) == (128001, 128009)


# --------------------------------------------------------------------------------------------------
# hf backend
# --------------------------------------------------------------------------------------------------


def test_left_pad_puts_padding_first():
    input_ids, attention_mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="empty prompt"):
        left_pad([[5], []], pad_token_id=0)


def test_batched_generation_matches_unbatched(model, qwen3_tokenizer, prompt_ids, settings, unbatched):
    assert len({len(ids) for ids in prompt_ids}) == len(prompt_ids), "prompts must differ in length"
    batched = generate_hf(
        model, qwen3_tokenizer, prompt_ids, settings, batch_size=len(prompt_ids), progress=False
    )
    assert batched == unbatched


def test_results_come_back_in_input_order(model, qwen3_tokenizer, prompt_ids, settings, unbatched):
    lengths = [len(ids) for ids in prompt_ids]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
    assert len(set(unbatched)) == len(unbatched), "completions must be distinguishable to check order"
    texts = generate_hf(model, qwen3_tokenizer, prompt_ids, settings, batch_size=2, progress=False)
    assert texts == unbatched


def test_eval_mode_for_generation_and_training_mode_restored(
    qwen3_tokenizer, prompt_ids, settings, unbatched
):
    """Dropout must be off while generating; a model handed over in training mode goes back to it."""
    model = tiny_qwen3(attention_dropout=0.5)
    model.train()
    texts = generate_hf(model, qwen3_tokenizer, prompt_ids, settings, batch_size=2, progress=False)
    assert texts == unbatched
    assert model.training


def test_peft_wrapper_with_zero_b_matches_base(model, qwen3_tokenizer, prompt_ids, settings, unbatched):
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    peft_model = get_peft_model(copy.deepcopy(model), lora)  # lora_B starts at zero
    texts = generate_hf(peft_model, qwen3_tokenizer, prompt_ids, settings, batch_size=2, progress=False)
    assert texts == unbatched

    # The adapter really is on the generation path: a non-zero B changes the output.
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=1.0)
    changed = generate_hf(peft_model, qwen3_tokenizer, prompt_ids, settings, batch_size=2, progress=False)
    assert changed != unbatched


class ScriptedHead:
    """Forces the model's greedy choices: prompt `p` (identified by its last token) emits `plans[p]`.

    Hooks the embedding layer to see each batch's prompts at prefill, and the lm_head to replace the
    last position's logits with a one-hot choice per row. After a plan runs out, the row emits `filler`.
    """

    def __init__(self, model, plans: dict[int, list[int]], filler: int):
        self.plans, self.filler = plans, filler
        self.rows: list[list[int]] = []
        self.step = 0
        model.get_input_embeddings().register_forward_hook(self.see_prompts)
        model.get_output_embeddings().register_forward_hook(self.force_logits)

    def see_prompts(self, module, inputs, output):
        input_ids = inputs[0]
        if input_ids.shape[1] > 1:  # prefill of a new batch; decoding steps feed one token
            self.rows = [self.plans[int(last)] for last in input_ids[:, -1]]
            self.step = 0

    def force_logits(self, module, inputs, logits):
        forced = torch.full_like(logits, -1e4)
        for row, plan in enumerate(self.rows):
            forced[row, -1, plan[self.step] if self.step < len(plan) else self.filler] = 0.0
        self.step += 1
        return forced


def single_token(tokenizer, text: str) -> int:
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens"
    return ids[0]


@pytest.fixture
def word_ids(qwen3_tokenizer):
    return [single_token(qwen3_tokenizer, word) for word in [" The", " answer", " is", " forty", " two"]]


def raw_prompts(tokenizer) -> list[list[int]]:
    """Short prompts with distinct last tokens (ScriptedHead tells them apart by that token).

    Each has at least 2 tokens: ScriptedHead recognises a batch's prefill by its length.
    """
    prompts = [
        tokenizer.encode(text, add_special_tokens=False)
        for text in ["Question: one", "Q: two two", "Q: three"]
    ]
    assert min(len(ids) for ids in prompts) >= 2 and len({ids[-1] for ids in prompts}) == len(prompts)
    return prompts


def test_generation_stops_at_end_of_turn(qwen3_tokenizer, settings, word_ids):
    """Rows end at different steps; each text stops before <|im_end|>, whatever the model would add after."""
    prompts = raw_prompts(qwen3_tokenizer)
    plans = {ids[-1]: word_ids[:n] + [IM_END] for ids, n in zip(prompts, [1, 3, 5])}
    model = tiny_qwen3()
    ScriptedHead(model, plans, filler=word_ids[0])
    texts = generate_hf(model, qwen3_tokenizer, prompts, settings, batch_size=3, progress=False)
    assert texts == [" The", " The answer is", " The answer is forty two"]


def test_non_special_stop_token_is_cut(qwen3_tokenizer, word_ids):
    """skip_special_tokens cannot hide an ordinary stop id: the text must be cut before it."""
    prompts = raw_prompts(qwen3_tokenizer)[:1]
    stop = word_ids[2]  # " is"
    plans = {prompts[0][-1]: word_ids}
    model = tiny_qwen3()
    ScriptedHead(model, plans, filler=word_ids[0])
    settings = GenerationSettings(max_new_tokens=MAX_NEW_TOKENS, stop_token_ids=(stop,))
    assert generate_hf(model, qwen3_tokenizer, prompts, settings, batch_size=1, progress=False) == [
        " The answer"
    ]


def test_max_new_tokens_is_respected(qwen3_tokenizer, settings, word_ids):
    prompts = raw_prompts(qwen3_tokenizer)
    plans = {ids[-1]: word_ids * 3 for ids in prompts}  # 15 tokens, never a stop token
    model = tiny_qwen3()
    ScriptedHead(model, plans, filler=IM_END)
    short = GenerationSettings(max_new_tokens=7, stop_token_ids=settings.stop_token_ids)
    texts = generate_hf(model, qwen3_tokenizer, prompts, short, batch_size=2, progress=False)
    assert texts == [qwen3_tokenizer.decode((word_ids * 3)[:7])] * 3


# --------------------------------------------------------------------------------------------------
# vLLM backend without vLLM (the real engine: tests/test_vllm.py)
# --------------------------------------------------------------------------------------------------


def test_vllm_missing_gives_a_clear_error(settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails, installed or not
    with pytest.raises(ImportError, match=r"compute\.md.*--backend hf"):
        VLLMGenerator(
            "some/model",
            tokenizer=None,
            settings=settings,
            tensor_parallel_size=1,
            dtype="bfloat16",
            max_lora_rank=None,
            gpu_memory_utilization=0.5,
            enforce_eager=True,
        )


def test_importing_the_module_does_not_import_vllm():
    code = "import sys; sys.modules['vllm'] = None; import fsdistill.eval.generation"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------------------------------
# Sampling (rollouts) with the linear layers prepared for decoding
# --------------------------------------------------------------------------------------------------

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_student(dtype: torch.dtype):
    """The tiny Qwen3 in `dtype` with a LoRA adapter on every linear layer (B random, so it matters; the
    adapter in float32, as peft keeps it beside bf16 weights), in eval mode."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        tiny_qwen3().to(dtype), LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=LORA_TARGETS)
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    return model.eval()


SAMPLING_PROMPTS = [[9707, 11, 1879, 13, 220, 17], [40, 1079], [785, 4226, 374, 1447, 16, 15, 23, 9]]


def sampling_cases():
    from fsdistill.modeling.generation import SamplingSettings

    plain = SamplingSettings(1.0, 1.0, 0, 12, stop_token_ids=(IM_END,))
    nucleus = SamplingSettings(0.7, 0.9, 50, 12, stop_token_ids=(IM_END, 13))
    return [
        pytest.param(torch.float32, None, plain, id="float32"),
        pytest.param(torch.float32, None, nucleus, id="float32-top_p-top_k"),
        pytest.param(torch.bfloat16, torch.bfloat16, plain, id="bf16-autocast"),
    ]


def prepared_report(model, rows: int, autocast_dtype):
    """What prepared_linears prepares for this model, in sample_hf's contexts."""
    from fsdistill.modeling.generation import prepared_linears

    autocast = torch.autocast("cpu", dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
    with torch.inference_mode(), autocast, prepared_linears(model, rows) as report:
        return report


@pytest.mark.parametrize("dtype, autocast_dtype, sampling", sampling_cases())
def test_prepared_linears_sample_the_ids_generate_alone_samples(dtype, autocast_dtype, sampling):
    """Every linear layer (7 adapted per decoder layer, and the output head) decodes from prepared weights,
    and the samples are exactly those of transformers generate alone, for several seeds."""
    from fsdistill.modeling.generation import _can_pack, sample_hf

    model = lora_student(dtype)
    autocast = (lambda: torch.autocast("cpu", dtype=autocast_dtype)) if autocast_dtype else None
    report = prepared_report(model, len(SAMPLING_PROMPTS), autocast_dtype)
    assert (report.layers, report.fallback) == (7 * 2 + 1, 0)
    assert report.packed == (report.layers if _can_pack(torch.device("cpu"), autocast_dtype or dtype) else 0)
    if dtype == torch.bfloat16 and not _can_pack(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this CPU's oneDNN has no bf16: the packed layers are not exercised")
    for seed in (0, 1, 2):
        alone = sample_hf(model, SAMPLING_PROMPTS, sampling, 0, seed, autocast, prepare_linears=False)
        prepared = sample_hf(model, SAMPLING_PROMPTS, sampling, 0, seed, autocast)
        assert prepared == alone
        assert sum(len(ids) for ids in alone) > 3 * 6  # the rows sampled something to compare
    assert all("forward" not in m.__dict__ for m in model.modules())  # every layer's own forward is back


def test_teacher_samples_decode_from_the_prepared_base_weights():
    """With the adapter switched off (the LoRA teacher's samples), the prepared layers hold the base
    weights alone and sample what generate alone does."""
    from fsdistill.modeling.generation import sample_hf

    model = lora_student(torch.float32)
    settings = sampling_cases()[0].values[2]
    with model.disable_adapter():
        assert prepared_report(model, 3, None).layers == 15
        alone = sample_hf(model, SAMPLING_PROMPTS, settings, 0, 5, prepare_linears=False)
        assert sample_hf(model, SAMPLING_PROMPTS, settings, 0, 5) == alone
    assert sample_hf(model, SAMPLING_PROMPTS, settings, 0, 5) != alone  # the adapter matters


def test_a_prepared_layer_that_is_not_bit_identical_is_not_used(monkeypatch):
    """The check against each layer's own forward: a prepared form off by one part in 10^6 is refused
    (every layer keeps its own forward, and the samples are generate's)."""
    from fsdistill.modeling import generation

    real = generation._PreparedLinears.outputs
    monkeypatch.setattr(generation, "_VERDICTS", {})  # this process's verdicts on these shapes: start over
    monkeypatch.setattr(
        generation._PreparedLinears, "outputs", lambda self, x: tuple(y * (1 + 1e-6) for y in real(self, x))
    )
    model = lora_student(torch.float32)
    report = prepared_report(model, 3, None)
    assert (report.layers, report.fallback) == (0, 15)
    assert prepared_report(model, 3, None).fallback == 15  # the verdict holds for the next call
    settings = sampling_cases()[0].values[2]
    alone = generation.sample_hf(model, SAMPLING_PROMPTS, settings, 0, 3, prepare_linears=False)
    assert generation.sample_hf(model, SAMPLING_PROMPTS, settings, 0, 3) == alone


def test_each_group_is_probed_once_per_process(monkeypatch):
    """The bit-identity verdict depends on shapes and dtypes only: a later sampling call (the next optimizer
    step's) prepares the weights again but does not probe again."""
    from fsdistill.modeling import generation

    monkeypatch.setattr(generation, "_VERDICTS", {})
    probes = []
    real = generation._PreparedLinears.matches_own_forwards
    monkeypatch.setattr(
        generation._PreparedLinears, "matches_own_forwards", lambda self, p: probes.append(1) or real(self, p)
    )
    model = lora_student(torch.float32)
    assert prepared_report(model, 3, None).layers == 15
    # q/k/v, o, gate/up and down have the same shapes in both decoder layers; and the head
    assert len(probes) == 4 + 1
    assert prepared_report(model, 3, None).layers == 15
    assert len(probes) == 5
    assert prepared_report(model, 2, None).layers == 15 and len(probes) == 10  # another decode shape
