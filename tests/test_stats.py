"""stats.py against hand-computed and published values."""

from __future__ import annotations

import json
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


# --------------------------------------------------------------------------------------------------
# At scale: McNemar without big integers, the paired bootstrap from the table's cells, bounded memory
# --------------------------------------------------------------------------------------------------


def mcnemar_by_big_integers(b01: int, b10: int) -> float:
    """The exact McNemar p as this repository computed it before (kept here as the reference): the tail
    summed in exact integers, one math.comb per term (cost ~ the square of the discordant count)."""
    n = b01 + b10
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b01, b10) + 1))
    return min(1.0, 2 * tail / 2**n)


def test_mcnemar_from_counts_equals_the_big_integer_sum():
    from fsdistill.eval.stats import mcnemar_exact_from_counts

    tables = [(b01, b10) for n in range(0, 41) for b01 in range(n + 1) for b10 in (n - b01,)]
    for n in (100, 321, 1000, 1319, 4000):
        for k in {0, 1, 7, n // 4, n // 2 - int(2 * math.sqrt(n)), n // 2 - 1, n // 2}:
            tables += [(k, n - k), (n - k, k)]
    for b01, b10 in tables:
        want = mcnemar_by_big_integers(b01, b10)
        assert mcnemar_exact_from_counts(b01, b10) == pytest.approx(want, rel=1e-9, abs=0), (b01, b10)
    a, b = pairs(both=700, a_only=400, b_only=219, neither=0)
    assert mcnemar_exact(a, b) == pytest.approx(mcnemar_by_big_integers(400, 219), rel=1e-9)


def test_mcnemar_at_a_million_discordant_pairs():
    """Millions of discordant pairs (a sum no big-integer loop finishes): the tail agrees with the same
    sum done term by term in log space through lgamma (accurate to ~1e-9 at this n), and with the normal
    approximation to within its own error."""
    from fsdistill.eval.stats import binomial_pmf_half, mcnemar_exact_from_counts

    b01, b10 = 500_000 - 1_500, 500_000 + 1_500
    n, k = b01 + b10, b01
    i = np.arange(k + 1, dtype=np.float64)
    log_terms = (
        math.lgamma(n + 1)
        - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in i])
        - n * math.log(2)
    )
    top = log_terms.max()
    by_logs = 2 * math.exp(top) * np.exp(log_terms - top).sum()
    p = mcnemar_exact_from_counts(b01, b10)
    assert p == pytest.approx(by_logs, rel=1e-6)
    normal = math.erfc((b10 - b01 - 1) / math.sqrt(n) / math.sqrt(2))  # continuity-corrected
    assert p == pytest.approx(normal, rel=0.02)
    assert binomial_pmf_half(k, n) == pytest.approx(math.exp(log_terms[-1]), rel=1e-6)


def test_paired_bootstrap_from_cells_matches_resampling_indices():
    """The multinomial draw of the paired table's cells is the index bootstrap's distribution: over many
    replicates both give the same interval to within Monte Carlo error, and the difference itself exactly."""
    from fsdistill.eval.stats import _bootstrap_means, _percentile_interval

    a, b = pairs(both=300, a_only=70, b_only=45, neither=85)
    diff, lo, hi = paired_bootstrap_diff(a, b, n_boot=40000, seed=1)
    per_example = np.asarray(a, float) - np.asarray(b, float)
    ref_lo, ref_hi = _percentile_interval(_bootstrap_means(per_example, 40000, seed=2), 0.95)
    assert diff == per_example.mean()
    assert lo == pytest.approx(ref_lo, abs=0.004)
    assert hi == pytest.approx(ref_hi, abs=0.004)


def test_paired_bootstrap_cost_does_not_grow_with_n():
    """A billion paired examples: only the cells are drawn (resampling indices would need 10^13 draws)."""
    from fsdistill.eval.stats import paired_bootstrap_diff_from_counts

    n = 10**9
    diff, lo, hi = paired_bootstrap_diff_from_counts(100_000_000, 99_000_000, n, n_boot=2000, seed=0)
    assert diff == pytest.approx(0.001)
    half = 1.959964 * math.sqrt((0.1 + 0.099 - 0.001**2) / n)
    assert lo == pytest.approx(diff - half, rel=0.05)
    assert hi == pytest.approx(diff + half, rel=0.05)
    with pytest.raises(ValueError, match="paired table"):
        paired_bootstrap_diff_from_counts(3, 2, 4)


