"""SIGTERM and SIGINT stop training and ``sample --out-dir`` at a safe point, save, and resume exactly.

Every signal here is a real one: sent with os.kill to this process while the trainer runs (to land
it inside a step or inside a checkpoint write), or to real CLI subprocesses and torchrun jobs.
"""

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

from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.stopping import STOP_SIGNALS, Stopped, stop_requests
from kuramoto_diffusion.training import Trainer
from kuramoto_diffusion.training import checkpointing as checkpointing_module
from test_distributed import ENVIRONMENT, TORCHRUN
from test_faults import FixedImages, make_trainer, random_images
from tiny_runs import tiny_train

CHECKPOINT_FILES = ("model.safetensors", "ema.safetensors", "optimizer.safetensors", "trainer.safetensors")


def checkpoint_names(run: Path) -> list[str]:
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def assert_same_networks(first: Trainer, second: Trainer) -> None:
    for name, network in (("live", "model"), ("EMA", "ema")):
        a = (first.model.network if network == "model" else first.ema_network).state_dict()
        b = (second.model.network if network == "model" else second.ema_network).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_stop_requests_keep_the_first_signal_and_restore_the_handlers():
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    with stop_requests() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert stop.signal_number == signal.SIGTERM and stop.received == 2
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == before


# ----- in this process: signals at exact moments --------------------------------------------------
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_a_step_saves_that_step_and_resume_is_bit_identical(tmp_path, monkeypatch, signal_number):
    straight = make_trainer(tmp_path / "straight", steps=8, checkpoint_every=100)
    straight.train()
    trainer = make_trainer(tmp_path / "stopped", steps=8, checkpoint_every=100)
    original_step = trainer.train_step

    def step_with_a_signal() -> float | None:
        if trainer.step == 3:
            os.kill(os.getpid(), signal_number)  # arrives while the fourth step runs
        return original_step()

    monkeypatch.setattr(trainer, "train_step", step_with_a_signal)
    with pytest.raises(Stopped) as stopped:
        trainer.train()
    assert stopped.value.exit_status == 128 + signal_number
    assert str(stopped.value).startswith(f"stopped at step 4 by {signal.Signals(signal_number).name}; checkpoint saved")
    assert checkpoint_names(tmp_path / "stopped") == ["step-00000004"]
    assert signal.getsignal(signal_number) is not None and trainer.step == 4
    resumed = Trainer.resume(tmp_path / "stopped", FixedImages(random_images()), quiet=True)
    resumed.train()
    assert resumed.step == 8
    assert_same_networks(straight, resumed)


def test_signals_during_checkpoint_writes_do_not_cut_them_short(tmp_path, monkeypatch):
    """The first signal lands inside a periodic checkpoint write, more inside every file written after it."""
    straight = make_trainer(tmp_path / "straight", steps=12, checkpoint_every=5)
    straight.train()
    trainer = make_trainer(tmp_path / "stopped", steps=12, checkpoint_every=5)
    original_save = checkpointing_module.save_tensors
    files_written = []

    def save_between_signals(tensors: dict[str, torch.Tensor], path: Path) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        original_save(tensors, path)
        files_written.append(path.name)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(checkpointing_module, "save_tensors", save_between_signals)
    with pytest.raises(Stopped) as stopped:
        trainer.train()
    assert stopped.value.signal_number == signal.SIGTERM and stopped.value.exit_status == 143
    # The write at step 5 completed, and the stop used it rather than writing step 5 again.
    assert checkpoint_names(tmp_path / "stopped") == ["step-00000005"]
    assert sorted(files_written) == sorted(CHECKPOINT_FILES)
    DiffusionModel.from_pretrained(tmp_path / "stopped")
    monkeypatch.setattr(checkpointing_module, "save_tensors", original_save)
    resumed = Trainer.resume(tmp_path / "stopped", FixedImages(random_images()), quiet=True)
    resumed.train()
    assert_same_networks(straight, resumed)


def test_a_signal_during_the_stopping_write_is_ignored(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path / "run", steps=8, checkpoint_every=100)
    original_step, original_save = trainer.train_step, checkpointing_module.save_tensors

    def step_with_a_signal() -> float | None:
        if trainer.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return original_step()

    def save_after_a_signal(tensors: dict[str, torch.Tensor], path: Path) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # a second (third, …) signal: torchrun forwarding one, say
        original_save(tensors, path)

    monkeypatch.setattr(trainer, "train_step", step_with_a_signal)
    monkeypatch.setattr(checkpointing_module, "save_tensors", save_after_a_signal)
    with pytest.raises(Stopped) as stopped:
        trainer.train()
    assert stopped.value.signal_number == signal.SIGINT and stopped.value.exit_status == 130
    assert checkpoint_names(tmp_path / "run") == ["step-00000002"]
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert all((checkpoint / name).exists() for name in (*CHECKPOINT_FILES, "state.json", "config.json"))
    assert DiffusionModel.from_pretrained(tmp_path / "run").checkpoint_path == checkpoint


# ----- real subprocesses ----------------------------------------------------------------------------
STEPS = 40


def train_command(out: Path, *extra: str) -> list[str]:
    return ["-m", "kuramoto_diffusion", *tiny_train(out, STEPS, 2, *extra, keep=1)]


