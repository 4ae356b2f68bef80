"""Densities on the 2-torus [-π, π)² with exact log densities: the known-density benchmark (SPEC §3, §5).

Every density here is a mixture of products of one-dimensional circular distributions, so it has

- ``log_prob(x)``: the exact log density (per radian²) of points x of shape (N, 2), computed in the
  dtype of ``x`` (pass float64 for reference numerics); periodic: x and x + 2πk give the same value;
- ``sample(n, generator)``: exact samples in [-π, π), shape (n, 2), all randomness from ``generator``;
- ``sample_batch(batch_size, generator)``: the same, so a density is a trainer ``BatchSource``
  (data units are radians, as ``angle_model_config`` expects);
- ``cell_probabilities(bins)``: the probability of each cell of a bins × bins grid on [-π, π)²
  (float64, sums to 1), exact or by high-order quadrature; the histogram metrics of
  ``metrics/density.py`` compare sample histograms against it.

The registered densities (``TORUS_DENSITIES``, opened by name with ``open_torus_source``):

- "wrapped-mixture": five product-wrapped-normal components, three of which straddle a seam
  (one at θ₁ = ±π, one at θ₂ = ±π, one at the corner where both seams meet); scales 0.3 … 0.5 rad,
  one component anisotropic. The SPEC's "2-torus mixture" in spirit (its exact parameters are not
  published); a model that does not handle the seam splits or loses the straddling components.
- "von-mises-mixture": four product-von-Mises components (κ 3 … 12, one anisotropic), one
  straddling the θ₁ seam.
- "checkerboard": uniform on alternate squares of a 4 × 4 grid on [-π, π)²; sharp edges, zero
  density on half the torus.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..circular import TWO_PI, von_mises_log_prob, von_mises_sample, wrap, wrapped_normal_log_prob
from ..errors import UserError

__all__ = [
    "TORUS_DENSITIES",
    "TorusCheckerboard",
    "TorusDensity",
    "VonMisesMixture",
    "WrappedNormalMixture",
    "open_torus_source",
]

# Gauss–Legendre nodes per cell side for densities without closed-form cell masses: smooth
# integrands (von Mises, wrapped normal) are integrated to float64 precision at 50 bins.
_QUADRATURE_ORDER = 16


def _to_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast angles in [-π, π) to ``dtype`` and keep them there (float32(π) rounds up past π)."""
    x = x.to(dtype)
    return torch.where(x >= math.pi, x - TWO_PI, x)


def _check_points(x: Tensor) -> None:
    if x.dim() != 2 or x.shape[1] != 2:
        raise UserError(f"points on the 2-torus must have shape (N, 2), got {tuple(x.shape)}")


def _grid_edges(bins: int) -> Tensor:
    if bins < 1:
        raise UserError(f"bins must be ≥ 1, got {bins}")
    return torch.linspace(-math.pi, math.pi, bins + 1, dtype=torch.float64)


def _gauss_legendre_nodes(edges: Tensor, order: int = _QUADRATURE_ORDER) -> tuple[Tensor, Tensor]:
    """Nodes (bins, order) and weights (bins, order) of Gauss–Legendre quadrature inside each interval."""
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(order)
    unit_nodes = torch.as_tensor(nodes, dtype=torch.float64)
    unit_weights = torch.as_tensor(weights, dtype=torch.float64)
    lower, upper = edges[:-1, None], edges[1:, None]
    half = 0.5 * (upper - lower)
    return lower + half * (unit_nodes + 1.0), half * unit_weights


