"""The command line, driven in its own processes like a user would."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from cli_runner import shared_cli
from kuramoto_diffusion.app.evaluate_request import DataSplit, EvaluateRequest, data_split
from kuramoto_diffusion.model import DiffusionModel


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m kuramoto_diffusion *args`` in its own process (forked from one interpreter: ``cli_runner``)."""
    result = shared_cli().run(list(args), timeout=300, cwd=Path.cwd())
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines, "no error message"
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_help_lists_commands_and_defaults():
    result = run("--help")
    for command in ("forward", "train", "sample", "info", "demo"):
        assert command in result.stdout
    train_help = run("train", "--help").stdout
    assert "default: 2000" in train_help and "kuramoto-local" in train_help


def test_forward_picture(tmp_path):
    out = tmp_path / "forward.png"
    run(
        "forward",
        "--data",
        "textures",
        "--image-size",
        "16",
        "--num",
        "2",
        "--frames",
        "4",
        "--out",
        str(out),
        "--quiet",
    )
    picture = Image.open(out)
    assert picture.width > 4 * 16 and picture.height > 3 * 2 * 16


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    run(
        "train",
        "--data",
        "textures",
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--train-steps",
        "6",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "3",
        "--sample-every",
        "6",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
    )
    return out


def test_train_writes_checkpoints_config_and_samples(trained_run):
    names = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert names == ["step-00000003", "step-00000006"]
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["process"]["coupling"] == "local"
    assert config["training"]["train_steps"] == 6
    assert (trained_run / "samples" / "step-00000006.png").is_file()
    assert any((trained_run / "tensorboard").iterdir())


def test_resume_and_info(trained_run):
    result = run(
        "train",
        "--out",
        str(trained_run),
        "--resume",
        "--train-steps",
        "8",
        "--checkpoint-every",
        "3",
        "--quiet",
        "--device",
        "cpu",
    )
    assert result.returncode == 0
    info = run("info", str(trained_run)).stdout
    assert "step: 8" in info and "von Mises" in info and "parameters" in info


@pytest.mark.parametrize(
    "sampler",
    [
        ["--sampler", "sde"],
        ["--sampler", "ode"],
        ["--sampler", "ode-heun"],
        ["--corrector-steps", "2", "--snr", "0.1", "--grid", "rho"],
    ],
    ids=["sde", "ode", "ode-heun", "pc-from-corrector-options-rho"],
)
def test_sample_writes_grid_and_single_images(trained_run, tmp_path, sampler):
    grid = tmp_path / "grid.png"
    result = run(
        "sample",
        "--checkpoint",
        str(trained_run),
        "--num",
        "3",
        *sampler,
        "--nfe",
        "6",
        "--out",
        str(grid),
        "--out-dir",
        str(tmp_path / "single"),
        "--device",
        "cpu",
    )
    assert grid.is_file() and len(list((tmp_path / "single").glob("*.png"))) == 3
    assert Image.open(tmp_path / "single" / "000000.png").size == (16, 16)
    assert "clipped" in result.stdout


def test_sample_trajectory_and_forward_then_reverse(trained_run, tmp_path):
    run(
        "sample",
        "--checkpoint",
        str(trained_run),
        "--num",
        "2",
        "--nfe",
        "4",
        "--out",
        str(tmp_path / "a.png"),
        "--save-trajectory",
        str(tmp_path / "traj.gif"),
        "--quiet",
        "--device",
        "cpu",
    )
    assert Image.open(tmp_path / "traj.gif").n_frames >= 5
    run(
        "sample",
        "--checkpoint",
        str(trained_run),
        "--num",
        "2",
        "--from-data",
        "textures",
        "--start-step",
        "30",
        "--out",
        str(tmp_path / "edit.png"),
        "--quiet",
        "--device",
        "cpu",
    )
    assert (tmp_path / "edit.png").is_file()


