"""Each diffusers scheduler convention that ``KuramotoDiffusersScheduler`` claims, checked one by one.

Modelled on the checks of diffusers' ``SchedulerCommonTest`` (tests/schedulers/test_schedulers.py):
save/load, from_config, loading kwargs, return_dict, generator determinism, timestep dtype and
device, ``__len__``, ``num_inference_steps`` and custom ``timesteps``; plus the README's loop, run
as written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.processes import KuramotoConfig
from kuramoto_diffusion.sampling.diffusers import HUB_LOADING_KWARGS, KuramotoDiffusersScheduler
from kuramoto_diffusion.sampling.scheduler import SCHEDULER_SAMPLERS, DiffusionScheduler
from kuramoto_diffusion.sampling.steps import probability_flow_step
from kuramoto_diffusion.sampling.sweep import sweep_grid

ROOT = Path(__file__).resolve().parents[2]
STEPS = 12
PROCESS = KuramotoConfig(coupling="local", neighbourhood=3, steps=STEPS)
SHAPE = (2, 1, 6, 6)


def scheduler(sampler: str = "sde") -> KuramotoDiffusersScheduler:
    return KuramotoDiffusersScheduler(process=PROCESS, sampler=sampler)


def fake_output(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for a network: smooth in x, depends on t."""
    return 0.3 * torch.sin(x + 0.1 * float(t))


def public(config) -> dict:  # noqa: ANN001 - a diffusers FrozenDict
    """The config without diffusers' bookkeeping entries (``_class_name``, ``_use_default_values``, …)."""
    return {key: value for key, value in config.items() if not key.startswith("_")}


