"""Log-likelihood through the probability-flow ODE: exact cases on the torus and in ℝ, Hutchinson's
estimator against the exact divergence, the encoding's Jacobian, bits per dimension, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.circular import IMAGE_PHASE_RANGE, wrapped_normal_log_prob
from kuramoto_diffusion.config import FlowNormalisation, angle_model_config, flow_model_config, image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import (
    EuclideanConfig,
    EuclideanVPProcess,
    KuramotoConfig,
    KuramotoProcess,
    PhaseAmplitudeConfig,
)
from kuramoto_diffusion.sampling.likelihood import PIXEL_STEP, bits_per_dim, dequantise, ode_log_likelihood

BROWNIAN = KuramotoConfig(coupling="global", ref_strength=0.0, coupling_range=(0.0, 0.0), steps=100)
CENTRES, WIDTH = (-1.0, 3.0), 0.3  # one component straddles the seam


def mixture_log_prob(process: KuramotoProcess, x: torch.Tensor, t: int) -> torch.Tensor:
    """Exact log p_t of wrapped Brownian motion from an equal wrapped-normal mixture, independent per element."""
    scale = math.sqrt(WIDTH**2 + float(process._cumulative_noise_var[t]))
    per_element = torch.logsumexp(torch.stack([wrapped_normal_log_prob(x, c, scale) for c in CENTRES]), 0) - math.log(2)
    return per_element.flatten(1).sum(1)


def mixture_score(process: KuramotoProcess):  # noqa: ANN201 - ScoreFn
    def score(x: torch.Tensor, t: int) -> torch.Tensor:
        with torch.enable_grad():
            y = x if x.requires_grad else x.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(mixture_log_prob(process, y, t).sum(), y, create_graph=True)
        return gradient

    return score


def mixture_samples(count: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    component = torch.randint(0, 2, (count, *shape), generator=generator)
    x = torch.tensor(CENTRES, dtype=torch.float64)[component] + WIDTH * torch.randn(
        count, *shape, generator=generator, dtype=torch.float64
    )
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


@pytest.mark.parametrize("shape", [(1,), (2,)], ids=["circle", "2-torus"])
def test_ode_likelihood_of_wrapped_brownian_motion_is_the_true_log_density(shape):
    process = KuramotoProcess(BROWNIAN)
    x0 = mixture_samples(100, shape, seed=1)  # held-out points of the data density
    result = ode_log_likelihood(
        process, mixture_score(process), x0, terminal_log_prob=lambda x: mixture_log_prob(process, x, 100)
    )
    error = result.log_likelihood - mixture_log_prob(process, x0, 0)
    assert result.probe_standard_error is None and result.function_evaluations == 200
    assert float(error.abs().max()) < 0.02 * len(shape)  # nats; measured 0.013 on the 2-torus
    # Fewer evaluations: strided Heun, a larger but bounded error (measured 0.04 at NFE 100).
    strided = ode_log_likelihood(
        process, mixture_score(process), x0, nfe=100, terminal_log_prob=lambda x: mixture_log_prob(process, x, 100)
    )
    assert strided.function_evaluations == 100
    assert float((strided.log_likelihood - mixture_log_prob(process, x0, 0)).abs().max()) < 0.1


def test_ode_likelihood_of_the_vp_process_on_gaussian_data_is_the_true_log_density():
    process = EuclideanVPProcess(steps=100)
    mean, variance = 0.3, 0.04

    def log_prob(x: torch.Tensor, t: int) -> torch.Tensor:
        signal = math.exp(-float(process._cumulative_beta[t]))
        spread = signal * variance + 1 - signal
        return (-0.5 * (x - math.sqrt(signal) * mean) ** 2 / spread - 0.5 * math.log(2 * math.pi * spread)).sum(1)

    def score(x: torch.Tensor, t: int) -> torch.Tensor:
        signal = math.exp(-float(process._cumulative_beta[t]))
        return -(x - math.sqrt(signal) * mean) / (signal * variance + 1 - signal)

    x0 = mean + math.sqrt(variance) * torch.randn(
        100, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    result = ode_log_likelihood(process, score, x0)  # the N(0, 1) prior: ᾱ_T ≈ 4e-5
    assert float((result.log_likelihood - log_prob(x0, 0)).abs().max()) < 0.06  # nats in 3 dimensions; measured 0.038
    assert torch.allclose(result.prior_log_likelihood, process.prior_log_prob(result_states(process, score, x0)).sum(1))


def result_states(process, score, x0):  # noqa: ANN001, ANN201
    """x_T of the same Heun integration, recomputed independently from the increments (for the prior term)."""
    x = x0.clone()
    for t in range(process.steps):
        variance = process.flow_noise_variance(t, 1, like=x)
        first = process.flow_drift(x, t, 1) - 0.5 * variance * score(x, t)
        euler = x + first
        second = process.flow_drift(euler, t, 1) - 0.5 * variance * score(euler, t + 1)
        x = x + 0.5 * (first + second)
    return x


def test_vp_flow_rates_are_the_sde_rates_and_kuramoto_keeps_its_chain():
    vp = EuclideanVPProcess(steps=50)
    x = torch.randn(4, 3, dtype=torch.float64)
    integral = float(vp._cumulative_beta[13] - vp._cumulative_beta[10])
    assert torch.allclose(vp.flow_drift(x, 10, 3), -0.5 * integral * x, atol=1e-15)
    assert float(vp.flow_noise_variance(10, 3)) == pytest.approx(integral, rel=1e-12)
    kuramoto = KuramotoProcess(KuramotoConfig(coupling="global", steps=50))
    assert torch.equal(kuramoto.flow_drift(x, 10, 3), kuramoto.drift(x, 10, 3))


def test_hutchinson_agrees_with_the_exact_divergence_and_is_reproducible():
    # Local coupling gives the field off-diagonal Jacobian entries (for a diagonal one, Rademacher
    # probes are exact). The score need not be this process's: both estimates integrate the same field.
    process = KuramotoProcess(KuramotoConfig(coupling="local", neighbourhood=3, steps=100, coupling_range=(0.03, 3.0)))
    brownian = KuramotoProcess(BROWNIAN)
    x0 = mixture_samples(16, (1, 6, 6), seed=3)  # 36 elements: above the exact limit of 32
    score = mixture_score(brownian)
    exact = ode_log_likelihood(process, score, x0, nfe=16, exact_dimension_limit=36)
    estimates = [
        ode_log_likelihood(process, score, x0, nfe=16, probes=8, generator=torch.Generator().manual_seed(seed))
        for seed in (5, 5, 6)
    ]
    assert exact.probe_standard_error is None
    assert torch.equal(estimates[0].log_likelihood, estimates[1].log_likelihood)  # the probes come from the seed
    assert not torch.equal(estimates[0].log_likelihood, estimates[2].log_likelihood)
    for estimate in estimates:
        deviation = (estimate.log_likelihood - exact.log_likelihood) / estimate.probe_standard_error
        # The standard error comes from 8 probes, so each deviation is t-distributed with 7 degrees of freedom
        # (E z² = 1.4, P(|z| > 6) ≈ 6e-4): bounds that a correct estimator fails about 1 % of the time.
        assert float(deviation.abs().max()) < 6.0 and float(deviation.square().mean()) < 2.6
        assert bool((estimate.probe_standard_error > 0).all())


def test_encoding_log_jacobian_matches_autograd():
    image_model = DiffusionModel(image_model_config(KuramotoConfig(coupling="local", neighbourhood=3), 1, 8, "tiny"))
    data = torch.rand(2, 1, 8, 8) * 2 - 1
    assert torch.allclose(
        image_model.encoding_log_jacobian(data), torch.full((2,), 64 * math.log(IMAGE_PHASE_RANGE), dtype=torch.float64)
    )
    euclidean = DiffusionModel(image_model_config(EuclideanConfig(), 1, 8, "tiny"))
    assert torch.equal(euclidean.encoding_log_jacobian(data), torch.zeros(2, dtype=torch.float64))
    norm = FlowNormalisation(log_speed_mean=-0.5, log_speed_std=0.7, velocity_std=0.8)
    flow = DiffusionModel(flow_model_config(PhaseAmplitudeConfig(), 4, norm, "tiny"))
    velocity = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    expected = 0.0
    for i in range(4):
        for j in range(4):

            def encode_pixel(v: torch.Tensor, i: int = i, j: int = j) -> torch.Tensor:
                field = velocity.clone()
                field[0, :, i, j] = v
                return flow.encode(field)[0, :, i, j]

            jacobian = torch.autograd.functional.jacobian(encode_pixel, velocity[0, :, i, j])
            expected += float(torch.linalg.slogdet(jacobian).logabsdet)
    assert float(flow.encoding_log_jacobian(velocity)[0]) == pytest.approx(expected, rel=1e-9)


def test_bits_per_dim_is_the_cell_probability_of_a_toy_density():
    # A toy density on phases, uniform on [-π, π): each grey level's cell has probability
    # (a/127.5)/(2π), so bits/dim = log2(2π·127.5/a) exactly, whatever the dequantisation.
    dimension = 5
    uniform_log_p_y = torch.tensor(
        [dimension * (math.log(IMAGE_PHASE_RANGE) - math.log(2 * math.pi))], dtype=torch.float64
    )
    assert float(bits_per_dim(uniform_log_p_y, dimension)[0]) == pytest.approx(
        math.log2(2 * math.pi * PIXEL_STEP / IMAGE_PHASE_RANGE), rel=1e-12
    )
    # A smooth density in y, N(0.1, 0.2²): the dequantised estimate is the exact −log2 ∫_cell p_y (fine
    # quadrature) up to Jensen's gap, which is ~1e-6 bits for a cell this narrow, and the Monte Carlo error.
    pixel = 140
    images = torch.full((20000, 1), pixel / PIXEL_STEP - 1.0, dtype=torch.float64)
    y = dequantise(images, torch.Generator().manual_seed(0))
    assert float(y.min()) >= (pixel - 0.5) / PIXEL_STEP - 1 and float(y.max()) < (pixel + 0.5) / PIXEL_STEP - 1
    log_p = -0.5 * ((y[:, 0] - 0.1) / 0.2) ** 2 - math.log(0.2 * math.sqrt(2 * math.pi))
    estimate = float(bits_per_dim(log_p.mean()[None], 1)[0])
    edges = torch.linspace((pixel - 0.5) / PIXEL_STEP - 1, (pixel + 0.5) / PIXEL_STEP - 1, 10001, dtype=torch.float64)
    centres = 0.5 * (edges[1:] + edges[:-1])
    cell = float(
        (torch.exp(-0.5 * ((centres - 0.1) / 0.2) ** 2) / (0.2 * math.sqrt(2 * math.pi))).sum() * (edges[1] - edges[0])
    )
    exact = -math.log2(cell)
    assert estimate == pytest.approx(exact, abs=1e-4)
    assert abs(estimate - float(bits_per_dim(torch.tensor([math.log(cell * PIXEL_STEP)]), 1)[0])) < 1e-4


def test_model_log_likelihood_runs_for_images_angles_and_flows():
    torch.manual_seed(0)
    image_model = DiffusionModel(
        image_model_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=10), 1, 8, "tiny")
    )
    images = dequantise(
        torch.round((torch.rand(3, 1, 8, 8) * 2 - 1) * PIXEL_STEP) / PIXEL_STEP, torch.Generator().manual_seed(1)
    )
    result = image_model.log_likelihood(
        images, nfe=4, probes=2, generator=torch.Generator().manual_seed(2), batch_size=2
    )
    assert result.log_likelihood.shape == (3,) and bool(torch.isfinite(result.log_likelihood).all())
    assert result.probe_standard_error is not None and result.function_evaluations == 4
    angle_model = DiffusionModel(angle_model_config(KuramotoConfig(steps=10), 3, hidden_features=16, num_layers=1))
    angles = angle_model.log_likelihood(torch.tensor([[0.1, 3.0, -2.0]]), nfe=4)
    assert angles.probe_standard_error is None and bool(torch.isfinite(angles.log_likelihood).all())
    flow_model = DiffusionModel(flow_model_config(PhaseAmplitudeConfig(steps=10), 4, FlowNormalisation(), "tiny"))
    flows = flow_model.log_likelihood(torch.randn(2, 2, 4, 4), nfe=2, probes=2)
    assert bool(torch.isfinite(flows.log_likelihood).all())


def test_bad_input_is_a_one_line_error():
    model = DiffusionModel(
        image_model_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=10), 1, 8, "tiny")
    )
    with pytest.raises(UserError, match="NaN or infinite"):
        model.log_likelihood(torch.full((1, 1, 8, 8), math.nan))
    with pytest.raises(UserError, match=r"data of size 1×1×16×16 do not fit this model's data of size N×1×8×8"):
        model.log_likelihood(torch.zeros(1, 1, 16, 16))
    with pytest.raises(UserError, match="probes must be an integer ≥ 1, got 0"):
        model.log_likelihood(torch.zeros(1, 1, 8, 8), probes=0)
    with pytest.raises(UserError, match="nfe must be an even integer ≥ 2"):
        model.log_likelihood(torch.zeros(1, 1, 8, 8), nfe=1)
    with pytest.raises(UserError, match="8-bit values"):
        dequantise(torch.full((1, 4), 1.5))