class TorusDensity(ABC):
    """A probability density on [-π, π)² with an exact ``log_prob`` and an exact sampler."""

    name: str = "torus-density"
    dims: int = 2

    @abstractmethod
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log density (per radian²) at points x (N, 2), in x's dtype; periodic in each angle."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` exact samples (n, 2) in [-π, π); all randomness from ``generator``."""

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """A float32 training batch (batch_size, 2) of radians: the trainer's ``BatchSource`` interface."""
        return self.sample(batch_size, generator)

    def cell_probabilities(self, bins: int) -> Tensor:
        """Probabilities (bins, bins), float64, of the cells of a bins × bins grid on [-π, π)².

        Cell (i, j) is [e_i, e_{i+1}) × [e_j, e_{j+1}) with e = linspace(-π, π, bins + 1); the
        first axis is θ₁. The default integrates ``log_prob`` by tensor-product Gauss–Legendre
        quadrature inside each cell; subclasses override it with exact or separable forms.
        """
        nodes, weights = _gauss_legendre_nodes(_grid_edges(bins))
        flat_nodes, flat_weights = nodes.reshape(-1), weights.reshape(-1)
        q = flat_nodes.numel()
        grid = torch.stack(torch.meshgrid(flat_nodes, flat_nodes, indexing="ij"), dim=-1).reshape(-1, 2)
        density = torch.exp(self.log_prob(grid)).reshape(q, q) * flat_weights[:, None] * flat_weights[None, :]
        order = nodes.shape[1]
        cells = density.reshape(bins, order, bins, order).sum(dim=(1, 3))
        return cells / cells.sum()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class _ProductMixture(TorusDensity):
    """Σ_c w_c · f_c(θ₁) · g_c(θ₂) with one-dimensional circular factors; parameters of shape (C, 2)."""

    def __init__(
        self, means: Sequence[Sequence[float]], spreads: object, weights: Sequence[float] | None, what: str
    ) -> None:
        means_t = torch.as_tensor([tuple(m) for m in means], dtype=torch.float64)
        if means_t.dim() != 2 or means_t.shape[1] != 2 or means_t.shape[0] < 1:
            raise UserError(f"means must be a non-empty list of (θ₁, θ₂) pairs, got {means!r}")
        count = means_t.shape[0]
        self.means = wrap(means_t)
        self.spreads = _per_component_pairs(spreads, count, what)
        if weights is None:
            weights_t = torch.full((count,), 1.0 / count, dtype=torch.float64)
        else:
            weights_t = torch.as_tensor(list(weights), dtype=torch.float64)
            if weights_t.shape != (count,) or not bool((weights_t >= 0).all()) or not float(weights_t.sum()) > 0:
                raise UserError(f"weights must be {count} non-negative numbers with a positive sum, got {weights!r}")
        self.weights = weights_t / weights_t.sum()

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    @abstractmethod
    def _log_factor(self, x: Tensor, mean: Tensor, spread: Tensor) -> Tensor:
        """Log density of the 1-D factor at x (broadcast over components)."""

    @abstractmethod
    def _sample_factor(self, n: int, spread: float, generator: torch.Generator | None) -> Tensor:
        """``n`` float64 samples of the 1-D factor centred at 0 (unwrapped is fine)."""

    def _bin_masses(self, edges: Tensor) -> Tensor:
        """Masses (C, 2, bins) of each component's factors on the intervals of ``edges`` (quadrature)."""
        nodes, weights = _gauss_legendre_nodes(edges)
        x = nodes.reshape(1, 1, -1)
        log_f = self._log_factor(x, self.means[:, :, None], self.spreads[:, :, None])
        masses = (torch.exp(log_f).reshape(*log_f.shape[:2], *nodes.shape) * weights).sum(-1)
        return masses

    def log_prob(self, x: Tensor) -> Tensor:
        _check_points(x)
        means = self.means.to(x.device, x.dtype)
        spreads = self.spreads.to(x.device, x.dtype)
        log_factors = self._log_factor(x[:, None, :], means[None], spreads[None])  # (N, C, 2)
        log_components = log_factors.sum(-1) + torch.log(self.weights.to(x.device, x.dtype))
        return torch.logsumexp(log_components, dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float32) -> Tensor:
        if n < 0:
            raise UserError(f"number of samples must be ≥ 0, got {n}")
        component = (
            torch.multinomial(self.weights, n, replacement=True, generator=generator)
            if n
            else torch.zeros(0, dtype=torch.long)
        )
        out = torch.empty(n, 2, dtype=torch.float64)
        for c in range(self.num_components):
            index = (component == c).nonzero().squeeze(1)
            if index.numel() == 0:
                continue
            for d in range(2):
                offsets = self._sample_factor(index.numel(), float(self.spreads[c, d]), generator)
                out[index, d] = self.means[c, d] + offsets
        return _to_dtype(wrap(out), dtype)

    def cell_probabilities(self, bins: int) -> Tensor:
        masses = self._bin_masses(_grid_edges(bins))  # (C, 2, bins)
        cells = torch.einsum("c,ci,cj->ij", self.weights, masses[:, 0], masses[:, 1])
        return cells / cells.sum()


