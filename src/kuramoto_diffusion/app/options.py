"""The command line's shared pieces: option types validated at parse time, the parser and help classes, and
the option groups several subcommands take (cli.py builds the parser from them)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from ..config import DEFAULT_MAX_IMAGE_PIXELS, IMAGE_CHANNELS, DataConfig
from ..nets import UNET_PRESETS
from ..processes import KuramotoConfig
from ..sampling.grids import GRIDS
from ..sampling.steps import REVERSE_STEPS
from ..serialization import field_choices
from .limits import OPTION_CAPS

PRESET_NAMES = tuple(UNET_PRESETS)  # network sizes; angle data takes the MLP sizes of the same names (config.py)
DEVICE_NAMES = ("auto", "cpu", "cuda")
CHANNEL_NAMES = ("auto", *map(str, IMAGE_CHANNELS))  # image channels, or auto: from the data


# ----- option types: validated at parse time, so bad values exit 2 with argparse's one line ----
def whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be ≥ {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return whole_number(text, 0)


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


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the usage itself is one --help away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")


def add_bad_image_option(parser: argparse.ArgumentParser) -> None:
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


def add_process_options(parser: argparse.ArgumentParser, *, for_flows: bool = False) -> None:
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


def add_sampler_options(parser: argparse.ArgumentParser, applies: str = "") -> None:
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
