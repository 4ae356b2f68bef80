"""Frozen configurations of a run: model, data and training, saved together as config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, get_args

from .codecs import FlowNormalisation
from .errors import UserError
from .nets import MLPConfig, UNetConfig, unet_config_from_preset
from .processes import ProcessConfig, process_class
from .serialization import check_choices

# What a data spec (DataConfig.source) names: these prefixes, "textures", "fingerprints", a CIFAR-10 archive or
# an image folder.
ANGLE_PREFIX = "angles:"  # a .csv or .npy file of N rows by D angles
TORUS_PREFIX = "torus:"  # a 2-torus density of data/torus.py
FLOW_PREFIX = "flows:"  # a flows folder, .npz files or PDEArena HDF5
BadImagePolicy = Literal["error", "skip"]  # what a folder source does with a file it cannot use
BAD_IMAGE_POLICIES: tuple[str, ...] = get_args(BadImagePolicy)
# The most pixels (width × height) an image file may declare before it is decoded: Pillow's own default
# (1024³ / 4 / 3 ≈ 89.5 million, 0.25 GiB as 8-bit RGB). A file declaring more is refused from its header
# as a possible decompression bomb (a 446 KB PNG can declare 12000 × 12000 and cost 2.3 GB decoded).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
IMAGE_CHANNELS = (1, 3)  # grey or RGB


def is_angle_spec(spec: object) -> bool:
    """Whether a data spec names angle data (``angles:PATH`` or ``torus:NAME``) rather than images."""
    return isinstance(spec, str) and spec.startswith((ANGLE_PREFIX, TORUS_PREFIX))


def is_flow_spec(spec: object) -> bool:
    """Whether a data spec names flow data (``flows:PATH``: a generator folder, npz files or PDEArena HDF5)."""
    return isinstance(spec, str) and spec.startswith(FLOW_PREFIX)


DataKind = Literal["image", "angle", "flow"]
FlowNetworks = Literal["joint", "split"]
# The network of a model, told apart by its ``kind`` ("unet" for images and flows, "mlp" for flat angle data).
Backbone = UNetConfig | MLPConfig


@dataclass(frozen=True)
class ModelConfig:
    """What it takes to rebuild a model: the process, the data's shape and one backbone."""

    process: ProcessConfig
    backbone: Backbone
    channels: int = 1  # data channels C: image channels, or the number D of angles of flat data
    image_size: int = 32  # pixels per side; 0 for flat (batch, D) data
    data_kind: DataKind = "image"  # image: values in [-1, 1] mapped to phases a·x (KuramotoConfig.phase_range); angle: radians as they are; flow: velocities
    class_names: tuple[str, ...] = ()  # class-conditional models: the classes, in label order
    flow: FlowNormalisation | None = None  # flow models: velocity <-> state normalisation
    context_frames: int = 0  # flow models that forecast: conditioned on this many previous frames
    flow_networks: FlowNetworks = (
        "joint"  # flow models: one network for both fields, or "split": one per field (phase-amplitude)
    )

    def __post_init__(self) -> None:
        check_choices(self)
        backbone = self.backbone
        if not isinstance(backbone, (UNetConfig, MLPConfig)):
            raise UserError(f"a model config's backbone is a UNetConfig or an MLPConfig, got {type(backbone).__name__}")
        backbone_classes = backbone.num_classes
        if backbone_classes != len(self.class_names):
            raise UserError(
                f"the backbone has {backbone_classes} classes but class_names lists {len(self.class_names)}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise UserError(f"class names must be distinct, got {', '.join(self.class_names)}")
        if (self.data_kind == "flow") != (self.flow is not None):
            raise UserError("a flow model needs its flow normalisation, and only flow models have one")
        if self.process.kind == "phase-amplitude" and (self.data_kind, self.channels) != ("flow", 2):
            raise UserError("the phase-amplitude process models flow data (data_kind 'flow', 2 channels) only")
        if self.data_kind == "flow" and (self.process.kind == "kuramoto" or self.channels != 2):
            raise UserError("flow data (2 channels) are modelled with the phase-amplitude or the euclidean process")
        unet = self.unet
        if self.flow_networks == "split" and (self.process.kind != "phase-amplitude" or unet is None):
            raise UserError("flow_networks 'split' (one network per field) is for phase-amplitude flow models")
        if self.context_frames < 0 or (self.context_frames and (self.data_kind != "flow" or unet is None)):
            raise UserError(f"context_frames (forecasting) is for flow models, ≥ 0; got {self.context_frames}")
        if self.context_frames and unet is not None and unet.condition_channels != self.context_channels:
            raise UserError(
                f"a forecasting model on {self.context_frames} frames needs condition_channels = {self.context_channels}, "
                f"got {unet.condition_channels}"
            )
        if self.channels < 1:
            raise UserError(f"channels must be ≥ 1, got {self.channels}")
        width = self.backbone_channels
        if isinstance(backbone, UNetConfig):
            backbone_in, backbone_out = backbone.in_channels, backbone.out_channels
        else:
            backbone_in, backbone_out = backbone.in_features, backbone.out_features
        if backbone_in != width or backbone_out != width:
            raise UserError(
                f"the backbone takes {backbone_in} and returns {backbone_out} channels, but {self.channels} data "
                f"channel(s) of a {'periodic' if self.periodic else 'Euclidean'} process need {width}"
            )

    @property
    def unet(self) -> UNetConfig | None:
        """The backbone if it is a UNet, else None."""
        return self.backbone if isinstance(self.backbone, UNetConfig) else None

    @property
    def mlp(self) -> MLPConfig | None:
        """The backbone if it is an MLP, else None."""
        return self.backbone if isinstance(self.backbone, MLPConfig) else None

    @property
    def periodic(self) -> bool:
        """True when any state channel is a phase."""
        return self.periodic_channels > 0

    @property
    def periodic_channels(self) -> int:
        """How many leading state channels are phases: all (Kuramoto), none (Euclidean), or the flow direction."""
        return periodic_channel_count(self.process, self.channels)

    @property
    def backbone_channels(self) -> int:
        """Phases enter the network as [cos θ, sin θ]: each periodic channel counts twice."""
        return self.channels + self.periodic_channels

    @property
    def context_channels(self) -> int:
        """Condition channels of a forecasting model: each context frame as the network sees states, plus a
        "context given" channel (all zero = no context, for classifier-free guidance)."""
        return self.context_frames * self.backbone_channels + 1

    def split_unet_configs(self) -> tuple[UNetConfig, UNetConfig]:
        """The two UNets of ``flow_networks="split"``: the phase one ([cos φ, sin φ] in, (a, b) out, the other
        channels as condition) and the real one, each with the stored network's sizes and any external condition."""
        unet = self.unet
        if unet is None:
            raise UserError("split networks are UNets; this model's backbone is an MLP")
        periodic, rest = self.periodic_channels, self.channels - self.periodic_channels
        extra = unet.condition_channels
        return (
            dataclasses.replace(
                unet, in_channels=2 * periodic, out_channels=2 * periodic, condition_channels=rest + extra
            ),
            dataclasses.replace(unet, in_channels=rest, out_channels=rest, condition_channels=2 * periodic + extra),
        )

    def state_shape(self, num: int) -> tuple[int, ...]:
        if self.unet is not None:
            return (num, self.channels, self.image_size, self.image_size)
        return (num, self.channels)


def periodic_channel_count(process: ProcessConfig, channels: int) -> int:
    """Leading state channels that are phases under ``process``, as its process class declares them."""
    return process_class(process).periodic_channels(channels)


def image_model_config(
    process: ProcessConfig,
    channels: int,
    image_size: int,
    preset: str = "small",
    class_names: tuple[str, ...] = (),
    **unet_overrides: Any,
) -> ModelConfig:
    """A UNet model config for images of ``channels`` × ``image_size``² under ``process`` (class-conditional
    on ``class_names`` if given)."""
    width = channels + periodic_channel_count(process, channels)
    unet = unet_config_from_preset(
        preset,
        in_channels=width,
        out_channels=width,
        image_size=image_size,
        num_classes=len(class_names),
        **unet_overrides,
    )
    return ModelConfig(
        process=process, backbone=unet, channels=channels, image_size=image_size, class_names=tuple(class_names)
    )


def flow_model_config(
    process: ProcessConfig,
    image_size: int,
    normalisation: FlowNormalisation,
    preset: str = "small",
    context_frames: int = 0,
    networks: FlowNetworks | None = None,
    **unet_overrides: Any,
) -> ModelConfig:
    """A UNet model of 2-D velocity fields of ``image_size``² under the phase–amplitude or the Euclidean process,
    forecasting from ``context_frames`` previous frames if > 0. ``networks``: "split" gives each field its own
    network conditioned on the other (phase-amplitude only; see ``ModelConfig.split_unet_configs``), "joint" one
    network for both; None takes split for phase-amplitude (measured better, BENCHMARKS.md) and joint otherwise.

    The network pads circularly (the flow box is periodic). States are (phase, log speed) or (v_x, v_y)/std.
    """
    if process.kind not in ("phase-amplitude", "euclidean"):
        raise UserError(f"flows are modelled with the phase-amplitude or the euclidean process, not {process.kind!r}")
    if networks is None:
        networks = "split" if process.kind == "phase-amplitude" else "joint"
    width = 2 + periodic_channel_count(process, 2)
    condition_channels = context_frames * width + 1 if context_frames else 0
    unet = unet_config_from_preset(
        preset,
        **{
            "in_channels": width,
            "out_channels": width,
            "image_size": image_size,
            "padding_mode": "circular",
            "condition_channels": condition_channels,
            **unet_overrides,
        },
    )
    return ModelConfig(
        process=process,
        backbone=unet,
        channels=2,
        image_size=image_size,
        data_kind="flow",
        flow=normalisation,
        context_frames=context_frames,
        flow_networks=networks,
    )


# MLP sizes for angle data by the CLI's --preset names: tiny for tests and quick tries, small is MLPConfig's default.
ANGLE_MLP_PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"hidden_features": 64, "num_layers": 2},
    "small": {"hidden_features": 256, "num_layers": 4},
}


