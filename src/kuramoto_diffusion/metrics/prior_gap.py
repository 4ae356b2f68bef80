"""How far a prior's draws are from the forward chain's terminal states (issue 31 §4; docs/priors.md).

``prior_gap`` compares two sets of phase images (batch, channels, height, width), the forward-simulated t = T states
and a prior's draws, by

* the phase-correlation curve: mean over images of cos(θ_p − θ_q) for pixels d = 1 … 8 px apart (both axes averaged;
  ``circular.phase_correlation``); the gap is the largest |difference| over d;
* the order parameter R of each image: the gaps in its mean and in its standard deviation across images;
* a two-sample test: the unbiased MMD² between per-image summary features, with a permutation p-value. The features
  are the correlation curve (d = 1 … 8), R and the alignment mean cos(θ − ψ_ref), each standardised by its pooled
  mean and standard deviation; the kernel is Gaussian, k(x, y) = exp(−|x − y|²/(2h²)), with h the median distance
  between pooled features (the median heuristic), fixed across permutations.

A prior ``passes`` when every gap is within ``PriorTolerance``: correlation 0.05, R mean 0.05, R spread 0.05 and
MMD² 0.05. The tolerance is on effect sizes, which do not shrink with the number of images; the p-value does, and says
whether a gap is resolved at all: with 256 fingerprint crops it resolves a 0.01 shift of the correlation curve
(docs/priors.md), well inside the tolerance.
``compare_priors`` fits a process's priors to training states and reports the gap of every candidate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..circular import order_parameter, phase_correlation
from ..errors import UserError
from ..processes import ForwardProcess, KuramotoProcess, PriorFit
from ..processes.priors import PRIOR_KINDS, PriorKind, prior_chain_steps

GAP_DISTANCES = tuple(range(1, 9))  # px


@dataclass(frozen=True)
class PriorTolerance:
    """The largest gaps at which a prior counts as matching the terminal states."""

    correlation: float = 0.05  # max over d of |Δ mean cos(θ_p − θ_q)|
    order: float = 0.05  # |Δ mean R|
    spread: float = 0.05  # |Δ std R| across images
    mmd2: float = (
        0.05  # unbiased MMD² of the standardised features (kernel units; i.i.d. against ordered fields: ≈ 0.3–1)
    )


@dataclass(frozen=True)
class PriorGap:
    """A prior's draws against forward-simulated terminal states (``prior_gap``); float64 statistics."""

    prior: str
    distances: tuple[int, ...]
    terminal_correlation: tuple[float, ...]  # per distance, mean over images
    prior_correlation: tuple[float, ...]
    correlation_gap: float  # max over distances of |difference|
    terminal_order: tuple[float, float]  # (mean, std over images) of R
    prior_order: tuple[float, float]
    order_gap: float  # |Δ mean R|
    spread_gap: float  # |Δ std R|
    mmd2: float  # unbiased MMD² of the standardised features (kernel units; ≈ 0, possibly < 0, when equal)
    p_value: float  # permutation p-value of the MMD² (≥ 1/(permutations + 1))
    passes: bool
    chain_steps: int = 0  # cost of one draw in chain steps (0 for von Mises, L for relaxed, T for forward-chain)


def image_features(theta: Tensor, distances: tuple[int, ...] = GAP_DISTANCES, ref_phase: float = 0.0) -> Tensor:
    """(batch, len(distances) + 2) float64 per-image summaries: the correlation at each distance (axes averaged),
    R, and mean cos(θ − ψ_ref)."""
    theta = theta.detach().to(torch.float64)
    correlation = phase_correlation(theta, distances).mean(dim=2)
    order, _ = order_parameter(theta)
    alignment = torch.cos(theta - ref_phase).flatten(1).mean(dim=1)
    return torch.cat([correlation, order[:, None], alignment[:, None]], dim=1)


