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
from typing import TYPE_CHECKING, Any, TypeVar

from .. import __version__
from ..errors import UserError
from ..stopping import Stopped, signal_name, sigterm_interrupts
from .limits import MAX_HELD_VALUES, check_values
from .options import CHANNEL_NAMES as CHANNEL_NAMES  # re-exported: the option names tests and docs take from cli
from .options import DEVICE_NAMES as DEVICE_NAMES
from .options import PRESET_NAMES as PRESET_NAMES
from .options import Formatter, Parser
from .parsers import (
    add_demo_parser,
    add_evaluate_parser,
    add_flows_parser,
    add_forward_parser,
    add_info_parser,
    add_sample_parser,
)
from .train_parser import add_train_parser

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from torch import device as TorchDevice


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="kuramoto-diffusion",
        description="Generative modelling on periodic domains with Kuramoto orientation diffusion.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)

    add_forward_parser(commands)
    add_train_parser(commands)
    add_sample_parser(commands)
    add_evaluate_parser(commands)
    add_info_parser(commands)
    add_demo_parser(commands)
    add_flows_parser(commands)
    return parser


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
