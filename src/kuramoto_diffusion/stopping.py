"""Stopping long jobs at a safe point when the process is asked to stop (SIGTERM or SIGINT).

Schedulers (SLURM, Kubernetes, torchrun's agent) send SIGTERM before they kill a job, and a user
presses Ctrl-C (SIGINT). Inside ``stop_requests()`` neither signal interrupts the running code:
the handler only records the first one, and the job looks at ``StopRequests.signal_number`` at
its safe points (after a training step, after a chunk of samples), saves what it has, and raises
``Stopped``. Further signals while it does so are recorded and otherwise ignored, so a second
Ctrl-C, or torchrun forwarding SIGTERM after the terminal's SIGINT, cannot cut a checkpoint
write short; SIGKILL still ends the process at once, and the atomic writes keep the last
complete checkpoint valid. Outside the block the previous handlers are back.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Stopped(Exception):
    """A job ended early at a safe point because of a signal; what it had done is saved.

    The message says where it stopped and what was saved. The command line exits with
    ``exit_status`` = 128 + the signal number (143 for SIGTERM, 130 for SIGINT), the shell's convention.
    """

    def __init__(self, signal_number: int, message: str) -> None:
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def exit_status(self) -> int:
        return 128 + self.signal_number


def signal_name(signal_number: int) -> str:
    """'SIGTERM' for 15, 'SIGINT' for 2, …"""
    return signal.Signals(signal_number).name


class StopRequests:
    """The signals received inside ``stop_requests()``: the first decides, later ones are counted only."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self.received = 0

    def record(self, signal_number: int, frame: FrameType | None = None) -> None:
        self.received += 1
        if self.signal_number is None:
            self.signal_number = signal_number

    @property
    def requested(self) -> bool:
        return self.signal_number is not None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """Record SIGTERM and SIGINT instead of acting on them, for the duration of the block.

    Signals are delivered to the main thread only; called from another thread this installs
    nothing and the returned requests stay empty.
    """
    requests = StopRequests()
    with _handlers(dict.fromkeys(STOP_SIGNALS, requests.record)):
        yield requests


@contextlib.contextmanager
def _handlers(handlers: dict[int, Callable[[int, FrameType | None], None]]) -> Iterator[None]:
    """Install ``handlers`` (signal number -> handler) for the block and restore the previous ones after it;
    nothing outside the main thread, the only one that receives signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.signal(number, handler) for number, handler in handlers.items()}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class Interrupted(KeyboardInterrupt):
    """SIGTERM outside ``stop_requests()``: ends the work at once, as SIGINT's KeyboardInterrupt does."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_name(signal_number))
        self.signal_number = signal_number


def _interrupt(signal_number: int, frame: FrameType | None) -> None:
    raise Interrupted(signal_number)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block SIGTERM raises ``Interrupted`` (a KeyboardInterrupt) instead of ending the process
    silently, so that the command line can say what was kept; the main thread only."""
    with _handlers({signal.SIGTERM: _interrupt}):
        yield
