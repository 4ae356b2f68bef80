"""Forward processes behind one interface: Kuramoto (global/local) on the torus, Euclidean VP on ℝ."""

from __future__ import annotations

from .base import ForwardProcess, Step
from .euclidean import EuclideanConfig, EuclideanVPProcess
from .kuramoto import COUPLINGS, KERNELS, PADDINGS, KuramotoConfig, KuramotoProcess, PriorFit
from .schedules import SCHEDULE_SHAPES, cumulative_schedule, vp_cumulative_beta

ProcessConfig = KuramotoConfig | EuclideanConfig

# The names used on the command line and in presets.
PROCESS_CHOICES = ("kuramoto-local", "kuramoto-global", "euclidean")


def build_process(config: ProcessConfig) -> ForwardProcess:
    """The process a config describes."""
    if isinstance(config, KuramotoConfig):
        return KuramotoProcess(config)
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
    "PriorFit",
    "ProcessConfig",
    "Step",
    "build_process",
    "cumulative_schedule",
    "vp_cumulative_beta",
]
