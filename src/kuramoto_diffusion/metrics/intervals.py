"""Percentile-bootstrap 95 % intervals for sample-quality metrics measured on a crossed design.

A quality measurement is a table of one metric's values, one per cell:

- **groups** (rows): independent sets of generated samples of one model (``g`` = 0..G-1);
- **reference sets** (columns): disjoint sets of held-out real images, every group scored against every set;
- optionally **seeds** (a leading axis): independently trained models, each with its own groups. A seed's
  reference sets are paired with the other seeds' sets of the same index (the same real images where the
  data and its split do not depend on the seed).

The mean over all cells estimates the metric at that set size. Its spread comes from three crossed or
nested sources: the training seed, the draw of samples (groups, nested in seeds) and the draw of the real
set (reference sets, crossed with groups and seeds). ``mean_interval`` resamples all three: the seeds with
replacement, within each drawn seed its groups with replacement, and the reference-set indices with
replacement (one draw shared by all seeds). That is the "pigeonhole" bootstrap of a crossed design (Owen,
*Ann. Appl. Stat.* 2007), which is mildly conservative: the cell noise is counted once per resampled factor.

``ratio_interval`` compares two methods measured on the same seeds and reference sets. Its **resampling
units are the pairing units (seed, reference set)**: one shared draw of seed indices and of reference-set
indices is applied to both tables, so an offset that a reference set (or a seed's data) adds to both
methods moves numerator and denominator together and largely cancels in K/E. Groups are not paired (group
g of one method has nothing to do with group g of the other) and are resampled separately per method.

Percentile intervals with few units are too narrow (with 4 reference sets the bootstrap sees at most 4
distinct values per factor); the docs (docs/benchmarks-protocol.md) say how many units the headline uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ..errors import UserError

DEFAULT_RESAMPLES = 4000


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap interval (``low`` ≤ ``high``; same units as the data)."""

    mean: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}]"


def as_table(values: ArrayLike, name: str = "table") -> np.ndarray:
    """``values`` as a float64 (seeds, groups, reference sets) array; a 2-D (groups, sets) table gets one seed.

    Raises UserError for another shape, non-finite values, or fewer than 2 groups or 2 reference sets (a
    bootstrap over one unit has no spread to show).
    """
    table = np.asarray(values, dtype=np.float64)
    if table.ndim == 2:
        table = table[None]
    if table.ndim != 3 or 0 in table.shape:
        raise UserError(
            f"{name} must be a (groups, reference sets) or (seeds, groups, reference sets) table, "
            f"got shape {tuple(np.shape(values))}"
        )
    if table.shape[1] < 2 or table.shape[2] < 2:
        raise UserError(
            f"{name} has {table.shape[1]} group(s) and {table.shape[2]} reference set(s); "
            "an interval needs at least 2 of each"
        )
    if not np.isfinite(table).all():
        raise UserError(f"{name} holds non-finite values; every cell must be a finite metric value")
    return table


