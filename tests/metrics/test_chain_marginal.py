"""The grid marginal of the discrete Kuramoto chain on the 2-torus (metrics/chain_marginal.py): mass, start,
agreement with simulated chains, the score against finite differences and a closed form, grid refinement."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.circular import wrapped_normal_log_prob
from kuramoto_diffusion.data.torus import WrappedNormalMixture, open_torus_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.chain_marginal import ChainMarginal
from kuramoto_diffusion.metrics.density import sample_histogram
from kuramoto_diffusion.processes import KuramotoConfig
from kuramoto_diffusion.processes.kuramoto import KuramotoProcess

DATA = open_torus_source("wrapped-mixture")


def _process(steps: int, **settings: object) -> KuramotoProcess:
    return KuramotoProcess(KuramotoConfig(coupling="global", steps=steps, **settings))


def _brownian(steps: int) -> KuramotoProcess:
    """No coupling and no reference pull: wrapped Brownian motion, whose marginals are known in closed form."""
    return _process(steps, coupling_range=(0.0, 0.0), ref_strength=0.0)


def _brownian_marginal(process: KuramotoProcess, t: int) -> WrappedNormalMixture:
    """p_t of wrapped Brownian motion from the wrapped-normal mixture: each component's variance + Σσ²."""
    added = float(process.noise_variance(0, t)) if t else 0.0
    scales = (DATA.scales**2 + added).sqrt()
    return WrappedNormalMixture(DATA.means.tolist(), scales.tolist(), DATA.weights.tolist())


def _autograd_score(density: WrappedNormalMixture, points: torch.Tensor) -> torch.Tensor:
    x = points.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(density.log_prob(x).sum(), x)
    return gradient


def _weighted_relative_error(weights: torch.Tensor, value: torch.Tensor, truth: torch.Tensor) -> float:
    """sqrt(Σ w |value − truth|² / Σ w |truth|²) over the nodes, vectors on the last axis."""
    weights = weights.reshape(-1).clamp_min(0.0)
    value, truth = value.reshape(weights.shape[0], -1), truth.reshape(weights.shape[0], -1)
    return math.sqrt(float((weights * (value - truth).square().sum(1)).sum() / (weights * truth.square().sum(1)).sum()))


@pytest.fixture(scope="module")
def short_chain() -> ChainMarginal:
    return ChainMarginal(_process(20), DATA, 64)


@pytest.fixture(scope="module")
def paper_chain() -> ChainMarginal:
    """The T = 100 chain of the paper's schedule, all steps kept, at G = 64."""
    return ChainMarginal(_process(100), DATA, 64)


def test_mass_is_conserved_at_every_step(short_chain):
    assert short_chain.times == list(range(21))
    for t in short_chain.times:
        assert abs(float(short_chain.masses(t).sum()) - 1.0) < 1e-10
        assert abs(float(short_chain.cell_probabilities(t, 16).sum()) - 1.0) < 1e-12
    # The chain moves: the marginal at T is far from the data's.
    assert float((short_chain.density(20) - short_chain.density(0)).abs().max()) > 0.1


def test_starts_at_the_data_density(short_chain):
    nodes = short_chain.points
    expected = torch.exp(DATA.log_prob(nodes)).reshape(64, 64)
    torch.testing.assert_close(short_chain.density(0), expected, rtol=1e-12, atol=0.0)
    # Exact integration of the nodes' trigonometric interpolant reproduces the exact cell masses.
    torch.testing.assert_close(short_chain.cell_probabilities(0, 16), DATA.cell_probabilities(16), rtol=0, atol=1e-12)


def test_kernel_rows_are_the_normalised_wrapped_normal(short_chain):
    means = short_chain.process.transition_mean(short_chain.points, 10)[:, 1]
    for scale in (0.12, 0.4, 2.0):
        kernel = short_chain.kernel_matrix(means, scale)
        scale_t = torch.tensor(scale, dtype=torch.float64)
        reference = torch.exp(wrapped_normal_log_prob(short_chain.nodes[None, :], means[:, None], scale_t))
        torch.testing.assert_close(kernel, reference / reference.sum(1, keepdim=True), rtol=0, atol=1e-14)


def test_simulated_chains_have_the_grid_cell_masses(paper_chain):
    process = paper_chain.process
    generator = torch.Generator().manual_seed(0)
    num, bins = 200_000, 16
    x = DATA.sample(num, generator, dtype=torch.float64)
    previous, largest, chi_square = 0, {}, {}
    for t in (5, 30, 100):
        x = process.simulate(x, t, generator=generator, t_start=previous)
        previous = t
        counts = sample_histogram(x, bins)
        for t_grid in {t, 5}:
            expected = num * paper_chain.cell_probabilities(t_grid, bins)
            z = (counts - expected) / (expected * (1 - expected / num)).sqrt()
            filled = (
                expected >= 20
            )  # where the count is nearly normal; emptier cells are Poisson with huge |z| for one count
            largest[(t, t_grid)] = float(z[filled].abs().max())
            chi_square[(t, t_grid)] = (float(z[filled].square().sum()), int(filled.sum()))
    for t in (5, 30, 100):
        assert largest[(t, t)] < 5.0, largest  # within Monte-Carlo error, every filled cell
        value, cells = chi_square[(t, t)]
        assert value < cells + 5 * math.sqrt(2 * cells), chi_square
    # The check has power: the marginal at t = 5 is rejected for the samples at t = 30 and 100.
    assert largest[(30, 5)] > 20.0 and largest[(100, 5)] > 20.0, largest


