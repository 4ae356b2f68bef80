"""Forward processes behind one interface: Kuramoto (global/local) on the torus, Euclidean VP on ℝ,
and the joint phase–amplitude process of flows."""

from __future__ import annotations

from ..errors import UserError
from .base import ForwardProcess, Step
from .euclidean import EuclideanConfig, EuclideanVPProcess
from .kuramoto import COUPLINGS, KERNELS, PADDINGS, KuramotoConfig, KuramotoProcess, PriorFit
from .phase_amplitude import PhaseAmplitudeConfig, PhaseAmplitudeProcess
from .schedules import SCHEDULE_SHAPES, cumulative_schedule, vp_cumulative_beta

ProcessConfig = KuramotoConfig | EuclideanConfig | PhaseAmplitudeConfig

# The processes by name (phase-amplitude is for flow data only).
PROCESS_NAMES = ("kuramoto-local", "kuramoto-global", "euclidean", "phase-amplitude")


def process_config(
    name: str, *, steps: int, schedule: str = "linear", neighbourhood: int = 5, padding: str = "reflect",
    phase_range: float | None = None,
) -> ProcessConfig:
    """The config of the process ``name`` (one of ``PROCESS_NAMES``) at T = ``steps``; ``phase_range`` (radians,
    in (0, π)) sets the Kuramoto image encoding θ = a·x (None: KuramotoConfig's default, 0.5π)."""
    if name not in PROCESS_NAMES:
        raise UserError(f"unknown process {name!r}; valid values are {', '.join(PROCESS_NAMES)}")
    if phase_range is not None and not name.startswith("kuramoto-"):
        raise UserError(f"phase_range sets the image encoding of the Kuramoto processes; the {name} process has none")
    if name == "euclidean":
        return EuclideanConfig(steps=steps)
    if name == "phase-amplitude":
        return PhaseAmplitudeConfig(steps=steps, schedule=schedule, neighbourhood=neighbourhood)
    extra = {} if phase_range is None else {"phase_range": phase_range}
    return KuramotoConfig(coupling=name.split("-", 1)[1], steps=steps, schedule=schedule, neighbourhood=neighbourhood,
                          padding=padding, **extra)


def build_process(config: ProcessConfig) -> ForwardProcess:
    """The process a config describes."""
    if isinstance(config, KuramotoConfig):
        return KuramotoProcess(config)
    if isinstance(config, PhaseAmplitudeConfig):
        return PhaseAmplitudeProcess(config)
    return EuclideanVPProcess(config)


__all__ = [
    "COUPLINGS",
    "KERNELS",
    "PADDINGS",
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
    "process_config",
    "cumulative_schedule",
    "vp_cumulative_beta",
]
