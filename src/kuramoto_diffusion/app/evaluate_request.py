"""The evaluate command's request (``EvaluateRequest``, its defaults the CLI's) and what its modes share: the
protocol sizes, loading the model, reporting the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import DEFAULT_MAX_IMAGE_PIXELS, DataConfig
from ..data import ImageSource, open_image_source
from ..errors import UserError
from ..model import DiffusionModel
from ..runtime import resolve_device
from ..serialization import write_json_atomic
from .sample import SamplerOptions


@dataclass(frozen=True)
class EvaluateRequest:
    """The evaluate command's options (``kuramoto-diffusion evaluate --help`` says what each means); one of
    ``fake`` and ``checkpoint``."""

    real: str = "textures"
    real_split: str = "val"
    fake: str | None = None
    checkpoint: Path | None = None
    num: int = 256
    sampling: SamplerOptions = field(default_factory=SamplerOptions)
    batch_size: int = 64
    image_size: int = 32
    channels: str = "auto"
    clip_denoised: bool = False
    inception_weights: Path | None = None
    nll: bool = False
    probes: int | None = None  # None: 2
    degrees: bool = False  # --real angles:FILE holds degrees (default: the unit the model was trained on)
    json: Path | None = None
    device: str = "auto"
    on_bad_image: str = "error"
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    seed: int = 0
    quiet: bool = False
    no_ema: bool = False
    groups: int | None = None  # with reference_sets: the interval protocol (None for both: one set against one)
    reference_sets: int | None = None


PROTOCOL_DEFAULT = 4  # groups or reference sets when only the other is given (bench/quality.py's default)


def protocol_sizes(request: EvaluateRequest) -> tuple[int, int] | None:
    """(groups, reference sets) of the interval protocol, or None for the single comparison."""
    if request.groups is None and request.reference_sets is None:
        return None
    groups = PROTOCOL_DEFAULT if request.groups is None else request.groups
    sets = PROTOCOL_DEFAULT if request.reference_sets is None else request.reference_sets
    for flag, value in (("--groups", groups), ("--reference-sets", sets)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2:
            raise UserError(f"{flag} {value}: an interval needs at least 2; pass {flag} 2 or more")
    return groups, sets


NEITHER_FAKE_NOR_CHECKPOINT = (
    "nothing to evaluate: pass --fake (generated images or flows) or --checkpoint (a model to sample)"
)


def load_model(request: EvaluateRequest, checkpoint: Path) -> DiffusionModel:
    """``checkpoint``'s (--checkpoint's) model, with its EMA weights unless --no-ema."""
    return DiffusionModel.from_pretrained(checkpoint, use_ema=not request.no_ema, device=resolve_device(request.device))


def sample_model(request: EvaluateRequest, model: DiffusionModel, num: int) -> tuple[torch.Tensor, int, int]:
    """``num`` decoded samples (on the CPU) with --sampler/--nfe/--batch-size and --seed, how many values were
    clipped, and the network evaluations they took."""
    result = model.sample(
        num,
        **request.sampling.arguments(),
        batch_size=request.batch_size,
        generator=torch.Generator().manual_seed(request.seed),
    )
    fake, clipped = model.decode(result.states)
    return fake.cpu(), clipped, result.function_evaluations


@dataclass(frozen=True)
class DataSplit:
    """Which train / held-out split of --real to read: the split's seed and held-out share (``DataConfig``'s)."""

    seed: int
    val_fraction: float
    models_own: bool  # the split the model was trained with (its "val" holds only examples it never saw)

    def settings(self) -> dict[str, object]:
        """The split as --json's settings record it."""
        return {"split_seed": self.seed, "val_fraction": self.val_fraction, "models_own_split": self.models_own}


def data_split(request: EvaluateRequest, model: DiffusionModel | None = None) -> DataSplit:
    """--real's split: the one ``model`` trained with when --real is its training data (its ``DataConfig.seed`` and
    ``val_fraction``), so that a model trained at another --seed or held-out share is never scored on its own
    training examples; otherwise --seed's with the default held-out share."""
    from .train_resume import canonical_data_spec

    data = None if model is None or model.run_config is None else model.run_config.data
    if data is not None and data.source == canonical_data_spec(request.real):
        return DataSplit(data.seed, data.val_fraction, models_own=True)
    return DataSplit(request.seed, DataConfig().val_fraction, models_own=False)


def open_real_images(request: EvaluateRequest, image_size: int, channels: int, split: DataSplit) -> ImageSource:
    """--real's images at ``image_size`` and ``channels``, --real-split of them under ``split``."""
    return open_image_source(
        request.real,
        image_size,
        channels=channels,
        split=request.real_split,
        val_fraction=split.val_fraction,
        seed=split.seed,
        on_bad_image=request.on_bad_image,
        max_image_pixels=request.max_image_pixels,
    )


def report_metrics(
    request: EvaluateRequest, metrics: dict[str, float], settings: dict[str, object]
) -> dict[str, object]:
    """Print the metrics as a table (unless --quiet), write them with the settings to --json, and return both."""
    payload: dict[str, object] = {"metrics": metrics, "settings": settings}
    if not request.quiet:
        width = max(len(name) for name in metrics)
        print("\n".join(f"{name:<{width}}  {value:.6g}" for name, value in metrics.items()))
    if request.json is not None:
        write_json_atomic(request.json, payload)
    return payload