def test_inpaint_keeps_known_pixels_and_edit_takes_an_image_file(trained_run, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 24), dtype=np.uint8)  # not square: resized to 16 px, centre-cropped
    Image.fromarray(pixels).save(tmp_path / "image.png")
    mask = np.zeros((20, 24), np.uint8)
    mask[6:14, 8:16] = 255  # white = fill
    Image.fromarray(mask).save(tmp_path / "mask.png")
    run(
        "sample",
        "--checkpoint",
        str(trained_run),
        "--inpaint",
        str(tmp_path / "image.png"),
        "--mask",
        str(tmp_path / "mask.png"),
        "--num",
        "2",
        "--nfe",
        "4",
        "--resample",
        "2",
        "--out",
        str(tmp_path / "filled.png"),
        "--out-dir",
        str(tmp_path / "filled"),
        "--quiet",
        "--device",
        "cpu",
    )
    from kuramoto_diffusion.data.image_io import read_image_for_model, read_mask_for_model

    image, dims = read_image_for_model(tmp_path / "image.png", 16, 1)
    known = read_mask_for_model(tmp_path / "mask.png", 16, tmp_path / "image.png", dims)[0, 0] == 0
    expected = np.rint((image[0, 0].numpy() + 1) * 127.5)
    assert 0 < known.sum() < 16 * 16
    for name in ("000000.png", "000001.png"):
        filled = np.asarray(Image.open(tmp_path / "filled" / name), dtype=np.float64)
        assert np.abs(filled - expected)[known.numpy()].max() <= 1.0  # within one grey level
    # A RePaint-style mask (white = keep) with --invert-mask fills the same region with the same result.
    Image.fromarray(255 - mask).save(tmp_path / "repaint_mask.png")
    run(
        "sample",
        "--checkpoint",
        str(trained_run),
        "--inpaint",
        str(tmp_path / "image.png"),
        "--mask",
        str(tmp_path / "repaint_mask.png"),
        "--invert-mask",
        "--num",
        "2",
        "--nfe",
        "4",
        "--resample",
        "2",
        "--out",
        str(tmp_path / "inverted.png"),
        "--out-dir",
        str(tmp_path / "inverted"),
        "--quiet",
        "--device",
        "cpu",
    )
    for name in ("000000.png", "000001.png"):
        assert (tmp_path / "inverted" / name).read_bytes() == (tmp_path / "filled" / name).read_bytes()
    run(
        "sample",
        "--checkpoint",
        str(trained_run),
        "--from-data",
        str(tmp_path / "image.png"),
        "--start-step",
        "20",
        "--num",
        "2",
        "--nfe",
        "4",
        "--out",
        str(tmp_path / "edit.png"),
        "--quiet",
        "--device",
        "cpu",
    )
    assert Image.open(tmp_path / "edit.png").size[0] > 16  # input first, then the edits


def test_checkpoint_with_unknown_config_key(trained_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained_run / "checkpoints" / "step-00000006", copy)
    config = json.loads((copy / "config.json").read_text())
    config["model"]["colour"] = "blue"
    (copy / "config.json").write_text(json.dumps(config))
    assert_clean_error(run("sample", "--checkpoint", str(copy), check=False), "unknown key(s) colour")


