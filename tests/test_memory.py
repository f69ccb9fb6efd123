"""scripts/estimate_memory.py (fsdistill.tools.memory): parameter counts against the transformers models,
the activation formula against what autograd saves on CPU, the estimate's bookkeeping, the command, and
the table in compute.md against the committed JSON."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CONFIGS, REPO, SHARED

from fsdistill.config import load_config
from fsdistill.tools import memory
from fsdistill.tools.memory import Lora, ModelShape, Workload, estimate, layer_activation_bytes

# Small shapes whose dimensions all differ (H 40, I 72, nh*hd 48, nkv*hd 24), so a term counted with the
# wrong dimension shows.
TINY = dict(
    vocab_size=1000,
    hidden_size=40,
    intermediate_size=72,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=12,
)
FAMILIES = ["qwen3", "llama", "gemma3_text"]
# Every family with tied and untied heads and attention biases; MLP biases are a Llama field.
VARIANTS = [
    *[(family, fields) for family in FAMILIES for fields in ({}, {"tie_word_embeddings": False})],
    *[(family, {"attention_bias": True}) for family in FAMILIES],
    ("llama", {"mlp_bias": True}),
]


def config_for(model_type: str, **fields):
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**TINY, "num_hidden_layers": 2, **fields})


@pytest.mark.parametrize("model_type,variant", VARIANTS, ids=lambda v: v if isinstance(v, str) else str(v))
def test_parameter_count_equals_the_models(model_type, variant):
    from transformers import AutoModelForCausalLM

    config = config_for(model_type, **variant)
    model = AutoModelForCausalLM.from_config(config)
    shape = ModelShape.from_config(config.to_dict(), model_type)
    counts = shape.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["embedding"] == model.get_input_embeddings().weight.numel()
    assert counts["head"] == (
        0 if config.tie_word_embeddings else model.get_output_embeddings().weight.numel()
    )


REFERENCE_MODELS = sorted((SHARED / "models").glob("*/config.json"))


@pytest.mark.parametrize("path", REFERENCE_MODELS, ids=lambda p: p.parent.name)
def test_parameter_count_of_the_reference_models(path):
    """The real shapes, built on the meta device (no memory, no initialisation)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path.parent)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shape = ModelShape.from_config(json.loads(path.read_text()), path.parent.name)
    assert shape.parameter_counts()["total"] == sum(p.numel() for p in model.parameters())
    # LoRA: r x (d_in + d_out) per adapted matrix, as peft builds it.
    import peft

    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=16, target_modules=list(memory.LORA_TARGETS), task_type="CAUSAL_LM")
    )
    adapters = sum(p.numel() for n, p in lora.named_parameters() if "lora_" in n)
    assert shape.lora_parameters(16) == adapters


def test_unknown_model_types_are_refused():
    with pytest.raises(memory.UserError, match="model_type 'gpt2' has no shape model"):
        ModelShape.from_config({"model_type": "gpt2"}, "gpt2")


# --------------------------------------------------------------------------------------------------
# Activations: the formula against the tensors autograd saves
# --------------------------------------------------------------------------------------------------

B, T = 2, 50


