"""Hugging Face diffusers integration (optional: ``pip install kuramoto-diffusion[diffusers]``).

* ``KuramotoDiffusersScheduler`` is our ``KuramotoScheduler`` as a diffusers ``SchedulerMixin`` /
  ``ConfigMixin``: ``save_pretrained``/``from_pretrained``/``from_config`` and ``scheduler.config``
  come from diffusers (``scheduler_config.json`` with ``_class_name`` and ``_diffusers_version``);
  every sampling formula comes from the ``KuramotoScheduler`` it holds (``.scheduler``).
* ``PeriodicUNet2DWrapper`` turns a diffusers ``UNet2DModel`` into our ``ScoreNetwork`` for phases:
  [cos θ, sin θ] in, the tangent projection F = −a·sin θ + b·cos θ of its 2C outputs (a, b) out.

A diffusers-style loop::

    scheduler = KuramotoDiffusersScheduler(process=config_to_dict(KuramotoConfig(...)), sampler="sde")
    network = PeriodicUNet2DWrapper(UNet2DModel(in_channels=2 * C, out_channels=2 * C, ...))
    scheduler.set_timesteps(25)
    x = scheduler.init_noise_sample(shape, generator=generator)      # not randn · init_noise_sigma
    for t in scheduler.timesteps:
        output = network(scheduler.scale_model_input(x, t), scheduler.network_time(t, x))
        x = scheduler.step(output, t, x, generator=generator).prev_sample

Conventions are those of ``kuramoto_diffusion.sampling.scheduler``: states are phases in radians, timesteps
are integer steps t ∈ 1 … T, the network output is F = c(t)·score. Only this module imports diffusers;
``import kuramoto_diffusion`` works without it.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..nets.score import ScoreNetwork
from ..processes import ForwardProcess, KuramotoConfig
from ..serialization import config_from_dict, config_to_dict
from .scheduler import KuramotoScheduler, SchedulerConfig

try:
    # From the defining modules: mypy reads ``from diffusers import ...`` as the torch-less dummy classes.
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.models import UNet2DModel
    from diffusers.schedulers.scheduling_utils import SCHEDULER_CONFIG_NAME, SchedulerMixin, SchedulerOutput
except ImportError:
    raise UserError(
        "kuramoto_diffusion.sampling.diffusers needs diffusers: "
        "pip install diffusers (or pip install kuramoto-diffusion[diffusers])"
    ) from None

# The UNet's timestep input is 1000·t/T: diffusers' usual 0 … 1000 scale (what its sinusoidal
# embedding is tuned for), whatever the number of steps T of our process.
UNET_TIME_SCALE = 1000.0

# diffusers' Hub-loading keyword arguments (ConfigMixin.load_config): nothing to do for a local folder.
HUB_LOADING_KWARGS = frozenset(
    {
        "cache_dir",
        "local_dir",
        "local_dir_use_symlinks",
        "force_download",
        "proxies",
        "token",
        "local_files_only",
        "revision",
        "mirror",
        "user_agent",
        "resume_download",
    }
)


class KuramotoDiffusersScheduler(SchedulerMixin, ConfigMixin):  # type: ignore[misc]  # diffusers' two bases type config_name differently (str, None); every diffusers scheduler inherits this
    """Reverse-time sampler of a Kuramoto process, one network evaluation per ``step``, as a diffusers scheduler.

    ``process``: the Kuramoto process config as a JSON dict (``config_to_dict(KuramotoConfig(...))``;
    missing keys take ``KuramotoConfig``'s defaults, except ``phase_range``: a dict without it is read as
    written before it was a setting, so it takes the paper's 0.9π; None is the default process) or a
    ``KuramotoConfig``.
    ``sampler``: "sde", "ode" or "ode-heun" (see ``DiffusionScheduler``). ``num_train_timesteps``: T,
    the process's ``steps``; None takes it from the process, any other value must equal it.

    Differences from diffusers' schedulers: ``init_noise_sigma`` is 1.0 but the prior is von Mises,
    not N(0, I), so draw the start with ``init_noise_sample``; ``add_noise`` simulates the forward chain
    and accepts no noise tensor; the network's time input is ``network_time(t, x)`` = t/T.
    Loading (``from_pretrained``/``from_config``) is strict: an unknown key or a foreign
    ``_class_name`` is a UserError, not a logged warning.
    """

    _compatibles: list[str] = []
    init_noise_sigma = 1.0  # diffusers pipelines multiply their N(0, I) start by it; use init_noise_sample

    @register_to_config
    def __init__(
        self,
        process: dict[str, Any] | KuramotoConfig | None = None,
        sampler: str = "sde",
        num_train_timesteps: int | None = None,
    ) -> None:
        process_dict = _process_dict(process)
        if process_dict.get("kind", "kuramoto") != "kuramoto":
            raise UserError(
                f"{type(self).__name__} needs a Kuramoto process (kind 'kuramoto'), got kind {process_dict['kind']!r}; "
                "use kuramoto_diffusion.sampling.scheduler.DiffusionScheduler for other processes"
            )
        parsed = config_from_dict(
            SchedulerConfig,
            {"process": {"kind": "kuramoto", **process_dict}, "sampler": sampler},
            where=type(self).__name__,
        )
        steps = parsed.process.steps
        if num_train_timesteps is not None and num_train_timesteps != steps:
            raise UserError(
                f"num_train_timesteps is {num_train_timesteps!r} but the process has steps = {steps}; "
                "they must be equal (or leave num_train_timesteps out)"
            )
        self.scheduler = KuramotoScheduler(parsed.process, parsed.sampler)  # type: ignore[arg-type]  # diffusers' register_to_config erases the parsed types
        self._timestep_device: torch.device | None = None
        # The stored config is complete: every process field, and T, whatever was left to defaults.
        self.register_to_config(process=config_to_dict(parsed.process), num_train_timesteps=steps)

    # ----- strict loading ---------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[Any] | None = None,
        subfolder: str | None = None,
        return_unused_kwargs: bool = False,
        **kwargs: Any,
    ) -> KuramotoDiffusersScheduler | tuple[KuramotoDiffusersScheduler, dict[str, Any]]:
        """Load ``scheduler_config.json`` from a local folder; never from the Hugging Face Hub (nothing is downloaded).

        diffusers' loading keyword arguments (``HUB_LOADING_KWARGS``: ``local_files_only``,
        ``cache_dir``, ``revision``, ``token``, …, which pipelines pass along) are accepted and
        have nothing to do for a local folder; ``force_download=True``, which asks for a download,
        is refused. Other keyword arguments override config entries as in diffusers' ``from_config``
        (``sampler="ode"``), and unknown ones are an error.
        """
        if pretrained_model_name_or_path is None:
            raise UserError(f"{cls.__name__}.from_pretrained needs a local folder written by save_pretrained")
        if kwargs.get("force_download"):
            raise UserError(
                f"force_download=True asks for a download from the Hugging Face Hub; {cls.__name__} loads only "
                "local folders written by save_pretrained"
            )
        folder = Path(pretrained_model_name_or_path).expanduser() / (subfolder or "")
        if not (folder / SCHEDULER_CONFIG_NAME).is_file():
            raise UserError(
                f"{folder}: no {SCHEDULER_CONFIG_NAME} here; point to a local folder written by save_pretrained"
            )
        overrides = {key: value for key, value in kwargs.items() if key not in HUB_LOADING_KWARGS}
        return super().from_pretrained(
            folder, return_unused_kwargs=return_unused_kwargs, local_files_only=True, **overrides
        )

    @classmethod
    def extract_init_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """diffusers' split of a config into ``__init__`` arguments, after rejecting unknown keys and foreign classes.

        diffusers itself logs and ignores unknown keys; here they (and unknown keyword arguments of
        ``from_config``/``from_pretrained``) are a one-line UserError naming ``scheduler_config.json``.
        """
        class_name = config_dict.get("_class_name", cls.__name__)
        if class_name != cls.__name__:
            raise UserError(
                f"{SCHEDULER_CONFIG_NAME}: _class_name is {class_name!r}, not {cls.__name__!r}; load it with the class that wrote it"
            )
        valid = ("process", "sampler", "num_train_timesteps")
        unknown = sorted(key for key in {**config_dict, **kwargs} if not key.startswith("_") and key not in valid)
        if unknown:
            raise UserError(
                f"{SCHEDULER_CONFIG_NAME}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; valid keys are {', '.join(valid)}"
            )
        return super().extract_init_dict(config_dict, **kwargs)

    # ----- what diffusers loops read ----------------------------------------------------
    @property
    def process(self) -> ForwardProcess:
        """The ``KuramotoProcess`` (encode/decode between images and phases, T = ``process.steps``)."""
        return self.scheduler.process

    @property
    def timesteps(self) -> Tensor:
        """The integer steps to query, decreasing, without the final 0 (see ``DiffusionScheduler.set_timesteps``)."""
        timesteps = self.scheduler.timesteps
        return timesteps if self._timestep_device is None else timesteps.to(self._timestep_device)

    @property
    def num_inference_steps(self) -> int | None:
        """The network evaluations of the sweep set by ``set_timesteps`` (None before)."""
        return self.scheduler.num_inference_steps

    @property
    def order(self) -> int:
        """Network evaluations per solver interval: 2 for ode-heun, else 1."""
        return self.scheduler.order

    def __len__(self) -> int:
        """T = ``config.num_train_timesteps``, as diffusers' schedulers answer."""
        return len(self.scheduler)

    # ----- delegation to KuramotoScheduler ----------------------------------------------
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | Tensor | None = None,
        *,
        start_step: int | None = None,
    ) -> None:
        """Set ``timesteps`` for a sweep of ``num_inference_steps`` network evaluations from ``start_step`` (default T),
        or on the custom grid ``timesteps`` (decreasing integer steps in 1 … T), as ``DiffusionScheduler.set_timesteps``.

        n counts network evaluations for every sampler: n ≤ start_step for "sde" and "ode", odd
        n ≤ 2·start_step − 1 for "ode-heun"; other values raise. ``device``: where ``timesteps``
        lives (diffusers pipelines pass theirs); the grid is the same.
        """
        self.scheduler.set_timesteps(num_inference_steps, start_step=start_step, timesteps=timesteps)
        self._timestep_device = None if device is None else torch.device(device)

    def scale_model_input(self, sample: Tensor, timestep: int | Tensor | None = None) -> Tensor:
        """The network input: the phases unchanged (the cos/sin embedding is inside the network)."""
        return self.scheduler.scale_model_input(sample, timestep)  # type: ignore[arg-type]  # diffusers passes int or tensor timesteps; ours takes both at run time

    def network_time(self, timestep: int | Tensor, sample: Tensor) -> Tensor:
        """The network's time input t/T (float32, one entry per example), as ``ScoreNetwork`` expects."""
        return self.scheduler.network_time(timestep, sample)

    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[Tensor]:
        """Move ``sample`` to the next step of the grid given F = c(t)·score there (``KuramotoScheduler.step``).

        Returns diffusers' ``SchedulerOutput(prev_sample)``, or ``(prev_sample,)`` when ``return_dict`` is False.
        """
        output = self.scheduler.step(model_output, timestep, sample, generator=generator)
        assert not isinstance(output, tuple)  # return_dict=True; tells the type checker
        prev_sample = output.prev_sample
        return SchedulerOutput(prev_sample=prev_sample) if return_dict else (prev_sample,)

    def add_noise(
        self,
        original_samples: Tensor,
        noise: Tensor | None,
        timesteps: int | Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Phases at step ``timesteps`` drawn from p(θ_t | θ_0 = original_samples) by simulating the chain.

        diffusers' signature, but ``noise`` must be None: the Kuramoto process has no closed-form
        marginal, so the chain is run step by step with t noise draws from ``generator``
        (``KuramotoScheduler.add_noise``). ``timesteps``: one step t ∈ 0 … T shared by the batch.
        """
        if noise is not None:
            raise UserError(
                "add_noise takes noise=None: the Kuramoto forward process has no closed form in one noise draw, "
                "so it simulates the chain with generator=... instead"
            )
        return self.scheduler.add_noise(original_samples, timesteps, generator=generator)

    def init_noise_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Phases drawn from the von Mises prior at t = T; use instead of ``randn · init_noise_sigma``."""
        return self.scheduler.init_noise_sample(shape, generator=generator, dtype=dtype, device=device)


class UNet2DBackbone(nn.Module):
    """Our backbone signature ``(x, time, condition, class_labels) -> y`` around a diffusers ``UNet2DModel``.

    ``time`` is t/T ∈ [0, 1]; the UNet gets ``time_scale``·t/T (default 1000·t/T). ``condition``
    channels, if any, are concatenated to ``x``; ``class_labels`` go to the UNet's class embedding.
    """

    def __init__(self, unet: UNet2DModel, time_scale: float = UNET_TIME_SCALE) -> None:
        super().__init__()
        self.unet = unet
        self.time_scale = time_scale

    def forward(
        self, x: Tensor, time: Tensor, condition: Tensor | None = None, class_labels: Tensor | None = None
    ) -> Tensor:
        if condition is not None:
            x = torch.cat([x, condition.to(x.dtype)], dim=1)
        if x.shape[1] != self.unet.config["in_channels"]:
            raise UserError(
                f"the UNet2DModel has in_channels = {self.unet.config['in_channels']} but gets {x.shape[1]} channels "
                "(2 per image channel for cos and sin, plus any condition channels)"
            )
        return self.unet(x, time * self.time_scale, class_labels=class_labels).sample


class PeriodicUNet2DWrapper(ScoreNetwork):
    """A diffusers ``UNet2DModel`` as our ``ScoreNetwork`` for phases θ of C channels.

    The UNet needs in_channels = out_channels = 2C: it sees [cos θ, sin θ] and its outputs (a, b) are
    projected onto the circle's tangent, F = −a·sin θ + b·cos θ (``ScoreNetwork``). ``forward(x, time)``
    takes time = t/T as ``scheduler.network_time(t, x)`` gives it; the UNet sees 1000·t/T. Being a
    ``ScoreNetwork``, it trains with ``training.objectives`` and samples in ``DiffusionModel(config, network=...)``.
    """

    def __init__(self, unet: UNet2DModel, time_scale: float = UNET_TIME_SCALE) -> None:
        out_channels = unet.config["out_channels"]
        if out_channels % 2 or unet.config["in_channels"] < out_channels:
            raise UserError(
                f"PeriodicUNet2DWrapper needs a UNet2DModel with out_channels = 2C (a and b per phase channel) and "
                f"in_channels = 2C (+ condition channels); got in_channels = {unet.config['in_channels']}, "
                f"out_channels = {out_channels}"
            )
        super().__init__(UNet2DBackbone(unet, time_scale), periodic_channels=out_channels // 2)

    @property
    def unet(self) -> UNet2DModel:
        """The wrapped diffusers model (its own ``save_pretrained`` saves the weights)."""
        backbone = self.backbone
        assert isinstance(backbone, UNet2DBackbone)  # set so in __init__; tells the type checker
        return backbone.unet


def _process_dict(process: dict[str, Any] | KuramotoConfig | None) -> dict[str, Any]:
    """The process config as a fresh JSON dict (a KuramotoConfig converted, None the default process)."""
    if process is None:
        return config_to_dict(KuramotoConfig())
    if isinstance(process, KuramotoConfig):
        return config_to_dict(process)
    if not isinstance(process, dict):
        raise UserError(
            f"process must be a JSON object (config_to_dict(KuramotoConfig(...))) or a KuramotoConfig, "
            f"got {type(process).__name__}"
        )
    return copy.deepcopy(dict(process))
