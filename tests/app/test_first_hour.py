"""Issue 33 ("The first hour"): a new user's own run says what it is doing, and its output does not mislead."""

from __future__ import annotations

import json
import math
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_runner import shared_cli

PRETRAINED = Path(__file__).resolve().parents[2] / "src" / "kuramoto_diffusion" / "pretrained"


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = shared_cli().run(list(args), timeout=300, cwd=Path.cwd())
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")
    return result


def write_stripes(folder: Path, count: int, size: int = 16) -> Path:
    """``count`` grey stripe images of ``size`` px with random period and phase."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = np.arange(size)
    for index in range(count):
        period, phase = rng.uniform(4, 8), rng.uniform(0, 2 * np.pi)
        row = 127.5 + 120 * np.sin(2 * np.pi * x / period + phase)
        Image.fromarray(np.tile(row, (size, 1)).astype(np.uint8)).save(folder / f"{index:03d}.png")
    return folder


# ----- §4 the clipped-values message, by process, and the undertrained warning -----------------------------------
def test_clipped_reason_names_the_seam_only_for_the_periodic_process():
    from kuramoto_diffusion.app.sample import clipped_reason, clipped_summary
    from kuramoto_diffusion.model import DiffusionModel

    euclidean = DiffusionModel.from_pretrained(PRETRAINED / "textures-euclidean-32")
    kuramoto = DiffusionModel.from_pretrained(PRETRAINED / "textures-kuramoto-local-32")
    assert "seam" not in clipped_reason(euclidean) and "[-1, 1]" in clipped_reason(euclidean)
    assert "seam" in clipped_reason(kuramoto) and "0.5π" in clipped_reason(kuramoto)
    assert "3 of 200 values (1.50 %)" in clipped_summary(euclidean, 3, 200)


def test_undertrained_warning_above_a_few_percent_only():
    from kuramoto_diffusion.app.sample import UNDERTRAINED_CLIPPED_FRACTION, warn_if_undertrained

    with pytest.warns(UserWarning, match="probably undertrained"):
        warn_if_undertrained(UNDERTRAINED_CLIPPED_FRACTION + 0.01, "runs/e")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_undertrained(0.005, "runs/e")


@pytest.fixture(scope="module")
def euclidean_run(tmp_path_factory) -> Path:
    """A Euclidean model trained 2 steps: its samples are noise, mostly outside [-1, 1]."""
    root = tmp_path_factory.mktemp("euclid")
    data = write_stripes(root / "stripes", 12)
    out = root / "run"
    run(
        "train",
        "--data",
        str(data),
        "--process",
        "euclidean",
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--train-steps",
        "2",
        "--batch-size",
        "4",
        "--sample-every",
        "0",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
    )
    return out


def test_sample_on_a_euclidean_model_says_no_seam_warns_and_names_the_gif(euclidean_run, tmp_path):
    gif = tmp_path / "traj.gif"
    result = run(
        "sample",
        "--checkpoint",
        str(euclidean_run),
        "--num",
        "2",
        "--nfe",
        "4",
        "--out",
        str(tmp_path / "s.png"),
        "--save-trajectory",
        str(gif),
        "--device",
        "cpu",
    )
    assert gif.is_file()
    assert str(gif) in result.stdout and "animated" in result.stdout
    assert "seam" not in result.stdout and "outside [-1, 1]" in result.stdout
    warning_lines = [line for line in result.stderr.splitlines() if "probably undertrained" in line]
    assert len(warning_lines) == 1, result.stderr


def test_evaluate_warns_of_the_undertrained_checkpoint(euclidean_run, tmp_path):
    result = run(
        "evaluate",
        "--checkpoint",
        str(euclidean_run),
        "--real",
        str(euclidean_run.parent / "stripes"),
        "--real-split",
        "all",
        "--num",
        "4",
        "--nfe",
        "4",
        "--json",
        str(tmp_path / "m.json"),
        "--device",
        "cpu",
    )
    assert "probably undertrained" in result.stderr
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["clipped_fraction"] > 0.03


# ----- §4 the reference set's size -----------------------------------------------------------------------------
def test_evaluate_records_the_distinct_reference_images_and_warns(tmp_path):
    from kuramoto_diffusion.app.evaluate import EvaluateRequest, evaluate

    real = write_stripes(tmp_path / "real", 5)
    fake = write_stripes(tmp_path / "fake", 12)
    request = EvaluateRequest(real=str(real), real_split="all", fake=str(fake), num=12, image_size=16, quiet=True)
    with pytest.warns(UserWarning, match="has 5 image"):
        payload = evaluate(request)
    assert payload["settings"]["num_real"] == 5  # not the --num asked for
    assert payload["settings"]["num_fake"] == 12


# ----- §4 the likelihood of angles in degrees, and evaluate --help -------------------------------------------------
@pytest.fixture(scope="module")
def degrees_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run, degrees file, the same angles in radians) of an angle model trained 2 steps on degrees."""
    root = tmp_path_factory.mktemp("degrees")
    rng = np.random.default_rng(1)
    radians = rng.vonmises([0.5, -1.0], 4.0, size=(60, 2))
    np.save(root / "deg.npy", np.rad2deg(radians))
    np.save(root / "rad.npy", radians)
    out = root / "run"
    run(
        "train",
        "--data",
        f"angles:{root / 'deg.npy'}",
        "--degrees",
        "--preset",
        "tiny",
        "--train-steps",
        "2",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
    )
    return out, root / "deg.npy", root / "rad.npy"