def saved_by_decoder(model_type: str, case: str, layers: int, dropout: float) -> int:
    """Bytes autograd saves in a forward of the decoder, bf16 autocast, a padded batch (B, T)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = config_for(model_type, num_hidden_layers=layers)
    dtype = torch.float32 if case == "full_fp32" else torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    module = model
    if case == "lora":
        import peft

        lora = peft.LoraConfig(
            r=8, lora_alpha=16, lora_dropout=dropout, target_modules=list(memory.LORA_TARGETS)
        )
        module = peft.get_peft_model(model, lora)
    module.train()
    ids = torch.randint(0, config.vocab_size, (B, T), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, -10:] = 0  # padding: the attention runs with a mask, as training batches do

    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model.get_decoder()(input_ids=ids, attention_mask=mask, use_cache=False)

    return memory.saved_activation_bytes(module, forward)


CASES = [("lora", 0.05), ("lora", 0.0), ("full_fp32", 0.0), ("full_bf16", 0.0)]


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize("case,dropout", CASES, ids=["lora", "lora_no_dropout", "full_fp32", "full_bf16"])
def test_one_layers_activations_equal_what_autograd_saves(model_type, case, dropout):
    """One decoder layer = the difference between a 3-layer and a 2-layer model (the embedding, the first
    layer's frozen input and the final norm cancel). On CPU a dropout mask is float32 (4 B per element);
    CUDA's is bool (1 B), which the estimate uses."""
    one_layer = saved_by_decoder(model_type, case, 3, dropout) - saved_by_decoder(
        model_type, case, 2, dropout
    )
    shape = ModelShape.from_config(config_for(model_type).to_dict(), model_type)
    per_token, per_layer = layer_activation_bytes(shape, T, case, Lora(8, dropout), mask_bytes=4)
    assert one_layer == B * T * per_token + per_layer


# --------------------------------------------------------------------------------------------------
# The estimate's bookkeeping
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_like():
    return ModelShape.from_config(config_for("qwen3", num_hidden_layers=4).to_dict(), "tiny")


WORK = Workload(per_device_batch=4, student_tokens=64, teacher_tokens=256, answer_tokens=16, logits_chunk=32)


def test_bytes_per_parameter_of_each_mode(qwen_like):
    total = qwen_like.parameter_counts()["total"]
    lora = qwen_like.lora_parameters(16)
    full = estimate(qwen_like, WORK, "ddp_full", 1, checkpointing=False)
    assert (full["parameters"], full["gradients"], full["optimizer"], full["teacher"]) == (
        4 * total,
        4 * total,
        8 * total,
        4 * total,
    )
    assert estimate(qwen_like, WORK, "ddp_full", 2, False)["gradients"] == 8 * total  # + DDP's buckets
    sft = estimate(qwen_like, Workload(4, 64, None, 16, 32), "ddp_full", 1, False)
    assert sft["teacher"] == 0 and sft["teacher_transient"] == 0
    ddp_lora = estimate(qwen_like, WORK, "ddp_lora", 1, False)
    assert ddp_lora["parameters"] == 2 * total + 4 * lora and ddp_lora["teacher"] == 0
    assert (ddp_lora["gradients"], ddp_lora["optimizer"]) == (4 * lora, 8 * lora)


@pytest.mark.parametrize("mode", ["fsdp_full", "fsdp_lora"])
def test_fsdp_divides_the_training_state_by_the_gpus(qwen_like, mode):
    one, eight = (estimate(qwen_like, WORK, mode, n, False) for n in (1, 8))
    for key in ("parameters", "gradients", "optimizer", "teacher", "optimizer_temporary"):
        assert eight[key] == pytest.approx(one[key] / 8), key
    for key in ("fsdp_working_set", "activations", "loss", "teacher_transient"):
        assert eight[key] == one[key] > 0, key


def test_gradient_checkpointing_lowers_activations_and_the_peak_is_the_largest_phase(qwen_like):
    off = estimate(qwen_like, WORK, "ddp_full", 2, checkpointing=False)
    on = estimate(qwen_like, WORK, "ddp_full", 2, checkpointing=True)
    assert on["activations"] < off["activations"]
    for r in (off, on):
        static = sum(r[k] for k in ("parameters", "gradients", "optimizer", "teacher", "fsdp_working_set"))
        phases = (
            r["teacher_transient"],
            r["activations"] + r["loss"] + r["autocast_weight_copies"],
            r["optimizer_temporary"],
        )
        assert r["total"] == static + max(phases)
    assert WORK.positions == 32  # 4 x 16 answer tokens, capped at the chunk


# --------------------------------------------------------------------------------------------------
# The command, and the table in compute.md
# --------------------------------------------------------------------------------------------------


def test_shipped_configs_name_their_models():
    for folder, config in memory.SHIPPED_CONFIGS.items():
        cfg, _ = load_config(str(CONFIGS / config))
        assert cfg.model.name.split("/")[-1].lower() == folder, config


def test_estimate_memory_command(tmp_path, capsys):
    if not REFERENCE_MODELS:
        pytest.skip(f"{SHARED / 'models'} not found")
    out = tmp_path / "estimates.json"
    result = memory.main(["--gpus", "2", "8", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    names = {p.parent.name for p in REFERENCE_MODELS}
    assert {r["model"] for r in saved["rows"]} == names
    assert len(saved["rows"]) == len(names) * (2 + 2 * 2)  # two DDP modes, two FSDP modes x 2 counts
    cap = 80 * 0.9 * 2**30
    for row in saved["rows"]:
        assert row["fits_off"] == (row["checkpointing_off"]["total"] <= cap)
    assert (tmp_path / "estimates.md").read_text() in capsys.readouterr().out
    # What the issue says, and where FSDP changes it: a full-FT Qwen3-8B with its frozen teacher does not
    # fit one 80 GB GPU under DDP, and does when 8 GPUs shard it.
    if "qwen3-8b" in names:
        rows = {(r["model"], r["mode"], r["gpus"]): r for r in saved["rows"]}
        assert not rows["qwen3-8b", "ddp_full", 2]["fits_on"]
        assert rows["qwen3-8b", "fsdp_full", 8]["fits_on"]


def test_estimate_memory_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        memory.main(["--models", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x.json")])
    assert exc.value.code == 2 and "not a folder" in capsys.readouterr().err
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(SystemExit) as exc:
        memory.main(["--models", str(tmp_path), "--output", str(tmp_path / "x.json")])
    assert exc.value.code == 2 and "has no shape model" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_compute_md_shows_the_committed_estimate():
    """The table in compute.md is the one the committed JSON gives (regenerate both with the command)."""
    committed = json.loads((REPO / "experiments" / "memory" / "estimates.json").read_text())
    table = memory.markdown_table(committed)
    assert (REPO / "experiments" / "memory" / "estimates.md").read_text() == table
    assert table in (REPO / "compute.md").read_text()
