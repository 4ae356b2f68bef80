"""The linearised objective (named ``flow`` before 2026-12): ``ForwardProcess.linearised_kernel`` across the window.

The kernel's mean follows the deterministic chain step by step and each element's variance its linearisation.
With window = T (the default) every example starts from the data at s = 0 with h uniform in 1 … T, as in DDPM,
and no chain pool is needed: its target is anchored at the data, so its useful part is not a fraction
≈ h·σ²/Σσ² of a unit-variance noise as the Markov target's is (SPEC §3, §11). But the closure is biased late in
the chain, where the chain is far from Gaussian around its deterministic path (BENCHMARKS.md, "Quality I").
A shorter window draws its starting states from the chain pool, as the Markov objective does.
"""

from __future__ import annotations

from .markov import MarkovObjective


class LinearisedObjective(MarkovObjective):
    """The linearised kernel for every row; window T by default, which anchors every query at the data."""

    corrects_chain_kernel = True
    linearised = True

    def default_window(self, window: int) -> int:
        return window or self.process.steps

    def anchor_horizon(self, anchor: int) -> int:
        return self.process.steps if self.window >= self.process.steps else anchor