def _check_level(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise UserError(f"level must lie in (0, 1), got {level!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise UserError(f"resamples must be an integer ≥ 100, got {resamples!r}")


def _resampled_means(table: np.ndarray, seeds: np.ndarray, sets: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(B,) means of ``table`` (S, G, R) over the drawn seeds (B, S), the drawn sets (B, R) and groups drawn
    here per (resample, seed slot)."""
    resamples, num_seeds = seeds.shape
    num_groups = table.shape[1]
    groups = rng.integers(num_groups, size=(resamples, num_seeds, num_groups))
    # rows[b, s, g, :] = table[seeds[b, s], groups[b, s, g], :]; average the groups first, then pick the sets.
    per_set = table[seeds[:, :, None], groups].mean(axis=2)  # (B, S, R)
    picked = np.take_along_axis(per_set, np.broadcast_to(sets[:, None, :], per_set.shape), axis=2)
    return picked.mean(axis=(1, 2))


def _percentiles(point: float, draws: np.ndarray, level: float) -> Interval:
    """The percentile interval of ``draws``, which may hold +inf (a ratio resample whose denominator is not
    positive): a bound that falls among them is +inf, an unbounded interval, not the NaN that interpolating
    between two infinities gives."""
    alpha = (1.0 - level) / 2.0
    ordered = np.sort(draws)

    def quantile(q: float) -> float:
        # numpy's linear rule (position (n − 1)·q between two order statistics), written out so that a bound on
        # the last finite draw stays finite (numpy's a + (b − a)·0 is NaN when b is inf) and one past it is inf.
        position = (ordered.size - 1) * q
        below = math.floor(position)
        fraction = position - below
        if fraction == 0.0:
            return float(ordered[below])
        if math.isinf(ordered[below + 1]):
            return math.inf
        return float(ordered[below] + (ordered[below + 1] - ordered[below]) * fraction)

    return Interval(float(point), quantile(alpha), quantile(1.0 - alpha))


def mean_interval(
    values: ArrayLike, *, level: float = 0.95, resamples: int = DEFAULT_RESAMPLES, seed: int = 0, name: str = "table"
) -> Interval:
    """The mean of a (groups, reference sets) or (seeds, groups, reference sets) table of one metric, with a
    percentile-bootstrap interval at ``level`` (0.95: 95 %).

    Resampling units: seeds, groups within seeds, and reference sets, each with replacement (module
    docstring). Deterministic given ``seed``; computed in float64.
    """
    _check_level(level, resamples)
    table = as_table(values, name)
    rng = np.random.default_rng(seed)
    num_seeds, _, num_sets = table.shape
    seeds = rng.integers(num_seeds, size=(resamples, num_seeds))
    sets = rng.integers(num_sets, size=(resamples, num_sets))
    return _percentiles(table.mean(), _resampled_means(table, seeds, sets, rng), level)


def ratio_interval(
    numerator: ArrayLike,
    denominator: ArrayLike,
    *,
    level: float = 0.95,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    paired: bool = True,
) -> Interval:
    """The ratio of two methods' means, mean(numerator) / mean(denominator) (e.g. Kuramoto / Euclidean), with a
    percentile-bootstrap interval.

    Both tables are (groups, reference sets) or (seeds, groups, reference sets) with the same seeds and the
    same reference sets, in the same order; their group counts may differ. Resampling unit: the pair
    (seed, reference set), drawn once and applied to both tables; groups are drawn per method. With
    ``paired=False`` the seeds and sets are drawn independently per table (an unpaired comparison, for
    contrast only). The denominator's mean must be positive (the metrics are distances). Where more than
    (1 − level)/2 of the resamples have a denominator ≤ 0 (an excess over a floor can be), ``high`` is +inf: the
    data bound the ratio from below only.
    """
    _check_level(level, resamples)
    top, bottom = as_table(numerator, "numerator"), as_table(denominator, "denominator")
    if top.shape[0] != bottom.shape[0] or top.shape[2] != bottom.shape[2]:
        raise UserError(
            f"the two tables must share seeds and reference sets: (seeds, groups, sets) "
            f"{top.shape} against {bottom.shape}"
        )
    if not bottom.mean() > 0.0:
        raise UserError(f"the denominator's mean is {bottom.mean():.4g}; a ratio needs a positive denominator")
    rng = np.random.default_rng(seed)
    num_seeds, num_sets = top.shape[0], top.shape[2]

    def draw() -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(num_seeds, size=(resamples, num_seeds)), rng.integers(num_sets, size=(resamples, num_sets))

    top_units = draw()
    bottom_units = top_units if paired else draw()
    top_means = _resampled_means(top, *top_units, rng)
    bottom_means = _resampled_means(bottom, *bottom_units, rng)
    # A resample whose denominator is not positive has no ratio; with distances this does not happen.
    ratios = np.where(bottom_means > 0.0, top_means / np.where(bottom_means > 0.0, bottom_means, 1.0), math.inf)
    return _percentiles(top.mean() / bottom.mean(), ratios, level)


def difference_table(values: ArrayLike, floor: ArrayLike) -> np.ndarray:
    """Each cell of a (…, groups, sets) table minus the mean of a floor table over its groups, reference set by
    reference set: the excess over the real-against-real floor, paired by reference set. ``floor`` is
    (floor groups, sets) and shares the reference sets (last axis) with ``values``."""
    table = np.asarray(values, dtype=np.float64)
    base = np.asarray(floor, dtype=np.float64)
    if base.ndim != 2 or table.shape[-1] != base.shape[-1]:
        raise UserError(
            f"the floor table {base.shape} must be (groups, reference sets) with the table's "
            f"{table.shape[-1]} reference sets"
        )
    return table - base.mean(axis=0)
