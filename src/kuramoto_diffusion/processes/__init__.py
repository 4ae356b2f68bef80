"""Forward processes behind one interface: Kuramoto (global/local) on the torus, Euclidean VP on ℝ,
and the joint phase–amplitude process of flows."""

from __future__ import annotations

from .base import ForwardProcess, Step
from .euclidean import EuclideanConfig, EuclideanVPProcess
from .kuramoto import COUPLINGS, KERNELS, PADDINGS, KuramotoConfig, KuramotoProcess, PriorFit
from .phase_amplitude import PhaseAmplitudeConfig, PhaseAmplitudeProcess
from .schedules import SCHEDULE_SHAPES, cumulative_schedule, vp_cumulative_beta

ProcessConfig = KuramotoConfig | EuclideanConfig | PhaseAmplitudeConfig

# The names used on the command line and in presets (phase-amplitude is for flow data only).
PROCESS_CHOICES = ("kuramoto-local", "kuramoto-global", "euclidean", "phase-amplitude")


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
    "PROCESS_CHOICES",
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
    "cumulative_schedule",
    "vp_cumulative_beta",
]
