"""The ``train`` subcommand's options (each one a TrainRequest field, app/train.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ModelConfig, TrainConfig
from ..processes import PROCESS_NAMES, KuramotoConfig
from ..serialization import field_choices
from .limits import OPTION_CAPS
from .options import (
    CHANNEL_NAMES,
    DEVICE_NAMES,
    PRESET_NAMES,
    Formatter,
    add_bad_image_option,
    add_common,
    add_process_options,
    capped_positive_int,
    image_size,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    unit_interval,
    unit_open_interval,
)


def add_train_parser(commands: argparse._SubParsersAction) -> None:
    """``train``: one option per TrainRequest field."""
    train = commands.add_parser(
        "train",
        help="train a model on images, angle data or flows",
        formatter_class=Formatter,
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
        "--compile",
        action="store_true",
        help="torch.compile the network and the chain pool's step (the first steps wait for the compiler)",
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
    add_bad_image_option(train)
    add_process_options(train, for_flows=True)
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
    add_common(train)