def angle_model_config(process: ProcessConfig, dims: int, preset: str = "small", **mlp_overrides: Any) -> ModelConfig:
    """An MLP model config for flat vectors of ``dims`` angles (radians) under ``process``; sizes from
    ``ANGLE_MLP_PRESETS[preset]``, then ``mlp_overrides`` (MLPConfig fields)."""
    if preset not in ANGLE_MLP_PRESETS:
        raise UserError(
            f"preset {preset!r} is not an MLP size for angle data; valid values are {', '.join(ANGLE_MLP_PRESETS)}"
        )
    width = dims + periodic_channel_count(process, dims)
    mlp = MLPConfig(**{"in_features": width, "out_features": width, **ANGLE_MLP_PRESETS[preset], **mlp_overrides})
    return ModelConfig(process=process, backbone=mlp, channels=dims, image_size=0, data_kind="angle")


@dataclass(frozen=True)
class DataConfig:
    """Where training data come from: images and how they are cut, or angle data (``angles:FILE``, ``torus:NAME``)."""

    source: str = "textures"  # textures | fingerprints | a folder of images | a CIFAR-10 binary archive | angles:FILE | torus:NAME | flows:PATH
    image_size: int = 32  # images and flows (the grid side N); the CLI stores 0 for angle data
    channels: int = 1  # image channels; for angle data the number D of angles per row; 2 for flows
    flip: bool = True
    val_fraction: float = 0.1
    seed: int = 0
    on_bad_image: BadImagePolicy = "error"  # error | skip: what to do with a file of a folder that cannot be used
    classes: bool = False  # each first-level subfolder is a class (class-conditional training)
    lazy: bool = False  # image folders: decode the files of each batch on demand instead of holding all in memory
    degrees: bool = False  # angle files: the values are degrees (samples are written back in degrees)
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # image folders: larger files are refused from their header

    def __post_init__(self) -> None:
        check_choices(self)
        if self.max_image_pixels < 1:
            raise UserError(f"max_image_pixels must be ≥ 1, got {self.max_image_pixels}")
        if is_angle_spec(self.source):
            if self.channels < 1:
                raise UserError(f"angle data needs channels = D ≥ 1 angles per row, got {self.channels}")
        elif is_flow_spec(self.source):
            if self.channels != 2 or self.classes or self.degrees:
                raise UserError("flow data has 2 channels (v_x, v_y) and no classes or degrees")
        else:
            if self.degrees:
                raise UserError(
                    f"degrees applies to angle data (angles:FILE) only, not to {self.source!r}; drop degrees=True"
                )
            if self.image_size < 8:
                raise UserError(f"image size must be ≥ 8 pixels, got {self.image_size}")
            if self.channels not in IMAGE_CHANNELS:
                raise UserError(f"channels must be 1 or 3, got {self.channels}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


ForwardStates = Literal["pool", "resimulate"]
# DSM objectives (training/objectives/, one class each; ``objectives.OBJECTIVES`` maps these names to them): which
# kernel and target, and whether draws are antithetic; "auto" is the measured best the process supports
# (``objectives.resolve_objective``), written into the saved config as resolved
Objective = Literal[
    "auto", "markov", "antithetic", "linearised", "linearised-antithetic", "propagated", "propagated-antithetic"
]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
# Objective names of configs saved before the rename ("flow" also meant the probability-flow ODE and flow data);
# the loader reads them as the new names.
LEGACY_OBJECTIVES: dict[str, str] = {"flow": "linearised", "flow-antithetic": "linearised-antithetic"}
Precision = Literal["fp32", "bf16", "fp16"]  # the network's arithmetic in training (fp16 with loss scaling)
NonfinitePolicy = Literal["stop", "skip"]  # what training does when the loss or the gradients are NaN/inf
# The Kuramoto prior a run asks for: one of KuramotoConfig.prior's, or "auto", resolved at the prior fit
TrainPrior = Literal["von-mises", "relaxed", "forward-chain", "auto"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and checkpointing of a training run."""

    train_steps: int = 2000
    batch_size: int = 32  # starting states per step (all processes together); the network sees batch_size × draws
    grad_accum: int = 1  # micro-batches per process and step (same result, less memory)
    precision: Precision = "fp32"  # fp32 | bf16 | fp16: the network's arithmetic (kernel draws and targets stay fp32)
    # torch.compile the training network and the chain pool's propagated step (faster steps after a compile of a
    # minute or more; the chain step: ≈ 7–10 s, docs/performance.md)
    compile: bool = False
    draws: int = 1  # kernel draws per starting state (the authors use 5)
    objective: Objective = "auto"  # see OBJECTIVES and training/objectives/
    window: int = 0  # DSM window h: strides uniform in 1 … h (h = 1: the paper's loss); 0: markov 10, linearised T (anchored at the data)
    anchor: int = (
        0  # queries at t ≤ anchor start from the data (s = 0, stride t, linearised kernel); later ones from the chain
    )
    forward_states: ForwardStates = "pool"  # pool: O(1) chain pool; resimulate: the authors' O(T) reference
    pool_size: int = 0  # 0: max(T, 4·batch) rounded up to a multiple of T
    pool_advance: int = 0  # chains advanced per step, in turn; 0: min(pool size, 8·batch), all of them at T = 100
    # The pool's start: 0 simulates every chain to its step (≈ N·T/2 chain steps); G > 0 simulates G trajectories to
    # T and takes each chain as a snapshot of one (≈ G·T steps; exact marginals, but dependent chains at first).
    pool_fill_trajectories: int = 0
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # The EMA's decay at step n is min(ema_decay, (1 + n)/(10 + n)) (diffusers' ramp), so a short run averages
    # only its recent, trained weights. 0: the ramp runs the whole run; N > 0: the full ema_decay from step N on
    # (the rule of runs saved before 2026-12-06, with N = 100, which left a 600-step run's EMA mostly untrained).
    ema_warmup_steps: int = 0
    fit_prior: bool = True  # fit the prior κ to simulated terminal states instead of the fixed 1.2
    # Kuramoto models: the prior (KuramotoConfig.prior), or "auto": at the prior fit, the cheapest candidate whose gap
    # to the simulated terminal states is within tolerance (metrics/prior_gap.py), written here and into the model's
    # config as resolved. Other processes ignore it.
    prior: TrainPrior = "von-mises"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 1000
    log_every: int = 25
    seed: int = 0
    on_nonfinite: NonfinitePolicy = (
        "stop"  # stop | skip (the step is dropped; stops after MAX_SKIPPED_IN_A_ROW in a row)
    )
    class_dropout: float = 0.1  # class-conditional models: labels replaced by "no class" this often (for guidance)

    def __post_init__(self) -> None:
        check_choices(self)
        for name in ("train_steps", "batch_size", "grad_accum", "draws", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', '-')} must be ≥ 1, got {getattr(self, name)}")
        for name in (
            "window",
            "anchor",
            "pool_size",
            "pool_advance",
            "pool_fill_trajectories",
            "warmup_steps",
            "ema_warmup_steps",
            "keep_checkpoints",
            "sample_every",
        ):
            if getattr(self, name) < 0:
                raise UserError(f"{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"learning rate must be > 0, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.class_dropout <= 1.0:
            raise UserError(f"class_dropout must be in [0, 1], got {self.class_dropout}")
        if self.prior == "auto" and not self.fit_prior:
            raise UserError(
                "prior 'auto' is chosen at the prior fit, which fit_prior=False turns off; name the prior instead"
            )
        if self.objective.endswith("antithetic") and self.draws % 2:
            raise UserError(
                f"objective {self.objective!r} draws in ±z pairs: draws must be even (2, 4, …), got {self.draws}"
            )


@dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a run: saved as config.json beside the weights."""

    model: ModelConfig
    data: DataConfig | None = None
    training: TrainConfig | None = None
