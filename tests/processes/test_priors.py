"""The Kuramoto priors (processes/priors.py, issue 31 §4): float64 numerics against independent computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from kuramoto_diffusion.circular import von_mises_moment, von_mises_sample, wrap
from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.prior_gap import compare_priors, prior_gap
from kuramoto_diffusion.processes import KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.processes.priors import chain_start, fit_chain_start, relax
from kuramoto_diffusion.serialization import config_from_dict, config_to_dict

STRONG = {
    "coupling_range": (3e-4, 0.3),
    "ref_strength": 0.0,
}  # K × 10 of the default, no pull: ordered by coupling alone


def _smooth_images(seed: int, count: int = 64, side: int = 16) -> torch.Tensor:
    """Spatially correlated images in [-1, 1]: white noise averaged over 5×5 (circular), float64."""
    noise = torch.randn(count, 1, side, side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    smooth = F.avg_pool2d(F.pad(noise, (2, 2, 2, 2), mode="circular"), 5, 1)
    return (smooth / smooth.std()).clamp(-1, 1)


def _wrapped_normal_density(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Σ_k N(x + 2πk; mean, std²) over k = −4 … 4, written out (independent of circular.py)."""
    shifts = 2 * math.pi * torch.arange(-4, 5, dtype=torch.float64)
    z = (x[..., None] - mean[..., None] + shifts) / std
    return torch.exp(-0.5 * z**2).sum(-1) / (std * math.sqrt(2 * math.pi))


