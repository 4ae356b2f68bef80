"""``kuramoto-diffusion evaluate``: weight-free image metrics (FID and KID with local Inception weights), flow
metrics for flow data, or with ``nll`` the model's negative log-likelihood through the probability-flow ODE."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data import DATA_CHOICES, is_angle_spec, is_flow_spec, open_angle_source, open_flow_source, open_image_source
from ..errors import UserError
from ..model import DiffusionModel
from ..runtime import resolve_device
from ..serialization import write_json_atomic
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
    seed: int = 0
    quiet: bool = False


def evaluate(request: EvaluateRequest) -> dict[str, object]:
    """Image metrics of generated against real images (and FID/KID with local Inception weights); flow metrics
    when ``real`` is flow data (``evaluate_flows_command``); the likelihood with ``nll``."""
    from ..metrics import evaluate_images

    if request.nll:
        return likelihood_command(request)
    if request.probes is not None:
        raise UserError("--probes sets Hutchinson's estimator of --nll; add --nll or leave --probes out")
    if is_flow_spec(request.real):
        return evaluate_flows_command(request)
    fake_clipped: float | None = None
    settings: dict[str, object] = {"real": request.real, "real_split": request.real_split, "seed": request.seed, "num": request.num}
    if request.checkpoint is not None:
        model = with_clip_denoised(
            DiffusionModel.from_pretrained(request.checkpoint, device=resolve_device(request.device)), request.clip_denoised
        )
        if model.config.data_kind == "flow":
            raise UserError(f"{request.checkpoint} is a flow model; compare it with flow data: --real flows:PATH")
        if model.config.data_kind != "image":
            raise UserError(
                f"{request.checkpoint} is an angle model and evaluate compares images; compare its samples with the data "
                "through sample --out-plot FILE.png"
            )
        image_size, channels = model.config.image_size, model.config.channels
        result = model.sample(request.num, sampler=request.sampling.build(), nfe=request.sampling.nfe, batch_size=request.batch_size,
                              generator=torch.Generator().manual_seed(request.seed))
        fake, clipped = model.decode(result.states)
        fake_clipped = clipped / fake.numel()
        warn_if_undertrained(fake_clipped, request.checkpoint)
        settings.update(checkpoint=str(request.checkpoint), sampler=request.sampling.build().label, nfe=result.function_evaluations,
                        clip_denoised=request.clip_denoised)
    else:
        fake_source = open_image_source(
            request.fake, request.image_size, channels=None if request.channels == "auto" else int(request.channels), split="all",
            on_bad_image=request.on_bad_image,
        )
        image_size, channels = request.image_size, fake_source.channels
        # A folder gives each of its images once (up to --num); the embedded sets give --num crops.
        count = request.num if request.fake in DATA_CHOICES else min(request.num, len(fake_source))
        fake = fake_source.fixed_batch(count, seed=request.seed)
        settings.update(fake=request.fake)
    real_source = open_image_source(
        request.real, image_size, channels=channels, split=request.real_split, seed=request.seed, on_bad_image=request.on_bad_image
    )
    real = real_source.fixed_batch(distinct_reference_count(request, real_source), seed=request.seed + 1)
    if request.inception_weights is None and not request.quiet:
        print("FID/KID skipped: pass --inception-weights inception-2015-12-05.pt (see docs/evaluating.md) to add them")
    metrics: dict[str, float] = evaluate_images(
        real, fake, seed=request.seed, inception_weights=request.inception_weights, fingerprints=request.real == "fingerprints"
    )
    if fake_clipped is not None:
        metrics["clipped_fraction"] = fake_clipped
    settings.update(image_size=image_size, channels=channels, num_real=int(real.shape[0]), num_fake=int(fake.shape[0]))
    return report_metrics(request, metrics, settings)


def distinct_reference_count(request: EvaluateRequest, source: object) -> int:
    """How many distinct reference images --real gives for --num: a folder (or CIFAR, fingerprints) has
    ``len(source)`` base images in the split, and repeating them adds nothing; textures give fresh crops. Warns when
    fewer than --num."""
    if request.real == "textures":
        return request.num
    available = len(source)  # type: ignore[arg-type]
    if available < request.num:
        warnings.warn(
            f"--real {request.real} has {available} image(s) in its {request.real_split!r} split, fewer than --num "
            f"{request.num}: the metrics compare against these {available} distinct reference images (num_real in --json); "
            "more reference images give steadier metrics (e.g. --real-split all)", stacklevel=2,
        )
    return min(request.num, available)


def likelihood_command(request: EvaluateRequest) -> dict[str, object]:
    """``evaluate --nll --checkpoint M --real DATA``: the model's negative log-likelihood of --num held-out examples
    through the probability-flow ODE (``DiffusionModel.log_likelihood``); bits/dim for images (dequantised)."""
    import time

    from ..sampling.likelihood import bits_per_dim, dequantise

    if request.checkpoint is None:
        raise UserError("--nll needs --checkpoint MODEL: the likelihood is the model's, of the --real data")
    probes = 2 if request.probes is None else request.probes
    model = DiffusionModel.from_pretrained(request.checkpoint, device=resolve_device(request.device))
    kind = model.config.data_kind
    generator = torch.Generator().manual_seed(request.seed)
    if request.degrees and kind != "angle":
        raise UserError(f"--degrees is for angle data (--real angles:FILE); {request.checkpoint} is a{'n' if kind == 'image' else ''} {kind} model")
    if kind == "image":
        if is_flow_spec(request.real) or is_angle_spec(request.real):
            raise UserError(f"{request.checkpoint} is an image model; --real must be images (textures, fingerprints or a folder)")
        source = open_image_source(request.real, model.config.image_size, channels=model.config.channels,
                                   split=request.real_split, seed=request.seed, on_bad_image=request.on_bad_image)
        data = dequantise(source.fixed_batch(request.num, seed=request.seed + 1), generator)
    elif kind == "flow":
        if not is_flow_spec(request.real):
            raise UserError(f"{request.checkpoint} is a flow model; pass its data as --real flows:PATH")
        source = open_flow_source(request.real, split=request.real_split, seed=request.seed)
        check_same_flow_size(model.config.image_size, source.size)
        data = source.sample_batch(request.num, torch.Generator().manual_seed(request.seed + 1))
    else:
        if not is_angle_spec(request.real):
            raise UserError(f"{request.checkpoint} is an angle model; pass its data as --real angles:FILE or torus:NAME")
        degrees = angle_unit_is_degrees(request, model)
        source = open_angle_source(request.real, degrees=degrees and not request.real.startswith("torus:"),
                                   split=request.real_split, seed=request.seed)
        data = source.fixed_batch(request.num, seed=request.seed + 1)
    nfe = None if request.sampling.nfe is None else request.sampling.nfe + request.sampling.nfe % 2  # Heun: 2 per interval
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
    settings = {"checkpoint": str(request.checkpoint), "real": request.real, "real_split": request.real_split, "num": count,
                "seed": request.seed, "nfe": result.function_evaluations, "probes": probes if result.probe_standard_error is not None else 0,
                "divergence": "exact" if result.probe_standard_error is None else "hutchinson",
                "dequantisation": "uniform" if kind == "image" else None, "nll_unit": nll_unit(kind, dimension)}
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
        return ("nats per image (nll_nats) and per value (nll_nats_per_dim), of pixel values in [-1, 1] dequantised; "
                "bits_per_dim over 8-bit pixel levels (the usual image-model unit)")
    if kind == "angle":
        return (f"nats per example of {dimension} angle(s) (nll_nats) and per angle (nll_nats_per_dim), of the density "
                f"over radians whatever the file's unit (over degrees: add ln(180/π) = {math.log(180 / math.pi):.4f} per angle)")
    return "nats per velocity field (nll_nats) and per value (nll_nats_per_dim), of the velocities in the data's own units"



def report_metrics(request: EvaluateRequest, metrics: dict[str, float], settings: dict[str, object]) -> dict[str, object]:
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
        raise UserError(f"the generated fields are {fake_size} px and the real ones {real_size} px; compare flows of one size")


def evaluate_flows_command(request: EvaluateRequest) -> dict[str, object]:
    """``evaluate --real flows:PATH``: energy spectrum, spectral slope, vorticity and divergence of generated
    velocity fields (--fake: a samples .npz or a flows folder; or --checkpoint: a flow model) against real ones."""
    from ..metrics.flows import evaluate_flows

    settings: dict[str, object] = {"real": request.real, "real_split": request.real_split, "seed": request.seed, "num": request.num}
    real_source = open_flow_source(request.real, split=request.real_split, seed=request.seed)
    if request.checkpoint is not None:
        model = DiffusionModel.from_pretrained(request.checkpoint, device=resolve_device(request.device))
        if model.config.data_kind != "flow":
            raise UserError(f"{request.checkpoint} is an {model.config.data_kind} model; --real flows:… needs a flow model")
        check_same_flow_size(model.config.image_size, real_source.size)
        result = model.sample(request.num, sampler=request.sampling.build(), nfe=request.sampling.nfe, batch_size=request.batch_size,
                              generator=torch.Generator().manual_seed(request.seed))
        fake, clipped = model.decode(result.states)
        fake = fake.cpu()
        settings.update(checkpoint=str(request.checkpoint), sampler=request.sampling.build().label, nfe=result.function_evaluations)
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
