"""The options of the subcommands other than ``train`` (app/train_parser.py): forward, sample, evaluate, info,
demo and flows."""

from __future__ import annotations

import argparse
from pathlib import Path

from .limits import OPTION_CAPS
from .options import (
    CHANNEL_NAMES,
    DEVICE_NAMES,
    Formatter,
    Parser,
    add_bad_image_option,
    add_common,
    add_process_options,
    add_sampler_options,
    capped_positive_int,
    image_size,
    non_negative_int,
    positive_float,
    positive_int,
    whole_number,
)


def add_forward_parser(commands: argparse._SubParsersAction) -> None:
    """``forward``: one option per ForwardRequest field."""
    forward = commands.add_parser(
        "forward",
        help="picture of the forward processes and R(t)",
        formatter_class=Formatter,
        description="Draw a few images pushed through Kuramoto global, Kuramoto local and Euclidean diffusion, with R(t).",
    )
    forward.add_argument("--data", default="textures", help="textures, fingerprints, or a folder of images")
    forward.add_argument("--image-size", type=image_size, default=32, help="pixels per side")
    forward.add_argument(
        "--num", type=capped_positive_int(OPTION_CAPS["forward_num"]), default=3, help="images to show"
    )
    forward.add_argument(
        "--frames", type=capped_positive_int(OPTION_CAPS["forward_frames"]), default=9, help="snapshots per strip"
    )
    forward.add_argument("--out", type=Path, default=Path("forward.png"), help="output PNG")
    add_bad_image_option(forward)
    add_process_options(forward)
    add_common(forward)


def add_sample_parser(commands: argparse._SubParsersAction) -> None:
    """``sample``: one option per SampleRequest field."""
    sample = commands.add_parser(
        "sample",
        help="generate images (or angles) from a trained model",
        formatter_class=Formatter,
        description="Generate images with the reverse SDE or the probability-flow ODE.",
    )
    sample.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="run directory, checkpoint directory, model directory, or a shipped model by name "
        "(textures-kuramoto-local-32, textures-euclidean-32, fingerprints-kuramoto-local-32, fingerprints-euclidean-32)",
    )
    sample.add_argument(
        "--num",
        "--num-images",
        dest="num",
        type=capped_positive_int(OPTION_CAPS["num"]),
        default=64,
        help="images to generate (under torchrun write --num-images: torchrun claims --num… for itself)",
    )
    add_sampler_options(sample)
    sample.add_argument("--batch-size", type=positive_int, default=64, help="images per batch")
    sample.add_argument(
        "--out",
        type=Path,
        default=None,
        help="image models: grid PNG (default samples.png); angle models: the angles as .csv or .npy, in the training "
        "data's units (default samples.csv); flow models: the velocities as .npz (default samples.npz)",
    )
    sample.add_argument(
        "--out-npy", type=Path, default=None, help="image models: also the images as float32 (N, C, H, W) in [-1, 1]"
    )
    sample.add_argument(
        "--out-plot",
        type=Path,
        default=None,
        help="angle models: PNG of 2-D histograms, training data beside the samples (angles 1 and 2; a histogram for D = 1); "
        "flow models: PNG of vorticity and velocity arrows, training fields above the samples",
    )
    sample.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="also write each image as a numbered PNG here: resumable chunks of --batch-size, split over processes under torchrun",
    )
    sample.add_argument(
        "--save-trajectory", type=Path, default=None, help="animated GIF of the reverse process with R(t)"
    )
    sample.add_argument(
        "--from-data",
        default=None,
        help="edit (SDEdit): start from these images (an image file, a folder, textures, fingerprints) pushed to --start-step",
    )
    sample.add_argument(
        "--start-step", type=positive_int, default=None, help="with --from-data: how far to push forward (default T/2)"
    )
    sample.add_argument(
        "--inpaint", type=Path, default=None, help="image file whose masked part is filled in (--num variants)"
    )
    sample.add_argument(
        "--mask",
        type=Path,
        default=None,
        help="with --inpaint: mask of the image's size, white = fill, black = keep (as diffusers, OpenCV, LaMa)",
    )
    sample.add_argument(
        "--invert-mask", action="store_true", help="with --mask: white = keep, black = fill (RePaint's convention)"
    )
    sample.add_argument(
        "--resample",
        type=capped_positive_int(OPTION_CAPS["resample"]),
        default=1,
        help="with --inpaint: RePaint resampling repeats per interval",
    )
    sample.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    sample.add_argument("--device", choices=DEVICE_NAMES, default="auto", help="where to sample")
    sample.add_argument(
        "--clip-denoised",
        action="store_true",
        help="Euclidean models: clip the denoised estimate x0 to [-1, 1] at every step (DDPM's sampler)",
    )
    sample.add_argument(
        "--class", dest="class_name", default=None, help="class-conditional models: the class to generate"
    )
    sample.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="with --class or --context: classifier-free guidance w (0 unconditional, 1 conditional, >1 stronger)",
    )
    sample.add_argument(
        "--context",
        type=Path,
        default=None,
        help="forecasting flow models: a .npz (array 'velocity', frames × 2 × N × N) whose first frames are the "
        "context; later frames, if any, are the truth the forecast is scored against",
    )
    sample.add_argument(
        "--rollout", type=positive_int, default=1, help="with --context: frames to forecast autoregressively"
    )
    sample.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels only (slower on GPU; see docs/cli.md, 'Determinism')",
    )
    add_bad_image_option(sample)
    add_common(sample)


