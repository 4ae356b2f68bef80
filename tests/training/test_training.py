"""Loss, chain pool, trainer, checkpoints and resume."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch

from kuramoto_diffusion.checkpoint import DamagedCheckpoint
from kuramoto_diffusion.circular import order_parameter
from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.training import (
    ChainPool,
    Trainer,
    TrainingDiverged,
    default_pool_advance,
    default_pool_size,
    resimulate_states,
)
from kuramoto_diffusion.training.chain_pool import _snapshot_each, resimulate_states_and_scores, snapshot_states
from kuramoto_diffusion.training.checkpointing import validate_checkpoint
from kuramoto_diffusion.training.objectives import Objective, StartingStates, build_objective, propagated_chain_step


class FixedImages:
    """A handful of fixed 8×8 images; batches drawn with the generator."""

    def __init__(self, count: int = 4, size: int = 8, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = (torch.rand(count, 1, size, size, generator=generator) > 0.5).float() * 1.6 - 0.8

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.images[torch.randint(0, len(self.images), (batch_size,), generator=generator)]


def objective_for(process, **training) -> Objective:
    """The objective ``training`` names (TrainConfig fields) on ``process``, without data (for ``examples_from``)."""
    return build_objective(process, TrainConfig(**training))


def dsm_loss_of(network, objective: Objective, x, t, stride, generator=None, condition=None):
    """The objective's loss of ``network`` on kernel draws from given starting states (the old one-call loss)."""
    return objective.loss(network, objective.examples_from(StartingStates(x, t, stride, condition, None), generator))


def run_config(process, steps=40, **training) -> RunConfig:
    settings = dict(train_steps=steps, batch_size=16, checkpoint_every=10, sample_every=0, warmup_steps=5, log_every=5)
    settings.update(training)
    return RunConfig(
        model=image_model_config(process, 1, 8, "tiny"), data=DataConfig(image_size=8), training=TrainConfig(**settings)
    )


LOCAL = KuramotoConfig(coupling="local", neighbourhood=3)


def test_loss_target_is_unit_variance_and_zero_network_gives_one():
    # For the zero network the loss is E[(σ s*)²]; with σ ≪ π the wrapped normal score is −z/σ, so it is ≈ 1.
    model = DiffusionModel(image_model_config(LOCAL, 1, 8, "tiny"))
    process = model.process
    generator = torch.Generator().manual_seed(0)
    x = ImageCodec.for_process(process).encode(FixedImages(64).images)
    t = torch.randint(0, 100, (64,), generator=generator)
    for window in (1, 5):
        stride = torch.clamp(100 - t, max=window)
        loss = dsm_loss_of(model.network, objective_for(process, objective="markov", draws=4), x, t, stride, generator)
        assert loss.item() == pytest.approx(1.0, abs=0.05)


def test_euclidean_loss_is_epsilon_prediction():
    # With s = 0 and the exact VP kernel, the weighted DSM target equals the drawn noise ε.
    config = image_model_config(EuclideanConfig(), 1, 8, "tiny")
    model = DiffusionModel(config)
    process = model.process
    x0 = FixedImages(8).images.double()
    stride = torch.arange(1, 9) * 12
    generator = torch.Generator().manual_seed(0)
    epsilon = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    class Recorder(torch.nn.Module):
        def forward(self, x, time, condition=None, class_labels=None):
            self.x, self.time = x, time
            return torch.zeros_like(x)

    recorder = Recorder()
    loss = dsm_loss_of(
        recorder, objective_for(process, objective="markov"), x0, torch.zeros_like(stride), stride, generator
    )
    alpha_bar = torch.exp(-process._cumulative_beta[stride]).reshape(-1, 1, 1, 1)
    expected_x = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * epsilon
    assert torch.allclose(recorder.x, expected_x, atol=1e-10)
    assert torch.allclose(recorder.time, stride.float() / 100)
    assert loss.item() == pytest.approx((epsilon**2).mean().item(), rel=1e-9)


