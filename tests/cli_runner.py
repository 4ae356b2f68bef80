"""Run the real command line many times from one interpreter start.

``python -m kuramoto_diffusion ...`` in a fresh subprocess spends most of its time importing torch
(4 s on the 2-core machine). ``ForkingCLI`` starts one server process that imports the package once
and then forks a child per command: the child redirects its stdin, stdout and stderr to files, runs
``kuramoto_diffusion.__main__`` exactly as ``python -m`` does (argparse, the one-line error policy,
``sys.exit``), and exits with the command's status; an uncaught exception prints its traceback and
exits 1, as the interpreter would. Every child starts from the server's pristine state, so commands
cannot leak into each other. The server runs with one OpenMP thread and has run no torch operation
before forking, so the fork is safe. Linux and macOS only (os.fork); elsewhere ``run`` falls back to
one subprocess per command.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENT = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": ""}

_SERVER = r"""
import json, os, runpy, sys, traceback
import kuramoto_diffusion.app.cli  # noqa: F401 - torch and the package, imported once before forking
for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.chdir(request["cwd"])
            for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                    (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
                os.dup2(os.open(path, flags, 0o644), fd)
            sys.argv = ["kuramoto-diffusion", *request["argv"]]
            runpy.run_module("kuramoto_diffusion", run_name="__main__", alter_sys=True)
        except SystemExit as stop:
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class ForkingCLI:
    """One server process; ``run(arguments)`` is ``subprocess.run([python, -m, kuramoto_diffusion, *arguments])``."""

    def __init__(self) -> None:
        self.forking = hasattr(os, "fork")
        self.folder = Path(tempfile.mkdtemp(prefix="cli-runner-"))
        self.server: subprocess.Popen[str] | None = None
        if self.forking:
            self.server = subprocess.Popen(
                [sys.executable, "-c", _SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=ENVIRONMENT,
                cwd=ROOT,
            )

    def run(self, arguments: list[str], *, timeout: float = 240, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "kuramoto_diffusion", *arguments]
        if self.server is None:
            return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=ENVIRONMENT, cwd=cwd)
        stdout, stderr = self.folder / "stdout", self.folder / "stderr"
        self.server.stdin.write(
            json.dumps({"argv": arguments, "cwd": str(cwd), "stdout": str(stdout), "stderr": str(stderr)}) + "\n"
        )
        self.server.stdin.flush()
        ready, _, _ = select.select([self.server.stdout], [], [], timeout)
        if not ready:
            self.close()
            raise subprocess.TimeoutExpired(command, timeout)
        reply = self.server.stdout.readline()
        if not reply:
            raise RuntimeError("the forking CLI server died")
        returncode = json.loads(reply)["returncode"]
        return subprocess.CompletedProcess(command, returncode, stdout.read_text(), stderr.read_text())

    def close(self) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
            self.server = None


_SHARED: ForkingCLI | None = None


def shared_cli() -> ForkingCLI:
    """One ``ForkingCLI`` for the whole test session (closed when the interpreter exits)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = ForkingCLI()
        atexit.register(_SHARED.close)
    return _SHARED
