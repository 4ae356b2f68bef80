"""Generation: the reverse sweep and its steps (sweep.py), the one-call-at-a-time scheduler (scheduler.py),
its diffusers adapter (diffusers.py, optional) and the probability-flow likelihood (likelihood.py)."""

from .sweep import SAMPLERS, Sampler, SampleResult, inpaint_sweep, reverse_sweep

__all__ = ["SAMPLERS", "SampleResult", "Sampler", "inpaint_sweep", "reverse_sweep"]