def test_pool_states_match_direct_simulation():
    # Pool states at step t have the distribution of direct simulation to t: compare the order
    # parameter and per-pixel circular means after the pool has cycled through fresh data.
    process = KuramotoProcess(coupling="local", neighbourhood=3, steps=20)
    source = FixedImages(4)
    generator = torch.Generator().manual_seed(0)
    data_fn = lambda n: (ImageCodec.for_process(process).encode(source.sample_batch(n, generator)), None)  # noqa: E731
    pool = ChainPool(process, 20 * 40, data_fn, generator)
    for _ in range(37):
        pool.advance()
    for t in (3, 12, 19):
        chosen = pool.states[pool.t == t]
        direct = process.simulate(data_fn(4000)[0], t, generator=generator)
        r_pool, r_direct = order_parameter(chosen)[0], order_parameter(direct)[0]
        standard_error = math.sqrt(r_pool.var() / len(r_pool) + r_direct.var() / len(r_direct))
        assert abs(r_pool.mean() - r_direct.mean()) < 4 * standard_error + 1e-3
        mean_cos_pool, mean_cos_direct = torch.cos(chosen).mean(0), torch.cos(direct).mean(0)
        assert (mean_cos_pool - mean_cos_direct).abs().max() < 4 * math.sqrt(0.5 / len(chosen)) * 2


def test_snapshots_are_each_trajectory_at_each_rows_step():
    # A step that adds step + 1: after t steps trajectory g holds 1000·g + t(t + 1)/2 exactly, whatever the
    # order of rows, owners and steps (rows of a trajectory are copied out on the way to its largest t).
    generator = torch.Generator().manual_seed(0)
    t = torch.randint(0, 25, (60,), generator=generator)
    owner = torch.randint(0, 7, (60,), generator=generator)
    start = 1000.0 * torch.arange(7, dtype=torch.float64).reshape(7, 1)
    calls = []

    def step_rows(rows, step):
        calls.append(len(rows[0]))
        return (rows[0] + (step + 1),)

    (result,) = _snapshot_each((start,), t, owner, step_rows)
    torch.testing.assert_close(result[:, 0], 1000.0 * owner + (t * (t + 1) / 2).double(), rtol=0, atol=0)
    horizon = torch.zeros(7, dtype=torch.long).scatter_reduce(0, owner, t, "amax")
    assert sum(calls) == int(horizon.sum())  # each trajectory simulated once, to its own largest t


@pytest.mark.parametrize("carry", [False, True], ids=["plain", "propagated"])
def test_one_trajectory_per_chain_is_the_independent_fill(carry):
    # With an owner per row the snapshot fill makes the same noise draws in the same order as resimulation.
    process = KuramotoProcess(steps=12, coupling="local", neighbourhood=3)
    x0 = ImageCodec.for_process(process).encode(FixedImages(9).images)
    t = torch.tensor([3, 0, 11, 7, 3, 12, 5, 9, 1])
    states, estimates = snapshot_states(
        process,
        x0,
        t,
        torch.arange(9),
        torch.Generator().manual_seed(4),
        carry=propagated_chain_step if carry else None,
    )
    if carry:
        expected = resimulate_states_and_scores(process, x0, t, torch.Generator().manual_seed(4), propagated_chain_step)
        assert torch.equal(states, expected[0]) and torch.equal(estimates, expected[1])
    else:
        assert torch.equal(states, resimulate_states(process, x0, t, torch.Generator().manual_seed(4)))
        assert estimates is None


def test_a_pool_filled_from_trajectories_has_the_direct_simulations_marginal():
    # 800 chains from 40 trajectories: the 40 chains at each step come from 40 different trajectories, each an
    # exact simulation to that step, so they must match direct simulation as the independent fill does.
    process = KuramotoProcess(coupling="local", neighbourhood=3, steps=20)
    source = FixedImages(4)
    generator = torch.Generator().manual_seed(0)
    data_fn = lambda n: (ImageCodec.for_process(process).encode(source.sample_batch(n, generator)), None)  # noqa: E731
    pool = ChainPool(process, 20 * 40, data_fn, generator, fill_trajectories=40)
    for t in (3, 12, 19):
        chosen = pool.states[pool.t == t]
        assert len(chosen) == 40
        direct = process.simulate(data_fn(4000)[0], t, generator=generator)
        r_pool, r_direct = order_parameter(chosen)[0], order_parameter(direct)[0]
        standard_error = math.sqrt(r_pool.var() / len(r_pool) + r_direct.var() / len(r_direct))
        assert abs(r_pool.mean() - r_direct.mean()) < 4 * standard_error + 1e-3
        mean_cos_pool, mean_cos_direct = torch.cos(chosen).mean(0), torch.cos(direct).mean(0)
        assert (mean_cos_pool - mean_cos_direct).abs().max() < 4 * math.sqrt(0.5 / len(chosen)) * 2


