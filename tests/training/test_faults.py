"""Faults (kill -9, full disk, NaN), determinism and numerical edges."""

from __future__ import annotations

import dataclasses
import errno
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kuramoto_diffusion.circular import (
    fit_von_mises,
    order_parameter,
    von_mises_log_prob,
    von_mises_sample,
    wrap,
    wrapped_normal_log_prob,
    wrapped_normal_score,
)
from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, build_process
from kuramoto_diffusion.training import MAX_SKIPPED_IN_A_ROW, Trainer, TrainingDiverged
from kuramoto_diffusion.training import checkpointing as checkpointing_module
from tiny_runs import tiny_train

ROOT = Path(__file__).resolve().parents[2]
LOCAL = KuramotoConfig(coupling="local", neighbourhood=3, steps=20)


class FixedImages:
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.images[torch.randint(0, len(self.images), (batch_size,), generator=generator)]


def random_images(count: int = 4, size: int = 8) -> torch.Tensor:
    return torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1


def make_trainer(
    folder: Path, process=LOCAL, steps: int = 20, images: torch.Tensor | None = None, **training
) -> Trainer:
    settings = dict(train_steps=steps, batch_size=8, checkpoint_every=10, sample_every=0, warmup_steps=2, log_every=5)
    settings.update(training)
    config = RunConfig(
        model=image_model_config(process, 1, 8, "tiny"), data=DataConfig(image_size=8), training=TrainConfig(**settings)
    )
    trainer = Trainer(config, FixedImages(random_images() if images is None else images), folder, quiet=True)
    trainer.start()
    return trainer


# ----- faults -------------------------------------------------------------------------------------
def test_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path / "run", steps=10)
    trainer.train()
    written = sum(p.stat().st_size for p in (tmp_path / "run" / "checkpoints" / "step-00000010").iterdir())
    assert 0.7 < trainer.checkpoint_bytes() / written < 1.3  # the estimate behind the free-space check
    real_save = checkpointing_module.save_tensors
    calls = {"n": 0}

    def disk_fills_up(tensors, path):
        calls["n"] += 1
        if calls["n"] == 3:  # part-way through the next checkpoint
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_save(tensors, path)

    monkeypatch.setattr(checkpointing_module, "save_tensors", disk_fills_up)
    trainer.train_config = TrainConfig(**{**trainer.train_config.__dict__, "train_steps": 20})
    with pytest.raises(UserError, match="No space left on device.*step-00000010 is kept.*resume=True"):
        trainer.train()
    folder = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["step-00000010"]  # no half-written directory left
    assert DiffusionModel.from_pretrained(tmp_path / "run").checkpoint_path.name == "step-00000010"


