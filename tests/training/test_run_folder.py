"""One writer per run folder, resume that survives a damaged checkpoint, and resume that does what it is told."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cli_runner import ENVIRONMENT, shared_cli
from kuramoto_diffusion import checkpoint as checkpoint_module
from kuramoto_diffusion.checkpoint import list_checkpoints, prune_checkpoints, temporary_directory_name
from kuramoto_diffusion.config import RunConfig
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.serialization import config_from_dict
from kuramoto_diffusion.training import Trainer
from kuramoto_diffusion.training.checkpointing import DamagedCheckpoint, resumable_checkpoint, validate_checkpoint
from kuramoto_diffusion.training.run_lock import RunFolderBusy, RunLock
from test_faults import FixedImages, make_trainer, random_images
from tiny_runs import TINY_TRAIN


def finished_run(folder: Path, steps: int = 30, every: int = 10, keep: int = 5) -> Path:
    trainer = make_trainer(folder, steps=steps, checkpoint_every=every, keep_checkpoints=keep)
    trainer.train()
    return folder


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint / "model.safetensors"))


# ----- §1 one writer ---------------------------------------------------------------------------------
def test_a_second_lock_on_a_held_folder_fails_at_once_naming_the_holder(tmp_path):
    code = (
        "import sys, time; from pathlib import Path; from kuramoto_diffusion.training.run_lock import RunLock; "
        "lock = RunLock(Path(sys.argv[1])); lock.acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENVIRONMENT
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(RunFolderBusy, match=f"PID {holder.pid} on host {socket.gethostname()}"):
            RunLock(tmp_path).acquire()
        assert time.monotonic() - started < 5  # no waiting
    finally:
        holder.kill()  # kill -9: the kernel drops the lock with the process
        holder.wait()
    lock = RunLock(tmp_path)
    lock.acquire()  # the dead holder's lock does not block
    assert lock.held
    lock.release()


def test_concurrent_train_in_one_folder_stops_the_second_with_exit_2(tmp_path):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kuramoto_diffusion",
            *TINY_TRAIN,
            "--train-steps",
            "400",
            "--checkpoint-every",
            "1",
            "--keep-checkpoints",
            "100",
            "--out",
            str(run),
        ],
        env=ENVIRONMENT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 240
        while not list_checkpoints(run):
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        for extra in ([], ["--resume"]):
            second = shared_cli().run([*TINY_TRAIN, "--train-steps", "400", "--lr", "1e-3", "--out", str(run), *extra])
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert (
                len(lines) == 1 and f"PID {first.pid}" in lines[0] and "in use by another training process" in lines[0]
            )
        assert first.poll() is None  # the first writer goes on undisturbed
        # kill -9 the writer: the lock it left does not block a resume, which finishes the run
        first.send_signal(signal.SIGKILL)
        first.wait()
        resumed = shared_cli().run([*TINY_TRAIN, "--train-steps", "60", "--out", str(run), "--resume"], timeout=600)
        assert resumed.returncode == 0, resumed.stderr
        assert list_checkpoints(run)[-1].name == "step-00000060"
        for checkpoint in list_checkpoints(run):  # no mixed or empty checkpoint is left
            validate_checkpoint(checkpoint)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_temporary_names_are_unique_and_pruning_spares_live_writers(tmp_path):
    run = tmp_path / "run"
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    assert str(os.getpid()) in temporary_directory_name("step-00000001")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().replace(".", "_")
    live = folder / f".tmp-step-00000002.{host}.{os.getppid()}"  # our parent: alive, and not us
    gone = folder / f".tmp-step-00000003.{host}.{dead.pid}"
    elsewhere = folder / f".tmp-step-00000004.another_host.{dead.pid}"
    legacy = folder / ".tmp-step-00000005"
    for path in (live, gone, elsewhere, legacy):
        path.mkdir()
    prune_checkpoints(run, keep=3)
    assert live.exists() and elsewhere.exists()
    assert not gone.exists() and not legacy.exists()


def test_a_checkpoint_left_as_old_by_a_kill_between_renames_is_restored(tmp_path):
    run = finished_run(tmp_path / "run", steps=20, every=10)
    newest = list_checkpoints(run)[-1]
    os.replace(newest, newest.with_name(newest.name + ".old"))  # killed after the first rename of commit_directory
    prune_checkpoints(run, keep=5)
    assert list_checkpoints(run)[-1] == newest
    validate_checkpoint(newest)


# ----- §2 damaged checkpoints ------------------------------------------------------------------------
def _zero_byte_state(checkpoint: Path) -> str:
    (checkpoint / "state.json").write_bytes(b"")
    return "state.json: not valid JSON"


def _state_without_step(checkpoint: Path) -> str:
    state = json.loads((checkpoint / "state.json").read_text())
    del state["step"]
    (checkpoint / "state.json").write_text(json.dumps(state))
    return "state.json: lacks its 'step'"


def _trainer_tensors_missing_a_key(checkpoint: Path) -> str:
    tensors = load_file(str(checkpoint / "trainer.safetensors"))
    del tensors["rng.noise"]
    save_file(tensors, str(checkpoint / "trainer.safetensors"))
    return "trainer.safetensors: lacks rng.noise"


def _nan_weights(checkpoint: Path) -> str:
    tensors = load_file(str(checkpoint / "ema.safetensors"))
    name = next(iter(tensors))
    tensors[name][...] = float("nan")
    save_file(tensors, str(checkpoint / "ema.safetensors"))
    return "ema.safetensors: tensor .* holds NaN"


def _weights_missing_a_tensor(checkpoint: Path) -> str:
    tensors = load_file(str(checkpoint / "model.safetensors"))
    del tensors[next(iter(tensors))]
    save_file(tensors, str(checkpoint / "model.safetensors"))
    return "model.safetensors: weights do not match"


def _optimizer_truncated(checkpoint: Path) -> str:
    path = checkpoint / "optimizer.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    return "optimizer.safetensors: not a readable safetensors file"


def _config_wrong_type(checkpoint: Path) -> str:
    config = json.loads((checkpoint / "config.json").read_text())
    config["training"]["lr"] = "fast"
    (checkpoint / "config.json").write_text(json.dumps(config))
    return r"config.json.training.lr: expected a number"


DAMAGE = [
    _zero_byte_state,
    _state_without_step,
    _trainer_tensors_missing_a_key,
    _nan_weights,
    _weights_missing_a_tensor,
    _optimizer_truncated,
    _config_wrong_type,
]


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> Path:
    return finished_run(tmp_path_factory.mktemp("clean") / "run", steps=30, every=10)


def _copy_run(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("damage", DAMAGE, ids=lambda f: f.__name__.strip("_"))
def test_resume_skips_a_damaged_newest_checkpoint_with_one_warning(damage, clean_run, tmp_path):
    run = _copy_run(clean_run, tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    reason = damage(newest)
    with pytest.raises(DamagedCheckpoint, match=reason):
        validate_checkpoint(newest)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chosen, _ = resumable_checkpoint(run)
    assert chosen == list_checkpoints(run)[-2]
    assert (
        len(caught) == 1
        and str(newest) in str(caught[0].message)
        and "resuming from step-00000020" in str(caught[0].message)
    )


def test_resume_from_a_damaged_run_ends_bit_identical_to_an_uninterrupted_one(clean_run, tmp_path):
    run = _copy_run(clean_run, tmp_path / "run")
    _zero_byte_state(list_checkpoints(run)[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = Trainer.resume(run, FixedImages(random_images()), quiet=True)
    assert trainer.step == 20
    trainer.train()
    final = list_checkpoints(run)[-1]
    assert final.name == "step-00000030"
    reference = weights(clean_run / "checkpoints" / "step-00000030")
    assert all(torch.equal(tensor, reference[name]) for name, tensor in weights(final).items())


def test_resume_from_names_the_checkpoint_and_refuses_a_damaged_one(clean_run, tmp_path):
    run = _copy_run(clean_run, tmp_path / "run")
    trainer = Trainer.resume(
        run, FixedImages(random_images()), checkpoint=run / "checkpoints" / "step-00000010", quiet=True
    )
    assert trainer.step == 10
    trainer.lock.release()
    _state_without_step(run / "checkpoints" / "step-00000020")
    with pytest.raises(DamagedCheckpoint, match="step-00000020/state.json"):
        Trainer.resume(run, FixedImages(random_images()), checkpoint=run / "checkpoints" / "step-00000020", quiet=True)
    with pytest.raises(UserError, match="not a complete checkpoint"):
        resumable_checkpoint(run, run / "nowhere")


def test_an_app_resume_takes_the_lock_once_and_validates_its_checkpoint_once(clean_run, tmp_path, monkeypatch):
    from kuramoto_diffusion.app import train as train_app
    from kuramoto_diffusion.runtime import SINGLE_PROCESS
    from kuramoto_diffusion.training import checkpointing

    run = _copy_run(clean_run, tmp_path / "run")
    validated: list[str] = []
    taken: list[Path] = []
    real_validate, real_acquire = checkpointing.validate_checkpoint, RunLock.acquire

    def counting_validate(checkpoint):
        validated.append(Path(checkpoint).name)
        return real_validate(checkpoint)

    def counting_acquire(lock):
        if not lock.held:
            taken.append(lock.run_dir)
        real_acquire(lock)

    monkeypatch.setattr(checkpointing, "validate_checkpoint", counting_validate)
    monkeypatch.setattr(RunLock, "acquire", counting_acquire)
    trainer = train_app.resumed_trainer(
        train_app.TrainRequest(out=run, resume=True, quiet=True), SINGLE_PROCESS, torch.device("cpu")
    )
    try:
        assert trainer.step == 30 and validated == ["step-00000030"] and taken == [run]
        with pytest.raises(RunFolderBusy):  # the lock taken before validating is the one the trainer keeps
            RunLock(run).acquire()
    finally:
        trainer.lock.release()
    # A resume that fails lets the lock go: the next one is not told the folder is busy.
    with pytest.raises(UserError, match="not a complete checkpoint"):
        train_app.resumed_trainer(
            train_app.TrainRequest(out=run, resume_from=run / "nowhere", quiet=True),
            SINGLE_PROCESS,
            torch.device("cpu"),
        )
    lock = RunLock(run)
    lock.acquire()
    lock.release()


def test_every_checkpoint_damaged_is_one_error(clean_run, tmp_path):
    run = _copy_run(clean_run, tmp_path / "run")
    for checkpoint in list_checkpoints(run):
        _zero_byte_state(checkpoint)
    with pytest.raises(DamagedCheckpoint, match="every checkpoint is damaged"):
        resumable_checkpoint(run)


def test_sample_and_info_report_damage_in_one_line(clean_run, tmp_path):
    run = _copy_run(clean_run, tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    _nan_weights(newest)
    cli = shared_cli()
    result = cli.run(
        ["sample", "--checkpoint", str(newest), "--num", "2", "--nfe", "2", "--out", str(tmp_path / "s.png")]
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "ema.safetensors: tensor" in result.stderr and "NaN" in result.stderr
    assert not (tmp_path / "s.png").exists()
    # a run folder: the newest whole checkpoint, with one warning line naming the damaged one
    result = cli.run(["sample", "--checkpoint", str(run), "--num", "2", "--nfe", "2", "--out", str(tmp_path / "s.png")])
    assert result.returncode == 0, result.stderr
    assert "step-00000030/ema.safetensors" in result.stderr and "step-00000020" in result.stderr
    older = run / "checkpoints" / "step-00000020"
    _zero_byte_state(older)
    result = cli.run(["info", str(older)])
    assert result.returncode == 2 and "state.json: not valid JSON" in result.stderr


# ----- §5 resume does what the user says -------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    result = shared_cli().run([*TINY_TRAIN, "--train-steps", "20", "--checkpoint-every", "10", "--out", str(run)])
    assert result.returncode == 0, result.stderr
    return run


def _saved_training(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())["training"]


def test_resume_without_train_steps_trains_to_the_runs_own_target(cli_run, tmp_path):
    run = _copy_run(cli_run, tmp_path / "run")
    import shutil

    shutil.rmtree(run / "checkpoints" / "step-00000020")  # as if stopped at step 10
    result = shared_cli().run(["train", "--out", str(run), "--resume", "--quiet"])
    assert result.returncode == 0, result.stderr
    assert list_checkpoints(run)[-1].name == "step-00000020"  # not the CLI default of 2000
    assert _saved_training(run)["train_steps"] == 20


def test_resume_with_more_steps_extends_and_records_the_new_target(cli_run, tmp_path):
    run = _copy_run(cli_run, tmp_path / "run")
    result = shared_cli().run(["train", "--out", str(run), "--resume", "--train-steps", "25", "--quiet"])
    assert result.returncode == 0, result.stderr
    assert list_checkpoints(run)[-1].name == "step-00000025"
    assert _saved_training(run)["train_steps"] == 25
    assert json.loads((list_checkpoints(run)[-1] / "config.json").read_text())["training"]["train_steps"] == 25


def test_resume_below_the_current_step_and_conflicting_options_are_one_line_errors(cli_run, tmp_path):
    run = _copy_run(cli_run, tmp_path / "run")
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    cli = shared_cli()
    result = cli.run(["train", "--out", str(run), "--resume", "--train-steps", "15"])
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--train-steps 15 is below the step 20" in result.stderr
    result = cli.run(
        [
            "train",
            "--out",
            str(run),
            "--resume",
            "--lr",
            "1e-3",
            "--batch-size",
            "4",
            "--preset",
            "small",
            "--process",
            "euclidean",
            "--image-size",
            "32",
        ]
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    for expected in (
        "--lr 0.001 (the run: 0.0002)",
        "--batch-size 4 (the run: 8)",
        "--preset small",
        "--process euclidean (the run: kuramoto-local)",
        "--image-size 32 (the run: 16)",
    ):
        assert expected in result.stderr
    # options equal to the run's, and the ones that only schedule files, are accepted
    result = cli.run(
        [
            "train",
            "--out",
            str(run),
            "--resume",
            "--lr",
            "2e-4",
            "--preset",
            "tiny",
            "--image-size",
            "16",
            "--keep-checkpoints",
            "1",
            "--train-steps",
            "22",
            "--quiet",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert [p.name for p in list_checkpoints(run)] == ["step-00000022"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) != before


def test_a_run_resumes_from_another_folder_and_accepts_its_data_given_another_way(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    import numpy as np
    from PIL import Image

    for index in range(4):
        pixels = (np.random.default_rng(index).random((20, 20)) * 255).astype("uint8")
        Image.fromarray(pixels).save(data / f"{index}.png")
    work = tmp_path / "work"
    work.mkdir()
    cli = shared_cli()
    base = [
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--steps",
        "10",
        "--batch-size",
        "4",
        "--sample-every",
        "0",
        "--quiet",
    ]
    result = cli.run(
        ["train", "--data", "../data", *base, "--train-steps", "4", "--checkpoint-every", "2", "--out", "run"], cwd=work
    )
    assert result.returncode == 0, result.stderr
    assert _saved_training(work / "run") and json.loads((work / "run" / "config.json").read_text())["data"][
        "source"
    ] == str(data.resolve())
    result = cli.run(["train", "--out", str(work / "run"), "--resume", "--train-steps", "6", "--quiet"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = cli.run(
        ["train", "--out", "work/run", "--data", "./data/", "--resume", "--train-steps", "8", "--quiet"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    result = cli.run(
        ["train", "--out", "work/run", "--data", "textures", "--resume", "--train-steps", "10"], cwd=tmp_path
    )
    assert result.returncode == 2 and "was trained on" in result.stderr


# ----- §6 user errors exit 2 -------------------------------------------------------------------------
def test_a_full_disk_inside_safetensors_is_a_user_error_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path / "run", steps=10)
    trainer.train()

    def full(tensors, filename):  # what safetensors raises when the disk fills
        Path(filename).write_bytes(b"partial")
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(checkpoint_module, "save_file", full)
    trainer.train_config = type(trainer.train_config)(**{**trainer.train_config.__dict__, "train_steps": 20})
    with pytest.raises(UserError, match="No space left on device.*step-00000010 is kept"):
        trainer.train()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-00000010"]  # no temporary left
    with pytest.raises(OSError) as caught:
        checkpoint_module.save_tensors({"x": torch.zeros(2)}, tmp_path / "x.safetensors")
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "x.safetensors")
    assert list(tmp_path.glob(".x.safetensors.tmp-*")) == []


def test_a_wrong_type_in_a_config_section_names_the_key_and_the_type(clean_run):
    config = json.loads((list_checkpoints(clean_run)[-1] / "config.json").read_text())
    config.pop("format_version")
    for section, key, value, expected in (
        ("training", "batch_size", "8", "expected an integer"),
        ("data", "flip", "yes", "expected true or false"),
    ):
        broken = json.loads(json.dumps(config))
        broken[section][key] = value
        with pytest.raises(UserError) as caught:
            config_from_dict(RunConfig, broken, where="config.json")
        message = str(caught.value)
        assert message.startswith(f"config.json.{section}.{key}: {expected}") and len(message) < 120


# ----- §7 chaos ---------------------------------------------------------------------------------------
CHAOS_STEPS = 40


def _writer(run: Path, resume: bool) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "kuramoto_diffusion",
        *TINY_TRAIN,
        "--train-steps",
        str(CHAOS_STEPS),
        "--checkpoint-every",
        "2",
        "--keep-checkpoints",
        "4",
        "--seed",
        "5",
        "--out",
        str(run),
        *(["--resume"] if resume else []),
    ]
    return subprocess.Popen(command, env=ENVIRONMENT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_chaos_kills_concurrent_writers_and_damage_never_break_a_run(tmp_path):
    """Rounds of: a writer killed (-9) at a random moment, a second writer started beside it, the newest checkpoint
    damaged. After each round every checkpoint not damaged on purpose is whole, and a file the run did not write
    is untouched; at the end the run is bit-identical to an uninterrupted one and leaves no temporary folder."""
    import random

    rng = random.Random(7)
    reference = tmp_path / "reference"
    straight = _writer(reference, resume=False)
    assert straight.wait(timeout=900) == 0, straight.stderr.read()[-2000:]
    run = tmp_path / "run"
    notes = run / "notes.txt"
    damaged: set[str] = set()
    for _round_number in range(12):
        resume = bool(list_checkpoints(run))
        first = _writer(run, resume)
        deadline = time.time() + 240
        while not list_checkpoints(run) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        if not notes.exists() and list_checkpoints(run):
            notes.write_text("the user's own notes")
        if rng.random() < 0.5 and first.poll() is None:
            second = _writer(run, resume=True)
            _, error = second.communicate(timeout=240)
            if first.poll() is None:  # still writing: the second one must have stopped at the lock
                assert second.returncode == 2 and "in use by another training process" in error, error
        time.sleep(rng.uniform(0.0, 3.0))
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
        first.wait()
        for checkpoint in list_checkpoints(run):
            if checkpoint.name not in damaged:
                validate_checkpoint(checkpoint)
        if list_checkpoints(run) and list_checkpoints(run)[-1].name.endswith(str(CHAOS_STEPS)):
            break
        if list_checkpoints(run) and rng.random() < 0.5 and len(list_checkpoints(run)) > 1:
            newest = list_checkpoints(run)[-1]
            rng.choice(DAMAGE)(newest)
            damaged.add(newest.name)
        if notes.exists():
            assert notes.read_text() == "the user's own notes"
    finisher = _writer(run, resume=True)
    assert finisher.wait(timeout=900) == 0, finisher.stderr.read()[-2000:]
    final = list_checkpoints(run)[-1]
    assert final.name == f"step-{CHAOS_STEPS:08d}"
    expected = weights(list_checkpoints(reference)[-1])
    assert all(torch.equal(tensor, expected[name]) for name, tensor in weights(final).items())
    assert notes.read_text() == "the user's own notes"
    assert list((run / "checkpoints").glob(".tmp-*")) == [] and list((run / "checkpoints").glob("*.old")) == []
