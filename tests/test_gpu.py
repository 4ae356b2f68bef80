"""The CUDA paths: mixed-precision training, resume, CPU/CUDA agreement of samples, NCCL, peak memory.

Tests marked ``gpu`` run with ``make test-gpu`` and are skipped (reason shown in the summary) where
``torch.cuda.is_available()`` is false. Each check is a function of the device, and the CPU runs the
same functions in the fast suite, so the criteria themselves are exercised on every machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kuramoto_diffusion.config import (
    DataConfig,
    FlowNormalisation,
    RunConfig,
    TrainConfig,
    flow_model_config,
    image_model_config,
)
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, PhaseAmplitudeConfig
from kuramoto_diffusion.sampling.sweep import SAMPLERS
from kuramoto_diffusion.training import Trainer
from kuramoto_diffusion.training.objectives import base as objective_base
from kuramoto_diffusion.training.objectives import markov
from tiny_runs import tiny_train

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible (torch.cuda.is_available() is False)")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two or more CUDA GPUs")

PROCESSES = {
    "kuramoto-local": KuramotoConfig(coupling="local", neighbourhood=3, steps=20),
    "kuramoto-global": KuramotoConfig(coupling="global", steps=20),
    "euclidean": EuclideanConfig(steps=20),
    "phase-amplitude": PhaseAmplitudeConfig(steps=20),
}
PRECISIONS = ("fp32", "bf16", "fp16")
SIZE = 8


class FixedStates:
    """Two fixed states of a model's shape (a memorisation task); batches drawn with the generator."""

    def __init__(self, config: RunConfig) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = (torch.rand(config.model.state_shape(2), generator=generator) > 0.5).float() * 1.6 - 0.8

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.images[torch.randint(0, len(self.images), (batch_size,), generator=generator)]


class RandomImages:
    """Fresh uniform images in [-1, 1] of one channel, for timing and memory (nothing is learnt)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.rand(batch_size, 1, self.size, self.size, generator=generator) * 2 - 1


def run_config(name: str, steps: int, precision: str = "fp32", checkpoint_every: int = 1000) -> RunConfig:
    process = PROCESSES[name]
    if name == "phase-amplitude":
        model = flow_model_config(process, SIZE, FlowNormalisation(), "tiny")
    else:
        model = image_model_config(process, 1, SIZE, "tiny")
    return RunConfig(
        model=model,
        data=DataConfig(image_size=SIZE),
        training=TrainConfig(
            train_steps=steps,
            batch_size=16,
            precision=precision,
            lr=2e-3,
            warmup_steps=1,
            checkpoint_every=checkpoint_every,
            sample_every=0,
            fit_prior=False,
            seed=0,
        ),
    )


def held_out_loss(trainer: Trainer, source: FixedStates) -> float:
    """The fp32 DSM loss of the current network on one fixed batch (same states, steps and noise every call)."""
    generator = torch.Generator().manual_seed(123)
    x = source.sample_batch(256, generator).to(trainer.device)
    t = torch.randint(0, trainer.process.steps - 1, (256,), generator=generator).to(trainer.device)
    stride = torch.ones_like(t)
    noise = torch.randn(x.shape, generator=generator).to(trainer.device)
    trainer.model.network.eval()
    with torch.no_grad():
        example = objective_base.kernel_example(trainer.process, x, t, stride, noise)
        return float(objective_base.dsm_loss(trainer.model.network, trainer.process, example))


def check_training(device: str, name: str, precision: str, out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20 steps: finite losses, a falling held-out loss, and kernel draws and targets in float32."""
    dtypes: set[torch.dtype] = set()
    original = objective_base.kernel_draw

    def recording_kernel_draw(*args, **kwargs):
        result = original(*args, **kwargs)
        dtypes.update(tensor.dtype for tensor in result)
        return result

    for module in (objective_base, markov):  # the validation-style draws and the Markov objective's
        monkeypatch.setattr(module, "kernel_draw", recording_kernel_draw)
    config = run_config(name, 20, precision)
    source = FixedStates(config)
    trainer = Trainer(config, source, out, device=torch.device(device), quiet=True)
    trainer.start()
    before = held_out_loss(trainer, source)
    losses = [trainer.train_step() for _ in range(20)]
    after = held_out_loss(trainer, source)
    assert all(loss is not None and torch.isfinite(torch.tensor(loss)) for loss in losses), losses
    assert dtypes == {torch.float32}, dtypes
    # Measured on the CPU (all three precisions): the held-out loss falls to 0.51 (Euclidean), 0.78
    # (phase–amplitude) and 0.89–0.90 (Kuramoto: its one-step target keeps a noise floor, SPEC §3) of its start.
    assert after < 0.95 * before, (before, after)


def check_resume(device: str, name: str, out: Path) -> None:
    """2 + 2 steps through a checkpoint give the weights of 4 uninterrupted steps."""
    source = FixedStates(run_config(name, 4))
    straight = Trainer(
        run_config(name, 4, checkpoint_every=2), source, out / "straight", device=torch.device(device), quiet=True
    )
    straight.start()
    straight.train()
    first = Trainer(
        run_config(name, 2, checkpoint_every=2), source, out / "resumed", device=torch.device(device), quiet=True
    )
    first.start()
    first.train()
    resumed = Trainer.resume(out / "resumed", source, train_steps=4, device=torch.device(device), quiet=True)
    resumed.train()
    for key, tensor in straight.model.network.state_dict().items():
        # --deterministic promises bit-identical resumes (README); allow float32 rounding on top.
        assert torch.allclose(tensor, resumed.model.network.state_dict()[key], atol=1e-6, rtol=0), key