def run_loop(each: KuramotoDiffusersScheduler, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = each.init_noise_sample(SHAPE, generator=generator)
    for t in each.timesteps:
        x = each.step(fake_output(x, t), t, x, generator=generator).prev_sample
    return x


# ----- loading ----------------------------------------------------------------------------------
def test_from_pretrained_accepts_diffusers_loading_kwargs(tmp_path):
    original = scheduler("ode")
    original.save_pretrained(tmp_path / "pipe" / "scheduler")
    loading = {
        "local_files_only": True,
        "cache_dir": str(tmp_path / "cache"),
        "revision": "main",
        "token": None,
        "proxies": None,
        "force_download": False,
    }
    assert set(loading) <= HUB_LOADING_KWARGS
    loaded = KuramotoDiffusersScheduler.from_pretrained(tmp_path / "pipe", subfolder="scheduler", **loading)
    assert public(loaded.config) == public(original.config)
    assert not (tmp_path / "cache").exists()  # nothing fetched or cached
    # A config entry given as a keyword overrides the file, as in diffusers' from_config.
    assert (
        KuramotoDiffusersScheduler.from_pretrained(
            tmp_path / "pipe", subfolder="scheduler", sampler="sde"
        ).config.sampler
        == "sde"
    )
    loaded, unused = KuramotoDiffusersScheduler.from_pretrained(
        tmp_path / "pipe" / "scheduler", return_unused_kwargs=True
    )
    assert isinstance(loaded, KuramotoDiffusersScheduler) and public(unused) == {}


def test_from_pretrained_refuses_the_hub_and_unknown_kwargs(tmp_path):
    scheduler().save_pretrained(tmp_path)
    with pytest.raises(UserError, match="force_download=True asks for a download"):
        KuramotoDiffusersScheduler.from_pretrained(tmp_path, force_download=True)
    with pytest.raises(UserError, match="no scheduler_config.json here; point to a local folder"):
        KuramotoDiffusersScheduler.from_pretrained("someone/some-model", local_files_only=False)
    with pytest.raises(UserError, match=r"unknown key\(s\) colour"):
        KuramotoDiffusersScheduler.from_pretrained(tmp_path, colour="blue")


def test_from_config_round_trip_gives_the_same_samples():
    original = scheduler("ode-heun")
    copy = KuramotoDiffusersScheduler.from_config(original.config)
    for each in (original, copy):
        each.set_timesteps(7)
    assert torch.equal(run_loop(original, 0), run_loop(copy, 0))


# ----- the grid ------------------------------------------------------------------------------------
def test_len_is_the_number_of_training_timesteps():
    assert len(scheduler()) == scheduler().config.num_train_timesteps == STEPS
    assert len(DiffusionScheduler(PROCESS)) == STEPS


@pytest.mark.parametrize("sampler", SCHEDULER_SAMPLERS)
def test_num_inference_steps_is_exactly_the_network_evaluations(sampler):
    each = scheduler(sampler)
    valid = range(1, 2 * STEPS, 2) if sampler == "ode-heun" else range(1, STEPS + 1)
    for n in valid:
        each.set_timesteps(n)
        assert each.num_inference_steps == len(each.timesteps) == n
        assert each.timesteps.dtype == torch.long
        calls = 0
        x = torch.zeros(SHAPE)
        for t in each.timesteps:
            calls += 1
            x = each.step(fake_output(x, t), t, x, generator=torch.Generator().manual_seed(0)).prev_sample
        assert calls == n


@pytest.mark.parametrize(
    "sampler,n,message",
    [
        (
            "sde",
            STEPS + 1,
            rf"num_inference_steps = {STEPS + 1} is more than a sde sweep from step {STEPS} can spend \({STEPS} evaluations\)",
        ),
        ("ode", 200, r"more than a ode sweep"),
        ("ode-heun", 2 * STEPS + 1, rf"use at most {2 * STEPS - 1}"),
        ("ode-heun", 6, r"num_inference_steps is 2k − 1 for k intervals; got 6: use 5 or 7"),
        ("sde", 0, r"num_inference_steps must be an integer ≥ 1 \(network evaluations\), got 0"),
        ("sde", 2.5, r"must be an integer ≥ 1"),
    ],
)
def test_num_inference_steps_that_the_sweep_cannot_spend_raise(sampler, n, message):
    with pytest.raises(UserError, match=message) as error:
        scheduler(sampler).set_timesteps(n)
    assert "--" not in str(error.value)  # a library error names no command-line flag


def test_start_step_bounds_num_inference_steps_too():
    each = scheduler("sde")
    each.set_timesteps(5, start_step=5)
    assert each.timesteps.tolist() == [5, 4, 3, 2, 1]
    with pytest.raises(UserError, match="from step 5 can spend"):
        each.set_timesteps(6, start_step=5)


def test_timesteps_live_on_the_requested_device():
    each = scheduler()
    each.set_timesteps(4, device="cpu")
    assert each.timesteps.device == torch.device("cpu")
    each.set_timesteps(4, device="meta")
    assert each.timesteps.device.type == "meta"


@pytest.mark.parametrize("sampler", SCHEDULER_SAMPLERS)
def test_custom_timesteps_of_the_default_grid_give_the_same_samples(sampler):
    by_count, by_grid = scheduler(sampler), scheduler(sampler)
    by_count.set_timesteps(5)
    grid = sweep_grid(by_count.process, sampler, 5)
    by_grid.set_timesteps(timesteps=grid[:-1])
    assert torch.equal(by_count.timesteps, by_grid.timesteps)
    assert by_grid.num_inference_steps == len(by_grid.timesteps)
    assert torch.equal(run_loop(by_count, 1), run_loop(by_grid, 1))


def test_custom_timesteps_step_between_the_given_steps():
    each = scheduler("ode")
    each.set_timesteps(timesteps=torch.tensor([12, 7, 3]))
    assert each.timesteps.tolist() == [12, 7, 3]
    x = each.init_noise_sample(SHAPE, generator=torch.Generator().manual_seed(2)).double()
    output = fake_output(x, torch.tensor(12))
    process = each.process
    score = process.constrain_score(x, 12, output / process.output_scale(12, like=x))
    expected, _ = probability_flow_step(
        process.probability_flow(lambda state, step: score, 12, 7), x, 12, 7, second_order=False
    )
    assert torch.equal(each.step(output, 12, x).prev_sample, expected)
    heun = scheduler("ode-heun")
    heun.set_timesteps(timesteps=[12, 7, 3])
    assert heun.timesteps.tolist() == [12, 7, 7, 3, 3] and heun.num_inference_steps == 5


@pytest.mark.parametrize(
    "timesteps,extra",
    [
        ([3, 7], {}),
        ([12, 12, 3], {}),
        ([13, 5], {}),
        ([5, 0], {}),
        ([], {}),
        ([5.0, 2.0], {}),
        (torch.tensor([5.0, 2.0]), {}),
        ([5, 2], {"num_inference_steps": 2}),
    ],
)
def test_bad_custom_timesteps_raise(timesteps, extra):
    with pytest.raises(UserError, match=r"strictly decreasing integer steps in 1…12|either num_inference_steps"):
        scheduler().set_timesteps(timesteps=timesteps, **extra)


@pytest.mark.parametrize("timestep", [0, STEPS + 1, 5])
def test_step_off_the_grid_names_the_grid_before_computing_anything(timestep):
    each = scheduler()
    each.set_timesteps(3)  # grid 12, 8, 4, 0
    x = torch.zeros(SHAPE)
    with pytest.raises(UserError) as error:
        each.step(torch.zeros(SHAPE), timestep, x)
    assert str(error.value) == (
        f"timestep {timestep} is not on this scheduler's grid [12, 8, 4, 0] (0 is its end, where no step starts); "
        "use the values of scheduler.timesteps"
    )


def test_step_before_set_timesteps_says_what_to_call():
    with pytest.raises(UserError, match=r"call set_timesteps\(num_inference_steps\) before step\(\)"):
        scheduler().step(torch.zeros(SHAPE), 5, torch.zeros(SHAPE))


# ----- stepping ---------------------------------------------------------------------------------
def test_step_is_deterministic_given_the_generator_and_return_dict_false_is_a_tuple():
    each = scheduler("sde")
    each.set_timesteps(4)
    assert torch.equal(run_loop(each, 3), run_loop(each, 3))
    assert not torch.equal(run_loop(each, 3), run_loop(each, 4))
    x = torch.zeros(SHAPE)
    t = each.timesteps[0]
    as_tuple = each.step(fake_output(x, t), t, x, generator=torch.Generator().manual_seed(5), return_dict=False)
    as_output = each.step(fake_output(x, t), t, x, generator=torch.Generator().manual_seed(5))
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and torch.equal(as_tuple[0], as_output.prev_sample)
    assert each.scale_model_input(x, t) is x  # the states unchanged
    assert each.order == 1 and scheduler("ode-heun").order == 2


def test_the_assumptions_that_do_not_apply_are_refused_not_ignored():
    each = scheduler()
    with pytest.raises(UserError, match="add_noise takes noise=None"):
        each.add_noise(torch.zeros(SHAPE), torch.randn(SHAPE), 3)
    each.set_timesteps(3)
    with pytest.raises(UserError, match="timestep must be an integer step"):
        each.step(torch.zeros(SHAPE), torch.tensor(8.0), torch.zeros(SHAPE))
    with pytest.raises(UserError, match=r"unknown key\(s\) trained_betas"):
        KuramotoDiffusersScheduler.from_config({**each.config, "trained_betas": [0.1] * STEPS})


# ----- the README's loop, as written --------------------------------------------------------------
def readme_block(marker: str) -> str:
    """The python block after ``<!-- marker -->`` in the README or a docs/ page (the loop is in docs/api.md)."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        found = re.search(rf"<!-- {marker} -->\n```python\n(.*?)```", page.read_text(), flags=re.S)
        if found:
            return found.group(1)
    raise AssertionError(f"neither the README nor a docs/ page has a python block after <!-- {marker} -->")


def test_readme_diffusers_loop_runs_as_written(tmp_path, monkeypatch):
    from diffusers import UNet2DModel

    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_block("readme-diffusers-loop"), "README.md", "exec"), namespace)  # noqa: S102
    images = namespace["images"]
    assert isinstance(images, torch.Tensor) and images.shape == (4, 1, 16, 16)
    assert bool(torch.isfinite(images).all()) and float(images.abs().max()) <= 1.0
    assert len(namespace["scheduler"]) == 100 and namespace["scheduler"].num_inference_steps is None
    assert (tmp_path / "my-pipeline" / "scheduler" / "scheduler_config.json").is_file()
    assert isinstance(namespace["unet"], UNet2DModel)
    assert sorted(os.listdir(tmp_path / "my-pipeline" / "unet")) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