def test_pool_steps_stay_uniform_and_chains_restart():
    process = KuramotoProcess(steps=10)
    generator = torch.Generator().manual_seed(0)
    fresh = []

    def data_fn(n):
        fresh.append(n)
        # Each state carries its label as its value, so we can check that labels travel with chains.
        labels = torch.randint(0, 5, (n,), generator=generator)
        return labels.float().reshape(n, 1, 1, 1).expand(n, 1, 4, 4).clone() * 0.1, labels

    process = KuramotoProcess(steps=10, ref_strength=0.0, noise_var_range=(1e-12, 1e-12), coupling_range=(0.0, 0.0))
    pool = ChainPool(process, 30, data_fn, generator)
    counts = torch.zeros(10)
    drawn = torch.zeros(10)
    for _ in range(50):
        pool.advance()
        counts += torch.bincount(pool.t, minlength=10)
        states, t, labels, estimates = pool.draw(6)
        assert estimates is None  # only the propagated objective's pool carries them
        drawn += torch.bincount(t, minlength=10)
        assert torch.allclose(states[:, 0, 0, 0], labels.float() * 0.1, atol=1e-4)  # no coupling, ~no noise
    assert torch.equal(counts, torch.full((10,), 150.0))  # exactly 3 chains per step at all times
    assert sum(fresh[1:]) == 150  # 3 chains restart per advance
    assert drawn.min() > 0.5 * drawn.mean()


@pytest.mark.parametrize("carry", [False, True], ids=["plain", "propagated"])
def test_a_pool_advancing_some_chains_walks_exact_chains_in_turn(carry):
    # Round-robin blocks of 7 of 30 chains: after k advances every chain has moved ⌊7k/30⌋ or one more
    # steps (mod T), and with a noiseless chain each state is the deterministic chain of its data at its t.
    process = KuramotoProcess(steps=10, coupling="local", neighbourhood=3, noise_var_range=(1e-12, 1e-12))
    images = FixedImages(30).images
    served = [0]

    def data_fn(n):
        start = served[0]
        served[0] += n
        return ImageCodec.for_process(process).encode(images[torch.arange(start, start + n) % 30]), None

    pool = ChainPool(
        process,
        30,
        data_fn,
        torch.Generator().manual_seed(0),
        carry=propagated_chain_step if carry else None,
        advance_count=7,
    )
    start_t = pool.t.clone()
    moves = torch.zeros(30, dtype=torch.long)
    for advance in range(1, 12):
        pool.advance()
        moves[(torch.arange(7) + 7 * (advance - 1)) % 30] += 1
        assert torch.equal(pool.t, (start_t + moves) % 10)
        assert int(moves.max() - moves.min()) <= 1
    if carry:
        assert pool.estimates is not None and bool((pool.estimates[pool.t == 0] == 0).all())
    # Noiseless, a chain at t is its starting image (chain i started from image i) pushed t steps along the drift.
    restarted = (start_t + moves) >= 10
    assert 0 < int(restarted.sum()) < 30
    for index in range(30):
        if restarted[index]:
            continue  # it restarted from a later image
        expected = process.simulate(
            ImageCodec.for_process(process).encode(images[index : index + 1]), int(pool.t[index])
        )
        torch.testing.assert_close(pool.states[index], expected[0], rtol=0, atol=1e-4)


def test_a_partially_advancing_pool_resumes_exactly():
    process = KuramotoProcess(steps=10, coupling="local", neighbourhood=3)
    source = FixedImages(4)

    def make() -> ChainPool:
        data_generator = torch.Generator().manual_seed(2)
        return ChainPool(
            process,
            20,
            lambda n: (ImageCodec.for_process(process).encode(source.sample_batch(n, data_generator)), None),
            torch.Generator().manual_seed(0),
            advance_count=6,
        )

    straight, interrupted = make(), make()
    for _ in range(4):
        straight.advance()
        interrupted.advance()
    restored = make()
    restored.load_state_dict(interrupted.state_dict())
    restored.generator.set_state(interrupted.generator.get_state())
    restored.data_fn = interrupted.data_fn
    for _ in range(5):
        straight.advance()
        restored.advance()
    assert restored.cursor == straight.cursor == (9 * 6) % 20
    assert torch.equal(restored.t, straight.t) and torch.equal(restored.states, straight.states)


