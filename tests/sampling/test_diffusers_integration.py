"""The diffusers integration: a SchedulerMixin that samples exactly like KuramotoScheduler, a periodic UNet2DModel.

diffusers is the ``diffusers`` extra, installed by ``make install``; without it this file fails to
import (on purpose: these tests must not be skipped silently).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import diffusers
import pytest
import torch

import kuramoto_diffusion
from kuramoto_diffusion.config import image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.nets.score import ScoreNetwork
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.sampling.diffusers import KuramotoDiffusersScheduler, PeriodicUNet2DWrapper
from kuramoto_diffusion.sampling.scheduler import SCHEDULER_CONFIG_NAME, SCHEDULER_SAMPLERS, KuramotoScheduler
from kuramoto_diffusion.sampling.sweep import reverse_sweep
from kuramoto_diffusion.serialization import config_to_dict

STEPS = 20
PROCESS = KuramotoConfig(coupling="local", neighbourhood=3, steps=STEPS)
SHAPE = (3, 1, 8, 8)


def _wrapped_unet(in_channels: int = 2, out_channels: int = 2) -> PeriodicUNet2DWrapper:
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=out_channels,
        block_out_channels=(16, 32),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    return PeriodicUNet2DWrapper(unet).eval()


def _loop(network: ScoreNetwork, scheduler, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The diffusers-style loop, the same code for both scheduler classes."""
    with torch.no_grad():
        for t in scheduler.timesteps:
            output = network(scheduler.scale_model_input(x, t), scheduler.network_time(t, x))
            x = scheduler.step(output, t, x, generator=generator).prev_sample
    return x


def _public(config) -> dict:
    return {key: value for key, value in config.items() if not key.startswith("_")}


def test_is_a_diffusers_scheduler_with_a_complete_config():
    scheduler = KuramotoDiffusersScheduler(process=config_to_dict(PROCESS), sampler="ode-heun")
    assert isinstance(scheduler, diffusers.SchedulerMixin) and isinstance(scheduler, diffusers.ConfigMixin)
    assert scheduler.config.num_train_timesteps == STEPS
    assert scheduler.config.process == config_to_dict(PROCESS)
    assert scheduler.config.sampler == "ode-heun"
    assert scheduler.init_noise_sigma == 1.0 and scheduler.order == 2
    # A KuramotoConfig, a partial dict and None all end up as the full JSON dict. A dict without
    # phase_range is a file written before it was a setting: it keeps the paper's 0.9π, not the default.
    assert KuramotoDiffusersScheduler(process=PROCESS).config.process == config_to_dict(PROCESS)
    partial = KuramotoDiffusersScheduler(process={"steps": STEPS}).config.process
    assert partial == config_to_dict(KuramotoConfig(steps=STEPS, phase_range=0.9 * math.pi))
    assert KuramotoConfig().phase_range != 0.9 * math.pi  # else the line above tells nothing
    assert KuramotoDiffusersScheduler().config.num_train_timesteps == KuramotoConfig().steps


@pytest.mark.parametrize("sampler", SCHEDULER_SAMPLERS)
def test_loop_equals_kuramoto_scheduler_and_reverse_sweep(sampler):
    network = _wrapped_unet()
    model = DiffusionModel(image_model_config(PROCESS, 1, 8, "tiny"), network=network)
    ours = KuramotoScheduler(PROCESS, sampler=sampler)
    theirs = KuramotoDiffusersScheduler(process=config_to_dict(PROCESS), sampler=sampler)
    nfe = 7
    ours.set_timesteps(nfe)
    theirs.set_timesteps(nfe)
    assert torch.equal(theirs.timesteps, ours.timesteps) and theirs.num_inference_steps == nfe
    x_start = theirs.init_noise_sample(SHAPE, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x_start, ours.init_noise_sample(SHAPE, generator=torch.Generator().manual_seed(1)))

    got = _loop(network, theirs, x_start, torch.Generator().manual_seed(2))
    assert torch.equal(got, _loop(network, ours, x_start, torch.Generator().manual_seed(2)))
    expected = reverse_sweep(
        model.process, model.score, x_start, sampler=sampler, nfe=nfe, generator=torch.Generator().manual_seed(2)
    )
    assert torch.equal(got, expected.states)


def test_step_returns_diffusers_output_or_tuple():
    scheduler = KuramotoDiffusersScheduler(process=PROCESS, sampler="ode")
    scheduler.set_timesteps(4, device="cpu")
    x = torch.zeros(SHAPE)
    t = scheduler.timesteps[0]
    as_output = scheduler.step(torch.ones_like(x), t, x)
    as_tuple = scheduler.step(torch.ones_like(x), t, x, return_dict=False)
    assert isinstance(as_output, diffusers.schedulers.scheduling_utils.SchedulerOutput)
    assert isinstance(as_tuple, tuple) and torch.equal(as_output.prev_sample, as_tuple[0])
    assert torch.equal(scheduler.scale_model_input(x, t), x)


