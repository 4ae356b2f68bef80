"""Command line: flags become typed requests (one dataclass per subcommand, in its module) and nothing else.

Exit status: 0 success, 2 bad input or usage (one line on stderr, no traceback unless
--debug), 1 unexpected internal error, 128 + the signal number when stopped by a signal: 143 for
SIGTERM, 130 for SIGINT (Ctrl-C). Training and ``sample --out-dir`` then stop at a safe point and
save first (stopping.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from .. import __version__
from ..config import DEFAULT_MAX_IMAGE_PIXELS, IMAGE_CHANNELS, DataConfig, ModelConfig, TrainConfig
from ..errors import UserError
from ..nets import UNET_PRESETS
from ..processes import PROCESS_NAMES, KuramotoConfig
from ..sampling.grids import GRIDS
from ..sampling.steps import REVERSE_STEPS
from ..serialization import field_choices
from ..stopping import Stopped, signal_name, sigterm_interrupts
from .limits import MAX_HELD_VALUES, OPTION_CAPS, check_values

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from torch import device as TorchDevice

PRESET_NAMES = tuple(UNET_PRESETS)  # network sizes; angle data takes the MLP sizes of the same names (config.py)
DEVICE_NAMES = ("auto", "cpu", "cuda")
CHANNEL_NAMES = ("auto", *map(str, IMAGE_CHANNELS))  # image channels, or auto: from the data


# ----- option types: validated at parse time, so bad values exit 2 with argparse's one line ----
def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def capped_positive_int(cap: int) -> Callable[[str], int]:
    """A whole number in [1, cap]: options that multiply memory or time (app/limits.py says why each cap)."""

    def parse(text: str) -> int:
        value = positive_int(text)
        if value > cap:
            raise argparse.ArgumentTypeError(f"must be ≤ {cap:,} (a cap against runaway memory or time), got {value:,}")
        return value

    return parse


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number ≥ 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0, got {text}")
    return value


def unit_open_interval(text: str) -> float:
    """A number in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1) (a fraction of π), got {text}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def image_size(text: str) -> int:
    value = positive_int(text)
    if value < 8:
        raise argparse.ArgumentTypeError(f"must be ≥ 8 pixels, got {value}")
    return value


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the usage itself is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")


def _add_bad_image_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--on-bad-image",
        choices=field_choices(DataConfig, "on_bad_image"),
        default="error",
        help="a folder file that cannot be opened or decoded, or is too small or too large: stop, or skip it with one "
        "warning and a count",
    )
    parser.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=DEFAULT_MAX_IMAGE_PIXELS,
        help="an image file declaring more pixels (width × height) is refused from its header before it is decoded "
        "(a decompression-bomb guard, Pillow's limit); raise it for large images you trust",
    )


