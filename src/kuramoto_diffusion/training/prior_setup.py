"""The prior fit at the start of a run: the prior κ fitted to simulated terminal states, and ``prior="auto"``
resolved to one candidate prior by its gap to those states (Kuramoto)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor

from ..config import TrainConfig
from ..processes import ForwardProcess, PriorFit, ProcessConfig
from ..processes.priors import PriorKind


class FittedPrior(NamedTuple):
    """What the fit changes in a run: the process config with its prior fitted (and chosen), the fit's report,
    and what ``prior="auto"`` became (None when the run named its prior)."""

    process: ProcessConfig
    report: PriorFit
    chosen: PriorKind | None


def fit_prior(
    process: ForwardProcess,
    states: Tensor,
    noise_generator: torch.Generator,
    training: TrainConfig,
    device: torch.device,
) -> FittedPrior:
    """Fit ``process``'s prior to ``states`` (encoded data, (B, …), on ``device``) simulated to t = T with
    ``noise_generator``; Kuramoto also fits the forward-chain prior's start, reports every candidate prior's gap to
    those states and resolves ``training.prior`` "auto". Only for processes that declare ``fits_prior``."""
    if not process.compares_priors:
        fitted, report = process.fit_prior(states, generator=noise_generator)
        return FittedPrior(fitted.config, report, None)
    # Here, not at the top: the metrics package imports scipy and scikit-image, which training needs not.
    from ..metrics.prior_gap import compare_priors, resolve_prior

    # The terminal states take the same noise as before the gaps existed; the candidates' draws and the
    # permutations a generator of their own (seed + 2), so that the training noise that follows is unchanged.
    draws_generator = torch.Generator(device=device).manual_seed(training.seed + 2)
    kuramoto, report = compare_priors(process, states, noise_generator, draws_generator=draws_generator)
    if training.prior != "auto":
        return FittedPrior(kuramoto.config, report, None)
    chosen = resolve_prior(report)  # resolved here and saved so, as the objective is
    return FittedPrior(dataclasses.replace(kuramoto.config, prior=chosen), report, chosen)
