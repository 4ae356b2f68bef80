"""``evaluate --nll``: negative log-likelihood through the probability-flow ODE, and its unit."""

from __future__ import annotations

import math

import torch

from ..data import is_angle_spec, is_flow_spec, open_angle_source, open_flow_source, open_image_source
from ..errors import UserError
from ..model import DiffusionModel
from .evaluate_flows import check_same_flow_size
from .evaluate_request import EvaluateRequest, data_split, load_model, protocol_sizes, report_metrics
from .limits import MAX_HELD_VALUES, check_values, values_per_example


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
    if not model.process.prior_has_density:
        raise UserError(
            f"{request.checkpoint}: the model's prior ({model.process.config.prior}) has no closed-form density, "
            "which --nll needs; "
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
    split = data_split(request, model)
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
            val_fraction=split.val_fraction,
            seed=split.seed,
            on_bad_image=request.on_bad_image,
            max_image_pixels=request.max_image_pixels,
        )
        data = dequantise(source.fixed_batch(request.num, seed=request.seed + 1), generator)
    elif kind == "flow":
        if not is_flow_spec(request.real):
            raise UserError(f"{request.checkpoint} is a flow model; pass its data as --real flows:PATH")
        flow_source = open_flow_source(
            request.real, split=request.real_split, val_fraction=split.val_fraction, seed=split.seed
        )
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
            val_fraction=split.val_fraction,
            seed=split.seed,
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
        **split.settings(),
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