def wait_for(path_exists, job: subprocess.Popen, what: str, timeout: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while not path_exists():
        assert job.poll() is None, f"ended before {what}: {job.communicate()[1][-2000:]}"
        assert time.time() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def first_checkpoint_exists(run: Path):  # noqa: ANN201
    return lambda: (
        (run / "checkpoints").exists() and any(p.name.startswith("step-") for p in (run / "checkpoints").iterdir())
    )


def launcher(processes: int) -> list[str]:
    return [sys.executable] if processes == 1 else [*TORCHRUN, "--nproc_per_node", str(processes)]


def uninterrupted(tmp_path_factory, processes: int) -> Path:
    run = tmp_path_factory.mktemp(f"straight{processes}") / "run"
    result = subprocess.run(
        [*launcher(processes), *train_command(run)], env=ENVIRONMENT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return run


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory) -> Path:
    return uninterrupted(tmp_path_factory, 1)


@pytest.fixture(scope="module")
def straight_run_of_two(tmp_path_factory) -> Path:
    return uninterrupted(tmp_path_factory, 2)


def assert_resumes_to_the_straight_run(run: Path, straight: Path, processes: int = 1) -> None:
    """Resume ``run`` with as many processes as ``straight`` had: the final weights are bit-identical."""
    result = subprocess.run(
        [*launcher(processes), *train_command(run, "--resume")],
        env=ENVIRONMENT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    final = f"checkpoints/step-{STEPS:08d}"
    for name in ("model.safetensors", "ema.safetensors"):
        expected, resumed = load_file(straight / final / name), load_file(run / final / name)
        for key in expected:
            assert torch.equal(expected[key], resumed[key]), (name, key)


def stopped_step(message: str, signal_name: str, run: Path) -> int:
    """The step named in the CLI's one line, checked against the checkpoint on disk."""
    lines = [line for line in message.splitlines() if "stopped at step" in line]
    assert len(lines) == 1, message[-3000:]
    line = lines[0]
    step = int(line.split("stopped at step ")[1].split()[0])
    assert line == (
        f"kuramoto-diffusion train: stopped at step {step} by {signal_name}; checkpoint saved: "
        f"{run / 'checkpoints' / f'step-{step:08d}'}; continue with: kuramoto-diffusion train --out {run} --resume"
    )
    assert checkpoint_names(run) == [f"step-{step:08d}"]
    return step


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_train_stops_on_a_signal_says_so_in_one_line_and_resumes_bit_identical(tmp_path, straight_run, signal_number):
    run = tmp_path / "run"
    job = subprocess.Popen(
        [sys.executable, *train_command(run)],
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(first_checkpoint_exists(run), job, "a checkpoint")
        job.send_signal(signal_number)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 128 + signal_number, stderr[-2000:]
    assert stderr.strip().count("\n") == 0, stderr  # --quiet: the one line and nothing else
    step = stopped_step(stderr, signal.Signals(signal_number).name, run)
    assert 2 <= step < STEPS
    assert_resumes_to_the_straight_run(run, straight_run)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["torchrun", "one worker", "process group"])
def test_two_processes_stop_at_the_same_step_and_rank_0_saves(tmp_path, straight_run_of_two, target):
    """SIGTERM to torchrun (which forwards it), to rank 1 alone, or SIGINT to the whole group (Ctrl-C)."""
    run = tmp_path / "run"
    job = subprocess.Popen(
        [*TORCHRUN, "--nproc_per_node", "2", *train_command(run)],
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(first_checkpoint_exists(run), job, "a checkpoint")
        if target == "torchrun":
            job.send_signal(signal.SIGTERM)
        elif target == "process group":
            os.killpg(job.pid, signal.SIGINT)
        else:
            workers = subprocess.run(
                ["pgrep", "-f", "-P", str(job.pid), "kuramoto_diffusion"], capture_output=True, text=True
            )
            ranks = {int(pid): Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") for pid in workers.stdout.split()}
            rank_1 = [pid for pid, environ in ranks.items() if b"RANK=1" in environ]
            assert len(ranks) == 2 and len(rank_1) == 1, workers.stdout
            os.kill(rank_1[0], signal.SIGTERM)
        _, stderr = job.communicate(timeout=180)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    name = "SIGINT" if target == "process group" else "SIGTERM"
    stopped_step(stderr, name, run)  # rank 0's line, and only one (it asserts so)
    assert "lost contact" not in stderr, stderr[-3000:]
    if target == "one worker":
        assert job.returncode != 0  # torchrun reports the workers' 143
    assert_resumes_to_the_straight_run(run, straight_run_of_two, processes=2)


@pytest.mark.slow
def test_sample_out_dir_stops_after_a_chunk_and_continues_there(tmp_path, straight_run):
    def sample(folder: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "kuramoto_diffusion",
            "sample",
            "--checkpoint",
            str(straight_run),
            "--num",
            "400",
            "--batch-size",
            "8",
            "--nfe",
            "5",
            "--out-dir",
            str(folder),
            "--out",
            str(folder.parent / "grid.png"),
            "--seed",
            "3",
            "--quiet",
        ]

    reference, stopped = tmp_path / "reference" / "images", tmp_path / "stopped" / "images"
    assert subprocess.run(sample(reference), env=ENVIRONMENT, timeout=600).returncode == 0
    job = subprocess.Popen(sample(stopped), env=ENVIRONMENT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: stopped.exists() and any(stopped.glob("*.png")), job, "an image")
        job.send_signal(signal.SIGTERM)
        _, stderr = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM after chunk" in stderr and "run the same command again" in stderr, stderr
    written = sorted(p.name for p in stopped.glob("*.png"))
    assert 0 < len(written) < 400 and len(written) % 8 == 0, written  # whole chunks only
    assert subprocess.run(sample(stopped), env=ENVIRONMENT, timeout=600).returncode == 0
    for name in sorted(p.name for p in reference.iterdir()):
        assert (stopped / name).read_bytes() == (reference / name).read_bytes(), name