def _add_process_options(parser: argparse.ArgumentParser, *, for_flows: bool = False) -> None:
    parser.add_argument("--steps", type=positive_int, default=100, help="number of diffusion steps T")
    parser.add_argument(
        "--schedule",
        choices=field_choices(KuramotoConfig, "schedule"),
        default="linear",
        help="Kuramoto schedule shape",
    )
    if for_flows:
        parser.add_argument(
            "--neighbourhood",
            type=positive_int,
            default=None,
            help="local coupling kernel size M (pixels) (default: 5 for images, 4 for flows)",
        )
    else:
        parser.add_argument(
            "--neighbourhood", type=positive_int, default=5, help="local coupling kernel size M (pixels)"
        )
    parser.add_argument(
        "--padding",
        choices=field_choices(KuramotoConfig, "padding"),
        default="reflect",
        help="image borders: reflect, or circular for tileable output (local coupling and the network wrap around)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kuramoto-diffusion",
        description="Generative modelling on periodic domains with Kuramoto orientation diffusion.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=_Parser)

    forward = commands.add_parser(
        "forward",
        help="picture of the forward processes and R(t)",
        formatter_class=_Formatter,
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
    _add_bad_image_option(forward)
    _add_process_options(forward)
    _add_common(forward)

    train = commands.add_parser(
        "train",
        help="train a model on images, angle data or flows",
        formatter_class=_Formatter,
        description="Train a Kuramoto (or Euclidean baseline) diffusion model; checkpoints go to --out/checkpoints.",
    )
    train.add_argument(
        "--data",
        default=None,
        help="textures, fingerprints, a folder of images, cifar-10-binary.tar.gz, angles:FILE (a .csv/.npy array of N rows "
        "by D angles), torus:NAME (wrapped-mixture, von-mises-mixture, checkerboard) or flows:PATH (a 'flows generate' "
        "folder, .npz files or PDEArena HDF5) (default: textures; with --resume: the run's own)",
    )
    train.add_argument(
        "--degrees", action="store_true", help="with --data angles:FILE: the file holds degrees, not radians"
    )
    train.add_argument(
        "--process",
        choices=PROCESS_NAMES,
        default=None,
        help="forward process (default: kuramoto-local for images, kuramoto-global for angle data, phase-amplitude for flows; "
        "kuramoto-none drops the coupling and keeps the reference pull: a wrapped Ornstein–Uhlenbeck process)",
    )
    train.add_argument("--image-size", type=image_size, default=32, help="pixels per side")
    train.add_argument("--channels", choices=CHANNEL_NAMES, default="auto", help="1 grey, 3 RGB, auto from the data")
    train.add_argument(
        "--preset",
        choices=PRESET_NAMES,
        default="small",
        help="network size. Images, a UNet: tiny (0.18 M parameters) for first runs, about 0.5 s per step at batch 32 and "
        "32 px on one thread of a busy 2-core CPU (0.3 s idle); small (1.8 M) for CPU runs of thousands of steps, about "
        "1.7 s per step there (1.3 s idle); paper-cifar, the authors' 64-128-256-256 UNet, for a GPU. Angle data, an "
        "MLP: tiny (64 wide, 2 blocks) or small (256 wide, 4 blocks). On a shared machine OMP_NUM_THREADS=1 is often "
        "faster",
    )
    train.add_argument(
        "--train-steps",
        type=positive_int,
        default=2000,
        help="optimiser steps in total; with --resume the run's own target unless given (a larger value extends the run)",
    )
    train.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="starting states per step, all processes together (torchrun: each runs batch ÷ processes)",
    )
    train.add_argument(
        "--grad-accum",
        type=positive_int,
        default=1,
        help="micro-batches per process and step: same result, less memory (batch must divide)",
    )
    train.add_argument(
        "--precision",
        choices=field_choices(TrainConfig, "precision"),
        default="fp32",
        help="the network's arithmetic: bf16 or fp16 (loss-scaled) autocast on GPU; kernel draws stay fp32",
    )
    train.add_argument(
        "--compile", action="store_true", help="torch.compile the network (the first steps wait for the compiler)"
    )
    train.add_argument(
        "--draws", type=capped_positive_int(OPTION_CAPS["draws"]), default=1, help="kernel draws per starting state"
    )
    train.add_argument(
        "--objective",
        choices=field_choices(TrainConfig, "objective"),
        default="auto",
        help="DSM objective: auto (propagated for the Kuramoto processes, markov for the Euclidean baseline, whose "
        "loss is then DDPM's ε-prediction, and for phase-amplitude flows), markov (the merged-Euler kernel across the window; window 1 is the paper's loss), "
        "linearised (formerly flow; the kernel's mean along the deterministic chain, its variance linearised; window T starts every "
        "example from the data), propagated (exact one-step draws from chains that carry an unbiased estimate of "
        "their own score: no window bias, the history in the target; window 1), and each with ±z antithetic draw "
        "pairs (needs an even --draws)",
    )
    train.add_argument(
        "--window",
        type=non_negative_int,
        default=0,
        help="DSM window h: strides uniform in 1…h fine steps, at most T (0: 10 for markov, T for linearised, 1 for propagated)",
    )
    train.add_argument(
        "--anchor",
        type=non_negative_int,
        default=0,
        help="queries at t ≤ this start from the data with the linearised kernel, later ones from the chain (0: none)",
    )
    train.add_argument(
        "--forward-states",
        choices=field_choices(TrainConfig, "forward_states"),
        default="pool",
        help="O(1) chain pool or the authors' re-simulation",
    )
    train.add_argument(
        "--pool-size",
        type=non_negative_int,
        default=0,
        help="chains in the pool (0: max(T, 4·batch) rounded up to a multiple of T)",
    )
    train.add_argument(
        "--pool-advance",
        type=non_negative_int,
        default=0,
        help="chains the pool advances per step, in turn (0: min(pool size, 8·batch): all at T = 100, "
        "256 of 1000 at T = 1000 and batch 32)",
    )
    train.add_argument(
        "--pool-fill-trajectories",
        type=non_negative_int,
        default=0,
        help="start the pool from this many simulated trajectories, each chain a snapshot of one at its "
        "step (≈ G·T chain steps instead of pool·T/2; exact marginals, correlated chains at first; "
        "0: every chain simulated on its own)",
    )
    train.add_argument("--lr", type=positive_float, default=2e-4, help="learning rate (AdamW)")
    train.add_argument(
        "--warmup-steps",
        type=non_negative_int,
        default=200,
        help="learning-rate warm-up: the rate rises linearly to --lr over this many steps (0: none)",
    )
    train.add_argument(
        "--ema-decay",
        type=unit_interval,
        default=0.999,
        help="EMA decay of the weights used for sampling; its ramp min(decay, (1+n)/(10+n)) makes a short run's "
        "EMA average only its recent weights (0.999 is reached after about 9,000 steps)",
    )
    train.add_argument(
        "--ema-warmup-steps",
        type=non_negative_int,
        default=0,
        help="steps the EMA ramp lasts; 0: the whole run (diffusers' rule). A fixed early end, such as the "
        "100 of runs saved before 2026-12-06, leaves a run of a few hundred steps sampling noise",
    )
    train.add_argument("--checkpoint-every", type=positive_int, default=500, help="steps between checkpoints")
    train.add_argument("--keep-checkpoints", type=positive_int, default=3, help="newest checkpoints kept")
    train.add_argument(
        "--sample-every", type=non_negative_int, default=1000, help="steps between sample grids (0: off)"
    )
    train.add_argument(
        "--no-fit-prior", action="store_true", help="keep the authors' prior κ = 1.2 instead of fitting it"
    )
    train.add_argument(
        "--init-from", type=Path, default=None, help="start from the weights of this model/checkpoint (fine-tuning)"
    )
    train.add_argument("--device", choices=DEVICE_NAMES, default="auto", help="where to train")
    train.add_argument("--out", type=Path, required=True, help="run directory")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest whole checkpoint (damaged newer ones are skipped "
        "with a warning); options that would change the run are refused",
    )
    train.add_argument(
        "--resume-from",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="continue the run in --out from this checkpoint folder (e.g. OUT/checkpoints/step-00000500)",
    )
    train.add_argument(
        "--on-nan",
        choices=field_choices(TrainConfig, "on_nonfinite"),
        default="stop",
        help="a NaN/inf loss or gradient: stop (keeping the last good checkpoint), or skip that step (stops after 10 in a row)",
    )
    train.add_argument(
        "--lazy",
        action="store_true",
        help="image folders larger than memory: decode each batch's files on demand (index cached)",
    )
    train.add_argument("--classes", action="store_true", help="class-conditional: each subfolder of --data is a class")
    train.add_argument(
        "--class-dropout",
        type=unit_interval,
        default=0.1,
        help="with --classes or --context-frames: share of labels / contexts dropped (for guidance)",
    )
    train.add_argument(
        "--flow-networks",
        choices=field_choices(ModelConfig, "flow_networks"),
        default=None,
        help="phase-amplitude flows: one network per field, each conditioned on the other (split), or one "
        "network for both (joint) (default: split for phase-amplitude, joint for euclidean)",
    )
    train.add_argument(
        "--context-frames",
        type=non_negative_int,
        default=0,
        help="flows: forecast the next frame from this many previous frames (3 in the paper; 0: unconditional)",
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels only (slower on GPU; see docs/cli.md, 'Determinism')",
    )
    _add_bad_image_option(train)
    _add_process_options(train, for_flows=True)
    train.add_argument(
        "--phase-range",
        type=unit_open_interval,
        default=None,
        help="Kuramoto image encoding θ = a·π·x: a in (0, 1) (default 0.5; the paper's 0.9); saved with the model",
    )
    regime = KuramotoConfig()
    train.add_argument(
        "--coupling-range",
        type=non_negative_float,
        nargs=2,
        metavar=("LO", "HI"),
        default=regime.coupling_range,
        help="Kuramoto coupling K per step at T = 100, from LO to HI (the paper's values by default)",
    )
    train.add_argument(
        "--coupling-shape",
        choices=field_choices(KuramotoConfig, "coupling_shape"),
        default=regime.coupling_shape,
        help="K along the chain: schedule (from LO to HI in --schedule's shape), or constant (HI every step)",
    )
    train.add_argument(
        "--coupling-norm",
        choices=field_choices(KuramotoConfig, "coupling_norm"),
        default=regime.coupling_norm,
        help="mean-field: the mean of sin(θ_j − θ_i) over the neighbourhood; unit: sin(arg m_i − θ_i), "
        "the unit-modulus mean field (the authors' strength)",
    )
    train.add_argument(
        "--ref-strength",
        type=non_negative_float,
        default=regime.ref_strength,
        help="κ_ref, the Kuramoto pull towards the reference phase relative to the coupling (0: none; "
        "with --process kuramoto-none that is wrapped Brownian motion)",
    )
    train.add_argument(
        "--prior",
        choices=field_choices(TrainConfig, "prior"),
        default=regime.prior,
        help="Kuramoto prior at t = T: von-mises (i.i.d.; the only one with a density, for evaluate --nll), "
        "relaxed (von Mises draws moved --prior-relax-steps chain steps at the t = T rates), forward-chain "
        "(the chain run from a fitted start), or auto: the cheapest whose gap to the simulated terminal "
        "states is within tolerance, chosen at the start and saved with the model (docs/priors.md)",
    )
    train.add_argument(
        "--prior-relax-steps",
        type=non_negative_int,
        default=regime.prior_relax_steps,
        help="chain steps L of --prior relaxed",
    )
    _add_common(train)

    sample = commands.add_parser(
        "sample",
        help="generate images (or angles) from a trained model",
        formatter_class=_Formatter,
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
    _add_sampler_options(sample)
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
    _add_bad_image_option(sample)
    _add_common(sample)

    evaluate = commands.add_parser(
        "evaluate",
        help="compare generated images with real ones",
        formatter_class=_Formatter,
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
    _add_sampler_options(evaluate, " (with --checkpoint)")
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
        type=lambda text: _whole_number(text, 2),
        default=None,
        help="score --num × G samples as G groups of --num, each against every reference set, and "
        "print each metric's mean with its bootstrap 95 %% interval (≥ 2; --reference-sets alone: 4)",
    )
    evaluate.add_argument(
        "--reference-sets",
        type=lambda text: _whole_number(text, 2),
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
    _add_bad_image_option(evaluate)
    _add_common(evaluate)

    info = commands.add_parser("info", help="show a run's config, step and prior", formatter_class=_Formatter)
    info.add_argument("path", type=Path, help="run, checkpoint or model directory")
    info.add_argument(
        "--all",
        dest="show_all",
        action="store_true",
        help="the full config as saved, not only the settings that apply to this model",
    )
    _add_common(info)

    demo = commands.add_parser(
        "demo",
        help="the make-demo job: forward picture, samples, animation",
        formatter_class=_Formatter,
        description="Fine-tune the shipped texture model briefly and write pictures to --out.",
    )
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output directory")
    demo.add_argument(
        "--fine-tune-steps", type=non_negative_int, default=100, help="training steps on top of the shipped model"
    )
    demo.add_argument("--device", choices=DEVICE_NAMES, default="auto", help="where to run")
    _add_common(demo)
    _add_flows_parser(commands)
    return parser


def _add_sampler_options(parser: argparse.ArgumentParser, applies: str = "") -> None:
    """--sampler, --nfe, --grid, --rho, --corrector-steps, --snr: ``sample.SamplerOptions``."""
    parser.add_argument(
        "--sampler",
        choices=tuple(REVERSE_STEPS),
        default="sde",
        help="reverse SDE, ODE Euler, ODE Heun, pc: the reverse SDE with a Langevin corrector, or "
        "euler-maruyama: Euler–Maruyama on the continuous reverse SDE (the same as sde on the "
        "torus; for Euclidean models score_sde's predictor instead of DDPM's step)" + applies,
    )
    parser.add_argument(
        "--nfe",
        type=positive_int,
        default=None,
        help="network evaluations, at most (default: T); pc counts its corrector's" + applies,
    )
    parser.add_argument(
        "--grid",
        choices=tuple(GRIDS),
        default="uniform",
        help="time grid: uniform in t, or rho: EDM's ρ-spacing of the process's noise level",
    )
    parser.add_argument("--rho", type=positive_float, default=7.0, help="with --grid rho: the exponent ρ")
    parser.add_argument(
        "--corrector-steps",
        type=capped_positive_int(OPTION_CAPS["corrector_steps"]),
        default=None,
        help="pc (implied with sde): Langevin corrector steps per grid step (default 1)",
    )
    parser.add_argument(
        "--snr",
        type=positive_float,
        default=None,
        help="pc (implied with sde): the corrector's target signal-to-noise ratio (default 0.16)",
    )


def _add_flows_parser(commands: argparse._SubParsersAction) -> None:
    """``flows generate``: Navier–Stokes trajectories for the flow experiments (data/flow_generation.py)."""
    flows = commands.add_parser("flows", help="2-D Navier–Stokes flow data", formatter_class=_Formatter)
    actions = flows.add_subparsers(dest="flows_command", metavar="ACTION", required=True, parser_class=_Parser)
    generate = actions.add_parser(
        "generate",
        help="simulate trajectories into a folder (resumable)",
        formatter_class=_Formatter,
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
    _add_common(generate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.command == "train":
        args.given = given_options(parser, "train", argv)
    handler: Callable[[argparse.Namespace], int] = _COMMANDS[args.command]
    prefix = f"kuramoto-diffusion {args.command}"
    flags = parameter_flags(parser, args.command)
    if not args.debug:
        warnings.formatwarning = one_line_warning(flags)
    if getattr(args, "deterministic", False):
        from ..runtime import use_deterministic_algorithms

        use_deterministic_algorithms()
    try:
        with sigterm_interrupts():
            return handler(args)
    except Stopped as stop:
        if str(stop):  # empty on the processes of a torchrun job other than rank 0
            print(f"{prefix}: {stop}", file=sys.stderr)
        return stop.exit_status
    except KeyboardInterrupt as interrupt:
        signal_number = getattr(interrupt, "signal_number", signal.SIGINT)
        print(f"{prefix}: interrupted by {signal_name(signal_number)}; completed checkpoints are kept", file=sys.stderr)
        return 128 + signal_number
    except Exception as error:
        if args.debug:
            raise
        status, message = describe_failure(error, args.command)
        message = flags_for_parameters(message, flags)
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return status


# What to lower when a command runs out of memory: options each command has (a test checks they exist).
MEMORY_ADVICE = {
    "forward": "lower --num, --frames or --image-size",
    "train": "lower --batch-size (or raise --grad-accum: same result, less memory), --draws or --image-size",
    "sample": "lower --batch-size (images per batch; the result is the same)",
    "evaluate": "lower --batch-size or --num",
    "flows": "lower --size or --frames",
    "demo": "use --device cpu, or free memory",
    "info": "free memory",
}
# torch reports a failed allocation as a RuntimeError (torch.OutOfMemoryError, a subclass, on CUDA).
_TORCH_OUT_OF_MEMORY = re.compile(
    r"can't allocate memory|out of memory|not enough memory|failed to allocate", re.IGNORECASE
)


def describe_failure(error: Exception, command: str | None = None) -> tuple[int, str]:
    """Exit status and one-line message for an exception that reached the command line (``command``: the
    subcommand, whose options the out-of-memory advice names)."""
    if isinstance(error, UserError):
        return 2, str(error)
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and _TORCH_OUT_OF_MEMORY.search(str(error))):
        return 2, f"out of memory; {MEMORY_ADVICE.get(command or '', 'free memory or ask for less')}"
    if isinstance(error, OSError):
        # Disk full, permission denied, a file where a folder should be: the user's environment.
        where = f"{error.filename}: " if error.filename else ""
        reason = error.strerror or str(error)
        return 2, f"{where}{reason}; check the path, its permissions and the free space"
    detail = " ".join(str(error).split())
    return 1, f"internal error ({type(error).__name__}: {detail}); rerun with --debug for the traceback and report it"


# Library parameters whose flag has another name, by command.
PARAMETER_ALIASES = {"train": {"run_dir": "--out"}, "flows": {"out_dir": "--out"}}


def parameter_flags(parser: argparse.ArgumentParser, command: str) -> dict[str, str]:
    """Python parameter name → flag: every subcommand's options, ``command``'s own winning."""

    def options(sub: argparse.ArgumentParser) -> dict[str, str]:
        found: dict[str, str] = {}
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                for nested in action.choices.values():
                    found.update(options(nested))
            elif action.option_strings:
                found.setdefault(action.dest, max(action.option_strings, key=len))
        return found

    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    flags: dict[str, str] = {}
    for name, sub in subcommands.items():
        if name != command:
            flags.update(options(sub))
    flags.update(options(subcommands[command]))
    flags.update(PARAMETER_ALIASES.get(command, {}))
    return flags


def flags_for_parameters(message: str, flags: dict[str, str]) -> str:
    """A library error as the command line says it: ``name=True`` becomes the flag, ``name=value`` the flag and
    the value, and a bare snake_case ``name`` the flag (single words only in the ``=`` forms: they are also prose)."""
    for name, flag in sorted(flags.items(), key=lambda item: -len(item[0])):
        message = re.sub(rf"(?<![\w.-]){name}=True\b", flag, message)
        message = re.sub(rf"(?<![\w.-]){name}=", f"{flag} ", message)
        if "_" in name:
            message = re.sub(rf"(?<![\w.-]){name}(?![\w=-])", flag, message)
    return message


def one_line_warning(flags: dict[str, str]) -> Callable[..., str]:
    """``warnings.formatwarning`` for the command line: one line, library parameters said as flags."""

    def format_warning(
        message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
    ) -> str:
        return f"kuramoto-diffusion: warning: {flags_for_parameters(str(message), flags)}\n"

    return format_warning


def _say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message)


# ----- commands: each turns its flags into a typed request and calls its module ----------------
Request = TypeVar("Request", bound="DataclassInstance")


def request_from(args: argparse.Namespace, request_type: type[Request]) -> Request:
    """The ``request_type`` dataclass filled from the parsed flags of the same names (nested option groups,
    such as the sampler's, from theirs)."""
    values: dict[str, Any] = {}
    for option in dataclasses.fields(request_type):
        nested = option.default_factory
        if nested is not dataclasses.MISSING and dataclasses.is_dataclass(nested):
            values[option.name] = request_from(args, nested)
        else:
            values[option.name] = getattr(args, option.name)
    return request_type(**values)


def _cmd_forward(args: argparse.Namespace) -> int:
    from .forward import ForwardRequest, forward_picture

    path = forward_picture(request_from(args, ForwardRequest))
    _say(args, f"wrote {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainRequest, train

    train(request_from(args, TrainRequest))
    return 0


def given_options(parser: argparse.ArgumentParser, command: str, argv: Sequence[str]) -> frozenset[str]:
    """The dests of ``command``'s options that ``argv`` gives (argparse cannot tell a typed default from an absent
    option, so the command's arguments are parsed again with every default suppressed)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    rest = list(argv)[list(argv).index(command) + 1 :]
    defaults = {action: action.default for action in sub._actions}
    required = {action: action.required for action in sub._actions}
    try:
        for action in sub._actions:
            action.default, action.required = argparse.SUPPRESS, False
        found, _ = sub.parse_known_args(rest, argparse.Namespace())
    finally:
        for action, default in defaults.items():
            action.default, action.required = default, required[action]
    return frozenset(vars(found))


def _cmd_sample(args: argparse.Namespace) -> int:
    from .sample import SampleRequest, sample

    sample(request_from(args, SampleRequest))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import EvaluateRequest, evaluate

    evaluate(request_from(args, EvaluateRequest))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import info_text

    print(info_text(args.path, show_all=args.show_all))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(args.out, fine_tune_steps=args.fine_tune_steps, device=args.device, seed=args.seed, quiet=args.quiet)
    return 0


def _cmd_flows(args: argparse.Namespace) -> int:
    from ..data.flow_generation import FlowSettings, generate_flows

    if args.flows_command != "generate":  # pragma: no cover - argparse allows only the actions above
        raise UserError(f"unknown flows action {args.flows_command!r}")
    settings = FlowSettings(
        size=args.size,
        frames=args.frames,
        seed=args.seed,
        viscosity=args.viscosity,
        drag=args.drag,
        forcing=args.forcing,
        forcing_amplitude=args.forcing_amplitude,
        forcing_wavenumber=args.forcing_wavenumber,
        spinup_time=args.spinup_time,
        frame_interval=args.frame_interval,
    )
    check_values(
        args.frames * 4 * args.size**2,
        MAX_HELD_VALUES,
        f"--frames {args.frames} of velocity and vorticity (4 values per point) at --size {args.size}",
        "lower --frames or --size (each trajectory is held whole before it is written)",
    )
    if args.device == "cpu":
        device: str | TorchDevice = "cpu"
    else:
        from ..runtime import resolve_device

        device = resolve_device(args.device)
    report = generate_flows(args.out, args.num, settings, device=device, quiet=args.quiet)
    _say(
        args,
        f"wrote {len(report.written)} trajectory file(s) to {report.out_dir} ({len(report.skipped)} already there)",
    )
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "forward": _cmd_forward,
    "train": _cmd_train,
    "sample": _cmd_sample,
    "evaluate": _cmd_evaluate,
    "info": _cmd_info,
    "demo": _cmd_demo,
    "flows": _cmd_flows,
}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
