"""``kuramoto-diffusion evaluate``: weight-free image metrics (FID and KID with local Inception weights), flow
metrics for flow data, or with ``nll`` the model's negative log-likelihood through the probability-flow ODE."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import DEFAULT_MAX_IMAGE_PIXELS
from ..data import DATA_CHOICES, is_angle_spec, is_flow_spec, open_angle_source, open_flow_source, open_image_source
from ..errors import UserError
from ..model import DiffusionModel
from ..runtime import resolve_device
from ..serialization import write_json_atomic
from .limits import MAX_BATCH_VALUES, MAX_HELD_VALUES, check_values, values_per_example
from .sample import SamplerOptions, warn_if_undertrained, with_clip_denoised


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


def evaluate(request: EvaluateRequest) -> dict[str, object]:
    """Image metrics of generated against real images (and FID/KID with local Inception weights); flow metrics
    when ``real`` is flow data (``evaluate_flows_command``); the likelihood with ``nll``."""
    from ..metrics import evaluate_images

    if request.nll:
        return likelihood_command(request)
    if request.probes is not None:
        raise UserError("--probes sets Hutchinson's estimator of --nll; add --nll or leave --probes out")
    sizes = protocol_sizes(request)
    if is_flow_spec(request.real):
        if sizes is not None:
            raise UserError("--groups and --reference-sets apply to images; leave them out for flow data")
        return evaluate_flows_command(request)
    groups = 1 if sizes is None else sizes[0]
    fake_clipped: float | None = None
    settings: dict[str, object] = {
        "real": request.real,
        "real_split": request.real_split,
        "seed": request.seed,
        "num": request.num,
    }
    if request.checkpoint is not None:
        model = with_clip_denoised(load_model(request, request.checkpoint), request.clip_denoised)
        if model.config.data_kind == "flow":
            raise UserError(f"{request.checkpoint} is a flow model; compare it with flow data: --real flows:PATH")
        if model.config.data_kind != "image":
            raise UserError(
                f"{request.checkpoint} is an angle model and evaluate compares images; compare its samples with the data "
                "through sample --out-plot FILE.png"
            )
        image_size, channels = model.config.image_size, model.config.channels
        check_evaluate_sizes(request, channels, image_size, groups)
        result = model.sample(
            groups * request.num,
            sampler=request.sampling.build(),
            nfe=request.sampling.nfe,
            batch_size=request.batch_size,
            generator=torch.Generator().manual_seed(request.seed),
        )
        fake, clipped = model.decode(result.states)
        fake = fake.cpu()
        fake_clipped = clipped / fake.numel()
        warn_if_undertrained(fake_clipped, request.checkpoint)
        settings.update(
            checkpoint=str(request.checkpoint),
            sampler=request.sampling.build().label,
            nfe=result.function_evaluations,
            clip_denoised=request.clip_denoised,
            ema=not request.no_ema,
        )
    elif request.fake is None:
        raise UserError(NEITHER_FAKE_NOR_CHECKPOINT)
    else:
        fake_source = open_image_source(
            request.fake,
            request.image_size,
            channels=None if request.channels == "auto" else int(request.channels),
            split="all",
            on_bad_image=request.on_bad_image,
            max_image_pixels=request.max_image_pixels,
        )
        image_size, channels = request.image_size, fake_source.channels
        check_evaluate_sizes(request, channels, image_size, groups)
        # A folder gives each of its images once (up to --num per group); the embedded sets give --num crops per group.
        wanted = groups * request.num
        count = wanted if request.fake in DATA_CHOICES else min(wanted, len(fake_source))
        if count // groups < 2:
            raise UserError(
                f"{request.fake}: {count} image(s) make fewer than 2 per group for --groups {groups}; "
                "add images or pass fewer groups"
            )
        fake = fake_source.fixed_batch(count - count % groups, seed=request.seed)
        settings.update(fake=request.fake)
    if sizes is not None:
        return evaluate_with_intervals(request, fake, fake_clipped, image_size, channels, sizes, settings)
    real_source = open_image_source(
        request.real,
        image_size,
        channels=channels,
        split=request.real_split,
        seed=request.seed,
        on_bad_image=request.on_bad_image,
        max_image_pixels=request.max_image_pixels,
    )
    real = real_source.fixed_batch(distinct_reference_count(request, real_source), seed=request.seed + 1)
    if request.inception_weights is None and not request.quiet:
        print("FID/KID skipped: pass --inception-weights inception-2015-12-05.pt (see docs/evaluating.md) to add them")
    metrics: dict[str, float] = evaluate_images(
        real,
        fake,
        seed=request.seed,
        inception_weights=request.inception_weights,
        fingerprints=request.real == "fingerprints",
    )
    if fake_clipped is not None:
        metrics["clipped_fraction"] = fake_clipped
    settings.update(image_size=image_size, channels=channels, num_real=int(real.shape[0]), num_fake=int(fake.shape[0]))
    return report_metrics(request, metrics, settings)


def check_evaluate_sizes(request: EvaluateRequest, channels: int, image_size: int, groups: int = 1) -> None:
    """Refuse --num and --batch-size whose real and generated sets (held together) or sampling batch exceed the caps."""
    per_example = values_per_example(channels, image_size)
    held = (groups + max(1, request.reference_sets or 1)) * request.num
    check_values(
        held * per_example,
        MAX_HELD_VALUES,
        f"{held} images (--num {request.num} per group and reference set) of {per_example:,} values",
        "lower --num",
    )
    check_values(
        min(request.batch_size, request.num) * per_example,
        MAX_BATCH_VALUES,
        f"--batch-size {request.batch_size} images of {per_example:,} values",
        "lower --batch-size",
    )


def evaluate_with_intervals(
    request: EvaluateRequest,
    fake: torch.Tensor,
    fake_clipped: float | None,
    image_size: int,
    channels: int,
    sizes: tuple[int, int],
    settings: dict[str, object],
) -> dict[str, object]:
    """The interval protocol (docs/benchmarks-protocol.md): ``fake`` in G equal groups, each scored against R
    disjoint held-out reference sets of --num crops; each metric's mean over the G × R cells with its
    percentile-bootstrap 95 % interval (``metrics.intervals``)."""
    from ..data.reference_sets import disjoint_crop_sets, held_out_source, in_memory
    from ..metrics import evaluate_images
    from ..metrics.intervals import mean_interval

    groups, sets = sizes
    if request.real_split == "val":
        real_source = held_out_source(
            request.real,
            image_size,
            seed=request.seed,
            channels=channels,
            minimum=sets * request.num,
            on_bad_image=request.on_bad_image,
        )
    else:
        real_source = open_image_source(
            request.real,
            image_size,
            channels=channels,
            split=request.real_split,
            seed=request.seed,
            on_bad_image=request.on_bad_image,
            max_image_pixels=request.max_image_pixels,
        )
    try:
        references = disjoint_crop_sets(in_memory(real_source), sets, request.num, seed=request.seed + 1)
    except UserError as error:
        raise UserError(f"--reference-sets {sets} of --num {request.num}: {error}") from None
    if request.inception_weights is None and not request.quiet:
        print(
            "FID/KID skipped: pass --inception-weights inception-2015-12-05.pt (see README, 'Evaluating') to add them"
        )
    cells: dict[str, list[list[float]]] = {}
    fake_groups = fake.split(fake.shape[0] // groups)[:groups]
    for g, group in enumerate(fake_groups):
        for reference in references:
            scores = evaluate_images(
                reference,
                group,
                seed=request.seed,
                inception_weights=request.inception_weights,
                fingerprints=request.real == "fingerprints",
            )
            for name, value in scores.items():
                cells.setdefault(name, [[] for _ in range(groups)])[g].append(value)
    intervals = {name: mean_interval(table, seed=request.seed) for name, table in cells.items()}
    metrics: dict[str, float] = {name: interval.mean for name, interval in intervals.items()}
    if fake_clipped is not None:
        metrics["clipped_fraction"] = fake_clipped
    settings.update(
        image_size=image_size,
        channels=channels,
        groups=groups,
        reference_sets=sets,
        group_size=int(fake_groups[0].shape[0]),
        reference_size=request.num,
        held_out_images=len(real_source),
    )
    payload: dict[str, object] = {
        "metrics": metrics,
        "intervals": {name: i.as_dict() for name, i in intervals.items()},
        "tables": cells,
        "settings": settings,
    }
    if not request.quiet:
        print(
            f"{groups} groups of {settings['group_size']} against {sets} disjoint held-out sets of {request.num}; "
            "mean [95 % bootstrap interval]"
        )
        width = max(len(name) for name in metrics)
        for name, value in metrics.items():
            extra = f"  [{intervals[name].low:.6g}, {intervals[name].high:.6g}]" if name in intervals else ""
            print(f"{name:<{width}}  {value:.6g}{extra}")
    if request.json is not None:
        write_json_atomic(request.json, payload)
    return payload


def distinct_reference_count(request: EvaluateRequest, source: object) -> int:
    """How many distinct reference images --real gives for --num: a folder (or CIFAR, fingerprints) has
    ``len(source)`` base images in the split, and repeating them adds nothing; textures give fresh crops. Warns when
    fewer than --num."""
    if request.real == "textures":
        return request.num
    available = len(source)  # type: ignore[arg-type]  # every image source is Sized; the BatchSource protocol does not ask it
    if available < request.num:
        warnings.warn(
            f"--real {request.real} has {available} image(s) in its {request.real_split!r} split, fewer than --num "
            f"{request.num}: the metrics compare against these {available} distinct reference images (num_real in --json); "
            "more reference images give steadier metrics (e.g. --real-split all)",
            stacklevel=2,
        )
    return min(request.num, available)


def likelihood_command(request: EvaluateRequest) -> dict[str, object]:
    """``evaluate --nll --checkpoint M --real DATA``: the model's negative log-likelihood of --num held-out examples
    through the probability-flow ODE (``DiffusionModel.log_likelihood``); bits/dim for images (dequantised)."""
    import time

    from ..sampling.likelihood import bits_per_dim, dequantise

    if request.checkpoint is None:
        raise UserError("--nll needs --checkpoint MODEL: the likelihood is the model's, of the --real data")
    if protocol_sizes(request) is not None:
        raise UserError("--groups and --reference-sets score samples; --nll scores held-out data, so leave them out")
    probes = 2 if request.probes is None else request.probes
    model = load_model(request, request.checkpoint)
    prior = getattr(model.process.config, "prior", "von-mises")
    if prior != "von-mises":
        raise UserError(
            f"{request.checkpoint}: the model's prior ({prior}) has no closed-form density, which --nll needs; "
            "retrain it with --prior von-mises"
        )
    kind = model.config.data_kind
    check_values(
        request.num * values_per_example(model.config.channels, model.config.image_size),
        MAX_HELD_VALUES,
        f"--num {request.num} examples held in memory",
        "lower --num",
    )
    generator = torch.Generator().manual_seed(request.seed)
    if request.degrees and kind != "angle":
        raise UserError(
            f"--degrees is for angle data (--real angles:FILE); {request.checkpoint} is a{'n' if kind == 'image' else ''} {kind} model"
        )
    if kind == "image":
        if is_flow_spec(request.real) or is_angle_spec(request.real):
            raise UserError(
                f"{request.checkpoint} is an image model; --real must be images (textures, fingerprints or a folder)"
            )
        source = open_image_source(
            request.real,
            model.config.image_size,
            channels=model.config.channels,
            split=request.real_split,
            seed=request.seed,
            on_bad_image=request.on_bad_image,
            max_image_pixels=request.max_image_pixels,
        )
        data = dequantise(source.fixed_batch(request.num, seed=request.seed + 1), generator)
    elif kind == "flow":
        if not is_flow_spec(request.real):
            raise UserError(f"{request.checkpoint} is a flow model; pass its data as --real flows:PATH")
        flow_source = open_flow_source(request.real, split=request.real_split, seed=request.seed)
        check_same_flow_size(model.config.image_size, flow_source.size)
        data = flow_source.sample_batch(request.num, torch.Generator().manual_seed(request.seed + 1))
    else:
        if not is_angle_spec(request.real):
            raise UserError(
                f"{request.checkpoint} is an angle model; pass its data as --real angles:FILE or torus:NAME"
            )
        degrees = angle_unit_is_degrees(request, model)
        angle_source = open_angle_source(
            request.real,
            degrees=degrees and not request.real.startswith("torus:"),
            split=request.real_split,
            seed=request.seed,
        )
        data = angle_source.fixed_batch(request.num, seed=request.seed + 1)
    nfe = (
        None if request.sampling.nfe is None else request.sampling.nfe + request.sampling.nfe % 2
    )  # Heun: 2 per interval
    began = time.perf_counter()
    result = model.log_likelihood(data, nfe=nfe, probes=probes, generator=generator, batch_size=request.batch_size)
    seconds = time.perf_counter() - began
    nll = -result.log_likelihood
    count = nll.numel()
    dimension = math.prod(data.shape[1:])
    metrics: dict[str, float] = {
        "nll_nats": float(nll.mean()),
        "nll_standard_error": float(nll.std() / math.sqrt(count)) if count > 1 else math.nan,
        "nll_nats_per_dim": float(nll.mean()) / dimension,
    }
    if result.probe_standard_error is not None:
        # The probes' share of the spread: the standard error of the mean from the probes alone.
        metrics["probe_standard_error"] = float(result.probe_standard_error.square().sum().sqrt() / count)
    if kind == "image":
        bits = bits_per_dim(result.log_likelihood, dimension)
        metrics["bits_per_dim"] = float(bits.mean())
        metrics["bits_per_dim_standard_error"] = float(bits.std() / math.sqrt(count)) if count > 1 else math.nan
    metrics["seconds_per_example"] = seconds / count
    settings = {
        "checkpoint": str(request.checkpoint),
        "real": request.real,
        "real_split": request.real_split,
        "num": count,
        "seed": request.seed,
        "nfe": result.function_evaluations,
        "probes": probes if result.probe_standard_error is not None else 0,
        "divergence": "exact" if result.probe_standard_error is None else "hutchinson",
        "dequantisation": "uniform" if kind == "image" else None,
        "nll_unit": nll_unit(kind, dimension),
    }
    if not request.quiet:
        print(f"NLL in {settings['nll_unit']}")
    return report_metrics(request, metrics, settings)


def angle_unit_is_degrees(request: EvaluateRequest, model: DiffusionModel) -> bool:
    """Whether --real angles:FILE holds degrees: --degrees, else the unit of the model's own training data."""
    data = model.run_config.data if model.run_config is not None else None
    return request.degrees or bool(data is not None and data.degrees)


