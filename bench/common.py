"""Shared helpers of the benchmark scripts: timing, tables, JSON output, machine facts."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def time_call(function: Callable[[], object], *, repeat: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``function`` in seconds (after warm-up calls)."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def synchronized_seconds(function: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call of ``function``, waiting for the GPU's queued work before and after (on a GPU
    kernels run asynchronously: without the waits the clock would stop before they finish)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - began


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def print_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """Print rows as a Markdown table and return it."""

    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    table = "\n".join(lines)
    print(table)
    return table


def _path_as_text(value: object) -> str:
    """JSON for the one non-JSON type bench settings hold (argparse Path options); anything else is an error."""
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def steps_suffix(steps: int) -> str:
    """The suffix " T<steps>" that ``quality.py --steps`` appends to a method label (its rows then say their T);
    ``headline.py`` strips it again so that one ``--ablation`` pair matches at every T."""
    return f" T{steps}"


def write_json(target: str | Path, payload: dict[str, object], *, quiet: bool = False) -> Path:
    """Write payload (with the machine facts) as JSON, atomically; a bare file name goes into bench/results/.
    Path values (argparse options in ``vars(args)``) are written as text."""
    path = Path(target)
    if path.parent == Path("."):
        path = RESULTS / path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"machine": machine(), **payload}, indent=2, default=_path_as_text) + "\n")
    os.replace(tmp, path)
    if not quiet:
        print(f"wrote {path}")
    return path


def train_quietly(config, source, device: torch.device, run_dir: Path | None = None):  # noqa: ANN001, ANN201 - RunConfig, BatchSource -> (DiffusionModel, s)
    """Train a run config on a source; returns the EMA model and the run's training seconds (``Trainer.train_seconds``).

    Without ``run_dir``, in a temporary folder. With it, in ``run_dir`` with the config's checkpoints, and a run
    killed midway resumes from its newest whole checkpoint (``Trainer.resume``), so a long benchmark can span
    sessions; the seconds then add the sessions up (those that reached the checkpoint, then this call's). A
    checkpoint written before 2026-12-07 holds no seconds, and a run resumed from one counts from the resume. A
    folder holding another run (other data, seed or length) is refused."""
    import tempfile

    from kuramoto_diffusion.checkpoint import latest_checkpoint
    from kuramoto_diffusion.errors import UserError
    from kuramoto_diffusion.training import Trainer

    if run_dir is not None and latest_checkpoint(Path(run_dir)) is not None:
        trainer = Trainer.resume(run_dir, source, device=device, quiet=True)
        saved, wanted = trainer.config, config
        if (saved.data, saved.training.seed, saved.training.train_steps) != (
            wanted.data,
            wanted.training.seed,
            wanted.training.train_steps,
        ):
            raise UserError(f"{run_dir} holds another run (data, seed or train_steps differ); pass an empty folder")
        model = trainer.train()
        return model, trainer.train_seconds
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, source, run_dir or folder, device=device, quiet=True)
        trainer.start()
        model = trainer.train()
        return model, trainer.train_seconds
