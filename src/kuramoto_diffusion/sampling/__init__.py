"""Generation: the reverse steps and their registry (steps.py), time grids (grids.py), the reverse sweep
(sweep.py), inpainting (inpainting.py), the one-call-at-a-time scheduler (scheduler.py), its diffusers
adapter (diffusers.py, optional) and the probability-flow likelihood (likelihood.py)."""

from .inpainting import inpaint_sweep
from .steps import REVERSE_STEPS, SAMPLERS, Sampler
from .sweep import SampleResult, reverse_sweep

__all__ = ["REVERSE_STEPS", "SAMPLERS", "SampleResult", "Sampler", "inpaint_sweep", "reverse_sweep"]
