"""The diffusers-style scheduler: same samples as reverse_sweep, strict config files, forward noising."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kuramoto_diffusion.config import image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig, ProcessConfig
from kuramoto_diffusion.sampling.scheduler import (
    SCHEDULER_CONFIG_NAME,
    SCHEDULER_SAMPLERS,
    DiffusionScheduler,
    KuramotoScheduler,
    SchedulerOutput,
)
from kuramoto_diffusion.sampling.sweep import reverse_sweep

STEPS = 20  # T of the test processes; every test samples with fewer evaluations than T
PROCESSES: dict[str, ProcessConfig] = {
    "kuramoto-local": KuramotoConfig(coupling="local", neighbourhood=3, steps=STEPS),
    "kuramoto-global": KuramotoConfig(coupling="global", steps=STEPS),
    "euclidean": EuclideanConfig(steps=STEPS),
}


def _model(process: ProcessConfig) -> DiffusionModel:
    torch.manual_seed(0)
    model = DiffusionModel(image_model_config(process, 1, 8, "tiny"))
    model.network.eval()
    return model


def _scheduler_loop(
    model: DiffusionModel, scheduler: DiffusionScheduler, x: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The diffusers-style loop: one network call and one ``step`` per entry of ``timesteps``."""
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = model.network(scheduler.scale_model_input(x, t), scheduler.network_time(t, x))
            x = scheduler.step(output, t, x, generator=generator).prev_sample
    return x