def test_resimulation_is_each_example_simulated_to_its_own_step():
    # A noiseless coupled chain is deterministic: each row must be its own example simulated to its own t,
    # whatever order the rows come in (the loop touches only the rows still short of their t).
    process = KuramotoProcess(steps=10, coupling="local", neighbourhood=3, noise_var_range=(1e-12, 1e-12))
    x0 = ImageCodec.for_process(process).encode(FixedImages(5).images)
    t = torch.tensor([3, 0, 10, 7, 3])
    states = resimulate_states(process, x0, t, torch.Generator().manual_seed(0))
    for index in range(5):
        expected = process.simulate(x0[index : index + 1], int(t[index]))
        torch.testing.assert_close(states[index], expected[0], rtol=0, atol=1e-4)


def test_default_pool_advance_is_every_chain_at_t100_and_a_quarter_at_t1000(tmp_path):
    assert default_pool_advance(default_pool_size(100, 32), 32) == 200 == default_pool_size(100, 32)
    assert default_pool_size(1000, 32) == 1000 and default_pool_advance(1000, 32) == 256
    trainer = Trainer(
        run_config(dataclasses.replace(LOCAL, steps=50), batch_size=4, pool_advance=9),
        FixedImages(4),
        tmp_path / "run",
        quiet=True,
    )
    trainer.start()
    assert trainer.pool is not None and trainer.pool.size == 50 and trainer.pool.advance_count == 9
    with pytest.raises(UserError, match="pool-advance must be ≥ 0"):
        TrainConfig(pool_advance=-1)


