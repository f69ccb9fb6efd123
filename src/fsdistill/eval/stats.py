"""Uncertainty for GSM8K accuracies and per-example metrics (numpy only, no scipy).

* :func:`wilson_interval`: the interval printed for each accuracy. Unlike the normal approximation it
  stays inside [0, 1] and is not degenerate at 0 or n correct.
* :func:`bootstrap_mean_ci`: percentile bootstrap over examples for means of per-example values
  (teacher-forced NLL, KL), whose distribution is unknown and skewed.
* :func:`paired_bootstrap_diff` and :func:`mcnemar_exact`: two models scored on the SAME problems.
  Their errors are correlated, so comparing two separate intervals is too conservative; both tests
  here resample or count per problem.

Cost at scale (a million paired examples): the two tests of paired correctness read only the four
cells of the paired table, so after counting them (O(n)) the bootstrap costs O(n_boot) (a multinomial
draw of the cells) and McNemar O(min(b01, b10)) float operations at most (log space, Loader's binomial
density); the bootstrap of continuous per-example values costs O(n x n_boot) time but its memory is
bounded (_BOOT_ELEMENTS indices at a time).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959964
# Bootstrap replicates drawn per numpy call (at most), and at most this many indices per call: memory
# stays near _BOOT_ELEMENTS x 16 bytes (the int64 indices and the gathered float64 values) whatever n is.
# Below _BOOT_ELEMENTS / _BOOT_CHUNK examples the calls draw exactly what they drew before the bound.
_BOOT_CHUNK = 1000
_BOOT_ELEMENTS = 1 << 22


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
    """Means of n_boot resamples (with replacement) of values, drawn in chunks to bound memory.

    values: (n,) float64; returns (n_boot,) float64. Each call draws a (rows, n) block of indices, rows
    chosen so that rows x n stays within _BOOT_ELEMENTS (one row at a time past that many examples).
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = values.size
    chunk = max(1, min(_BOOT_CHUNK, _BOOT_ELEMENTS // n))
    means = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        rows = min(chunk, n_boot - start)
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
    interval reflects the correlation between the two models' errors. A problem's difference is +1 (only
    a right), -1 (only b right) or 0, so a resample is fully described by how many of its n draws fall in
    each cell of the paired table: those counts are Multinomial(n, observed cell fractions), drawn here
    directly (paired_bootstrap_diff_from_counts). The same distribution as resampling indices, at a cost
    independent of n.
    """
    xa, xb = _paired_bools(a, b, "paired_bootstrap_diff")
    a_only, b_only = discordant_counts(xa, xb)
    return paired_bootstrap_diff_from_counts(a_only, b_only, xa.size, n_boot, seed, level)


def paired_bootstrap_diff_from_counts(
    a_only: int, b_only: int, n: int, n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """paired_bootstrap_diff from the paired table: a_only problems only a solved, b_only only b, of n.

    One replicate = (a_only*, b_only*, concordant*) ~ Multinomial(n, (a_only, b_only, rest) / n), its
    difference (a_only* - b_only*) / n; the interval is the percentile interval of n_boot replicates.
    """
    if n < 1 or a_only < 0 or b_only < 0 or a_only + b_only > n:
        raise ValueError(f"paired table needs 0 <= a_only + b_only <= n, n >= 1; got {a_only}, {b_only}, {n}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    cells = rng.multinomial(n, [a_only / n, b_only / n, (n - a_only - b_only) / n], size=n_boot)
    diffs = (cells[:, 0] - cells[:, 1]) / n
    lo, hi = _percentile_interval(diffs, level)
    return (a_only - b_only) / n, lo, hi


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

    1.0 when there are no discordant pairs (nothing distinguishes the two models).
    """
    return mcnemar_exact_from_counts(*discordant_counts(a, b))


# Terms of the binomial tail summed per numpy call (mcnemar_exact_from_counts): bounds its memory.
_TAIL_BLOCK = 1 << 16


def mcnemar_exact_from_counts(b01: int, b10: int) -> float:
    """mcnemar_exact from the discordant counts.

    The tail P(X <= k), k = min(b01, b10), is summed downwards from its largest term: t_k = P(X = k)
    (binomial_pmf_half, accurate to ~1e-15 relative at any n), times 1 + r_1 + r_1 r_2 + ..., where
    r_j = t_{k-j} / t_{k-j+1} = (k-j+1) / (n-k+j) < 1. The terms fall monotonically, so the sum stops
    once they no longer change it: at most k + 1 float terms, never the big integers of math.comb (whose
    exact sum costs grow with the square of the discordant count).
    """
    if b01 < 0 or b10 < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b01}, {b10}")
    n, k = b01 + b10, min(b01, b10)
    if 2 * k + 1 >= n:  # P(X <= k) >= 1/2 (also n = 0: nothing distinguishes the two models)
        return 1.0
    total, product = 1.0, 1.0
    for start in range(1, k + 1, _TAIL_BLOCK):
        j = np.arange(start, min(start + _TAIL_BLOCK, k + 1), dtype=np.float64)
        terms = product * np.cumprod((k - j + 1) / (n - k + j))
        total += float(terms.sum())
        product = float(terms[-1])
        if product < 1e-17 * total:
            break
    return min(1.0, 2.0 * binomial_pmf_half(k, n) * total)


def binomial_pmf_half(x: int, n: int) -> float:
    """P(X = x) for X ~ Binomial(n, 1/2), by Loader's saddle-point form (as R's dbinom computes it):
    exp(-stirlerr and bd0 terms) / sqrt(2 pi x (n - x) / n), accurate to ~1e-15 relative for any n (the
    plain log C(n, x) - n log 2 through lgamma loses ~1e-9 at n = 10^6 to cancellation)."""
    if x == 0 or x == n:
        return math.exp(-n * math.log(2.0))
    log_core = _stirlerr(n) - _stirlerr(x) - _stirlerr(n - x) - _bd0(x, n / 2.0) - _bd0(n - x, n / 2.0)
    return math.exp(log_core) / math.sqrt(2.0 * math.pi * x * (1.0 - x / n))


def _stirlerr(n: int) -> float:
    """log(n!) - log(sqrt(2 pi n) (n/e)^n) for an integer n >= 1 (Loader 2000)."""
    if n <= 15:
        return math.lgamma(n + 1.0) - (n + 0.5) * math.log(n) + n - 0.5 * math.log(2.0 * math.pi)
    nn = float(n) * n
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    if n > 500:
        return (s0 - s1 / nn) / n
    if n > 80:
        return (s0 - (s1 - s2 / nn) / nn) / n
    if n > 35:
        return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n
    return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n


def _bd0(x: float, mean: float) -> float:
    """x log(x / mean) + mean - x without cancellation when x is near mean (Loader 2000)."""
    if abs(x - mean) < 0.1 * (x + mean):
        v = (x - mean) / (x + mean)
        s = (x - mean) * v
        ej = 2.0 * x * v
        v *= v
        for j in range(1, 1000):
            ej *= v
            s_next = s + ej / (2 * j + 1)
            if s_next == s:
                return s_next
            s = s_next
        return s
    return x * math.log(x / mean) + mean - x
