"""One writer per run folder: an exclusive lock held for the life of a training run.

The lock is ``filelock``'s OS-level lock (flock on POSIX) on ``RUN/.lock``: the kernel releases it when the
holding process ends, however it ends (kill -9 included), so a lock left by a dead process never blocks a
later resume. Who holds it (PID, host, start time) is written beside it in ``RUN/.lock.json`` after the lock
is taken; the lock file itself is truncated by every opener, so it cannot carry that.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import UserError
from ..serialization import write_json_atomic

LOCK_NAME = ".lock"
HOLDER_NAME = ".lock.json"


class RunFolderBusy(UserError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """The exclusive lock of one run folder; ``acquire`` fails at once (no waiting) when another process holds it."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / LOCK_NAME), timeout=0)

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def acquire(self) -> None:
        """Take the lock and record the holder, or raise ``RunFolderBusy`` naming the holder's PID and host."""
        if self._lock.is_locked:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise RunFolderBusy(
                f"{self.run_dir}: in use by another training process ({describe_holder(self.run_dir)}); "
                "wait for it to finish or stop it, or choose another run_dir"
            ) from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_json_atomic(self.run_dir / HOLDER_NAME, holder)

    def release(self) -> None:
        """Let the lock go (the holder file stays: it is only read while the lock is held)."""
        if self._lock.is_locked:
            self._lock.release(force=True)


class NoLock:
    """The lock of a process that does not write (torchrun ranks other than 0): holds nothing."""

    held = False

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


NO_LOCK = NoLock()


def describe_holder(run_dir: Path) -> str:
    """'PID 123 on host h since …' from the holder file, or what is known when it cannot be read."""
    try:
        holder = json.loads((Path(run_dir) / HOLDER_NAME).read_text(encoding="utf-8"))
        return f"PID {int(holder['pid'])} on host {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its PID is not recorded yet"
