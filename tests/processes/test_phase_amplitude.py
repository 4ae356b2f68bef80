"""The joint phase–amplitude process of flows (SPEC §7), its network and the model's velocity encoding.

Numerics in float64 against independent computations: brute-force neighbourhood sums, autograd of the
kernel's log density, closed-form VP moments, and a hand-written step.
"""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.circular import wrap
from kuramoto_diffusion.config import FlowNormalisation, ModelConfig, flow_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.nets import UNet, unet_config_from_preset
from kuramoto_diffusion.nets.score import ScoreNetwork
from kuramoto_diffusion.processes import EuclideanConfig, PhaseAmplitudeConfig, PhaseAmplitudeProcess, build_process
from kuramoto_diffusion.sampling.sweep import reverse_sweep


def _states(batch: int = 2, size: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    phase = (torch.rand(batch, 1, size, size, generator=generator, dtype=torch.float64) * 2 - 1) * math.pi
    amplitude = torch.randn(batch, 1, size, size, generator=generator, dtype=torch.float64)
    return torch.cat([phase, amplitude], dim=1)


def _brute_force_neighbourhood(phase: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Box mean of cos and sin over the M×M neighbourhood with circular wrap (even M: one more after)."""
    before = (size - 1) // 2
    mean_cos, mean_sin = torch.zeros_like(phase), torch.zeros_like(phase)
    batch, _, height, width = phase.shape
    for b in range(batch):
        for i in range(height):
            for j in range(width):
                values = [
                    phase[b, 0, (i + a - before) % height, (j + e - before) % width]
                    for a in range(size)
                    for e in range(size)
                ]
                mean_cos[b, 0, i, j] = sum(math.cos(v) for v in values) / size**2
                mean_sin[b, 0, i, j] = sum(math.sin(v) for v in values) / size**2
    return mean_cos, mean_sin


def _beta(cfg: PhaseAmplitudeConfig, start: int, stop: int) -> float:
    """∫ β over steps start … stop−1: the rate 100·(β₀ + (β₁ − β₀)τ) integrated over τ ∈ [start/T, stop/T]."""
    low, high = start / cfg.steps, stop / cfg.steps
    b0, b1 = cfg.beta_range
    return 100 * (b0 * (high - low) + 0.5 * (b1 - b0) * (high**2 - low**2))


def _hand_written_step_mean(process: PhaseAmplitudeProcess, x: torch.Tensor, t: int) -> torch.Tensor:
    """One step's mean written out from the module docstring, with brute-force neighbourhoods."""
    cfg = process.config
    phase, amplitude = x[:, :1], x[:, 1:]
    mean_cos, mean_sin = _brute_force_neighbourhood(phase, cfg.neighbourhood)
    coupling = mean_sin * torch.cos(phase) - mean_cos * torch.sin(phase)
    order = torch.sqrt(mean_cos**2 + mean_sin**2)
    k = float(process.phase.coupling_strength(t))
    weighted = t < round(cfg.amplitude_weighted_fraction * cfg.steps)
    weight = 2 * torch.sigmoid(amplitude) if weighted else torch.ones_like(amplitude)
    new_phase = wrap(phase + k * (weight * coupling + cfg.ref_strength * torch.sin(cfg.ref_phase - phase)))
    beta = _beta(cfg, t, t + 1)
    # da = −½β(a + λr)dτ integrated exactly over the step with r held fixed
    new_amplitude = math.exp(-beta / 2) * (amplitude + cfg.coherence * order) - cfg.coherence * order
    return torch.cat([new_phase, new_amplitude], dim=1)


@pytest.mark.parametrize("t", [0, 5, 40])
def test_step_mean_matches_hand_written_formula(t):
    process = PhaseAmplitudeProcess(steps=60, coupling_range=(0.05, 0.3))  # strong coupling: the weight matters
    x = _states()
    assert torch.allclose(process.transition_mean(x, t), _hand_written_step_mean(process, x, t), atol=1e-12)


def test_amplitude_weight_acts_in_the_first_sixth_only():
    process = PhaseAmplitudeProcess(steps=60, coupling_range=(0.05, 0.3))
    x = _states()
    strong, weak = x.clone(), x.clone()
    strong[:, 1], weak[:, 1] = 3.0, -3.0
    early_gap = (process.drift(strong, 3)[:, 0] - process.drift(weak, 3)[:, 0]).abs().max()
    assert early_gap > 1e-3  # strong flow moves its phase more in the first T/6 steps
    assert torch.allclose(process.drift(strong, 10)[:, 0], process.drift(weak, 10)[:, 0], atol=1e-14)  # t ≥ T/6 = 10


def test_stride_sums_the_schedules_over_its_steps():
    process = PhaseAmplitudeProcess(steps=60)
    like = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    one_by_one = sum(process.noise_variance(t, 1, like=like) for t in range(4, 16))
    merged = process.noise_variance(4, 12, like=like)
    assert torch.allclose(merged[0], one_by_one[0])  # phase σ² adds up
    beta = _beta(process.config, 4, 16)
    assert torch.allclose(merged[1], torch.tensor(-math.expm1(-beta), dtype=torch.float64))  # 1 − exp(−Σβ)
    # The amplitude-weighted part of K over a stride straddling t = T/6 = 10 is K over steps 4 … 9.
    weighted = process._interval_sum("cumulative_weighted_coupling", 4, 12, like)
    expected = sum(float(process.phase.coupling_strength(t)) for t in range(4, 10))
    assert math.isclose(float(weighted), expected, rel_tol=1e-12)


def test_amplitude_without_coherence_is_an_exact_vp_process():
    process = PhaseAmplitudeProcess(steps=40, coherence=0.0)
    start = torch.zeros(4000, 2, 4, 4, dtype=torch.float64)
    start[:, 1] = 1.5
    end = process.simulate(start, 25, generator=torch.Generator().manual_seed(3))[:, 1]
    total_beta = _beta(process.config, 0, 25)
    expected_mean, expected_var = 1.5 * math.exp(-total_beta / 2), -math.expm1(-total_beta)
    standard_error = math.sqrt(expected_var / end.numel())
    assert abs(float(end.mean()) - expected_mean) < 5 * standard_error * 4  # ×4: neighbouring sites are not independent
    assert abs(float(end.var()) - expected_var) < 0.05 * expected_var


def test_coherence_pulls_the_amplitude_down_where_phases_are_ordered():
    ordered = torch.zeros(1, 2, 6, 6, dtype=torch.float64)  # r = 1 everywhere
    drift = PhaseAmplitudeProcess(steps=20).drift(ordered, 10)[:, 1]
    plain = PhaseAmplitudeProcess(steps=20, coherence=0.0).drift(ordered, 10)[:, 1]
    assert bool((drift < plain - 1e-6).all())


def test_reverse_mean_inverts_the_forward_mean_of_the_amplitude():
    # Without coupling and reference pull the phase stands still, so r is the same before and after.
    process = PhaseAmplitudeProcess(steps=30, coupling_range=(0.0, 0.0), ref_strength=0.0)
    x = _states(seed=4)
    forward = process.transition_mean(x, 8, 4)
    back = process.reverse_sde_mean(forward, torch.zeros_like(x), 8, 4)
    assert torch.allclose(back, x, atol=1e-12)


def test_prior_amplitude_is_centred_on_minus_the_local_order():
    process = PhaseAmplitudeProcess(steps=20)
    prior = process.prior_sample((400, 2, 8, 8), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    residual = prior[:, 1:] + process.local_order(prior[:, :1])
    assert abs(float(residual.mean())) < 0.02 and abs(float(residual.std()) - 1) < 0.02
    assert bool((prior[:, 0].abs() <= math.pi).all())
    assert torch.isfinite(process.prior_log_prob(prior)).all()


def test_mixed_score_network_is_periodic_and_tangent_in_the_phase():
    torch.manual_seed(0)
    config = unet_config_from_preset("tiny", in_channels=3, out_channels=3, padding_mode="circular")
    network = ScoreNetwork(UNet(config), periodic_channels=1).double()
    x = _states(size=8)
    time = torch.full((2,), 0.4, dtype=torch.float64)
    output = network(x, time)
    shifted = x.clone()
    shifted[:, 0] += 2 * math.pi
    assert torch.allclose(network(shifted, time), output, atol=1e-10)  # the seam is invisible
    # The phase output is −a sin φ + b cos φ: rotating (a, b) with φ must be reproducible from the raw backbone.
    features = torch.cat([torch.cos(x[:, :1]), torch.sin(x[:, :1]), x[:, 1:]], dim=1)
    raw = network.backbone(features, time)
    expected_phase = -raw[:, :1] * torch.sin(x[:, :1]) + raw[:, 1:2] * torch.cos(x[:, :1])
    assert torch.allclose(output[:, :1], expected_phase) and torch.allclose(output[:, 1:], raw[:, 2:])


def _velocity(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(3, 2, 8, 8, generator=generator, dtype=torch.float64) * 0.7


@pytest.mark.parametrize("process", [PhaseAmplitudeConfig(steps=10), EuclideanConfig(steps=10)])
def test_flow_model_encodes_and_decodes_velocities(process):
    velocity = _velocity()
    normalisation = FlowNormalisation.measure(velocity)
    model = DiffusionModel(flow_model_config(process, 8, normalisation, "tiny"))
    states = model.encode(velocity)
    decoded, clipped = model.decode(states)
    assert clipped == 0
    assert torch.allclose(decoded, velocity, atol=1e-9)
    if process.kind == "phase-amplitude":
        assert torch.allclose(states[:, 0], torch.atan2(velocity[:, 1], velocity[:, 0]))
        log_speed = torch.log(torch.hypot(velocity[:, 0], velocity[:, 1]) + 1e-4)
        assert abs(float(states[:, 1].mean())) < 1e-9 and abs(float(states[:, 1].std()) - 1) < 1e-9
        assert torch.allclose(states[:, 1] * log_speed.std() + log_speed.mean(), log_speed)


def test_sampling_a_flow_model_gives_finite_velocities_of_the_data_shape():
    torch.manual_seed(0)
    velocity = _velocity().float()
    model = DiffusionModel(
        flow_model_config(PhaseAmplitudeConfig(steps=8), 8, FlowNormalisation.measure(velocity), "tiny")
    )
    for sampler in ("sde", "ode-heun"):
        result = model.sample(3, sampler=sampler, generator=torch.Generator().manual_seed(1), record_trajectory=True)
        decoded, _ = model.decode(result.states)
        assert decoded.shape == (3, 2, 8, 8) and bool(torch.isfinite(decoded).all())
        assert all(0 <= r <= 1 for r in result.order_parameter)


@pytest.mark.parametrize("sampler,nfe", [("sde", None), ("sde", 10), ("ode", None), ("ode-heun", None)])
def test_an_exact_score_brings_the_data_back(sampler, nfe):
    """With the true score of a known distribution, every sampler returns that distribution.

    Without coupling and reference pull, and with coherence 0, every site is independent: a wrapped
    normal of known mean in φ (wrapped Brownian motion) and a VP process in a. The true score of both
    marginals is in closed form, so a wrong sign or a missing factor in the sampler shows up.
    """
    process = PhaseAmplitudeProcess(steps=40, coupling_range=(0.0, 0.0), ref_strength=0.0, coherence=0.0)
    phase_mean, phase_std, amplitude_mean, amplitude_std = 2.8, 0.3, 1.0, 0.5  # the data straddle the seam

    def true_score(x: torch.Tensor, t: int) -> torch.Tensor:
        from kuramoto_diffusion.circular import wrapped_normal_score

        like = torch.zeros(1, 2, 1, 1, dtype=x.dtype)
        phase_var = phase_std**2 + float(process.noise_variance(0, t, like=like)[0])
        signal = math.exp(-_beta(process.config, 0, t) / 2)
        amplitude_var = signal**2 * amplitude_std**2 + 1 - signal**2
        phase_score = wrapped_normal_score(x[:, :1], phase_mean, math.sqrt(phase_var))
        amplitude_score = -(x[:, 1:] - signal * amplitude_mean) / amplitude_var
        return torch.cat([phase_score, amplitude_score], dim=1)

    generator = torch.Generator().manual_seed(6)
    # Start from the exact marginal at T (not the von Mises prior, which this process without pull does not reach).
    start_var = phase_std**2 + float(process.noise_variance(0, 40, like=torch.zeros(1, 2, 1, 1))[0])
    signal = math.exp(-_beta(process.config, 0, 40) / 2)
    start = torch.cat(
        [
            wrap(
                phase_mean + math.sqrt(start_var) * torch.randn(2000, 1, 4, 4, generator=generator, dtype=torch.float64)
            ),
            signal * amplitude_mean
            + math.sqrt(signal**2 * amplitude_std**2 + 1 - signal**2)
            * torch.randn(2000, 1, 4, 4, generator=generator, dtype=torch.float64),
        ],
        dim=1,
    )
    result = reverse_sweep(process, true_score, start, sampler=sampler, nfe=nfe, generator=generator)
    phase, amplitude = result.states[:, 0], result.states[:, 1]
    circular_mean = torch.atan2(torch.sin(phase).mean(), torch.cos(phase).mean())
    assert abs(float(wrap(circular_mean - phase_mean))) < 0.03
    assert abs(float(torch.sqrt(-2 * torch.log(torch.cos(phase - phase_mean).mean()))) - phase_std) < 0.04
    assert abs(float(amplitude.mean()) - amplitude_mean) < 0.05 and abs(float(amplitude.std()) - amplitude_std) < 0.05


def test_bad_configurations_and_states_are_clear_errors():
    with pytest.raises(UserError, match="amplitude_weighted_fraction"):
        PhaseAmplitudeConfig(amplitude_weighted_fraction=1.5)
    with pytest.raises(UserError, match="coherence"):
        PhaseAmplitudeConfig(coherence=-1.0)
    process = build_process(PhaseAmplitudeConfig(steps=10))
    with pytest.raises(UserError, match="channels \\(phase, log amplitude\\)"):
        process.step(torch.zeros(2, 3, 8, 8), 0)
    with pytest.raises(UserError, match="flow data"):
        from kuramoto_diffusion.config import image_model_config

        image_model_config(PhaseAmplitudeConfig(), 1, 32, "tiny")
    with pytest.raises(UserError, match="must be finite and > 0"):
        FlowNormalisation(log_speed_std=0.0)
    assert isinstance(ModelConfig, type)


# ----- the command line: train, resume, sample, evaluate ------------------------------------------------------
@pytest.fixture(scope="module")
def flow_folder(tmp_path_factory):
    from kuramoto_diffusion.data.flow_generation import FlowSettings, generate_flows

    out = tmp_path_factory.mktemp("flow-model") / "data"
    generate_flows(out, 4, FlowSettings(size=16, frames=4, spinup_time=0.5, frame_interval=0.25, forcing_wavenumber=2))
    return out


@pytest.mark.parametrize("process", ["phase-amplitude", "euclidean"])
def test_cli_trains_resumes_samples_and_evaluates_a_flow_model(flow_folder, tmp_path, process):
    import json

    import numpy as np

    from kuramoto_diffusion.app.cli import main

    run = tmp_path / "run"
    common = [
        "--data",
        f"flows:{flow_folder}",
        "--preset",
        "tiny",
        "--steps",
        "10",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "3",
        "--out",
        str(run),
        "--quiet",
    ]
    if process == "euclidean":
        common += ["--process", "euclidean"]
    assert main(["train", *common, "--train-steps", "3"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--train-steps", "6", "--quiet"]) == 0
    model = DiffusionModel.from_pretrained(run)
    assert model.config.data_kind == "flow" and model.config.process.kind == process
    assert model.config.unet.padding_mode == "circular"  # the flow box is periodic
    # one network per field for phase-amplitude (measured better, BENCHMARKS.md); the baseline has one
    assert model.config.flow_networks == ("split" if process == "phase-amplitude" else "joint")
    if process == "phase-amplitude":
        assert model.config.process.neighbourhood == 4  # SPEC §7's M for flows
    samples, picture = tmp_path / "samples.npz", tmp_path / "fields.png"
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(run),
                "--num",
                "3",
                "--nfe",
                "5",
                "--out",
                str(samples),
                "--out-plot",
                str(picture),
                "--quiet",
            ]
        )
        == 0
    )
    with np.load(samples) as arrays:
        velocity = arrays["velocity"]
    assert velocity.shape == (3, 2, 16, 16) and velocity.dtype == np.float32 and np.isfinite(velocity).all()
    assert picture.stat().st_size > 0
    report = tmp_path / "metrics.json"
    assert (
        main(
            [
                "evaluate",
                "--real",
                f"flows:{flow_folder}",
                "--real-split",
                "all",
                "--fake",
                str(samples),
                "--num",
                "3",
                "--json",
                str(report),
                "--quiet",
            ]
        )
        == 0
    )
    metrics = json.loads(report.read_text())["metrics"]
    assert set(metrics) >= {"spectrum_log_mse", "vorticity_w1", "divergence_fake", "slope_difference"}
    # a set against itself is at the floor of every metric
    assert (
        main(
            [
                "evaluate",
                "--real",
                f"flows:{flow_folder}",
                "--real-split",
                "all",
                "--fake",
                str(flow_folder),
                "--num",
                "16",
                "--json",
                str(report),
                "--quiet",
            ]
        )
        == 0
    )
    same = json.loads(report.read_text())["metrics"]
    assert same["spectrum_log_mse"] < metrics["spectrum_log_mse"] and same["vorticity_w1"] < metrics["vorticity_w1"]
    # The model's own data: scored on the held-out split it trained with (seed 0), not --seed 4's.
    evaluate = ["evaluate", "--real", f"flows:{flow_folder}", "--checkpoint", str(run), "--num", "2", "--nfe", "2"]
    assert main([*evaluate, "--seed", "4", "--real-split", "all", "--json", str(report), "--quiet"]) == 0
    settings = json.loads(report.read_text())["settings"]
    assert (settings["split_seed"], settings["models_own_split"]) == (0, True)


# ----- forecasting -----------------------------------------------------------------------------------------------
def _forecasting_model(process=None, frames: int = 2) -> DiffusionModel:
    torch.manual_seed(0)
    process = process or PhaseAmplitudeConfig(steps=8)
    config = flow_model_config(
        process, 8, FlowNormalisation(log_speed_std=0.8, velocity_std=0.7), "tiny", context_frames=frames
    )
    model = DiffusionModel(config)
    model.network.double()
    with torch.no_grad():  # the output layer starts at zero: give every weight a value, so the condition matters
        for parameter in model.network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("process", [PhaseAmplitudeConfig(steps=8), EuclideanConfig(steps=8)])
def test_context_features_stack_the_frames_as_the_network_sees_states(process):
    model = _forecasting_model(process, frames=2)
    previous = torch.randn(3, 4, 2, 8, 8, dtype=torch.float64)  # 4 frames given: the last 2 are the context
    features = model.context_features(previous)
    width = model.config.backbone_channels
    assert features.shape == (3, 2 * width + 1, 8, 8) == (3, model.config.unet.condition_channels, 8, 8)
    for frame in range(2):
        states = model.encode(previous[:, 2 + frame])
        expected = (
            torch.cat([torch.cos(states[:, :1]), torch.sin(states[:, :1]), states[:, 1:]], 1)
            if model.config.periodic
            else states
        )
        assert torch.allclose(features[:, frame * width : (frame + 1) * width], expected)
    assert bool((features[:, -1] == 1).all())  # "context given"
    with pytest.raises(UserError, match="at least 2 frames"):
        model.context_features(previous[:, :1])


def test_context_guidance_combines_conditional_and_unconditional_scores():
    model = _forecasting_model()
    x = _states(batch=3, size=8)
    condition = model.context_features(torch.randn(3, 2, 2, 8, 8, dtype=torch.float64))
    conditional = model.score(x, 5, condition=condition)
    unconditional = model.score(x, 5, condition=torch.zeros_like(condition))
    assert not torch.allclose(conditional, unconditional)
    for weight in (0.0, 1.0, 2.5):
        guided = model.score(x, 5, condition=condition, guidance=weight)
        assert torch.allclose(guided, unconditional + weight * (conditional - unconditional), atol=1e-10)


def test_rollout_feeds_each_forecast_back_as_context(monkeypatch):
    model = _forecasting_model()
    seen = []

    def next_frame(history, **options):
        seen.append(history.clone())
        return history[:, -1] + 1.0

    monkeypatch.setattr(model, "forecast", next_frame)
    start = torch.stack([torch.full((2, 8, 8), float(k)) for k in range(2)])[None]  # frames 0, 1
    rollout = model.rollout(start, 3)
    assert rollout.shape == (1, 3, 2, 8, 8)
    assert [float(frame.mean()) for frame in rollout[0]] == [2.0, 3.0, 4.0]
    assert [[float(f.mean()) for f in h[0]] for h in seen] == [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]


def test_forecast_error_against_a_loop():
    from kuramoto_diffusion.metrics.flows import forecast_error

    generator = torch.Generator().manual_seed(7)
    forecast, truth = torch.randn(3, 4, 2, 8, 8, generator=generator), torch.randn(2, 2, 8, 8, generator=generator)
    errors = forecast_error(forecast, truth)
    assert len(errors) == 2
    for step in range(2):
        expected = sum(math.sqrt(float(((forecast[m, step] - truth[step]) ** 2).sum())) for m in range(3)) / 3
        assert math.isclose(errors[step], expected / math.sqrt(float((truth[step] ** 2).sum())), rel_tol=1e-6)
    assert forecast_error(truth[None], truth) == [0.0, 0.0]


class _CountingFlows:
    """Trajectories whose frame k is the constant field (k + 1, 0) of trajectory-specific sign pattern."""

    size, channels = 8, 2

    def sample_sequences(self, count, length, generator):
        starts = torch.randint(0, 5, (count,), generator=generator)
        frames = torch.stack([torch.arange(length) + start for start in starts]).to(torch.float32) + 1.0
        velocity = torch.zeros(count, length, 2, 8, 8)
        velocity[:, :, 0] = frames[:, :, None, None]
        return velocity

    def sample_batch(self, count, generator):
        return self.sample_sequences(count, 1, generator)[:, 0]


@pytest.mark.parametrize("process", [PhaseAmplitudeConfig(steps=8), EuclideanConfig(steps=8)])
def test_trainer_pairs_each_frame_with_the_frames_before_it_and_drops_contexts(tmp_path, process):
    from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig
    from kuramoto_diffusion.training import Trainer

    normalisation = FlowNormalisation(log_speed_mean=1.0, log_speed_std=1.0, velocity_std=1.0)
    config = RunConfig(
        model=flow_model_config(process, 8, normalisation, "tiny", context_frames=2),
        data=DataConfig(source="flows:unused", image_size=8, channels=2, flip=False),
        training=TrainConfig(
            train_steps=2,
            batch_size=4,
            checkpoint_every=1,
            sample_every=0,
            warmup_steps=0,
            class_dropout=0.25,
            fit_prior=False,
        ),
    )
    trainer = Trainer(config, _CountingFlows(), tmp_path / "run", quiet=True)
    targets, context = trainer.encoded_batch(64)
    velocity, _ = trainer.model.decode(targets)
    width = trainer.model.config.backbone_channels
    latest_context_speed = trainer.model.decode(
        context[:, width : 2 * width]
        if process.kind == "euclidean"
        else torch.cat(
            [
                torch.atan2(context[:, width + 1 : width + 2], context[:, width : width + 1]),
                context[:, width + 2 : width + 3],
            ],
            1,
        )
    )[0]
    # the target is the frame after the last context frame: speed one more
    assert torch.allclose(velocity[:, 0].mean((1, 2)), latest_context_speed[:, 0].mean((1, 2)) + 1.0, atol=1e-4)
    dropped = trainer.drop_conditions(context.repeat(200, 1, 1, 1))
    empty = (dropped.flatten(1).abs().sum(1) == 0).float()
    assert abs(float(empty.mean()) - 0.25) < 4 * math.sqrt(0.25 * 0.75 / empty.numel())
    trainer.start()
    trainer.train()
    if trainer.pool is not None:  # the context travels with its chain and resumes exactly
        resumed = Trainer.resume(tmp_path / "run", _CountingFlows(), quiet=True)
        assert torch.equal(resumed.pool.conditions, trainer.pool.conditions)


def test_cli_forecasts_a_rollout_and_scores_it(flow_folder, tmp_path):
    import numpy as np

    from kuramoto_diffusion.app.cli import main

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                f"flows:{flow_folder}",
                "--preset",
                "tiny",
                "--steps",
                "8",
                "--batch-size",
                "4",
                "--train-steps",
                "2",
                "--context-frames",
                "2",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    out, picture = tmp_path / "forecast.npz", tmp_path / "forecast.png"
    context = sorted(flow_folder.glob("trajectory_*.npz"))[0]
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(run),
                "--context",
                str(context),
                "--rollout",
                "2",
                "--num",
                "2",
                "--guidance",
                "1.5",
                "--nfe",
                "4",
                "--out",
                str(out),
                "--out-plot",
                str(picture),
                "--quiet",
            ]
        )
        == 0
    )
    with np.load(out) as arrays, np.load(context) as given:
        assert arrays["forecast"].shape == (2, 2, 2, 16, 16) and np.isfinite(arrays["forecast"]).all()
        assert np.array_equal(arrays["context"], given["velocity"][:2])
        assert np.array_equal(arrays["truth"], given["velocity"][2:4])
        assert arrays["relative_error"].shape == (2,) and (arrays["relative_error"] > 0).all()
    assert picture.stat().st_size > 0
    with pytest.raises(UserError, match="pass --context"):
        main(["sample", "--debug", "--checkpoint", str(run), "--out", str(out), "--quiet"])