def test_resimulate_reference_masks_each_example_at_its_step():
    process = KuramotoProcess(steps=10)
    x0 = torch.zeros(3, 1, 4, 4, dtype=torch.float64) + 1.0
    t = torch.tensor([0, 4, 10])
    states = resimulate_states(process, x0, t, torch.Generator().manual_seed(0))
    assert torch.equal(states[0], x0[0])
    expected = process.simulate(x0[1:2], 4, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(states[1], x0[1]) and states[1].shape == expected[0].shape


def test_tiny_euclidean_model_overfits_a_handful_of_images(tmp_path):
    losses = []
    trainer = Trainer(
        run_config(EuclideanConfig(), steps=250, lr=1e-3, checkpoint_every=1000),
        FixedImages(4),
        tmp_path / "run",
        quiet=True,
        on_log=lambda step, scalars: losses.append(scalars["loss"]),
    )
    trainer.start()
    trainer.train()
    assert losses[-1] < losses[0] / 5


def test_checkpoint_round_trip_is_exact(tmp_path):
    trainer = Trainer(run_config(LOCAL, steps=10), FixedImages(), tmp_path / "run", quiet=True)
    trainer.start()
    trainer.train()
    loaded = DiffusionModel.from_pretrained(tmp_path / "run", use_ema=False)
    for name, tensor in trainer.model.network.state_dict().items():
        assert torch.equal(tensor, loaded.network.state_dict()[name])
    ema = DiffusionModel.from_pretrained(tmp_path / "run")
    for name, tensor in trainer.ema_network.state_dict().items():
        assert torch.equal(tensor, ema.network.state_dict()[name])
    assert loaded.config == trainer.config.model
    # The fitted prior κ travelled with the config.
    assert loaded.config.process.prior_concentration != 1.2
    # save_pretrained / from_pretrained of a model directory.
    ema.save_pretrained(tmp_path / "exported")
    again = DiffusionModel.from_pretrained(tmp_path / "exported")
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(again.score(x, 5), ema.score(x, 5))


@pytest.mark.parametrize("process", [LOCAL, EuclideanConfig()], ids=["kuramoto", "euclidean"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, process):
    config = run_config(process, steps=30, checkpoint_every=10)
    straight = Trainer(config, FixedImages(), tmp_path / "straight", quiet=True)
    straight.start()
    straight.train()
    interrupted = Trainer(
        run_config(process, steps=20, checkpoint_every=10), FixedImages(), tmp_path / "resumed", quiet=True
    )
    interrupted.start()
    interrupted.train()
    # Pretend the run died after step 20's checkpoint, mid-way to 30: resume to 30.
    resumed = Trainer.resume(tmp_path / "resumed", FixedImages(), train_steps=30, quiet=True)
    assert resumed.step == 20
    resumed.train()
    for name, tensor in straight.model.network.state_dict().items():
        assert torch.equal(tensor, resumed.model.network.state_dict()[name]), name
    for name, tensor in straight.ema_network.state_dict().items():
        assert torch.equal(tensor, resumed.ema_network.state_dict()[name]), name


def _saved_seconds(run: Path, step: int) -> float:
    return json.loads((run / "checkpoints" / f"step-{step:08d}" / "state.json").read_text())["train_seconds"]


def test_training_seconds_add_up_over_a_resumed_runs_sessions(tmp_path):
    """Each checkpoint records the wall-clock seconds that reached it; a resumed run starts from that count (work
    redone after a kill is not counted twice) and adds its own, bracketed here by the test's own clock."""
    run = tmp_path / "run"
    first_started = time.perf_counter()
    first = Trainer(run_config(LOCAL, steps=20, checkpoint_every=10), FixedImages(), run, quiet=True)
    first.start()
    first.train()
    first_seconds = first.train_seconds  # read before the test's clock, which must bracket it
    first_wall = time.perf_counter() - first_started
    at_10, at_20 = _saved_seconds(run, 10), _saved_seconds(run, 20)
    assert 0 < at_10 < at_20 <= first_seconds <= first_wall
    # The run is killed after step 20 and had spent 1,000 s reaching it (say, on a slower machine).
    marker = run / "checkpoints" / "step-00000020" / "state.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "train_seconds": 1000.0}))
    resumed_started = time.perf_counter()
    resumed = Trainer.resume(run, FixedImages(), train_steps=30, quiet=True)
    resumed.train()
    resumed_seconds = resumed.train_seconds
    resumed_wall = time.perf_counter() - resumed_started
    assert 1000.0 < _saved_seconds(run, 30) <= resumed_seconds <= 1000.0 + resumed_wall
    # A checkpoint written before the seconds were recorded resumes, counting from the resume.
    marker = run / "checkpoints" / "step-00000030" / "state.json"
    old_format = json.loads(marker.read_text())
    del old_format["train_seconds"]
    marker.write_text(json.dumps(old_format))
    again_started = time.perf_counter()
    again = Trainer.resume(run, FixedImages(), train_steps=31, quiet=True)
    again.train()
    assert 0 < again.train_seconds <= time.perf_counter() - again_started


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf, "ten", True, None])
def test_a_checkpoint_with_bad_training_seconds_is_damaged(tmp_path, seconds):
    run = tmp_path / "run"
    trainer = Trainer(run_config(LOCAL, steps=10), FixedImages(), run, quiet=True)
    trainer.start()
    trainer.train()
    marker = run / "checkpoints" / "step-00000010" / "state.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "train_seconds": seconds}))
    with pytest.raises(DamagedCheckpoint, match="state.json: 'train_seconds' is .*not a finite number"):
        validate_checkpoint(run / "checkpoints" / "step-00000010")


def test_incomplete_checkpoint_is_ignored_and_old_ones_pruned(tmp_path):
    trainer = Trainer(run_config(LOCAL, steps=40, keep_checkpoints=2), FixedImages(), tmp_path / "run", quiet=True)
    trainer.start()
    trainer.train()
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-00000030", "step-00000040"]
    # A checkpoint without its completion marker (killed mid-write) is skipped.
    broken = tmp_path / "run" / "checkpoints" / "step-00000050"
    shutil.copytree(tmp_path / "run" / "checkpoints" / "step-00000040", broken)
    (broken / "state.json").unlink()
    resumed = Trainer.resume(tmp_path / "run", FixedImages(), quiet=True)
    assert resumed.step == 40


def test_nan_loss_stops_with_message_and_keeps_last_checkpoint(tmp_path):
    trainer = Trainer(run_config(LOCAL, steps=20, checkpoint_every=10), FixedImages(), tmp_path / "run", quiet=True)
    trainer.start()
    trainer.train()
    trainer.train_config = trainer.train_config.__class__(**{**trainer.train_config.__dict__, "train_steps": 30})
    with torch.no_grad():
        next(trainer.model.network.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="step-00000020 is kept"):
        trainer.train()
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())[-1] == "step-00000020"
    DiffusionModel.from_pretrained(tmp_path / "run")  # still loads


