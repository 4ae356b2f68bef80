"""The exact marginal p_t of the discrete Kuramoto chain on the 2-torus, propagated on a grid (SPEC §2, §3, §11).

For states of two phases x = (x₁, x₂) ∈ [-π, π)² and global coupling, one step of
``KuramotoProcess.step`` is x' = wrap(μ_t(x) + σ_t z) with μ_t(x) = ``transition_mean(x, t)``
= wrap(x + K_t Δ(x)) and σ_t = ``transition_scale(t)``. Given x the kernel factorises over the
two coordinates, so the marginal obeys

    p_{t+1}(y) = ∫ p_t(x) · WN(y₁; μ₁(x), σ_t) · WN(y₂; μ₂(x), σ_t) dx                         (1)

(WN the wrapped normal of ``circular.wrapped_normal_log_prob``). ``ChainMarginal`` evaluates (1)
on G × G nodes, the cell centres c_i = −π + (i + ½)h, h = 2π/G, of a periodic grid. With the
cell masses M_t = p_t(c) h² and the kernel matrices A_k[x, j] ∝ WN(c_j; μ_k(x), s) over the G²
nodes x (G² × G), one step is a matrix product, O(G⁴):

    M_{t+1} = A₁ᵀ · diag(M_t) · A₂,    each row of A_k normalised over j (Σ_j A_k[x, j] = 1)       (2)

The row normalisation conserves the mass exactly (Σ M_t = 1 to rounding at every t).

Discretisation. (2) is the periodic midpoint rule for the x-integral of (1). For a band-limited
p_t it converges like exp(−2π² s²/h²): at s = h that is 3e-9 per step, at s = 1.2 h 5e-13. The
chain's own σ_t is far below h early on (σ₀ = 0.01 at T = 100, 0.003 at T = 1000, against
h = 0.049 at G = 128); there the plain rule fails: the kernel of a node collapses onto the nearest
node and drift and noise are lost (at T = 1000 the first ≈ 350 steps have σ_t < 1.2 h; measured
with the plain rule at G = 96: p-weighted score error 3e-2 at t = 25 and 0.12 at t = 50 of
T = 1000, 1.5e-2 at t = 5 of T = 100 with G = 64). So each step uses the scale
s = max(σ_t, ``widen``·h) in (2) (``widen`` = 1.2), and when s > σ_t removes the extra variance
s² − σ_t² exactly afterwards in Fourier space, where a wrapped normal of variance v is the
multiplier exp(−v k²/2) on the integer frequency k of each axis:

    p̂_{t+1}(k) = exp(+(s² − σ_t²)(k₁² + k₂²)/2) · M̂_{t+1}(k)   for |k₁|, |k₂| ≤ G/3, 0 beyond        (3)

(3) is exact because the step is "push forward by μ, then convolve with the product wrapped
normal", and the convolutions of (2) and of the inverse multiplier compose to the one of σ_t. The
band limit G/3 is needed for stability: near the Nyquist frequency the discrete kernel's aliases
make (2) blur less than the continuous one, and the gain of (3) would then grow those modes
(measured: blow-up within 150 steps of T = 1000 without it). Below G/3 the alias excess is
< exp(−9.5) per step and the gain ≤ exp(widen²·2π²/9) ≈ 23. The cut costs the content of p_t above
G/3 in those steps: exp(−55) relative for the narrowest "wrapped-mixture" component (0.25 rad) at
G = 128, 3e-8 at G = 64. With σ_t ≥ widen·h, (2) is used as it is.

Start and band limit. p₀ is the data density at the nodes (``density.log_prob`` at the cell
centres), not its cell average: the nodes carry the samples of a smooth periodic function, which
the midpoint rule integrates with spectral accuracy, while a cell average is that function
filtered by a box (Fourier factor sinc²(kh/2), an O(h²) error: the two differ by 2.2e-3 of max p
at G = 128 and 8.6e-3 at G = 64 on "wrapped-mixture"). The scheme is exact for band-limited data,
i.e. smooth densities resolved by the grid; the checkerboard's jumps are not (its nodes are
Gibbs-ringing trigonometric samples), and it is not a supported input.

Score. ∂ log p_t is computed as (∂p_t)/p_t with ∂p_t by spectral differentiation (FFT, Nyquist
mode zeroed) of p_t: p_t is band-limited, so ∂p_t is accurate to rounding (absolute), and the
error of the quotient is local, growing only where p_t itself is tiny. log p_t is not band-limited
(log-sum-exp creases between far-apart components, plateaus at a floor), and differentiating it by
FFT spreads Gibbs errors over the whole torus, high-density regions included. Measured on wrapped
Brownian motion (coupling and reference pull 0, where p_t is a wrapped-normal mixture in closed
form), p-weighted relative L2 error of the grid score: ∂p/p 1.4e-10 at t = 1 … 300 of T = 1000
(G = 128); at T = 100 with G = 80, 4e-7 at t = 1 (the band limit of (3)), 1e-9 at t = 5, 5e-12 at
t ≥ 50. The FFT of log p instead: 2e-3 at t = 1 (G = 128), 2e-2 (G = 64).
In the log and in the quotient p_t is floored at ``LOG_FLOOR`` · max p_t (1e-12 relative): below
it the score is not meaningful (it carries < 1e-12 of the weight per node).

Off-grid values (``log_density_at``, ``score_at``) are periodic cubic B-spline interpolations
(``order=3``, the default; exact at the nodes, O(h⁴)) of the grid's log p_t and score, or bilinear
ones (``order=1``). Measured at exact samples of p_t (closed-form case, G = 128, t = 1 … 30 of
T = 100): score relative RMS error 1e-6 … 2e-5 (bilinear 1e-3 … 2e-3), mean |Δ log p| 1e-7 … 4e-7
nats (bilinear 4e-4 … 3e-3). At G = 64 and t ≤ 1 cubic interpolation overshoots across the sharp
score transitions between narrow components (relative RMS 1e-2); use G ≥ 96 for reference work.
``cell_probabilities`` integrates the trigonometric interpolant of p_t over the cells of any
bins × bins grid exactly, so ``histogram_kl`` can compare samples with p_t (``kl_to_histogram``).

Refinement (the paper's chain on "wrapped-mixture", KL between the 32 × 32 cell masses of two grids):
at T = 100, G = 64, 96 and 128 against 192 agree to rounding (|KL| ≤ 2e-16) at t ≥ 10, and G = 96,
128 at every t; G = 64 differs by 6e-8 at t = 1 (its band limit). At T = 1000 the same for G = 96
against 128 at all t, G = 64 by 6e-8 for t ≤ 10.

Cost (float64, one thread, measured on the 2-core development machine while two other benchmark
processes ran): ≈ 0.1 s per step at G = 128 (the band of kernel entries, then the O(G⁴) product,
≈ 0.03 s); T = 100 in 9 s, T = 1000 in 83 s; G = 64 at T = 100 1.7 s, G = 192 51 s. All p_t of
T = 1000 at G = 128 hold 131 MB; ``keep`` stores only the requested steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import torch
from torch import Tensor

from ..circular import TWO_PI, mean_resultant_length_to_concentration, wrap
from ..errors import UserError
from ..processes.kuramoto import KuramotoProcess

__all__ = ["ChainMarginal", "GridMarginalDensity", "LOG_FLOOR", "DEFAULT_WIDEN"]

LOG_FLOOR = 1e-12  # p_t is floored at this fraction of max p_t in the log and in the score's quotient
TAIL_SCALES = 9.0  # kernel images farther than this many scales from the mean are dropped (as in circular.py)
DEFAULT_WIDEN = 1.2  # kernel scale at least this many cell widths in (2); the rest is removed by (3)


def grid_nodes(grid: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The G cell centres −π + (i + ½)·2π/G of a periodic grid on [-π, π)."""
    return -math.pi + (torch.arange(grid, dtype=dtype) + 0.5) * (TWO_PI / grid)


