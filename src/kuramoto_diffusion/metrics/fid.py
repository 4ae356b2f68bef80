"""FID and KID from a local TorchScript Inception-v3 file; nothing is ever downloaded.

The expected file is ``inception-2015-12-05.pt``, the TorchScript translation of the 2015 TensorFlow
Inception that StyleGAN2-ADA and clean-fid download (StyleGAN3 loads the same network from a pickle,
which this module does not accept). It is called as
``model(images, return_features=True)`` with float images (N, 3, H, W) holding 0..255 values, resizes
them to 299×299 itself and returns the (N, 2048) pool features. Any TorchScript module with that
call signature works (the tests use a tiny one).

- FID (Heusel et al. 2017): ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½) of the feature Gaussians,
  covariances with the unbiased 1/(N − 1) normalisation; in squared feature units.
- KID (Bińkowski et al. 2018): unbiased MMD² with the cubic polynomial kernel
  k(x, y) = (xᵀy / d + 1)³, averaged over random equal-size subsets; often quoted ×1e3.

Both are biased or noisy for small sets (FID strongly so below a few thousand images): compare
numbers only at equal set sizes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

from ..errors import UserError
from .pixels import check_image_pair, check_images

INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"


def load_inception(path: str | os.PathLike[str] | None) -> torch.jit.ScriptModule:
    """Load the TorchScript feature network from ``path`` onto the CPU, in eval mode.

    Loading TorchScript runs the code stored in the archive through the TorchScript interpreter,
    so only use a file from a trusted source (the NVIDIA URL above).
    """
    hint = f"download {INCEPTION_URL} on a machine with internet and pass it as inception_weights=PATH"
    if path is None:
        raise UserError(f"FID/KID need the Inception weights file; {hint}")
    if not Path(path).expanduser().is_file():
        raise UserError(f"Inception weights not found at {path}; {hint}")
    try:
        with warnings.catch_warnings():
            # Recent torch deprecates TorchScript, but the published Inception file only exists in that format.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=DeprecationWarning)
            model = torch.jit.load(str(Path(path).expanduser()), map_location="cpu")
    except Exception as error:  # a truncated download, an HTML error page, a plain pickle, ...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a TorchScript model ({reason}); {hint}") from None
    return model.eval()


def inception_features(model: torch.nn.Module, images: Tensor, batch_size: int = 64) -> np.ndarray:
    """(N, D) float64 features of images in [-1, 1] (grayscale is repeated to 3 channels).

    Images are mapped to 0..255 and rounded to whole levels, as if saved as 8-bit files, so that
    generated samples are measured like the real images on disk.
    """
    images = check_images(images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    features = []
    with torch.inference_mode():
        for batch in images.split(batch_size):
            levels = ((batch + 1.0) * 127.5).round().clamp(0.0, 255.0).to(torch.float32)
            if levels.shape[1] == 1:
                levels = levels.repeat(1, 3, 1, 1)
            output = model(levels, return_features=True)
            features.append(output.reshape(output.shape[0], -1).to(torch.float64).numpy())
    return np.concatenate(features)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features; needs N ≥ 2."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise UserError(f"FID needs at least 2 images per set, got features of shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): squared feature units, ≥ 0 up to rounding."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    dim = mu1.shape[0]
    if mu2.shape != (dim,) or sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise UserError(
            f"frechet_distance needs means (D,) and covariances (D, D) of one D, got {mu1.shape}, "
            f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    product_root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(product_root).all():
        # Singular product (fewer images than features): a tiny ridge makes the root well defined.
        ridge = 1e-6 * np.eye(dim)
        product_root = scipy.linalg.sqrtm((sigma1 + ridge) @ (sigma2 + ridge))
    # Rounding gives the root of a (theoretically PSD-similar) product small imaginary parts.
    trace_root = float(np.real(np.trace(product_root)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


def kernel_inception_distance(
    features1: np.ndarray, features2: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> float:
    """Unbiased MMD² with kernel (xᵀy/d + 1)³, averaged over ``subsets`` random subsets.

    Each subset draws m = min(subset_size, N1, N2) features from each set without replacement.
    About 0 (and possibly slightly negative) for samples of the same distribution; symmetric in
    expectation, exactly so when both sets are used whole (m = N1 = N2).
    """
    x_all, y_all = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if x_all.ndim != 2 or y_all.ndim != 2 or x_all.shape[1] != y_all.shape[1]:
        raise UserError(f"KID needs (N1, D) and (N2, D) features, got {x_all.shape} and {y_all.shape}")
    for value, name in ((subsets, "subsets"), (subset_size, "subset_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")
    m = min(subset_size, x_all.shape[0], y_all.shape[0])
    if m < 2:
        raise UserError(f"KID needs at least 2 images per set, got {x_all.shape[0]} and {y_all.shape[0]}")
    if m == x_all.shape[0] == y_all.shape[0]:
        subsets = 1  # every "subset" would be the whole of both sets, reordered: same value
    dim = x_all.shape[1]
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(subsets):
        x = x_all[rng.choice(x_all.shape[0], m, replace=False)]
        y = y_all[rng.choice(y_all.shape[0], m, replace=False)]
        k_xx, k_yy, k_xy = ((x @ x.T / dim + 1) ** 3, (y @ y.T / dim + 1) ** 3, (x @ y.T / dim + 1) ** 3)
        # Unbiased: within-set sums leave out the diagonal k(x_i, x_i).
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates.append(within - 2.0 * k_xy.mean())
    return float(np.mean(estimates))


def fid_kid(
    real: Tensor, fake: Tensor, model: torch.nn.Module, *, seed: int = 0, batch_size: int = 64
) -> dict[str, float]:
    """{"fid": ..., "kid": ...} of the two sets under the feature network ``model`` (see load_inception)."""
    real_t, fake_t = check_image_pair(real, fake)
    real_features = inception_features(model, real_t, batch_size)
    fake_features = inception_features(model, fake_t, batch_size)
    fid = frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))
    return {"fid": fid, "kid": kernel_inception_distance(real_features, fake_features, seed=seed)}