def test_relaxed_without_coupling_follows_the_exact_one_site_chain():
    """coupling 'none': each element is its own Markov chain; propagate its density on a grid (brute force)."""
    config = KuramotoConfig(
        coupling="none", prior="relaxed", prior_relax_steps=30, prior_concentration=0.4, ref_phase=0.5
    )
    process = KuramotoProcess(config)
    draws = process.prior_sample((200_000,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = torch.linspace(-math.pi, math.pi, 721, dtype=torch.float64)[:-1]
    cell = 2 * math.pi / len(grid)
    strength = float(process.coupling_strength(config.steps - 1))
    std = float(process.transition_scale(config.steps - 1))
    density = torch.exp(0.4 * torch.cos(grid - 0.5))
    density = density / (density.sum() * cell)
    means = grid + strength * config.ref_strength * torch.sin(0.5 - grid)
    kernel = _wrapped_normal_density(grid[None, :], means[:, None], std) * cell  # [from, to]
    for _ in range(30):
        density = density @ kernel
    for order in (1, 2):
        for trig in (torch.cos, torch.sin):
            expected = float((density * trig(order * grid)).sum() * cell)
            measured = float(trig(order * draws).mean())
            assert abs(measured - expected) < 4 / math.sqrt(len(draws)) + 1e-4, (order, trig, measured, expected)


def test_relaxed_without_coupling_reaches_the_closed_form_stationary_law():
    """Small steps, many of them: the Langevin sampler's law is von Mises(ψ_ref, 2Kκ_ref/σ²) up to O(step)."""
    config = KuramotoConfig(
        coupling="none",
        coupling_range=(3e-5, 0.003),
        noise_var_range=(1e-5, 0.01),
        ref_phase=-1.0,
        prior="relaxed",
        prior_relax_steps=3000,
    )
    process = KuramotoProcess(config)
    draws = process.prior_sample((20_000,), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    strength = float(process.coupling_strength(config.steps - 1))
    variance = float(process.noise_variance(config.steps - 1))
    kappa = 2 * strength * config.ref_strength / variance
    for order in (1, 2):
        measured = float(torch.cos(order * (draws + 1.0)).mean())
        assert abs(measured - von_mises_moment(order, kappa)) < 0.02, (order, measured, von_mises_moment(order, kappa))
    assert abs(float(torch.sin(draws + 1.0).mean())) < 0.02


def test_with_strong_coupling_the_relaxed_prior_is_far_closer_to_the_terminal_states():
    for coupling in ("local", "global"):
        process = KuramotoProcess(KuramotoConfig(coupling=coupling, **STRONG))
        _, report = compare_priors(
            process,
            ImageCodec.for_process(process).encode(_smooth_images(0)),
            torch.Generator().manual_seed(1),
            draws_generator=torch.Generator().manual_seed(2),
        )
        gaps = {gap.prior: gap for gap in report.gaps}
        assert not gaps["von-mises"].passes and gaps["von-mises"].correlation_gap > 0.1
        assert gaps["relaxed"].correlation_gap < 0.4 * gaps["von-mises"].correlation_gap
        assert gaps["relaxed"].mmd2 < 0.2 * gaps["von-mises"].mmd2
        assert [gap.chain_steps for gap in report.gaps] == [0, 200, 100]
    assert gaps["relaxed"].passes and gaps["forward-chain"].passes  # global: the terminal law is reached


def test_relaxing_draws_of_the_stationary_law_keeps_their_statistics():
    process = KuramotoProcess(KuramotoConfig(coupling="local", **STRONG))
    generator = torch.Generator().manual_seed(2)
    start = von_mises_sample((128, 1, 16, 16), 0.0, 1.0, generator=generator, dtype=torch.float64)
    stationary = relax(process, start, 1500, generator)
    further = relax(process, stationary, 200, generator)
    gap = prior_gap(stationary, further, generator=generator)
    assert gap.correlation_gap < 0.03 and gap.order_gap < 0.03 and gap.passes, gap
    # the same check sees a change: the unrelaxed start against the stationary draws
    assert not prior_gap(stationary, start, generator=generator).passes


def test_the_forward_chain_prior_draws_terminal_states_when_the_data_are_its_start():
    config = KuramotoConfig(
        coupling="local",
        prior="forward-chain",
        prior_start_phase=0.3,
        prior_start_concentration=4.0,
        prior_start_deviation=2.0,
        **STRONG,
    )
    process = KuramotoProcess(config)
    generator = torch.Generator().manual_seed(3)
    theta0 = chain_start(process, (96, 1, 16, 16), generator, torch.float64, None)
    terminal = process.simulate(theta0, process.steps, generator=generator)
    draws = process.prior_sample((96, 1, 16, 16), generator=generator, dtype=torch.float64)
    assert prior_gap(terminal, draws, generator=generator).passes


def test_fit_chain_start_recovers_known_parameters():
    generator = torch.Generator().manual_seed(4)
    common = von_mises_sample((4000, 1, 1, 1), 0.3, 4.0, generator=generator, dtype=torch.float64)
    deviations = von_mises_sample((4000, 1, 16, 16), 0.0, 2.0, generator=generator, dtype=torch.float64)
    phase, common_concentration, deviation_concentration = fit_chain_start(wrap(common + deviations))
    assert abs(phase - 0.3) < 0.03
    assert abs(common_concentration - 4.0) < 0.4  # the per-image mean adds its own small spread
    assert abs(deviation_concentration - 2.0) < 0.1


def test_fit_prior_stores_the_fitted_start_and_von_mises_prior_sampling_is_unchanged():
    process = KuramotoProcess(KuramotoConfig(coupling="local", prior="forward-chain"))
    theta0 = ImageCodec.for_process(process).encode(_smooth_images(5, count=16))
    fitted, report = process.fit_prior(theta0, generator=torch.Generator().manual_seed(0))
    assert report.start == fit_chain_start(theta0)
    assert (
        fitted.config.prior_start_phase,
        fitted.config.prior_start_concentration,
        fitted.config.prior_start_deviation,
    ) == report.start
    assert fitted.config.prior == "forward-chain"
    plain = KuramotoProcess(KuramotoConfig(prior_concentration=0.7))
    expected = von_mises_sample((3, 1, 8, 8), 0.0, 0.7, generator=torch.Generator().manual_seed(9))
    assert torch.equal(plain.prior_sample((3, 1, 8, 8), generator=torch.Generator().manual_seed(9)), expected)


def test_only_the_von_mises_prior_has_a_log_density():
    x = torch.zeros(2, 1, 8, 8)
    assert torch.isfinite(KuramotoProcess(KuramotoConfig()).prior_log_prob(x)).all()
    for prior in ("relaxed", "forward-chain"):
        with pytest.raises(UserError, match="no closed-form density"):
            KuramotoProcess(KuramotoConfig(prior=prior)).prior_log_prob(x)


def test_prior_settings_round_trip_and_old_configs_read_as_von_mises():
    config = KuramotoConfig(prior="relaxed", prior_relax_steps=50, prior_start_phase=0.2, prior_start_concentration=3.0)
    assert config_from_dict(KuramotoConfig, json.loads(json.dumps(config_to_dict(config)))) == config
    old = {
        key: value
        for key, value in config_to_dict(KuramotoConfig()).items()
        if not key.startswith("prior_") and key != "prior"
    }
    old["prior_concentration"] = 1.1
    loaded = config_from_dict(KuramotoConfig, old)
    assert loaded.prior == "von-mises" and loaded.prior_concentration == 1.1


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"prior_relax_steps": -1}, "prior_relax_steps must be an integer ≥ 0"),
        ({"prior": "langevin"}, "prior"),
        ({"prior_start_deviation": -0.5}, "prior_start_deviation must be finite and ≥ 0"),
    ],
)
def test_bad_prior_settings_are_user_errors(settings, message):
    with pytest.raises(UserError, match=message):
        KuramotoConfig(**settings)
