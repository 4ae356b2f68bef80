"""train with Kuramoto regime options (issue 31 §3): saved with the model, read back, sampled; driven like a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_runner import shared_cli


def run(*args: str):  # noqa: ANN201
    result = shared_cli().run(list(args), timeout=300, cwd=Path.cwd())
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


@pytest.mark.parametrize("process, options, expected", [
    ("kuramoto-local", ["--coupling-range", "0", "0.09", "--coupling-shape", "constant", "--coupling-norm", "unit",
                        "--ref-strength", "0.5"],
     {"coupling": "local", "coupling_range": [0.0, 0.09], "coupling_shape": "constant", "coupling_norm": "unit",
      "ref_strength": 0.5}),
    ("kuramoto-none", ["--ref-strength", "0"],
     {"coupling": "none", "coupling_range": [3e-05, 0.03], "coupling_shape": "schedule", "coupling_norm": "mean-field",
      "ref_strength": 0.0}),
])
def test_train_saves_the_regime_and_samples_with_it(tmp_path, process, options, expected):
    out = tmp_path / "run"
    run("train", "--data", "textures", "--image-size", "16", "--preset", "tiny", "--train-steps", "2", "--batch-size", "4",
        "--steps", "10", "--sample-every", "0", "--out", str(out), "--quiet", "--device", "cpu", "--process", process, *options)
    saved = json.loads((out / "config.json").read_text())["model"]["process"]
    assert {key: saved[key] for key in expected} == expected
    if expected["ref_strength"] == 0.0:  # wrapped Brownian motion ends near uniform: the fitted prior says so
        assert saved["prior_concentration"] < 0.5
    info = run("info", str(out)).stdout
    assert f"κ_ref = {expected['ref_strength']:g}" in info and expected["coupling_norm"] in info
    run("sample", "--checkpoint", str(out), "--num", "2", "--out", str(tmp_path / "samples.png"), "--quiet", "--device", "cpu")
    assert (tmp_path / "samples.png").is_file()
