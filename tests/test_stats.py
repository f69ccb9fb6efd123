"""stats.py against hand-computed and published values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fsdistill.eval.stats import (
    bootstrap_mean_ci,
    discordant_counts,
    mcnemar_exact,
    paired_bootstrap_diff,
    wilson_interval,
)


def wilson_by_formula(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def test_wilson_zero_of_ten():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.27753, abs=1e-5)  # published Wilson upper bound for 0/10
    assert hi == pytest.approx(wilson_by_formula(0, 10)[1], rel=1e-12)


def test_wilson_five_of_ten():
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert (lo, hi) == pytest.approx(wilson_by_formula(5, 10), rel=1e-12)


def test_wilson_all_correct_is_mirror_of_none_correct():
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0
    assert lo == pytest.approx(1 - wilson_interval(0, 10)[1], abs=1e-12)


def test_wilson_empty_and_invalid():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k=11, n=10"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(-1, 10)


def pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return a, b


def test_mcnemar_small_table_by_hand():
    a, b = pairs(both=5, a_only=1, b_only=6, neither=3)
    assert discordant_counts(a, b) == (1, 6)
    # n = 7 discordant: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128
    assert mcnemar_exact(a, b) == pytest.approx(2 * (math.comb(7, 0) + math.comb(7, 1)) / 2**7)
    assert mcnemar_exact(a, b) == pytest.approx(0.125)
    assert mcnemar_exact(b, a) == mcnemar_exact(a, b)


def test_mcnemar_larger_table_by_hand():
    a, b = pairs(both=40, a_only=10, b_only=2, neither=30)
    expected = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12
    assert mcnemar_exact(a, b) == pytest.approx(expected)
    assert expected == pytest.approx(158 / 4096)


def test_mcnemar_balanced_and_no_discordance():
    a, b = pairs(both=2, a_only=3, b_only=3, neither=1)
    assert mcnemar_exact(a, b) == 1.0  # 2 * 42/64 > 1, capped
    a, b = pairs(both=4, a_only=0, b_only=0, neither=4)
    assert mcnemar_exact(a, b) == 1.0


def test_mcnemar_stays_finite_for_full_test_split():
    a, b = pairs(both=700, a_only=400, b_only=219, neither=0)
    p = mcnemar_exact(a, b)
    assert 0.0 < p < 1e-10


def test_bootstrap_mean_ci_reproducible_and_contains_mean():
    values = np.random.default_rng(1).exponential(2.0, size=300)
    first = bootstrap_mean_ci(values, n_boot=2000, seed=7)
    assert first == bootstrap_mean_ci(values, n_boot=2000, seed=7)
    assert first != bootstrap_mean_ci(values, n_boot=2000, seed=8)
    mean, lo, hi = first
    assert mean == pytest.approx(values.mean())
    assert lo < mean < hi


def test_bootstrap_mean_ci_matches_normal_theory_for_proportion():
    values = [1.0] * 300 + [0.0] * 700
    mean, lo, hi = bootstrap_mean_ci(values, n_boot=10000, seed=0)
    half = 1.959964 * math.sqrt(0.3 * 0.7 / 1000)
    assert mean == 0.3
    assert lo == pytest.approx(0.3 - half, abs=0.004)
    assert hi == pytest.approx(0.3 + half, abs=0.004)


def test_bootstrap_mean_ci_constant_and_level():
    assert bootstrap_mean_ci([2.5] * 20, n_boot=100) == (2.5, 2.5, 2.5)
    values = np.random.default_rng(0).normal(size=200)
    _, lo90, hi90 = bootstrap_mean_ci(values, n_boot=2000, level=0.90)
    _, lo95, hi95 = bootstrap_mean_ci(values, n_boot=2000, level=0.95)
    assert lo95 < lo90 < hi90 < hi95


def test_bootstrap_mean_ci_refuses_bad_input():
    with pytest.raises(ValueError, match="non-finite"):
        bootstrap_mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean_ci([])


def test_paired_bootstrap_equal_accuracy_contains_zero():
    rng = np.random.default_rng(3)
    a = rng.random(2000) < 0.6
    b = np.roll(a, 1)  # same accuracy, different problems right
    diff, lo, hi = paired_bootstrap_diff(a, b, seed=0)
    assert diff == 0.0
    assert lo < 0.0 < hi


def test_paired_bootstrap_clearly_better_excludes_zero():
    rng = np.random.default_rng(4)
    b = rng.random(1000) < 0.5
    a = b | (rng.random(1000) < 0.4)  # a solves everything b solves, and more
    diff, lo, hi = paired_bootstrap_diff(a, b, seed=0)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert 0.0 < lo < diff < hi


def test_paired_bootstrap_reproducible_and_checks_lengths():
    a, b = pairs(both=30, a_only=8, b_only=3, neither=20)
    assert paired_bootstrap_diff(a, b, n_boot=500, seed=5) == paired_bootstrap_diff(a, b, n_boot=500, seed=5)
    assert paired_bootstrap_diff(a, a, n_boot=200) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap_diff(a, b[:-1])