def test_nll_of_a_degrees_model_takes_the_unit_from_the_model_and_says_it(degrees_run):
    from kuramoto_diffusion.app.evaluate import EvaluateRequest, evaluate
    from kuramoto_diffusion.app.sample import SamplerOptions
    from kuramoto_diffusion.data import open_angle_source
    from kuramoto_diffusion.model import DiffusionModel

    out, degrees_file, radians_file = degrees_run
    sampling = SamplerOptions(nfe=4)
    request = EvaluateRequest(
        real=f"angles:{degrees_file}", checkpoint=out, nll=True, num=6, sampling=sampling, quiet=True, device="cpu"
    )
    automatic = evaluate(request)
    explicit = evaluate(EvaluateRequest(**{**request.__dict__, "degrees": True}))
    assert "radians" in automatic["settings"]["nll_unit"] and "nats" in automatic["settings"]["nll_unit"]
    # Independently: the model's own log-likelihood of the same rows given in radians (exact divergence for 2 angles).
    model = DiffusionModel.from_pretrained(out)
    rows = open_angle_source(f"angles:{radians_file}", split="val", seed=0).fixed_batch(6, seed=1)
    expected = -float(model.log_likelihood(rows, nfe=4).log_likelihood.mean())
    assert automatic["metrics"]["nll_nats"] == pytest.approx(expected, rel=1e-5)
    assert explicit["metrics"]["nll_nats"] == pytest.approx(expected, rel=1e-5)


def test_nll_prints_its_unit_and_evaluate_help_names_the_data_forms(degrees_run):
    out, degrees_file, _ = degrees_run
    result = run(
        "evaluate",
        "--nll",
        "--checkpoint",
        str(out),
        "--real",
        f"angles:{degrees_file}",
        "--num",
        "4",
        "--nfe",
        "4",
        "--device",
        "cpu",
    )
    assert "NLL in nats" in result.stdout
    help_text = " ".join(run("evaluate", "--help").stdout.split())
    for form in ("angles:", "torus:", "flows:", "--degrees"):
        assert form in help_text


# ----- §4 info shows the settings that apply -----------------------------------------------------------------------
def test_info_of_global_coupling_lists_no_neighbourhood_unless_all(degrees_run):
    out, _, _ = degrees_run
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["process"]["coupling"] == "global" and "neighbourhood" in config["model"]["process"]
    short = run("info", str(out)).stdout
    assert "neighbourhood" not in short and "padding" not in short and "--all" in short
    assert '"degrees": true' in short  # the unit of the angle files applies
    full = run("info", str(out), "--all").stdout
    assert '"neighbourhood"' in full and '"padding"' in full


