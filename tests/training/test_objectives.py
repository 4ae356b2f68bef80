"""DSM objectives (training/objectives/): the linearised kernel, antithetic draws, windows, and their checks."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.circular import wrap
from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.config import RunConfig, TrainConfig, angle_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, EuclideanVPProcess, KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.training import Trainer
from kuramoto_diffusion.training.objectives import kernel_draw, kernel_noise
from test_training import FixedImages, dsm_loss_of, objective_for, run_config


def window_of(objective: str, window: int, process) -> int:
    """The DSM window the objective resolves ``window`` to on ``process``."""
    return objective_for(process, objective=objective, window=window, draws=2).window


def anchor_of(objective: str, anchor: int, window: int, process) -> int:
    """The anchor horizon the objective resolves ``anchor`` to on ``process``, with ``window``."""
    return objective_for(process, objective=objective, window=window, anchor=anchor, draws=2).anchor


def random_phases(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return (torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1) * 3.1


# Every coupling geometry whose Jacobian differs: global, reflect borders (odd and even M), circular + Gaussian.
COUPLING_CONFIGS = [
    KuramotoConfig(coupling="global"),
    KuramotoConfig(coupling="local", neighbourhood=5, padding="reflect"),
    KuramotoConfig(coupling="local", neighbourhood=4, padding="reflect"),
    KuramotoConfig(coupling="local", neighbourhood=3, padding="circular", kernel="gaussian"),
]
COUPLING_IDS = ["global", "local-reflect-5", "local-reflect-4", "local-circular-gaussian"]


@pytest.mark.parametrize("config", COUPLING_CONFIGS, ids=COUPLING_IDS)
def test_drift_derivative_is_the_diagonal_of_the_autograd_jacobian(config):
    process = KuramotoProcess(config)
    theta = random_phases((1, 2, 6, 7))
    jacobian = torch.autograd.functional.jacobian(lambda x: process.drift(x, 37), theta).reshape(84, 84)
    assert torch.allclose(process.drift_derivative(theta, 37).flatten(), jacobian.diagonal(), atol=1e-14)


def test_linearised_kernel_matches_the_chain_over_a_short_window():
    # Over 15 early steps (σ² small against the drift's curvature) the moment closure is accurate:
    # the chain's circular mean and E cos of the deviation agree with μ and exp(−v/2) within
    # Monte-Carlo error (≈ 0.002 per element) plus the closure's small bias.
    process = KuramotoProcess(coupling="local", neighbourhood=3, padding="circular")
    theta = random_phases((1, 1, 6, 6), seed=3)
    mean, variance = process.linearised_kernel(theta, torch.tensor([0]), torch.tensor([15]))
    chains = theta.repeat(40_000, 1, 1, 1)
    generator = torch.Generator().manual_seed(0)
    for step in range(15):
        chains = process.step(chains, step, generator=generator)
    deviation = wrap(chains - mean)
    circular_mean_error = torch.atan2(torch.sin(deviation).mean(0), torch.cos(deviation).mean(0)).abs().max()
    assert circular_mean_error < 0.01
    assert (torch.cos(deviation).mean(0) - torch.exp(-variance[0] / 2)).abs().max() < 0.006
    assert (torch.cos(deviation).mean(0) - torch.exp(-variance[0] / 2) * 0.9).abs().min() > 0.05  # the test can fail


def test_antithetic_noise_pairs_each_states_draws():
    generator = torch.Generator().manual_seed(0)
    noise = kernel_noise((3 * 4, 2, 5), 4, True, generator, torch.device("cpu"), torch.float64)
    per_state = noise.reshape(3, 4, 2, 5)
    assert torch.equal(per_state[:, 2:], -per_state[:, :2])
    assert not torch.equal(per_state[:, 0], per_state[:, 1])
    with pytest.raises(UserError, match="must be even"):
        kernel_noise((3, 2), 3, True, generator, torch.device("cpu"))


def test_antithetic_pairs_cancel_the_leading_gradient_noise():
    # At a small σ (t = 1) the Markov gradient is dominated by the target's O(1/σ) noise, which is
    # linear in z and cancels within a ±z pair: the antithetic gradient varies far less, at the
    # same number of network evaluations, and has the same mean (it is unbiased).
    torch.manual_seed(0)
    process = KuramotoProcess(coupling="global")
    network = DiffusionModel(
        angle_model_config(KuramotoConfig(coupling="global"), 2, hidden_features=32, num_layers=2)
    ).network.double()
    for parameter in network.parameters():  # a non-trivial fixed network
        torch.nn.init.normal_(parameter, std=0.3)
    x = random_phases((64, 2), seed=1)
    t = torch.full((64,), 1)
    stride = torch.ones(64, dtype=torch.long)

    def gradients(objective: str, repeats: int = 300) -> torch.Tensor:
        generator = torch.Generator().manual_seed(5)
        rows = []
        for _ in range(repeats):
            half = torch.arange(0, 64, 2)  # 32 states × 2 draws: 64 network evaluations either way
            loss = dsm_loss_of(
                network, objective_for(process, objective=objective, draws=2), x[half], t[half], stride[half], generator
            )
            rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(network.parameters()))]))
        return torch.stack(rows)

    markov, antithetic = gradients("markov"), gradients("antithetic")
    assert antithetic.var(0).sum() < 0.2 * markov.var(0).sum()
    standard_error = (markov.var(0).sum() / markov.shape[0]).sqrt()
    assert (antithetic.mean(0) - markov.mean(0)).norm() < 4 * standard_error


def test_linearised_with_the_whole_horizon_starts_every_example_from_the_data(tmp_path):
    trainer = Trainer(
        run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), objective="linearised"),
        FixedImages(),
        tmp_path / "run",
    )
    trainer.start()
    objective = trainer.objective
    assert objective.window == 20 and objective.anchored_at_data and trainer.pool is None
    x_start, t_start, stride, _, _ = objective.starting_states(16, trainer.noise_generator)
    assert torch.equal(t_start, torch.zeros_like(t_start))
    assert set(stride.tolist()) <= set(range(1, 21)) and len(set(stride.tolist())) > 5
    images = set(map(tuple, ImageCodec.for_process(trainer.process).encode(FixedImages().images).flatten(1).tolist()))
    assert all(tuple(row) in images for row in x_start.flatten(1).tolist())


def test_linearised_with_a_shorter_window_draws_from_the_chain_pool(tmp_path):
    trainer = Trainer(
        run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), objective="linearised", window=5),
        FixedImages(),
        tmp_path / "run",
    )
    trainer.start()
    assert trainer.pool is not None and not trainer.objective.anchored_at_data
    _, t_start, stride, _, _ = trainer.objective.starting_states(16, trainer.noise_generator)
    assert int(stride.max()) <= 5 and bool((t_start + stride <= 20).all())


@pytest.mark.parametrize("objective", ["antithetic", "linearised", "linearised-antithetic"])
def test_every_objective_trains_and_resumes_exactly(tmp_path, objective):
    process = KuramotoConfig(coupling="local", neighbourhood=3, steps=20)
    config = run_config(process, steps=6, objective=objective, draws=2, checkpoint_every=3)
    whole = Trainer(config, FixedImages(), tmp_path / "whole")
    whole.start()
    whole.train()
    first = Trainer(
        run_config(process, steps=3, objective=objective, draws=2, checkpoint_every=3),
        FixedImages(),
        tmp_path / "resumed",
    )
    first.start()
    first.train()
    resumed = Trainer.resume(tmp_path / "resumed", FixedImages(), train_steps=6)
    resumed.train()
    for a, b in zip(whole.model.network.state_dict().values(), resumed.model.network.state_dict().values()):
        assert torch.equal(a, b)


def test_the_window_defaults_to_the_objectives_and_is_checked():
    kuramoto = KuramotoProcess(steps=100)
    assert window_of("markov", 0, kuramoto) == 10
    assert window_of("antithetic", 0, KuramotoProcess(steps=6)) == 6
    assert window_of("linearised", 0, kuramoto) == 100
    assert window_of("linearised-antithetic", 25, kuramoto) == 25
    with pytest.raises(UserError, match="longer than the process's T = 100"):
        window_of("markov", 101, kuramoto)
    with pytest.raises(UserError, match="strides are already exact"):
        window_of("linearised", 0, EuclideanVPProcess())
    assert window_of("antithetic", 0, EuclideanVPProcess(steps=40)) == 10  # antithetic ε draws are fine for VP


def test_training_config_checks_the_objective():
    with pytest.raises(
        UserError, match="unknown objective 'ddpm'; valid values are auto, markov, antithetic, linearised"
    ):
        TrainConfig(objective="ddpm")
    with pytest.raises(UserError, match="draws must be even"):
        TrainConfig(objective="linearised-antithetic", draws=3)
    with pytest.raises(UserError, match="window must be ≥ 0"):
        TrainConfig(window=-1)


def test_euclidean_trainer_refuses_the_linearised_objective(tmp_path):
    with pytest.raises(UserError, match="already exact"):
        Trainer(run_config(EuclideanConfig(steps=20), objective="linearised"), FixedImages(), tmp_path / "run")


class OnePoint:
    """Every example is the same point of the 2-torus."""

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.tensor([[2.0, -2.5]]).expand(batch_size, 2).clone()


def test_linearised_target_is_noise_free_for_a_single_data_point(tmp_path):
    # With one data point the linearised kernel from the data IS the marginal of its own Gaussian-closure
    # process, so its target is the marginal score itself and the loss can fall towards 0; the Markov
    # target keeps its unit-variance noise (≈ 1 − the explained fraction), so its loss stays high.
    def final_loss(objective: str) -> float:
        losses: list[float] = []
        config = RunConfig(
            model=angle_model_config(KuramotoConfig(coupling="global", steps=20), 2, hidden_features=64, num_layers=2),
            training=TrainConfig(
                train_steps=300,
                batch_size=64,
                objective=objective,
                lr=3e-3,
                warmup_steps=10,
                ema_decay=0.9,
                checkpoint_every=10**6,
                sample_every=0,
                log_every=50,
                fit_prior=False,
            ),
        )
        trainer = Trainer(
            config,
            OnePoint(),
            tmp_path / objective,
            quiet=True,
            on_log=lambda step, scalars: losses.append(scalars["loss"]),
        )
        trainer.start()
        trainer.train()
        return losses[-1]

    linearised, markov = final_loss("linearised"), final_loss("markov")
    assert math.isfinite(linearised) and linearised < 0.3 * markov, (linearised, markov)


def test_linearised_objectives_train_a_phase_amplitude_model(tmp_path):
    from kuramoto_diffusion.config import FlowNormalisation, flow_model_config
    from kuramoto_diffusion.processes import PhaseAmplitudeConfig

    class Flows:
        def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
            return torch.randn((batch_size, 2, 8, 8), generator=generator)

    for objective in ("linearised", "linearised-antithetic"):
        config = RunConfig(
            model=flow_model_config(PhaseAmplitudeConfig(steps=12), 8, FlowNormalisation(), "tiny"),
            training=TrainConfig(
                train_steps=2,
                batch_size=4,
                draws=2,
                objective=objective,
                checkpoint_every=10,
                sample_every=0,
                warmup_steps=0,
                fit_prior=False,
            ),
        )
        trainer = Trainer(config, Flows(), tmp_path / objective)
        trainer.start()
        assert trainer.objective.anchored_at_data
        losses = [trainer.train_step() for _ in range(2)]
        assert all(loss is not None and math.isfinite(loss) for loss in losses)


def test_anchored_queries_start_from_the_data_and_keep_their_step(tmp_path):
    trainer = Trainer(
        run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), batch_size=64, anchor=6),
        FixedImages(),
        tmp_path / "run",
    )
    trainer.start()
    assert trainer.pool is not None and trainer.objective.anchor == 6
    images = set(map(tuple, ImageCodec.for_process(trainer.process).encode(FixedImages().images).flatten(1).tolist()))
    seen_early = seen_late = 0
    for _ in range(5):
        x_start, t_start, stride, _, _ = trainer.objective.starting_states(64, trainer.noise_generator)
        query = t_start + stride
        assert bool((query <= 20).all()) and bool((stride >= 1).all())
        early = query <= 6
        assert bool((t_start[early] == 0).all()) and bool((stride[early] == query[early]).all())
        assert all(tuple(row) in images for row in x_start[early].flatten(1).tolist())
        assert bool((stride[~early] <= 10).all())  # the Markov window for the later queries
        seen_early += int(early.sum())
        seen_late += int((~early & (t_start > 0)).sum())
    assert seen_early > 0 and seen_late > 0


def test_rows_from_the_data_use_the_linearised_kernel_when_anchored():
    process = KuramotoProcess(coupling="local", neighbourhood=3)
    x = random_phases((4, 1, 6, 6))
    t, stride = torch.tensor([0, 30, 0, 55]), torch.tensor([20, 4, 9, 3])
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mixed = kernel_draw(process, x, t, stride, noise, linearised=t == 0)
    linear = kernel_draw(process, x, t, stride, noise, linearised=True)
    euler = kernel_draw(process, x, t, stride, noise, linearised=False)
    for got, want_rows in ((mixed, {0: linear, 2: linear, 1: euler, 3: euler}),):
        for row, want in want_rows.items():
            for a, b in zip(got, want):
                assert torch.allclose(a[row], b[row].expand_as(a[row]), atol=1e-14)
    assert not torch.allclose(linear[0][0], euler[0][0])  # the two kernels differ over 20 steps


def test_anchor_longer_than_the_process_is_refused():
    with pytest.raises(UserError, match="anchor horizon 30 is longer than the process's T = 20"):
        anchor_of("markov", 30, 10, KuramotoProcess(steps=20))
    assert anchor_of("linearised", 0, 20, KuramotoProcess(steps=20)) == 20  # a window of T anchors everything
    assert anchor_of("markov", 5, 10, KuramotoProcess(steps=20)) == 5


@pytest.mark.parametrize("coupling", ["global", "local"])
def test_drift_and_derivative_together_equal_each_alone(coupling):
    process = KuramotoProcess(coupling=coupling, neighbourhood=3)
    theta = random_phases((2, 1, 6, 6))
    t = torch.tensor([4, 77])
    drift, derivative = process.drift_and_derivative(theta, t)
    assert torch.allclose(drift, process.drift(theta, t), atol=1e-15)
    assert torch.allclose(derivative, process.drift_derivative(theta, t), atol=1e-15)


# ----- the objective objects, against a direct computation ------------------------------------------------------
def wrapped_normal_score(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """∂/∂x log Σ_k N(x + 2πk; mean, scale²) by autograd over 9 windings (independent of ``kernel_score``)."""
    x = x.detach().requires_grad_(True)
    windings = torch.arange(-4, 5, dtype=x.dtype).reshape(-1, *([1] * x.dim())) * 2 * math.pi
    log_density = torch.logsumexp(-((x + windings - mean) ** 2) / (2 * scale**2), dim=0).sum()
    return torch.autograd.grad(log_density, x)[0]


def direct_loss(network, process, x_next, t_query, target, scale) -> torch.Tensor:
    """mean ‖(F(x', t') − c·s*)·σ/|c|‖², written out."""
    c = process.output_scale(t_query, like=x_next)
    prediction = network(x_next, t_query.to(torch.float32) / process.steps, None, None)
    return (((prediction - c * target) * (scale / c.abs())) ** 2).mean()


@pytest.mark.parametrize("name", ["markov", "linearised", "propagated"])
def test_each_objective_loss_is_the_direct_computation_in_float64(name):
    from kuramoto_diffusion.training.objectives import StartingStates, propagation_schedule

    torch.manual_seed(0)
    config = KuramotoConfig(coupling="global", steps=30)
    process = KuramotoProcess(config)
    network = DiffusionModel(angle_model_config(config, 3, hidden_features=16, num_layers=2)).network.double()
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    x = random_phases((6, 3), seed=2)
    t = torch.tensor([0, 3, 11, 17, 25, 29])
    stride = torch.ones_like(t) if name == "propagated" else torch.tensor([4, 1, 7, 2, 5, 1])
    estimate = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    objective = objective_for(process, objective=name, window=1 if name == "propagated" else 7)
    start = StartingStates(x, t, stride, None, estimate if name == "propagated" else None)
    example = objective.examples_from(start, torch.Generator().manual_seed(9))
    loss = objective.loss(network, example)

    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    if name == "linearised":
        mean, variance = process.linearised_kernel(x, t, stride)
        scale = variance.sqrt()
    else:
        mean = wrap(x + process.drift(x, t, stride))
        scale = process.noise_variance(t, stride, like=x).sqrt()
    x_next = wrap(mean + scale * z)
    target = wrapped_normal_score(x_next, mean, scale)
    if name == "propagated":  # β_s, v_s from their recursion, one step at a time
        v, beta = [0.0], []
        for step in range(30):
            carried = (1 - process.contraction_bound(step)) ** 2 * v[-1]
            v.append(carried + float(process.noise_variance(step, 1)))
            beta.append(carried / v[-1])
        b = torch.tensor(beta, dtype=torch.float64)[t].reshape(-1, 1)
        target = (1 - b) * target + b * process.propagate_score(x, t, estimate)
        scale = torch.tensor(v, dtype=torch.float64)[t + 1].reshape(-1, 1).sqrt()
        assert torch.allclose(propagation_schedule(process).weight, torch.tensor(beta, dtype=torch.float64), atol=1e-15)
    torch.testing.assert_close(example.x, x_next, rtol=0, atol=1e-12)
    torch.testing.assert_close(example.target, target, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(
        loss, direct_loss(network, process, x_next, t + stride, target, scale), rtol=1e-10, atol=0
    )
    assert float(loss.detach()) > 0.01  # a real loss: the comparison could fail


def test_examples_are_the_objectives_draws_in_a_fixed_order(tmp_path):
    # examples() = starting states, then condition dropout, then kernel noise, from one generator: replaying the
    # same generator through the pieces gives the same example bit for bit.
    trainer = Trainer(
        run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), objective="markov", draws=2),
        FixedImages(),
        tmp_path / "run",
    )
    trainer.start()
    objective = trainer.objective
    state = trainer.noise_generator.get_state()
    pool_state = {key: value.clone() for key, value in trainer.pool.state_dict().items()}
    example = objective.examples(16, trainer.noise_generator)
    trainer.noise_generator.set_state(state)
    trainer.pool.load_state_dict(pool_state)
    start = objective.starting_states(16, trainer.noise_generator)
    again = objective.examples_from(start, trainer.noise_generator)
    assert example.x.shape[0] == 32 and torch.equal(example.x, again.x) and torch.equal(example.target, again.target)
    assert torch.equal(example.t_query, (start.t + start.stride).repeat_interleave(2))


def test_capabilities_are_declared_and_the_registry_is_the_configs_list():
    from kuramoto_diffusion.config import OBJECTIVES as CONFIG_OBJECTIVES
    from kuramoto_diffusion.training.objectives import (
        OBJECTIVES,
        LinearisedObjective,
        MarkovObjective,
        PropagatedObjective,
    )

    assert set(OBJECTIVES) | {"auto"} == set(CONFIG_OBJECTIVES)
    assert {name for name, choice in OBJECTIVES.items() if choice.antithetic} == {
        n for n in OBJECTIVES if n.endswith("antithetic")
    }
    assert not MarkovObjective.corrects_chain_kernel and LinearisedObjective.corrects_chain_kernel
    assert PropagatedObjective.carry is not None and MarkovObjective.carry is None
    assert not PropagatedObjective.takes_window and not PropagatedObjective.takes_anchor
    assert PropagatedObjective.needs_contraction_bound and KuramotoProcess.contraction_bounded
    assert not EuclideanVPProcess.contraction_bounded


def test_configs_and_checkpoints_saved_with_the_old_name_flow_load_as_linearised(tmp_path):
    import json

    from kuramoto_diffusion.model import CONFIG_NAME, load_run_config

    process = KuramotoConfig(coupling="local", neighbourhood=3, steps=20)
    straight = Trainer(
        run_config(process, steps=4, objective="linearised", window=5, checkpoint_every=2),
        FixedImages(),
        tmp_path / "straight",
    )
    straight.start()
    straight.train()
    first = Trainer(
        run_config(process, steps=2, objective="linearised", window=5, checkpoint_every=2),
        FixedImages(),
        tmp_path / "old",
    )
    first.start()
    first.train()
    written = [tmp_path / "old" / CONFIG_NAME, *sorted((tmp_path / "old" / "checkpoints").glob(f"*/{CONFIG_NAME}"))]
    assert len(written) == 2
    for path in written:  # as a run from before the rename wrote them
        data = json.loads(path.read_text())
        assert data["training"]["objective"] == "linearised"
        data["training"]["objective"] = "flow"
        path.write_text(json.dumps(data))
    assert load_run_config(written[1])[1].training.objective == "linearised"
    resumed = Trainer.resume(tmp_path / "old", FixedImages(), train_steps=4)
    assert resumed.train_config.objective == "linearised" and resumed.pool is not None
    resumed.train()
    for a, b in zip(straight.model.network.state_dict().values(), resumed.model.network.state_dict().values()):
        assert torch.equal(a, b)
    assert DiffusionModel.from_pretrained(tmp_path / "old").run_config.training.objective == "linearised"
    data = json.loads(written[0].read_text())
    data["training"].update(objective="flow-antithetic", draws=2)
    written[0].write_text(json.dumps(data))
    assert load_run_config(written[0])[1].training.objective == "linearised-antithetic"
