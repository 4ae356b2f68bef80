"""Circular maths on the torus: wrapping, wrapped normal, von Mises, order parameter, image <-> phase.

All angles are radians. Functions accept float32 and float64 tensors of any shape,
broadcast their arguments and are differentiable with autograd.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import UserError

TWO_PI = 2.0 * math.pi

# Images use part of the circle so that black (-1) and white (+1) do not meet at the seam ±π: the paper
# took 0.9π; half the circle gave better samples at every budget measured (BENCHMARKS.md, "phase range").
PAPER_PHASE_RANGE = 0.9 * math.pi
IMAGE_PHASE_RANGE = 0.5 * math.pi

# A wrapped-normal image term (d + 2πk) whose distance exceeds this many scales carries
# relative weight below exp(-81/2) ≈ 2.6e-18: negligible even in float64.
_WRAPPED_NORMAL_TAIL_SCALES = 9.0
# Log-weights below which an image term's weight (relative to the k = 0 term's 1) is clamped: e^−80 ≈ 1.8e-35 is
# still a normal float32 and e^−700 a normal float64 (exp slows down many times on subnormal results).
_NEGLIGIBLE_LOG_WEIGHT = {torch.float64: -700.0, torch.float32: -80.0}


def wrap(angle: Tensor) -> Tensor:
    """Map any real angle (radians) to [-π, π)."""
    wrapped = torch.remainder(angle + math.pi, TWO_PI) - math.pi
    # remainder can round up to exactly 2π, which would give +π: fold it back.
    return torch.where(wrapped >= math.pi, wrapped - TWO_PI, wrapped)


def _as_tensor_like(value: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _num_wrap_terms(scale: Tensor) -> int:
    """Number k_max of image terms on each side: |k| ≤ k_max covers 9 scales beyond the seam."""
    largest = float(scale.detach().max()) if scale.numel() else 0.0
    if not math.isfinite(largest) or largest <= 0:
        raise UserError(f"wrapped normal scale must be positive and finite, got max {largest}")
    return max(1, math.ceil((_WRAPPED_NORMAL_TAIL_SCALES * largest + math.pi) / TWO_PI))


def _wrapped_normal_terms(x: Tensor, mean: Tensor | float, scale: Tensor | float) -> tuple[Tensor, Tensor]:
    """Offsets d + 2πk (k on a new leading axis) and the scale broadcast against x.

    A leading axis keeps each term's values contiguous, so the reductions over k vectorise (3× faster on the
    CPU than a trailing axis of 3)."""
    scale_t = _as_tensor_like(scale, x)
    offset = wrap(x - _as_tensor_like(mean, x))
    k_max = _num_wrap_terms(scale_t)
    shifts = TWO_PI * torch.arange(-k_max, k_max + 1, dtype=x.dtype, device=x.device)
    return offset.unsqueeze(0) + shifts.view(-1, *([1] * offset.dim())), scale_t


def wrapped_normal_log_prob(x: Tensor, mean: Tensor | float, scale: Tensor | float) -> Tensor:
    """log WN(x; mean, scale²): density (per radian) of a normal wrapped onto [-π, π).

    Accurate for scale in [1e-4, 10]; the number of image terms is chosen from the largest scale.
    """
    terms, scale_t = _wrapped_normal_terms(x, mean, scale)
    log_weights = -0.5 * (terms / scale_t) ** 2
    log_norm = torch.log(scale_t) + 0.5 * math.log(TWO_PI)
    return torch.logsumexp(log_weights, dim=0) - log_norm


def wrapped_normal_score(x: Tensor, mean: Tensor | float, scale: Tensor | float) -> Tensor:
    """∂/∂x log WN(x; mean, scale²) = Σ_k w_k · (−(d + 2πk)/scale²), w = softmax_k(−(d + 2πk)²/(2 scale²)),
    with d = wrap(x − mean) in [−π, π).

    The k = 0 term has the largest log-weight (|d| ≤ π), so the softmax is taken relative to it, term by term
    (the same log-weight differences as a softmax over the stacked terms). exp is many times slower where its
    result is subnormal or zero, as it is for most terms at small scales (the chain's draw computes this score at
    every step, bench/chain_step.py), so log-weights below a floor are raised to it: a weight e^floor (1.8e-35 in
    float32, 1e-304 in float64) is far below the k = 0 term's 1 at the dtype's precision."""
    terms, scale_t = _wrapped_normal_terms(x, mean, scale)
    log_weights = -0.5 * (terms / scale_t) ** 2
    k_max = terms.shape[0] // 2
    offset, centre = terms[k_max], log_weights[k_max]
    floor = _NEGLIGIBLE_LOG_WEIGHT.get(x.dtype, _NEGLIGIBLE_LOG_WEIGHT[torch.float32])
    moment, total = offset, torch.ones_like(offset)  # Σ_k w_k·(d + 2πk) and Σ_k w_k, with w_0 = 1
    for k in range(terms.shape[0]):
        if k != k_max:
            weight = torch.exp((log_weights[k] - centre).clamp(min=floor))
            moment, total = torch.addcmul(moment, weight, terms[k]), total + weight
    return -(moment / total) / scale_t**2


def von_mises_log_prob(x: Tensor, loc: Tensor | float, concentration: Tensor | float) -> Tensor:
    """log of exp(κ cos(x − μ)) / (2π I₀(κ)), stable for large κ via the scaled Bessel function."""
    kappa = _as_tensor_like(concentration, x)
    log_norm = math.log(TWO_PI) + torch.log(torch.special.i0e(kappa)) + kappa
    return kappa * torch.cos(x - _as_tensor_like(loc, x)) - log_norm


def von_mises_sample(
    shape: tuple[int, ...] | torch.Size,
    loc: float,
    concentration: float,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Samples in [-π, π) from von Mises(loc, concentration), by Best & Fisher's (1979) rejection sampler.

    κ below 1e-8 is uniform; above 1e6 the wrapped normal N(loc, 1/κ) is used (error O(1/κ)).
    """
    if not math.isfinite(concentration) or concentration < 0:
        raise UserError(f"von Mises concentration must be finite and ≥ 0, got {concentration}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    if concentration < 1e-8:
        u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
        return wrap(TWO_PI * u - math.pi + loc).to(dtype)
    if concentration > 1e6:
        z = torch.randn(shape, generator=generator, dtype=torch.float64, device=device)
        return wrap(loc + z / math.sqrt(concentration)).to(dtype)
    kappa = concentration
    tau = 1.0 + math.sqrt(1.0 + 4.0 * kappa**2)
    rho = (tau - math.sqrt(2.0 * tau)) / (2.0 * kappa)
    r = (1.0 + rho**2) / (2.0 * rho)
    numel = int(torch.Size(shape).numel())
    out = torch.empty(numel, dtype=torch.float64, device=device)
    missing = torch.arange(numel, device=device)
    while missing.numel():
        n = missing.numel()
        u1, u2, u3 = torch.rand((3, n), generator=generator, dtype=torch.float64, device=device)
        z = torch.cos(math.pi * u1)
        f = (1.0 + r * z) / (r + z)
        c = kappa * (r - f)
        accept = (c * (2.0 - c) - u2 > 0) | (torch.log(c / u2) + 1.0 - c >= 0)
        angle = torch.sign(u3 - 0.5) * torch.acos(f.clamp(-1.0, 1.0))
        out[missing[accept]] = angle[accept]
        missing = missing[~accept]
    return wrap(out.reshape(shape) + loc).to(dtype)


def mean_resultant_length_to_concentration(resultant: Tensor) -> Tensor:
    """Solve A(κ) = I₁(κ)/I₀(κ) = R̄ for κ ≥ 0 (the von Mises maximum-likelihood equation).

    Starts from Best & Fisher's approximation and polishes with Newton steps in float64.
    """
    rbar = resultant.to(torch.float64).clamp(0.0, 1.0 - 1e-12)
    kappa = torch.where(
        rbar < 0.53,
        2 * rbar + rbar**3 + 5 * rbar**5 / 6,
        torch.where(rbar < 0.85, -0.4 + 1.39 * rbar + 0.43 / (1 - rbar), 1 / (rbar**3 - 4 * rbar**2 + 3 * rbar)),
    )
    for _ in range(8):
        ratio = torch.special.i1e(kappa) / torch.special.i0e(kappa)
        derivative = 1.0 - ratio / kappa.clamp_min(1e-12) - ratio**2
        kappa = (kappa - (ratio - rbar) / derivative.clamp_min(1e-300)).clamp_min(0.0)
    return torch.where(rbar <= 0, torch.zeros_like(kappa), kappa).to(resultant.dtype)


def fit_von_mises(samples: Tensor, loc: float | None = None) -> tuple[float, float]:
    """Maximum-likelihood (loc, concentration) of a von Mises fitted to all values of ``samples``.

    With ``loc`` given, only κ is fitted: R̄ is then the mean of cos(θ − loc), not the resultant length.
    """
    samples = samples.detach().to(torch.float64).flatten()
    if samples.numel() < 2:
        raise UserError("fit_von_mises needs at least 2 samples")
    mean_cos, mean_sin = torch.cos(samples).mean(), torch.sin(samples).mean()
    if loc is None:
        loc_fit = float(torch.atan2(mean_sin, mean_cos))
        rbar = torch.sqrt(mean_cos**2 + mean_sin**2)
    else:
        loc_fit = float(loc)
        rbar = torch.cos(samples - loc).mean().clamp_min(0.0)
    return loc_fit, float(mean_resultant_length_to_concentration(rbar))


def von_mises_moment(order: int, concentration: float) -> float:
    """E[cos(n(θ − μ))] = I_n(κ)/I₀(κ) for a von Mises; used to measure how far samples are from a prior."""
    kappa = torch.tensor(concentration, dtype=torch.float64)
    if order == 0:
        return 1.0
    if order == 1:
        return float(torch.special.i1e(kappa) / torch.special.i0e(kappa))
    # Ratios obey I_{n+1}/I_n recursion; use the exact integral by quadrature to stay simple and stable.
    grid = torch.linspace(-math.pi, math.pi, 4097, dtype=torch.float64)[:-1]
    weights = torch.exp(kappa * (torch.cos(grid) - 1.0))
    return float((weights * torch.cos(order * grid)).sum() / weights.sum())


def order_parameter(theta: Tensor, dims: int | tuple[int, ...] | None = None) -> tuple[Tensor, Tensor]:
    """Kuramoto order parameter: R e^{iψ} = mean of e^{iθ} over ``dims`` (all but the first axis if None).

    Returns (R in [0, 1], ψ in [-π, π)).
    """
    if dims is None:
        dims = tuple(range(1, theta.dim())) if theta.dim() > 1 else (0,)
    mean_cos = torch.cos(theta).mean(dim=dims)
    mean_sin = torch.sin(theta).mean(dim=dims)
    return torch.sqrt(mean_cos**2 + mean_sin**2), torch.atan2(mean_sin, mean_cos)


def phase_correlation(theta: Tensor, distances: tuple[int, ...] = (1, 2, 4, 8)) -> Tensor:
    """Mean cos(θ_p − θ_q) over the pixel pairs (p, q) ``distance`` px apart along each image axis, per example.

    ``theta``: phases (batch, channels, height, width) in radians; each distance must be below both sides.
    Returns float64 (batch, len(distances), 2): [..., 0] vertical pairs (along height), [..., 1] horizontal
    (along width). 1 where phases agree at that distance, ≈ 0 for independent uniform phases; a spatially
    ordered field has the curve fall with distance, a globally synchronised one keeps it flat.
    """
    if theta.dim() != 4:
        raise UserError(
            f"phase_correlation needs images (batch, channels, height, width), got shape {tuple(theta.shape)}"
        )
    if not distances or min(distances) < 1 or max(distances) >= min(theta.shape[-2:]):
        raise UserError(
            f"distances must be in 1…{min(theta.shape[-2:]) - 1} px for {tuple(theta.shape[-2:])} images, got {distances}"
        )
    theta = theta.detach().to(torch.float64)
    out = torch.empty(theta.shape[0], len(distances), 2, dtype=torch.float64, device=theta.device)
    for index, distance in enumerate(distances):
        for axis in (0, 1):
            dim = 2 + axis
            length = theta.shape[dim] - distance
            difference = theta.narrow(dim, distance, length) - theta.narrow(dim, 0, length)
            out[:, index, axis] = torch.cos(difference).mean(dim=(1, 2, 3))
    return out


def image_to_phase(image: Tensor, phase_range: float = IMAGE_PHASE_RANGE) -> Tensor:
    """Pixel values in [-1, 1] to phases θ = a·x in [-a, a], a = ``phase_range`` (default 0.5π; the paper's 0.9π)."""
    return phase_range * image


def phase_to_image(theta: Tensor, phase_range: float = IMAGE_PHASE_RANGE) -> tuple[Tensor, int]:
    """Phases to pixel values x = wrap(θ)/a clipped to [-1, 1], and the number of clipped values.

    The clipped count measures mass that crossed the seam or strayed into the gap between ±a and ±π
    (decoded |x| > 1).
    """
    image = wrap(theta) / phase_range
    clipped = int((image.abs() > 1.0).sum())
    return image.clamp(-1.0, 1.0), clipped
