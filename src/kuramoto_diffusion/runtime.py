"""Where and how a job runs: the device, deterministic kernels, and data-parallel training with
torch.distributed, launched by ``torchrun`` (or Slurm through it).

Data parallelism: The design keeps every rank's randomness identical: all ranks seed the same generators, draw
the same global batch (starting states, strides, kernel noise, label dropout) and keep the same
chain pool, and each rank runs the network on its own contiguous slice of that batch (split
further into ``grad_accum`` micro-batches). DistributedDataParallel averages the gradients, so
a step on W ranks is the same step as on one process with the whole batch (up to the order of
float additions), and a run saved with one world size resumes exactly with another: rank 0's
checkpoint holds the state of every rank. The price is that each rank draws the whole batch's
data and forward states; both are cheap next to the network (see BENCHMARKS.md).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but no CUDA GPU is visible; use 'cpu' or 'auto'")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; valid values are auto, cpu, cuda")
    return torch.device(name)


def use_deterministic_algorithms() -> None:
    """Ask PyTorch for deterministic kernels (process-wide).

    On the CPU every kernel this package uses is already deterministic. On CUDA this turns off
    cuDNN autotuning, selects deterministic convolution algorithms, sets the cuBLAS workspace
    that deterministic matrix products need, and warns (instead of failing) for any op without a
    deterministic implementation (for the UNet: the backward of nearest-neighbour upsampling).
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly one-process) data-parallel job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and pictures."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def micro_batches(self, batch_size: int, grad_accum: int) -> list[slice]:
        """This rank's rows of a global batch: a contiguous 1/W share, cut into ``grad_accum`` equal micro-batches."""
        pieces = self.world_size * grad_accum
        if batch_size % pieces:
            raise UserError(
                f"batch_size {batch_size} does not split into {self.world_size} process(es) × grad_accum {grad_accum}; "
                f"use a multiple of {pieces}"
            )
        size = batch_size // pieces
        first = self.rank * grad_accum * size
        return [slice(first + i * size, first + (i + 1) * size) for i in range(grad_accum)]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of a tensor over all ranks (the tensor itself on one process)."""
        if not self.distributed:
            return value
        total = value.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def max_over_ranks(self, value: int) -> int:
        """The largest of every rank's ``value`` (a collective: every rank must call it)."""
        if not self.distributed:
            return value
        largest = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return int(largest.item())

    def all_succeeded(self, succeeded: bool) -> bool:
        """Whether every rank succeeded (a collective: every rank must call it)."""
        return self.max_over_ranks(0 if succeeded else 1) == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def device(self) -> torch.device:
        """The device collectives run on: this rank's GPU under NCCL, else the CPU."""
        if self.distributed and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")


SINGLE_PROCESS = DistributedContext()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str, timeout_minutes: float = 30.0) -> tuple[DistributedContext, torch.device]:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, …).

    Without torchrun: the single-process context and ``device_name`` resolved as usual. With it:
    NCCL and GPU LOCAL_RANK when CUDA is used, Gloo on the CPU.
    """
    device = resolve_device(device_name)
    if not launched_by_torchrun():
        return SINGLE_PROCESS, device
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "start at most one process per visible GPU"
            )
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes)
        )
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank), device


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def gradient_sync(network: torch.nn.Module, synchronise: bool) -> Iterator[None]:
    """Inside: backward passes of a DistributedDataParallel ``network`` all-reduce gradients only if ``synchronise``
    (the last micro-batch of a step); a plain module is unaffected."""
    if synchronise or not isinstance(network, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with network.no_sync():
            yield
