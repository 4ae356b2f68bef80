"""Forward processes behind one interface: Kuramoto (global/local) on the torus, Euclidean VP on ℝ,
and the joint phase–amplitude process of flows."""

from __future__ import annotations

from typing import Any, cast

from ..errors import UserError
from .base import ForwardProcess, Step
from .euclidean import EuclideanConfig, EuclideanVPProcess
from .kuramoto import KuramotoProcess
from .kuramoto_config import (
    COUPLING_NORMS,
    COUPLING_SHAPES,
    COUPLINGS,
    KERNELS,
    PADDINGS,
    Coupling,
    CouplingNorm,
    CouplingShape,
    KuramotoConfig,
    Padding,
    PriorFit,
)
from .phase_amplitude import PhaseAmplitudeConfig, PhaseAmplitudeProcess
from .priors import PriorKind
from .schedules import SCHEDULE_SHAPES, ScheduleShape, cumulative_schedule, vp_cumulative_beta

ProcessConfig = KuramotoConfig | EuclideanConfig | PhaseAmplitudeConfig

# The processes by name (phase-amplitude is for flow data only; kuramoto-none has no coupling term).
PROCESS_NAMES = ("kuramoto-local", "kuramoto-global", "kuramoto-none", "euclidean", "phase-amplitude")


def process_config(
    name: str,
    *,
    steps: int,
    schedule: ScheduleShape = "linear",
    neighbourhood: int = 5,
    padding: Padding = "reflect",
    phase_range: float | None = None,
    coupling_range: tuple[float, float] | None = None,
    coupling_shape: CouplingShape | None = None,
    coupling_norm: CouplingNorm | None = None,
    ref_strength: float | None = None,
    prior: PriorKind | None = None,
    prior_relax_steps: int | None = None,
) -> ProcessConfig:
    """The config of the process ``name`` (one of ``PROCESS_NAMES``) at T = ``steps``; ``phase_range`` (radians,
    in (0, π)) sets the Kuramoto image encoding θ = a·x. The Kuramoto regime settings ``coupling_range`` (K per step
    at T = 100), ``coupling_shape``, ``coupling_norm`` and ``ref_strength`` (κ_ref ≥ 0), and the prior settings ``prior`` and
    ``prior_relax_steps``, mean what they mean in ``KuramotoConfig``; None takes its default."""
    if name not in PROCESS_NAMES:
        raise UserError(f"unknown process {name!r}; valid values are {', '.join(PROCESS_NAMES)}")
    if phase_range is not None and not name.startswith("kuramoto-"):
        raise UserError(f"phase_range sets the image encoding of the Kuramoto processes; the {name} process has none")
    regime: dict[str, Any] = {
        key: value
        for key, value in (
            ("coupling_range", coupling_range),
            ("coupling_shape", coupling_shape),
            ("coupling_norm", coupling_norm),
            ("ref_strength", ref_strength),
            ("prior", prior),
            ("prior_relax_steps", prior_relax_steps),
        )
        if value is not None
    }
    if regime and not name.startswith("kuramoto-"):
        raise UserError(f"{', '.join(regime)} set(s) the Kuramoto coupling or prior; the {name} process has none")
    extra = {**regime, **({} if phase_range is None else {"phase_range": phase_range})}
    if name == "euclidean":
        return EuclideanConfig(steps=steps)
    if name == "phase-amplitude":
        return PhaseAmplitudeConfig(steps=steps, schedule=schedule, neighbourhood=neighbourhood)
    if coupling_range is not None:
        extra["coupling_range"] = tuple(coupling_range)
    return KuramotoConfig(
        coupling=cast(Coupling, name.split("-", 1)[1]),
        steps=steps,
        schedule=schedule,
        neighbourhood=neighbourhood,
        padding=padding,
        **extra,
    )


# The process class of each config ``kind``: a new process is its module and one line here.
PROCESS_CLASSES: dict[str, type[ForwardProcess]] = {
    "kuramoto": KuramotoProcess,
    "euclidean": EuclideanVPProcess,
    "phase-amplitude": PhaseAmplitudeProcess,
}


def process_class(config: ProcessConfig) -> type[ForwardProcess]:
    """The class of the process a config describes (its classmethods, e.g. ``periodic_channels``, need no instance)."""
    return PROCESS_CLASSES[config.kind]


def build_process(config: ProcessConfig) -> ForwardProcess:
    """The process a config describes."""
    return process_class(config)(config)  # type: ignore[arg-type]  # each class takes its own config kind (the base takes a table)


__all__ = [
    "COUPLINGS",
    "COUPLING_NORMS",
    "COUPLING_SHAPES",
    "KERNELS",
    "PADDINGS",
    "PROCESS_CLASSES",
    "PROCESS_NAMES",
    "SCHEDULE_SHAPES",
    "EuclideanConfig",
    "EuclideanVPProcess",
    "ForwardProcess",
    "KuramotoConfig",
    "KuramotoProcess",
    "PhaseAmplitudeConfig",
    "PhaseAmplitudeProcess",
    "PriorFit",
    "ProcessConfig",
    "Step",
    "build_process",
    "process_class",
    "process_config",
    "cumulative_schedule",
    "vp_cumulative_beta",
]