class _DriftingFlows:
    """Random smooth periodic velocity fields that move one pixel to the right per frame: the next frame is a
    function of the previous ones, so a forecaster that uses its context must beat one that ignores it."""

    size, channels = 16, 2

    def __init__(self) -> None:
        from kuramoto_diffusion.data.navier_stokes import random_vorticity, velocity_from_vorticity

        generator = torch.Generator().manual_seed(0)
        vorticity = random_vorticity(16, generator, peak_wavenumber=2.0, velocity_rms=1.0, batch_shape=(64,))
        self.fields = velocity_from_vorticity(vorticity).to(torch.float32)

    def sample_sequences(self, count, length, generator):
        which = torch.randint(len(self.fields), (count,), generator=generator)
        shifts = torch.randint(16, (count,), generator=generator)
        return torch.stack(
            [
                torch.stack([torch.roll(self.fields[w], int(s) + k, dims=-1) for k in range(length)])
                for w, s in zip(which, shifts)
            ]
        )

    def sample_batch(self, count, generator):
        return self.sample_sequences(count, 1, generator)[:, 0]


@pytest.mark.slow
@pytest.mark.parametrize("process", [EuclideanConfig(steps=20), PhaseAmplitudeConfig(steps=20, neighbourhood=3)])
def test_a_trained_forecaster_uses_its_context(tmp_path, process):
    from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig
    from kuramoto_diffusion.metrics.flows import forecast_error
    from kuramoto_diffusion.training import Trainer

    source = _DriftingFlows()
    normalisation = FlowNormalisation.measure(source.sample_batch(256, torch.Generator().manual_seed(1)))
    config = RunConfig(
        model=flow_model_config(process, 16, normalisation, "tiny", context_frames=2),
        data=DataConfig(source="flows:unused", image_size=16, channels=2, flip=False),
        training=TrainConfig(
            train_steps=600,
            batch_size=32,
            lr=1e-3,
            warmup_steps=50,
            ema_decay=0.99,
            checkpoint_every=10**6,
            sample_every=0,
            log_every=100,
            class_dropout=0.1,
        ),
    )
    trainer = Trainer(config, source, tmp_path / "run", quiet=True)
    trainer.start()
    model = trainer.train()
    sequences = source.sample_sequences(8, 3, torch.Generator().manual_seed(2))
    errors = {}
    for guidance in (0.0, 1.0):
        forecast = model.forecast(sequences[:, :2], guidance=guidance, generator=torch.Generator().manual_seed(3))
        errors[guidance] = sum(forecast_error(forecast[i, None, None], sequences[i, 2:])[0] for i in range(8)) / 8
    assert errors[1.0] < 0.7 * errors[0.0], errors