def nll_unit(kind: str, dimension: int) -> str:
    """What the NLL numbers measure, by data kind (the density is over the model's own coordinates)."""
    if kind == "image":
        return (
            "nats per image (nll_nats) and per value (nll_nats_per_dim), of pixel values in [-1, 1] dequantised; "
            "bits_per_dim over 8-bit pixel levels (the usual image-model unit)"
        )
    if kind == "angle":
        return (
            f"nats per example of {dimension} angle(s) (nll_nats) and per angle (nll_nats_per_dim), of the density "
            f"over radians whatever the file's unit (over degrees: add ln(180/π) = {math.log(180 / math.pi):.4f} per angle)"
        )
    return (
        "nats per velocity field (nll_nats) and per value (nll_nats_per_dim), of the velocities in the data's own units"
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


def check_same_flow_size(fake_size: int, real_size: int) -> None:
    if fake_size != real_size:
        raise UserError(
            f"the generated fields are {fake_size} px and the real ones {real_size} px; compare flows of one size"
        )


def evaluate_flows_command(request: EvaluateRequest) -> dict[str, object]:
    """``evaluate --real flows:PATH``: energy spectrum, spectral slope, vorticity and divergence of generated
    velocity fields (--fake: a samples .npz or a flows folder; or --checkpoint: a flow model) against real ones."""
    from ..metrics.flows import evaluate_flows

    settings: dict[str, object] = {
        "real": request.real,
        "real_split": request.real_split,
        "seed": request.seed,
        "num": request.num,
    }
    real_source = open_flow_source(request.real, split=request.real_split, seed=request.seed)
    if request.checkpoint is not None:
        model = load_model(request, request.checkpoint)
        if model.config.data_kind != "flow":
            raise UserError(
                f"{request.checkpoint} is an {model.config.data_kind} model; --real flows:… needs a flow model"
            )
        check_same_flow_size(model.config.image_size, real_source.size)
        result = model.sample(
            request.num,
            sampler=request.sampling.build(),
            nfe=request.sampling.nfe,
            batch_size=request.batch_size,
            generator=torch.Generator().manual_seed(request.seed),
        )
        fake, clipped = model.decode(result.states)
        fake = fake.cpu()
        settings.update(
            checkpoint=str(request.checkpoint), sampler=request.sampling.build().label, nfe=result.function_evaluations
        )
    elif request.fake is None:
        raise UserError(NEITHER_FAKE_NOR_CHECKPOINT)
    else:
        fake_source = open_flow_source(request.fake, split="all")
        check_same_flow_size(fake_source.size, real_source.size)
        frames, count = [], 0
        for index in range(len(fake_source)):  # only as many trajectories as --num frames need
            frames.append(fake_source.trajectory(index))
            count += frames[-1].shape[0]
            if count >= request.num:
                break
        fake = torch.cat(frames)[: request.num]
        clipped = None
        settings.update(fake=request.fake)
    real = real_source.sample_batch(request.num, torch.Generator().manual_seed(request.seed + 1))
    metrics = evaluate_flows(real, fake)
    if clipped is not None:
        metrics["clipped_fraction"] = clipped / fake[:, :1].numel()
    settings.update(size=real_source.size, num_real=int(real.shape[0]), num_fake=int(fake.shape[0]))
    return report_metrics(request, metrics, settings)
