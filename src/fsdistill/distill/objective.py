"""The distillation term of the objective, as the config describes it.

    loss of an optimizer step = (sum of CE over answer tokens + λ · sum of D over them) / answer tokens

`target_spec` says what the loss reads from the teacher at each answer token (top-K values and ids,
a log-normaliser for a tail bucket, or the full distribution), so a teacher can reduce its logits to
exactly that; `distillation_sums` applies distill.loss with its options to one chunk of positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fsdistill.config import Config
from fsdistill.distill.losses import TeacherTargets, distillation_terms
from fsdistill.distill.weighting import token_weights


@dataclass(frozen=True)
class TargetSpec:
    """What the distillation loss reads from the teacher at each answer token.

    top_k: K vocabulary entries kept (None: the full distribution, via hidden states + head per chunk).
    support: the loss's support ("full", "renormalize", "tail_bucket"; see losses.log_probs_on_support).
    logsumexp_temperature: set when the tail bucket needs the teacher's full-softmax normaliser.
    """

    top_k: Optional[int]
    support: str
    logsumexp_temperature: Optional[float]


def target_spec(cfg: Config) -> TargetSpec:
    """The targets distill.* asks for. With a teacher cache and a full-vocabulary loss, the cache keeps
    teacher.cache_top_k entries plus a tail bucket, so the loss runs on that K+1 support instead. The
    sampled-token estimator and a support taken from the student's top-K (distill.topk_from) read the
    teacher's full distribution (hidden states + head per chunk; a served teacher gives the sampled-token
    estimator the answer token's log-probability instead, served_teacher.py)."""
    d = cfg.distill
    if d.loss == "sampled_token" or d.topk_from != "teacher":
        return TargetSpec(None, d.topk_support if d.top_k is not None else "full", None)
    if d.top_k is not None:
        top_k, support = d.top_k, d.topk_support
    elif cfg.teacher.cache != "off":
        top_k, support = cfg.teacher.cache_top_k, "tail_bucket"
    else:
        top_k, support = None, "full"
    needs_lse = support == "tail_bucket" and d.loss != "topk_logit_mse"
    return TargetSpec(top_k, support, d.temperature if needs_lse else None)


def distillation_sums(
    cfg: Config, student_logits, teacher: TeacherTargets, mask, targets
) -> tuple[torch.Tensor, torch.Tensor]:
    """(distill.loss summed over positions, the per-token divergence summed, for logging).

    student_logits (n, V), teacher targets at the same n positions, mask (n,) bool, targets (n,) the
    answer's ids (read by the sampled-token estimator). Clipping and token weights apply to the loss only.
    """
    d = cfg.distill
    loss_sum, divergence_sum, _ = distillation_terms(
        d.loss,
        student_logits,
        teacher,
        mask,
        temperature=d.temperature,
        beta=d.beta,
        support=target_spec(cfg).support,
        scale_by_temperature_squared=d.scale_by_temperature_squared,
        targets=targets,
        topk_from=d.topk_from,
        top_k=d.top_k,
        baseline=d.baseline,
        clip=d.clip,
        weighting=token_weights(d.token_weighting, d.token_fraction),
    )
    return loss_sum, divergence_sum
