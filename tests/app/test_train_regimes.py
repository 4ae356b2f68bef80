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


@pytest.mark.parametrize(
    "process, options, expected",
    [
        (
            "kuramoto-local",
            [
                "--coupling-range",
                "0",
                "0.09",
                "--coupling-shape",
                "constant",
                "--coupling-norm",
                "unit",
                "--ref-strength",
                "0.5",
            ],
            {
                "coupling": "local",
                "coupling_range": [0.0, 0.09],
                "coupling_shape": "constant",
                "coupling_norm": "unit",
                "ref_strength": 0.5,
            },
        ),
        (
            "kuramoto-none",
            ["--ref-strength", "0"],
            {
                "coupling": "none",
                "coupling_range": [3e-05, 0.03],
                "coupling_shape": "schedule",
                "coupling_norm": "mean-field",
                "ref_strength": 0.0,
            },
        ),
    ],
)
def test_train_saves_the_regime_and_samples_with_it(tmp_path, process, options, expected):
    out = tmp_path / "run"
    run(
        "train",
        "--data",
        "textures",
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--train-steps",
        "2",
        "--batch-size",
        "4",
        "--steps",
        "10",
        "--sample-every",
        "0",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
        "--process",
        process,
        *options,
    )
    saved = json.loads((out / "config.json").read_text())["model"]["process"]
    assert {key: saved[key] for key in expected} == expected
    if expected["ref_strength"] == 0.0:  # wrapped Brownian motion ends near uniform: the fitted prior says so
        assert saved["prior_concentration"] < 0.5
    info = run("info", str(out)).stdout
    assert f"κ_ref = {expected['ref_strength']:g}" in info and expected["coupling_norm"] in info
    run(
        "sample",
        "--checkpoint",
        str(out),
        "--num",
        "2",
        "--out",
        str(tmp_path / "samples.png"),
        "--quiet",
        "--device",
        "cpu",
    )
    assert (tmp_path / "samples.png").is_file()


def test_train_stores_the_prior_reports_every_gap_and_nll_refuses_a_prior_without_density(tmp_path):
    out = tmp_path / "run"
    trained = run(
        "train",
        "--data",
        "textures",
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--train-steps",
        "2",
        "--batch-size",
        "4",
        "--steps",
        "10",
        "--sample-every",
        "0",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--prior",
        "relaxed",
        "--prior-relax-steps",
        "20",
    )
    for prior in ("von-mises", "relaxed", "forward-chain"):  # the gap of every candidate, whichever is chosen
        assert any(line.strip().startswith(f"{prior}: correlation gap") for line in trained.stdout.splitlines()), (
            trained.stdout
        )
    saved = json.loads((out / "config.json").read_text())["model"]["process"]
    assert (saved["prior"], saved["prior_relax_steps"]) == ("relaxed", 20)
    assert saved["prior_start_concentration"] > 0  # the forward-chain start is fitted and stored too
    assert "prior: relaxed" in run("info", str(out)).stdout
    run(
        "sample",
        "--checkpoint",
        str(out),
        "--num",
        "2",
        "--out",
        str(tmp_path / "samples.png"),
        "--quiet",
        "--device",
        "cpu",
    )
    refused = shared_cli().run(
        ["evaluate", "--nll", "--checkpoint", str(out), "--real", "textures", "--num", "2"], timeout=300, cwd=Path.cwd()
    )
    lines = [line for line in refused.stderr.strip().splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "prior (relaxed) has no closed-form density" in lines[0] and "retrain it with --prior von-mises" in lines[0]


def test_prior_auto_is_resolved_at_the_fit_saved_and_accepted_on_resume(tmp_path):
    out = tmp_path / "run"
    common = [
        "--data",
        "textures",
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--batch-size",
        "4",
        "--steps",
        "10",
        "--sample-every",
        "0",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--prior",
        "auto",
    ]
    trained = run("train", *common, "--train-steps", "2")
    saved = json.loads((out / "config.json").read_text())
    chosen = saved["model"]["process"]["prior"]
    assert chosen in ("von-mises", "relaxed", "forward-chain") and saved["training"]["prior"] == chosen
    assert f"this model's prior: {chosen} (chosen by --prior auto" in trained.stdout
    gaps = {line.split(":")[0].strip(): line for line in trained.stdout.splitlines() if "correlation gap" in line}
    assert "within tolerance" in gaps[chosen]
    cheaper = {"von-mises": [], "forward-chain": ["von-mises"], "relaxed": ["von-mises", "forward-chain"]}[
        chosen
    ]  # T = 10 < L = 200
    assert all("outside tolerance" in gaps[prior] for prior in cheaper)
    run("train", *common, "--train-steps", "3", "--resume", "--quiet")