def test_channel_mismatch_with_init_from(trained_run, tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    for index in range(2):
        Image.new("RGB", (20, 20), (index * 100, 20, 30)).save(folder / f"{index}.png")
    result = run(
        "train",
        "--data",
        str(folder),
        "--image-size",
        "16",
        "--init-from",
        str(trained_run),
        "--out",
        str(tmp_path / "ft"),
        "--device",
        "cpu",
        check=False,
    )
    assert_clean_error(result, "channel")


def test_evaluate_scores_a_model_on_the_held_out_split_it_trained_with(trained_run, tmp_path, monkeypatch):
    # --seed 5 draws the samples; the split stays the model's (seed 0) so that no training crop is scored.
    out = tmp_path / "metrics.json"
    common = ("--num", "4", "--nfe", "2", "--seed", "5", "--json", str(out), "--device", "cpu", "--quiet")
    run("evaluate", "--checkpoint", str(trained_run), *common)
    settings = json.loads(out.read_text())["settings"]
    assert (settings["split_seed"], settings["val_fraction"], settings["models_own_split"]) == (0, 0.1, True)
    run("evaluate", "--checkpoint", str(trained_run), "--real", "fingerprints", *common)
    settings = json.loads(out.read_text())["settings"]
    assert (settings["split_seed"], settings["models_own_split"]) == (5, False)
    # A folder given by a relative path is the model's data when it resolves to the path the model saved.
    model = DiffusionModel.from_pretrained(trained_run)
    folder = tmp_path / "images"
    folder.mkdir()
    data = replace(model.run_config.data, source=str(folder.resolve()), seed=7, val_fraction=0.3)
    model.run_config = replace(model.run_config, data=data)
    monkeypatch.chdir(tmp_path)
    assert data_split(EvaluateRequest(real="images", seed=1), model) == DataSplit(7, 0.3, models_own=True)
    assert data_split(EvaluateRequest(real="textures", seed=1), model) == DataSplit(1, 0.1, models_own=False)


def test_evaluate_a_checkpoint_and_a_folder(trained_run, tmp_path):
    out = tmp_path / "metrics.json"
    result = run(
        "evaluate", "--checkpoint", str(trained_run), "--num", "8", "--nfe", "3", "--json", str(out), "--device", "cpu"
    )
    assert "FID/KID skipped" in result.stdout and "--inception-weights" in result.stdout
    payload = json.loads(out.read_text())
    assert {"swd_mean", "orientation_w1", "log_spectral_distance", "pixel_w1", "clipped_fraction"} <= set(
        payload["metrics"]
    )
    assert payload["settings"]["nfe"] == 3 and payload["settings"]["seed"] == 0
    folder = tmp_path / "fake"
    run(
        "sample",
        "--checkpoint",
        str(trained_run),
        "--num",
        "4",
        "--nfe",
        "3",
        "--out",
        str(tmp_path / "g.png"),
        "--out-dir",
        str(folder),
        "--quiet",
        "--device",
        "cpu",
    )
    result = run("evaluate", "--fake", str(folder), "--image-size", "16", "--num", "4", "--quiet", "--json", str(out))
    assert json.loads(out.read_text())["settings"]["num_fake"] == 4
    missing = run(
        "evaluate",
        "--fake",
        str(folder),
        "--image-size",
        "16",
        "--inception-weights",
        str(tmp_path / "no.pt"),
        check=False,
    )
    assert_clean_error(missing, "inception")


def test_evaluate_with_groups_and_reference_sets_prints_intervals(trained_run, tmp_path):
    out, raw = tmp_path / "intervals.json", tmp_path / "raw.json"
    common = [
        "evaluate",
        "--checkpoint",
        str(trained_run),
        "--num",
        "6",
        "--nfe",
        "3",
        "--groups",
        "2",
        "--reference-sets",
        "3",
        "--device",
        "cpu",
    ]
    result = run(*common, "--json", str(out))
    payload = json.loads(out.read_text())
    settings, tables = payload["settings"], payload["tables"]
    assert (settings["groups"], settings["reference_sets"], settings["group_size"], settings["reference_size"]) == (
        2,
        3,
        6,
        6,
    )
    assert settings["ema"] is True
    swd = tables["swd_mean"]
    assert len(swd) == 2 and all(len(row) == 3 for row in swd)
    interval = payload["intervals"]["swd_mean"]
    assert interval["mean"] == pytest.approx(sum(map(sum, swd)) / 6, rel=1e-12)
    assert interval["low"] <= interval["mean"] <= interval["high"] and interval["low"] < interval["high"]
    assert re.search(r"^swd_mean\s+\S+\s+\[\S+, \S+\]$", result.stdout, re.MULTILINE), result.stdout
    # --no-ema samples the raw weights: after 6 steps they differ from the EMA's, and so do the scores.
    run(*common, "--no-ema", "--quiet", "--json", str(raw))
    unaveraged = json.loads(raw.read_text())
    assert unaveraged["settings"]["ema"] is False and unaveraged["tables"]["swd_mean"] != swd
    assert_clean_error(run(*common[:-6], "--groups", "1", check=False), "--groups", "≥ 2")
    assert_clean_error(
        run(*common[:-4], "--reference-sets", "30", "--device", "cpu", check=False),
        "--reference-sets 30",
        "at most 3 distinct crops",
    )
    assert_clean_error(
        run("evaluate", "--nll", "--checkpoint", str(trained_run), "--groups", "2", check=False), "--nll"
    )


def test_evaluate_nll_reports_bits_per_dim_with_standard_errors(trained_run, tmp_path):
    out = tmp_path / "nll.json"
    result = run(
        "evaluate",
        "--nll",
        "--checkpoint",
        str(trained_run),
        "--real",
        "textures",
        "--num",
        "3",
        "--nfe",
        "3",
        "--probes",
        "2",
        "--json",
        str(out),
        "--device",
        "cpu",
    )
    payload = json.loads(out.read_text())
    metrics, settings = payload["metrics"], payload["settings"]
    assert {
        "nll_nats",
        "nll_standard_error",
        "bits_per_dim",
        "bits_per_dim_standard_error",
        "probe_standard_error",
    } <= set(metrics)
    assert settings["nfe"] == 4 and settings["divergence"] == "hutchinson" and settings["probes"] == 2  # Heun: even NFE
    assert 0 < metrics["bits_per_dim"] < 64 and metrics["probe_standard_error"] > 0
    assert "bits_per_dim" in result.stdout
    assert_clean_error(run("evaluate", "--nll", "--fake", str(tmp_path), check=False), "--nll needs --checkpoint")


def test_demo_runs_end_to_end(tmp_path):
    # The README's first command: it must keep working as options are added to train.
    out = tmp_path / "demo"
    result = run("demo", "--out", str(out), "--fine-tune-steps", "1", "--device", "cpu")
    for name in (
        "samples_vs_real.png",
        "forward.png",
        "forward_reverse.gif",
        "generation.gif",
        "order_parameter.png",
        "kuramoto_vs_euclidean.png",
    ):
        assert (out / name).is_file(), (name, result.stdout)
    # Issue 16 §7: no salt pixels in the shipped models' samples, below 0.1 % of values clipped at decode.
    clipped = {
        name: float(percent)
        for name, percent in re.findall(r"(\S+-32): ([0-9.]+) % of decoded values clipped", result.stdout)
    }
    assert "fingerprints-kuramoto-local-32" in clipped, result.stdout
    assert all(percent < 0.1 for percent in clipped.values()), clipped


def test_demo_finds_the_shipped_model():
    # Without it the demo silently trains from scratch (and its pictures are noise): the path must follow moves.
    from kuramoto_diffusion.app.demo import PRETRAINED
    from kuramoto_diffusion.model import DiffusionModel

    assert (PRETRAINED / "model.safetensors").is_file()
    assert DiffusionModel.from_pretrained(PRETRAINED).config.data_kind == "image"