def add_evaluate_parser(commands: argparse._SubParsersAction) -> None:
    """``evaluate``: one option per EvaluateRequest field."""
    evaluate = commands.add_parser(
        "evaluate",
        help="compare generated images with real ones",
        formatter_class=Formatter,
        description="Weight-free metrics (Laplacian SWD, orientation statistics, spectrum, pixel histogram, clipping); "
        "FID and KID only with --inception-weights pointing at a local file. Data forms for --real: textures, "
        "fingerprints, a folder of images; flows:PATH for flow models; angles:FILE and torus:NAME for angle "
        "models (with --nll).",
    )
    evaluate.add_argument(
        "--real",
        default="textures",
        help="the reference data: textures, fingerprints, a folder of images or cifar-10-binary.tar.gz "
        "(image metrics); flows:PATH (flow metrics for flow models); with --nll also angles:FILE "
        "(a .csv/.npy of N rows by D angles) or torus:NAME for angle models",
    )
    evaluate.add_argument("--real-split", choices=("val", "train", "all"), default="val", help="which part of --real")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--fake", default=None, help="a folder of generated images (flows: a samples .npz or flows folder)"
    )
    source.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="sample from this model instead (a run, checkpoint or model directory, or a shipped model's name)",
    )
    evaluate.add_argument("--num", type=capped_positive_int(OPTION_CAPS["num"]), default=256, help="images per set")
    add_sampler_options(evaluate, " (with --checkpoint)")
    evaluate.add_argument("--batch-size", type=positive_int, default=64, help="sampling batch size")
    evaluate.add_argument("--image-size", type=image_size, default=32, help="with --fake: pixels per side")
    evaluate.add_argument("--channels", choices=CHANNEL_NAMES, default="auto", help="with --fake")
    evaluate.add_argument(
        "--clip-denoised", action="store_true", help="with a Euclidean --checkpoint: DDPM's x0 clipping"
    )
    evaluate.add_argument(
        "--inception-weights", type=Path, default=None, help="local inception-2015-12-05.pt for FID/KID"
    )
    evaluate.add_argument(
        "--nll",
        action="store_true",
        help="with --checkpoint: negative log-likelihood of --num --real examples through the "
        "probability-flow ODE (bits/dim for images), instead of the sample metrics",
    )
    evaluate.add_argument(
        "--probes",
        type=positive_int,
        default=None,
        help="with --nll: Hutchinson probes for states of more than 32 values (default 2)",
    )
    evaluate.add_argument(
        "--groups",
        type=lambda text: whole_number(text, 2),
        default=None,
        help="score --num × G samples as G groups of --num, each against every reference set, and "
        "print each metric's mean with its bootstrap 95 %% interval (≥ 2; --reference-sets alone: 4)",
    )
    evaluate.add_argument(
        "--reference-sets",
        type=lambda text: whole_number(text, 2),
        default=None,
        help="R disjoint held-out sets of --num real crops to score every group against (≥ 2; "
        "--groups alone: 4); more than the split can fill is an error",
    )
    evaluate.add_argument("--no-ema", action="store_true", help="with --checkpoint: the raw weights instead of the EMA")
    evaluate.add_argument(
        "--degrees",
        action="store_true",
        help="with --nll and --real angles:FILE: the file holds degrees (default: the unit the model was trained on)",
    )
    evaluate.add_argument("--json", type=Path, default=None, help="write metrics and settings here")
    evaluate.add_argument("--device", choices=DEVICE_NAMES, default="auto", help="where to sample")
    add_bad_image_option(evaluate)
    add_common(evaluate)