def test_score_agrees_with_finite_differences(short_chain):
    h = short_chain.cell_width
    for t in (1, 10, 20):
        log_p = short_chain.log_density(t)
        central = torch.stack([(log_p.roll(-1, axis) - log_p.roll(1, axis)) / (2 * h) for axis in (0, 1)], dim=-1)
        # Central differences are O(h²): measured 8.9e-3, 2.9e-3, 1.5e-3 (p-weighted relative L2) at G = 64.
        assert _weighted_relative_error(short_chain.masses(t), central, short_chain.score(t)) < 0.02


@pytest.mark.parametrize(("steps", "grid", "t_max", "tolerance"), [(100, 80, 100, 2e-6), (1000, 96, 40, 1e-8)])
def test_score_matches_closed_form_of_wrapped_brownian_motion(steps, grid, t_max, tolerance):
    # T = 1000, t ≤ 40: σ_t = 0.003 … 0.02, far below the cell width 0.065 (the regime where sampling the kernel
    # at the nodes alone loses drift and noise: see the next test). T = 100 at G = 80: the band limit G/3 of the
    # widened first steps costs 4e-7 at t = 1 (measured), rounding-level errors after.
    process = _brownian(steps)
    chain = ChainMarginal(process, DATA, grid, t_max=t_max)
    generator = torch.Generator().manual_seed(0)
    for t in sorted({1, 5, t_max // 2, t_max}):
        truth = _brownian_marginal(process, t)
        exact = _autograd_score(truth, chain.points)
        assert _weighted_relative_error(chain.masses(t), chain.score(t), exact) < tolerance, t
        expected_p = torch.exp(truth.log_prob(chain.points)).reshape(grid, grid)
        assert float((chain.density(t) - expected_p).abs().max() / expected_p.max()) < tolerance, t
        # Off the grid, at exact samples of p_t: cubic B-spline interpolation of the grid score and of log p_t
        # (measured ≤ 4e-4 relative RMS and ≤ 4e-6 nats mean at T = 100, G = 80; bilinear: 5e-3 and 8e-3).
        points = truth.sample(4000, generator, dtype=torch.float64)
        exact_at = _autograd_score(truth, points)
        error = ((chain.score_at(t, points) - exact_at).square().sum(1).mean() / exact_at.square().sum(1).mean()).sqrt()
        assert float(error) < 2e-3, t
        assert float((chain.log_density_at(t, points) - truth.log_prob(points)).abs().mean()) < 1e-4, t
        bilinear = chain.score_at(t, points, order=1)
        assert float(((bilinear - exact_at).square().sum(1).mean() / exact_at.square().sum(1).mean()).sqrt()) < 2e-2, t


def test_plain_node_kernel_fails_where_sigma_is_below_the_cell():
    # Without widening, the kernel sampled at the nodes collapses onto the nearest node when σ_t ≪ h.
    process = _brownian(1000)
    chain = ChainMarginal(process, DATA, 64, t_max=25, widen=0.0)
    truth = _brownian_marginal(process, 25)
    exact = _autograd_score(truth, chain.points)
    assert _weighted_relative_error(chain.masses(25), chain.score(25), exact) > 1e-2


def test_refining_the_grid_does_not_change_the_marginal(paper_chain):
    bins = 24  # a common grid for all resolutions: exact cell masses of each trigonometric interpolant
    coarse = ChainMarginal(_process(100), DATA, 48, keep=[1, 100])
    fine = ChainMarginal(_process(100), DATA, 96, keep=[1, 100])

    def kl(p: torch.Tensor, q: torch.Tensor) -> float:
        return float((p * (p.log() - q.clamp_min(1e-300).log())).sum())

    reference = {t: fine.cell_probabilities(t, bins) for t in (1, 100)}
    # Measured: KL ≈ 1e-16 (rounding) between G = 64, 96, 128 and 192 at t = T; 6e-8 for G = 64 at t = 1.
    assert kl(reference[100], paper_chain.cell_probabilities(100, bins)) < 1e-12
    assert kl(reference[100], coarse.cell_probabilities(100, bins)) < 1e-10
    assert kl(reference[1], paper_chain.cell_probabilities(1, bins)) < 1e-6
    # The coarse grid is measurably different at t = 1 (its band limit cuts the narrowest component).
    assert kl(reference[1], coarse.cell_probabilities(1, bins)) > kl(
        reference[1], paper_chain.cell_probabilities(1, bins)
    )


def test_keep_stores_only_the_requested_steps():
    chain = ChainMarginal(_process(20), DATA, 32, keep=[0, 7, 20])
    assert chain.times == [0, 7, 20]
    assert chain.density(7).shape == (32, 32)
    with pytest.raises(UserError, match="step 8 is not stored"):
        chain.density(8)
    with pytest.raises(UserError, match="outside"):
        ChainMarginal(_process(20), DATA, 32, keep=[21])


def test_local_coupling_is_a_one_line_user_error():
    with pytest.raises(UserError) as caught:
        ChainMarginal(KuramotoProcess(KuramotoConfig(coupling="local")), DATA, 32)
    message = str(caught.value)
    assert "global coupling" in message and "\n" not in message
