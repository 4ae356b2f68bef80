"""Circular maths, checked in float64 against quadrature, autograd and finite differences."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kuramoto_diffusion.circular import (
    fit_von_mises,
    image_to_phase,
    order_parameter,
    phase_to_image,
    von_mises_log_prob,
    von_mises_moment,
    von_mises_sample,
    wrap,
    wrapped_normal_log_prob,
    wrapped_normal_score,
)
from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.errors import UserError

SCALES = [1e-3, 1e-2, 0.1, 0.5, 1.0, 3.0, 10.0]


def test_wrap_range_and_idempotence():
    x = torch.linspace(-50, 50, 100001, dtype=torch.float64)
    w = wrap(x)
    assert w.min() >= -math.pi and w.max() < math.pi
    assert torch.equal(wrap(w), w)
    assert torch.allclose(torch.sin(w), torch.sin(x), atol=1e-12)
    assert torch.allclose(torch.cos(w), torch.cos(x), atol=1e-12)
    assert float(wrap(torch.tensor(math.pi, dtype=torch.float64))) == -math.pi
    # float32 values just below π must not come back as π
    x32 = torch.tensor([math.pi - 1e-7, -math.pi, 3 * math.pi], dtype=torch.float32)
    assert (wrap(x32) < math.pi).all()


@pytest.mark.parametrize("scale", SCALES)
def test_wrapped_normal_integrates_to_one(scale):
    points = 2_000_001 if scale < 0.05 else 20_001
    grid = torch.linspace(-math.pi, math.pi, points, dtype=torch.float64)
    density = wrapped_normal_log_prob(grid, 0.7, scale).exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("scale", SCALES)
def test_wrapped_normal_is_periodic(scale):
    x = torch.linspace(-math.pi, math.pi, 101, dtype=torch.float64)
    mean = torch.tensor(-2.5, dtype=torch.float64)
    for shift in (2 * math.pi, -4 * math.pi):
        assert torch.allclose(
            wrapped_normal_log_prob(x + shift, mean, scale), wrapped_normal_log_prob(x, mean, scale), rtol=1e-9
        )
        assert torch.allclose(
            wrapped_normal_score(x + shift, mean, scale), wrapped_normal_score(x, mean, scale), rtol=1e-7, atol=1e-9
        )
    assert torch.allclose(von_mises_log_prob(x + 2 * math.pi, 0.3, 2.0), von_mises_log_prob(x, 0.3, 2.0), atol=1e-12)


def _points_near_mean_and_seam(mean: float, scale: float) -> torch.Tensor:
    offsets = torch.tensor([-3.0, -1.0, -0.2, 0.0, 0.4, 2.0], dtype=torch.float64) * min(scale, 1.0)
    seam = mean + math.pi
    seam_offsets = torch.tensor([-1e-3, -1e-6, 0.0, 1e-6, 1e-3], dtype=torch.float64) * min(scale, 1.0)
    return torch.cat([mean + offsets, seam + seam_offsets, torch.tensor([mean - 2.0, mean + 1.0], dtype=torch.float64)])


@pytest.mark.parametrize("scale", SCALES)
def test_wrapped_normal_score_matches_autograd_and_finite_differences(scale):
    mean = 0.9
    x = _points_near_mean_and_seam(mean, scale).requires_grad_(True)
    log_p = wrapped_normal_log_prob(x, mean, scale)
    (autograd,) = torch.autograd.grad(log_p.sum(), x)
    score = wrapped_normal_score(x.detach(), mean, scale)
    assert torch.isfinite(score).all()
    assert torch.allclose(score, autograd, rtol=1e-8, atol=1e-8 / scale)
    # At the seam the score turns over within ~σ²/π, so the step must be small against σ².
    h = min(1e-4 * scale, 1e-3 * scale**2)
    xd = x.detach()
    central = (wrapped_normal_log_prob(xd + h, mean, scale) - wrapped_normal_log_prob(xd - h, mean, scale)) / (2 * h)
    assert torch.allclose(score, central, rtol=1e-5, atol=1e-6 * math.pi / scale**2)


def test_wrapped_normal_score_against_brute_force_series():
    # Independent reference: a long explicit sum over k of the Gaussian images.
    x = torch.linspace(-math.pi, math.pi, 37, dtype=torch.float64)
    for scale in (0.3, 2.0, 6.0):
        k = torch.arange(-60, 61, dtype=torch.float64)
        d = x[:, None] - 1.1 + 2 * math.pi * k
        g = torch.exp(-0.5 * (d / scale) ** 2)
        density = g.sum(1) / (scale * math.sqrt(2 * math.pi))
        derivative = (-(d / scale**2) * g).sum(1) / (scale * math.sqrt(2 * math.pi))
        assert torch.allclose(wrapped_normal_log_prob(x, 1.1, scale), density.log(), rtol=1e-10)
        assert torch.allclose(wrapped_normal_score(x, 1.1, scale), derivative / density, rtol=1e-8, atol=1e-10)


def test_wrapped_normal_float32_is_finite_at_small_scale():
    x = torch.tensor([math.pi - 1e-3, -math.pi, 0.0, 1.0], dtype=torch.float32)
    for scale in (1e-4, 1e-3, 10.0):
        assert torch.isfinite(wrapped_normal_score(x, 0.0, scale)).all()
        assert torch.isfinite(wrapped_normal_log_prob(x, 0.0, scale)).all()


@pytest.mark.parametrize("kappa", [0.0, 0.5, 1.2, 5.0, 80.0])
def test_von_mises_density_sampler_and_fit(kappa):
    grid = torch.linspace(-math.pi, math.pi, 200001, dtype=torch.float64)
    density = von_mises_log_prob(grid, 0.4, kappa).exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-6)
    expected_r = torch.trapezoid(density * torch.cos(grid - 0.4), grid).item()
    assert von_mises_moment(1, kappa) == pytest.approx(expected_r, abs=1e-6)
    generator = torch.Generator().manual_seed(3)
    samples = von_mises_sample((200_000,), 0.4, kappa, generator=generator, dtype=torch.float64)
    assert samples.min() >= -math.pi and samples.max() < math.pi
    # Moments of the samples against the density by quadrature (5 standard errors).
    for n in (1, 2):
        exact = torch.trapezoid(density * torch.cos(n * (grid - 0.4)), grid).item()
        assert torch.cos(n * (samples - 0.4)).mean().item() == pytest.approx(exact, abs=5 / math.sqrt(200_000))
    if kappa > 0.3:
        loc, fitted = fit_von_mises(samples)
        assert loc == pytest.approx(0.4, abs=0.05)
        assert fitted == pytest.approx(kappa, rel=0.05)
        _, fixed = fit_von_mises(samples, loc=0.4)
        assert fixed == pytest.approx(kappa, rel=0.05)


def test_von_mises_fit_is_maximum_likelihood():
    # The fitted κ maximises the log-likelihood: a nearby κ on either side is worse.
    samples = von_mises_sample((5000,), -1.0, 2.5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loc, kappa = fit_von_mises(samples)
    best = von_mises_log_prob(samples, loc, kappa).sum()
    for other in (kappa * 0.97, kappa * 1.03):
        assert von_mises_log_prob(samples, loc, other).sum() < best


def test_von_mises_extremes_are_finite():
    x = torch.tensor([0.0, 1.0, math.pi], dtype=torch.float64)
    assert torch.isfinite(von_mises_log_prob(x, 0.0, 1e7)).all()
    big = von_mises_sample((1000,), 0.2, 1e8, generator=torch.Generator().manual_seed(1))
    assert (big - 0.2).abs().max() < 1e-2
    with pytest.raises(UserError):
        von_mises_sample((3,), 0.0, float("nan"))


def test_order_parameter_against_complex_mean():
    theta = torch.rand(3, 2, 5, 5, dtype=torch.float64) * 6 - 3
    r, psi = order_parameter(theta)
    z = torch.exp(1j * theta).mean(dim=(1, 2, 3))
    assert torch.allclose(r, z.abs()) and torch.allclose(psi, z.angle())
    synced = torch.full((2, 10), 1.3, dtype=torch.float64)
    assert torch.allclose(order_parameter(synced)[0], torch.ones(2, dtype=torch.float64))
    spread = torch.linspace(-math.pi, math.pi, 101, dtype=torch.float64)[:-1][None]
    assert order_parameter(spread)[0].item() < 1e-12


def test_image_phase_round_trip_and_clipping():
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    theta = image_to_phase(x)
    assert theta.abs().max().item() == pytest.approx(0.5 * math.pi)
    back, clipped = phase_to_image(theta)
    assert torch.allclose(back, x) and clipped == 0
    across_seam = torch.tensor([0.55 * math.pi, -0.97 * math.pi, 0.0], dtype=torch.float64)
    decoded, clipped = phase_to_image(across_seam)
    assert clipped == 2 and decoded.abs().max() <= 1.0


def test_phase_range_is_a_setting_of_the_image_encoding(tmp_path):
    from kuramoto_diffusion.config import image_model_config
    from kuramoto_diffusion.model import DiffusionModel
    from kuramoto_diffusion.processes import KuramotoConfig, KuramotoProcess

    x = torch.linspace(-1, 1, 9, dtype=torch.float64)
    half = 0.5 * math.pi
    assert torch.allclose(image_to_phase(x, half), half * x)
    back, clipped = phase_to_image(torch.tensor([0.25 * math.pi, 0.6 * math.pi, -3.0], dtype=torch.float64), half)
    assert torch.allclose(back, torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64)) and clipped == 2
    process = KuramotoProcess(KuramotoConfig(phase_range=half))
    codec = ImageCodec.for_process(process)
    assert torch.allclose(codec.encode(x), half * x) and torch.allclose(codec.decode(codec.encode(x))[0], x)
    model = DiffusionModel(
        image_model_config(KuramotoConfig(coupling="local", phase_range=0.7 * math.pi), 1, 8, "tiny")
    )
    model.save_pretrained(tmp_path / "m")
    loaded = DiffusionModel.from_pretrained(tmp_path / "m")
    assert loaded.config.process.phase_range == pytest.approx(0.7 * math.pi)
    assert float(loaded.encoding_log_jacobian(torch.zeros(1, 1, 8, 8))[0]) == pytest.approx(
        64 * math.log(0.7 * math.pi)
    )
    # The default is half the circle; a model saved before the setting (no key) keeps the paper's 0.9π.
    assert KuramotoConfig().phase_range == pytest.approx(0.5 * math.pi)
    config_path = tmp_path / "m" / "config.json"
    saved = json.loads(config_path.read_text())
    del saved["model"]["process"]["phase_range"]
    config_path.write_text(json.dumps(saved))
    legacy = DiffusionModel.from_pretrained(tmp_path / "m")
    assert legacy.config.process.phase_range == pytest.approx(0.9 * math.pi)
    assert float(legacy.encoding_log_jacobian(torch.zeros(1, 1, 8, 8))[0]) == pytest.approx(
        64 * math.log(0.9 * math.pi)
    )
    for bad in (0.0, math.pi, -1.0, math.inf):
        with pytest.raises(UserError, match=r"phase_range must be in \(0, π\)"):
            KuramotoConfig(phase_range=bad)
