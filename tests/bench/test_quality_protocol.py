"""bench/quality.py's scoring protocol: set sizes, the one-line errors, and the excess over the floor."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import quality  # noqa: E402 - bench/ is a folder of scripts, put on the path above
from kuramoto_diffusion.errors import UserError  # noqa: E402


def test_summarise_gives_means_intervals_tables_and_the_excess_per_reference_set() -> None:
    rng = np.random.default_rng(0)
    swd = rng.uniform(10, 20, (4, 3))
    floor = rng.uniform(5, 8, (4, 3))
    row = quality.summarise({"swd_mean": swd, "pixel_w1": swd / 10}, {"swd_mean": floor}, seed=0)
    expected = swd - floor.mean(axis=0)[None, :]
    np.testing.assert_allclose(np.array(row["tables"]["swd_excess"]), expected, rtol=0, atol=1e-12)
    assert row["swd_excess"] == pytest.approx(expected.mean(), rel=1e-12)
    assert row["swd_mean"] == pytest.approx(swd.mean(), rel=1e-12)
    for name in ("swd_mean", "swd_excess", "pixel_w1"):
        interval = row["intervals"][name]
        assert interval["low"] <= row[name] <= interval["high"]
    assert "swd_excess" not in quality.summarise({"swd_mean": swd}, None, seed=0)


def test_protocol_sizes_and_errors() -> None:
    budget = dataclasses.replace(quality.BUDGETS["tiny"], samples=1024)
    protocol, source = quality.protocol_for("textures", budget, 0, 4, 4)
    # 97 window positions per photo in 4 row bands (25, 24, 24, 24) × 3 photos: 72 crops per set.
    assert (protocol.group_size, protocol.reference_size, len(source)) == (256, 72, 3)
    with pytest.raises(UserError, match=r"^--groups 1: .*pass --groups 2 or more$"):
        quality.protocol_for("textures", budget, 0, 1, 4)
    with pytest.raises(UserError, match=r"^--reference-sets 1:"):
        quality.protocol_for("textures", budget, 0, 4, 1)
    with pytest.raises(
        UserError, match=r"^--reference-sets 40: the held-out split of textures fills 40 disjoint sets with 6 "
    ):
        quality.protocol_for("textures", budget, 0, 4, 40)
    with pytest.raises(UserError, match="not --reference-size 100"):
        quality.protocol_for("textures", budget, 0, 4, 4, reference_size=100)


def test_a_larger_val_fraction_fills_the_textures_reference_sets(capsys: pytest.CaptureFixture[str]) -> None:
    budget = dataclasses.replace(quality.BUDGETS["tiny"], samples=1024)
    quality.protocol_for("textures", budget, 0, 4, 4)
    assert "a larger --val-fraction" in capsys.readouterr().err  # 72 crops < 256 samples per group: said
    wider = dataclasses.replace(budget, val_fraction=0.3)
    protocol, source = quality.protocol_for("textures", wider, 0, 4, 4)
    # The photos are 128 px at 32-px crops; the held-out strip is round(0.3 · 128) = 38 px wide: 7 window columns
    # × (24 or 25) rows of each row band × 3 photos ≥ 504 windows per set, so the sets hold the full 256.
    assert (protocol.group_size, protocol.reference_size, len(source)) == (256, 256, 3)
    assert all(image.shape[:2] == (128, 38) for image in source.images)
    assert capsys.readouterr().err == ""
    # Training and the reference sets split the photos at the same column: no training window is held out.
    train = quality.open_image_source("textures", 32, channels=1, split="train", val_fraction=0.3)
    assert all(image.shape[:2] == (128, 90) for image in train.images)


@pytest.mark.parametrize("fraction", ["0", "1.5"])
def test_a_val_fraction_outside_0_1_is_one_line_and_exit_2(fraction: str) -> None:
    import subprocess

    script = Path(quality.__file__)
    result = subprocess.run(
        [sys.executable, str(script), "--budget", "tiny", "--val-fraction", fraction, "--out", "/dev/null"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --val-fraction {float(fraction):g}: the held-out share must lie in (0, 1), e.g. 0.3"
    ]


def test_sample_prior_swaps_only_the_kuramoto_prior_and_labels_the_rows() -> None:
    import torch

    from kuramoto_diffusion.config import image_model_config
    from kuramoto_diffusion.model import DiffusionModel
    from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, KuramotoProcess

    process_config = KuramotoConfig(steps=10, coupling="local")
    model = DiffusionModel(image_model_config(process_config, 1, 8, "tiny"))
    swapped, label = quality.with_sample_prior(model, "relaxed")
    assert label == " sample-prior:relaxed"
    assert swapped.network is model.network  # the same weights
    assert swapped.config.process == dataclasses.replace(process_config, prior="relaxed")
    # The model it came from (and what --save-models wrote) keeps its own prior.
    assert model.config.process.prior == "von-mises"

    def draws(process: KuramotoProcess) -> torch.Tensor:
        return process.prior_sample((2, 1, 8, 8), generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    relaxed = KuramotoProcess(dataclasses.replace(process_config, prior="relaxed"))
    torch.testing.assert_close(draws(swapped.process), draws(relaxed), rtol=0, atol=0)
    assert not torch.equal(draws(swapped.process), draws(model.process))
    assert quality.with_sample_prior(model, None) == (model, "")
    euclidean = DiffusionModel(image_model_config(EuclideanConfig(steps=10), 1, 8, "tiny"))
    assert quality.with_sample_prior(euclidean, "relaxed") == (euclidean, "")
