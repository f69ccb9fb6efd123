"""Uncertainty for GSM8K accuracies and per-example metrics (numpy only, no scipy).

* :func:`wilson_interval`: the interval printed for each accuracy. Unlike the normal approximation it
  stays inside [0, 1] and is not degenerate at 0 or n correct.
* :func:`bootstrap_mean_ci`: percentile bootstrap over examples for means of per-example values
  (teacher-forced NLL, KL), whose distribution is unknown and skewed.
* :func:`paired_bootstrap_diff` and :func:`mcnemar_exact`: two models scored on the SAME problems.
  Their errors are correlated, so comparing two separate intervals is too conservative; both tests
  here resample or count per problem.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959964
# Bootstrap replicates drawn per numpy call: bounds memory at this many x n indices.
_BOOT_CHUNK = 1000


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials.

    n = 0 gives (0.0, 1.0): with no observations every accuracy is consistent with the data, and a
    full-width bar shows that honestly instead of raising in the middle of a figure.
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At k = 0 or k = n the bound is exactly 0 or 1; set it so rounding cannot leave 0.9999999999999999.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def _as_finite_vector(values: Sequence[float], what: str) -> np.ndarray:
    """A 1-D float array, refusing empty or non-finite input (a NaN would silently poison every mean)."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what}: need a non-empty 1-D sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: {int(np.sum(~np.isfinite(arr)))} non-finite value(s)")
    return arr


def _bootstrap_means(values: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of n_boot resamples (with replacement) of values, drawn in chunks to bound memory."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = values.size
    means = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_CHUNK):
        rows = min(_BOOT_CHUNK, n_boot - start)
        idx = rng.integers(0, n, size=(rows, n))
        means[start : start + rows] = values[idx].mean(axis=1)
    return means


def _percentile_interval(means: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lo, hi): the sample mean and its percentile-bootstrap interval, resampling examples."""
    arr = _as_finite_vector(values, "bootstrap_mean_ci")
    lo, hi = _percentile_interval(_bootstrap_means(arr, n_boot, seed), level)
    return float(arr.mean()), lo, hi


def _paired_bools(a: Sequence[bool], b: Sequence[bool], what: str) -> tuple[np.ndarray, np.ndarray]:
    """Two equal-length boolean vectors; a length mismatch means the examples are not paired."""
    xa, xb = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if xa.ndim != 1 or xa.shape != xb.shape or xa.size == 0:
        raise ValueError(
            f"{what}: need two non-empty sequences of equal length, got {xa.shape} and {xb.shape}"
        )
    return xa, xb


def paired_bootstrap_diff(
    a: Sequence[bool], b: Sequence[bool], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(diff, lo, hi) of accuracy(a) - accuracy(b), as fractions, over the same examples.

    Example indices are resampled jointly (one draw picks both models' results on a problem), so the
    interval reflects the correlation between the two models' errors.
    """
    xa, xb = _paired_bools(a, b, "paired_bootstrap_diff")
    per_example = xa.astype(float) - xb.astype(float)
    lo, hi = _percentile_interval(_bootstrap_means(per_example, n_boot, seed), level)
    return float(per_example.mean()), lo, hi


def paired_bootstrap_mean_diff(
    a: Sequence[float], b: Sequence[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(diff, lo, hi) of mean(a) - mean(b) for per-example values of two models on the same examples
    (teacher-forced NLL, KL), with a paired percentile-bootstrap interval (one draw resamples a problem for
    both models)."""
    xa = _as_finite_vector(a, "paired_bootstrap_mean_diff")
    xb = _as_finite_vector(b, "paired_bootstrap_mean_diff")
    if xa.shape != xb.shape:
        raise ValueError(f"paired_bootstrap_mean_diff: lengths differ ({xa.size} vs {xb.size})")
    per_example = xa - xb
    lo, hi = _percentile_interval(_bootstrap_means(per_example, n_boot, seed), level)
    return float(per_example.mean()), lo, hi


def discordant_counts(a: Sequence[bool], b: Sequence[bool]) -> tuple[int, int]:
    """(a right and b wrong, a wrong and b right): the only pairs McNemar's test looks at."""
    xa, xb = _paired_bools(a, b, "discordant_counts")
    return int(np.sum(xa & ~xb)), int(np.sum(~xa & xb))


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value: min(1, 2 * P(X <= min(b01, b10))), X ~ Binomial(b01 + b10, 1/2).

    1.0 when there are no discordant pairs (nothing distinguishes the two models). Computed with exact
    integers (math.comb), so it stays accurate for the ~1300-problem GSM8K test split.
    """
    b01, b10 = discordant_counts(a, b)
    n = b01 + b10
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b01, b10) + 1))
    return min(1.0, 2 * tail / 2**n)
