"""Samplers: grids, NFE accounting, and end-to-end correctness with exact scores."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.circular import wrapped_normal_log_prob
from kuramoto_diffusion.config import image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, EuclideanVPProcess, KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.sampling.grids import rho_step_grid, step_grid
from kuramoto_diffusion.sampling.steps import SAMPLERS, Sampler, intervals_for_nfe, langevin_corrector_step
from kuramoto_diffusion.sampling.sweep import reverse_sweep, sweep_grid


def test_step_grid():
    assert step_grid(100, 100) == list(range(100, -1, -1))
    grid = step_grid(1000, 10)
    assert grid[0] == 1000 and grid[-1] == 0 and len(grid) == 11
    assert all(a > b for a, b in zip(grid, grid[1:]))
    assert step_grid(5, 50) == [5, 4, 3, 2, 1, 0]  # never more intervals than steps
    assert intervals_for_nfe("ode-heun", 9) == 5 and intervals_for_nfe("sde", 9) == 9
    with pytest.raises(UserError, match="valid values are sde, ode, ode-heun, pc"):
        intervals_for_nfe("ddim", 10)
    with pytest.raises(UserError):
        step_grid(0, 3)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_on_an_untrained_model(sampler):
    model = DiffusionModel(image_model_config(KuramotoConfig(coupling="local", neighbourhood=3), 1, 8, "tiny"))
    result = model.sample(
        5, sampler=sampler, nfe=9, batch_size=3, generator=torch.Generator().manual_seed(0), record_trajectory=True
    )
    assert result.states.shape == (5, 1, 8, 8)
    assert result.states.min() >= -math.pi and result.states.max() < math.pi
    # Per sample, whatever the number of batches; pc spends 2 per interval (corrector + predictor): 4 × 2.
    assert result.function_evaluations == (8 if sampler == "pc" else 9)
    assert len(result.trajectory) == len(result.steps) == len(result.order_parameter)
    images, _ = model.decode(result.states)
    assert images.min() >= -1 and images.max() <= 1


def test_same_seed_same_samples():
    model = DiffusionModel(image_model_config(KuramotoConfig(), 1, 8, "tiny"))
    a = model.sample(3, nfe=5, generator=torch.Generator().manual_seed(7)).states
    b = model.sample(3, nfe=5, generator=torch.Generator().manual_seed(7)).states
    c = model.sample(3, nfe=5, generator=torch.Generator().manual_seed(8)).states
    assert torch.equal(a, b) and not torch.equal(a, c)


# ----- exact scores: samplers must recover the data distribution --------------------------------
def _gaussian_score(process: EuclideanVPProcess, mean: float, var: float):
    def score(x, t):
        alpha_bar = math.exp(-float(process._cumulative_beta[t]))
        return -(x - math.sqrt(alpha_bar) * mean) / (alpha_bar * var + 1 - alpha_bar)

    return score


RHO_SDE, RHO_HEUN = Sampler("sde", grid="rho"), Sampler("ode-heun", grid="rho")


@pytest.mark.parametrize(
    "sampler,nfe,tolerance",
    [
        ("sde", 100, 0.1),
        ("sde", 25, 0.1),
        ("ode", 100, 0.15),
        ("ode-heun", 51, 0.3),
        ("pc", 100, 0.1),
        (Sampler("pc", corrector_steps=2, snr=0.1), 60, 0.1),
        (RHO_SDE, 50, 0.2),
        (RHO_HEUN, 51, 0.1),
    ],
    ids=["sde", "sde25", "ode", "heun", "pc", "pc2", "sde50-rho", "heun51-rho"],
)
def test_euclidean_samplers_recover_gaussian_data_with_exact_score(sampler, nfe, tolerance):
    # The ODE's last interval jumps from σ(t₁) to 0, which is coarse for narrow data at T = 100:
    # hence the looser variance tolerance of the deterministic samplers (a missing ½ is far outside it).
    process = EuclideanVPProcess(steps=100)
    mean, var = 0.3, 0.04
    prior = process.prior_sample((20000, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = reverse_sweep(
        process,
        _gaussian_score(process, mean, var),
        prior,
        sampler=sampler,
        nfe=nfe,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.states.mean().item() == pytest.approx(mean, abs=0.01)
    assert result.states.var().item() == pytest.approx(var, rel=tolerance)


def _mixture_score(process: KuramotoProcess, centres: list[float], width: float):
    """Exact score of wrapped Brownian motion (K = 0) started from a wrapped-normal mixture."""
    cumulative = process._cumulative_noise_var

    def score(x, t):
        scale = math.sqrt(width**2 + float(cumulative[t]))
        y = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            log_p = torch.logsumexp(torch.stack([wrapped_normal_log_prob(y, c, scale) for c in centres]), 0)
            (grad,) = torch.autograd.grad(log_p.sum(), y)
        return grad

    return score


@pytest.mark.parametrize(
    "sampler,nfe",
    [
        ("sde", 100),
        ("ode", 100),
        ("ode-heun", 51),
        ("sde", 20),
        ("pc", 40),
        (RHO_SDE, 20),
        (RHO_HEUN, 21),
        ("sde-heun", 19),
        ("sde-heun", 99),
    ],
    ids=["sde", "ode", "heun", "sde20", "pc40", "sde20-rho", "heun21-rho", "sde-heun19", "sde-heun99"],
)
def test_torus_samplers_recover_a_mixture_with_exact_score(sampler, nfe):
    # No coupling and no reference pull: the forward process is wrapped Brownian motion, whose
    # marginals are wrapped normals of the data mixture, so the exact score is known. The mixture
    # straddles the seam (centre at 3.0 rad) to test wrapping.
    process = KuramotoProcess(KuramotoConfig(coupling="global", ref_strength=0.0, coupling_range=(0.0, 0.0), steps=100))
    centres, width = [-1.0, 3.0], 0.15
    generator = torch.Generator().manual_seed(0)
    count = 20000
    component = torch.randint(0, 2, (count, 1), generator=generator)
    x0 = torch.tensor(centres, dtype=torch.float64)[component] + width * torch.randn(
        count, 1, generator=generator, dtype=torch.float64
    )
    x_end = process.simulate(x0, 100, generator=generator)
    result = reverse_sweep(
        process,
        _mixture_score(process, centres, width),
        x_end,
        sampler=sampler,
        nfe=nfe,
        generator=torch.Generator().manual_seed(1),
    )
    samples = result.states[:, 0]
    for centre in centres:
        near = torch.cos(samples - centre) > math.cos(4 * width)
        assert near.double().mean().item() == pytest.approx(0.5, abs=0.03)
        spread = torch.sqrt(-2 * torch.log(torch.cos(samples[near] - centre).mean())).item()
        assert spread == pytest.approx(width, rel=0.25 if nfe >= 50 else 0.5)


@pytest.mark.parametrize("nfe", [100, 20])
def test_euler_maruyama_on_vp_follows_the_gaussian_moment_recursion(nfe):
    # With Gaussian data the exact score is linear in x, so each Euler–Maruyama step of the reverse
    # VP-SDE is x ← a·x + b + √B·z with B = ∫β over the interval: mean and variance of the samples
    # follow a recursion computed here from β alone. At T = 100 it visibly misses the data variance
    # (first order in β·dt), which is why "sde" is DDPM's ancestral step instead.
    process = EuclideanVPProcess(steps=100)
    mean, var = 0.3, 0.04
    count = 200_000
    prior = process.prior_sample((count, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = reverse_sweep(
        process,
        _gaussian_score(process, mean, var),
        prior,
        sampler="euler-maruyama",
        nfe=nfe,
        generator=torch.Generator().manual_seed(1),
    )
    cumulative = process._cumulative_beta.double()
    grid = step_grid(100, nfe)
    assert result.steps == grid and result.function_evaluations == len(grid) - 1
    m, v = prior.mean().item(), prior.var().item()
    for upper, lower in zip(grid[:-1], grid[1:]):
        interval_beta = float(cumulative[upper] - cumulative[lower])
        alpha_bar = math.exp(-float(cumulative[upper]))
        marginal_var = alpha_bar * var + 1 - alpha_bar
        slope = 1 + 0.5 * interval_beta - interval_beta / marginal_var
        m = slope * m + interval_beta * math.sqrt(alpha_bar) * mean / marginal_var
        v = slope**2 * v + (interval_beta if lower > 0 else 0.0)
    samples = result.states[:, 0]
    assert samples.mean().item() == pytest.approx(m, abs=4 * math.sqrt(v / count))
    assert samples.var().item() == pytest.approx(v, rel=0.02)
    assert abs(v - var) > 0.05 * var  # the recursion itself is off the data at this T: the test can tell


def test_euler_maruyama_recovers_gaussian_data_at_t1000():
    process = EuclideanVPProcess(steps=1000)
    mean, var = 0.3, 0.04
    prior = process.prior_sample((20000, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = reverse_sweep(
        process,
        _gaussian_score(process, mean, var),
        prior,
        sampler="euler-maruyama",
        generator=torch.Generator().manual_seed(1),
    )
    assert result.states.mean().item() == pytest.approx(mean, abs=0.01)
    assert result.states.var().item() == pytest.approx(var, rel=0.1)


def test_euler_maruyama_is_the_sde_step_on_the_torus():
    # The Kuramoto chain is the Euler scheme of its SDE, so the two samplers are one formula there.
    model = DiffusionModel(image_model_config(KuramotoConfig(coupling="local", neighbourhood=3), 1, 8, "tiny"))
    a = model.sample(4, sampler="sde", nfe=7, generator=torch.Generator().manual_seed(3)).states
    b = model.sample(4, sampler="euler-maruyama", nfe=7, generator=torch.Generator().manual_seed(3)).states
    assert torch.allclose(a, b, atol=1e-6)


def test_sample_images_returns_pil_images_of_the_right_size():
    model = DiffusionModel(image_model_config(KuramotoConfig(), 1, 8, "tiny"))
    pictures = model.sample_images(3, nfe=4, generator=torch.Generator().manual_seed(0))
    assert len(pictures) == 3 and pictures[0].size == (8, 8) and pictures[0].mode == "L"


def test_clip_denoised_is_tweedie_with_the_clipped_estimate():
    process = EuclideanVPProcess(EuclideanConfig(steps=100, clip_denoised=True))
    plain = EuclideanVPProcess(EuclideanConfig(steps=100))
    x = torch.randn(2000, dtype=torch.float64) * 2
    score = torch.randn(2000, dtype=torch.float64) * 5
    assert torch.equal(plain.constrain_score(x, 40, score), score)  # off by default
    abar = math.exp(-float(process._cumulative_beta[40]))
    tweedie = lambda s: (x + (1 - abar) * s) / math.sqrt(abar)  # noqa: E731 - E[x₀ | x_t] for VP
    constrained = process.constrain_score(x, 40, score)
    assert torch.allclose(tweedie(constrained), tweedie(score).clamp(-1, 1), atol=1e-12)
    inside = tweedie(score).abs() < 1
    assert inside.any() and torch.allclose(constrained[inside], score[inside], atol=1e-9)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_clip_denoised_keeps_samples_of_a_bad_score_in_range(sampler):
    # A score that pushes outward (a badly trained network): samples fly far out without the clip
    # and end in [-1, 1] with it (the last ancestral or DDIM step lands on the clipped x₀).
    bad_score = lambda x, t: x * 3.0  # noqa: E731
    results = {}
    for clip in (False, True):
        process = EuclideanVPProcess(EuclideanConfig(steps=50, clip_denoised=clip))
        prior = process.prior_sample((500, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        score_fn = lambda x, t, process=process: process.constrain_score(x, t, bad_score(x, t))  # noqa: E731
        results[clip] = reverse_sweep(
            process, score_fn, prior, sampler=sampler, nfe=20, generator=torch.Generator().manual_seed(1)
        ).states
    assert results[False].abs().max() > 5
    assert results[True].abs().max() <= 1 + 1e-9


# ----- time grids and the corrector ----------------------------------------------------------------
@pytest.mark.parametrize(
    "process",
    [
        KuramotoProcess(KuramotoConfig(steps=100)),
        EuclideanVPProcess(steps=100),
        KuramotoProcess(KuramotoConfig(steps=1000)),
    ],
    ids=["kuramoto", "vp", "kuramoto-T1000"],
)
@pytest.mark.parametrize("intervals", [1, 2, 5, 10, 25, 60])
def test_rho_grid_is_the_nearest_step_to_each_rho_spaced_level(process, intervals):
    start, rho = process.steps, 7.0
    grid = rho_step_grid(process, start, intervals, rho)
    assert grid[0] == start and grid[-1] == 0 and len(grid) == intervals + 1
    assert all(upper > lower for upper, lower in zip(grid, grid[1:]))
    levels = [process.noise_level(t) for t in range(start + 1)]
    assert all(a < b for a, b in zip(levels[1:], levels[2:]))  # a level that grows with t
    if intervals > 1:
        assert grid[-2] == 1
    # Brute force, in float64: where the kept-decreasing rule did not intervene, each step is the
    # one whose level is nearest to EDM's ρ-spaced target.
    high, low = levels[start] ** (1 / rho), levels[1] ** (1 / rho)
    for index in range(1, intervals):
        target = (high + index / (intervals - 1) * (low - high)) ** rho
        nearest = min(range(1, start + 1), key=lambda t: abs(levels[t] - target))
        if nearest < grid[index - 1] and nearest >= intervals - index:
            assert grid[index] == nearest, (index, grid)


def test_rho_grid_with_every_step_is_the_uniform_grid_and_noise_levels_are_the_processes():
    kuramoto, vp = KuramotoProcess(KuramotoConfig(steps=50)), EuclideanVPProcess(steps=50)
    assert rho_step_grid(kuramoto, 50, 50, 7.0) == step_grid(50, 50) == list(range(50, -1, -1))
    assert sweep_grid(kuramoto, Sampler("ode", grid="rho"), 80) == step_grid(50, 50)
    assert kuramoto.noise_level(30) == pytest.approx(math.sqrt(float(kuramoto.noise_variance(0, 30))), rel=1e-12)
    abar = math.exp(-float(vp._cumulative_beta[30]))
    assert vp.noise_level(30) == pytest.approx(math.sqrt((1 - abar) / abar), rel=1e-12)


def test_pc_counts_its_corrector_evaluations():
    process = KuramotoProcess(KuramotoConfig(steps=40))
    calls = []

    def score(x, t):
        calls.append(t)
        return -torch.sin(x)

    prior = process.prior_sample((6, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = reverse_sweep(
        process,
        score,
        prior,
        sampler=Sampler("pc", corrector_steps=3),
        nfe=40,
        generator=torch.Generator().manual_seed(1),
    )
    assert result.steps == step_grid(40, 10)  # 10 intervals of 1 corrector... ×3 + 1 predictor
    assert result.function_evaluations == len(calls) == 40
    # Each grid step is corrected 3 times, then predicted from: four queries at every step but 0.
    assert calls == [t for t in result.steps[:-1] for _ in range(4)]
    assert intervals_for_nfe(Sampler("pc"), 3) == 1 and intervals_for_nfe("pc", 100) == 50


def test_langevin_corrector_step_is_score_sdes_formula():
    process = KuramotoProcess(KuramotoConfig(steps=10))
    x = torch.tensor([[3.0, -2.0, 0.5], [0.1, 0.2, 0.3]], dtype=torch.float64)
    score = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    stepped = langevin_corrector_step(process, x, score, 0.2, torch.Generator().manual_seed(3))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    epsilon = 2 * 0.2**2 * sum(float(z) ** 2 for z in noise.flatten()) / sum(float(g) ** 2 for g in score.flatten())
    drift = epsilon * score  # snr times the noise in root-mean-square size:
    assert float(drift.square().mean().sqrt()) == pytest.approx(
        0.2 * float((math.sqrt(2 * epsilon) * noise).square().mean().sqrt()), rel=1e-12
    )
    expected = torch.remainder(x + drift + math.sqrt(2 * epsilon) * noise + math.pi, 2 * math.pi) - math.pi
    assert torch.allclose(stepped, expected, atol=1e-12)
    assert torch.equal(langevin_corrector_step(process, x, torch.zeros_like(x), 0.2), x)  # a zero score: no step


def test_langevin_corrector_alone_samples_its_target_on_the_circle():
    # Many corrector steps with the exact score of a wrapped normal N(2.8, 0.4²) (near the seam) from
    # a uniform start: the chain's stationary law is the target, up to the O(ε) discretisation bias.
    process = KuramotoProcess(KuramotoConfig(steps=10))
    centre, width = 2.8, 0.4
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(8000, 1, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi

    def score(state):
        y = state.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(wrapped_normal_log_prob(y, centre, width).sum(), y)
        return grad

    for _ in range(400):  # at the target ε ≈ 2·0.15²·σ² ≈ 0.007 (smaller from the spread-out start); bias ≈ 1 % in σ
        x = langevin_corrector_step(process, x, score(x), 0.15, generator)
    resultant = torch.exp(1j * (x[:, 0] - centre)).mean()
    assert abs(float(torch.angle(resultant))) < 0.02
    spread = math.sqrt(-2 * math.log(float(resultant.abs())))
    assert spread == pytest.approx(width, rel=0.03)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"name": "ode", "corrector_steps": 2}, "the ode sampler has no corrector"),
        ({"name": "sde", "snr": 0.1}, "the sde sampler has no corrector"),
        ({"name": "pc", "snr": 0.0}, r"snr must be a finite number > 0, got 0\.0"),
        ({"name": "pc", "snr": -1.0}, "snr must be a finite number > 0"),
        ({"name": "pc", "corrector_steps": 0}, "corrector steps must be an integer ≥ 1"),
        ({"name": "sde", "grid": "log"}, "unknown time grid 'log'; valid values are uniform, rho"),
        ({"name": "sde", "grid": "rho", "rho": 0.0}, "rho must be a finite number > 0"),
        ({"name": "euler"}, "unknown sampler 'euler'; valid values are sde, ode, ode-heun, pc"),
    ],
)
def test_bad_sampler_settings_are_one_line_errors(settings, message):
    with pytest.raises(UserError, match=message):
        Sampler(**settings)


def test_seam_crossings_are_the_jumps_across_pi_between_grid_steps():
    model = DiffusionModel(image_model_config(KuramotoConfig(coupling="local", neighbourhood=3), 1, 8, "tiny"))
    result = model.sample(6, nfe=20, batch_size=4, generator=torch.Generator().manual_seed(0), record_trajectory=True)
    # Brute force from the recorded states: a wrapped state that moved by more than π passed ±π.
    expected = [
        int(((after - before).abs() > math.pi).sum()) for before, after in zip(result.trajectory, result.trajectory[1:])
    ]
    assert result.seam_crossings == expected and len(expected) == 20
    assert sum(expected) > 0  # the prior's spread phases do cross early on
    euclidean = DiffusionModel(image_model_config(EuclideanConfig(), 1, 8, "tiny"))
    assert euclidean.sample(2, nfe=3).seam_crossings == []