def test_applicable_settings_keep_local_coupling_settings():
    from kuramoto_diffusion.app.info import applicable_settings

    config = json.loads((PRETRAINED / "textures-kuramoto-local-32" / "config.json").read_text())
    kept = applicable_settings(config)
    assert kept["model"]["process"]["neighbourhood"] == 5 and kept["model"]["process"]["padding"] == "reflect"
    assert "mlp" not in kept["model"] and "degrees" not in kept["data"] and "class_dropout" not in kept["training"]
    assert config["model"]["mlp"] is None  # the input is left as it was
    assert not math.isnan(kept["training"]["lr"])


# ----- §5 shipped models by name ------------------------------------------------------------------------------------
def test_shipped_models_load_by_name(tmp_path, monkeypatch):
    from kuramoto_diffusion.model import DiffusionModel, shipped_model_names

    assert "textures-kuramoto-local-32" in shipped_model_names()
    monkeypatch.chdir(tmp_path)  # away from the repository: the name, not a relative path, must find it
    by_name = DiffusionModel.from_pretrained("textures-kuramoto-local-32")
    by_path = DiffusionModel.from_pretrained(PRETRAINED / "textures-kuramoto-local-32")
    assert by_name.config == by_path.config
    assert all(
        torch.equal(a, b) for a, b in zip(by_name.network.state_dict().values(), by_path.network.state_dict().values())
    )
    result = run(
        "sample",
        "--checkpoint",
        "textures-kuramoto-local-32",
        "--num",
        "2",
        "--nfe",
        "2",
        "--out",
        str(tmp_path / "named.png"),
        "--device",
        "cpu",
    )
    assert (tmp_path / "named.png").is_file(), result.stdout


def test_a_missing_name_lists_the_shipped_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("sample", "--checkpoint", "textures-kuramoto-local-64", "--num", "1", check=False)
    assert result.returncode == 2 and "textures-kuramoto-local-32" in result.stderr


# ----- §5 pictures say what they show ------------------------------------------------------------------------------
def test_forward_picture_labels_every_column():
    from kuramoto_diffusion.viz.images import column_header

    labels = [f"t={t}" for t in (0, 25, 50, 75, 100)]
    header = np.asarray(column_header(labels, tile_width=16, padding=2, upscale=2).convert("L"))
    pitch = (16 + 2) * 2
    assert header.shape[1] == (5 * 18 + 2) * 2
    for column in range(5):  # ink in every column's own span
        span = header[:, 4 + column * pitch : 4 + (column + 1) * pitch - 4]
        assert (span < 128).any(), column


def test_order_parameter_title_says_which_way_r_goes():
    from kuramoto_diffusion.viz.images import order_parameter_title

    title = order_parameter_title({"forward": ([0, 1], [0.94, 0.53]), "generation": ([1, 0], [0.53, 0.93])}, "R(t)")
    assert "forward: falls 0.94 → 0.53" in title and "generation: rises 0.53 → 0.93" in title


