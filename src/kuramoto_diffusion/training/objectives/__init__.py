"""DSM objectives (SPEC §3): each one class in its own module, named in ``OBJECTIVES``.

An objective owns what it needs (process, window, anchor, draws, chain pool, data) and offers two calls:
``examples(batch, generator) -> DSMExample`` and ``loss(network, example)``. The trainer calls those two
and knows nothing of kernels. Capabilities are class attributes of ``Objective``.

To add an objective: a module with a subclass of ``Objective`` (``starting_states``/``chain_strides`` and
``draw``), one line in ``OBJECTIVES`` per name, and the name in ``config.Objective`` (a test checks the two
agree).
"""

from __future__ import annotations

from typing import NamedTuple

from ...config import Objective as ObjectiveName
from ...config import TrainConfig
from ...processes import ForwardProcess
from ..chain_pool import default_pool_advance, default_pool_size
from .base import (
    NO_CONDITIONING,
    Conditioning,
    DataFn,
    DSMExample,
    Objective,
    StartingStates,
    dsm_loss,
    kernel_draw,
    kernel_example,
    kernel_noise,
)
from .linearised import LinearisedObjective
from .markov import DEFAULT_MARKOV_WINDOW, MarkovObjective, window_strides
from .propagated import (
    PropagatedObjective,
    compile_propagated_steps,
    propagated_chain_step,
    propagated_draw,
    propagation_schedule,
)


class ObjectiveChoice(NamedTuple):
    """What an objective name means: its class, and whether each state's draws come in ±z pairs."""

    kind: type[Objective]
    antithetic: bool = False


# Every objective name of ``config.Objective`` but "auto" (resolved by ``resolve_objective``).
OBJECTIVES: dict[str, ObjectiveChoice] = {
    "markov": ObjectiveChoice(MarkovObjective),
    "antithetic": ObjectiveChoice(MarkovObjective, antithetic=True),
    "linearised": ObjectiveChoice(LinearisedObjective),
    "linearised-antithetic": ObjectiveChoice(LinearisedObjective, antithetic=True),
    "propagated": ObjectiveChoice(PropagatedObjective),
    "propagated-antithetic": ObjectiveChoice(PropagatedObjective, antithetic=True),
}


def resolve_objective(
    objective: ObjectiveName, process: ForwardProcess, window: int = 0, anchor: int = 0
) -> ObjectiveName:
    """``objective``, or for "auto" the measured best the process supports: ``propagated`` where the process has a
    contraction bound (Kuramoto), ``markov`` elsewhere (DDPM's ε-loss for the Euclidean process, whose strides are
    exact; the phase–amplitude process has no bound yet), and ``markov`` whenever a window above 1 or an anchor is
    set, the settings of the merged-window objective. BENCHMARKS.md, "Quality I"."""
    if objective != "auto":
        return objective
    propagated = OBJECTIVES["propagated"].kind
    fits = (
        not (propagated.corrects_chain_kernel and process.closed_form_marginal)
        and (propagated.takes_window or window <= 1)
        and (propagated.takes_anchor or not anchor)
        and (process.contraction_bounded or not propagated.needs_contraction_bound)
    )
    return "propagated" if fits else "markov"


def build_objective(process: ForwardProcess, training: TrainConfig, **settings) -> Objective:  # noqa: ANN003
    """The objective ``training.objective`` names ("auto" resolved for ``process``), built on ``process`` with
    ``training``'s settings; ``settings``: ``Objective``'s keyword arguments (data, rows, conditioning,
    autocast_dtype). Raises a UserError for settings the objective or the process cannot use."""
    choice = OBJECTIVES[resolve_objective(training.objective, process, training.window, training.anchor)]
    return choice.kind(process, training, antithetic=choice.antithetic, **settings)


__all__ = [
    "DEFAULT_MARKOV_WINDOW",
    "NO_CONDITIONING",
    "OBJECTIVES",
    "Conditioning",
    "DSMExample",
    "DataFn",
    "LinearisedObjective",
    "MarkovObjective",
    "Objective",
    "ObjectiveChoice",
    "PropagatedObjective",
    "StartingStates",
    "build_objective",
    "default_pool_advance",
    "default_pool_size",
    "dsm_loss",
    "kernel_draw",
    "kernel_example",
    "kernel_noise",
    "propagated_chain_step",
    "propagated_draw",
    "compile_propagated_steps",
    "propagation_schedule",
    "resolve_objective",
    "window_strides",
]
