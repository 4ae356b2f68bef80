"""Train / validation splits shared by every data source: a deterministic permutation of the examples by seed,
the last ``val_fraction`` of it (at least one example) held out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError

SPLITS = ("train", "val", "all")


def check_split(split: object, allowed: Sequence[str] = SPLITS) -> str:
    """Return ``split`` if it is one of ``allowed``; otherwise raise a UserError listing them."""
    if split not in allowed:
        raise UserError(f"unknown split {split!r}; valid values are {', '.join(allowed)}")
    return str(split)


def check_val_fraction(val_fraction: object) -> float:
    """Return ``val_fraction`` as a float if it lies in [0, 1)."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    return float(val_fraction)


def split_counts(total: int, val_fraction: float) -> tuple[int, int]:
    """(train, val) counts for ``total`` base images: val is round(total * val_fraction),
    at least 1 when val_fraction > 0, and always leaves at least one for training."""
    if val_fraction <= 0.0 or total < 2:
        return total, 0
    num_val = min(max(1, round(total * val_fraction)), total - 1)
    return total - num_val, num_val


def split_indices(total: int, split: str, val_fraction: float, seed: int, *, where: str) -> np.ndarray:
    """Sorted indices of the base images in ``split``; val is a seeded random subset, train the rest.

    Deterministic given (total, val_fraction, seed); train and val never share an index.
    """
    if split == "all":
        return np.arange(total)
    num_train, num_val = split_counts(total, val_fraction)
    if split == "val" and num_val == 0:
        raise UserError(
            f"{where}: {total} image(s) with val_fraction {val_fraction} leave nothing for validation; "
            "add images, raise val_fraction or use split 'all'"
        )
    order = np.random.default_rng(seed).permutation(total)
    chosen = order[:num_val] if split == "val" else order[num_val:]
    return np.sort(chosen)