def _per_component_pairs(value: object, count: int, what: str) -> Tensor:
    """A float, a list of floats, or a list of (dim-1, dim-2) pairs → a positive (C, 2) float64 tensor."""
    if isinstance(value, (int, float)):
        rows: list[tuple[float, ...]] = [(float(value), float(value))] * count
    else:
        items = list(value)  # type: ignore[call-overload]  # value: object from JSON/kwargs; a non-iterable raises TypeError, reported below
        if len(items) != count:
            raise UserError(f"need one {what} per component ({count}), got {len(items)}")
        rows = [(float(v), float(v)) if isinstance(v, (int, float)) else tuple(float(u) for u in v) for v in items]
    tensor = torch.as_tensor(rows, dtype=torch.float64)
    if tensor.shape != (count, 2) or not bool(torch.isfinite(tensor).all()) or not bool((tensor > 0).all()):
        raise UserError(f"each {what} must be a positive number or a pair of positive numbers, got {value!r}")
    return tensor


class WrappedNormalMixture(_ProductMixture):
    """Σ_c w_c · WN(θ₁; μ_c1, σ_c1²) · WN(θ₂; μ_c2, σ_c2²).

    ``scales`` is one σ for all components, one σ per component, or one (σ₁, σ₂) pair per
    component (radians; 1e-3 … 10). Cell probabilities are exact (sums of normal CDFs).
    """

    def __init__(
        self,
        means: Sequence[Sequence[float]],
        scales: Sequence[float | Sequence[float]] | float,
        weights: Sequence[float] | None = None,
        *,
        name: str = "wrapped-normal-mixture",
    ) -> None:
        super().__init__(means, scales, weights, "scale")
        self.name = name

    @property
    def scales(self) -> Tensor:
        return self.spreads

    def _log_factor(self, x: Tensor, mean: Tensor, spread: Tensor) -> Tensor:
        return wrapped_normal_log_prob(x, mean, spread)

    def _sample_factor(self, n: int, spread: float, generator: torch.Generator | None) -> Tensor:
        return spread * torch.randn(n, generator=generator, dtype=torch.float64)

    def _bin_masses(self, edges: Tensor) -> Tensor:
        # Mass of [a, b) under WN(μ, σ²) = Σ_k Φ((b − μ + 2πk)/σ) − Φ((a − μ + 2πk)/σ), μ ∈ [-π, π).
        k_max = math.ceil((9.0 * float(self.spreads.max()) + math.pi) / TWO_PI) + 1
        shifts = TWO_PI * torch.arange(-k_max, k_max + 1, dtype=torch.float64)
        mean, scale = self.means[:, :, None, None], self.spreads[:, :, None, None]
        cdf = torch.special.ndtr((edges[None, None, :, None] - mean + shifts) / scale).sum(-1)  # (C, 2, bins + 1)
        return cdf[..., 1:] - cdf[..., :-1]


class VonMisesMixture(_ProductMixture):
    """Σ_c w_c · VM(θ₁; μ_c1, κ_c1) · VM(θ₂; μ_c2, κ_c2).

    ``concentrations`` is one κ for all, one per component, or one (κ₁, κ₂) pair per component.
    Cell probabilities by 16-point Gauss–Legendre quadrature per cell and axis (float64-exact for
    κ up to a few hundred at 50 bins).
    """

    def __init__(
        self,
        means: Sequence[Sequence[float]],
        concentrations: Sequence[float | Sequence[float]] | float,
        weights: Sequence[float] | None = None,
        *,
        name: str = "von-mises-mixture",
    ) -> None:
        super().__init__(means, concentrations, weights, "concentration")
        self.name = name

    @property
    def concentrations(self) -> Tensor:
        return self.spreads

    def _log_factor(self, x: Tensor, mean: Tensor, spread: Tensor) -> Tensor:
        return von_mises_log_prob(x, mean, spread)

    def _sample_factor(self, n: int, spread: float, generator: torch.Generator | None) -> Tensor:
        return von_mises_sample((n,), 0.0, spread, generator=generator, dtype=torch.float64)


