"""``kuramoto-diffusion evaluate``: weight-free image metrics (FID and KID with local Inception weights), flow
metrics for flow data, or with ``nll`` the model's negative log-likelihood through the probability-flow ODE."""

from __future__ import annotations

import warnings

import torch

from ..data import DATA_CHOICES, is_flow_spec, open_image_source
from ..errors import UserError
from ..serialization import write_json_atomic
from .evaluate_flows import evaluate_flows_command
from .evaluate_likelihood import likelihood_command
from .evaluate_likelihood import nll_unit as nll_unit  # re-exported
from .evaluate_request import (
    NEITHER_FAKE_NOR_CHECKPOINT,
    DataSplit,
    EvaluateRequest,
    data_split,
    load_model,
    open_real_images,
    protocol_sizes,
    report_metrics,
    sample_model,
)
from .limits import MAX_BATCH_VALUES, MAX_HELD_VALUES, check_values, values_per_example
from .sample import warn_if_undertrained, with_clip_denoised


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
    split = data_split(request)
    if request.checkpoint is not None:
        model = with_clip_denoised(load_model(request, request.checkpoint), request.clip_denoised)
        split = data_split(request, model)
        if model.config.data_kind == "flow":
            raise UserError(f"{request.checkpoint} is a flow model; compare it with flow data: --real flows:PATH")
        if model.config.data_kind != "image":
            raise UserError(
                f"{request.checkpoint} is an angle model and evaluate compares images; compare its samples with the data "
                "through sample --out-plot FILE.png"
            )
        image_size, channels = model.config.image_size, model.config.channels
        check_evaluate_sizes(request, channels, image_size, groups)
        fake, clipped, evaluations = sample_model(request, model, groups * request.num)
        fake_clipped = clipped / fake.numel()
        warn_if_undertrained(fake_clipped, request.checkpoint)
        settings.update(
            checkpoint=str(request.checkpoint),
            sampler=request.sampling.build().label,
            nfe=evaluations,
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
    settings.update(split.settings())
    if sizes is not None:
        return evaluate_with_intervals(request, fake, fake_clipped, image_size, channels, sizes, settings, split)
    real_source = open_real_images(request, image_size, channels, split)
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
    split: DataSplit,
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
            seed=split.seed,
            channels=channels,
            minimum=sets * request.num,
            on_bad_image=request.on_bad_image,
            val_fraction=split.val_fraction,
        )
    else:
        real_source = open_real_images(request, image_size, channels, split)
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
