"""The prior gap (metrics/prior_gap.py): the MMD against a brute-force sum, and cases with known answers (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kuramoto_diffusion.circular import von_mises_sample, wrap
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.prior_gap import _mmd2_from_kernel, image_features, mmd_test, prior_gap


def _brute_force_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float) -> float:
    def k(a: torch.Tensor, b: torch.Tensor) -> float:
        return math.exp(-float(((a - b) ** 2).sum()) / (2 * bandwidth**2))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_the_mmd_is_the_unbiased_u_statistic():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(5, 3, generator=generator, dtype=torch.float64) + 0.5
    pooled = torch.cat([x, y])
    kernel = torch.exp(-torch.cdist(pooled, pooled).square() / (2 * 1.3**2))
    first = torch.arange(12) < 7
    assert float(_mmd2_from_kernel(kernel, first)) == pytest.approx(_brute_force_mmd2(x, y, 1.3), rel=1e-12)
    # batched masks give each split's value
    swapped = torch.arange(12) >= 5
    both = _mmd2_from_kernel(kernel, torch.stack([first, swapped]))
    assert float(both[1]) == pytest.approx(_brute_force_mmd2(pooled[~swapped], pooled[swapped], 1.3), rel=1e-12)


def test_the_mmd_of_one_distribution_is_about_zero_and_its_p_values_are_not_small():
    generator = torch.Generator().manual_seed(1)
    values, p_values = [], []
    for _ in range(20):
        x = torch.randn(60, 4, generator=generator, dtype=torch.float64)
        y = torch.randn(60, 4, generator=generator, dtype=torch.float64)
        mmd2, p = mmd_test(x, y, permutations=99, generator=generator)
        values.append(mmd2)
        p_values.append(p)
    spread = torch.tensor(values).std() / math.sqrt(len(values))
    assert abs(sum(values) / len(values)) < 3 * spread  # unbiased: centred on 0
    assert sum(p < 0.05 for p in p_values) <= 4  # about 1 in 20 under the null
    shifted_p = mmd_test(
        torch.randn(60, 4, generator=generator, dtype=torch.float64),
        torch.randn(60, 4, generator=generator, dtype=torch.float64) + 1.0,
        99,
        generator,
    )[1]
    assert shifted_p == pytest.approx(1 / 100)


def test_identical_laws_show_no_gap():
    generator = torch.Generator().manual_seed(2)
    first = von_mises_sample((96, 1, 16, 16), 0.2, 1.5, generator=generator, dtype=torch.float64)
    second = von_mises_sample((96, 1, 16, 16), 0.2, 1.5, generator=generator, dtype=torch.float64)
    gap = prior_gap(first, second, ref_phase=0.2, generator=generator)
    assert gap.correlation_gap < 0.02 and gap.order_gap < 0.02 and gap.spread_gap < 0.02
    assert gap.p_value > 0.01 and gap.passes
    # i.i.d. von Mises: cos(θ_p − θ_q) averages to A(κ)² at every distance
    a = torch.special.i1e(torch.tensor(1.5, dtype=torch.float64)) / torch.special.i0e(
        torch.tensor(1.5, dtype=torch.float64)
    )
    assert max(abs(c - float(a) ** 2) for c in gap.terminal_correlation) < 0.02


def test_iid_against_strongly_correlated_fields_is_a_large_gap():
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(96, 1, 16, 16, generator=generator, dtype=torch.float64)
    smooth = F.avg_pool2d(F.pad(noise, (3, 3, 3, 3), mode="circular"), 7, 1)
    correlated = wrap(2.0 * smooth / smooth.std())
    iid = von_mises_sample((96, 1, 16, 16), 0.0, 1.0, generator=generator, dtype=torch.float64)
    gap = prior_gap(correlated, iid, generator=generator)
    assert gap.correlation_gap > 0.2 and not gap.passes and gap.p_value == pytest.approx(1 / 201)
    assert gap.terminal_correlation[0] > gap.terminal_correlation[-1] + 0.2  # the smooth field's curve falls with d


def test_features_and_bad_inputs():
    theta = torch.zeros(3, 1, 12, 12, dtype=torch.float64)
    features = image_features(theta)
    assert features.shape == (3, 10) and torch.allclose(features, torch.ones_like(features))
    with pytest.raises(UserError, match="one shape"):
        prior_gap(theta, torch.zeros(3, 1, 10, 10))
    with pytest.raises(UserError, match="n, m ≥ 2"):
        mmd_test(torch.zeros(1, 2), torch.zeros(4, 2))


def test_auto_resolves_to_the_cheapest_prior_within_tolerance():
    import dataclasses

    from kuramoto_diffusion.metrics.prior_gap import PriorGap, resolve_prior
    from kuramoto_diffusion.processes import PriorFit

    def gap(prior: str, steps: int, passes: bool, mmd2: float) -> PriorGap:
        return PriorGap(prior, (1,), (0.0,), (0.0,), 0.0, (0.0, 0.0), (0.0, 0.0), 0.0, 0.0, mmd2, 0.5, passes, steps)

    report = PriorFit(1.0, 0.0, 0.5, (0.0, 0.0, 0.0), 0.0, 0.5)
    assert resolve_prior(report) == "von-mises"  # no gaps (flat states)
    three = (gap("von-mises", 0, False, 0.3), gap("relaxed", 200, True, 0.01), gap("forward-chain", 100, True, 0.02))
    assert resolve_prior(dataclasses.replace(report, gaps=three)) == "forward-chain"  # the cheaper of the two that pass
    none_pass = tuple(dataclasses.replace(g, passes=False) for g in three)
    assert resolve_prior(dataclasses.replace(report, gaps=none_pass)) == "relaxed"  # the smallest MMD²
