"""The log-likelihood of data in data units: the states' log-density through the probability-flow ODE
(``sampling.likelihood.ode_log_likelihood``) plus the encoding's log-Jacobian (``DiffusionModel.encoding_log_jacobian``),
in batches. ``DiffusionModel.log_likelihood`` calls ``log_likelihood``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import UserError
from ..sampling.likelihood import LikelihoodResult, ode_log_likelihood

if TYPE_CHECKING:
    from ..model import DiffusionModel


def log_likelihood(
    model: DiffusionModel,
    data: Tensor,
    *,
    nfe: int | None = None,
    probes: int = 2,
    exact_dimension_limit: int = 32,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> LikelihoodResult:
    """log p_0 of ``data`` in data units, nats per sample, via the probability-flow ODE.

    ``data``: images in [-1, 1] (dequantised 8-bit images for ``likelihood.bits_per_dim``), angles in
    radians, or flow velocities. The result is the states' log-density from ``ode_log_likelihood`` plus
    log|det ∂state/∂data| of the encoding (``encoding_log_jacobian``). Class-conditional models are
    evaluated unconditionally (the "no class" label); forecasting models need a context and are refused.
    ``nfe``: 2 per Heun interval (default 2T); ``probes``: Hutchinson's K above ``exact_dimension_limit``
    elements per sample (below it the divergence is exact). Not under ``no_grad``: the divergence needs autograd.
    """
    if model.config.context_frames:
        raise UserError(
            "this model forecasts from previous frames; its likelihood needs a context, which is not supported"
        )
    model.check_data(data, "data")
    if not bool(torch.isfinite(data).all()):
        raise UserError("the data hold NaN or infinite values; the log-likelihood needs finite data")
    null = torch.full((1,), len(model.config.class_names), dtype=torch.long) if model.config.class_names else None
    pieces = []
    for start in range(0, data.shape[0], batch_size):
        rows = data[start : start + batch_size].to(device=model.device, dtype=torch.float32)
        labels = None if null is None else null.expand(rows.shape[0]).to(model.device)

        def score(x: Tensor, t: int, labels: Tensor | None = labels) -> Tensor:
            return model.score(x, max(t, 1), class_labels=labels)  # the network is trained for t ≥ 1

        result = ode_log_likelihood(
            model.process,
            score,
            model.encode(rows),
            nfe=nfe,
            probes=probes,
            exact_dimension_limit=exact_dimension_limit,
            generator=generator,
        )
        pieces.append((result, model.encoding_log_jacobian(rows).to(torch.float64)))
    results = [result for result, _ in pieces]
    errors = [result.probe_standard_error for result in results]
    return LikelihoodResult(
        log_likelihood=torch.cat([result.log_likelihood + jacobian for result, jacobian in pieces]),
        prior_log_likelihood=torch.cat([result.prior_log_likelihood for result in results]),
        probe_standard_error=None if errors[0] is None else torch.cat(errors),  # type: ignore[arg-type]  # all pieces share one estimator: all None or none
        function_evaluations=results[0].function_evaluations,
        steps=results[0].steps,
    )
