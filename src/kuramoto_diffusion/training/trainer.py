"""The training loop: AdamW, EMA, warm-up, clipping, chain pool, atomic checkpoints and exact resume.

Randomness comes from three sources whose states are saved in every checkpoint, so that a
resumed run on the CPU ends bit-identical to an uninterrupted one:
``data_generator`` (which images and crops), ``noise_generator`` (forward noise, pool draws,
kernel draws) and torch's global generator (dropout).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, cast

import torch
from torch import Tensor

from ..checkpoint import checkpoint_name, first_nonfinite, latest_checkpoint, prune_checkpoints
from ..config import RunConfig
from ..config_file import CONFIG_NAME, run_config_dict
from ..data.sources import BatchSource, LabelledSource, RowDecodingSource, SequenceSource
from ..errors import UserError
from ..model import DiffusionModel
from ..processes import ForwardProcess, PriorFit, build_process
from ..runtime import SINGLE_PROCESS, DistributedContext, gradient_sync
from ..serialization import write_json_atomic
from ..stopping import Stopped, signal_name, stop_requests
from .chain_pool import ChainPool
from .checkpointing import (
    ResumePoint,
    TrainingState,
    check_free_space,
    check_writable,
    read_checkpoint,
    resumable_checkpoint,
    write_checkpoint,
)
from .objectives import Conditioning, Objective, build_objective, resolve_objective
from .run_lock import RunFolderBusy, RunLock


class TrainingDiverged(UserError):
    """The loss or the gradients became NaN/inf."""


# TrainConfig fields a resume may change: they schedule logging and files, not the arithmetic of a step.
RESUME_CHANGEABLE = (
    "train_steps",
    "grad_accum",
    "checkpoint_every",
    "keep_checkpoints",
    "sample_every",
    "log_every",
    "on_nonfinite",
)


class _NoLock:
    """The lock of a process that does not write (torchrun ranks other than 0)."""

    held = False

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


_NO_LOCK = _NoLock()

VALIDATE_EVERY = 4  # logs (of log_every steps) between validation losses
MAX_SKIPPED_IN_A_ROW = 10  # with on_nonfinite="skip": this many non-finite steps in a row stop the run


def ema_decay_at(step: int, decay: float, warmup_steps: int) -> float:
    """The EMA's decay after ``step`` optimiser steps (0-based): min(decay, (1 + n)/(10 + n)), diffusers' ramp,
    through the whole run (``warmup_steps`` 0) or up to ``warmup_steps`` only."""
    if warmup_steps and step > warmup_steps:
        return decay
    return min(decay, (1 + step) / (10 + step))


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
        self.validation: Any = (
            None  # a ValidationProbe (training/validation.py): val/ scalars every VALIDATE_EVERY logs
        )
        self.step = 0
        self.checkpointed_step: int | None = None  # the step of the last checkpoint this trainer wrote or loaded
        seed = self.train_config.seed
        torch.manual_seed(seed)  # before building the network: its initial weights come from this seed
        self.model = DiffusionModel(run_config.model, run_config=self.config).to(self.device)
        precision = self.train_config.precision
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.objective = self._build_objective()  # checks the objective's settings against the process
        self.ema_network = copy.deepcopy(self.model.network).requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.network.parameters(), lr=self.train_config.lr, weight_decay=self.train_config.weight_decay
        )
        self.data_generator = torch.Generator().manual_seed(seed)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(seed + 1)
        self.prior_report: PriorFit | None = None
        self.skipped_steps = 0  # non-finite steps dropped (on_nonfinite="skip"), this session
        self._skipped_in_a_row = 0
        self._train_network: torch.nn.Module | None = None  # the network wrapped for data parallelism, built lazily
        # fp16 gradients underflow without loss scaling; the scaler skips steps whose gradients overflow.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=precision == "fp16")
        # One writer per run folder: rank 0 holds the lock from start()/resume() to the end of train().
        self.lock = RunLock(self.run_dir) if context.is_main else _NO_LOCK

    @property
    def train_network(self) -> torch.nn.Module:
        """The network the loss runs: DistributedDataParallel around it when there are several processes, compiled
        with ``compile``."""
        if self._train_network is None:
            network: torch.nn.Module = self.model.network
            if self.context.distributed:
                device_ids = [self.device.index] if self.device.type == "cuda" else None
                network = torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
            if self.train_config.compile:
                # shares the parameters; the EMA and checkpoints see the plain module. torch.compile is typed as
                # returning a callable; on a Module it returns an OptimizedModule, a Module.
                network = cast(torch.nn.Module, torch.compile(network))
            self._train_network = network
        return self._train_network

    # ----- set-up -----------------------------------------------------------------------
    @property
    def process(self) -> ForwardProcess:
        return self.model.process

    @property
    def class_conditional(self) -> bool:
        return bool(self.config.model.class_names)

    def _build_objective(self) -> Objective:
        """The DSM objective of this run on the current process (rebuilt when ``fit_prior`` replaces it)."""
        model = self.config.model
        conditioning = (
            Conditioning("context")
            if model.context_frames
            else Conditioning("labels", len(model.class_names))
            if model.class_names
            else Conditioning()
        )
        return build_objective(
            self.process,
            self.train_config,
            data=self.encoded_batch,
            rows=self.own_rows(),
            conditioning=conditioning,
            autocast_dtype=self.autocast_dtype,
        )

    @property
    def pool(self) -> ChainPool | None:
        """The objective's chain pool (None before ``start``/``resume``, or when it draws no chain states)."""
        return self.objective.pool

    def encoded_batch(self, count: int, rows: slice | None = None) -> tuple[Tensor, Tensor | None]:
        """``count`` training examples encoded as process states on the device, and their conditions: class
        labels (class-conditional models), the context features of the previous frames (forecasting models:
        the example is the frame after them), or None.

        ``rows``: the only rows this process will use. A source that can (a lazy folder) then decodes just
        those; the random draws are always the whole batch's, so every process agrees on them.
        """
        source, generator = self.source, self.data_generator
        frames = self.config.model.context_frames
        if frames:
            if not isinstance(source, SequenceSource):
                raise UserError(
                    f"{source!r} holds no frame sequences; a forecasting model (context_frames "
                    f"{frames}) trains on flow data"
                )
            sequences = source.sample_sequences(count, frames + 1, generator).to(self.device)
            return self.model.encode(sequences[:, -1]), self.model.context_features(sequences[:, :-1])
        if self.class_conditional:
            if isinstance(source, RowDecodingSource) and rows is not None:
                data, labels = source.sample_labelled_batch(count, generator, rows=rows)
            elif isinstance(source, LabelledSource):
                data, labels = source.sample_labelled_batch(count, generator)
            else:
                raise UserError(
                    f"{source!r} has no class labels; class-conditional training needs a folder of class subfolders"
                )
            return self.model.encode(data.to(self.device)), labels.to(self.device)
        if isinstance(source, RowDecodingSource) and rows is not None:
            batch = source.sample_batch(count, generator, rows=rows)
        else:
            batch = source.sample_batch(count, generator)
        return self.model.encode(batch.to(self.device)), None

    def own_rows(self) -> slice:
        """The rows of a global batch this process trains on (all of them on one process)."""
        pieces = self.context.micro_batches(self.train_config.batch_size, self.train_config.grad_accum)
        return slice(pieces[0].start, pieces[-1].stop)

    def fit_prior(self, num: int = 256) -> None:
        """Replace the prior κ with the maximum-likelihood fit to simulated terminal states (processes with phases);
        Kuramoto also fits the forward-chain prior's start and reports every candidate prior's gap to those states."""
        if not self.process.fits_prior:
            return
        fitted: ForwardProcess
        if self.process.compares_priors:
            # Here, not at the top: the metrics package imports scipy and scikit-image, which training needs not.
            from ..metrics.prior_gap import compare_priors, resolve_prior

            # The terminal states take the same noise as before the gaps existed; the candidates' draws and the
            # permutations a generator of their own, so that the training noise that follows is unchanged.
            draws_generator = torch.Generator(device=self.device).manual_seed(self.train_config.seed + 2)
            fitted, report = compare_priors(
                self.process, self.encoded_batch(num)[0], self.noise_generator, draws_generator=draws_generator
            )
            process_config = fitted.config
            if self.train_config.prior == "auto":  # resolved here and saved so, as the objective is
                chosen = resolve_prior(report)
                process_config = dataclasses.replace(process_config, prior=chosen)
                self.train_config = dataclasses.replace(self.train_config, prior=chosen)
                self.config = dataclasses.replace(self.config, training=self.train_config)
        else:
            fitted, report = self.process.fit_prior(self.encoded_batch(num)[0], generator=self.noise_generator)
            process_config = fitted.config
        model_config = dataclasses.replace(self.config.model, process=process_config)
        self.config = dataclasses.replace(self.config, model=model_config)
        self.model = DiffusionModel(model_config, self.model.network, run_config=self.config)
        self.objective = self._build_objective()
        self.prior_report = report

    def initialise_from(self, model: DiffusionModel) -> None:
        """Start from another model's weights (fine-tuning); its config must be this run's model config."""
        if model.config != self.config.model:
            raise UserError("the initial model's config differs from the run's model config")
        self.model.network.load_state_dict(model.network.state_dict())
        self.ema_network.load_state_dict(model.network.state_dict())

    def start(self) -> None:
        """Prepare a fresh run: check the directory, fit the prior, write config.json.

        If this fails, a run directory that it created is removed again: no partial output.
        """
        created = not self.run_dir.exists()
        main = self.context.is_main
        try:
            if main:
                self.lock.acquire()  # creates run_dir; a second writer stops here
                if latest_checkpoint(self.run_dir) is not None:
                    raise UserError(
                        f"{self.run_dir}: already holds checkpoints; pass resume=True to continue it or choose another run_dir"
                    )
                check_writable(self.run_dir)
                check_free_space(self.run_dir, self.checkpoint_bytes())
            if self.train_config.fit_prior:
                self.fit_prior()  # the same on every rank: same seeds, same data
            if main:
                write_json_atomic(self.run_dir / CONFIG_NAME, run_config_dict(self.config.model, self.config))
            self.objective.prepare(self.noise_generator)
        except BaseException as error:
            busy = isinstance(error, RunFolderBusy)
            self.lock.release()
            if created and main and not busy:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            self.context.all_succeeded(False)
            raise
        if not self.context.all_succeeded(True):
            raise UserError("another process of the distributed run failed to start (its message is above)")

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
        """Continue a run from ``checkpoint``, or from its newest whole checkpoint (damaged newer ones are skipped
        with a warning; ``checkpointing.resumable_checkpoint``).

        ``checkpoint`` may be a ``ResumePoint`` the caller already validated (under ``lock``): it is not checked
        again. ``lock``: the run folder's lock, when the caller took it before choosing the checkpoint (a live
        writer may be replacing the newest one); the trainer keeps it, and releases it if the resume fails.
        Without one the main process takes the lock itself, before reading.

        ``train_steps`` sets a new total (below the checkpoint's step is an error); ``grad_accum`` and
        ``training_changes`` (TrainConfig fields that do not change the result: see ``RESUME_CHANGEABLE``) replace
        the saved settings. A changed setting is written into the run's config.json. Every process loads the same
        checkpoint; the number of processes may differ from the saved run's.
        """
        changes = dict(training_changes or {})
        unsafe = sorted(set(changes) - set(RESUME_CHANGEABLE))
        if unsafe:
            raise UserError(
                f"{', '.join(unsafe)} cannot change when a run resumes; start a new run (init_from) instead"
            )
        if grad_accum is not None:  # a memory setting: it does not change the result
            changes["grad_accum"] = grad_accum
        if train_steps is not None:
            changes["train_steps"] = train_steps
        if lock is not None and Path(lock.run_dir).resolve() != Path(run_dir).resolve():
            raise ValueError(f"the lock given is {lock.run_dir}'s, not {run_dir}'s")
        held: RunLock | _NoLock = lock if lock is not None else RunLock(Path(run_dir)) if context.is_main else _NO_LOCK
        held.acquire()  # before reading: a live writer may be replacing the newest checkpoint (a no-op if held)
        try:
            if isinstance(checkpoint, ResumePoint):
                chosen, run_config = checkpoint
            else:
                chosen, run_config = resumable_checkpoint(run_dir, checkpoint)
            saved_training = run_config.training
            if saved_training is None:
                raise UserError(f"{chosen}: the run config has no training settings; it cannot be resumed")
            run_config = dataclasses.replace(run_config, training=dataclasses.replace(saved_training, **changes))
            trainer = cls(run_config, source, run_dir, device=device, quiet=quiet, on_log=on_log, context=context)
            trainer.lock = held
            # The checkpoint holds the pool: simulating it first would be thrown away.
            trainer.objective.prepare(trainer.noise_generator, fill=False)
            trainer.load_checkpoint(chosen)
            if trainer.step > trainer.train_config.train_steps:
                raise UserError(
                    f"train_steps {trainer.train_config.train_steps} is below the step {trainer.step} of {chosen}; "
                    "give a larger total to train further"
                )
            if context.is_main and trainer.train_config != saved_training:
                write_json_atomic(trainer.run_dir / CONFIG_NAME, run_config_dict(trainer.config.model, trainer.config))
        except BaseException:
            held.release()
            raise
        return trainer

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
            group["lr"] = cfg.lr * min(1.0, (self.step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        example = self.objective.examples(cfg.batch_size, self.noise_generator)  # this process's rows
        self.optimizer.zero_grad(set_to_none=True)
        pieces = self.context.micro_batches(cfg.batch_size, cfg.grad_accum)
        first = pieces[0].start
        share_sum = torch.zeros((), device=self.device)
        for index, rows in enumerate(pieces):
            with gradient_sync(self.train_network, synchronise=index == len(pieces) - 1):
                part = example.rows((rows.start - first) * cfg.draws, (rows.stop - first) * cfg.draws)
                loss = self.objective.loss(self.train_network, part)
                share = (rows.stop - rows.start) / cfg.batch_size
                # DDP averages gradients over the W processes: scale by W to get the sum of the shares.
                self.scaler.scale(loss * (share * self.context.world_size)).backward()
            share_sum = share_sum + loss.detach() * share
        loss = self.context.sum(share_sum)  # the whole batch's mean loss, the same on every process
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self._non_finite("loss")  # raises, unless the step is skipped
            return None
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(
            network.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        )
        if not torch.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.update()  # an fp16 overflow: lower the loss scale and draw a new batch
                return None
            self._non_finite("gradient")
            return None
        self._skipped_in_a_row = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._update_ema()
        self.step += 1
        return loss.item()

    def _non_finite(self, what: str) -> None:
        """Skip the step (on_nonfinite="skip", up to MAX_SKIPPED_IN_A_ROW in a row) or stop."""
        self._skipped_in_a_row += 1
        if self.train_config.on_nonfinite == "skip" and self._skipped_in_a_row < MAX_SKIPPED_IN_A_ROW:
            self.skipped_steps += 1
            return None
        in_a_row = f" ({self._skipped_in_a_row} steps in a row)" if self._skipped_in_a_row > 1 else ""
        raise TrainingDiverged(
            self._diverged_message(f"the {what} became NaN or infinite at step {self.step + 1}{in_a_row}")
        )

    def _diverged_message(self, what: str) -> str:
        last = latest_checkpoint(self.run_dir)
        kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint was written yet"
        return f"training stopped: {what}; {kept}; try a smaller learning rate"

    @torch.no_grad()
    def _update_ema(self) -> None:
        cfg = self.train_config
        decay = ema_decay_at(self.step, cfg.ema_decay, cfg.ema_warmup_steps)
        for ema, live in zip(self.ema_network.parameters(), self.model.network.parameters()):
            ema.lerp_(live, 1.0 - decay)
        for ema_buffer, live_buffer in zip(self.ema_network.buffers(), self.model.network.buffers()):
            ema_buffer.copy_(live_buffer)

    def train(self) -> DiffusionModel:
        """Run to ``train_steps``, checkpointing on the way and at the end; returns the EMA model.

        A SIGTERM or SIGINT received meanwhile, by any process, ends the run after the current step,
        at the same step on every process: rank 0 writes a checkpoint through ``save_checkpoint``
        (unless that step has one already) and ``Stopped`` is raised on every process.
        """
        from tqdm.auto import tqdm

        cfg = self.train_config
        main = self.context.is_main
        self.lock.acquire()  # held already after start() or resume(); taken here when neither ran
        with stop_requests() as stop:
            writer = _summary_writer(self.run_dir / "tensorboard") if main else None
            examples = cfg.batch_size * cfg.draws
            progress = tqdm(total=cfg.train_steps, initial=self.step, disable=self.quiet, desc="train", unit="step")
            window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
            try:
                while self.step < cfg.train_steps:
                    loss = self.train_step()
                    if loss is None:
                        progress.set_postfix(skipped=self.skipped_steps)
                    else:
                        window_loss += loss
                        window_steps += 1
                        progress.update(1)
                        if self.step % cfg.log_every == 0 or self.step == cfg.train_steps:
                            elapsed = time.perf_counter() - window_start
                            scalars = {
                                "loss": window_loss / window_steps,
                                "examples_per_second": examples * window_steps / max(elapsed, 1e-9),
                                "lr": self.optimizer.param_groups[0]["lr"],
                            }
                            progress.set_postfix(
                                loss=f"{scalars['loss']:.4f}", ex_s=f"{scalars['examples_per_second']:.0f}"
                            )
                            if (
                                main
                                and self.validation is not None
                                and (self.step % (cfg.log_every * VALIDATE_EVERY) == 0 or self.step == cfg.train_steps)
                            ):
                                scalars.update(self.validation.scalars(self.model.network, self.ema_network))
                            if writer is not None:
                                for name, value in scalars.items():
                                    writer.add_scalar(name if "/" in name else f"train/{name}", value, self.step)
                            if self.on_log is not None:
                                self.on_log(self.step, scalars)
                            window_start, window_loss, window_steps = time.perf_counter(), 0.0, 0
                        if main and (self.step % cfg.checkpoint_every == 0 or self.step == cfg.train_steps):
                            self.save_checkpoint()
                        pictures = main and self.config.model.data_kind == "image"
                        if (
                            pictures
                            and cfg.sample_every
                            and (self.step % cfg.sample_every == 0 or self.step == cfg.train_steps)
                        ):
                            self.write_samples(writer)
                    # Every process takes part, so that all of them stop after the same step.
                    signal_number = self.context.max_over_ranks(stop.signal_number or 0)
                    if signal_number and self.step < cfg.train_steps:
                        self._stop(signal_number)
                self.context.barrier()  # the other processes wait for rank 0's last checkpoint
            except RuntimeError as error:
                if not self.context.distributed or isinstance(error, UserError):
                    raise
                # A collective failed: another process died or hung up.
                last = latest_checkpoint(self.run_dir)
                kept = f"the last complete checkpoint {last} is kept" if last else "no checkpoint was written yet"
                reason = " ".join(str(error).split())[:160]
                raise UserError(
                    f"process {self.context.rank} of {self.context.world_size} lost contact with the others at step "
                    f"{self.step + 1} ({reason}); {kept}; restart the job with resume=True"
                ) from None
            finally:
                progress.close()
                if writer is not None:
                    writer.close()
                self.lock.release()
        return self.ema_model()

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
        from ..viz.images import image_grid, save_image_atomic

        model = self.ema_model()
        result = model.sample(num, nfe=min(self.process.steps, 100), generator=torch.Generator().manual_seed(0))
        images, _ = model.decode(result.states)
        path = self.run_dir / "samples" / f"{checkpoint_name(self.step)}.png"
        save_image_atomic(image_grid(images, upscale=2), path)
        if writer is not None:
            writer.add_images("samples", (images.cpu() + 1) / 2, self.step)
        return path

    def ema_model(self) -> DiffusionModel:
        return DiffusionModel(self.config.model, self.ema_network, run_config=self.config)

    # ----- checkpoints ------------------------------------------------------------------
    def checkpoint_bytes(self) -> int:
        """Estimated size of one checkpoint: weights, EMA, two AdamW moments and the chain pool."""
        weights = sum(p.numel() * p.element_size() for p in self.model.network.state_dict().values())
        pool = (
            0
            if self.objective.anchored_at_data
            else self.objective.pool_size * math.prod(self.config.model.state_shape(1)) * 4
        )
        return 4 * weights + pool

    def save_checkpoint(self) -> Path:
        """Write everything needed to resume into step-NNNNNNNN/, atomically; prune old ones."""
        for name, network in (("weights", self.model.network), ("EMA weights", self.ema_network)):
            if first_nonfinite(network.state_dict()) is not None:
                raise TrainingDiverged(self._diverged_message(f"the {name} are NaN or infinite at step {self.step}"))
        try:
            final = write_checkpoint(
                self.run_dir, self.step, self.training_state(), run_config_dict(self.config.model, self.config)
            )
        except OSError as error:
            last = latest_checkpoint(self.run_dir)
            kept = f"the last good checkpoint {last} is kept" if last else "no checkpoint was written yet"
            raise UserError(
                f"{error.filename or self.run_dir}: cannot write the checkpoint ({error.strerror or error}); {kept}; "
                "free some space or fix the permissions, then continue with resume=True"
            ) from None
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
        """Restore weights, EMA, optimizer, pool and generator states from a checkpoint directory."""
        self.step = self.checkpointed_step = read_checkpoint(checkpoint, self.training_state())


def _summary_writer(folder: Path):  # noqa: ANN202 - SummaryWriter or None
    """A TensorBoard writer, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))
