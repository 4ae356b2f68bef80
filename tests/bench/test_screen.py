"""bench/screen.py: a regime's chain statistics rebuilt from its quality file, and its ratio to Euclidean."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import quality  # noqa: E402 - bench/ is a folder of scripts, put on the path above
import screen  # noqa: E402
import synchrony  # noqa: E402
from kuramoto_diffusion.data import open_image_source  # noqa: E402
from kuramoto_diffusion.errors import UserError  # noqa: E402
from kuramoto_diffusion.serialization import config_to_dict  # noqa: E402
from test_headline import quality_row  # noqa: E402

LABEL = "kuramoto-local[auto K9e-05,0.09 κ0.5]"
OBJECTIVE = quality.Objective(coupling_range=(9e-05, 0.09), ref_strength=0.5)


def test_the_chain_statistics_are_the_synchrony_benchmarks_for_the_same_regime() -> None:
    # screen rebuilds the regime from the quality file's Objective; synchrony.py from its spec string.
    steps, images = 12, 4
    crops = open_image_source("fingerprints", 32, channels=1, split="val").sample_batch(
        images, torch.Generator().manual_seed(screen.CROP_SEED)
    )
    config = quality.process_for("kuramoto-local", steps, OBJECTIVE)
    ours = screen.chain_statistics(config, steps, screen.held_out_crops("fingerprints", images))
    theirs = synchrony.curves("fingerprints", "local:k3:ref0.5", crops, steps, seed=1)
    assert ours["d1"] == pytest.approx(synchrony.both_axes(theirs, 1, steps), abs=1e-5)
    assert ours["d8"] == pytest.approx(synchrony.both_axes(theirs, 8, steps), abs=1e-5)
    assert ours["R"] == pytest.approx(theirs["R"][steps], abs=1e-5)


def test_a_screen_row_pairs_each_regime_with_euclidean(tmp_path: Path) -> None:
    paths = []
    train_s = {("e", 0): 100.0, ("k", 0): 110.0, ("e", 1): 200.0, ("k", 1): 230.0}
    for seed, scale in ((0, 10.0), (1, 12.0)):
        for name, rows, objective in (
            ("e", [quality_row("euclidean", "sde", 100, scale)], {}),
            (
                "k",
                [quality_row(LABEL, "sde", 100, 0.75 * scale)],
                {"coupling_range": [9e-05, 0.09], "ref_strength": 0.5},
            ),
        ):
            rows[0]["train_s"] = train_s[name, seed]
            path = tmp_path / f"{name}{seed}.json"
            path.write_text(
                json.dumps(
                    {
                        "command": f"python bench/quality.py --seed {seed}",
                        "seed": seed,
                        "settings": {"steps": 6},
                        "objective": objective,
                        "rows": rows,
                    }
                )
            )
            paths.append(path)
    costs = [cost_row("local", 6, 1.2), cost_row("local:k3:ref0.5", 6, 1.05)]
    rows, notes = screen.screen_rows(paths, ["swd"], images=2, command="test", costs=costs)
    assert notes == []
    (row,) = rows
    assert row["regime"] == LABEL and row["seeds"] == [0, 1]
    assert row["swd_over_euclidean"]["mean"] == pytest.approx(0.75)
    assert row["swd_over_euclidean"]["low"] == pytest.approx(0.75) == row["swd_over_euclidean"]["high"]
    assert row["train_s_over_euclidean"] == {"seeds": [0, 1], "ratio": pytest.approx(340.0 / 300.0)}
    assert row["train_cost_in_run"]["ratio"] == 1.05
    assert -1.0 <= row["d8"] <= row["d1"] <= 1.0 and 0.0 <= row["R"] <= 1.0
    assert torch.is_grad_enabled()  # the statistics ran without autograd and left it on for the next test


def cost_row(spec: str, steps: int, ratio: float, preset: str = "tiny") -> dict:
    """A cost row as bench/train_throughput.py --mode cost writes it for regime ``spec``."""
    return {
        "preset": preset,
        "model": spec,
        "T": steps,
        "ms_per_example": 10.0 * ratio,
        "cost_ratio": ratio,
        "cost_ratio_low": ratio - 0.01,
        "cost_ratio_high": ratio + 0.02,
        "compiled": False,
        "config": config_to_dict(synchrony.regime_config(spec, steps)),
    }


def test_the_in_run_cost_is_the_row_of_the_same_training_regime(tmp_path: Path) -> None:
    # The quality file's Objective and the cost run's spec string build the config two ways; the prior (sampling
    # only) does not take part, the budget's network preset does.
    steps = 6
    path = tmp_path / "cost.json"
    rows = [cost_row("global", steps, 1.03), cost_row("local:k3:ref0.5", steps, 1.07), cost_row("local", steps, 1.2)]
    path.write_text(json.dumps({"cost_rows": [*rows, {**rows[1], "compiled": True, "cost_ratio": 9.0}]}))
    costs = screen.in_run_costs([path])
    relaxed = quality.process_for(
        "kuramoto-local", steps, quality.Objective(coupling_range=(9e-05, 0.09), ref_strength=0.5, prior="relaxed")
    )
    assert screen.in_run_cost(relaxed, "tiny", costs) == {
        "ms_per_example": pytest.approx(10.7),
        "ratio": 1.07,
        "low": pytest.approx(1.06),
        "high": pytest.approx(1.09),
    }
    assert screen.in_run_cost(relaxed, "small", costs) is None
    # K × 10 written as the quality label's (0.0003, 0.3) and as 10 × (3e-5, 0.03) differ in the last bit.
    strong = quality.process_for("kuramoto-local", steps, quality.Objective(coupling_range=(0.0003, 0.3)))
    assert screen.in_run_cost(strong, "tiny", [cost_row("local:k10", steps, 1.1)])["ratio"] == 1.1
    unit = quality.process_for("kuramoto-local", steps, quality.Objective(coupling_norm="unit"))
    assert screen.in_run_cost(unit, "tiny", costs) is None
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(UserError, match="other.json: no cost rows"):
        screen.in_run_costs([tmp_path / "other.json"])
