"""Data-parallel training (torch.distributed, Gloo on the CPU, launched by torchrun)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.runtime import DistributedContext
from kuramoto_diffusion.training import Trainer
from kuramoto_diffusion.training.objectives import propagated
from tiny_runs import tiny_train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("world_size,grad_accum", [(1, 1), (1, 4), (2, 1), (4, 2), (3, 1)])
def test_micro_batches_cover_the_batch_once(world_size, grad_accum):
    batch = 24
    rows = [
        r
        for rank in range(world_size)
        for piece in DistributedContext(rank, world_size).micro_batches(batch, grad_accum)
        for r in range(piece.start, piece.stop)
    ]
    assert rows == list(range(batch))
    with pytest.raises(UserError, match="use a multiple of"):
        DistributedContext(0, world_size).micro_batches(batch + 1, grad_accum * 2)


class FixedImages:
    def __init__(self) -> None:
        self.images = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.images[torch.randint(0, 6, (batch_size,), generator=generator)]


@pytest.mark.parametrize(
    "process",
    [KuramotoConfig(coupling="local", neighbourhood=3, steps=20), EuclideanConfig(steps=20)],
    ids=["kuramoto", "euclidean"],
)
def test_gradient_accumulation_gives_the_same_step(tmp_path, process):
    weights = []
    for grad_accum in (1, 4):
        config = RunConfig(
            model=image_model_config(process, 1, 8, "tiny"),
            data=DataConfig(image_size=8),
            training=TrainConfig(
                train_steps=3,
                batch_size=16,
                grad_accum=grad_accum,
                draws=2,
                checkpoint_every=3,
                sample_every=0,
                warmup_steps=1,
            ),
        )
        trainer = Trainer(config, FixedImages(), tmp_path / f"accumulate-{grad_accum}", quiet=True)
        trainer.start()
        trainer.train()
        weights.append(trainer.model.network.state_dict())
    for name, tensor in weights[0].items():
        assert torch.allclose(tensor, weights[1][name], atol=1e-6, rtol=1e-5), name


def _train(out: Path, processes: int, steps: int, *extra: str) -> subprocess.CompletedProcess:
    arguments = ["-m", "kuramoto_diffusion", *tiny_train(out, steps, 2, *extra)]
    if processes == 1:
        command = [sys.executable, *arguments]
    else:
        command = [*TORCHRUN, "--nproc_per_node", str(processes), *arguments]
    return subprocess.run(command, env=ENVIRONMENT, capture_output=True, text=True, timeout=600)


def _assert_same_weights(first: Path, second: Path, step: int, atol: float = 1e-6) -> None:
    name = f"checkpoints/step-{step:08d}"
    for file in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(first / name / file), load_file(second / name / file)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=atol, rtol=1e-5), (file, key, (a[key] - b[key]).abs().max())


def test_two_processes_take_the_same_steps_as_one(tmp_path):
    for processes in (1, 2):
        result = _train(tmp_path / f"p{processes}", processes, 4)
        assert result.returncode == 0, result.stderr[-2000:]
    _assert_same_weights(tmp_path / "p1", tmp_path / "p2", 4)
    # Rank 0 alone wrote: one set of checkpoints and one TensorBoard folder.
    assert sorted(p.name for p in (tmp_path / "p2" / "checkpoints").iterdir())[-1] == "step-00000004"
    assert len(list((tmp_path / "p2" / "tensorboard").iterdir())) == 1


def test_two_processes_decoding_only_their_rows_of_a_lazy_folder_take_the_same_steps_as_one(tmp_path):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(12):
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(folder / f"{index}.png")
    options = ("--data", str(folder), "--lazy", "--process", "euclidean")
    for processes in (1, 2):
        result = _train(tmp_path / f"p{processes}", processes, 4, *options)
        assert result.returncode == 0, result.stderr[-2000:]
    _assert_same_weights(tmp_path / "p1", tmp_path / "p2", 4)


@pytest.mark.slow
def test_resume_with_another_number_of_processes(tmp_path):
    assert _train(tmp_path / "straight", 1, 8).returncode == 0
    for started, resumed in ((2, 1), (1, 2)):
        run = tmp_path / f"{started}-then-{resumed}"
        assert _train(run, started, 4).returncode == 0
        result = _train(run, resumed, 8, "--resume")
        assert result.returncode == 0, result.stderr[-2000:]
        _assert_same_weights(tmp_path / "straight", run, 8)


@pytest.mark.slow
def test_killing_one_process_stops_the_job_and_resume_continues(tmp_path):
    run = tmp_path / "run"
    arguments = ["-m", "kuramoto_diffusion", *tiny_train(run, 100000, 5)]
    job = subprocess.Popen(
        [*TORCHRUN, "--nproc_per_node", "2", *arguments],
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not (run / "checkpoints").exists() or not any(
            p.name.startswith("step-") for p in (run / "checkpoints").iterdir()
        ):
            assert time.time() < deadline and job.poll() is None, "no checkpoint appeared"
            time.sleep(0.5)
        workers = subprocess.run(
            ["pgrep", "-f", "-P", str(job.pid), "kuramoto_diffusion"], capture_output=True, text=True
        )
        pids = [int(p) for p in workers.stdout.split()]
        assert len(pids) == 2, workers.stdout
        os.kill(pids[1], signal.SIGKILL)
        _, stderr = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0
    assert "lost contact with the others" in stderr or "exitcode" in stderr.lower(), stderr[-3000:]
    from kuramoto_diffusion.model import DiffusionModel

    step = int(DiffusionModel.from_pretrained(run).checkpoint_path.name.split("-")[1])
    result = _train(run, 1, step + 4, "--resume")
    assert result.returncode == 0, result.stderr[-2000:]


def test_kernel_draw_keeps_full_precision_inside_autocast():
    from kuramoto_diffusion.processes import build_process
    from kuramoto_diffusion.training.objectives import kernel_draw

    process = build_process(KuramotoConfig(coupling="local", neighbourhood=5, steps=100))
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 1, 16, 16, generator=generator) * 2 - 1) * 3
    t, stride = torch.tensor([0, 10, 50, 99]), torch.tensor([1, 1, 5, 1])
    noise = torch.randn(x.shape, generator=generator)
    reference = kernel_draw(process, x, t, stride, noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = kernel_draw(process, x, t, stride, noise)
        # Without the guard, the coupling's convolution would run in bfloat16 here:
        assert torch.nn.functional.conv2d(x, torch.ones(1, 1, 3, 3)).dtype == torch.bfloat16
    for a, b in zip(reference, mixed):
        assert a.dtype == b.dtype == torch.float32 and torch.equal(a, b)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_training_is_close_and_resumes_exactly(tmp_path, precision):
    process = KuramotoConfig(coupling="local", neighbourhood=3, steps=20)

    def config(steps: int, precision: str) -> RunConfig:
        return RunConfig(
            model=image_model_config(process, 1, 8, "tiny"),
            data=DataConfig(image_size=8),
            training=TrainConfig(
                train_steps=steps, batch_size=8, precision=precision, checkpoint_every=2, sample_every=0, warmup_steps=1
            ),
        )

    full = Trainer(config(4, "fp32"), FixedImages(), tmp_path / "fp32", quiet=True)
    full.start()
    full.train()
    mixed = Trainer(config(4, precision), FixedImages(), tmp_path / precision, quiet=True)
    mixed.start()
    mixed.train()
    for name, tensor in full.model.network.state_dict().items():
        assert torch.isfinite(mixed.model.network.state_dict()[name]).all()
        assert torch.allclose(tensor, mixed.model.network.state_dict()[name], atol=5e-3), name
    first = Trainer(config(2, precision), FixedImages(), tmp_path / "resumed", quiet=True)
    first.start()
    first.train()
    resumed = Trainer.resume(tmp_path / "resumed", FixedImages(), train_steps=4, quiet=True)
    resumed.train()
    if precision == "fp16":
        assert resumed.scaler.get_scale() == mixed.scaler.get_scale()
    for name, tensor in mixed.model.network.state_dict().items():
        assert torch.equal(tensor, resumed.model.network.state_dict()[name]), name


def test_sample_folder_is_resumable_and_the_same_on_two_processes(tmp_path):
    from kuramoto_diffusion.app.sample_folder import sample_to_folder
    from kuramoto_diffusion.model import DiffusionModel

    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    DiffusionModel(
        image_model_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=6), 1, 8, "tiny")
    ).save_pretrained(model_dir)
    model = DiffusionModel.from_pretrained(model_dir)
    folder = tmp_path / "one"
    assert sample_to_folder(model, folder, 5, chunk_size=2, seed=3)[:2] == (5, 0)
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    (folder / "000003.png").unlink()
    assert sample_to_folder(model, folder, 5, chunk_size=2, seed=3)[:2] == (2, 3)  # only chunk 1 (images 2, 3) again
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    command = [
        *TORCHRUN,
        "--nproc_per_node",
        "2",
        "-m",
        "kuramoto_diffusion",
        "sample",
        "--checkpoint",
        str(model_dir),
        "--num-images",
        "5",
        "--batch-size",
        "2",
        "--seed",
        "3",
        "--out-dir",
        str(tmp_path / "two"),
        "--out",
        str(tmp_path / "two.png"),
        "--quiet",
    ]
    result = subprocess.run(command, env=ENVIRONMENT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in (tmp_path / "two").glob("*.png")} == first  # (and the command's manifest)
    assert (tmp_path / "two.png").is_file()


@pytest.mark.slow
def test_compiled_training_takes_the_eager_steps(tmp_path):
    # Adam's first steps move every weight by about ±lr whatever the gradient's size, so weights are
    # compared loosely; the losses (the same network and batch) agree closely.
    process = KuramotoConfig(coupling="local", neighbourhood=3, steps=20)
    losses, weights = [], []
    for compiled in (False, True):
        config = RunConfig(
            model=image_model_config(process, 1, 8, "tiny"),
            data=DataConfig(image_size=8),
            training=TrainConfig(
                train_steps=3, batch_size=8, compile=compiled, checkpoint_every=3, sample_every=0, warmup_steps=1
            ),
        )
        trainer = Trainer(config, FixedImages(), tmp_path / f"compiled-{compiled}", quiet=True)
        trainer.start()
        losses.append([trainer.train_step() for _ in range(3)])
        weights.append(trainer.model.network.state_dict())
        assert isinstance(trainer.train_network, torch._dynamo.eval_frame.OptimizedModule) == compiled
        assert (trainer.process in propagated._COMPILED_DRAWS) == compiled  # the pool's chain step too
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    for name, tensor in weights[0].items():
        assert torch.allclose(tensor, weights[1][name], atol=2e-3), name
