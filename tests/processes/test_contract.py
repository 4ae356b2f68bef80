"""The contract every forward process keeps, in the spirit of diffusers' ``SchedulerCommonTest``.

Each configuration in ``CASES`` (every process of the registry, ``PROCESS_NAMES``, and every choice of every
``Literal`` setting of its config) passes the same tests, in float64 on small states, each against an independent
computation (autograd, numerical integration, a brute-force loop):

* the kernel's score is the gradient of its log density, and the density integrates to 1;
* the SDE's coefficients over a stride are the sums over its steps, the merged stride is the composed chain
  where the process says it is exact (``closed_form_marginal``), and the linearised kernel is its moment closure;
* prior samples follow ``prior_log_prob`` (a χ² test of the probability integral transform);
* the reverse step with the exact score of a one-step chain from a point mass returns to the point;
* the config survives a JSON round trip and builds the same process.

``test_every_registered_process_and_choice_has_a_case`` fails when the registry or a config gains something
``CASES`` does not cover.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Literal, get_args, get_origin, get_type_hints

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.processes import PROCESS_NAMES, ForwardProcess, ProcessConfig, build_process, process_config
from kuramoto_diffusion.serialization import config_from_dict, config_to_dict, field_choices, load_config, save_config

STEPS = 40  # T of every case: small, so that one step moves the states visibly
SIDE = 6  # states are (batch, channels, SIDE, SIDE)


@dataclass(frozen=True)
class Case:
    registry_name: str  # the PROCESS_NAMES entry the config was built from
    config: ProcessConfig
    channels: int = 1


def _cases() -> dict[str, Case]:
    local = process_config("kuramoto-local", steps=STEPS)
    flows = process_config("phase-amplitude", steps=STEPS)
    return {
        "kuramoto-local": Case("kuramoto-local", local),
        "kuramoto-local-unit": Case(
            "kuramoto-local", process_config("kuramoto-local", steps=STEPS, coupling_norm="unit")
        ),
        "kuramoto-local-unit-gaussian-circular-even-paper": Case(
            "kuramoto-local",
            dataclasses.replace(
                local,
                coupling_norm="unit",
                kernel="gaussian",
                padding="circular",
                neighbourhood=4,
                schedule="paper-100",
            ),
        ),
        "kuramoto-local-constant-strong-no-pull": Case(
            "kuramoto-local",
            process_config(
                "kuramoto-local", steps=STEPS, coupling_shape="constant", coupling_range=(0.0, 0.3), ref_strength=0.0
            ),
        ),
        "kuramoto-local-relaxed-prior": Case(
            "kuramoto-local", dataclasses.replace(local, prior="relaxed", prior_relax_steps=5)
        ),
        "kuramoto-global": Case("kuramoto-global", process_config("kuramoto-global", steps=STEPS)),
        "kuramoto-global-forward-chain-prior": Case(
            "kuramoto-global", process_config("kuramoto-global", steps=STEPS, prior="forward-chain")
        ),
        "kuramoto-global-unit": Case(
            "kuramoto-global", process_config("kuramoto-global", steps=STEPS, coupling_norm="unit")
        ),
        "kuramoto-none": Case("kuramoto-none", process_config("kuramoto-none", steps=STEPS)),
        "kuramoto-none-no-pull": Case("kuramoto-none", process_config("kuramoto-none", steps=STEPS, ref_strength=0.0)),
        "euclidean": Case("euclidean", process_config("euclidean", steps=STEPS)),
        "phase-amplitude": Case("phase-amplitude", flows, channels=2),
        "phase-amplitude-gaussian-paper": Case(
            "phase-amplitude", dataclasses.replace(flows, kernel="gaussian", schedule="paper-100"), channels=2
        ),
    }


CASES = _cases()
NAMES = sorted(CASES)


def _process(name: str, **changes: object) -> ForwardProcess:
    return build_process(dataclasses.replace(CASES[name].config, **changes))


def _states(name: str, seed: int, batch: int = 2) -> torch.Tensor:
    """Prior samples as generic states (every process's own domain, every channel filled)."""
    generator = torch.Generator().manual_seed(seed)
    return _process(name).prior_sample(
        (batch, CASES[name].channels, SIDE, SIDE), generator=generator, dtype=torch.float64
    )


def _periodic_channels(process: ForwardProcess, x: torch.Tensor) -> list[bool]:
    """Which channels ``project`` wraps with period 2π (found from the process, not declared by the test)."""
    shifted = process.project(x + 2 * math.pi)
    return [bool(torch.allclose(shifted[:, c], process.project(x)[:, c], atol=1e-9)) for c in range(x.shape[1])]


REAL_LIMIT = (
    12.0  # real channels are integrated over [−12, 12]: every density here has scale ≤ ~1.5 and centre within ±5
)


def _cdf(log_density, x: torch.Tensor, periodic: list[bool], nodes: int) -> torch.Tensor:
    """∫ from the domain's low end (−π, or −REAL_LIMIT) to each element's value of exp(log_density(·)) in that
    element alone, the other channels held (Gauss–Legendre with ``nodes`` nodes, per element on [low, x_i]).

    ``log_density`` is elementwise; varying a whole channel at once assumes, as every shipped density does, that
    the elements of one channel are independent given the other channels."""
    points, weights = np.polynomial.legendre.leggauss(nodes)
    total = torch.zeros_like(x)
    for channel, wraps in enumerate(periodic):
        low = -math.pi if wraps else -REAL_LIMIT
        value = x[:, channel]
        half = (value - low) / 2
        for node, weight in zip(points.tolist(), weights.tolist(), strict=True):
            probe = x.clone()
            probe[:, channel] = low + half * (node + 1)
            total[:, channel] += weight * half * log_density(probe)[:, channel].exp()
    return total


def _domain_end(x: torch.Tensor, periodic: list[bool]) -> torch.Tensor:
    end = x.clone()
    for channel, wraps in enumerate(periodic):
        end[:, channel] = math.pi if wraps else REAL_LIMIT
    return end


# ----- coverage of the registry -------------------------------------------------------------------------------
def test_every_registered_process_and_choice_has_a_case():
    names = {case.registry_name for case in CASES.values()}
    missing = [name for name in PROCESS_NAMES if name not in names]
    assert not missing, f"add a case for process(es) {missing} to CASES in tests/processes/test_contract.py"
    classes = {type(case.config) for case in CASES.values()}
    missing_classes = [cls.__name__ for cls in get_args(ProcessConfig) if cls not in classes]
    assert not missing_classes, f"add a case for {missing_classes} to CASES in tests/processes/test_contract.py"
    for cls in get_args(ProcessConfig):
        configs = [case.config for case in CASES.values() if type(case.config) is cls]
        hints = get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if get_origin(hints[field.name]) is not Literal:
                continue
            for choice in field_choices(cls, field.name):
                assert any(getattr(config, field.name) == choice for config in configs), (
                    f"add a case with {cls.__name__}.{field.name} = {choice!r} to CASES in tests/processes/test_contract.py"
                )
    # κ_ref = 0 (no reference pull) is a regime of its own where the process allows it.
    assert any(
        getattr(case.config, "ref_strength", None) == 0.0
        for case in CASES.values()
        if case.registry_name == "kuramoto-none"
    )
    for name, case in CASES.items():
        assert build_process(case.config).steps == STEPS, name


# ----- the kernel --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("t, stride", [(STEPS // 2, 1), (0, STEPS)])
def test_kernel_score_is_the_gradient_of_a_normalised_kernel_density(name, t, stride):
    process = _process(name)
    x = _states(name, seed=1)
    mean, scale = process.transition_mean(x, t, stride), process.transition_scale(t, stride, like=x)
    # near the mean (a step of the chain) and anywhere in the domain
    for target in (process.step(x, t, stride, generator=torch.Generator().manual_seed(2)), _states(name, seed=3)):
        target = target.requires_grad_(True)
        (gradient,) = torch.autograd.grad(process.kernel_log_prob(target, mean, scale).sum(), target)
        torch.testing.assert_close(process.kernel_score(target.detach(), mean, scale), gradient, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(
            process.transition_score(target.detach(), x, t, stride), gradient, rtol=1e-9, atol=1e-9
        )
    periodic = _periodic_channels(process, x)
    kernel = lambda probe: process.kernel_log_prob(probe, mean, scale)  # noqa: E731
    mass = _cdf(kernel, _domain_end(x, periodic), periodic, nodes=400)  # 400 nodes: a kernel can be narrow
    torch.testing.assert_close(mass, torch.ones_like(mass), rtol=0, atol=1e-9)


# ----- strides -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_the_sdes_coefficients_over_a_stride_are_the_sums_over_its_steps(name):
    process = _process(name)
    x = _states(name, seed=4)
    t, stride = STEPS // 4, 7
    steps = range(t, t + stride)
    torch.testing.assert_close(
        process.flow_drift(x, t, stride), sum(process.flow_drift(x, s, 1) for s in steps), rtol=1e-12, atol=1e-14
    )
    torch.testing.assert_close(
        process.flow_noise_variance(t, stride, like=x),
        sum(process.flow_noise_variance(s, 1, like=x) for s in steps),
        rtol=1e-12,
        atol=1e-14,
    )


def _jacobian(function, x: torch.Tensor) -> torch.Tensor:
    """The (numel, numel) Jacobian of an elementwise-shaped map at x."""
    return torch.autograd.functional.jacobian(function, x).reshape(x.numel(), x.numel())


@pytest.mark.parametrize("name", NAMES)
def test_a_merged_stride_is_the_composed_chain_where_the_process_says_it_is_exact(name):
    process = _process(name)
    if not process.closed_form_marginal:
        assert not process.closed_form_marginal  # an Euler chain promises only the sums above
        return
    # Compose the one-step kernels by brute force: the mean through the steps, the covariance J Σ Jᵀ + diag(σ²)
    # with J the full Jacobian of each step's mean (exact for an affine step with Gaussian noise).
    x = _states(name, seed=5, batch=1)
    t, stride = 3, 9
    mean, covariance = x, torch.zeros(x.numel(), x.numel(), dtype=torch.float64)
    for s in range(t, t + stride):
        jacobian = _jacobian(lambda state, s=s: process.transition_mean(state, s), mean)
        variance = process.noise_variance(s, 1, like=x).expand_as(x).reshape(-1)
        covariance = jacobian @ covariance @ jacobian.T + torch.diag(variance)
        mean = process.transition_mean(mean, s)
    torch.testing.assert_close(process.transition_mean(x, t, stride), mean, rtol=1e-12, atol=1e-12)
    merged = process.noise_variance(t, stride, like=x).expand_as(x).reshape(-1)
    torch.testing.assert_close(covariance, torch.diag(merged), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        process.transition_scale(t, stride, like=x) ** 2, process.noise_variance(t, stride, like=x)
    )
    linearised_mean, linearised_variance = process.linearised_kernel(x, torch.tensor([t]), torch.tensor([stride]))
    torch.testing.assert_close(linearised_mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(linearised_variance.reshape(-1), merged, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_drift_derivative_is_the_autograd_jacobian_diagonal(name):
    process = _process(name)
    x = _states(name, seed=6)
    for t in (0, STEPS // 2, STEPS - 1):
        diagonal = _jacobian(lambda state, t=t: process.drift(state, t), x).diagonal().reshape(x.shape)
        drift, derivative = process.drift_and_derivative(x, t)
        torch.testing.assert_close(derivative, diagonal, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(process.drift_derivative(x, t), diagonal, rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(drift, process.drift(x, t), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_the_linearised_kernel_is_the_moment_closure_of_the_chain(name):
    """Per example (own start and window): μ ← transition_mean(μ), v ← (1 + ∂drift_i/∂x_i)² v + σ², walked one step
    at a time with the Jacobian from autograd; one step is the transition itself."""
    process = _process(name)
    x = _states(name, seed=7, batch=3)
    starts, strides = torch.tensor([0, STEPS // 2, STEPS - 4]), torch.tensor([1, 5, 4])
    mean, variance = process.linearised_kernel(x, starts, strides)
    for row, (start, stride) in enumerate(zip(starts.tolist(), strides.tolist(), strict=True)):
        expected_mean, expected_variance = x[row : row + 1], torch.zeros_like(x[row : row + 1])
        for s in range(start, start + stride):
            slope = (
                _jacobian(lambda state, s=s: process.drift(state, s), expected_mean)
                .diagonal()
                .reshape(expected_mean.shape)
            )
            expected_variance = (1 + slope) ** 2 * expected_variance + process.noise_variance(s, 1, like=x)
            expected_mean = process.transition_mean(expected_mean, s)
        if stride == 1:
            torch.testing.assert_close(expected_mean, process.transition_mean(x[row : row + 1], start), rtol=0, atol=0)
        torch.testing.assert_close(mean[row : row + 1], expected_mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(variance[row : row + 1], expected_variance, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_per_example_steps_and_strides_match_scalar_ones(name):
    process = _process(name)
    x = _states(name, seed=8, batch=3)
    starts, strides = torch.tensor([0, 17, STEPS - 2]), torch.tensor([1, 3, 2])
    means = process.transition_mean(x, starts, strides)
    scales = process.transition_scale(starts, strides, like=x)
    for row, (start, stride) in enumerate(zip(starts.tolist(), strides.tolist(), strict=True)):
        torch.testing.assert_close(
            means[row : row + 1], process.transition_mean(x[row : row + 1], start, stride), rtol=1e-14, atol=1e-14
        )
        torch.testing.assert_close(
            scales[row].expand_as(x[row]),
            process.transition_scale(start, stride, like=x).expand_as(x[row]),
            rtol=1e-14,
            atol=0,
        )


@pytest.mark.parametrize("name", NAMES)
def test_check_steps_refuses_steps_outside_the_chain_and_empty_strides(name):
    process = _process(name)
    process.check_steps(0, STEPS)
    process.check_steps(torch.tensor([0, STEPS - 1]))
    for t, stride in ((STEPS, 1), (-1, 1), (0, STEPS + 1), (torch.tensor([0, STEPS]), 1), (0, torch.tensor([1, 0]))):
        with pytest.raises(UserError):
            process.check_steps(t, stride)


# ----- the prior ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_prior_samples_follow_the_prior_density(name):
    """The probability integral transform u = F(x) of each sampled element, F the integral of exp(prior_log_prob)
    over that element (given the other channels), is uniform: a χ² test on 20 bins at significance 1e-6
    (the threshold follows from the sample size through χ²'s distribution, not from a run), and the density
    integrates to 1. A prior with no closed-form density (``relaxed``, ``forward-chain``: docs/priors.md) must say so
    with a UserError, which the likelihood turns into its refusal, and still draw wrapped, finite phases."""
    process = _process(name)
    samples = process.prior_sample(
        (4000, CASES[name].channels, SIDE, SIDE), generator=torch.Generator().manual_seed(9), dtype=torch.float64
    )
    if not process.prior_has_density:
        with pytest.raises(UserError, match="no closed-form density"):
            process.prior_log_prob(samples)
        assert bool(torch.isfinite(samples).all()) and bool(((samples >= -math.pi) & (samples < math.pi)).all())
        return
    periodic = _periodic_channels(process, samples)
    for channel, wraps in enumerate(periodic):
        if wraps:
            assert bool(((samples[:, channel] >= -math.pi) & (samples[:, channel] < math.pi)).all())
    mass = _cdf(process.prior_log_prob, _domain_end(samples[:4], periodic), periodic, nodes=96)
    torch.testing.assert_close(mass, torch.ones_like(mass), rtol=0, atol=1e-9)
    uniform = _cdf(process.prior_log_prob, samples, periodic, nodes=96).flatten()
    bins = 20
    counts = torch.histc(uniform, bins=bins, min=0.0, max=1.0)
    expected = uniform.numel() / bins
    statistic = float(((counts - expected) ** 2 / expected).sum())
    assert statistic < chi2.isf(1e-6, bins - 1), f"χ² = {statistic:.1f} on {bins - 1} degrees of freedom"


# ----- the reverse step ------------------------------------------------------------------------------------------
def _reverse_error(name: str, steps: int) -> tuple[float, float]:
    """(largest error, largest displacement) of one reverse step at τ = ½ with the exact score.

    Data: a point mass at x₀ at step t, so x_{t+1} ~ the one-step kernel and its score is the transition score;
    the exact posterior mean of x_t given x_{t+1} is x₀ itself. The same noise at every T."""
    process = _process(name, steps=steps)
    x0 = _states(name, seed=10)
    t = steps // 2
    later = process.step(x0, t, generator=torch.Generator().manual_seed(11))
    score = process.transition_score(later, x0, t)
    back = process.reverse_sde_mean(later, score, t)
    error = float(process.project(back - x0).abs().max())
    return error, float(process.project(later - x0).abs().max())


@pytest.mark.parametrize("name", NAMES)
def test_the_reverse_step_with_the_exact_score_returns_to_a_point_mass(name):
    """A step whose merged kernel is exact (VP's ancestral step) returns exactly. An Euler–Maruyama step errs by
    drift(x₀) − drift(x_{t+1}) = O(K·σ) against a displacement O(σ): relative to it, O(1/T). At 4T it must be at
    most ½ of that at T (4^(−½): half way in order between an inconsistent step, which keeps its relative error,
    and a first-order one, which divides it by 4), with a floor of 1e-12 for chains that have no drift."""
    coarse_error, coarse_move = _reverse_error(name, STEPS)
    fine_error, fine_move = _reverse_error(name, 4 * STEPS)
    if _process(name).closed_form_marginal:
        assert coarse_error < 1e-12 and fine_error < 1e-12
    assert fine_error / fine_move <= 0.5 * coarse_error / coarse_move + 1e-12, (
        coarse_error / coarse_move,
        fine_error / fine_move,
    )
    assert coarse_error / coarse_move < 1.0  # and it does get back closer than where it started


# ----- save and load ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Holder:
    """A config with a process field, as ModelConfig has: the ``kind`` tag picks the class on loading."""

    process: ProcessConfig


@pytest.mark.parametrize("name", NAMES)
def test_the_config_round_trips_through_json_to_the_same_process(name, tmp_path):
    config = CASES[name].config
    loaded = config_from_dict(type(config), json.loads(json.dumps(config_to_dict(config))))
    assert loaded == config
    save_config(_Holder(config), tmp_path / "config.json")
    held = load_config(_Holder, tmp_path / "config.json").process
    assert held == config and type(held) is type(config)
    x = _states(name, seed=12)
    original, rebuilt = build_process(config), build_process(held)
    for t in (0, STEPS // 2):
        assert torch.equal(rebuilt.drift(x, t, 3), original.drift(x, t, 3))
        assert torch.equal(rebuilt.noise_variance(t, 3, like=x), original.noise_variance(t, 3, like=x))
    draws = [
        process.prior_sample(tuple(x.shape), generator=torch.Generator().manual_seed(13), dtype=torch.float64)
        for process in (original, rebuilt)
    ]
    assert torch.equal(draws[0], draws[1])
    if original.prior_has_density:
        assert torch.equal(rebuilt.prior_log_prob(x), original.prior_log_prob(x))


@pytest.mark.parametrize("name", NAMES)
def test_a_process_that_declares_a_prior_fit_fits_its_prior_and_the_others_refuse(name):
    # The trainer asks ``fits_prior`` / ``compares_priors`` instead of the process's class.
    process = _process(name)
    x0 = _states(name, seed=14, batch=4)
    if not process.fits_prior:
        assert not process.compares_priors
        with pytest.raises(NotImplementedError):
            process.fit_prior(x0, generator=torch.Generator().manual_seed(0))
        return
    fitted, report = process.fit_prior(x0, generator=torch.Generator().manual_seed(0))
    assert type(fitted) is type(process) and math.isfinite(report.concentration) and report.concentration >= 0
    assert fitted.config.prior_concentration == report.concentration
    assert dataclasses.replace(fitted.config, prior_concentration=process.config.prior_concentration) == (
        dataclasses.replace(
            process.config,
            **(
                {
                    "prior_start_phase": fitted.config.prior_start_phase,
                    "prior_start_concentration": fitted.config.prior_start_concentration,
                    "prior_start_deviation": fitted.config.prior_start_deviation,
                }
                if process.compares_priors
                else {}
            ),
        )
    )
    if process.compares_priors:  # the choice of prior that metrics.prior_gap compares lives in the config
        assert "prior" in {field.name for field in dataclasses.fields(process.config)}