def test_too_little_disk_space_is_known_before_training(tmp_path, monkeypatch):
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 50_000, 50_000))
    with pytest.raises(UserError, match="only 0.0 MiB free, but a checkpoint takes about .* MiB"):
        make_trainer(tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing left behind


def test_nan_steps_are_skipped_when_asked_and_stop_after_too_many(tmp_path, monkeypatch):
    from kuramoto_diffusion.training.objectives import Objective

    real_loss = Objective.loss
    bad_calls = {3, 4, 7}
    calls = {"n": 0}

    def sometimes_nan(self, *args, **kwargs):
        calls["n"] += 1
        loss = real_loss(self, *args, **kwargs)
        return loss * float("nan") if calls["n"] in bad_calls else loss

    monkeypatch.setattr(Objective, "loss", sometimes_nan)
    trainer = make_trainer(tmp_path / "skip", steps=10, on_nonfinite="skip")
    trainer.train()
    assert trainer.step == 10 and trainer.skipped_steps == 3 and calls["n"] == 13
    assert all(torch.isfinite(p).all() for p in trainer.model.network.parameters())
    # The default stops at the first one.
    calls["n"] = 0
    with pytest.raises(TrainingDiverged, match="loss became NaN or infinite at step 3"):
        make_trainer(tmp_path / "stop", steps=10).train()
    # Skipping gives up after MAX_SKIPPED_IN_A_ROW in a row.
    calls["n"] = 0
    bad_calls.update(range(1, 100))
    with pytest.raises(TrainingDiverged, match=f"{MAX_SKIPPED_IN_A_ROW} steps in a row"):
        make_trainer(tmp_path / "give-up", steps=10, on_nonfinite="skip").train()


def test_a_nan_checkpoint_is_never_written(tmp_path):
    trainer = make_trainer(tmp_path / "run", steps=10)
    trainer.train()
    with torch.no_grad():
        next(trainer.ema_network.parameters())[0] = float("inf")
    trainer.step += 1
    with pytest.raises(TrainingDiverged, match="EMA weights are NaN or infinite"):
        trainer.save_checkpoint()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000010"]


def _train_cli(out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "kuramoto_diffusion", *tiny_train(out, steps, 3, *extra, keep=2)]


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    steps = 60
    subprocess.run(_train_cli(tmp_path / "straight", steps), check=True, env=environment, timeout=600)
    run = tmp_path / "killed"
    rng = random.Random(1)
    kills = 0
    command = _train_cli(run, steps)
    for _attempt in range(12):
        process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(2.0, 5.0))  # import + set-up take ~2 s; training ~5 steps/s
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read()  # finished before the kill
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        # Whatever the moment, what is on disk loads.
        if (run / "checkpoints").exists() and any(p.name.startswith("step-") for p in (run / "checkpoints").iterdir()):
            DiffusionModel.from_pretrained(run)
            command = _train_cli(run, steps, "--resume")
        else:  # killed before the first checkpoint: start again
            subprocess.run(["rm", "-rf", str(run)], check=True)
    else:
        process = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
        assert process.returncode == 0, process.stderr
    assert kills >= 2
    final = f"checkpoints/step-{steps:08d}"
    for name in ("model.safetensors", "ema.safetensors"):
        expected, resumed = load_file(tmp_path / "straight" / final / name), load_file(run / final / name)
        assert expected.keys() == resumed.keys()
        for key in expected:
            assert torch.equal(expected[key], resumed[key]), (name, key)


# ----- determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize("process", [LOCAL, EuclideanConfig(steps=20)], ids=["kuramoto", "euclidean"])
def test_same_seed_same_training_and_samples(tmp_path, process):
    first = make_trainer(tmp_path / "a", process, steps=6)
    second = make_trainer(tmp_path / "b", process, steps=6)
    first.train()
    second.train()
    for (name, a), b in zip(first.model.network.state_dict().items(), second.model.network.state_dict().values()):
        assert torch.equal(a, b), name
    model = first.ema_model()
    one = model.sample(3, generator=torch.Generator().manual_seed(5)).states
    two = model.sample(3, generator=torch.Generator().manual_seed(5)).states
    other = model.sample(3, generator=torch.Generator().manual_seed(6)).states
    assert torch.equal(one, two) and not torch.equal(one, other)


def test_sample_command_is_reproducible_byte_for_byte(tmp_path):
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    DiffusionModel(image_model_config(LOCAL, 1, 8, "tiny")).save_pretrained(model_dir)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    outputs = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kuramoto_diffusion",
                "sample",
                "--checkpoint",
                str(model_dir),
                "--num",
                "4",
                "--seed",
                seed,
                "--out",
                str(tmp_path / f"{name}.png"),
                "--quiet",
                "--deterministic",
            ],
            check=True,
            env=environment,
            timeout=120,
        )
        outputs.append((tmp_path / f"{name}.png").read_bytes())
    assert outputs[0] == outputs[1] and outputs[0] != outputs[2]


# ----- numerical edges ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0, 10.0])
def test_wrapped_normal_is_finite_across_scales(scale, dtype):
    x = torch.linspace(-math.pi, math.pi, 1001, dtype=dtype)
    for mean in (0.0, math.pi - 1e-6, -math.pi):
        assert torch.isfinite(wrapped_normal_log_prob(x, mean, scale)).all()
        assert torch.isfinite(wrapped_normal_score(x, mean, scale)).all()


