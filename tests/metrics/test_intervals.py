"""Bootstrap intervals of metrics.intervals, in float64: coverage on synthetic normal tables whose mean is known,
degenerate and paired cases with a known answer, and bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics import intervals
from kuramoto_diffusion.metrics.intervals import difference_table, mean_interval, ratio_interval


def crossed_table(rng: np.random.Generator, mean: float, groups: int, sets: int, seeds: int = 1) -> np.ndarray:
    """(seeds, groups, sets) normal table: seed, group (nested in seed) and reference-set effects plus cell noise."""
    seed_effect = rng.normal(0.0, 1.0, (seeds, 1, 1)) if seeds > 1 else 0.0
    return (
        mean
        + seed_effect
        + rng.normal(0.0, 1.0, (seeds, groups, 1))
        + rng.normal(0.0, 1.0, (1, 1, sets))
        + rng.normal(0.0, 0.3, (seeds, groups, sets))
    )


def binomial_band(level: float, trials: int) -> tuple[float, float]:
    """Coverage band of ± 3.5 binomial standard deviations around ``level``."""
    spread = 3.5 * math.sqrt(level * (1 - level) / trials)
    return level - spread, level + spread


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    # Enough groups and sets that the percentile bootstrap's small-sample narrowness is below the tolerance.
    rng = np.random.default_rng(7)
    trials, hits = 300, 0
    for trial in range(trials):
        interval = mean_interval(crossed_table(rng, 3.0, 40, 40)[0], resamples=1000, seed=trial)
        hits += interval.low <= 3.0 <= interval.high
    low, high = binomial_band(0.95, trials)
    assert low <= hits / trials <= high, hits / trials


def test_seed_axis_is_resampled_so_the_interval_covers_the_seed_spread() -> None:
    # A large seed effect: an interval that ignored the seeds would be far too narrow and miss often.
    rng = np.random.default_rng(3)
    trials, hits, widths = 200, 0, []
    for trial in range(trials):
        table = crossed_table(rng, 0.0, 4, 4, seeds=30)
        table += rng.normal(0.0, 3.0, (30, 1, 1))
        interval = mean_interval(table, resamples=1000, seed=trial)
        hits += interval.low <= 0.0 <= interval.high
        widths.append(interval.high - interval.low)
    low, high = binomial_band(0.95, trials)
    assert low <= hits / trials <= high, hits / trials
    # The width matches 2 × 1.96 × the standard error the seeds alone imply (sd ≈ √10 over √30 seeds), not less.
    assert np.mean(widths) > 0.8 * 2 * 1.96 * math.sqrt(10.0 / 30)


def test_ratio_interval_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(11)
    trials, hits = 200, 0
    for trial in range(trials):
        kuramoto = crossed_table(rng, 8.0, 40, 40) * 0.1 + 8.0 * 0.9
        euclidean = crossed_table(rng, 10.0, 30, 40) * 0.1 + 10.0 * 0.9
        interval = ratio_interval(kuramoto[0], euclidean[0], resamples=1000, seed=trial)
        hits += interval.low <= 0.8 <= interval.high
    low, high = binomial_band(0.95, trials)
    assert low <= hits / trials <= high, hits / trials


def test_interval_of_a_constant_is_a_point() -> None:
    interval = mean_interval(np.full((3, 4, 5), 2.5))
    assert interval.mean == interval.low == interval.high == 2.5
    ratio = ratio_interval(np.full((4, 4), 3.0), np.full((5, 4), 2.0))
    assert ratio.mean == pytest.approx(1.5, abs=1e-15)
    assert ratio.low == pytest.approx(1.5, abs=1e-15) and ratio.high == pytest.approx(1.5, abs=1e-15)


def test_a_shared_reference_set_offset_cancels_in_the_paired_ratio() -> None:
    rng = np.random.default_rng(5)
    offsets = rng.uniform(0.0, 20.0, 6)  # a reference set that makes every method look worse by the same amount
    euclidean = 10.0 + offsets + rng.normal(0.0, 0.05, (4, 6))
    kuramoto = 10.0 + offsets + rng.normal(0.0, 0.05, (4, 6))
    paired = ratio_interval(kuramoto, euclidean, seed=1)
    unpaired = ratio_interval(kuramoto, euclidean, seed=1, paired=False)
    assert paired.low <= 1.0 <= paired.high
    assert paired.high - paired.low < 0.02
    assert unpaired.high - unpaired.low > 10 * (paired.high - paired.low)
    # The same holds for an offset per (seed, reference set), with several seeds.
    seed_set = rng.uniform(0.0, 20.0, (3, 1, 6))
    paired3 = ratio_interval(
        5.0 + seed_set + rng.normal(0, 0.05, (3, 4, 6)), 5.0 + seed_set + rng.normal(0, 0.05, (3, 4, 6))
    )
    assert paired3.high - paired3.low < 0.02


def test_difference_table_subtracts_the_floor_per_reference_set() -> None:
    values = np.arange(12.0).reshape(3, 4)
    floor = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    expected = values - np.array([2.0, 2.0, 2.0, 2.0])
    np.testing.assert_array_equal(difference_table(values, floor), expected)
    with pytest.raises(UserError, match="floor"):
        difference_table(values, floor[:, :3])


@pytest.mark.parametrize("shape", [(1, 4), (4, 1), (2, 1, 4), (4,), (2, 2, 2, 2)])
def test_too_few_groups_or_sets_or_a_wrong_shape_raise(shape: tuple[int, ...]) -> None:
    with pytest.raises(UserError):
        mean_interval(np.ones(shape))


def test_bad_ratio_inputs_raise() -> None:
    with pytest.raises(UserError, match="share seeds and reference sets"):
        ratio_interval(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(UserError, match="positive denominator"):
        ratio_interval(np.ones((3, 4)), np.zeros((3, 4)))
    with pytest.raises(UserError, match="non-finite"):
        mean_interval(np.array([[1.0, math.nan], [1.0, 2.0]]))
    with pytest.raises(UserError, match="level"):
        mean_interval(np.ones((2, 2)), level=1.5)


def test_a_denominator_whose_resamples_reach_zero_gives_an_unbounded_ratio_not_nan() -> None:
    """Denominator sets −1, −1, −1, 3.5 (mean 0.125): a resample of the 4 sets has k ~ Binomial(4, 1/4) copies of
    the positive one and mean (4.5k − 4)/4, which is ≤ 0 when k = 0 (probability 0.32 > 2.5 %): the upper bound
    is +inf. Enumerated exactly, the lower 2.5 % quantile lies among the k = 3 draws (P(k = 4) = 0.004, P(k ≥ 3) =
    0.051), whose ratio is 1 / 2.375."""
    denominator = np.tile([-1.0, -1.0, -1.0, 3.5], (2, 1))
    interval = ratio_interval(np.ones((2, 4)), denominator)
    assert interval.mean == pytest.approx(1 / 0.125)
    assert interval.high == math.inf
    assert interval.low == pytest.approx(1 / 2.375)


@pytest.mark.parametrize("resamples", [1001, 4000])
def test_a_bound_on_the_last_finite_draw_stays_finite(resamples: int) -> None:
    """Percentiles follow numpy's linear rule on finite draws; where that rule lands exactly on the last finite
    draw with +inf beyond it, the bound is that draw, not inf (numpy's own quantile gives NaN there)."""
    finite = np.linspace(1.0, 2.0, resamples - 25)
    draws = np.concatenate([finite, np.full(25, np.inf)])
    interval = intervals._percentiles(0.0, draws, 0.95)
    position = (resamples - 1) * 0.975
    assert interval.low == pytest.approx(np.quantile(finite, 0.025 * (resamples - 1) / (resamples - 26)))
    if position <= resamples - 26:  # the upper bound lies on or before the last finite draw
        assert interval.high == pytest.approx(np.interp(position, np.arange(resamples - 25), finite))
    else:
        assert interval.high == math.inf
    for q in (0.1, 0.5, 0.9):  # on finite draws, exactly numpy's rule
        plain = np.random.default_rng(resamples).normal(size=resamples)
        expected = np.quantile(plain, [q / 2, 1 - q / 2])
        got = intervals._percentiles(0.0, plain, 1 - q)
        assert (got.low, got.high) == pytest.approx(tuple(expected))
