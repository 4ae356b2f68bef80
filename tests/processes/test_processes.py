"""Forward processes: coupling against brute force, kernels, schedules, terminal distributions, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from skimage import data as skdata

from kuramoto_diffusion.circular import fit_von_mises, image_to_phase, order_parameter, wrap, wrapped_normal_score
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.processes import (
    EuclideanVPProcess,
    KuramotoConfig,
    KuramotoProcess,
    build_process,
    cumulative_schedule,
)


def _reflect(i: int, n: int) -> int:
    """Index mapping of reflect padding (edge not repeated): -1 -> 1, n -> n-2."""
    while i < 0 or i >= n:
        i = -i if i < 0 else 2 * (n - 1) - i
    return i


def _brute_force_local_coupling(theta: torch.Tensor, weights: torch.Tensor, padding: str) -> torch.Tensor:
    batch, channels, height, width = theta.shape
    size = len(weights)
    before = (size - 1) // 2
    out = torch.zeros_like(theta)
    for b in range(batch):
        for c in range(channels):
            for i in range(height):
                for j in range(width):
                    total = 0.0
                    for a in range(size):
                        for e in range(size):
                            ii, jj = i + a - before, j + e - before
                            if padding == "circular":
                                ii, jj = ii % height, jj % width
                            else:
                                ii, jj = _reflect(ii, height), _reflect(jj, width)
                            total += weights[a] * weights[e] * math.sin(theta[b, c, ii, jj] - theta[b, c, i, j])
                    out[b, c, i, j] = total
    return out


@pytest.mark.parametrize("padding", ["reflect", "circular"])
@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("kernel", ["box", "gaussian"])
def test_local_coupling_equals_brute_force_mean_of_sines(padding, size, kernel):
    generator = torch.Generator().manual_seed(size)
    theta = (torch.rand(2, 2, 7, 6, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    process = KuramotoProcess(coupling="local", neighbourhood=size, padding=padding, kernel=kernel)
    if kernel == "box":
        weights = torch.full((size,), 1.0 / size, dtype=torch.float64)
    else:
        offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
        weights = torch.exp(-0.5 * (offsets / (size / 4)) ** 2)
        weights = weights / weights.sum()
    expected = _brute_force_local_coupling(theta, weights, padding)
    assert torch.allclose(process.coupling_field(theta), expected, atol=1e-12)


def test_global_coupling_equals_brute_force():
    theta = (torch.rand(3, 2, 4, 5, dtype=torch.float64) * 2 - 1) * math.pi
    process = KuramotoProcess(coupling="global")
    flat = theta.reshape(3, -1)
    expected = torch.sin(flat[:, None, :] - flat[:, :, None]).mean(-1).reshape(theta.shape)
    assert torch.allclose(process.coupling_field(theta), expected, atol=1e-12)
    # Global coupling also works on flat (batch, dims) torus data.
    assert torch.allclose(process.coupling_field(flat), expected.reshape(3, -1), atol=1e-12)


@pytest.mark.parametrize("coupling", ["global", "local"])
def test_coupling_vanishes_on_synchronised_field(coupling):
    theta = torch.full((2, 1, 8, 8), 2.7, dtype=torch.float64)
    process = KuramotoProcess(coupling=coupling)
    assert process.coupling_field(theta).abs().max() < 1e-14


@pytest.mark.parametrize("coupling", ["global", "local"])
def test_rotation_equivariance_without_reference(coupling):
    theta = (torch.rand(2, 1, 9, 9, dtype=torch.float64) * 2 - 1) * math.pi
    process = KuramotoProcess(coupling=coupling, ref_strength=0.0, padding="circular")
    rotated = wrap(theta + 1.234)
    assert torch.allclose(process.direction(rotated), process.direction(theta), atol=1e-12)
    a = process.step(theta, 10, generator=torch.Generator().manual_seed(0))
    b = process.step(rotated, 10, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.cos(wrap(a + 1.234) - b), torch.ones_like(a), atol=1e-12)
    # With the reference pull switched on, the symmetry is broken (the test can fail).
    pulled = KuramotoProcess(coupling=coupling, padding="circular")
    assert not torch.allclose(pulled.direction(rotated), pulled.direction(theta), atol=1e-6)


def test_transition_score_is_the_wrapped_normal_score_of_the_step():
    process = KuramotoProcess(coupling="local", neighbourhood=3)
    theta = (torch.rand(2, 1, 6, 6, dtype=torch.float64) * 2 - 1) * math.pi
    theta_next = (torch.rand(2, 1, 6, 6, dtype=torch.float64) * 2 - 1) * math.pi
    for t, stride in [(0, 1), (57, 1), (99, 1), (40, 10)]:
        coupling = _brute_force_local_coupling(theta, torch.full((3,), 1 / 3, dtype=torch.float64), "reflect")
        k = float(process.coupling_strength(t, stride))
        mean = wrap(theta + k * (coupling + 1.5 * torch.sin(-theta)))
        scale = float(process.transition_scale(t, stride))
        assert torch.allclose(process.transition_mean(theta, t, stride), mean, atol=1e-12)
        expected = wrapped_normal_score(theta_next, mean, scale)
        assert torch.allclose(process.transition_score(theta_next, theta, t, stride), expected, rtol=1e-10, atol=1e-10)


def test_paper_schedule_reproduces_authors_numbers_exactly():
    process = KuramotoProcess(schedule="paper-100", steps=100)
    k = torch.stack([process.coupling_strength(t) for t in range(100)])
    var = torch.stack([process.noise_variance(t) for t in range(100)])
    assert torch.allclose(k, torch.linspace(3e-5, 0.03, 100, dtype=torch.float64), rtol=1e-12, atol=0)
    assert torch.allclose(var, torch.linspace(1e-4, 0.1, 100, dtype=torch.float64), rtol=1e-12, atol=0)


@pytest.mark.parametrize("shape", ["linear", "paper-100"])
def test_schedule_totals_do_not_depend_on_step_count(shape):
    totals = [cumulative_schedule(shape, 1e-4, 0.1, steps)[-1].item() for steps in (10, 100, 300, 1000)]
    assert max(totals) - min(totals) < 1e-12
    fine = cumulative_schedule(shape, 1e-4, 0.1, 1000)
    coarse = cumulative_schedule(shape, 1e-4, 0.1, 100)
    assert torch.allclose(fine[::10], coarse, atol=1e-12)  # a stride of 10 fine steps is one coarse step
    assert (fine.diff() >= 0).all()


def _texture_phases(count: int, size: int, seed: int = 0) -> torch.Tensor:
    photo = torch.tensor(skdata.brick(), dtype=torch.float64) / 127.5 - 1
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, photo.shape[0] - size, (count,), generator=generator)
    cols = torch.randint(0, photo.shape[1] - size, (count,), generator=generator)
    crops = torch.stack([photo[r : r + size, c : c + size] for r, c in zip(rows, cols)])
    return image_to_phase(crops[:, None])


@pytest.mark.parametrize("coupling", ["global", "local"])
def test_paper_schedule_ends_near_fitted_von_mises(coupling):
    process = KuramotoProcess(coupling=coupling, schedule="paper-100")
    theta0 = _texture_phases(64, 16)
    fitted, report = process.fit_prior(theta0, generator=torch.Generator().manual_seed(0))
    # An independent simulation of other crops gives the same κ.
    terminal = process.simulate(_texture_phases(64, 16, seed=1), 100, generator=torch.Generator().manual_seed(1))
    _, kappa = fit_von_mises(terminal, loc=0.0)
    assert fitted.config.prior_concentration == pytest.approx(kappa, rel=0.1)
    assert abs(report.mean_direction) < 0.1
    assert max(report.moment_gaps) < 0.06
    assert 0.5 < report.concentration < 3.0
    # The terminal states are much more synchronised than the data, and the data's structure is gone.
    r0 = order_parameter(theta0)[0].mean()
    assert report.terminal_order_parameter > 0.3 and report.terminal_order_parameter != pytest.approx(
        float(r0), abs=0.02
    )


def test_euclidean_variance_matches_closed_form():
    process = EuclideanVPProcess(steps=100)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(20000, 4, generator=generator, dtype=torch.float64) * 2 - 1
    for t_end in (10, 50, 100):
        simulated = process.simulate(x0, t_end, generator=generator)
        expected = process.marginal_variance(t_end, 1 / 3)
        assert simulated.var().item() == pytest.approx(expected, rel=0.03)
    assert process.marginal_variance(100, 1.0) == pytest.approx(1.0)
    assert process.marginal_variance(100, 0.0) > 0.99  # the prior N(0, 1) is reached


def test_process_config_builds_the_right_process():
    assert isinstance(build_process(KuramotoConfig(coupling="local")), KuramotoProcess)
    with pytest.raises(TypeError):
        KuramotoProcess(KuramotoConfig(), coupling="local")


def test_bad_input_is_reported_clearly():
    process = KuramotoProcess(coupling="local", neighbourhood=5)
    good = torch.zeros(1, 1, 8, 8)
    with pytest.raises(UserError, match="NaN"):
        process.step(torch.full_like(good, float("nan")), 0)
    with pytest.raises(UserError, match="NaN or infinite"):
        process.simulate(torch.full_like(good, float("inf")), 3)
    with pytest.raises(UserError, match="batch, channels, height, width"):
        process.step(torch.zeros(8, 8, 8), 0)
    with pytest.raises(UserError, match="batch axis"):
        KuramotoProcess().step(torch.zeros(8), 0)
    with pytest.raises(UserError, match="larger than the 4×4 image"):
        process.step(torch.zeros(1, 1, 4, 4), 0)
    with pytest.raises(UserError, match="neighbourhood must be ≥ 1"):
        KuramotoProcess(coupling="local", neighbourhood=0)
    with pytest.raises(UserError, match="valid values are global, local"):
        KuramotoProcess(coupling="nearest")
    with pytest.raises(UserError, match="valid values are reflect, circular"):
        KuramotoProcess(padding="zeros")
    with pytest.raises(UserError, match="outside"):
        process.step(good, 100)
