"""The student (LoRA adapter or full fine-tuning) and its teacher, the same model with k exemplars.

- LoRA: the teacher is the very same module with the adapter switched off (`disable_adapter()`), under
  `torch.no_grad()` and in eval mode: no second copy of the weights.
- Full fine-tuning: the teacher is a frozen copy of the initial weights (one extra copy of the
  parameters in memory: 2 bytes/parameter in bf16, 4 in fp32; ~1.1 GB for Gemma-3-270M in fp32).

Logits are computed only where a loss reads them: the decoder's hidden states are gathered at the
answer positions and only those go through the output head, so no (batch, sequence, vocabulary) tensor
is ever made (for the teacher's ~2k-token k-shot sequence it would be ~2.8 GB at batch 4 in bf16).
"""

from __future__ import annotations

import contextlib
import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fsdistill.config import Config, LoraConfig, ModelConfig
from fsdistill.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointMismatch(UserError):
    """A checkpoint that was trained with another base model or adapter than the config describes."""


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def model_config(cfg: ModelConfig):
    """The transformers config of the base model: model.name's, or model.architecture's alone."""
    from transformers import AutoConfig

    arch = dict(cfg.architecture)
    if cfg.name is None:
        model_type = arch.pop("model_type")
        return AutoConfig.for_model(model_type, **arch)
    try:
        return AutoConfig.from_pretrained(cfg.name, **arch)
    except OSError as e:
        raise UserError(f"model.name '{cfg.name}': cannot load its config ({e})") from None


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


def base_causal_lm(model: nn.Module) -> nn.Module:
    """The transformers CausalLM inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# ------------------------------------------------------------------------------------------------
# Logits at chosen positions
# ------------------------------------------------------------------------------------------------


def head_logits(causal_lm: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The output head on hidden states (N, H) -> logits (N, V), including Gemma's final softcapping."""
    logits = causal_lm.get_output_embeddings()(hidden)
    cap = getattr(causal_lm.config, "final_logit_softcapping", None)  # a transformers config attribute
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits


class AnswerLogitsLM(nn.Module):
    """A causal LM that returns logits only at requested positions.

    forward(input_ids (B, T), attention_mask (B, T), batch_index (N,), positions (N,)) -> logits (N, V):
    logits[i] are the model's next-token logits at input_ids[batch_index[i], positions[i]].
    With return_hidden=True it stops before the output head: final hidden states (N, H), which training
    sends through `head` in chunks (bounded memory). Running the decoder inside this module's forward
    keeps DDP's gradient hooks in the loop.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model  # a CausalLM or a peft model around one

    def forward(self, input_ids, attention_mask, batch_index, positions, return_hidden: bool = False):
        causal_lm = base_causal_lm(self.model)
        decoder = causal_lm.get_decoder()
        hidden = decoder(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state[batch_index, positions]
        return hidden if return_hidden else head_logits(causal_lm, hidden)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output head: hidden states (n, H) -> logits (n, V)."""
        return head_logits(base_causal_lm(self.model), hidden)


def check_answer_logits(model: AnswerLogitsLM, vocab_size: int, device) -> None:
    """Fail early if gathering hidden states + head differs from the model's own forward logits."""
    causal_lm = base_causal_lm(model.model)
    ids = torch.arange(1, 9, device=device).unsqueeze(0) % vocab_size
    mask = torch.ones_like(ids)
    with torch.no_grad():
        full = causal_lm(input_ids=ids, attention_mask=mask, use_cache=False).logits[0].float()
        pos = torch.arange(ids.shape[1], device=device)
        ours = model(ids, mask, torch.zeros_like(pos), pos).float()
    tol = 1e-3 if full.dtype == torch.float32 and next(model.parameters()).dtype == torch.float32 else 5e-2
    diff = (full - ours).abs().max().item()
    if diff > tol * max(1.0, full.abs().max().item()):
        raise RuntimeError(
            f"{type(causal_lm).__name__}: logits from hidden states + output head differ from the model's "
            f"forward by {diff:.3g}; this architecture post-processes logits in a way head_logits() lacks"
        )


# ------------------------------------------------------------------------------------------------
# Teacher
# ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@dataclass
class StudentTeacher:
    student: AnswerLogitsLM
    teacher: object  # LiveTeacher or CachedTeacher (models/teacher.py), or None without a teacher


def build_student_teacher(cfg: Config, with_teacher: bool) -> StudentTeacher:
    """Load the base model and make the student (LoRA or full) and, if asked, its teacher (cfg.teacher)."""
    from fsdistill.models.teacher import make_teacher

    model = load_causal_lm(cfg.model)
    teacher = None
    if cfg.training.use_lora:
        model = add_lora(model, cfg.lora, cfg.model.gradient_checkpointing)
        student = AnswerLogitsLM(model)
        if with_teacher:
            teacher = make_teacher(cfg, student, model.disable_adapter)
    else:
        if with_teacher:
            frozen = copy.deepcopy(model)
            frozen.requires_grad_(False)
            frozen.eval()
            teacher = make_teacher(cfg, AnswerLogitsLM(frozen), None)
        student = AnswerLogitsLM(model)
    return StudentTeacher(student, teacher)


# ------------------------------------------------------------------------------------------------
# Checkpoint identity
# ------------------------------------------------------------------------------------------------


def model_identity(cfg: Config) -> dict:
    """What a checkpoint must share with a config to be loaded under it."""
    ident = {
        "model.name": cfg.model.name,
        "model.init": cfg.model.init,
        "model.architecture": dict(cfg.model.architecture),
        "training.use_lora": cfg.training.use_lora,
    }
    if cfg.training.use_lora:
        ident.update(
            {
                "lora.r": cfg.lora.r,
                "lora.alpha": cfg.lora.alpha,
                "lora.target_modules": sorted(cfg.lora.target_modules),
            }
        )
    return ident


def check_checkpoint_matches(checkpoint_dir: Path, cfg: Config) -> dict:
    """Compare checkpoint.json's model identity with the config; raise naming every mismatch."""
    meta_path = checkpoint_dir / "checkpoint.json"
    if not meta_path.is_file():
        raise CheckpointMismatch(f"{checkpoint_dir}: not a checkpoint of this project (no checkpoint.json)")
    meta = json.loads(meta_path.read_text())
    saved, wanted = meta["model_identity"], model_identity(cfg)
    diffs = [
        f"{key}: checkpoint has {saved.get(key)!r}, config has {wanted.get(key)!r}"
        for key in sorted(set(saved) | set(wanted))
        if saved.get(key) != wanted.get(key)
    ]
    if diffs:
        raise CheckpointMismatch(f"{checkpoint_dir} does not match the config:\n    " + "\n    ".join(diffs))
    return meta


def load_checkpoint_model(checkpoint_dir: Path, cfg: Config) -> nn.Module:
    """The CausalLM of a checkpoint for evaluation: base + adapter (LoRA) or the saved full model."""
    check_checkpoint_matches(checkpoint_dir, cfg)
    if cfg.training.use_lora:
        import peft

        base = load_causal_lm(cfg.model)
        return peft.PeftModel.from_pretrained(base, str(checkpoint_dir))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(checkpoint_dir), dtype=DTYPES[cfg.model.dtype])
