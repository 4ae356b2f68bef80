"""A diffusion model: a forward process, the codec between data and its states, and a score network under
one ``ModelConfig``, offering the (classifier-free guided) score.

What a model is used for is in ``tasks/`` (sampling, editing, inpainting, forecasting, likelihood: functions of
the model, which the methods of the same names here call); a model on disk is ``model_files.py``'s: a directory
with ``config.json`` (the full run configuration, strictly validated on load; the format is ``config_file.py``)
and ``model.safetensors`` (and, in training checkpoints, ``ema.safetensors``, used for sampling when present).
Nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    pass

from . import model_files, tasks
from .codecs import AngleCodec, Codec, FlowCodec, ImageCodec
from .config import ModelConfig, RunConfig
from .config_file import CONFIG_NAME, EMA_WEIGHTS_NAME, WEIGHTS_NAME, load_run_config
from .errors import UserError
from .model_files import PRETRAINED_ROOT, shipped_model_names
from .nets import MLP, UNet, UNetConfig
from .nets.score import ScoreNetwork, SplitScoreNetwork, state_features
from .processes import ForwardProcess, ProcessConfig, build_process
from .sampling.inpainting import format_size

# Names other modules import from here (the file format is config_file.py's, persistence model_files.py's).
__all__ = [
    "CONFIG_NAME",
    "EMA_WEIGHTS_NAME",
    "PRETRAINED_ROOT",
    "WEIGHTS_NAME",
    "DiffusionModel",
    "build_codec",
    "build_network",
    "load_run_config",
    "shipped_model_names",
]


def build_network(config: ModelConfig) -> ScoreNetwork | SplitScoreNetwork:
    """The score network a model config describes: one backbone, or two for flow models with ``flow_networks="split"``."""
    if config.flow_networks == "split":
        phase_unet, real_unet = config.split_unet_configs()
        return SplitScoreNetwork(UNet(phase_unet), UNet(real_unet), periodic_channels=config.periodic_channels)
    backbone: nn.Module = UNet(config.backbone) if isinstance(config.backbone, UNetConfig) else MLP(config.backbone)
    return ScoreNetwork(backbone, periodic_channels=config.periodic_channels)


def build_codec(config: ModelConfig, process: ForwardProcess) -> Codec:
    """The codec of a model's data kind under its process (the process's periodic channels say which map)."""
    periodic = process.periodic_channels(config.channels) > 0
    if config.data_kind == "image":
        return ImageCodec.for_process(process)
    if config.data_kind == "flow":
        if config.flow is None:  # ModelConfig refuses a flow model without one; this keeps the types honest
            raise UserError("a flow model needs its flow normalisation")
        return FlowCodec(config.flow, polar=periodic)
    return AngleCodec(periodic=periodic)


class DiffusionModel:
    """A process, a codec and a network under one config, offering the score (``score``, with guidance).

    What the model is used for lives in ``tasks/`` as functions of the model (``sample``, ``inpaint``,
    ``forward_then_reverse``, ``forecast``, ``rollout``, ``log_likelihood``) and on disk in ``model_files.py``;
    the methods of the same names here call them.
    """

    def __init__(
        self,
        config: ModelConfig,
        network: ScoreNetwork | SplitScoreNetwork | None = None,
        run_config: RunConfig | None = None,
    ) -> None:
        self.config = config
        self.process: ForwardProcess = build_process(config.process)
        self.codec: Codec = build_codec(config, self.process)
        self.network = network if network is not None else build_network(config)
        # The full run configuration (data, training) travels with the weights for provenance.
        self.run_config: RunConfig | None = run_config
        # The directory the weights were loaded from (``from_pretrained``); None for a model built in memory.
        self.checkpoint_path: Path | None = None

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: torch.device | str) -> DiffusionModel:
        self.network.to(device)
        return self

    def with_process(self, process_config: ProcessConfig) -> DiffusionModel:
        """The same network under another process config (e.g. with a fitted prior κ)."""
        config = dataclasses.replace(self.config, process=process_config)
        return DiffusionModel(config, self.network, self.run_config)

    # ----- data <-> states ---------------------------------------------------------------
    def encode(self, data: Tensor) -> Tensor:
        """Data to process states: images through the process's map (phases a·x on the torus); angles as they are;
        flow velocities (B, 2, N, N) to (direction, normalised log speed) or to velocity / its RMS (Euclidean).

        Half-precision data are promoted to float32 first: phases near the seam and small kernel
        scales need more than float16's 11 bits.
        """
        if data.dtype in (torch.float16, torch.bfloat16):
            data = data.float()
        return self.codec.encode(data)

    def decode(self, states: Tensor) -> tuple[Tensor, int]:
        """States to data, and how many values were clipped (images) — angles come back wrapped to [-π, π),
        flows as velocities in the data's units."""
        return self.codec.decode(states)

    # ----- score ------------------------------------------------------------------------
    def score(
        self,
        x: Tensor,
        t_query: int,
        condition: Tensor | None = None,
        class_labels: Tensor | None = None,
        guidance: float = 1.0,
    ) -> Tensor:
        """The learned score ∂ log p_t(x)/∂x at query step t ∈ 1 … T (network output divided by c(t)).

        Classifier-free guidance with weight w, for class labels (B,) or a forecasting model's context
        features (``context_features``): s_∅ + w·(s_c − s_∅), where s_∅ is the score with the "no class" label
        or the all-zero "no context" condition. w = 0 is the unconditional model, w = 1 the conditional one,
        w > 1 sharpens the condition. On the torus both scores are tangent vectors at the same point θ (the
        network projects onto the tangent), so their combination is one too.
        """
        time = self.process.network_time(t_query).to(x.device).expand(x.shape[0])
        scale = self.process.output_scale(t_query, like=x)
        guided = class_labels is not None or (condition is not None and self.config.context_frames > 0)
        if not guided or guidance == 1.0:
            return self.process.constrain_score(x, t_query, self.network(x, time, condition, class_labels) / scale)
        both_conditions = both_labels = None  # each conditional row beside its unconditional twin
        if condition is not None:
            null_condition = torch.zeros_like(condition) if self.config.context_frames else condition
            both_conditions = torch.cat([condition, null_condition])
        if class_labels is not None:
            both_labels = torch.cat([class_labels, torch.full_like(class_labels, len(self.config.class_names))])
        both = self.network(torch.cat([x, x]), torch.cat([time, time]), both_conditions, both_labels)
        conditional_output, unconditional_output = both.chunk(2)
        guided_output = (unconditional_output + guidance * (conditional_output - unconditional_output)) / scale
        return self.process.constrain_score(x, t_query, guided_output)

    def class_labels(self, names: str | list[str], num: int) -> Tensor:
        """(num,) label indices for a class name (or one name per sample); unknown names are a UserError listing the known."""
        if not self.config.class_names:
            raise UserError(
                "this model is not class-conditional (trained without classes=True); drop class_name and guidance"
            )
        names = [names] * num if isinstance(names, str) else list(names)
        unknown = [name for name in names if name not in self.config.class_names]
        if unknown:
            raise UserError(f"unknown class {unknown[0]!r}; this model knows {', '.join(self.config.class_names)}")
        return torch.tensor([self.config.class_names.index(name) for name in names], dtype=torch.long)

    def context_features(self, previous: Tensor) -> Tensor:
        """A forecasting model's condition from the previous frames (B, F, 2, N, N) (velocities, oldest first):
        each frame's states as the network sees them ([cos φ, sin φ, a] or (v_x, v_y)/std), stacked along the
        channels, plus a channel of ones that tells "context given" from the all-zero "no context"."""
        frames = self.config.context_frames
        if not frames:
            raise UserError(
                "this model does not forecast (trained without context_frames); sample it without a context"
            )
        if previous.dim() != 5 or previous.shape[1] < frames or previous.shape[2:] != self.config.state_shape(1)[1:]:
            raise UserError(
                f"the context must hold at least {frames} frames of size {format_size(self.config.state_shape(1)[1:])}, "
                f"got {format_size(previous.shape[1:]) if previous.dim() == 5 else format_size(previous.shape)}"
            )
        previous = previous[:, -frames:]
        batch = previous.shape[0]
        states = self.encode(previous.flatten(0, 1))
        features = state_features(states, self.config.periodic_channels).reshape(batch, -1, *states.shape[2:])
        return torch.cat([features, torch.ones_like(features[:, :1])], dim=1)

    def check_data(self, data: Tensor, what: str = "data") -> None:
        """A UserError naming ``what`` unless ``data`` is a floating-point tensor of this model's data size (N, …)."""
        if not isinstance(data, Tensor) or not data.is_floating_point():
            raise UserError(f"{what} must be a floating-point tensor, got {type(data).__name__}")
        expected = self.config.state_shape(data.shape[0] if data.dim() else 1)
        if data.shape != expected:
            raise UserError(
                f"{what} of size {format_size(data.shape)} do not fit this model's data of size N×{format_size(expected[1:])}"
            )

    def encoding_log_jacobian(self, data: Tensor) -> Tensor:
        """log|det ∂state/∂data| of ``encode`` per sample (N,): D·log a for images on the torus (θ = a·x,
        a = ``KuramotoConfig.phase_range``), 0 for Euclidean images and for angles; for flows, per pixel,
        −log|v| − log(|v| + ε) − log s (phase–amplitude: φ = atan2, a = (log(|v| + ε) − μ)/s) or −2·log σ_v (Euclidean)."""
        return self.codec.log_jacobian(data)

    # ----- tasks (tasks/: one module each) -------------------------------------------------
    # Each task is a function of the model, written once in its module; bound here as a method (``model.sample(16)``
    # is ``tasks.sample(model, 16)``), so that its signature and docstring have one home.
    sample = tasks.sample
    inpaint = tasks.inpaint
    forward_then_reverse = tasks.forward_then_reverse
    sample_images = tasks.sample_images
    forecast = tasks.forecast
    rollout = tasks.rollout
    log_likelihood = tasks.log_likelihood

    # ----- persistence (model_files.py) ---------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (the network's current weights)."""
        model_files.save_pretrained(self, directory)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, use_ema: bool = True, device: str | torch.device = "cpu"
    ) -> DiffusionModel:
        """Load a model directory, a training checkpoint, a run directory (its newest checkpoint that loads: a newer
        damaged one is skipped with a warning naming its file and the reason), or a shipped model by name
        (``shipped_model_names()``, e.g. ``"textures-kuramoto-local-32"``) when no such path exists."""
        return model_files.load_pretrained(cls, path, use_ema).to(device)
