"""Pure loss functions of few-shot distillation: CE on the answer tokens plus a distillation term.

The training core gathers hidden states at the answer positions and applies the LM head, so every
function here receives logits that are already gathered: ``student_logits`` is (..., V) (usually (N, V),
N = answer tokens of one micro-batch) and ``mask`` is a bool tensor of the leading shape (...)
(True = the position counts).

Every loss returns ``(loss_sum, count)``: ``loss_sum`` is a 0-dim float32 tensor, the SUM over valid
positions of the per-token loss, and ``count`` is a 0-dim int64 tensor, the number of valid positions.
Nothing divides by the token count: the core divides by the answer tokens of the whole optimizer step
(across micro-batches and processes), which is exact only if the pieces are sums.

Masked positions are dropped by boolean indexing before any arithmetic, so garbage there (huge values,
inf, NaN) cannot reach the sum or the gradient. Valid positions need finite logits. All arithmetic is
float32 whatever the input dtype (bf16 logits arrive on GPU). Teacher tensors are targets: they are
detached, gradients reach only ``student_logits``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

# Losses comparing the teacher's and the student's distributions (distillation_loss); distillation_terms
# adds the sampled-token estimator, which also reads the answer's own token.
DISTILLATION_LOSSES = ("topk_logit_mse", "forward_kl", "reverse_kl", "generalized_jsd")
SUPPORTS = ("full", "renormalize", "tail_bucket")
TOPK_FROM = ("teacher", "student", "union")
# A logit standing for "not in the support": exp() of it is exactly 0 in float32, and differences of two
# such logits stay finite, so a masked entry contributes 0 to every KL term and to its gradient.
MASKED_LOGIT = -1.0e9

# Floor of the tail bucket's mass. A top-K mass within float32 rounding of 1 leaves a "tail" that is
# rounding noise (exactly 0 when K = V); flooring both sides at eps makes such a bucket contribute
# exactly nothing instead of eps * log(eps / tiny), and keeps log() and its gradient finite.
TAIL_MASS_FLOOR = torch.finfo(torch.float32).eps


@dataclass
class TeacherTargets:
    """The teacher's targets at the same positions as the student logits; every field is optional.

    Which loss needs which field:
      - ``topk_logit_mse``: ``topk_values`` and ``topk_indices``.
      - KL losses, ``support="full"``: ``logits``.
      - KL losses, ``support="renormalize"``: ``topk_values`` and ``topk_indices``.
      - KL losses, ``support="tail_bucket"``: ``topk_values``, ``topk_indices`` and ``logsumexp``
        (with ``logsumexp_temperature`` equal to the loss temperature).
      - ``sampled_token``: ``logits``; or, from a teacher that gives no logits (a served teacher),
        ``token_log_probs``: its log-probability at temperature 1 of the answer's own token (the
        estimator at temperature 1, without the baseline or token weights, which need ``logits``).

    Shapes: ``logits`` (..., V); ``topk_values`` (..., K) raw logits (no temperature) sorted or not;
    ``topk_indices`` (..., K) long; ``logsumexp`` (...) = logsumexp(full logits / logsumexp_temperature),
    computed before the full logits were dropped; ``token_log_probs`` (...) float32.

    A teacher gives targets for a micro-batch's N answer positions at once, (N, ...). For full-vocabulary
    losses it gives ``hidden`` (N, H) and ``head`` ((n, H) -> (n, V)) instead of (N, V) logits, and
    :meth:`chunk` makes the logits of a chunk of positions only when the loss needs them.
    """

    logits: Optional[torch.Tensor] = None
    topk_values: Optional[torch.Tensor] = None
    topk_indices: Optional[torch.Tensor] = None
    logsumexp: Optional[torch.Tensor] = None
    logsumexp_temperature: Optional[float] = None
    hidden: Optional[torch.Tensor] = None
    head: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    topk_valid: Optional[torch.Tensor] = None  # (..., K) bool: False marks an entry left out (a repeat)
    token_log_probs: Optional[torch.Tensor] = None  # (...) log p_t(answer's own token), temperature 1

    def chunk(self, start: int, end: int) -> TeacherTargets:
        """The targets of positions [start, end) (full logits computed here from ``hidden``, without grad)."""
        if self.hidden is not None:
            with torch.no_grad():
                return TeacherTargets(logits=self.head(self.hidden[start:end]))
        return TeacherTargets(
            logits=None if self.logits is None else self.logits[start:end],
            topk_values=None if self.topk_values is None else self.topk_values[start:end],
            topk_indices=None if self.topk_indices is None else self.topk_indices[start:end],
            logsumexp=None if self.logsumexp is None else self.logsumexp[start:end],
            logsumexp_temperature=self.logsumexp_temperature,
            topk_valid=None if self.topk_valid is None else self.topk_valid[start:end],
            token_log_probs=None if self.token_log_probs is None else self.token_log_probs[start:end],
        )

    @staticmethod
    def cat(parts: list[TeacherTargets]) -> TeacherTargets:
        """Top-K targets of consecutive position ranges, concatenated along positions."""
        first = parts[0]
        return TeacherTargets(
            topk_values=torch.cat([p.topk_values for p in parts]),
            topk_indices=torch.cat([p.topk_indices for p in parts]),
            logsumexp=None if first.logsumexp is None else torch.cat([p.logsumexp for p in parts]),
            logsumexp_temperature=first.logsumexp_temperature,
        )


def teacher_targets_from_logits(
    teacher_logits: torch.Tensor,
    *,
    top_k: Optional[int],
    keep_full: bool,
    logsumexp_temperature: Optional[float],
) -> TeacherTargets:
    """Reduce full teacher logits to what the loss needs, so the caller can free the (..., V) tensor early.

    teacher_logits (..., V) -> TeacherTargets with ``topk_values``/``topk_indices`` (..., K) when ``top_k``
    is set, ``logits`` (..., V) when ``keep_full``, and ``logsumexp`` (...) of ``teacher_logits / T`` when
    ``logsumexp_temperature`` T is set (the tail bucket needs it: the teacher's full-softmax top-K
    probabilities cannot be recovered from the top-K values alone). Values keep the input dtype; all
    outputs are detached.
    """
    if top_k is None and not keep_full:
        raise ValueError("teacher_targets_from_logits: top_k is None and keep_full is False, nothing to keep")
    vocab = teacher_logits.shape[-1]
    if top_k is not None and not 1 <= top_k <= vocab:
        raise ValueError(f"teacher_targets_from_logits: top_k must be in [1, {vocab}], got {top_k}")
    if logsumexp_temperature is not None and logsumexp_temperature <= 0:
        raise ValueError(
            f"teacher_targets_from_logits: logsumexp_temperature must be > 0, got {logsumexp_temperature}"
        )
    logits = teacher_logits.detach()
    values = indices = lse = None
    if top_k is not None:
        values, indices = torch.topk(logits, top_k, dim=-1)
    if logsumexp_temperature is not None:
        lse = torch.logsumexp(logits.float() / logsumexp_temperature, dim=-1)
    return TeacherTargets(
        logits=logits if keep_full else None,
        topk_values=values,
        topk_indices=indices,
        logsumexp=lse,
        logsumexp_temperature=logsumexp_temperature,
    )


def _check_mask(student_logits: torch.Tensor, mask: torch.Tensor, where: str) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"{where}: mask must be a bool tensor, got {mask.dtype}")
    if mask.shape != student_logits.shape[:-1]:
        raise ValueError(
            f"{where}: mask shape {tuple(mask.shape)} != student_logits leading shape "
            f"{tuple(student_logits.shape[:-1])}"
        )


def _select(
    tensor: Optional[torch.Tensor], mask: torch.Tensor, name: str, where: str
) -> Optional[torch.Tensor]:
    """Keep the valid positions: (..., *rest) -> (M, *rest), M = mask.sum()."""
    if tensor is None:
        return None
    if tensor.shape[: mask.dim()] != mask.shape:
        raise ValueError(
            f"{where}: {name} leading shape {tuple(tensor.shape[: mask.dim()])} != mask shape {tuple(mask.shape)}"
        )
    return tensor[mask]


def _require(teacher: TeacherTargets, names: tuple[str, ...], where: str) -> None:
    missing = [n for n in names if getattr(teacher, n) is None]
    if missing:
        raise ValueError(
            f"{where} needs TeacherTargets field(s) {missing} (build them with teacher_targets_from_logits)"
        )


def _sum_and_count(per_token: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """per_token (M,) float32 over the valid positions -> (0-dim float32 sum, 0-dim int64 count)."""
    return per_token.sum(), mask.sum()


def cross_entropy(
    student_logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over the valid positions.

    The positions are already shifted by the caller: ``student_logits[p]`` predicts ``targets[p]``, the
    token at p + 1 of the sequence. student_logits (..., V), targets (...) long (any value, e.g. -100,
    at masked positions), mask (...) bool -> (sum, count).
    """
    _check_mask(student_logits, mask, "cross_entropy")
    logits = student_logits[mask].float()
    per_token = F.cross_entropy(logits, _select(targets, mask, "targets", "cross_entropy"), reduction="none")
    return _sum_and_count(per_token, mask)