def _mmd2_from_kernel(kernel: Tensor, first: Tensor) -> Tensor:
    """Unbiased MMD² of the pooled kernel matrix (N, N) split by the boolean mask ``first`` (batched over leading
    dims of ``first``: (P, N) masks give (P,) values)."""
    a = first.to(kernel.dtype)
    b = 1.0 - a
    n, m = a.sum(-1), b.sum(-1)
    diagonal = kernel.diagonal()
    within_a = torch.einsum("...i,ij,...j->...", a, kernel, a) - (a * diagonal).sum(-1)
    within_b = torch.einsum("...i,ij,...j->...", b, kernel, b) - (b * diagonal).sum(-1)
    across = torch.einsum("...i,ij,...j->...", a, kernel, b)
    return within_a / (n * (n - 1)) + within_b / (m * (m - 1)) - 2.0 * across / (n * m)


def mmd_test(
    x: Tensor, y: Tensor, permutations: int = 200, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """(unbiased MMD², permutation p-value) of feature sets (n, d) and (m, d), n, m ≥ 2, with the module's kernel:
    features standardised by their pooled mean and std, Gaussian kernel at the median pooled distance."""
    x, y = x.to(torch.float64), y.to(torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 2:
        raise UserError(
            f"the MMD test needs (n, d) and (m, d) features with n, m ≥ 2, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if permutations < 1:
        raise UserError(f"permutations must be ≥ 1, got {permutations}")
    pooled = torch.cat([x, y])
    pooled = (pooled - pooled.mean(0)) / pooled.std(0).clamp_min(1e-12)
    squared = torch.cdist(pooled, pooled).square()
    off_diagonal = squared[~torch.eye(len(pooled), dtype=torch.bool)]
    bandwidth_squared = float(off_diagonal.sqrt().median().square())
    kernel = torch.exp(-squared / (2.0 * max(bandwidth_squared, 1e-12)))
    first = torch.arange(len(pooled)) < len(x)
    observed = float(_mmd2_from_kernel(kernel, first))
    shuffled = torch.stack([first[torch.randperm(len(pooled), generator=generator)] for _ in range(permutations)])
    null = _mmd2_from_kernel(kernel, shuffled)
    p_value = (1 + int((null >= observed).sum())) / (permutations + 1)
    return observed, p_value


def prior_gap(
    terminal: Tensor,
    draws: Tensor,
    *,
    prior: str = "",
    ref_phase: float = 0.0,
    distances: tuple[int, ...] = GAP_DISTANCES,
    tolerance: PriorTolerance = PriorTolerance(),
    permutations: int = 200,
    generator: torch.Generator | None = None,
    chain_steps: int = 0,
) -> PriorGap:
    """The gap of prior ``draws`` to ``terminal`` states, both phase images (batch ≥ 2, channels, height, width)."""
    if terminal.dim() != 4 or draws.dim() != 4 or terminal.shape[1:] != draws.shape[1:]:
        raise UserError(
            f"prior_gap compares phase images of one shape, got {tuple(terminal.shape)} and {tuple(draws.shape)}"
        )
    features_t = image_features(terminal, distances, ref_phase)
    features_p = image_features(draws, distances, ref_phase)
    count = len(distances)
    curve_t, curve_p = features_t[:, :count].mean(0), features_p[:, :count].mean(0)
    order_t = (float(features_t[:, count].mean()), float(features_t[:, count].std()))
    order_p = (float(features_p[:, count].mean()), float(features_p[:, count].std()))
    mmd2, p_value = mmd_test(features_t, features_p, permutations, generator)
    correlation_gap = float((curve_t - curve_p).abs().max())
    order_gap, spread_gap = abs(order_t[0] - order_p[0]), abs(order_t[1] - order_p[1])
    passes = (
        correlation_gap <= tolerance.correlation
        and order_gap <= tolerance.order
        and spread_gap <= tolerance.spread
        and mmd2 <= tolerance.mmd2
    )
    return PriorGap(
        prior,
        tuple(distances),
        tuple(curve_t.tolist()),
        tuple(curve_p.tolist()),
        correlation_gap,
        order_t,
        order_p,
        order_gap,
        spread_gap,
        mmd2,
        p_value,
        passes,
        chain_steps,
    )


def compare_priors(
    process: ForwardProcess,
    theta0: Tensor,
    generator: torch.Generator | None = None,
    candidates: tuple[PriorKind, ...] = PRIOR_KINDS,
    tolerance: PriorTolerance = PriorTolerance(),
    permutations: int = 200,
    draws_generator: torch.Generator | None = None,
) -> tuple[KuramotoProcess, PriorFit]:
    """``process.fit_prior`` on states ``theta0`` (terminal states simulated with ``generator``), with the gap of each
    candidate prior to those terminal states in the report: as many draws as states, drawn on the states' device with
    ``draws_generator`` (on that device; None: fresh randomness), which also seeds the permutations (on the CPU). Gaps
    need phase images at least 9 px a side; other states get none. ``process`` must declare ``compares_priors``."""
    if not (process.compares_priors and isinstance(process, KuramotoProcess)):  # the candidates are Kuramoto's
        raise TypeError(f"{type(process).__name__} offers no choice of prior to compare (compares_priors is False)")
    terminal = process.simulate(theta0, process.steps, generator=generator)
    fitted, report = process.with_prior_from_terminal(terminal, initial=theta0)
    if terminal.dim() != 4 or min(terminal.shape[-2:]) <= max(GAP_DISTANCES) or len(terminal) < 2:
        return fitted, report
    terminal = terminal.detach()
    permutation_generator = _cpu_generator(draws_generator)
    gaps = []
    for prior in candidates:
        candidate = KuramotoProcess(dataclasses.replace(fitted.config, prior=prior))
        draws = candidate.prior_sample(
            tuple(terminal.shape), generator=draws_generator, dtype=terminal.dtype, device=terminal.device
        )
        gaps.append(
            prior_gap(
                terminal.cpu(),
                draws.cpu(),
                prior=prior,
                ref_phase=fitted.config.ref_phase,
                tolerance=tolerance,
                permutations=permutations,
                generator=permutation_generator,
                chain_steps=prior_chain_steps(candidate, prior),
            )
        )
    return fitted, dataclasses.replace(report, gaps=tuple(gaps))


def _cpu_generator(generator: torch.Generator | None) -> torch.Generator | None:
    """The generator itself on the CPU; a device generator seeds a CPU one (the permutations are drawn on the CPU)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
    return torch.Generator().manual_seed(seed)


def cheapest_passing(report: PriorFit) -> str | None:
    """The prior of ``report.gaps`` that passes at the fewest chain steps per draw, or None if none passes."""
    passing = [gap for gap in report.gaps if gap.passes]
    return min(passing, key=lambda gap: gap.chain_steps).prior if passing else None


def resolve_prior(report: PriorFit) -> PriorKind:
    """What ``prior="auto"`` becomes: the cheapest prior within tolerance; if none is, the one of smallest MMD²; without
    gaps (states that are not images), the von Mises prior."""
    if not report.gaps:
        return "von-mises"
    chosen = cheapest_passing(report) or min(report.gaps, key=lambda gap: gap.mmd2).prior
    for kind in PRIOR_KINDS:  # the gaps name their priors as free strings (a gap of unnamed draws has "")
        if kind == chosen:
            return kind
    raise ValueError(f"the gaps name {chosen!r}, not a prior of {PRIOR_KINDS}")


def describe_gaps(report: PriorFit) -> list[str]:
    """One line per candidate prior: its gaps, the test and whether it passes (for the train command's output)."""
    return [
        f"{gap.prior:>13}: correlation gap {gap.correlation_gap:.3f}, R {gap.prior_order[0]:.3f} ± {gap.prior_order[1]:.3f} "
        f"(terminal {gap.terminal_order[0]:.3f} ± {gap.terminal_order[1]:.3f}), MMD² {gap.mmd2:+.4f} p = {gap.p_value:.3f}: "
        f"{'within' if gap.passes else 'outside'} tolerance, {gap.chain_steps} chain steps per draw"
        for gap in report.gaps
    ]