# ----- one network per field ----------------------------------------------------------------------------------------
def test_split_networks_are_periodic_tangent_and_each_sees_the_other_field():
    from kuramoto_diffusion.model import build_network
    from kuramoto_diffusion.nets.score import SplitScoreNetwork

    config = flow_model_config(PhaseAmplitudeConfig(steps=8), 8, FlowNormalisation(), "tiny", networks="split")
    torch.manual_seed(0)
    network = build_network(config).double()
    assert isinstance(network, SplitScoreNetwork)
    with torch.no_grad():  # the output layers start at zero
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    x, time = _states(size=8), torch.full((2,), 0.3, dtype=torch.float64)
    output = network(x, time)
    shifted = x.clone()
    shifted[:, 0] += 2 * math.pi
    assert torch.allclose(network(shifted, time), output, atol=1e-10)
    circle = torch.cat([torch.cos(x[:, :1]), torch.sin(x[:, :1])], dim=1)
    raw = network.phase_backbone(circle, time, x[:, 1:])
    assert torch.allclose(output[:, :1], -raw[:, :1] * torch.sin(x[:, :1]) + raw[:, 1:] * torch.cos(x[:, :1]))
    other_speed, other_direction = x.clone(), x.clone()
    other_speed[:, 1] += 1.0
    other_direction[:, 0] += 0.5
    assert not torch.allclose(network(other_speed, time)[:, :1], output[:, :1])  # the phase score sees the speed
    assert not torch.allclose(network(other_direction, time)[:, 1:], output[:, 1:])  # the speed score sees the phase
    with pytest.raises(UserError, match="split"):
        flow_model_config(EuclideanConfig(steps=8), 8, FlowNormalisation(), "tiny", networks="split")


def test_cli_trains_split_networks_and_refuses_them_elsewhere(flow_folder, tmp_path):
    from kuramoto_diffusion.app.cli import main

    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                f"flows:{flow_folder}",
                "--preset",
                "tiny",
                "--steps",
                "8",
                "--batch-size",
                "4",
                "--train-steps",
                "2",
                "--flow-networks",
                "split",
                "--context-frames",
                "2",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    model = DiffusionModel.from_pretrained(run)
    assert model.config.flow_networks == "split"
    context = sorted(flow_folder.glob("trajectory_*.npz"))[0]
    assert (
        main(
            [
                "sample",
                "--checkpoint",
                str(run),
                "--context",
                str(context),
                "--nfe",
                "3",
                "--num",
                "1",
                "--out",
                str(tmp_path / "f.npz"),
                "--quiet",
            ]
        )
        == 0
    )
    with pytest.raises(UserError, match="--flow-networks split is for phase-amplitude"):
        main(
            [
                "train",
                "--debug",
                "--data",
                f"flows:{flow_folder}",
                "--process",
                "euclidean",
                "--flow-networks",
                "split",
                "--out",
                str(tmp_path / "other"),
                "--quiet",
            ]
        )
