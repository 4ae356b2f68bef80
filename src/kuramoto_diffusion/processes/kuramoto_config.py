"""The Kuramoto process's settings (``KuramotoConfig``, checked when built), their choices, and ``PriorFit``,
how its terminal states compare with a von Mises prior; kuramoto.py is the process itself."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, get_args

from ..circular import (
    IMAGE_PHASE_RANGE,
    PAPER_PHASE_RANGE,
)
from ..errors import UserError
from ..serialization import check_choices
from .priors import PriorKind
from .schedules import ScheduleShape

if TYPE_CHECKING:
    from ..metrics.prior_gap import PriorGap

Coupling = Literal["global", "local", "none"]
CouplingNorm = Literal["mean-field", "unit"]
CouplingShape = Literal["schedule", "constant"]
COUPLINGS: tuple[str, ...] = get_args(Coupling)
COUPLING_NORMS: tuple[str, ...] = get_args(CouplingNorm)
COUPLING_SHAPES: tuple[str, ...] = get_args(CouplingShape)
# ε of the unit-modulus coupling's √(|m|² + ε²) in place of |m|: smooth at m = 0, where sin(arg m − θ) jumps,
# with |∂C_i/∂θ_i| ≤ w_self/ε there; within 6e-6 relative of |m| for |m| ≥ 0.03 (≈ |m| of 1024 random phases;
# a 5×5 box of random phases has |m| ≈ 0.2).
UNIT_NORM_GUARD = 1e-4
Padding = Literal["reflect", "circular"]
Kernel = Literal["box", "gaussian"]
PADDINGS: tuple[str, ...] = get_args(Padding)
KERNELS: tuple[str, ...] = get_args(Kernel)


@dataclass(frozen=True)
class KuramotoConfig:
    """Settings of a Kuramoto forward process; the defaults are the authors' image settings at T = 100,
    but for the phase range, which is measured (BENCHMARKS.md)."""

    kind: Literal["kuramoto"] = "kuramoto"
    coupling: Coupling = "global"
    neighbourhood: int = 5  # M of the M×M local kernel (pixels); even sizes are allowed
    kernel: Kernel = "box"  # box: uniform M×M; gaussian: std M/4, truncated to M×M
    padding: Padding = "reflect"  # reflect for photos; circular for spatially periodic data
    ref_phase: float = 0.0  # ψ_ref, radians
    ref_strength: float = 1.5  # κ_ref, pull towards ψ_ref relative to the coupling
    steps: int = 100  # T
    schedule: ScheduleShape = "linear"
    coupling_range: tuple[float, float] = (3e-5, 0.03)  # K per step at the 100-step reference
    noise_var_range: tuple[float, float] = (1e-4, 0.1)  # σ² per step at the 100-step reference
    prior_concentration: float = 1.2  # κ of the von Mises prior; 1.2 is the authors' hard-coded value
    phase_range: float = IMAGE_PHASE_RANGE  # a of the image encoding θ = a·x (radians, in (0, π)); the paper's: 0.9π
    # mean-field: C_i = Im(m_i e^{−iθ_i}) (|C| ≤ |m_i| ≤ 1); unit: C_i = sin(arg m_i − θ_i), the authors' strength
    coupling_norm: CouplingNorm = "mean-field"
    # schedule: K follows ``schedule`` from coupling_range[0] to [1]; constant: K = coupling_range[1] every step
    coupling_shape: CouplingShape = "schedule"
    # The prior at t = T (processes/priors.py, docs/priors.md): von-mises, i.i.d. von Mises(ψ_ref, prior_concentration);
    # relaxed, those draws moved prior_relax_steps steps of the chain at its t = T rates (a Langevin sampler of the
    # terminal law); forward-chain, the chain run t = 0 … T from a per-image common phase ~ von Mises(prior_start_phase,
    # prior_start_concentration) plus i.i.d. deviations ~ von Mises(0, prior_start_deviation) (fitted by fit_prior).
    prior: PriorKind = "von-mises"
    prior_relax_steps: int = 200  # L ≥ 0 of the relaxed prior
    prior_start_phase: float = 0.0  # radians
    prior_start_concentration: float = 0.0  # κ ≥ 0 of the per-image common phase (0: uniform)
    prior_start_deviation: float = 0.0  # κ ≥ 0 of the i.i.d. deviations from it (0: uniform)

    # Models saved before phase_range was a setting were trained with the paper's 0.9π.
    ABSENT_KEY_VALUES: ClassVar[dict[str, float]] = {"phase_range": PAPER_PHASE_RANGE}

    def __post_init__(self) -> None:
        check_choices(self)
        if self.coupling == "none" and self.coupling_norm != "mean-field":
            raise UserError(
                f"coupling_norm {self.coupling_norm!r} normalises a coupling; with coupling 'none' leave it 'mean-field'"
            )
        if self.neighbourhood < 1:
            raise UserError(f"neighbourhood must be ≥ 1 pixel, got {self.neighbourhood}")
        if self.steps < 1:
            raise UserError(f"steps must be ≥ 1, got {self.steps}")
        if len(self.coupling_range) != 2 or not all(math.isfinite(k) and k >= 0 for k in self.coupling_range):
            raise UserError(
                f"coupling_range must be two finite values ≥ 0 (K per step at T = 100), got {tuple(self.coupling_range)}"
            )
        if min(self.noise_var_range) <= 0:
            raise UserError("noise_var_range must be > 0")
        if not (math.isfinite(self.ref_strength) and self.ref_strength >= 0):
            raise UserError(f"ref_strength (κ_ref) must be finite and ≥ 0, got {self.ref_strength!r}")
        if not (math.isfinite(self.phase_range) and 0 < self.phase_range < math.pi):
            raise UserError(
                f"phase_range must be in (0, π) radians (black and white meet at ±π), got {self.phase_range!r}"
            )
        if not math.isfinite(self.prior_concentration) or self.prior_concentration < 0:
            raise UserError(f"prior_concentration must be finite and ≥ 0, got {self.prior_concentration}")
        if (
            isinstance(self.prior_relax_steps, bool)
            or not isinstance(self.prior_relax_steps, int)
            or self.prior_relax_steps < 0
        ):
            raise UserError(
                f"prior_relax_steps must be an integer ≥ 0 (chain steps of the relaxed prior), got {self.prior_relax_steps!r}"
            )
        for name in ("prior_start_concentration", "prior_start_deviation"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise UserError(f"{name} must be finite and ≥ 0, got {getattr(self, name)!r}")
        if not math.isfinite(self.prior_start_phase):
            raise UserError(f"prior_start_phase must be finite (radians), got {self.prior_start_phase!r}")


@dataclass(frozen=True)
class PriorFit:
    """How the terminal states of the forward process compare with a von Mises prior."""

    concentration: float  # maximum-likelihood κ with the mean fixed at ψ_ref
    mean_direction: float  # free-fitted mean of the terminal states (radians); ≈ ψ_ref when the process is done
    mean_resultant_length: float  # R̄ of all terminal values
    moment_gaps: tuple[float, ...]  # |E cos(n(θ−ψ_ref)) − I_n(κ)/I_0(κ)| for n = 1, 2, 3
    sine_moment: float  # |E sin(θ − ψ_ref)|, zero for a symmetric prior
    terminal_order_parameter: float  # mean over examples of R at t = T
    # The forward-chain prior's start fitted to the initial states (KuramotoConfig.prior_start_*); None: not fitted
    start: tuple[float, float, float] | None = None
    # Each candidate prior's gap to the terminal states (metrics.prior_gap.compare_priors fills it)
    gaps: tuple[PriorGap, ...] = ()
