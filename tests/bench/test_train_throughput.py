"""bench/train_throughput.py --mode cost: the paired interval of a cost ratio over timing rounds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import train_throughput  # noqa: E402 - bench/ is a folder of scripts, put on the path above


def test_a_constant_ratio_has_no_spread_whatever_the_load() -> None:
    reference = [1.0, 3.0, 0.5, 2.0]  # the machine's load moves both timings of a round together
    low, high = train_throughput.paired_ratio_interval([1.1 * r for r in reference], reference)
    assert low == pytest.approx(1.1) and high == pytest.approx(1.1)


def test_two_rounds_span_the_two_rounds_ratios() -> None:
    # Resampling two rounds gives (0, 0), (1, 1) with probability 1/4 each and the pooled ratio otherwise, so the
    # 2.5th and 97.5th percentiles are the single rounds' ratios 0.8 and 1.5.
    low, high = train_throughput.paired_ratio_interval([0.8, 3.0], [1.0, 2.0])
    assert (low, high) == pytest.approx((0.8, 1.5))
