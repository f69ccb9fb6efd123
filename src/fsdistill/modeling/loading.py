"""Loading the base model, the student made from it (a LoRA adapter on it, or the model itself), and a
teacher that is another model.

- LoRA: only the adapter trains; the teacher is this very module with the adapter switched off
  (distill/teacher.py), so there is no second copy of the weights.
- Full fine-tuning: every weight trains; the teacher is a frozen copy of the initial weights (one extra
  copy of the parameters: 2 bytes/parameter in bf16, 4 in fp32; ~1.1 GB for Gemma-3-270M in fp32).
- teacher.model: the teacher is that model, frozen, in teacher.dtype, whatever the student; its tokenizer
  must agree with the student's (modeling/vocabulary.py).
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Optional

import torch
from torch import nn

from fsdistill.config import Config, LoraConfig, ModelConfig
from fsdistill.errors import UserError
from fsdistill.modeling.answer_lm import AnswerLogitsLM
from fsdistill.modeling.vocabulary import check_rows, shared_vocabulary

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_autocast(mixed_precision: str, device):
    """A context-manager factory doing what accelerate's autocast does for training.mixed_precision, for
    code that runs without an Accelerator (the benchmark, scripts/precompute_teacher.py)."""
    if mixed_precision == "no":
        return nullcontext
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[mixed_precision]
    return lambda: torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def model_config(cfg: ModelConfig):
    """The transformers config of the base model: model.name's, or model.architecture's alone, with the
    model.architecture fields checked first (check_architecture)."""
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    arch = dict(cfg.architecture)
    if cfg.name is None:
        model_type = arch.pop("model_type")
        if model_type not in CONFIG_MAPPING:
            raise UserError(f"model.architecture.model_type: transformers knows no model type {model_type!r}")
        check_architecture(CONFIG_MAPPING[model_type], arch)
        return AutoConfig.for_model(model_type, **arch)
    try:
        base = AutoConfig.from_pretrained(cfg.name)
    except OSError as e:
        raise UserError(f"model.name '{cfg.name}': cannot load its config ({e})") from None
    check_architecture(type(base), arch)
    return AutoConfig.from_pretrained(cfg.name, **arch)


_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}


def check_architecture(config_class, fields: dict) -> None:
    """Every model.architecture field must be a field of the model's config class, with the type of its
    default: transformers configs take any keyword silently (a typo, or num_hidden_layers='abc', would
    pass until it breaks mid-run, or never). All problems are reported together (UserError)."""
    defaults = config_class()
    problems = []
    for key, value in fields.items():
        if key == "model_type":
            continue
        if not hasattr(defaults, key):
            problems.append(f"model.architecture.{key}: {config_class.__name__} has no field {key!r}")
            continue
        default = getattr(defaults, key)
        expected = type(default) if isinstance(default, (bool, int, float, str, list, dict)) else None
        ok = (
            expected is None
            or value is None
            or (expected is float and isinstance(value, (int, float)) and not isinstance(value, bool))
            or (expected is int and isinstance(value, int) and not isinstance(value, bool))
            or (expected not in (int, float) and isinstance(value, expected))
        )
        if not ok:
            problems.append(
                f"model.architecture.{key} must be {_TYPE_NAMES[expected]} (as {config_class.__name__}.{key}), "
                f"got {value!r}"
            )
    if problems:
        raise UserError("model.architecture does not fit the model's config:\n  " + "\n  ".join(problems))


def load_causal_lm(cfg: ModelConfig) -> nn.Module:
    """A causal LM: pretrained weights of model.name, or seeded random weights of its architecture."""
    from transformers import AutoModelForCausalLM

    dtype = DTYPES[cfg.dtype]
    extra = {"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}
    if cfg.init == "random":
        # A pure function of the architecture (seed 0, global RNG untouched), so training, evaluation and
        # a LoRA checkpoint all see the same random base weights.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(model_config(cfg), dtype=dtype, **extra)
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(
                cfg.name, config=model_config(cfg), dtype=dtype, **extra
            )
        except OSError as e:
            raise UserError(f"model.name '{cfg.name}': cannot load weights ({e})") from None
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def load_pretrained_folder(path, dtype: str) -> nn.Module:
    """A whole model from a transformers folder (a full fine-tuning checkpoint, an exported model) in
    `dtype`, from safetensors only: a folder's pickled weights (.bin) are refused, never unpickled."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype], use_safetensors=True)


def add_lora(model: nn.Module, lora: LoraConfig, gradient_checkpointing: bool) -> nn.Module:
    """Wrap with a fresh peft LoRA adapter; only adapter parameters require grad."""
    import peft

    if gradient_checkpointing:
        model.enable_input_require_grads()
    config = peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


def load_student(cfg: Config) -> AnswerLogitsLM:
    """The student: the base model with a fresh LoRA adapter (training.use_lora) or the whole model."""
    model = load_causal_lm(cfg.model)
    if cfg.training.use_lora:
        model = add_lora(model, cfg.lora, cfg.model.gradient_checkpointing)
    return AnswerLogitsLM(model)


def teacher_model_settings(cfg: Config) -> Optional[ModelConfig]:
    """teacher.model as a model setting (pretrained, its own config, teacher.dtype or else model.dtype,
    model.attn_implementation), or None when the teacher is the student's own base weights."""
    t = cfg.teacher
    if t.model is None:
        return None
    return dataclasses.replace(
        cfg.model,
        name=t.model,
        init="pretrained",
        architecture={},
        tokenizer=t.tokenizer,
        dtype=t.dtype or cfg.model.dtype,
        gradient_checkpointing=False,
    )


def teacher_vocabulary(cfg: Config, student_tokenizer) -> Optional[int]:
    """The ids whose logits teacher.model and the student compare (modeling/vocabulary.py), its tokenizer
    loaded and checked against the student's; None when the teacher is the student's own base."""
    settings = teacher_model_settings(cfg)
    if settings is None:
        return None
    from fsdistill.data.prompts import load_tokenizer

    return shared_vocabulary(student_tokenizer, load_tokenizer(settings.tokenizer or settings.name))


def load_teacher_model(cfg: Config, shared_ids: int, student_tokenizer_size: int) -> nn.Module:
    """teacher.model, frozen and in eval mode, with its embedding and head checked to cover the ids it
    reads (every id of the student's tokenizer) and compares (the `shared_ids`)."""
    model = load_causal_lm(teacher_model_settings(cfg))
    model.requires_grad_(False)
    model.eval()
    name = cfg.teacher.model
    check_rows(
        f"teacher.model {name}'s input embedding",
        model.get_input_embeddings().weight.shape[0],
        student_tokenizer_size,
        "ids of the student's tokenizer it reads",
    )
    check_rows(
        f"teacher.model {name}'s output head",
        model.get_output_embeddings().weight.shape[0],
        shared_ids,
        "shared ids whose logits are compared",
    )
    return model
