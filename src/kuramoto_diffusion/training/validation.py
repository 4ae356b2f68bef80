"""Validation loss: the DSM loss of a fixed held-out batch at a fixed set of steps t, with fixed noise.

The same loss as training (``objectives.dsm_loss``), with the objective every process shares: the one-step kernel
(``markov``, stride 1) from the chain's state at t − 1 on the torus (the paper's loss), and for processes
whose kernel from the data is exact (the Euclidean VP baseline) the stride t from the data (DDPM's ε-loss).
Everything random is drawn once, so two evaluations of the same weights give the same numbers and a curve
over training shows the network alone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes import ForwardProcess
from .objectives import dsm_loss, kernel_example

VALIDATION_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)  # of T: early, middle and late in the chain


def validation_steps(steps: int) -> list[int]:
    """The steps t (1 … T) at which validation losses are reported: ``VALIDATION_FRACTIONS`` of T, rounded."""
    return sorted({min(steps, max(1, round(fraction * steps))) for fraction in VALIDATION_FRACTIONS})


class ValidationProbe:
    """Per-t DSM losses of ``states`` (encoded held-out data, (B, …)) at ``validation_steps(T)``.

    ``class_labels``: for class-conditional networks, the "no class" label of every row (the unconditional
    score, which training keeps through label dropout); None otherwise.
    """

    def __init__(
        self, process: ForwardProcess, states: Tensor, *, seed: int = 0, class_labels: Tensor | None = None
    ) -> None:
        self.process = process
        self.steps = validation_steps(process.steps)
        self.class_labels = class_labels
        generator = torch.Generator(device=states.device).manual_seed(seed)
        count = states.shape[0]
        from_data = process.closed_form_marginal  # the VP kernel from the data is exact for any stride
        self.batches: dict[int, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        trajectory = states[None]  # the chain's states at steps 0 … max(steps) − 1 (not needed from data)
        if not from_data and max(self.steps) > 1:
            trajectory = process.simulate(states, max(self.steps) - 1, generator=generator, return_trajectory=True)
        for t in self.steps:
            if from_data:
                x_start, t_start, stride = states, torch.zeros(count, dtype=torch.long), torch.full((count,), t)
            else:
                x_start, t_start, stride = (
                    trajectory[t - 1],
                    torch.full((count,), t - 1),
                    torch.ones(count, dtype=torch.long),
                )
            noise = torch.randn(x_start.shape, generator=generator, device=states.device, dtype=states.dtype)
            self.batches[t] = (x_start, t_start.to(states.device), stride.to(states.device), noise)

    @torch.no_grad()
    def losses(self, network: torch.nn.Module) -> dict[int, float]:
        """{t: the mean validation loss at step t} of ``network`` (evaluated in eval mode, its mode restored)."""
        was_training = network.training
        network.eval()
        try:
            return {
                t: float(
                    dsm_loss(
                        network, self.process, kernel_example(self.process, x, s, stride, noise, self.class_labels)
                    )
                )
                for t, (x, s, stride, noise) in self.batches.items()
            }
        finally:
            network.train(was_training)

    def scalars(self, network: torch.nn.Module, ema_network: torch.nn.Module | None = None) -> dict[str, float]:
        """TensorBoard scalars: ``val/loss_t{t}`` per step and ``val/loss`` (their mean) of the network, and
        ``val/loss_ema`` of the EMA weights (what sampling uses)."""
        losses = self.losses(network)
        result = {f"val/loss_t{t}": value for t, value in losses.items()}
        result["val/loss"] = sum(losses.values()) / len(losses)
        if ema_network is not None:
            ema = self.losses(ema_network)
            result["val/loss_ema"] = sum(ema.values()) / len(ema)
        return result