def _frequencies(grid: int) -> Tensor:
    """Integer frequencies of a length-G DFT on a 2π-periodic axis (float64)."""
    return torch.fft.fftfreq(grid, d=1.0 / grid, dtype=torch.float64)


class GridMarginalDensity:
    """p_t as a density object for ``metrics.density.histogram_kl``: ``cell_probabilities`` and ``log_prob``."""

    def __init__(self, marginal: ChainMarginal, t: int) -> None:
        self.marginal, self.t = marginal, t
        self.name = f"chain-marginal-t{t}"

    def cell_probabilities(self, bins: int) -> Tensor:
        return self.marginal.cell_probabilities(self.t, bins)

    def log_prob(self, x: Tensor) -> Tensor:
        return self.marginal.log_density_at(self.t, x)


class ChainMarginal:
    """The marginal p_t, t = 0 … t_max, of a global- or no-coupling ``KuramotoProcess`` started from a torus density.

    ``grid``: G nodes per axis (G ≥ 8; 128 or more for reference use). ``keep``: the steps whose p_t
    are stored (default all); ``t_max``: the last step propagated (default T). ``widen``: see the
    module docstring (2)–(3). Everything is float64 on the CPU.
    """

    def __init__(
        self,
        process: KuramotoProcess,
        density,  # TorusDensity  # noqa: ANN001
        grid: int = 128,
        *,
        keep: Iterable[int] | None = None,
        t_max: int | None = None,
        widen: float = DEFAULT_WIDEN,
    ) -> None:
        if not isinstance(process, KuramotoProcess):
            raise UserError(f"the chain marginal needs a KuramotoProcess, got {type(process).__name__}")
        if process.config.coupling == "local":  # global and none act on any state shape
            raise UserError(
                'the exact chain marginal needs global coupling or none (KuramotoConfig(coupling="global")); local coupling acts on images'
            )
        if getattr(density, "dims", 2) != 2:
            raise UserError("the exact chain marginal is for densities on the 2-torus")
        if grid < 8:
            raise UserError(f"grid must have at least 8 nodes per axis, got {grid}")
        if not widen >= 0:
            raise UserError(f"widen must be ≥ 0, got {widen}")
        self.process = process
        self.data = density  # the TorusDensity of the data (p₀)
        self.grid = grid
        self.widen = widen
        self.t_max = process.steps if t_max is None else int(t_max)
        if not 0 <= self.t_max <= process.steps:
            raise UserError(f"t_max must be in 0…{process.steps}, got {t_max}")
        self.keep = set(range(self.t_max + 1)) if keep is None else {int(t) for t in keep}
        outside = sorted(t for t in self.keep if not 0 <= t <= self.t_max)
        if outside:
            raise UserError(f"keep lists steps {outside[:3]} outside 0…{self.t_max}")
        self.cell_width = TWO_PI / grid
        self.cell_area = self.cell_width**2
        self.nodes = grid_nodes(grid)
        axis_1, axis_2 = torch.meshgrid(self.nodes, self.nodes, indexing="ij")
        self.points = torch.stack([axis_1, axis_2], dim=-1).reshape(
            -1, 2
        )  # the nodes (G², 2), row i·G + j: node (i, j)
        self._densities: dict[int, Tensor] = {}
        self._scores: dict[int, Tensor] = {}
        start = time.perf_counter()
        self._propagate()
        self.build_seconds = time.perf_counter() - start

    # ----- propagation ------------------------------------------------------------------
    def initial_density(self) -> Tensor:
        """p₀ at the nodes (G × G, per radian²): the data density at the cell centres."""
        return torch.exp(self.data.log_prob(self.points)).reshape(self.grid, self.grid).to(torch.float64)

    def _propagate(self) -> None:
        masses = self.initial_density() * self.cell_area
        masses = masses / masses.sum()  # the midpoint rule's total is 1 to rounding for smooth densities
        if 0 in self.keep:
            self._densities[0] = masses / self.cell_area
        for t in range(self.t_max):
            masses = self.step(masses, t)
            if t + 1 in self.keep:
                self._densities[t + 1] = masses / self.cell_area

    def kernel_matrix(self, mean: Tensor, scale: float) -> Tensor:
        """A[x, j] ∝ WN(c_j; mean[x], scale) for the means (G²,) of one coordinate, rows normalised to 1 (G² × G).

        The wrapped normal is the sum of its images: every node offset c_j − mean + 2πk within
        ``TAIL_SCALES`` scales (and a cell) of the mean contributes exp(−offset²/(2 scale²)), the rest
        (below exp(−40) of the peak) is dropped, as ``circular.wrapped_normal_log_prob`` does. Only the band
        of nodes around each mean is evaluated; its images land on their nodes by ``scatter_add``.
        """
        h, size = self.cell_width, self.grid
        position = (mean + math.pi) / h - 0.5  # node coordinate of the mean
        nearest = torch.round(position)
        delta = (position - nearest) * h  # mean − c_nearest, |delta| ≤ h/2
        reach = math.ceil(TAIL_SCALES * scale / h) + 1
        steps = torch.arange(-reach, reach + 1, dtype=torch.float64)
        values = torch.exp(((steps[None, :] * h - delta[:, None]) / scale).square_().mul_(-0.5))
        columns = (nearest.long()[:, None] + steps.long()[None, :]) % size
        kernel = torch.zeros(mean.shape[0], size, dtype=torch.float64).scatter_add_(1, columns, values)
        return kernel.div_(kernel.sum(dim=1, keepdim=True))  # the 1/(scale·√2π) of WN cancels here

    def step(self, masses: Tensor, t: int) -> Tensor:
        """Cell masses M_{t+1} (G × G) from M_t: (2), then (3) when the kernel had to be widened."""
        mean = self.process.transition_mean(self.points, t)  # (G², 2): the same μ_t as KuramotoProcess.step
        sigma = float(self.process.transition_scale(t))
        scale = max(sigma, self.widen * self.cell_width)
        first = self.kernel_matrix(mean[:, 0], scale)
        second = self.kernel_matrix(mean[:, 1], scale)
        result = first.T @ (masses.reshape(-1, 1) * second)
        if scale > sigma:
            result = self._sharpen(result, scale**2 - sigma**2)
        return result

    def _sharpen(self, masses: Tensor, variance: float) -> Tensor:
        """Remove a wrapped-normal convolution of ``variance`` per axis: multiply by exp(+v k²/2)."""
        k = _frequencies(self.grid)
        gain = torch.where(k.abs() <= self.grid / 3, torch.exp(0.5 * variance * k**2), torch.zeros_like(k))
        half = gain[: self.grid // 2 + 1]
        spectrum = torch.fft.rfft2(masses) * (gain[:, None] * half[None, :])
        return torch.fft.irfft2(spectrum, s=masses.shape)

    # ----- the marginal ------------------------------------------------------------------
    @property
    def times(self) -> list[int]:
        """The steps whose p_t are stored."""
        return sorted(self._densities)

    def _check_t(self, t: int) -> int:
        if t not in self._densities:
            raise UserError(f"step {t} is not stored; this marginal keeps {self._describe_times()}")
        return t

    def _describe_times(self) -> str:
        times = self.times
        return f"{len(times)} steps" + (f" from {times[0]} to {times[-1]}" if times else "")

    def density(self, t: int) -> Tensor:
        """p_t at the nodes (G × G, float64, per radian²); Σ p_t · cell area = 1. Axis 0 is θ₁."""
        return self._densities[self._check_t(t)]

    def masses(self, t: int) -> Tensor:
        """p_t · cell area (G × G): the nodes' shares of the mass."""
        return self.density(t) * self.cell_area

    def _floored(self, t: int) -> Tensor:
        p = self.density(t)
        return p.clamp_min(LOG_FLOOR * float(p.max()))

    def log_density(self, t: int) -> Tensor:
        """log p_t at the nodes (G × G), p_t floored at ``LOG_FLOOR`` · max p_t."""
        return torch.log(self._floored(t))

    def score(self, t: int) -> Tensor:
        """∂ log p_t at the nodes (G × G × 2: ∂/∂θ₁, ∂/∂θ₂): spectral ∂p_t over p_t (floored; see the module docstring).

        Cached per t (2·8·G² bytes each)."""
        self._check_t(t)
        if t not in self._scores:
            p = self.density(t)
            spectrum = torch.fft.fft2(p)
            k = _frequencies(self.grid).to(torch.complex128)
            if self.grid % 2 == 0:
                k[self.grid // 2] = 0.0  # the Nyquist mode of a real field has no odd derivative
            first = torch.fft.ifft2(spectrum * (1j * k)[:, None]).real
            second = torch.fft.ifft2(spectrum * (1j * k)[None, :]).real
            self._scores[t] = torch.stack([first, second], dim=-1) / self._floored(t)[..., None]
        return self._scores[t]

    def _interpolate(self, field: Tensor, points: Tensor, order: int) -> Tensor:
        """Periodic interpolation of a (G, G) or (G, G, C) node field at points (N, 2): bilinear (order 1) or
        cubic B-spline (order 3, coefficients by an exact periodic prefilter in Fourier space)."""
        if points.dim() != 2 or points.shape[1] != 2:
            raise UserError(f"points on the 2-torus must have shape (N, 2), got {tuple(points.shape)}")
        if order not in (1, 3):
            raise UserError(f"interpolation order must be 1 (bilinear) or 3 (cubic B-spline), got {order}")
        u = (wrap(points.detach().to("cpu", torch.float64)) + math.pi) / self.cell_width - 0.5
        lower = torch.floor(u)
        frac = u - lower
        base = lower.long()
        if order == 1:
            offsets: tuple[int, ...] = (0, 1)
            weights = [torch.stack([1 - frac[:, d], frac[:, d]]) for d in range(2)]
        else:
            field = _bspline_coefficients(field)
            offsets = (-1, 0, 1, 2)
            weights = [_cubic_bspline_weights(frac[:, d]) for d in range(2)]
        extra = (1,) * (field.dim() - 2)
        result = torch.zeros((points.shape[0], *field.shape[2:]), dtype=torch.float64)
        for a, offset_a in enumerate(offsets):
            rows = (base[:, 0] + offset_a) % self.grid
            for b, offset_b in enumerate(offsets):
                columns = (base[:, 1] + offset_b) % self.grid
                weight = (weights[0][a] * weights[1][b]).reshape(-1, *extra)
                result += weight * field[rows, columns]
        return result

    def log_density_at(self, t: int, points: Tensor, *, order: int = 3) -> Tensor:
        """log p_t at points (N, 2) by periodic interpolation of the nodes' log p_t (float64, (N,)); see ``_interpolate``."""
        return self._interpolate(self.log_density(t), points, order)

    def score_at(self, t: int, points: Tensor, *, order: int = 3) -> Tensor:
        """∂ log p_t at points (N, 2) by periodic interpolation of the grid score (float64, (N, 2)); see ``_interpolate``."""
        return self._interpolate(self.score(t), points, order)

    def score_fn(self, *, dtype: torch.dtype | None = None):  # noqa: ANN201 - ScoreFn
        """A sampler score function (states (N, 2), query step t) -> score, in the states' dtype and device."""

        def exact_score(x: Tensor, t: int) -> Tensor:
            return self.score_at(int(t), x).to(device=x.device, dtype=dtype or x.dtype)

        return exact_score

    def cell_probabilities(self, t: int, bins: int) -> Tensor:
        """Probabilities (bins × bins) of the cells of ``cell_probabilities`` of ``data/torus.py`` under p_t.

        The trigonometric interpolant of the nodes is integrated over each cell exactly; tiny negative
        values (rounding, or the band-limit ringing of a coarse grid in near-empty cells) are set to 0 and
        the result renormalised to sum 1.
        """
        if bins < 1:
            raise UserError(f"bins must be ≥ 1, got {bins}")
        p = self.density(t)
        coefficients = torch.fft.fft2(p) / self.grid**2  # p(x) = Σ_k c_k e^{i k·(x − c_0)}
        integrals = self._interval_integrals(bins)  # (bins, G) complex
        cells = (integrals @ coefficients @ integrals.T).real
        cells = cells.clamp_min(0.0)
        return cells / cells.sum()

    def _interval_integrals(self, bins: int) -> Tensor:
        """I[i, k] = ∫ over cell i of e^{i k (x − c_0)} dx, with the Nyquist mode as its cosine (real-symmetric)."""
        edges = torch.linspace(-math.pi, math.pi, bins + 1, dtype=torch.float64)
        k = _frequencies(self.grid)
        origin = float(self.nodes[0])

        def integral(freq: Tensor) -> Tensor:
            lower, upper = edges[:-1, None] - origin, edges[1:, None] - origin
            nonzero = freq != 0
            safe = torch.where(nonzero, freq, torch.ones_like(freq)).to(torch.complex128)
            value = (torch.exp(1j * safe * upper) - torch.exp(1j * safe * lower)) / (1j * safe)
            return torch.where(nonzero, value, (upper - lower).to(torch.complex128))

        result = integral(k)
        if self.grid % 2 == 0:
            nyquist = self.grid // 2
            both = integral(torch.tensor([float(nyquist), -float(nyquist)], dtype=torch.float64))
            result[:, nyquist] = both.mean(dim=1)
        return result

    def at(self, t: int) -> GridMarginalDensity:
        """p_t as a density object (``cell_probabilities``, ``log_prob``) for the metrics of ``metrics/density.py``."""
        return GridMarginalDensity(self, self._check_t(t))

    def kl_to_histogram(self, t: int, samples: Tensor, bins: int = 50) -> float:
        """``histogram_kl`` of samples against p_t (KL(p_t ‖ histogram), nats)."""
        from .density import histogram_kl

        return histogram_kl(self.at(t), samples, bins)

    def expectation(self, t: int, function) -> float:  # noqa: ANN001 - Callable[[Tensor], Tensor]
        """E_{p_t}[f(θ)] for f of the nodes (N, 2) -> (N,): the midpoint rule (spectral for smooth f)."""
        values = function(self.points).reshape(self.grid, self.grid)
        return float((values * self.masses(t)).sum())

    def prior_concentration(self, t: int | None = None) -> float:
        """The von Mises κ (mean fixed at ψ_ref) of maximum likelihood for p_t (default t = T), both angles pooled:
        A(κ) = E cos(θ − ψ_ref), what ``KuramotoProcess.fit_prior`` estimates from samples."""
        t = self.t_max if t is None else t
        ref = self.process.config.ref_phase
        mean_cos = self.expectation(t, lambda x: torch.cos(x - ref).mean(dim=1))
        return float(mean_resultant_length_to_concentration(torch.tensor(max(mean_cos, 0.0), dtype=torch.float64)))


def _bspline_coefficients(field: Tensor) -> Tensor:
    """Periodic cubic B-spline coefficients of a (G, G, …) node field: the field divided, per axis, by the
    spline's node response (4 + 2 cos(2πk/G))/6 in Fourier space (exact interpolation at the nodes)."""
    size = field.shape[0]
    response = (4.0 + 2.0 * torch.cos(TWO_PI * torch.fft.fftfreq(size, dtype=torch.float64))) / 6.0
    shape = (size, size, *([1] * (field.dim() - 2)))
    spectrum = torch.fft.fft2(field, dim=(0, 1)) / (response[:, None] * response[None, :]).reshape(shape)
    return torch.fft.ifft2(spectrum, dim=(0, 1)).real


def _cubic_bspline_weights(frac: Tensor) -> Tensor:
    """Weights (4, N) of the nodes −1, 0, 1, 2 around a point at fraction ``frac`` ∈ [0, 1) past node 0."""
    f2, f3 = frac**2, frac**3
    return torch.stack([(1 - frac) ** 3 / 6, (3 * f3 - 6 * f2 + 4) / 6, (-3 * f3 + 3 * f2 + 3 * frac + 1) / 6, f3 / 6])