def topk_logit_mse(
    student_logits: torch.Tensor,
    teacher_topk_values: torch.Tensor,
    teacher_topk_indices: torch.Tensor,
    mask: torch.Tensor,
    shape_tokens: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's loss: squared error of raw logits at the teacher's top-K vocabulary entries.

    Per token, the mean over the K indices of (teacher_logit - student_logit_at_same_index)^2, with raw
    logits (no softmax, no temperature), summed over valid tokens. With K fixed, sum / count equals the
    original's pooled ``sum(valid * (t - s)^2) / (sum(valid) * K)``.

    student_logits (..., V), teacher_topk_values (..., K), teacher_topk_indices (..., K) long,
    mask (...) bool -> (sum, count).
    """
    where = "topk_logit_mse"
    _check_mask(student_logits, mask, where)
    values = _select(teacher_topk_values, mask, "teacher_topk_values", where).detach().float()
    _select(teacher_topk_indices, mask, "teacher_topk_indices", where)  # shape check
    # Gather the K entries first, then keep the valid rows: indexing the (..., V) logits by the mask would
    # copy them (and their gradient) whole. Masked rows gather index 0, whatever their indices hold.
    safe = torch.where(mask.unsqueeze(-1), teacher_topk_indices, torch.zeros_like(teacher_topk_indices))
    student = student_logits.gather(-1, safe)[mask].float()
    per_token = (values - student).square().mean(dim=-1)
    if shape_tokens is not None:
        per_token = shape_tokens(per_token)
    return _sum_and_count(per_token, mask)


def _log1mexp(log_mass: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a = log of a mass in [0, 1], floored at log(TAIL_MASS_FLOOR). (M,) -> (M,).

    -expm1(a) is accurate where it matters (top-K mass near 1, tail near 0); clamping the mass BEFORE
    the log keeps the gradient finite when rounding pushes a to >= 0.
    """
    return torch.log(torch.clamp(-torch.expm1(log_mass), min=TAIL_MASS_FLOOR))


def _with_tail_bucket(topk_log_probs: torch.Tensor) -> torch.Tensor:
    """Full-softmax log-probs of the K entries (M, K) -> (M, K + 1) with the rest of the mass appended."""
    tail = _log1mexp(torch.logsumexp(topk_log_probs, dim=-1))
    return torch.cat([topk_log_probs, tail.unsqueeze(-1)], dim=-1)


def log_probs_on_support(
    student_logits: torch.Tensor, teacher: TeacherTargets, *, temperature: float, support: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's and the teacher's log-distributions at temperature T on a common support.

    Both inputs are at the valid positions only: student_logits (M, V), teacher fields with leading (M,).
    Returns (student_log_probs, teacher_log_probs), both float32 (M, S):
      - ``"full"``: log_softmax(logits / T) over the vocabulary, S = V (needs ``teacher.logits``).
      - ``"renormalize"``: both sides' logits at the teacher's K indices, log_softmax over those K, so
        both are renormalised over the teacher's top-K, S = K.
      - ``"tail_bucket"``: each side's FULL-softmax log-probs of the K entries plus a K+1-th bucket
        log(1 - sum of the K probs) holding the rest of its mass, S = K + 1. The teacher's full softmax
        comes from ``teacher.logsumexp`` (computed at T before top-k). Buckets below TAIL_MASS_FLOOR are
        rounding noise and are floored, which makes K = V agree with ``"full"``.
    """
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    where = f"support={support!r}"
    if support == "full":
        _require(teacher, ("logits",), where)
        if teacher.logits.shape != student_logits.shape:
            raise ValueError(
                f"{where}: teacher logits {tuple(teacher.logits.shape)} != student logits {tuple(student_logits.shape)}"
            )
        student = F.log_softmax(student_logits.float() / temperature, dim=-1)
        return student, F.log_softmax(teacher.logits.detach().float() / temperature, dim=-1)

    _require(teacher, ("topk_values", "topk_indices"), where)
    student_topk = student_logits.gather(-1, teacher.topk_indices).float() / temperature
    teacher_topk = teacher.topk_values.detach().float() / temperature
    if teacher.topk_valid is not None:  # entries left out of the support (repeats in a union)
        student_topk = student_topk.masked_fill(~teacher.topk_valid, MASKED_LOGIT)
        teacher_topk = teacher_topk.masked_fill(~teacher.topk_valid, MASKED_LOGIT)
    if support == "renormalize":
        return F.log_softmax(student_topk, dim=-1), F.log_softmax(teacher_topk, dim=-1)

    _require(teacher, ("logsumexp",), where)
    if teacher.logsumexp_temperature != temperature:
        raise ValueError(
            f"{where}: teacher.logsumexp was computed at temperature {teacher.logsumexp_temperature}, "
            f"the loss uses {temperature}"
        )
    student_lse = torch.logsumexp(student_logits.float() / temperature, dim=-1, keepdim=True)
    student_log_probs = _with_tail_bucket(student_topk - student_lse)
    teacher_log_probs = _with_tail_bucket(teacher_topk - teacher.logsumexp.detach().float().unsqueeze(-1))
    return student_log_probs, teacher_log_probs


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_s p (log p - log q) per row: (M, S), (M, S) -> (M,). Inputs are finite log-probs."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def _kl_family(
    divergence: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    where: str,
    student_logits: torch.Tensor,
    teacher: TeacherTargets,
    mask: torch.Tensor,
    temperature: float,
    support: str,
    scale_by_temperature_squared: bool,
    shape_tokens: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select the valid positions, build the log-distributions, sum ``divergence(log_ps, log_pt)`` (M,)
    (after ``shape_tokens``, when given: per-token clipping or weights, see distillation_terms)."""
    _check_mask(student_logits, mask, where)
    valid = TeacherTargets(
        logits=_select(teacher.logits, mask, "teacher.logits", where),
        topk_values=_select(teacher.topk_values, mask, "teacher.topk_values", where),
        topk_indices=_select(teacher.topk_indices, mask, "teacher.topk_indices", where),
        logsumexp=_select(teacher.logsumexp, mask, "teacher.logsumexp", where),
        logsumexp_temperature=teacher.logsumexp_temperature,
        topk_valid=_select(teacher.topk_valid, mask, "teacher.topk_valid", where),
    )
    student_log_probs, teacher_log_probs = log_probs_on_support(
        student_logits[mask], valid, temperature=temperature, support=support
    )
    per_token = divergence(student_log_probs, teacher_log_probs)
    if shape_tokens is not None:
        per_token = shape_tokens(per_token)
    loss_sum, count = _sum_and_count(per_token, mask)
    if scale_by_temperature_squared:
        loss_sum = loss_sum * temperature**2
    return loss_sum, count


def forward_kl(
    student_logits: torch.Tensor,
    teacher: TeacherTargets,
    mask: torch.Tensor,
    *,
    temperature: float,
    support: str,
    scale_by_temperature_squared: bool,
    shape_tokens: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(teacher || student) per token (mass-covering: the student is pushed to cover every teacher mode).

    student_logits (..., V), teacher fields per ``support`` (see TeacherTargets), mask (...) bool ->
    (sum, count). Logits are divided by ``temperature``; the sum is multiplied by T^2 only when
    ``scale_by_temperature_squared``.
    """

    def divergence(log_ps: torch.Tensor, log_pt: torch.Tensor) -> torch.Tensor:
        return _kl(log_pt, log_ps)

    return _kl_family(
        divergence,
        "forward_kl",
        student_logits,
        teacher,
        mask,
        temperature,
        support,
        scale_by_temperature_squared,
        shape_tokens,
    )


def reverse_kl(
    student_logits: torch.Tensor,
    teacher: TeacherTargets,
    mask: torch.Tensor,
    *,
    temperature: float,
    support: str,
    scale_by_temperature_squared: bool,
    shape_tokens: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(student || teacher) per token (mode-seeking). Shapes and options as in ``forward_kl``."""
    return _kl_family(
        _kl,
        "reverse_kl",
        student_logits,
        teacher,
        mask,
        temperature,
        support,
        scale_by_temperature_squared,
        shape_tokens,
    )


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher: TeacherTargets,
    mask: torch.Tensor,
    *,
    beta: float,
    temperature: float,
    support: str,
    scale_by_temperature_squared: bool,
    shape_tokens: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized JSD in TRL's GKD convention (``GKDTrainer.generalized_jsd_loss``), one knob between the KLs.

    beta == 0: KL(teacher || student); beta == 1: KL(student || teacher); otherwise, with the mixture
    m = beta * p_t + (1 - beta) * p_s (built in log space),
    jsd = beta * KL(teacher || m) + (1 - beta) * KL(student || m), which is <= log 2 per token at 0.5.
    Shapes and the other options as in ``forward_kl``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"generalized_jsd: beta must be in [0, 1], got {beta}")

    def divergence(log_ps: torch.Tensor, log_pt: torch.Tensor) -> torch.Tensor:
        if beta == 0.0:
            return _kl(log_pt, log_ps)
        if beta == 1.0:
            return _kl(log_ps, log_pt)
        log_m = torch.logaddexp(log_ps + math.log1p(-beta), log_pt + math.log(beta))
        return beta * _kl(log_pt, log_m) + (1.0 - beta) * _kl(log_ps, log_m)

    return _kl_family(
        divergence,
        "generalized_jsd",
        student_logits,
        teacher,
        mask,
        temperature,
        support,
        scale_by_temperature_squared,
        shape_tokens,
    )


def distillation_loss(
    name: str,
    student_logits: torch.Tensor,
    teacher: TeacherTargets,
    mask: torch.Tensor,
    *,
    temperature: float,
    beta: float,
    support: str,
    scale_by_temperature_squared: bool,
    shape_tokens: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One entry point for ``distill.loss``: route to the named loss with the config's options.

    student_logits (..., V), mask (...) bool -> (sum, count). ``beta`` is read by generalized_jsd only;
    ``support`` by the KL losses only ("full" when distill.top_k is null, else distill.topk_support).
    topk_logit_mse uses raw logits, so it refuses temperature != 1 and T^2 scaling rather than ignore them.
    """
    if name == "topk_logit_mse":
        if temperature != 1.0 or scale_by_temperature_squared:
            raise ValueError("topk_logit_mse uses raw logits: temperature must be 1.0 and no T^2 scaling")
        _require(teacher, ("topk_values", "topk_indices"), name)
        return topk_logit_mse(student_logits, teacher.topk_values, teacher.topk_indices, mask, shape_tokens)
    options = dict(
        temperature=temperature,
        support=support,
        scale_by_temperature_squared=scale_by_temperature_squared,
        shape_tokens=shape_tokens,
    )
    if name == "forward_kl":
        return forward_kl(student_logits, teacher, mask, **options)
    if name == "reverse_kl":
        return reverse_kl(student_logits, teacher, mask, **options)
    if name == "generalized_jsd":
        return generalized_jsd(student_logits, teacher, mask, beta=beta, **options)
    raise ValueError(f"unknown distillation loss {name!r}; expected one of {DISTILLATION_LOSSES}")


# --------------------------------------------------------------------------------------------------
# On-policy distillation: the student's support, the sampled-token estimator, per-token shaping
# --------------------------------------------------------------------------------------------------


def first_occurrences(ids: torch.Tensor) -> torch.Tensor:
    """(..., S) vocabulary ids -> (..., S) bool, False where an id repeats one earlier in its row."""
    sorted_ids, order = ids.sort(dim=-1, stable=True)
    repeat_sorted = torch.zeros_like(sorted_ids, dtype=torch.bool)
    repeat_sorted[..., 1:] = sorted_ids[..., 1:] == sorted_ids[..., :-1]
    repeat = torch.zeros_like(repeat_sorted).scatter(-1, order, repeat_sorted)
    return ~repeat


def student_support_targets(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    top_k: int,
    union: bool,
    logsumexp_temperature: Optional[float],
) -> TeacherTargets:
    """The support of OPCD's reverse KL: the student's top-K entries (or their union with the teacher's
    top-K), as TeacherTargets the KL losses read like the teacher's own top-K.

    student_logits (..., V) (the ids are chosen from them, never differentiated), teacher_logits (..., V)
    -> topk_indices (..., K) or (..., 2K) with topk_valid marking repeats of the union, topk_values the
    teacher's logits there, and the teacher's logsumexp at the given temperature for a tail bucket.
    """
    ids = torch.topk(student_logits.detach(), top_k, dim=-1).indices
    valid = None
    if union:
        ids = torch.cat([ids, torch.topk(teacher_logits.detach(), top_k, dim=-1).indices], dim=-1)
        valid = first_occurrences(ids)
    teacher = teacher_logits.detach()
    lse = None
    if logsumexp_temperature is not None:
        lse = torch.logsumexp(teacher.float() / logsumexp_temperature, dim=-1)
    return TeacherTargets(
        topk_values=teacher.gather(-1, ids),
        topk_indices=ids,
        logsumexp=lse,
        logsumexp_temperature=logsumexp_temperature,
        topk_valid=valid,
    )


def sampled_token(
    student_logits: torch.Tensor,
    teacher: TeacherTargets,
    targets: torch.Tensor,
    mask: torch.Tensor,
    *,
    temperature: float,
    baseline: bool,
    clip: Optional[float] = None,
    weighting: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The single-sample estimator of reverse KL's gradient at the answer's own (sampled) token y:

        loss = -A.detach() * log p_s(y),   A = log p_t(y) - log p_s(y)   [+ KL(p_s || p_t) with baseline]

    whose gradient, -A * grad log p_s(y), is in expectation over y ~ p_s the gradient of KL(p_s || p_t)
    (the baseline -KL(p_s || p_t), in closed form over the vocabulary, lowers its variance, vOPD). ``clip``
    bounds |A| (OPSD's per-token clipping); ``weighting`` maps the per-token KL (M,) to weights (M,).

    The teacher gives ``logits`` (then log p_t(y) and the closed-form KL come from its whole distribution)
    or only ``token_log_probs``, log p_t(y) at temperature 1 (a served teacher). The latter is all the
    estimator itself reads; the per-token KL is then its single-sample estimate log p_s(y) - log p_t(y)
    (unbiased for y ~ p_s at temperature 1), and what needs the closed form (the baseline, token weights,
    another temperature) is refused.

    student_logits (..., V), targets (...) the sampled ids, mask (...) bool -> (surrogate sum, sum of the
    per-token KL(p_s || p_t) or of its estimate (what is logged as the divergence), count).
    """
    where = "sampled_token"
    _check_mask(student_logits, mask, where)
    log_ps = F.log_softmax(student_logits[mask].float() / temperature, dim=-1)
    y = _select(targets, mask, "targets", where).unsqueeze(-1)
    token_ps = log_ps.gather(-1, y).squeeze(-1)
    if teacher.logits is not None:
        log_pt = F.log_softmax(
            _select(teacher.logits, mask, "teacher.logits", where).detach().float() / temperature, dim=-1
        )
        token_pt = log_pt.gather(-1, y).squeeze(-1)
        kl = _kl(log_ps, log_pt).detach()
    else:
        _require(teacher, ("token_log_probs",), where)
        if temperature != 1.0 or baseline or weighting is not None:
            raise ValueError(
                f"{where}: the teacher gives log p_t(y) at temperature 1 only; temperature {temperature}, the "
                "baseline and token weights need its whole distribution (logits)"
            )
        token_pt = _select(teacher.token_log_probs, mask, "teacher.token_log_probs", where).detach().float()
        kl = (token_ps - token_pt).detach()  # the single-sample estimate of KL(p_s || p_t)
    advantage = (token_pt - token_ps).detach() + (kl if baseline else 0.0)
    if clip is not None:
        advantage = advantage.clamp(-clip, clip)
    surrogate = -advantage * token_ps
    if weighting is not None:
        surrogate = surrogate * weighting(kl)
    return surrogate.sum(), kl.sum(), mask.sum()


def clip_per_token(per_token: torch.Tensor, clip: float) -> torch.Tensor:
    """Each token's loss counted at most `clip` (M,) -> (M,); above it the gradient is scaled by
    clip / loss, not zeroed (a token far from the teacher still pulls, no harder than the cap)."""
    return per_token * (clip / per_token.detach()).clamp(max=1.0)


def distillation_terms(
    name: str,
    student_logits: torch.Tensor,
    teacher: TeacherTargets,
    mask: torch.Tensor,
    *,
    temperature: float,
    beta: float,
    support: str,
    scale_by_temperature_squared: bool,
    targets: Optional[torch.Tensor] = None,
    topk_from: str = "teacher",
    top_k: Optional[int] = None,
    baseline: bool = False,
    clip: Optional[float] = None,
    weighting: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """distill.loss with every option: (loss sum, divergence sum, count).

    The divergence is the per-token loss before clipping and weights (for sampled_token: the per-token
    KL(p_s || p_t)), for logging. ``topk_from`` "student" or "union" takes the support from the student's
    top-K (``teacher`` must then hold full logits). With no clip and no weighting the loss sum is exactly
    distillation_loss's.
    """
    if name == "sampled_token":
        return sampled_token(
            student_logits,
            teacher,
            targets,
            mask,
            temperature=temperature,
            baseline=baseline,
            clip=clip,
            weighting=weighting,
        )
    if topk_from not in TOPK_FROM:
        raise ValueError(f"topk_from must be one of {TOPK_FROM}, got {topk_from!r}")
    if topk_from != "teacher":
        _require(teacher, ("logits",), f"topk_from={topk_from!r}")
        teacher = student_support_targets(
            student_logits,
            teacher.logits,
            top_k=top_k,
            union=topk_from == "union",
            logsumexp_temperature=temperature if support == "tail_bucket" else None,
        )
    raw: list[torch.Tensor] = []

    def shape(per_token: torch.Tensor) -> torch.Tensor:
        raw.append(per_token.detach().sum())
        if clip is not None:
            per_token = clip_per_token(per_token, clip)
        if weighting is not None:
            per_token = per_token * weighting(per_token.detach())
        return per_token

    loss_sum, count = distillation_loss(
        name,
        student_logits,
        teacher,
        mask,
        temperature=temperature,
        beta=beta,
        support=support,
        scale_by_temperature_squared=scale_by_temperature_squared,
        shape_tokens=shape,
    )
    return loss_sum, raw[0], count
