"""``evaluate`` of a flow model: flow metrics of generated against real velocity fields."""

from __future__ import annotations

import torch

from ..data import open_flow_source
from ..errors import UserError
from .evaluate_request import (
    NEITHER_FAKE_NOR_CHECKPOINT,
    EvaluateRequest,
    data_split,
    load_model,
    report_metrics,
    sample_model,
)


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
    model = None if request.checkpoint is None else load_model(request, request.checkpoint)
    split = data_split(request, model)  # a flow model is scored on the split it did not train on
    settings.update(split.settings())
    real_source = open_flow_source(
        request.real, split=request.real_split, val_fraction=split.val_fraction, seed=split.seed
    )
    if model is not None:
        if model.config.data_kind != "flow":
            raise UserError(
                f"{request.checkpoint} is an {model.config.data_kind} model; --real flows:… needs a flow model"
            )
        check_same_flow_size(model.config.image_size, real_source.size)
        fake, clipped, evaluations = sample_model(request, model, request.num)
        settings.update(checkpoint=str(request.checkpoint), sampler=request.sampling.build().label, nfe=evaluations)
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
