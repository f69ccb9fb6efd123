"""Per-token weights of the distillation loss (distill.token_weighting): one function per scheme.

A scheme maps the per-token divergence (M,) of a chunk of answer tokens (detached) to weights (M,) that
multiply each token's loss; the loss is still divided by all the step's answer tokens, so a scheme that
zeroes tokens lowers the loss's scale rather than re-averaging over the kept ones. Adding a scheme (e.g.
step-wise reweighting) is one function here and its name in the config's choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Optional

import torch

Weighting = Callable[[torch.Tensor], torch.Tensor]


def top_fraction(divergence: torch.Tensor, fraction: float) -> torch.Tensor:
    """1 for the ceil(fraction * M) tokens of largest divergence, 0 for the rest (token selection as in
    TIP: train where the student is furthest from the teacher). Ties keep the earlier token.
    divergence (M,) -> weights (M,) of its dtype."""
    m = divergence.numel()
    keep = min(m, math.ceil(fraction * m))
    weights = torch.zeros_like(divergence)
    if keep:
        # A stable descending sort: equal divergences keep their order, so the choice is deterministic.
        order = torch.sort(divergence, descending=True, stable=True).indices
        weights[order[:keep]] = 1.0
    return weights


def token_weights(scheme: str, fraction: float) -> Optional[Weighting]:
    """The weighting of distill.token_weighting (None: uniform, every token weight 1)."""
    if scheme == "uniform":
        return None
    if scheme == "top_fraction":
        return lambda divergence: top_fraction(divergence, fraction)
    raise ValueError(f"unknown distill.token_weighting {scheme!r}")
