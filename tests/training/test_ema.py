"""The EMA's decay ramp: a short run's EMA must average its trained weights, not its first ones."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.training.trainer import ema_decay_at
from test_faults import make_trainer


def mass_before(step: int, until: int, decay: float, warmup_steps: int) -> float:
    """The EMA's total weight, after ``until`` updates, on the live weights of the updates before ``step``
    (brute force: the product of the later decays)."""
    return math.prod(ema_decay_at(n, decay, warmup_steps) for n in range(step, until))


def test_the_ramp_follows_diffusers_rule_and_its_cutoff():
    for n in (0, 1, 9, 100, 600, 5000, 20_000):
        assert ema_decay_at(n, 0.999, 0) == min(0.999, (1 + n) / (10 + n))
    assert ema_decay_at(100, 0.999, 100) == pytest.approx(101 / 110)
    assert ema_decay_at(101, 0.999, 100) == 0.999  # the rule of runs saved before the ramp ran throughout


def test_a_600_step_run_keeps_almost_nothing_of_its_first_100_steps():
    # The reported failure: decay 0.999 from step 100 on left 56 % of the EMA on the weights of step ≤ 100.
    assert mass_before(100, 600, 0.999, warmup_steps=100) > 0.5
    assert mass_before(100, 600, 0.999, warmup_steps=0) < 0.01
    # ... and a long run reaches the full decay: the last 1000 steps carry about 1 − 0.999^1000 of the mass
    assert mass_before(19_000, 20_000, 0.999, warmup_steps=0) == pytest.approx(0.999**1000, rel=0.05)


def test_the_trainer_applies_the_ramp_to_every_parameter(tmp_path):
    trainer = make_trainer(tmp_path / "run", steps=3)
    live, ema = trainer.model.network, trainer.ema_network
    before = {name: p.detach().clone() for name, p in ema.named_parameters()}
    with torch.no_grad():
        for p in live.parameters():
            p.add_(1.0)
    trainer.step = 50
    trainer._update_ema()
    weight = 1 - ema_decay_at(50, trainer.train_config.ema_decay, trainer.train_config.ema_warmup_steps)
    for name, p in ema.named_parameters():
        expected = before[name] + weight * (dict(live.named_parameters())[name] - before[name])
        assert torch.allclose(p, expected, atol=1e-6)