def add_info_parser(commands: argparse._SubParsersAction) -> None:
    """``info``: the run to describe."""
    info = commands.add_parser("info", help="show a run's config, step and prior", formatter_class=Formatter)
    info.add_argument("path", type=Path, help="run, checkpoint or model directory")
    info.add_argument(
        "--all",
        dest="show_all",
        action="store_true",
        help="the full config as saved, not only the settings that apply to this model",
    )
    add_common(info)


def add_demo_parser(commands: argparse._SubParsersAction) -> None:
    """``demo``: the make-demo job."""
    demo = commands.add_parser(
        "demo",
        help="the make-demo job: forward picture, samples, animation",
        formatter_class=Formatter,
        description="Fine-tune the shipped texture model briefly and write pictures to --out.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    demo.add_argument(
        "--fine-tune-steps", type=non_negative_int, default=100, help="training steps on top of the shipped model"
    )
    demo.add_argument("--device", choices=DEVICE_NAMES, default="auto", help="where to run")
    add_common(demo)


def add_flows_parser(commands: argparse._SubParsersAction) -> None:
    """``flows generate``: Navier–Stokes trajectories for the flow experiments (data/flow_generation.py)."""
    flows = commands.add_parser("flows", help="2-D Navier–Stokes flow data", formatter_class=Formatter)
    actions = flows.add_subparsers(dest="flows_command", metavar="ACTION", required=True, parser_class=Parser)
    generate = actions.add_parser(
        "generate",
        help="simulate trajectories into a folder (resumable)",
        formatter_class=Formatter,
        description="Pseudo-spectral 2-D Navier–Stokes (vorticity form, periodic box [0, 2π)²): one "
        "trajectory_NNNNN.npz per trajectory (velocity (frames, 2, N, N), vorticity, time) and flows.json. "
        "Rerunning skips the trajectories already written.",
    )
    generate.add_argument("--out", type=Path, required=True, help="output folder")
    generate.add_argument("--num", type=capped_positive_int(OPTION_CAPS["num"]), default=16, help="trajectories")
    generate.add_argument(
        "--size", type=positive_int, default=64, help="grid points per side (64 or 128; any even number ≥ 8)"
    )
    generate.add_argument("--frames", type=positive_int, default=8, help="snapshots per trajectory")
    generate.add_argument("--viscosity", type=positive_float, default=1e-3, help="kinematic viscosity ν")
    generate.add_argument("--drag", type=float, default=0.1, help="linear drag α ≥ 0")
    generate.add_argument(
        "--forcing",
        choices=("kolmogorov", "random", "none"),
        default="kolmogorov",
        help="kolmogorov: body force (A sin(k_f y), 0); random: a steady random large-scale forcing; none: decaying",
    )
    generate.add_argument("--forcing-amplitude", type=float, default=1.0, help="A")
    generate.add_argument("--forcing-wavenumber", type=positive_int, default=4, help="k_f")
    generate.add_argument("--spinup-time", type=float, default=10.0, help="simulated time before the first frame")
    generate.add_argument("--frame-interval", type=positive_float, default=0.5, help="simulated time between frames")
    generate.add_argument("--device", choices=DEVICE_NAMES, default="cpu", help="where to run the solver")
    add_common(generate)
