"""The few-step stochastic Heun step (``sampling.steps.sde_heun``) against laws known in closed form (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.circular import wrap
from kuramoto_diffusion.processes import KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.sampling.steps import Sampler, reverse_interval

CENTRE = 3.0  # near the seam at ±π, so wrapping is exercised


def _drift_free() -> KuramotoProcess:
    # No coupling, no reference pull: wrapped Brownian motion with the default noise schedule.
    return KuramotoProcess(KuramotoConfig(coupling="global", ref_strength=0.0, coupling_range=(0.0, 0.0), steps=100))


def _level(process: KuramotoProcess, t: int) -> float:
    return float(process._cumulative_noise_var[t])  # S_t = Σ_{s<t} σ_s², read from the schedule table


@pytest.mark.parametrize("upper,lower", [(12, 6), (12, 1), (3, 2)])
def test_sde_heun_is_the_exact_posterior_draw_for_point_mass_data(upper, lower):
    # Data = a point at CENTRE; at these small t the wrapped normal's other windings weigh below e^-100, so the exact
    # score is −wrap(x − c)/S_t and the exact reverse kernel from upper to lower is Gaussian with mean
    # c + (S_l/S_u)·wrap(x − c) and variance (S_u − S_l)·S_l/S_u, over any stride. The step must draw from it:
    # with the same normal draw z, the same point.
    process = _drift_free()
    s_upper, s_lower = _level(process, upper), _level(process, lower)
    assert 1e-4 < s_upper < 0.1  # std < 0.32 rad: the windings weigh below e^-100 at the draws here
    generator = torch.Generator().manual_seed(0)
    x = wrap(CENTRE + math.sqrt(s_upper) * torch.randn(2000, 3, generator=generator, dtype=torch.float64))

    def score(y: torch.Tensor, t: int) -> torch.Tensor:
        return -wrap(y - CENTRE) / _level(process, t)

    got, evaluations = reverse_interval(
        process, score, x, upper, lower, Sampler("sde-heun"), torch.Generator().manual_seed(5)
    )
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    expected = wrap(
        CENTRE + s_lower / s_upper * wrap(x - CENTRE) + math.sqrt((s_upper - s_lower) * s_lower / s_upper) * z
    )
    assert evaluations == 2
    assert torch.allclose(wrap(got - expected), torch.zeros_like(got), atol=1e-12)
    # Euler–Maruyama on the same interval is not exact there (the test can tell the two apart).
    euler, _ = reverse_interval(
        process, score, x, upper, lower, Sampler("euler-maruyama"), torch.Generator().manual_seed(5)
    )
    assert wrap(euler - expected).abs().max() > 1e-3


def test_sde_heun_last_interval_is_the_noiseless_euler_step():
    process = _drift_free()
    x = torch.linspace(-3.0, 3.0, 7, dtype=torch.float64)[:, None]
    score = lambda y, t: -torch.sin(y - 0.5)  # noqa: E731 (any smooth periodic field)
    got, evaluations = reverse_interval(process, score, x, 4, 0, Sampler("sde-heun"), torch.Generator().manual_seed(0))
    expected, _ = reverse_interval(process, score, x, 4, 0, Sampler("euler-maruyama"), None)
    assert evaluations == 1
    assert torch.allclose(got, expected, atol=1e-14)


def test_sde_heun_tends_to_euler_maruyama_as_the_stride_shrinks():
    # Consistency: with the same noise draw, the two steps' gap shrinks faster than the step itself.
    process = KuramotoProcess(KuramotoConfig(coupling="global", steps=1000))
    x = wrap(torch.randn(500, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    score = lambda y, t: -torch.sin(y - 0.5) * (1 + t / 1000)  # noqa: E731
    gaps, moves = [], []
    for stride in (64, 8, 1):
        heun, _ = reverse_interval(
            process, score, x, 600, 600 - stride, Sampler("sde-heun"), torch.Generator().manual_seed(2)
        )
        euler, _ = reverse_interval(
            process, score, x, 600, 600 - stride, Sampler("euler-maruyama"), torch.Generator().manual_seed(2)
        )
        gaps.append(wrap(heun - euler).abs().mean().item())
        moves.append(wrap(euler - x).abs().mean().item())
    ratios = [gap / move for gap, move in zip(gaps, moves)]
    assert ratios[0] > ratios[1] > ratios[2]
    assert ratios[2] < 0.01