@pytest.mark.parametrize("sampler", SCHEDULER_SAMPLERS)
@pytest.mark.parametrize("name", list(PROCESSES))
def test_step_loop_equals_reverse_sweep_float64(name, sampler):
    model = _model(PROCESSES[name])
    model.network.double()
    scheduler = DiffusionScheduler(PROCESSES[name], sampler=sampler)
    nfe = 7
    scheduler.set_timesteps(nfe)
    x_start = scheduler.init_noise_sample((3, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    expected = reverse_sweep(
        model.process, model.score, x_start, sampler=sampler, nfe=nfe, generator=torch.Generator().manual_seed(2)
    )
    got = _scheduler_loop(model, scheduler, x_start, torch.Generator().manual_seed(2))

    assert got.dtype == torch.float64
    assert torch.equal(got, expected.states)
    steps = scheduler.timesteps.tolist()
    assert len(steps) == expected.function_evaluations <= nfe
    assert steps[0] == STEPS and 0 not in steps
    assert sorted(set(steps), reverse=True) == expected.steps[:-1]  # the same grid, without the final 0
    assert all(a >= b for a, b in zip(steps, steps[1:]))
    assert scheduler.order == (2 if sampler == "ode-heun" else 1)


def test_step_loop_equals_model_sample_with_prior_draw():
    process = PROCESSES["kuramoto-local"]
    model = _model(process)
    expected = model.sample(4, sampler="sde", nfe=9, generator=torch.Generator().manual_seed(5)).states

    scheduler = KuramotoScheduler(process, sampler="sde")
    scheduler.set_timesteps(9)
    generator = torch.Generator().manual_seed(5)
    x = scheduler.init_noise_sample(model.config.state_shape(4), generator=generator)
    assert torch.equal(_scheduler_loop(model, scheduler, x, generator), expected)


@pytest.mark.parametrize("name", ["kuramoto-local", "euclidean"])
def test_add_noise_then_loop_equals_forward_then_reverse(name):
    model = _model(PROCESSES[name])
    data = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    start = 12
    expected = model.forward_then_reverse(data, start, nfe=5, generator=torch.Generator().manual_seed(4)).states

    scheduler = DiffusionScheduler(PROCESSES[name], sampler="sde")
    scheduler.set_timesteps(5, start_step=start)
    assert scheduler.timesteps[0] == start
    generator = torch.Generator().manual_seed(4)
    x = scheduler.add_noise(model.encode(data), start, generator=generator)
    assert torch.equal(_scheduler_loop(model, scheduler, x, generator), expected)


def test_add_noise_kuramoto_is_the_simulated_chain():
    scheduler = KuramotoScheduler(PROCESSES["kuramoto-global"])
    theta0 = torch.rand(5, 1, 8, 8, dtype=torch.float64) * 2 - 1
    expected = scheduler.process.simulate(theta0, 7, generator=torch.Generator().manual_seed(0))
    per_example = torch.full((5,), 7, dtype=torch.long)
    got = scheduler.add_noise(theta0, per_example, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, expected)
    assert torch.equal(scheduler.add_noise(theta0, 0), theta0)
    with pytest.raises(UserError, match="share one timestep"):
        scheduler.add_noise(theta0, torch.tensor([1, 2, 3, 4, 5]))
    with pytest.raises(UserError, match="integer step"):
        scheduler.add_noise(theta0, torch.randn(5))  # a diffusers-style noise tensor is not a timestep


def test_add_noise_euclidean_has_the_closed_form_marginal():
    scheduler = DiffusionScheduler(PROCESSES["euclidean"])
    process = scheduler.process
    t, x0_value, count = 9, 0.5, 400_000
    x0 = torch.full((count // 4, 4), x0_value, dtype=torch.float64)
    noisy = scheduler.add_noise(x0, t, generator=torch.Generator().manual_seed(0))
    alpha_bar = math.exp(-float(process._cumulative_beta[t]))
    variance = 1 - alpha_bar
    assert process.marginal_variance(t, 0.0) == pytest.approx(variance)
    assert float(noisy.mean()) == pytest.approx(math.sqrt(alpha_bar) * x0_value, abs=5 * math.sqrt(variance / count))
    assert float(noisy.var()) == pytest.approx(variance, rel=5 * math.sqrt(2 / count))


def test_step_returns_a_tuple_without_return_dict():
    scheduler = DiffusionScheduler(PROCESSES["euclidean"], sampler="ode")
    scheduler.set_timesteps(4)
    x = torch.randn(2, 1, 8, 8)
    t = scheduler.timesteps[0]
    as_output = scheduler.step(torch.ones_like(x), t, x)
    as_tuple = scheduler.step(torch.ones_like(x), t, x, return_dict=False)
    assert isinstance(as_output, SchedulerOutput) and isinstance(as_tuple, tuple) and len(as_tuple) == 1
    assert torch.equal(as_output.prev_sample, as_tuple[0])
    assert torch.equal(scheduler.scale_model_input(x, t), x)


def test_step_misuse_is_a_user_error():
    scheduler = DiffusionScheduler(PROCESSES["kuramoto-global"], sampler="ode-heun")
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(UserError, match="set_timesteps"):
        scheduler.step(x, STEPS, x)
    scheduler.set_timesteps(7)
    with pytest.raises(UserError, match="not on this scheduler's grid"):
        scheduler.step(x, STEPS - 1, x)
    with pytest.raises(UserError, match="must match"):
        scheduler.step(x[:1], STEPS, x)
    first, second = scheduler.timesteps[:2].tolist()
    predictor = scheduler.step(x, first, x).prev_sample
    with pytest.raises(UserError, match=f"expects timestep {second}"):
        scheduler.step(x, first, predictor)
    with pytest.raises(UserError, match="valid values are sde, ode, ode-heun"):
        DiffusionScheduler(PROCESSES["euclidean"], sampler="ddim")
    with pytest.raises(UserError, match="needs a KuramotoConfig"):
        KuramotoScheduler(PROCESSES["euclidean"])


@pytest.mark.parametrize("cls,name", [(KuramotoScheduler, "kuramoto-local"), (DiffusionScheduler, "euclidean")])
def test_save_load_round_trip(tmp_path, cls, name):
    scheduler = cls(PROCESSES[name], sampler="ode-heun")
    scheduler.save_pretrained(tmp_path / "scheduler")
    written = json.loads((tmp_path / "scheduler" / SCHEDULER_CONFIG_NAME).read_text())
    assert written["_class_name"] == cls.__name__ and written["sampler"] == "ode-heun"

    loaded = cls.from_pretrained(tmp_path / "scheduler")
    assert type(loaded) is cls and loaded.config == scheduler.config
    scheduler.set_timesteps(9)
    loaded.set_timesteps(9)
    assert torch.equal(loaded.timesteps, scheduler.timesteps)


def _write_config(directory, edit):
    KuramotoScheduler(PROCESSES["kuramoto-local"]).save_pretrained(directory)
    path = directory / SCHEDULER_CONFIG_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit,cls,message",
    [
        (lambda d: d.update(_class_name="DDPMScheduler"), KuramotoScheduler, "_class_name is 'DDPMScheduler'"),
        (lambda d: None, DiffusionScheduler, "_class_name is 'KuramotoScheduler'"),
        (lambda d: d.pop("_class_name"), KuramotoScheduler, "_class_name is None"),
        (lambda d: d.update(beta_schedule="linear"), KuramotoScheduler, "unknown key"),
        (lambda d: d["process"].update(stepz=100), KuramotoScheduler, "unknown key"),
        (lambda d: d["process"].update(steps="100"), KuramotoScheduler, "process.steps: expected an integer"),
        (lambda d: d.update(sampler=3), KuramotoScheduler, "sampler: expected a string"),
        (lambda d: d.update(sampler="dpm"), KuramotoScheduler, "valid values are sde"),
        (lambda d: d.update(process={"kind": "euclidean"}), KuramotoScheduler, "needs a KuramotoConfig"),
    ],
)
def test_bad_config_file_is_a_one_line_user_error(tmp_path, edit, cls, message):
    _write_config(tmp_path, edit)
    with pytest.raises(UserError, match=message) as caught:
        cls.from_pretrained(tmp_path)
    text = str(caught.value)
    assert SCHEDULER_CONFIG_NAME in text and "\n" not in text


def test_missing_config_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=f"{SCHEDULER_CONFIG_NAME}: file not found"):
        DiffusionScheduler.from_pretrained(tmp_path)