class TorusCheckerboard(TorusDensity):
    """Uniform on the squares (i, j) with i + j even of a cells × cells grid on [-π, π)².

    Square (i, j) is [-π + i·w, -π + (i+1)·w) × [-π + j·w, -π + (j+1)·w), w = 2π/cells. ``cells``
    must be even, so that the pattern alternates across the seams too. The density is
    2/(2π)² on the "on" squares and 0 (log −inf) elsewhere; cell probabilities are exact for any grid.
    """

    def __init__(self, cells: int = 4, *, name: str = "checkerboard") -> None:
        if cells < 2 or cells % 2:
            raise UserError(f"checkerboard cells must be an even number ≥ 2, got {cells}")
        self.cells = cells
        self.name = name
        self.width = TWO_PI / cells
        self.log_density = math.log(2.0) - 2.0 * math.log(TWO_PI)

    def _square_index(self, x: Tensor) -> Tensor:
        index = torch.floor((wrap(x) + math.pi) / self.width).long()
        return index.clamp(0, self.cells - 1)

    def log_prob(self, x: Tensor) -> Tensor:
        _check_points(x)
        index = self._square_index(x)
        on = (index.sum(dim=1) % 2) == 0
        inside = torch.full(on.shape, self.log_density, dtype=x.dtype, device=x.device)
        return torch.where(on, inside, torch.full_like(inside, -math.inf))

    def sample(self, n: int, generator: torch.Generator | None = None, *, dtype: torch.dtype = torch.float32) -> Tensor:
        if n < 0:
            raise UserError(f"number of samples must be ≥ 0, got {n}")
        # Pick a row i and an "on" column j = (i + even offset) uniformly, then a uniform point in the square.
        row = torch.randint(0, self.cells, (n,), generator=generator)
        column = (row + 2 * torch.randint(0, self.cells // 2, (n,), generator=generator)) % self.cells
        within = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        corner = torch.stack([row, column], dim=1).to(torch.float64) * self.width - math.pi
        return _to_dtype(wrap(corner + within * self.width), dtype)

    def cell_probabilities(self, bins: int) -> Tensor:
        edges = _grid_edges(bins)
        square_edges = torch.linspace(-math.pi, math.pi, self.cells + 1, dtype=torch.float64)
        # overlap[i, a] = length of grid interval i ∩ square interval a.
        lower = torch.maximum(edges[:-1, None], square_edges[None, :-1])
        upper = torch.minimum(edges[1:, None], square_edges[None, 1:])
        overlap = (upper - lower).clamp_min(0.0)
        index = torch.arange(self.cells)
        on = ((index[:, None] + index[None, :]) % 2 == 0).to(torch.float64)
        cells = overlap @ on @ overlap.T * math.exp(self.log_density)
        return cells / cells.sum()


# ----- the registry ---------------------------------------------------------------------


def wrapped_mixture() -> WrappedNormalMixture:
    """Five product wrapped normals; three straddle a seam (θ₁ = ±π, θ₂ = ±π, and the corner)."""
    return WrappedNormalMixture(
        means=[(3.0, 0.8), (-2.7, -2.8), (0.0, 0.0), (0.6, 2.9), (-1.5, 1.6)],
        scales=[0.35, 0.4, 0.3, (0.5, 0.25), 0.45],
        weights=[0.25, 0.15, 0.2, 0.15, 0.25],
        name="wrapped-mixture",
    )


def von_mises_mixture() -> VonMisesMixture:
    """Four product von Mises; one straddles the θ₁ seam, one is anisotropic (κ 12 by 3)."""
    return VonMisesMixture(
        means=[(math.pi, 0.0), (-1.0, 2.0), (1.5, -2.5), (-2.0, -1.0)],
        concentrations=[8.0, 4.0, (12.0, 3.0), 6.0],
        weights=[0.3, 0.2, 0.25, 0.25],
        name="von-mises-mixture",
    )


def checkerboard() -> TorusCheckerboard:
    """Uniform on alternate squares of a 4 × 4 grid (squares of side π/2)."""
    return TorusCheckerboard(cells=4, name="checkerboard")


TORUS_DENSITIES: dict[str, Callable[[], TorusDensity]] = {
    "wrapped-mixture": wrapped_mixture,
    "von-mises-mixture": von_mises_mixture,
    "checkerboard": checkerboard,
}


def open_torus_source(name: str) -> TorusDensity:
    """The registered torus density called ``name`` (see ``TORUS_DENSITIES``)."""
    factory = TORUS_DENSITIES.get(name) if isinstance(name, str) else None
    if factory is None:
        raise UserError(f"unknown torus density {name!r}; valid names are {', '.join(TORUS_DENSITIES)}")
    return factory()
