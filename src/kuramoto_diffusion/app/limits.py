"""Upfront caps on options that multiply memory or work, so that an absurd value stops at once in one line
instead of being killed by the kernel's out-of-memory killer an hour later.

Two kinds of cap:

- a value cap per option (``OPTION_CAPS``), applied when the command line is parsed: steps that repeat
  work (``--corrector-steps``, ``--resample``) and counts that only make a picture wider (``forward``'s
  ``--num`` and ``--frames``);
- an estimate of the values a command holds at once (``check_values``), made from the options and the
  model's or data's shape before any work starts: a batch through the network (states only; the
  network's activations are tens of times more, so the cap leaves room for a real run, not for an
  absurd one) and the results held in memory until they are written.
"""

from __future__ import annotations

from ..errors import UserError

# Per-option value caps (parse time). RePaint uses about 10 resampling repeats and score_sde 1–2 corrector steps.
OPTION_CAPS = {
    "corrector_steps": 100,  # sample/evaluate: network evaluations per grid step
    "resample": 100,  # sample --inpaint: RePaint repeats per interval
    "forward_num": 64,  # forward: rows of the picture
    "forward_frames": 100,  # forward: snapshots per strip
    "draws": 4096,  # train: kernel draws per starting state (also bounded by the batch estimate below)
    "num": 10_000_000,  # sample --out-dir, evaluate, flows generate: files or examples in all
}
# States of one batch through the network: 2^28 float32 values = 1 GiB before activations (batch 32 of
# 3 × 64² images is 393,216 values, 680 times less).
MAX_BATCH_VALUES = 2**28
# Results held in memory until written (sample without --out-dir, evaluate's real and generated sets,
# one flow trajectory): 2^30 float32 values = 4 GiB.
MAX_HELD_VALUES = 2**30


def check_values(count: int, cap: int, what: str, fix: str) -> None:
    """A one-line UserError when ``count`` values (an estimate from the options, ``what`` in words) exceed ``cap``."""
    if count > cap:
        raise UserError(
            f"{what} = {count:,} values, more than the cap of {cap:,} ({cap * 4 / 2**30:g} GiB as float32); {fix}"
        )


def values_per_example(channels: int, image_size: int) -> int:
    """Values of one example: channels × size² for images and flows, the D angles for angle data (size 0)."""
    return max(1, channels) * max(1, image_size) ** 2