_DEFAULT_RNG = np.random.default_rng


class RecordingRng:
    """A numpy Generator that records the size of every integers() call."""

    def __init__(self, seed):
        self.rng, self.sizes = _DEFAULT_RNG(seed), []

    def integers(self, low, high, size):
        self.sizes.append(size)
        return self.rng.integers(low, high, size=size)


def test_continuous_bootstrap_memory_is_bounded(monkeypatch):
    """However many examples, one numpy call draws at most _BOOT_ELEMENTS indices (10^6 examples x 1000
    replicates per call was 8 GB of indices); below _BOOT_ELEMENTS / 1000 examples the draws, hence the
    intervals, are what they were."""
    from fsdistill.eval import stats

    calls = []

    def recording(seed):
        calls.append(RecordingRng(seed))
        return calls[-1]

    monkeypatch.setattr(stats.np.random, "default_rng", recording)
    monkeypatch.setattr(stats, "_BOOT_ELEMENTS", 50_000)
    values = np.random.RandomState(0).normal(size=20_000)
    stats.bootstrap_mean_ci(values, n_boot=30)
    assert calls[-1].sizes == [(2, 20_000)] * 15
    stats.bootstrap_mean_ci(values[:40], n_boot=2500)
    assert calls[-1].sizes == [(1000, 40), (1000, 40), (500, 40)]  # the unbounded chunks of before


COMMITTED_SUMMARIES = ("experiments/twostep/summary.json", "experiments/on_policy/summary.json")
COMMITTED_COMPARISONS = (
    "experiments/smollm2/compare_distill_vs_sft.json",
    "experiments/smollm2/compare_distill_vs_zeroshot_teacher.json",
)


def recomputed(pooled: dict, spec_a: str, spec_b: str, step_a, step_b, n_boot: int) -> dict:
    from fsdistill.eval.compare import compare_pair, side_entries

    return compare_pair(side_entries(pooled, spec_a)[step_a], side_entries(pooled, spec_b)[step_b], n_boot, 0)


def assert_same_statistics(new: dict, old: dict) -> None:
    """Counts and point estimates equal, McNemar within rel 1e-9, intervals within Monte Carlo error:
    0.3 percentage points for accuracy; teacher-forced intervals draw what they drew (n < 4,194), exactly."""
    assert (new["n"], new["a_only_correct"], new["b_only_correct"]) == (
        old["n"],
        old["a_only_correct"],
        old["b_only_correct"],
    )
    if old["diff_pp"] is not None:
        assert new["diff_pp"] == pytest.approx(old["diff_pp"], abs=1e-9)
        assert new["diff_ci95_pp"] == pytest.approx(old["diff_ci95_pp"], abs=0.3)
        assert new["mcnemar_p"] == pytest.approx(old["mcnemar_p"], rel=1e-9)
    assert new["teacher_forced"].keys() == old["teacher_forced"].keys()
    for metric, values in old["teacher_forced"].items():
        got = new["teacher_forced"][metric]
        assert [got["diff"], *got["diff_ci95"]] == pytest.approx(
            [values["diff"], *values["diff_ci95"]], rel=1e-12
        )


@pytest.mark.parametrize("path", COMMITTED_SUMMARIES)
def test_committed_summaries_recomputed_within_monte_carlo_error(path):
    from conftest import REPO

    from fsdistill.eval.results import load_pooled

    summary = json.loads((REPO / path).read_text())
    inputs = summary["inputs"]
    pooled = load_pooled([REPO / p for p in [inputs["icl"], *inputs["evals"]]])
    assert summary["comparisons"]
    for old in summary["comparisons"]:
        new = recomputed(pooled, *old["spec"], old["a"]["step"], old["b"]["step"], summary["n_boot"])
        assert_same_statistics(new, old)


@pytest.mark.parametrize("path", COMMITTED_COMPARISONS)
def test_committed_comparisons_recomputed_exactly(path):
    from conftest import REPO

    from fsdistill.eval.results import load_pooled

    report = json.loads((REPO / path).read_text())
    pooled = load_pooled([REPO / p for p in report["evals"]])
    for old in report["comparisons"]:
        args = (report["a"], report["b"], old["a"]["step"], old["b"]["step"], report["n_boot"])
        assert_same_statistics(recomputed(pooled, *args), old)