def test_bad_checkpoints_are_clear_errors(tmp_path):
    trainer = Trainer(run_config(LOCAL, steps=10), FixedImages(), tmp_path / "run", quiet=True)
    trainer.start()
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000010"
    with pytest.raises(UserError, match="no such checkpoint"):
        DiffusionModel.from_pretrained(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no complete checkpoint"):
        DiffusionModel.from_pretrained(empty)
    config = json.loads((checkpoint / "config.json").read_text())
    config["model"]["process"]["neighbourhod"] = 3
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="unknown key.*neighbourhod"):
        DiffusionModel.from_pretrained(checkpoint)
    del config["model"]["process"]["neighbourhod"]
    config["model"]["process"]["steps"] = "100"
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="steps: expected an integer"):
        DiffusionModel.from_pretrained(checkpoint)
    config["model"]["process"]["steps"] = 100
    config["model"]["backbone"]["base_channels"] = 32
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="weights do not match"):
        DiffusionModel.from_pretrained(checkpoint)
    (checkpoint / "ema.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(UserError, match="safetensors"):
        DiffusionModel.from_pretrained(checkpoint)


def test_invalid_training_settings_are_rejected():
    for bad in (dict(lr=0.0), dict(batch_size=0), dict(train_steps=-1), dict(forward_states="magic")):
        with pytest.raises(UserError):
            TrainConfig(**bad)


@pytest.mark.slow
def test_tiny_kuramoto_model_memorises_two_images(tmp_path):
    # The one-step DSM target carries irreducible noise of variance ≈ 1 (SPEC §3), so the Kuramoto
    # loss cannot fall by a large factor; what must happen is that samples move onto the data.
    source = FixedImages(2)
    trainer = Trainer(
        run_config(LOCAL, steps=400, lr=1e-3, warmup_steps=20, checkpoint_every=1000, ema_decay=0.99, fit_prior=False),
        source,
        tmp_path / "run",
        quiet=True,
    )
    trainer.start()

    def distance_to_data(model: DiffusionModel) -> float:
        states = model.sample(16, nfe=100, generator=torch.Generator().manual_seed(1)).states
        images, _ = model.decode(states)
        return (images[:, None] - source.images[None]).abs().mean((2, 3, 4)).min(1).values.mean().item()

    before = distance_to_data(trainer.ema_model())
    after = distance_to_data(trainer.train())
    assert after < 0.6 * before


class RowDecodingImages(FixedImages):
    """FixedImages that records the ``rows`` it is asked for, as a lazy folder would decode them."""

    decodes_rows_on_demand = True

    def __init__(self) -> None:
        super().__init__()
        self.rows_asked: list[slice | None] = []

    def sample_batch(self, batch_size: int, generator: torch.Generator, rows: slice | None = None) -> torch.Tensor:
        self.rows_asked.append(rows)
        return super().sample_batch(batch_size, generator)

    def sample_labelled_batch(self, batch_size: int, generator: torch.Generator, rows: slice | None = None):
        return self.sample_batch(batch_size, generator, rows), torch.zeros(batch_size, dtype=torch.long)


def test_the_trainer_asks_a_source_for_what_it_declares(tmp_path):
    rows = slice(1, 3)
    recording = RowDecodingImages()
    trainer = Trainer(run_config(LOCAL, fit_prior=False), recording, tmp_path / "a", quiet=True)
    states, condition = trainer.encoded_batch(4, rows=rows)
    assert recording.rows_asked == [rows] and condition is None
    # a plain BatchSource is asked without rows, and draws the same batch from the same generator state
    plain = Trainer(run_config(LOCAL, fit_prior=False), FixedImages(), tmp_path / "b", quiet=True)
    assert torch.equal(plain.encoded_batch(4, rows=rows)[0], states)
    # a class-conditional model needs labels: a source without them is a UserError naming what is missing
    labelled = dataclasses.replace(
        run_config(LOCAL, fit_prior=False), model=image_model_config(LOCAL, 1, 8, "tiny", class_names=("a", "b"))
    )
    with pytest.raises(UserError, match="has no class labels"):
        Trainer(labelled, FixedImages(), tmp_path / "c", quiet=True).encoded_batch(4)
    labels = Trainer(labelled, recording, tmp_path / "d", quiet=True).encoded_batch(4, rows=rows)[1]
    assert labels is not None and labels.tolist() == [0] * 4 and recording.rows_asked[-1] == rows
