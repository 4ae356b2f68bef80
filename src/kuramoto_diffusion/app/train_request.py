"""The train command's request (``TrainRequest``, its defaults the CLI's) and how its options set
``TrainConfig``'s fields: by name, except those ``RENAMED_TRAIN_OPTIONS`` lists."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..config import (
    DEFAULT_MAX_IMAGE_PIXELS,
    BadImagePolicy,
    FlowNetworks,
    ForwardStates,
    NonfinitePolicy,
    Objective,
    Precision,
    TrainConfig,
    TrainPrior,
)
from ..processes import KuramotoConfig
from ..processes.kuramoto import CouplingNorm, CouplingShape, Padding
from ..processes.schedules import ScheduleShape


@dataclass(frozen=True)
class TrainRequest:
    """The train command's options (``kuramoto-diffusion train --help`` says what each means)."""

    out: Path
    data: str | None = None  # None: textures, or with resume the run's own
    degrees: bool = False
    process: str | None = None  # None: by the data kind
    image_size: int = 32
    channels: str = "auto"
    preset: str = "small"
    train_steps: int = 2000
    batch_size: int = 32
    grad_accum: int = 1
    precision: Precision = "fp32"
    compile: bool = False
    draws: int = 1
    objective: Objective = "auto"
    window: int = 0
    anchor: int = 0
    forward_states: ForwardStates = "pool"
    pool_size: int = 0
    pool_advance: int = 0
    pool_fill_trajectories: int = 0
    lr: float = 2e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    ema_warmup_steps: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 1000
    no_fit_prior: bool = False
    init_from: Path | None = None
    device: str = "auto"
    resume: bool = False
    resume_from: Path | None = None  # a checkpoint folder of the run in ``out`` to resume from (implies resume)
    on_nan: NonfinitePolicy = "stop"
    lazy: bool = False
    classes: bool = False
    class_dropout: float = 0.1
    flow_networks: FlowNetworks | None = None  # None: by the process
    context_frames: int = 0
    on_bad_image: BadImagePolicy = "error"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    steps: int = 100
    schedule: ScheduleShape = "linear"
    neighbourhood: int | None = None  # None: 5 for images, 4 for flows
    padding: Padding = "reflect"
    phase_range: float | None = None  # a fraction of π; None: KuramotoConfig's default (0.5)
    coupling_range: tuple[float, float] = KuramotoConfig.coupling_range  # Kuramoto K per step at T = 100 (LO, HI)
    coupling_shape: CouplingShape = KuramotoConfig.coupling_shape
    coupling_norm: CouplingNorm = KuramotoConfig.coupling_norm
    ref_strength: float = KuramotoConfig.ref_strength  # κ_ref ≥ 0
    prior: TrainPrior = KuramotoConfig.prior  # or "auto" (TrainConfig.prior)
    prior_relax_steps: int = KuramotoConfig.prior_relax_steps
    seed: int = 0
    quiet: bool = False
    given: frozenset[str] = frozenset()  # the options the user typed (a resume checks them against the run)


# Train options whose TrainConfig field has another name; every other option sets the field of its own name, if
# TrainConfig has one. option → (field, negated: the option says "no" to what the field says "yes" to).
RENAMED_TRAIN_OPTIONS: dict[str, tuple[str, bool]] = {
    "on_nan": ("on_nonfinite", False),
    "no_fit_prior": ("fit_prior", True),
}
_TRAIN_CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(TrainConfig))
# TrainRequest option → the TrainConfig field it sets (TrainConfig fields without an option keep their defaults).
TRAIN_OPTION_FIELDS: dict[str, str] = {
    option.name: field
    for option in dataclasses.fields(TrainRequest)
    if (field := RENAMED_TRAIN_OPTIONS.get(option.name, (option.name, False))[0]) in _TRAIN_CONFIG_FIELDS
}


def train_option_value(option: str, value: object) -> object:
    """A train option's value as its TrainConfig field's, or the field's as the option's (negation is its own inverse)."""
    negated = RENAMED_TRAIN_OPTIONS.get(option, (option, False))[1]
    return not value if negated else value


def train_config_from(request: TrainRequest) -> TrainConfig:
    """The TrainConfig that ``request``'s options set, matched by name (``TRAIN_OPTION_FIELDS``)."""
    values = {
        field: train_option_value(option, getattr(request, option)) for option, field in TRAIN_OPTION_FIELDS.items()
    }
    return TrainConfig(**values)  # type: ignore[arg-type]  # each value has its TrainRequest field's type, the field's own
