"""DSM objectives (training/loss.py): the linearised (flow) kernel, antithetic draws, windows, and their checks."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.circular import wrap
from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, EuclideanVPProcess, KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.config import RunConfig, TrainConfig, angle_model_config
from kuramoto_diffusion.training import Trainer, score_matching_loss
from kuramoto_diffusion.training.loss import kernel_noise, resolve_window
from test_training import FixedImages, run_config


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


def test_linearised_kernel_of_one_step_is_the_one_step_kernel():
    process = KuramotoProcess(coupling="local", neighbourhood=3)
    theta = random_phases((3, 1, 8, 8))
    t, one = torch.tensor([0, 41, 99]), torch.ones(3, dtype=torch.long)
    mean, variance = process.linearised_kernel(theta, t, one)
    assert torch.allclose(mean, process.transition_mean(theta, t, one), atol=1e-14)
    assert torch.allclose(variance.sqrt(), process.transition_scale(t, one, like=theta).expand_as(theta), atol=1e-14)


def test_linearised_kernel_walks_each_row_for_its_own_stride():
    # Row by row with a scalar loop (an independent computation of the same recursion).
    process = KuramotoProcess(coupling="global")
    theta = random_phases((3, 5))
    t, stride = torch.tensor([0, 10, 90]), torch.tensor([7, 1, 10])
    mean, variance = process.linearised_kernel(theta, t, stride)
    for row in range(3):
        m, v = theta[row : row + 1], torch.zeros_like(theta[row : row + 1])
        for step in range(int(t[row]), int(t[row] + stride[row])):
            jacobian = torch.autograd.functional.jacobian(lambda x: process.drift(x, step), m).reshape(5, 5)
            v = (1 + jacobian.diagonal()) ** 2 * v + process.noise_variance(step)
            m = wrap(m + process.drift(m, step))
        assert torch.allclose(mean[row], m[0], atol=1e-12)
        assert torch.allclose(variance[row], v[0], atol=1e-12)


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
    network = DiffusionModel(angle_model_config(KuramotoConfig(coupling="global"), 2, hidden_features=32, num_layers=2)).network.double()
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
            loss = score_matching_loss(network, process, x[half], t[half], stride[half], draws=2,
                                       generator=generator, objective=objective)
            rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(network.parameters()))]))
        return torch.stack(rows)

    markov, antithetic = gradients("markov"), gradients("antithetic")
    assert antithetic.var(0).sum() < 0.2 * markov.var(0).sum()
    standard_error = (markov.var(0).sum() / markov.shape[0]).sqrt()
    assert (antithetic.mean(0) - markov.mean(0)).norm() < 4 * standard_error


def test_flow_with_the_whole_horizon_starts_every_example_from_the_data(tmp_path):
    trainer = Trainer(run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), objective="flow"),
                      FixedImages(), tmp_path / "run")
    trainer.start()
    assert trainer.window == 20 and trainer.anchored_at_data and trainer.pool is None
    x_start, t_start, stride, _, _ = trainer.starting_states()
    assert torch.equal(t_start, torch.zeros_like(t_start))
    assert set(stride.tolist()) <= set(range(1, 21)) and len(set(stride.tolist())) > 5
    images = set(map(tuple, ImageCodec.for_process(trainer.process).encode(FixedImages().images).flatten(1).tolist()))
    assert all(tuple(row) in images for row in x_start.flatten(1).tolist())


def test_flow_with_a_shorter_window_draws_from_the_chain_pool(tmp_path):
    trainer = Trainer(run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), objective="flow", window=5),
                      FixedImages(), tmp_path / "run")
    trainer.start()
    assert trainer.pool is not None and not trainer.anchored_at_data
    _, t_start, stride, _, _ = trainer.starting_states()
    assert int(stride.max()) <= 5 and bool((t_start + stride <= 20).all())


@pytest.mark.parametrize("objective", ["antithetic", "flow", "flow-antithetic"])
def test_every_objective_trains_and_resumes_exactly(tmp_path, objective):
    process = KuramotoConfig(coupling="local", neighbourhood=3, steps=20)
    config = run_config(process, steps=6, objective=objective, draws=2, checkpoint_every=3)
    whole = Trainer(config, FixedImages(), tmp_path / "whole")
    whole.start()
    whole.train()
    first = Trainer(run_config(process, steps=3, objective=objective, draws=2, checkpoint_every=3), FixedImages(),
                    tmp_path / "resumed")
    first.start()
    first.train()
    resumed = Trainer.resume(tmp_path / "resumed", FixedImages(), train_steps=6)
    resumed.train()
    for a, b in zip(whole.model.network.state_dict().values(), resumed.model.network.state_dict().values()):
        assert torch.equal(a, b)


def test_the_window_defaults_to_the_objectives_and_is_checked():
    kuramoto = KuramotoProcess(steps=100)
    assert resolve_window("markov", 0, kuramoto) == 10
    assert resolve_window("antithetic", 0, KuramotoProcess(steps=6)) == 6
    assert resolve_window("flow", 0, kuramoto) == 100
    assert resolve_window("flow-antithetic", 25, kuramoto) == 25
    with pytest.raises(UserError, match="longer than the process's T = 100"):
        resolve_window("markov", 101, kuramoto)
    with pytest.raises(UserError, match="strides are already exact"):
        resolve_window("flow", 0, EuclideanVPProcess())
    assert resolve_window("antithetic", 0, EuclideanVPProcess(steps=40)) == 10  # antithetic ε draws are fine for VP


def test_training_config_checks_the_objective():
    with pytest.raises(UserError, match="unknown objective 'ddpm'; valid values are auto, markov, antithetic, flow"):
        TrainConfig(objective="ddpm")
    with pytest.raises(UserError, match="draws must be even"):
        TrainConfig(objective="flow-antithetic", draws=3)
    with pytest.raises(UserError, match="window must be ≥ 0"):
        TrainConfig(window=-1)


def test_euclidean_trainer_refuses_the_flow_objective(tmp_path):
    with pytest.raises(UserError, match="already exact"):
        Trainer(run_config(EuclideanConfig(steps=20), objective="flow"), FixedImages(), tmp_path / "run")


class OnePoint:
    """Every example is the same point of the 2-torus."""

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.tensor([[2.0, -2.5]]).expand(batch_size, 2).clone()


def test_flow_target_is_noise_free_for_a_single_data_point(tmp_path):
    # With one data point the flow kernel from the data IS the marginal of its own Gaussian-closure
    # process, so its target is the marginal score itself and the loss can fall towards 0; the Markov
    # target keeps its unit-variance noise (≈ 1 − the explained fraction), so its loss stays high.
    def final_loss(objective: str) -> float:
        losses: list[float] = []
        config = RunConfig(
            model=angle_model_config(KuramotoConfig(coupling="global", steps=20), 2, hidden_features=64, num_layers=2),
            training=TrainConfig(train_steps=300, batch_size=64, objective=objective, lr=3e-3, warmup_steps=10,
                                 ema_decay=0.9, checkpoint_every=10**6, sample_every=0, log_every=50, fit_prior=False),
        )
        trainer = Trainer(config, OnePoint(), tmp_path / objective, quiet=True,
                          on_log=lambda step, scalars: losses.append(scalars["loss"]))
        trainer.start()
        trainer.train()
        return losses[-1]

    flow, markov = final_loss("flow"), final_loss("markov")
    assert math.isfinite(flow) and flow < 0.3 * markov, (flow, markov)


def test_phase_amplitude_drift_derivative_is_the_autograd_diagonal():
    from kuramoto_diffusion.processes import PhaseAmplitudeProcess

    process = PhaseAmplitudeProcess(steps=100)
    x = torch.cat([random_phases((1, 1, 6, 6)), torch.randn(1, 1, 6, 6, dtype=torch.float64)], dim=1)
    for t in (3, 60):  # inside and after the amplitude-weighted first T/6 steps
        jacobian = torch.autograd.functional.jacobian(lambda y: process.drift(y, t), x).reshape(72, 72)
        assert torch.allclose(process.drift_derivative(x, t).flatten(), jacobian.diagonal(), atol=1e-14)


def test_linearised_kernel_of_a_linear_drift_is_the_exact_stride():
    # The VP drift is linear: the recursion must reproduce its exact strides (mean a·x, variance 1 − ᾱ).
    process = EuclideanVPProcess(steps=100)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    t, stride = torch.tensor([0, 10, 50]), torch.tensor([5, 40, 50])
    mean, variance = process.linearised_kernel(x, t, stride)
    assert torch.allclose(mean, process.transition_mean(x, t, stride), atol=1e-13)
    assert torch.allclose(variance, process.noise_variance(t, stride, like=x).expand_as(x), atol=1e-13)


def test_flow_objectives_train_a_phase_amplitude_model(tmp_path):
    from kuramoto_diffusion.processes import PhaseAmplitudeConfig
    from kuramoto_diffusion.config import FlowNormalisation, flow_model_config

    class Flows:
        def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
            return torch.randn((batch_size, 2, 8, 8), generator=generator)

    for objective in ("flow", "flow-antithetic"):
        config = RunConfig(
            model=flow_model_config(PhaseAmplitudeConfig(steps=12), 8, FlowNormalisation(), "tiny"),
            training=TrainConfig(train_steps=2, batch_size=4, draws=2, objective=objective, checkpoint_every=10,
                                 sample_every=0, warmup_steps=0, fit_prior=False),
        )
        trainer = Trainer(config, Flows(), tmp_path / objective)
        trainer.start()
        assert trainer.anchored_at_data
        losses = [trainer.train_step() for _ in range(2)]
        assert all(loss is not None and math.isfinite(loss) for loss in losses)


def test_anchored_queries_start_from_the_data_and_keep_their_step(tmp_path):
    trainer = Trainer(run_config(KuramotoConfig(coupling="local", neighbourhood=3, steps=20), batch_size=64, anchor=6),
                      FixedImages(), tmp_path / "run")
    trainer.start()
    assert trainer.pool is not None and trainer.anchor == 6
    images = set(map(tuple, ImageCodec.for_process(trainer.process).encode(FixedImages().images).flatten(1).tolist()))
    seen_early = seen_late = 0
    for _ in range(5):
        x_start, t_start, stride, _, _ = trainer.starting_states()
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
    from kuramoto_diffusion.training.loss import kernel_draw

    mixed = kernel_draw(process, x, t, stride, noise, linearised=t == 0)
    linear = kernel_draw(process, x, t, stride, noise, linearised=True)
    euler = kernel_draw(process, x, t, stride, noise, linearised=False)
    for got, want_rows in ((mixed, {0: linear, 2: linear, 1: euler, 3: euler}),):
        for row, want in want_rows.items():
            for a, b in zip(got, want):
                assert torch.allclose(a[row], b[row].expand_as(a[row]), atol=1e-14)
    assert not torch.allclose(linear[0][0], euler[0][0])  # the two kernels differ over 20 steps


def test_anchor_longer_than_the_process_is_refused():
    from kuramoto_diffusion.training.loss import resolve_anchor

    with pytest.raises(UserError, match="anchor horizon 30 is longer than the process's T = 20"):
        resolve_anchor("markov", 30, 10, KuramotoProcess(steps=20))
    assert resolve_anchor("flow", 0, 20, KuramotoProcess(steps=20)) == 20  # a window of T anchors everything
    assert resolve_anchor("markov", 5, 10, KuramotoProcess(steps=20)) == 5


@pytest.mark.parametrize("coupling", ["global", "local"])
def test_drift_and_derivative_together_equal_each_alone(coupling):
    process = KuramotoProcess(coupling=coupling, neighbourhood=3)
    theta = random_phases((2, 1, 6, 6))
    t = torch.tensor([4, 77])
    drift, derivative = process.drift_and_derivative(theta, t)
    assert torch.allclose(drift, process.drift(theta, t), atol=1e-15)
    assert torch.allclose(derivative, process.drift_derivative(theta, t), atol=1e-15)
