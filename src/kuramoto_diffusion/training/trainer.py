"""The training loop: AdamW, EMA, warm-up, clipping, chain pool, atomic checkpoints and exact resume.

The loop knows nothing of the loss: the run's ``Objective`` (training/objectives) draws each step's examples and
computes their loss; ``ExampleSource`` turns the data into encoded batches, ``RunLog`` reports, ``resume_run``
continues a run, ``NonFiniteSteps`` decides about NaN/inf steps.

Randomness comes from three sources whose states are saved in every checkpoint, so that a
resumed run on the CPU ends bit-identical to an uninterrupted one:
``data_generator`` (which images and crops), ``noise_generator`` (forward noise, pool draws,
kernel draws) and torch's global generator (dropout).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, cast

import torch
from torch import Tensor

from ..checkpoint import checkpoint_name, prune_checkpoints
from ..config import RunConfig
from ..config_file import CONFIG_NAME, run_config_dict
from ..data.sources import BatchSource
from ..errors import UserError
from ..model import DiffusionModel
from ..processes import ForwardProcess, PriorFit, build_process
from ..runtime import SINGLE_PROCESS, DistributedContext
from ..serialization import write_json_atomic
from ..stopping import Stopped, signal_name, stop_requests
from .chain_pool import ChainPool
from .checkpointing import (
    Progress,
    ResumePoint,
    TrainingState,
    estimated_checkpoint_bytes,
    read_checkpoint,
    save_checked_checkpoint,
)
from .ema import ema_decay_at, update_ema
from .examples_source import ExampleSource, own_rows
from .failures import MAX_SKIPPED_IN_A_ROW, NonFiniteSteps, TrainingDiverged, lost_contact
from .gradients import backward_micro_batches, optimiser_step, training_network, warmup_lr
from .objectives import Objective, build_objective, resolve_objective
from .prior_setup import fit_prior
from .resume import RESUME_CHANGEABLE, resume_run
from .run_lock import NO_LOCK, NoLock, RunLock
from .run_log import RunLog, due, write_sample_grid
from .run_start import new_run_folder

# Re-exported: these lived here before the loop's parts had modules of their own.
__all__ = ["MAX_SKIPPED_IN_A_ROW", "RESUME_CHANGEABLE", "Trainer", "TrainingDiverged", "ema_decay_at"]


class Trainer:
    """Trains a ``DiffusionModel`` on a ``BatchSource`` and writes checkpoints under ``run_dir``."""

    def __init__(
        self,
        run_config: RunConfig,
        source: BatchSource,
        run_dir: str | Path,
        *,
        device: str | torch.device = "cpu",
        quiet: bool = False,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
        context: DistributedContext = SINGLE_PROCESS,
    ) -> None:
        if run_config.training is None:
            raise UserError("the run config has no training settings")
        training = run_config.training
        objective = resolve_objective(
            training.objective, build_process(run_config.model.process), training.window, training.anchor
        )
        self.train_config = dataclasses.replace(run_config.training, objective=objective)
        self.config = dataclasses.replace(run_config, training=self.train_config)  # saved with the resolved objective
        self.source = source
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.context = context
        self.quiet = quiet or not context.is_main
        context.micro_batches(run_config.training.batch_size, run_config.training.grad_accum)  # checks divisibility
        self.on_log = on_log
        # A ValidationProbe (training/validation.py), set by the caller: val/ scalars every VALIDATE_EVERY logs.
        self.validation: Any = None
        self.step = 0
        self.checkpointed_step: int | None = None  # the step of the last checkpoint this trainer wrote or loaded
        # Wall-clock seconds of training: those that reached the checkpoint a resume started from, plus this
        # trainer's own since it was built (building, the prior fit and the chain pool are part of a run's cost).
        self._seconds_before = 0.0
        self._built_at = time.perf_counter()
        seed = self.train_config.seed
        torch.manual_seed(seed)  # before building the network: its initial weights come from this seed
        self.model = DiffusionModel(run_config.model, run_config=self.config).to(self.device)
        precision = self.train_config.precision
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.data_generator = torch.Generator().manual_seed(seed)
        self.examples = ExampleSource(
            source,
            self.data_generator,
            self.device,
            context_frames=self.config.model.context_frames,
            classes=len(self.config.model.class_names),
        )
        self.objective = self._build_objective()  # checks the objective's settings against the process
        self.ema_network = copy.deepcopy(self.model.network).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.network.parameters(), lr=self.train_config.lr, weight_decay=self.train_config.weight_decay
        )
        self.noise_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.prior_report: PriorFit | None = None
        self.non_finite = NonFiniteSteps(self.run_dir)
        # fp16 gradients underflow without loss scaling; the scaler skips steps whose gradients overflow.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        # One writer per run folder: rank 0 holds the lock from start()/resume() to the end of train().
        self.lock: RunLock | NoLock = RunLock(self.run_dir) if context.is_main else NO_LOCK

    @functools.cached_property
    def train_network(self) -> torch.nn.Module:
        """The network the loss runs, built on first use: DistributedDataParallel around it when there are several
        processes, compiled with ``compile`` (``gradients.training_network``)."""
        return training_network(self.model.network, self.context, self.device, compile=self.train_config.compile)

    # ----- set-up -----------------------------------------------------------------------
    @property
    def process(self) -> ForwardProcess:
        return self.model.process

    @property
    def class_conditional(self) -> bool:
        return bool(self.config.model.class_names)

    @property
    def pool(self) -> ChainPool | None:
        """The objective's chain pool (None before ``start``/``resume``, or when it draws no chain states)."""
        return self.objective.pool

    @property
    def skipped_steps(self) -> int:
        """Non-finite steps dropped (on_nonfinite="skip") in this session."""
        return self.non_finite.skipped

    def _build_objective(self) -> Objective:
        """The DSM objective of this run on the current process (rebuilt when ``fit_prior`` replaces it)."""
        return build_objective(
            self.process,
            self.train_config,
            data=self.encoded_batch,
            rows=self.own_rows(),
            conditioning=self.examples.conditioning,
            autocast_dtype=self.autocast_dtype,
        )

    def encoded_batch(self, count: int, rows: slice | None = None) -> tuple[Tensor, Tensor | None]:
        """``count`` training examples encoded by the current model, and their conditions
        (``ExampleSource.batch``); ``rows``: the only rows this process will use."""
        return self.examples.batch(self.model, count, rows)

    def own_rows(self) -> slice:
        """The rows of a global batch this process trains on (all of them on one process)."""
        return own_rows(self.context, self.train_config.batch_size, self.train_config.grad_accum)

    def fit_prior(self, num: int = 256) -> None:
        """Replace the prior κ with the maximum-likelihood fit to ``num`` simulated terminal states (processes with
        phases; ``prior_setup.fit_prior``), and ``prior="auto"`` with the prior it chooses."""
        if not self.process.fits_prior:
            return
        fitted = fit_prior(
            self.process, self.encoded_batch(num)[0], self.noise_generator, self.train_config, self.device
        )
        if fitted.chosen is not None:  # resolved here and saved so, as the objective is
            self.train_config = dataclasses.replace(self.train_config, prior=fitted.chosen)
            self.config = dataclasses.replace(self.config, training=self.train_config)
        model_config = dataclasses.replace(self.config.model, process=fitted.process)
        self.config = dataclasses.replace(self.config, model=model_config)
        self.model = DiffusionModel(model_config, self.model.network, run_config=self.config)
        self.objective = self._build_objective()
        self.prior_report = fitted.report

    def initialise_from(self, model: DiffusionModel) -> None:
        """Start from another model's weights (fine-tuning); its config must be this run's model config."""
        if model.config != self.config.model:
            raise UserError("the initial model's config differs from the run's model config")
        self.model.network.load_state_dict(model.network.state_dict())
        self.ema_network.load_state_dict(model.network.state_dict())

    def write_config(self) -> None:
        """Write the run's settings (model and training, as resolved) to RUN/config.json."""
        write_json_atomic(self.run_dir / CONFIG_NAME, run_config_dict(self.config.model, self.config))

    def start(self) -> None:
        """Prepare a fresh run: check the directory, fit the prior, write config.json.

        If this fails, a run directory that it created is removed again: no partial output.
        """
        with new_run_folder(self.run_dir, self.lock, self.context, self.checkpoint_bytes):
            if self.train_config.fit_prior:
                self.fit_prior()  # the same on every rank: same seeds, same data
            if self.context.is_main:
                self.write_config()
            self.objective.prepare(self.noise_generator)

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        source: BatchSource,
        *,
        checkpoint: str | Path | ResumePoint | None = None,
        train_steps: int | None = None,
        device: str | torch.device = "cpu",
        quiet: bool = False,
        on_log: Callable[[int, dict[str, float]], None] | None = None,
        context: DistributedContext = SINGLE_PROCESS,
        grad_accum: int | None = None,
        training_changes: dict[str, Any] | None = None,
        lock: RunLock | None = None,
    ) -> Trainer:
        """Continue a run from ``checkpoint`` (a path or a validated ``ResumePoint``), or from its newest whole
        checkpoint, with ``train_steps``, ``grad_accum`` and ``training_changes`` (``RESUME_CHANGEABLE`` fields)
        replacing the saved settings, under ``lock`` if the caller holds it: see ``resume.resume_run``. Every
        process loads the same checkpoint; the number of processes may differ from the saved run's.
        """

        def build(run_config: RunConfig) -> Trainer:
            return cls(run_config, source, run_dir, device=device, quiet=quiet, on_log=on_log, context=context)

        return resume_run(
            build,
            run_dir,
            checkpoint=checkpoint,
            train_steps=train_steps,
            grad_accum=grad_accum,
            training_changes=training_changes,
            lock=lock,
            is_main=context.is_main,
        )

    # ----- the loop ---------------------------------------------------------------------
    def drop_conditions(self, conditions: Tensor | None) -> Tensor | None:
        """The objective's condition dropout with this run's rate and noise: class labels become the "no class"
        label, forecasting contexts all zeros."""
        return self.objective.drop_conditions(conditions, self.noise_generator)

    def train_step(self) -> float | None:
        """One optimiser step; returns the loss, or None when a non-finite step was skipped.

        The whole batch's randomness is drawn here, identically on every process; this process runs
        the network on its rows (``DistributedContext.micro_batches``) and weights each micro-batch's
        mean loss by its share of the batch, so the averaged gradient is the whole batch's.
        """
        network = self.model.network
        network.train()
        cfg = self.train_config
        for group in self.optimizer.param_groups:
            group["lr"] = warmup_lr(self.step, cfg.lr, cfg.warmup_steps)
        example = self.objective.examples(cfg.batch_size, self.noise_generator)  # this process's rows
        self.optimizer.zero_grad(set_to_none=True)
        share = backward_micro_batches(
            self.objective.loss,
            self.train_network,
            example,
            self.context.micro_batches(cfg.batch_size, cfg.grad_accum),
            batch_size=cfg.batch_size,
            draws=cfg.draws,
            world_size=self.context.world_size,
            scaler=self.scaler,
        )
        loss = self.context.sum(share)  # the whole batch's mean loss, the same on every process
        skip = cfg.on_nonfinite == "skip"
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self.non_finite.non_finite("loss", self.step, skip=skip)  # raises, unless the step is skipped
            return None
        outcome = optimiser_step(self.optimizer, self.scaler, network.parameters(), cfg.grad_clip)
        if outcome != "stepped":
            if outcome == "non-finite":
                self.non_finite.non_finite("gradient", self.step, skip=skip)
            return None
        self.non_finite.finite()
        self._update_ema()
        self.step += 1
        return loss.item()

    def _update_ema(self) -> None:
        """Move the EMA towards the live weights with the decay of this step (``ema_decay_at``)."""
        cfg = self.train_config
        update_ema(self.ema_network, self.model.network, ema_decay_at(self.step, cfg.ema_decay, cfg.ema_warmup_steps))

    def train(self) -> DiffusionModel:
        """Run to ``train_steps``, checkpointing on the way and at the end; returns the EMA model.

        A SIGTERM or SIGINT received meanwhile, by any process, ends the run after the current step,
        at the same step on every process: rank 0 writes a checkpoint through ``save_checkpoint``
        (unless that step has one already) and ``Stopped`` is raised on every process.
        """
        cfg = self.train_config
        main = self.context.is_main
        pictures = main and self.config.model.data_kind == "image"
        self.lock.acquire()  # held already after start() or resume(); taken here when neither ran
        with stop_requests() as stop:
            log = RunLog(
                self.run_dir,
                step=self.step,
                total_steps=cfg.train_steps,
                log_every=cfg.log_every,
                examples_per_step=cfg.batch_size * cfg.draws,
                write=main,
                quiet=self.quiet,
                on_log=self.on_log,
                validate=self._validation_scalars if main and self.validation is not None else None,
            )
            try:
                while self.step < cfg.train_steps:
                    loss = self.train_step()
                    if loss is None:
                        log.skipped(self.skipped_steps)
                    else:
                        log.stepped(self.step, loss, self.optimizer.param_groups[0]["lr"])
                        if main and due(self.step, cfg.checkpoint_every, cfg.train_steps):
                            self.save_checkpoint()
                        if pictures and due(self.step, cfg.sample_every, cfg.train_steps):
                            self.write_samples(log.writer)
                    # Every process takes part, so that all of them stop after the same step.
                    signal_number = self.context.max_over_ranks(stop.signal_number or 0)
                    if signal_number and self.step < cfg.train_steps:
                        self._stop(signal_number)
                self.context.barrier()  # the other processes wait for rank 0's last checkpoint
            except RuntimeError as error:
                if not self.context.distributed or isinstance(error, UserError):
                    raise
                # A collective failed: another process died or hung up.
                raise lost_contact(error, self.run_dir, self.context, self.step) from None
            finally:
                log.close()
                self.lock.release()
        return self.ema_model()

    def _validation_scalars(self) -> dict[str, float]:
        return cast(dict[str, float], self.validation.scalars(self.model.network, self.ema_network))

    def _stop(self, signal_number: int) -> NoReturn:
        """End the run on a signal: rank 0 checkpoints this step (if not done yet), then every process raises."""
        if self.context.is_main and self.checkpointed_step != self.step:
            self.save_checkpoint()
        self.context.barrier()
        checkpoint = self.run_dir / "checkpoints" / checkpoint_name(self.step)
        raise Stopped(
            signal_number,
            f"stopped at step {self.step} by {signal_name(signal_number)}; checkpoint saved: {checkpoint}",
        )

    def write_samples(self, writer: Any, num: int = 16) -> Path:
        """A grid of EMA samples (reverse SDE, fixed seed) to samples/step-N.png and TensorBoard."""
        path = self.run_dir / "samples" / f"{checkpoint_name(self.step)}.png"
        return write_sample_grid(self.ema_model(), path, writer, self.step, num)

    def ema_model(self) -> DiffusionModel:
        return DiffusionModel(self.config.model, self.ema_network, run_config=self.config)

    # ----- checkpoints ------------------------------------------------------------------
    def checkpoint_bytes(self) -> int:
        """Estimated size of one checkpoint: weights, EMA, two AdamW moments and the chain pool."""
        pool_states = 0 if self.objective.anchored_at_data else self.objective.pool_size
        return estimated_checkpoint_bytes(self.model.network, pool_states * math.prod(self.config.model.state_shape(1)))

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds this run has trained, summed over its sessions: a resumed run counts the seconds
        that reached its checkpoint (work redone after a kill counts once), then its own."""
        return self._seconds_before + time.perf_counter() - self._built_at

    def save_checkpoint(self) -> Path:
        """Write everything needed to resume into step-NNNNNNNN/, atomically; prune old ones."""
        final = save_checked_checkpoint(
            self.run_dir,
            Progress(self.step, self.train_seconds),
            self.training_state(),
            run_config_dict(self.config.model, self.config),
        )
        self.checkpointed_step = self.step
        prune_checkpoints(self.run_dir, self.train_config.keep_checkpoints)
        return final

    def training_state(self) -> TrainingState:
        """What a checkpoint saves of this trainer (the live objects: reading a checkpoint restores them)."""
        return TrainingState(
            self.model.network,
            self.ema_network,
            self.optimizer,
            self.data_generator,
            self.noise_generator,
            self.pool,
            self.scaler,
        )

    def load_checkpoint(self, checkpoint: Path) -> None:
        """Restore weights, EMA, optimizer, pool and generator states from a checkpoint directory, on a trainer just
        built for it: the checkpoint's training seconds become this trainer's start, and its own clock runs since it
        was built."""
        progress = read_checkpoint(checkpoint, self.training_state())
        self.step = self.checkpointed_step = progress.step
        self._seconds_before = progress.train_seconds

    def restore(self, checkpoint: Path) -> None:
        """Resume from ``checkpoint``: ready the objective without filling its pool (the checkpoint holds the
        pool: simulating it first would be thrown away), then load the checkpoint."""
        self.objective.prepare(self.noise_generator, fill=False)
        self.load_checkpoint(checkpoint)