def test_save_pretrained_from_pretrained_round_trip(tmp_path):
    scheduler = KuramotoDiffusersScheduler(process=PROCESS, sampler="sde")
    scheduler.save_pretrained(tmp_path)
    written = json.loads((tmp_path / SCHEDULER_CONFIG_NAME).read_text())
    assert written["_class_name"] == "KuramotoDiffusersScheduler"
    assert written["_diffusers_version"] == diffusers.__version__
    assert written["process"] == config_to_dict(PROCESS) and written["num_train_timesteps"] == STEPS

    loaded = KuramotoDiffusersScheduler.from_pretrained(tmp_path)
    assert type(loaded) is KuramotoDiffusersScheduler
    assert _public(loaded.config) == _public(scheduler.config)
    assert _public(KuramotoDiffusersScheduler.from_config(scheduler.config).config) == _public(scheduler.config)

    network = _wrapped_unet()
    samples = []
    for each in (scheduler, loaded):
        each.set_timesteps(5)
        generator = torch.Generator().manual_seed(3)
        samples.append(_loop(network, each, each.init_noise_sample(SHAPE, generator=generator), generator))
    assert torch.equal(samples[0], samples[1])


def _edited_config(directory: Path, edit) -> None:
    KuramotoDiffusersScheduler(process=PROCESS).save_pretrained(directory)
    path = directory / SCHEDULER_CONFIG_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.update(beta_schedule="linear"), "unknown key.*beta_schedule"),
        (lambda d: d.update(_class_name="DDPMScheduler"), "_class_name is 'DDPMScheduler'"),
        (lambda d: d["process"].update(stepz=100), "unknown key.*stepz"),
        (lambda d: d["process"].update(steps="100"), "process.steps: expected an integer"),
        (lambda d: d.update(num_train_timesteps=1000), "num_train_timesteps is 1000 but the process has steps = 20"),
        (lambda d: d.update(sampler="dpm"), "valid values are sde"),
        (lambda d: d.update(process=config_to_dict(EuclideanConfig())), "needs a Kuramoto process"),
    ],
)
def test_bad_config_file_is_a_one_line_user_error(tmp_path, edit, message):
    _edited_config(tmp_path, edit)
    with pytest.raises(UserError, match=message) as caught:
        KuramotoDiffusersScheduler.from_pretrained(tmp_path)
    assert "\n" not in str(caught.value)


def test_misuse_is_a_clear_error():
    scheduler = KuramotoDiffusersScheduler(process=PROCESS)
    x0 = torch.zeros(SHAPE)
    with pytest.raises(UserError, match="noise=None"):
        scheduler.add_noise(x0, torch.randn(SHAPE), 5)
    assert torch.equal(
        scheduler.add_noise(x0, None, 5, generator=torch.Generator().manual_seed(0)),
        scheduler.scheduler.add_noise(x0, 5, generator=torch.Generator().manual_seed(0)),
    )
    with pytest.raises(UserError, match="unknown key.*sampelr"):
        KuramotoDiffusersScheduler.from_config(scheduler.config, sampelr="ode")
    with pytest.raises(TypeError):
        KuramotoDiffusersScheduler(process=PROCESS, sampelr="ode")  # type: ignore[call-arg]
    with pytest.raises(UserError, match="process must be a JSON object"):
        KuramotoDiffusersScheduler(process="kuramoto")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="out_channels = 2C"):
        _wrapped_unet(in_channels=2, out_channels=1)
    with pytest.raises(UserError, match="in_channels = 4 but gets 2 channels"):
        _wrapped_unet(in_channels=4, out_channels=2)(torch.zeros(SHAPE), torch.zeros(3))


def test_wrapper_is_the_tangent_projection_of_the_unet_at_1000_t_over_T():
    network = _wrapped_unet()
    theta = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) * 2 * math.pi - math.pi
    time = torch.tensor([0.05, 0.5, 1.0])
    with torch.no_grad():
        output = network(theta, time)
        a, b = network.unet(torch.cat([theta.cos(), theta.sin()], dim=1), 1000 * time).sample.chunk(2, dim=1)
        shifted = network(theta + 2 * math.pi, time)
    assert torch.allclose(output, -a * theta.sin() + b * theta.cos(), atol=1e-6)
    assert torch.allclose(output, shifted, atol=1e-4)  # periodic in θ


def test_missing_diffusers_is_a_one_line_user_error(monkeypatch):
    # A fresh import of the module with diffusers and its submodules blocked (the module imports from the
    # defining submodules); monkeypatch puts the real modules back afterwards.
    for name in [name for name in sys.modules if name == "diffusers" or name.startswith("diffusers.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    monkeypatch.delitem(sys.modules, "kuramoto_diffusion.sampling.diffusers")
    with pytest.raises(
        UserError, match=r"pip install diffusers \(or pip install kuramoto-diffusion\[diffusers\]\)"
    ) as caught:
        importlib.import_module("kuramoto_diffusion.sampling.diffusers")
    assert "\n" not in str(caught.value)


def test_only_the_integration_module_imports_diffusers():
    package = Path(kuramoto_diffusion.__file__).parent
    importing = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if any(
            line.lstrip().startswith(("import diffusers", "from diffusers"))
            for line in path.read_text(encoding="utf-8").splitlines()
        )
    )
    assert importing == ["sampling/diffusers.py"]


def test_from_pretrained_never_reaches_for_the_hub(tmp_path):
    from kuramoto_diffusion.sampling.diffusers import KuramotoDiffusersScheduler

    with pytest.raises(UserError, match="no scheduler_config.json here"):
        KuramotoDiffusersScheduler.from_pretrained("some-user/some-hub-repo")
    with pytest.raises(UserError, match="no scheduler_config.json here"):
        KuramotoDiffusersScheduler.from_pretrained(tmp_path)
