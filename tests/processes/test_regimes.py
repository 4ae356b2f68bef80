"""Kuramoto regimes (issue 31 §3): no coupling, the unit-modulus coupling, a constant coupling schedule, κ_ref = 0.

Drift and Jacobian diagonal against autograd in float64; chains and configs against independent constructions."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from kuramoto_diffusion.circular import von_mises_sample, wrap
from kuramoto_diffusion.data.torus import open_torus_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.chain_marginal import ChainMarginal
from kuramoto_diffusion.processes import KuramotoConfig, KuramotoProcess, process_config
from kuramoto_diffusion.processes.kuramoto import UNIT_NORM_GUARD
from kuramoto_diffusion.serialization import config_from_dict

PRETRAINED = Path(__file__).resolve().parents[2] / "src" / "kuramoto_diffusion" / "pretrained"

REGIMES = {
    "global": KuramotoConfig(coupling="global"),
    "local": KuramotoConfig(coupling="local"),
    "global-unit": KuramotoConfig(coupling="global", coupling_norm="unit"),
    "local-unit": KuramotoConfig(coupling="local", coupling_norm="unit"),
    "local-unit-gaussian-circular": KuramotoConfig(
        coupling="local", coupling_norm="unit", kernel="gaussian", padding="circular", neighbourhood=4
    ),
    "none": KuramotoConfig(coupling="none"),
    "none-no-pull": KuramotoConfig(coupling="none", ref_strength=0.0),
    "local-constant-strong": KuramotoConfig(
        coupling="local", coupling_shape="constant", coupling_range=(0.0, 0.3), ref_strength=0.0
    ),
}


def _phases(seed: int, shape: tuple[int, ...] = (2, 2, 6, 5)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi


@pytest.mark.parametrize("coupling", ["global", "local"])
def test_unit_coupling_is_the_sine_towards_the_mean_phase(coupling):
    unit = KuramotoProcess(coupling=coupling, coupling_norm="unit")
    mean_field = KuramotoProcess(coupling=coupling)
    x = _phases(2)
    mean_cos, mean_sin = mean_field.neighbourhood_mean(x)
    expected = torch.sin(torch.atan2(mean_sin, mean_cos) - x)  # sin(arg m − θ)
    # The guard √(|m|² + ε²) shrinks C by at most ε²/(2|m|²) relative.
    allowed = UNIT_NORM_GUARD**2 / (2 * (mean_cos**2 + mean_sin**2)) + 1e-14
    assert ((unit.coupling_field(x) - expected).abs() <= allowed).all()
    assert (unit.coupling_field(x) - expected).abs().max() > 0  # the guard is there
    # The drift is K·(C + κ_ref sin(ψ_ref − θ)) with that C.
    strength = float(unit.coupling_strength(10))
    assert ((unit.drift(x, 10) - strength * (expected + 1.5 * torch.sin(-x))).abs() <= strength * allowed + 1e-15).all()


def test_unit_coupling_stays_finite_where_the_mean_vanishes():
    process = KuramotoProcess(coupling="global", coupling_norm="unit")
    x = torch.tensor([[0.0, math.pi / 2, math.pi, -math.pi / 2]], dtype=torch.float64)  # m = 0 exactly
    drift, derivative = process.drift_and_derivative(x, 50)
    assert torch.isfinite(drift).all() and torch.isfinite(derivative).all()


def test_no_coupling_is_the_reference_pull_alone_and_takes_any_shape():
    process = KuramotoProcess(coupling="none", ref_strength=0.7, ref_phase=0.3)
    x = _phases(3, (5, 3))  # angle data: no spatial grid needed
    strength = process.coupling_strength(20, 3)
    torch.testing.assert_close(process.drift(x, 20, 3), strength * 0.7 * torch.sin(0.3 - x), rtol=1e-15, atol=1e-18)
    assert process.contraction_bound(20) == pytest.approx(float(process.coupling_strength(20)) * 0.7, rel=1e-15)


def test_wrapped_brownian_motion_without_coupling_or_pull():
    """coupling none with κ_ref = 0: x_{t+1} = wrap(x_t + σ_t z), the same draws as a hand-written chain."""
    process = KuramotoProcess(coupling="none", ref_strength=0.0)
    x0 = _phases(4, (3, 1, 4, 4))
    chain = process.simulate(x0, 30, generator=torch.Generator().manual_seed(5))
    generator, expected = torch.Generator().manual_seed(5), x0
    for t in range(30):
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        expected = wrap(expected + process.noise_variance(t).sqrt() * noise)
    torch.testing.assert_close(chain, expected, rtol=0, atol=1e-12)


def test_zero_coupling_gives_identical_local_and_global_chains():
    x0 = _phases(6, (2, 1, 8, 8))
    chains = [
        KuramotoProcess(coupling=coupling, coupling_range=(0.0, 0.0)).simulate(
            x0, 50, generator=torch.Generator().manual_seed(7)
        )
        for coupling in ("local", "global")
    ]
    assert torch.equal(chains[0], chains[1])


def test_constant_shape_holds_k_at_the_top_of_the_range_every_step():
    for steps in (100, 1000):
        process = KuramotoProcess(coupling_shape="constant", coupling_range=(1e-5, 0.03), steps=steps)
        per_step = torch.stack([process.coupling_strength(t) for t in range(steps)])
        torch.testing.assert_close(
            per_step, torch.full((steps,), 0.03 * 100 / steps, dtype=torch.float64), rtol=1e-9, atol=0
        )
    # The noise keeps its own schedule.
    assert KuramotoProcess(coupling_shape="constant").noise_variance(0) < KuramotoProcess().noise_variance(99) / 100


@pytest.mark.parametrize("name", ["none", "local-unit", "global-unit"])
def test_propagated_score_of_the_new_regimes_matches_an_explicit_jacobian(name):
    """propagate_score = M⁻ᵀ-by-fixed-point of (estimate − ∇ tr ∂drift/∂θ), built here from the full autograd Jacobian."""
    process = KuramotoProcess(dataclasses.replace(REGIMES[name], coupling_range=(0.02, 0.05)))
    x, estimate = _phases(8, (1, 1, 5, 5)), _phases(9, (1, 1, 5, 5))
    step = 30
    jacobian = torch.autograd.functional.jacobian(lambda state: process.drift(state, step), x).reshape(
        x.numel(), x.numel()
    )

    def trace(state: torch.Tensor) -> torch.Tensor:
        return (
            torch.autograd.functional.jacobian(lambda s: process.drift(s, step), state, create_graph=True)
            .reshape(x.numel(), x.numel())
            .diagonal()
            .sum()
        )

    log_det_gradient = torch.autograd.functional.jacobian(trace, x).reshape(-1)
    carried = estimate.reshape(-1) - log_det_gradient
    inverse = carried
    for _ in range(2):
        inverse = carried - jacobian.T @ inverse
    torch.testing.assert_close(process.propagate_score(x, step, estimate).reshape(-1), inverse, rtol=1e-9, atol=1e-12)


def test_fit_prior_without_pull_or_coupling_is_near_uniform():
    """Wrapped Brownian motion multiplies E e^{iθ} by exp(−V/2), V = Σσ² ≈ 5 rad²: from R₀ ≈ 0.7 to ≈ 0.06."""
    process = KuramotoProcess(coupling="none", ref_strength=0.0)
    generator = torch.Generator().manual_seed(10)
    theta0 = von_mises_sample((128, 1, 16, 16), 0.0, 2.0, generator=generator, dtype=torch.float64)
    start = float(torch.cos(theta0).mean())
    fitted, report = process.fit_prior(theta0, generator=generator)
    total_variance = float(process.noise_variance(0, process.steps))
    # 32768 values: the standard error of R̄ is ≈ 0.004.
    assert report.mean_resultant_length == pytest.approx(start * math.exp(-total_variance / 2), abs=0.015)
    assert report.concentration < 0.2
    assert fitted.config.prior_concentration == report.concentration
    assert fitted.prior_sample((4, 1, 8, 8), generator=generator).shape == (4, 1, 8, 8)


def test_regime_config_round_trips_and_old_configs_read_as_today():
    saved = json.loads((PRETRAINED / "fingerprints-kuramoto-local-32" / "config.json").read_text())
    process_dict = saved["process"] if "process" in saved else saved["model"]["process"]
    assert "coupling_norm" not in process_dict and "coupling_shape" not in process_dict
    loaded = config_from_dict(KuramotoConfig, process_dict)
    assert (loaded.coupling_norm, loaded.coupling_shape) == ("mean-field", "schedule")
    # Today's chain: the drift of a config written out field by field, with none of the new fields.
    explicit = KuramotoProcess(
        KuramotoConfig(
            **{k: v for k, v in process_dict.items() if k not in ("kind", "coupling_range", "noise_var_range")},
            coupling_range=tuple(process_dict["coupling_range"]),
            noise_var_range=tuple(process_dict["noise_var_range"]),
        )
    )
    x = _phases(11)
    assert torch.equal(KuramotoProcess(loaded).drift_and_derivative(x, 37)[1], explicit.drift_and_derivative(x, 37)[1])


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"coupling_range": (-1e-3, 0.03)}, "coupling_range must be two finite values ≥ 0"),
        ({"coupling_range": (0.0, float("nan"))}, "coupling_range must be two finite values ≥ 0"),
        ({"coupling_range": (0.0, float("inf"))}, "coupling_range must be two finite values ≥ 0"),
        ({"ref_strength": -0.1}, "ref_strength (κ_ref) must be finite and ≥ 0"),
        ({"ref_strength": float("nan")}, "ref_strength (κ_ref) must be finite and ≥ 0"),
        ({"coupling_norm": "max"}, "valid values are mean-field, unit"),
        ({"coupling_shape": "cosine"}, "valid values are schedule, constant"),
        ({"coupling": "none", "coupling_norm": "unit"}, "with coupling 'none'"),
    ],
)
def test_bad_regime_settings_are_one_line_user_errors(settings, words):
    with pytest.raises(UserError) as caught:
        KuramotoConfig(**settings)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_process_config_builds_each_regime():
    config = process_config("kuramoto-none", steps=100, ref_strength=0.0)
    assert (config.coupling, config.ref_strength) == ("none", 0.0)
    config = process_config(
        "kuramoto-local", steps=50, coupling_range=[0.0, 0.09], coupling_shape="constant", coupling_norm="unit"
    )
    assert (config.coupling_range, config.coupling_shape, config.coupling_norm) == ((0.0, 0.09), "constant", "unit")
    with pytest.raises(UserError, match="ref_strength set"):
        process_config("euclidean", steps=100, ref_strength=0.5)


def test_the_exact_chain_marginal_takes_no_coupling():
    """No coupling with κ_ref = 0 and global coupling with K = 0 are the same wrapped Brownian motion on the 2-torus."""
    data = open_torus_source("wrapped-mixture")
    none = ChainMarginal(KuramotoProcess(coupling="none", ref_strength=0.0, steps=10), data, 32)
    zero = ChainMarginal(
        KuramotoProcess(coupling="global", coupling_range=(0.0, 0.0), ref_strength=0.0, steps=10), data, 32
    )
    torch.testing.assert_close(none.density(10), zero.density(10), rtol=0, atol=0)
    with pytest.raises(UserError, match="needs global coupling or none"):
        ChainMarginal(KuramotoProcess(coupling="local", steps=10), data, 32)