# ----- §3 the start-up summary, the first estimate, the validation loss ---------------------------------------------
@pytest.fixture(scope="module")
def talking_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A Kuramoto-local run of 4 steps on 12 stripe images, not quiet: (run, the train command's result)."""
    root = tmp_path_factory.mktemp("talk")
    data = write_stripes(root / "stripes", 12)
    out = root / "run"
    result = run(
        "train",
        "--data",
        str(data),
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--train-steps",
        "4",
        "--batch-size",
        "4",
        "--sample-every",
        "0",
        "--out",
        str(out),
        "--device",
        "cpu",
    )
    return out, result


def test_train_prints_what_it_found_and_chose(talking_run):
    from kuramoto_diffusion.model import DiffusionModel
    from kuramoto_diffusion.nets import count_parameters

    out, result = talking_run
    text = result.stdout
    found = re.search(r"(\d+) image\(s\) for training, (\d+) held out for validation", text)
    assert found and int(found.group(1)) + int(found.group(2)) == 12 and int(found.group(2)) >= 1, text
    assert "1 channel(s) (grey), 16×16 px" in text
    assert "Kuramoto local" in text and "preset tiny" in text
    parameters = count_parameters(DiffusionModel.from_pretrained(out).network)
    assert f"{parameters:,} parameters" in text
    assert "objective: propagated" in text and "warm-up of 200 steps" in text
    assert "EMA: decay 0.999" in text and "(1 + n)/(10 + n)" in text
    assert "device: cpu" in text and "thread" in text
    assert re.search(r"first estimate at step 4: [0-9.]+ s per step, 0 steps left", text), text
    assert text.index("first estimate") > text.index("device: cpu")  # after the summary, once training runs


def test_a_quiet_train_prints_nothing(euclidean_run):
    result = run(
        "train",
        "--out",
        str(euclidean_run.parent / "quiet"),
        "--data",
        str(euclidean_run.parent / "stripes"),
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--train-steps",
        "1",
        "--batch-size",
        "4",
        "--sample-every",
        "0",
        "--quiet",
        "--device",
        "cpu",
    )
    assert result.stdout == ""


def test_validation_losses_reach_tensorboard(talking_run):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    out, _ = talking_run
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    per_t = [f"val/loss_t{t}" for t in (10, 25, 50, 75, 100)]
    assert {*per_t, "val/loss", "val/loss_ema", "train/loss"} <= tags, tags
    values = {tag: events.Scalars(tag)[-1] for tag in [*per_t, "val/loss"]}
    assert all(scalar.step == 4 for scalar in values.values())  # at the last step
    assert values["val/loss"].value == pytest.approx(sum(values[tag].value for tag in per_t) / 5, rel=1e-5)


def test_validation_probe_is_fixed_and_follows_the_weights():
    from kuramoto_diffusion.model import DiffusionModel
    from kuramoto_diffusion.training.validation import ValidationProbe, validation_steps

    assert (
        validation_steps(100) == [10, 25, 50, 75, 100]
        and validation_steps(1) == [1]
        and validation_steps(4) == [1, 2, 3, 4]
    )
    for name in ("textures-kuramoto-local-32", "textures-euclidean-32"):
        model = DiffusionModel.from_pretrained(PRETRAINED / name)
        images = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
        probe = ValidationProbe(model.process, model.encode(images), seed=3)
        model.network.train()
        first, again = probe.losses(model.network), probe.losses(model.network)
        assert first == again and set(first) == {10, 25, 50, 75, 100}  # fixed states and noise
        assert model.network.training  # evaluated in eval mode, its training mode restored
        untrained = DiffusionModel(model.config)  # fresh weights: other losses
        assert probe.losses(untrained.network) != first
        assert all(math.isfinite(value) and value > 0 for value in first.values())


def test_ema_description_says_where_the_ramp_reaches_the_decay():
    from kuramoto_diffusion.app.train import ema_description

    full = next(n for n in range(100_000) if (1 + n) / (10 + n) >= 0.999)  # brute force
    assert f"reaches 0.999 at step {full}" in ema_description(0.999, 0, 20_000)
    assert "for the whole run of 600 steps" in ema_description(0.999, 0, 600)
    assert "up to step 100" in ema_description(0.999, 100, 600)
    assert "off" in ema_description(0.0, 0, 600)


# ----- the README's first run, as a script --------------------------------------------------------------------------
@pytest.mark.slow  # 600 training steps of the tiny UNet and 64 samples: 5–15 min on 2 CPU cores
def test_the_first_run_script_trains_samples_and_clips_under_one_percent(tmp_path):
    import os
    import sys

    root = Path(__file__).resolve().parents[2]
    environment = {
        **os.environ,
        "PYTHONPATH": str(root / "src"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }
    result = subprocess.run(
        [sys.executable, str(root / "examples" / "first_run.py"), str(tmp_path / "first")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "first run done" in result.stdout and (tmp_path / "first" / "samples.png").is_file()
    share = float(re.search(r"first run done: ([0-9.]+) %", result.stdout).group(1)) / 100
    assert share < 0.01


# ----- §3 presets and their cost --------------------------------------------------------------------------------------
def test_train_help_and_readme_name_each_presets_use_and_cost():
    from kuramoto_diffusion.app.cli import PRESET_NAMES

    help_text = " ".join(run("train", "--help").stdout.split())
    preset_help = help_text[help_text.rindex("--preset {") :][:900]  # the option, not the usage line
    for name in PRESET_NAMES:
        assert name in preset_help
    assert (
        len(re.findall(r"[0-9.]+ s per step", preset_help)) >= 2
        and "first runs" in preset_help
        and "GPU" in preset_help
    )
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name in PRESET_NAMES:
        assert f"| `{name}`" in readme
    assert "bench/preset_cost.py" in readme
