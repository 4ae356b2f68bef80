"""The ``make demo`` job: forward picture, a brief fine-tune of the shipped texture model,
samples beside real crops, a forward/reverse animation, R(t), and the shipped Kuramoto-local
models beside their Euclidean baselines.

Minutes of CPU training cannot reach textures from scratch, so the package ships small
models trained by the project (``pretrained/``; the commands that made them are in the
docs/benchmarks.md). Without the texture model, the demo trains from scratch for ``fine_tune_steps``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from ..data import open_image_source
from ..model import PRETRAINED_ROOT, DiffusionModel
from ..processes import EuclideanConfig
from ..viz.images import (
    image_grid,
    labelled_rows,
    order_parameter_curve,
    order_parameter_plot,
    order_parameter_title,
    save_animation,
    save_image_atomic,
)
from .forward import ForwardRequest, forward_picture
from .sample import save_trajectory_animation
from .train import TrainRequest, train

# kuramoto_vs_euclidean.png: per data set, the shipped Kuramoto-local model and its Euclidean baseline, trained
# by bench/quality.py with the same network, examples and seed (docs/benchmarks.md, "The shipped models").
SHIPPED_PAIRS: dict[str, tuple[str, str]] = {
    "fingerprints": ("fingerprints-kuramoto-local-32", "fingerprints-euclidean-32"),
    "textures": ("textures-kuramoto-local-32", "textures-euclidean-32"),
}
PRETRAINED = PRETRAINED_ROOT / SHIPPED_PAIRS["textures"][0]  # the model the demo fine-tunes


@dataclass(frozen=True)
class ShippedSamples:
    """What ``compare_shipped_models`` drew from one shipped model."""

    data: str
    model: str  # its folder name under the pretrained root
    clipped_fraction: float  # decoded values outside [-1, 1], as a fraction of all values


def complete_pairs(root: Path, pairs: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """The entries of ``pairs`` whose two model folders under ``root`` both hold weights."""
    return {
        data: names
        for data, names in pairs.items()
        if all((root / name / "model.safetensors").is_file() for name in names)
    }


def compare_shipped_models(
    path: Path,
    *,
    root: Path = PRETRAINED_ROOT,
    pairs: dict[str, tuple[str, str]] = SHIPPED_PAIRS,
    num: int = 16,
    seed: int = 0,
    device: str = "cpu",
) -> list[ShippedSamples]:
    """Write one picture with, per data set of ``pairs`` whose two models are under ``root``: ``num`` held-out
    crops, then ``num`` samples of each model with the reverse SDE at one step per diffusion step, the
    Euclidean one with DDPM's x₀ clipping (its best sampler in BENCHMARKS.md). Returns what was drawn; an
    empty list (and no picture) when no pair is shipped.
    """

    rows: list[tuple[str, Image.Image]] = []
    drawn: list[ShippedSamples] = []
    for data, names in complete_pairs(root, pairs).items():
        models = [DiffusionModel.from_pretrained(root / name, device=device) for name in names]
        # the Euclidean models (the pairs' non-periodic ones) with x₀ clipping
        models = [
            model.with_process(dataclasses.replace(model.config.process, clip_denoised=True))
            if isinstance(model.config.process, EuclideanConfig)
            else model
            for model in models
        ]
        real = open_image_source(data, models[0].config.image_size, channels=1, split="val").fixed_batch(num, seed=seed)
        rows.append((f"{data}: real", image_grid(real, columns=num, upscale=2)))
        for name, model in zip(names, models):
            result = model.sample(num, sampler="sde", generator=torch.Generator(device=device).manual_seed(seed))
            images, clipped = model.decode(result.states.cpu())
            label = "Kuramoto-local" if model.config.periodic else "Euclidean"
            rows.append((f"{data}: {label}", image_grid(images, columns=num, upscale=2)))
            drawn.append(ShippedSamples(data, name, clipped / images.numel()))
    if rows:
        save_image_atomic(labelled_rows(rows, label_width=190), path)
    return drawn


def run_demo(
    out: Path, *, fine_tune_steps: int = 100, device: str = "auto", seed: int = 0, quiet: bool = False
) -> None:
    began = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda message: None) if quiet else print
    say("1/5 forward processes: Kuramoto global, Kuramoto local and Euclidean on texture crops")
    forward_path = forward_picture(
        ForwardRequest(data="textures", image_size=32, num=3, frames=9, out=out / "forward.png", seed=seed)
    )

    run_dir = out / "run"
    have_pretrained = (PRETRAINED / "model.safetensors").is_file()
    say(
        f"2/5 fine-tuning the shipped model for {fine_tune_steps} steps"
        if have_pretrained
        else f"2/5 no shipped model found: training from scratch for {fine_tune_steps} steps (expect noise-like samples)"
    )
    resume = (run_dir / "checkpoints").is_dir() and any((run_dir / "checkpoints").iterdir())
    steps = max(fine_tune_steps, 1)
    request = TrainRequest(
        out=run_dir,
        device=device,
        data="textures",
        image_size=32,
        channels="1",
        process="kuramoto-local",
        # The shipped model's own network and objective (the defaults, propagated); the preset only matters without it.
        preset="tiny",
        train_steps=steps,
        batch_size=32,
        lr=1e-4,
        ema_decay=0.999,
        checkpoint_every=steps,
        keep_checkpoints=1,
        sample_every=0,
        steps=100,
        seed=seed,
        quiet=quiet,
        resume=resume,
        init_from=PRETRAINED if have_pretrained and not resume else None,
    )
    model = train(request)

    say("3/5 sampling 36 textures with the reverse SDE (100 steps)")
    generator = torch.Generator().manual_seed(seed)
    result = model.sample(36, sampler="sde", generator=generator, record_trajectory=True)
    samples, clipped = model.decode(result.states)
    real = open_image_source("textures", 32, channels=1, split="val").fixed_batch(36, seed=seed)
    comparison = labelled_rows(
        [
            ("generated", image_grid(samples, columns=6, upscale=3)),
            ("real crops", image_grid(real, columns=6, upscale=3)),
        ]
    )
    save_image_atomic(comparison, out / "samples_vs_real.png")

    say("4/5 animation and order parameter R(t)")
    save_trajectory_animation(model, result, out / "generation.gif")
    # One forward simulation of the real crops serves both the animation and R(t).
    forward_states = model.process.simulate(
        model.encode(real), model.process.steps, generator=generator, return_trajectory=True
    )
    forward_then_reverse_animation(model, forward_states[:, :16], result, out / "forward_reverse.gif")
    forward_r = order_parameter_curve(forward_states)
    T = model.process.steps
    curves = {
        "forward (real data)": ([t / T for t in range(T + 1)], forward_r.tolist()),
        "reverse (generation)": ([s / T for s in result.steps], result.order_parameter),
    }
    # The encoded images start more ordered than the prior (θ = a·x lies within ±a of ψ_ref), so R falls
    # forward and rises back in generation; the title states what the curves do.
    title = order_parameter_title(curves, "order parameter R(t): real data pushed forward, and generation")
    save_image_atomic(order_parameter_plot(curves, title), out / "order_parameter.png")

    say("5/5 the shipped Kuramoto-local models beside their Euclidean baselines")
    shipped = compare_shipped_models(out / "kuramoto_vs_euclidean.png", seed=seed, device=str(model.device))
    for entry in shipped:
        say(f"  {entry.model}: {100 * entry.clipped_fraction:.3f} % of decoded values clipped")
    pictures = ["samples_vs_real.png", "forward.png", "forward_reverse.gif", "generation.gif", "order_parameter.png"]
    if shipped:
        pictures.append("kuramoto_vs_euclidean.png")
    minutes = (time.perf_counter() - began) / 60
    say(f"done in {minutes:.1f} min; {clipped} of {samples.numel()} decoded values clipped. Pictures:")
    for name in pictures:
        say(f"  {out / name}")
    say(f"  checkpoints: {run_dir / 'checkpoints'}   (forward picture: {forward_path})")


def forward_then_reverse_animation(model: DiffusionModel, forward_states: torch.Tensor, result, path: Path) -> None:  # noqa: ANN001
    """Real crops synchronising to the prior (``forward_states``: (T+1, B, …)), then samples desynchronising."""
    T = model.process.steps
    frames = []
    for t in range(0, T + 1, max(1, T // 25)):
        images, _ = model.decode(forward_states[t])
        frames.append(labelled_rows([(f"forward t={t}", image_grid(images, columns=4, upscale=3))], label_width=110))
    for index in range(0, len(result.steps), max(1, len(result.steps) // 25)):
        images, _ = model.decode(result.trajectory[index][:16])
        frames.append(
            labelled_rows(
                [(f"reverse t={result.steps[index]}", image_grid(images, columns=4, upscale=3))], label_width=110
            )
        )
    images, _ = model.decode(result.states[:16])
    frames += [labelled_rows([("generated", image_grid(images, columns=4, upscale=3))], label_width=110)] * 12
    save_animation(frames, path, duration_ms=90)
