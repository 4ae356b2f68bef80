"""Phase correlation at distance and the forward chain's synchrony (issue 31 §2), where the answer is known."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.circular import phase_correlation
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.synchrony import forward_synchrony
from kuramoto_diffusion.processes import KuramotoProcess


def _uniform(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi


def test_phase_correlation_equals_brute_force():
    theta = _uniform((2, 2, 7, 9), 0)
    distances = (1, 2, 4)
    got = phase_correlation(theta, distances)
    for b in range(2):
        for index, d in enumerate(distances):
            for axis, (rows, columns) in enumerate(((7 - d, 9), (7, 9 - d))):
                total, count = 0.0, 0
                for c in range(2):
                    for i in range(rows):
                        for j in range(columns):
                            i2, j2 = (i + d, j) if axis == 0 else (i, j + d)
                            total += math.cos(theta[b, c, i2, j2] - theta[b, c, i, j])
                            count += 1
                assert got[b, index, axis].item() == pytest.approx(total / count, abs=1e-14)


def test_phase_correlation_on_known_fields():
    constant = torch.full((1, 1, 10, 10), 2.0, dtype=torch.float64)
    assert torch.allclose(phase_correlation(constant), torch.ones(1, 4, 2, dtype=torch.float64))
    rows, columns = torch.meshgrid(torch.arange(10), torch.arange(10), indexing="ij")
    checkerboard = (math.pi * ((rows + columns) % 2)).to(torch.float64)[None, None]
    expected = torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64)[None, :, None].expand(1, 4, 2)
    torch.testing.assert_close(phase_correlation(checkerboard), expected)
    stripes = (0.5 * columns).to(torch.float64)[None, None]  # phase grows by 0.5 rad per column
    got = phase_correlation(stripes)
    torch.testing.assert_close(got[0, :, 0], torch.ones(4, dtype=torch.float64))  # constant down each column
    torch.testing.assert_close(got[0, :, 1], torch.cos(0.5 * torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)))
    # Independent uniform phases: per image 240 pairs (SE ≈ 0.046), over 64 images SE ≈ 0.006.
    assert phase_correlation(_uniform((64, 1, 16, 16), 1)).mean(dim=0).abs().max() < 0.03


def test_phase_correlation_rejects_distances_beyond_the_image():
    with pytest.raises(UserError, match="distances must be in 1…7"):
        phase_correlation(torch.zeros(1, 1, 8, 8), (1, 8))
    with pytest.raises(UserError, match="needs images"):
        phase_correlation(torch.zeros(4, 8))


def test_zero_coupling_gives_the_same_chain_statistics_for_local_and_global():
    theta0 = _uniform((4, 1, 16, 16), 2) * 0.5
    stats = [
        forward_synchrony(
            KuramotoProcess(coupling=coupling, coupling_range=(0.0, 0.0)),
            theta0,
            (0, 25, 50, 100),
            generator=torch.Generator().manual_seed(3),
        )
        for coupling in ("local", "global")
    ]
    assert torch.equal(stats[0].correlation, stats[1].correlation) and torch.equal(stats[0].order, stats[1].order)


def test_strong_coupling_without_pull_orders_locally_only_with_local_coupling():
    """K = 0.3 every step, κ_ref = 0, from i.i.d. uniform phases: local coupling grows domains (d1 ≫ d8), global
    coupling synchronises every pixel alike (pixels stay exchangeable: d1 ≈ d8)."""
    theta0 = _uniform((16, 1, 32, 32), 4)
    t = 50
    stats = {
        coupling: forward_synchrony(
            KuramotoProcess(coupling=coupling, ref_strength=0.0, coupling_range=(0.3, 0.3), coupling_shape="constant"),
            theta0,
            (t,),
            generator=torch.Generator().manual_seed(5),
        )
        for coupling in ("local", "global")
    }
    local, global_ = stats["local"], stats["global"]
    assert local.at(t, 1) - local.at(t, 8) > 0.3
    assert abs(global_.at(t, 1) - global_.at(t, 8)) < 0.03
    assert (
        global_.at(t, 1) > 0.5
    )  # the global chain did synchronise: flat because ordered everywhere, not because noisy
    assert bool(global_.order.mean() > local.order.mean())


def test_forward_synchrony_rejects_steps_beyond_the_chain():
    with pytest.raises(UserError, match="times must be steps in 0…100"):
        forward_synchrony(KuramotoProcess(), torch.zeros(1, 1, 16, 16), (0, 101))