@pytest.mark.parametrize("kappa", [0.0, 1e-9, 1e-3, 1e4, 1e8])
def test_von_mises_extreme_concentrations(kappa):
    generator = torch.Generator().manual_seed(0)
    samples = von_mises_sample((20_000,), 0.0, kappa, generator=generator, dtype=torch.float64)
    assert torch.isfinite(samples).all() and (samples >= -math.pi).all() and (samples < math.pi).all()
    resultant = float(order_parameter(samples)[0])
    if kappa < 1e-2:
        assert resultant < 0.03  # uniform: R ≈ 1/√N
    else:
        assert abs(float(samples.std()) - 1 / math.sqrt(kappa)) < 0.05 / math.sqrt(kappa)  # ≈ N(0, 1/κ)
    grid = torch.linspace(-math.pi, math.pi, 101, dtype=torch.float64)
    assert torch.isfinite(von_mises_log_prob(grid, 0.0, kappa)).all()


def test_fit_von_mises_on_identical_samples_is_finite():
    location, concentration = fit_von_mises(torch.full((100,), 0.7, dtype=torch.float64))
    assert math.isfinite(concentration) and concentration > 1e3 and abs(location - 0.7) < 1e-9


FLAT_IMAGES = {
    "constant grey (R = 1)": torch.zeros(4, 1, 8, 8),
    "all black (-0.9π, next to the seam)": -torch.ones(4, 1, 8, 8),
    "all white (+0.9π, next to the seam)": torch.ones(4, 1, 8, 8),
    "black and white halves (across the seam)": torch.cat([-torch.ones(4, 1, 8, 4), torch.ones(4, 1, 8, 4)], dim=3),
}


@pytest.mark.parametrize("name", list(FLAT_IMAGES))
# The paper's phase range puts black and white next to the seam, the hard case.
@pytest.mark.parametrize(
    "process",
    [
        dataclasses.replace(LOCAL, phase_range=0.9 * math.pi),
        KuramotoConfig(coupling="global", steps=20, phase_range=0.9 * math.pi),
        EuclideanConfig(steps=20),
    ],
    ids=["local", "global", "euclidean"],
)
def test_flat_and_seam_images_train_and_sample_without_nan(tmp_path, name, process):
    images = FLAT_IMAGES[name]
    trainer = make_trainer(tmp_path / "run", process, steps=3, images=images)
    if process.kind == "kuramoto":
        states = trainer.model.encode(images)
        assert torch.allclose(order_parameter(states, dims=(1, 2, 3))[0][0], torch.tensor(1.0)) or "halves" in name
        trajectory = trainer.process.simulate(states, 20, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(trajectory).all()
        assert math.isfinite(trainer.model.config.process.prior_concentration)
    trainer.train()
    model = trainer.ema_model()
    assert all(torch.isfinite(p).all() for p in model.network.parameters())
    result = model.forward_then_reverse(images, 10, generator=torch.Generator().manual_seed(0))
    decoded, _ = model.decode(result.states)
    assert torch.isfinite(decoded).all() and decoded.abs().max() <= 1


@pytest.mark.parametrize("process", [LOCAL, EuclideanConfig(steps=20)], ids=["kuramoto", "euclidean"])
def test_float16_inputs_are_computed_in_float32(tmp_path, process):
    images = random_images().half()
    trainer = make_trainer(tmp_path / "run", process, steps=3, images=images)
    trainer.train()
    model = trainer.ema_model()
    states = model.encode(images)
    assert states.dtype == torch.float32 and torch.isfinite(states).all()
    assert torch.isfinite(model.score(states, 5)).all()
    assert torch.isfinite(wrap(torch.tensor([3.5, -7.0], dtype=torch.float16))).all()
    result = model.forward_then_reverse(images, 5, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(result.states).all()


def test_process_steps_are_finite_at_extreme_strides():
    process = build_process(KuramotoConfig(coupling="local", neighbourhood=3, steps=1000))
    theta = wrap(torch.randn(2, 1, 8, 8, dtype=torch.float64) * 3)
    for t, stride in ((0, 1), (0, 1000), (999, 1)):
        out = process.step(theta, t, stride=stride, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(out).all()
        assert torch.isfinite(process.transition_score(out, theta, t, stride=stride)).all()