def samples_on(device: str, model_dir: Path, sampler: str, x_start: torch.Tensor) -> torch.Tensor:
    model = DiffusionModel.from_pretrained(model_dir).to(device)
    result = model.sample(
        x_start.shape[0],
        sampler=sampler,
        nfe=10,
        x_start=x_start.to(device),
        generator=torch.Generator().manual_seed(5),
    )
    return result.states.double().cpu()


def check_samples_agree(device: str, name: str, model_dir: Path) -> None:
    """The ODE samplers from the same start agree element-wise with the CPU; the SDE (whose noise is
    drawn on the device, so differs) agrees in its mean and spread within 4 standard errors."""
    torch.manual_seed(0)
    config = run_config(name, 1).model
    model = DiffusionModel(config)
    for parameter in model.network.parameters():  # a non-trivial score (the output layer starts at zero)
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(model_dir)
    x_start = model.process.prior_sample((512, *config.state_shape(1)[1:]), torch.Generator().manual_seed(1))
    for sampler in SAMPLERS:
        reference, other = (
            samples_on("cpu", model_dir, sampler, x_start),
            samples_on(device, model_dir, sampler, x_start),
        )
        if sampler in ("sde", "pc"):  # random: compare the moments
            spread = reference.std()
            assert abs(reference.mean() - other.mean()) < 4 * spread / reference.numel() ** 0.5, sampler
            assert abs(reference.std() - other.std()) < 0.05 * spread, sampler
        else:
            # float32 on two devices: rounding grows along the sweep; 1e-3 is ~1000× float32's epsilon.
            assert torch.allclose(reference, other, atol=1e-3, rtol=0), (sampler, (reference - other).abs().max())


# The CPU runs the same checks in the fast suite.


@pytest.mark.parametrize("name", PROCESSES)
def test_training_check_on_cpu(tmp_path, monkeypatch, name):
    check_training("cpu", name, "fp32", tmp_path / "run", monkeypatch)


def test_resume_check_on_cpu(tmp_path):
    check_resume("cpu", "kuramoto-local", tmp_path)


def test_samples_check_on_cpu_against_itself(tmp_path):
    check_samples_agree("cpu", "kuramoto-local", tmp_path / "model")


@gpu
@needs_cuda
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", PROCESSES)
def test_training_on_cuda(tmp_path, monkeypatch, name, precision):
    check_training("cuda", name, precision, tmp_path / "run", monkeypatch)


@gpu
@needs_cuda
@pytest.mark.parametrize("name", ["kuramoto-local", "euclidean"])
def test_resume_on_cuda_is_exact(tmp_path, name):
    from kuramoto_diffusion.runtime import use_deterministic_algorithms

    use_deterministic_algorithms()
    check_resume("cuda", name, tmp_path)


@gpu
@needs_cuda
@pytest.mark.parametrize("name", PROCESSES)
def test_cpu_and_cuda_samples_agree(tmp_path, name):
    check_samples_agree("cuda", name, tmp_path / "model")


@gpu
@needs_two_gpus
def test_two_gpus_under_torchrun_take_the_steps_of_one(tmp_path):
    from safetensors.torch import load_file

    def train(out: Path, processes: int) -> None:
        arguments = ["-m", "kuramoto_diffusion", *tiny_train(out, 4, 2, "--device", "cuda")]
        command = (
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node",
                str(processes),
                *arguments,
            ]
            if processes > 1
            else [sys.executable, *arguments]
        )
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
        )
        assert result.returncode == 0, result.stderr[-2000:]

    train(tmp_path / "one", 1)
    train(tmp_path / "two", 2)
    name = "checkpoints/step-00000004/model.safetensors"
    one, two = load_file(tmp_path / "one" / name), load_file(tmp_path / "two" / name)
    for key in one:
        # NCCL's all-reduce sums in another order than one process's backward: float32 rounding only.
        assert torch.allclose(one[key], two[key], atol=1e-5, rtol=1e-4), key


@gpu
@needs_cuda
def test_peak_memory_of_a_small_step(tmp_path, record_property):
    """Peak GPU memory of one `small`-preset step at batch 64, 64 px, beside the checkpoint estimate
    (weights, EMA, two AdamW moments) that the free-space check uses."""
    config = RunConfig(
        model=image_model_config(PROCESSES["kuramoto-local"], 1, 64, "small"),
        data=DataConfig(image_size=64),
        training=TrainConfig(
            train_steps=2, batch_size=64, checkpoint_every=1000, sample_every=0, fit_prior=False, warmup_steps=1
        ),
    )
    trainer = Trainer(config, RandomImages(64), tmp_path / "run", device=torch.device("cuda"), quiet=True)
    trainer.start()
    trainer.train_step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    trainer.train_step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    estimate = trainer.checkpoint_bytes()
    report = {"peak_bytes": peak, "checkpoint_estimate_bytes": estimate, "batch_size": 64, "image_size": 64}
    record_property("peak_memory", json.dumps(report))
    out = os.environ.get("GPU_CHECK_OUT")
    if out:
        Path(out, "peak_memory.json").write_text(json.dumps(report, indent=2))
    print(f"peak GPU memory {peak / 2**20:.0f} MiB; checkpoint estimate {estimate / 2**20:.1f} MiB")
    assert peak > estimate / 4  # the weights and moments are on the device, at least


def test_gpu_check_script_dry_run_checks_its_options(tmp_path):
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--dry-run", "--out", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    planned = [line for line in result.stdout.splitlines() if line.startswith("would run")]
    assert len(planned) == 4 and "make test-gpu" in planned[0] and "--device cuda" in planned[1]
    assert "syntax and options are fine" in result.stdout
    wrong = subprocess.run(["bash", "bench/gpu_check.sh", "--no-such-option"], cwd=root, capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option --no-such-option" in wrong.stderr
