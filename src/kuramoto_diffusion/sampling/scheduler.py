"""A Hugging Face diffusers-style scheduler: the samplers of ``sampling`` one network call at a time.

For loops written in the diffusers way, without our trainer or ``DiffusionModel.sample``::

    scheduler = KuramotoScheduler(model.config.process, sampler="sde")
    scheduler.set_timesteps(25)
    x = scheduler.init_noise_sample(shape, generator=generator)
    for t in scheduler.timesteps:
        output = network(scheduler.scale_model_input(x, t), scheduler.network_time(t, x))
        x = scheduler.step(output, t, x, generator=generator).prev_sample

Conventions (the process's, SPEC §3 and §5):

* ``sample`` and ``prev_sample`` are process states: phases in radians, [-π, π), for
  Kuramoto; pixel values (data units, ≈ [-1, 1] at t = 0) for the Euclidean baseline.
  Encode data with the model's codec (``DiffusionModel.encode``, ``codecs.py``) and decode results with it.
* ``timestep`` is an integer step t ∈ 1 … T of the forward chain (not t/T).
* ``model_output`` is what our ``ScoreNetwork`` returns at (x, t/T): the preconditioned
  output F = c(t)·score (``process.output_scale``; for the Euclidean process c(t) = −√(1 − ᾱ_t),
  so F is the ε-prediction). ``step`` divides by c(t), exactly as ``DiffusionModel.score`` does.
* Each ``step`` is one interval of ``sampling.reverse_sweep`` (the same grid, the same formulas
  from the process and the same noise draws), so a loop over ``timesteps`` reproduces
  ``DiffusionModel.sample`` bit for bit for the same seed.

The steps are those of the registry ``sampling.steps.REVERSE_STEPS`` (its ``stepwise`` entries), the same
functions the sweep calls; this module only feeds them one network evaluation per call.
diffusers itself is not needed here; with diffusers installed, ``sampling.diffusers`` offers
the same scheduler as a real ``SchedulerMixin``/``ConfigMixin`` subclass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from ..processes import ForwardProcess, KuramotoConfig, ProcessConfig, build_process
from ..processes.base import ScoreFn
from ..serialization import choice_check, config_from_dict, config_to_dict, read_json, write_json_atomic
from .steps import REVERSE_STEPS, Sampler
from .sweep import sweep_grid

SCHEDULER_CONFIG_NAME = "scheduler_config.json"


def scheduler_samplers() -> tuple[str, ...]:
    """The samplers ``DiffusionScheduler`` runs now, samplers registered at run time included."""
    return tuple(name for name, step in REVERSE_STEPS.items() if step.stepwise)


SCHEDULER_SAMPLERS = scheduler_samplers()  # the built-in ones


@dataclass(frozen=True)
class SchedulerConfig:
    """What ``scheduler_config.json`` stores besides ``_class_name``: the forward process and the sampler."""

    process: ProcessConfig
    sampler: str = "sde"  # sde | ode | ode-heun

    def __post_init__(self) -> None:
        choice_check("sampler", self.sampler, scheduler_samplers())


@dataclass
class SchedulerOutput:
    """The result of ``step``: the states at the next (lower) timestep."""

    prev_sample: Tensor


@dataclass
class _Pending:
    """An interval between two of its network evaluations (ode-heun's): its start, the scores so far and the
    step of the evaluation due next."""

    sample: Tensor
    scores: list[tuple[int, Tensor]]
    upper: int
    lower: int
    due: int


class _ScoreDue(Exception):
    """Raised inside a step that asks for a score not evaluated yet: the loop must evaluate it at (state, step)."""

    def __init__(self, state: Tensor, step: int) -> None:
        super().__init__(step)
        self.state, self.step = state, step


class DiffusionScheduler:
    """Reverse-time sampler of any forward process of this library, one network evaluation per ``step``.

    ``sampler``: "sde" (Euler–Maruyama / DDPM ancestral), "ode" (probability-flow Euler / DDIM)
    or "ode-heun" (second order; two ``step`` calls per interval, as diffusers' Heun scheduler).
    """

    def __init__(self, process_config: ProcessConfig, sampler: str = "sde") -> None:
        self.config = SchedulerConfig(process_config, sampler)
        self._sampler = Sampler(self.config.sampler)
        self.process: ForwardProcess = build_process(process_config)
        self.timesteps: Tensor = torch.zeros(0, dtype=torch.long)
        self.num_inference_steps: int | None = None
        self._lower_of: dict[int, int] = {}  # grid step -> the next (lower) grid step
        self._pending: _Pending | None = None

    @property
    def order(self) -> int:
        """Network evaluations per interval of the solver (diffusers' ``order``): 2 for ode-heun, else 1."""
        return self._sampler.evaluations_per_interval

    def __len__(self) -> int:
        """T, the number of steps of the forward process (diffusers: ``num_train_timesteps``)."""
        return self.process.steps

    # ----- the grid ---------------------------------------------------------------------
    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        start_step: int | None = None,
        timesteps: Sequence[int] | Tensor | None = None,
    ) -> None:
        """Set ``timesteps``: the network query steps of a sweep from ``start_step`` (default T) to 0.

        ``num_inference_steps`` n counts network evaluations (the NFE), for every sampler, as in
        ``DiffusionModel.sample(nfe=n, start_step=...)``, whose grid (``sampling.sweep_grid``) this is:

        * "sde" and "ode": n intervals, one evaluation each, so 1 ≤ n ≤ start_step;
        * "ode-heun": k intervals cost 2k − 1 evaluations (the last interval is an Euler step), so n
          must be odd, n = 2k − 1 ≤ 2·start_step − 1.

        Any other n is an error rather than a sweep of another size. ``timesteps`` instead gives
        the grid itself: strictly decreasing integer steps in 1 … T (0 is appended), the first being
        the start; then leave out ``num_inference_steps`` and ``start_step``.

        ``self.timesteps`` lists the grid without the final 0; for ode-heun every interior step
        appears twice (the Euler predictor's evaluation, then the next interval's), so
        len(timesteps) = ``num_inference_steps`` is the NFE of the sweep.
        """
        if timesteps is not None:
            if num_inference_steps is not None or start_step is not None:
                raise UserError("pass either num_inference_steps (and start_step) or timesteps, not both")
            grid = self._custom_grid(timesteps)
        else:
            if num_inference_steps is None:
                raise UserError("set_timesteps needs num_inference_steps (the NFE) or timesteps (the grid)")
            grid = sweep_grid(
                self.process, self.config.sampler, self._checked_nfe(num_inference_steps, start_step), start_step
            )
        uppers = [
            query for upper, lower in zip(grid[:-1], grid[1:]) for query in self._sampler.step.query_steps(upper, lower)
        ]
        self.timesteps = torch.tensor(uppers, dtype=torch.long)
        self.num_inference_steps = len(uppers)
        self._lower_of = dict(zip(grid[:-1], grid[1:]))
        self._pending = None

    def _checked_nfe(self, nfe: int, start_step: int | None) -> int:
        """``nfe`` if a sweep from ``start_step`` can spend exactly that many evaluations, else a UserError."""
        if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
            raise UserError(f"num_inference_steps must be an integer ≥ 1 (network evaluations), got {nfe!r}")
        start = self.process.steps if start_step is None else start_step
        sampler = self.config.sampler
        per_interval, last = self._sampler.evaluations_per_interval, self._sampler.evaluations_of_last_interval
        most = per_interval * (start - 1) + last
        excess = (nfe - last) % per_interval
        if excess:
            raise UserError(
                f"{sampler} spends {per_interval} evaluations per interval and {last} on the last, so "
                f"num_inference_steps is {per_interval}k − {per_interval - last} for k intervals; got {nfe}: "
                f"use {nfe - excess} or {nfe - excess + per_interval}"
            )
        if nfe > most:
            raise UserError(
                f"num_inference_steps = {nfe} is more than a {sampler} sweep from step {start} can spend "
                f"({most} evaluations); use at most {most}"
            )
        return nfe

    def _custom_grid(self, timesteps: Sequence[int] | Tensor) -> list[int]:
        """The grid of custom ``timesteps`` (strictly decreasing integers in 1 … T) with 0 appended."""
        if isinstance(timesteps, Tensor):
            valid = not timesteps.is_floating_point() and not timesteps.is_complex() and timesteps.dim() == 1
            steps = timesteps.tolist() if valid else None
        else:
            steps = list(timesteps)
            valid = all(isinstance(step, int) and not isinstance(step, bool) for step in steps)
        steps_of_process = self.process.steps
        if (
            not valid
            or not steps
            or any(upper <= lower for upper, lower in zip(steps, steps[1:]))
            or not 1 <= steps[-1] <= steps[0] <= steps_of_process
        ):
            raise UserError(
                f"timesteps must be a non-empty list of strictly decreasing integer steps in 1…{steps_of_process} "
                f"(0 is appended), got {timesteps!r}"
            )
        return [*steps, 0]

    def _describe_grid(self) -> str:
        grid = [*self._lower_of, 0]  # the upper ends in order, then the end of the sweep
        shown = (
            ", ".join(map(str, grid))
            if len(grid) <= 6
            else f"{grid[0]}, {grid[1]}, {grid[2]}, …, {grid[-2]}, {grid[-1]}"
        )
        return f"[{shown}]"

    # ----- model input ------------------------------------------------------------------
    def scale_model_input(self, sample: Tensor, timestep: int | Tensor) -> Tensor:
        """The network input for ``sample``: the states unchanged.

        The periodic embedding [cos θ, sin θ] (and the projection of the output onto the circle's
        tangent) happen inside ``ScoreNetwork``, which needs θ itself.
        """
        return sample

    def network_time(self, timestep: int | Tensor, sample: Tensor) -> Tensor:
        """The network's time input t/T (float32, on sample's device), one entry per example of ``sample``."""
        step = _as_step(timestep)
        return self.process.network_time(step).to(sample.device).expand(sample.shape[0])

    # ----- the reverse step -------------------------------------------------------------
    def step(
        self,
        model_output: Tensor,
        timestep: int | Tensor,
        sample: Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> SchedulerOutput | tuple[Tensor]:
        """Move ``sample`` from ``timestep`` to the next step of the grid, given the network output there.

        ``model_output`` is F = c(t)·score at (sample, timestep) (see the module docstring).
        "sde" draws its noise with ``generator`` (on sample's device); the ODE samplers use none.
        For ode-heun the second call of an interval (timestep = that interval's lower end, output
        evaluated at the previous ``prev_sample``) completes the Heun step from the interval's start.
        Returns ``SchedulerOutput(prev_sample)``, or ``(prev_sample,)`` when ``return_dict`` is False.
        """
        step = _as_step(timestep)
        if model_output.shape != sample.shape:
            raise UserError(
                f"model_output has shape {tuple(model_output.shape)}, sample {tuple(sample.shape)}; they must match"
            )
        pending = self._pending
        # The grid is checked before anything is computed at ``step``: off the grid, c(t) may not exist.
        if pending is not None:
            if step != pending.due:
                raise UserError(
                    f"{self.config.sampler} expects timestep {pending.due} (evaluation {len(pending.scores) + 1} of the "
                    f"interval {pending.upper}→{pending.lower}), got {step}; loop over scheduler.timesteps in order"
                )
            start, upper, lower, scores = pending.sample, pending.upper, pending.lower, pending.scores
        else:
            start, upper, lower, scores = sample, step, self._lower_step(step), []
        score = self.process.constrain_score(sample, step, model_output / self.process.output_scale(step, like=sample))
        scores = [*scores, (step, score)]
        # The registry's step runs from the interval's start with the scores evaluated so far; where it asks for
        # one more (ode-heun's at the Euler predictor), that state is this call's result and the next call's input.
        try:
            prev_sample, _ = self._sampler.step.run(
                self.process, _replayed_scores(scores), start, upper, lower, self._sampler, generator
            )
            self._pending = None
        except _ScoreDue as due:
            prev_sample = due.state
            self._pending = _Pending(start, scores, upper, lower, due.step)
        return SchedulerOutput(prev_sample) if return_dict else (prev_sample,)

    def _lower_step(self, step: int) -> int:
        if not self._lower_of:
            raise UserError("call set_timesteps(num_inference_steps) before step()")
        if step not in self._lower_of:
            raise UserError(
                f"timestep {step} is not on this scheduler's grid {self._describe_grid()} (0 is its end, where no "
                "step starts); use the values of scheduler.timesteps"
            )
        return self._lower_of[step]

    # ----- the forward process and the prior --------------------------------------------
    def add_noise(
        self, original_samples: Tensor, timesteps: int | Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """States at step ``timesteps`` drawn from p(x_t | x_0 = original_samples), e.g. to start an edit there.

        The Kuramoto process has no closed-form marginal, so this runs the chain step by step
        (``process.simulate``, t draws of noise from ``generator``) for both processes, exactly as
        ``DiffusionModel.forward_then_reverse`` does. Unlike diffusers there is no ``noise``
        argument. ``timesteps`` is one step t ∈ 0 … T (an int, or a tensor whose entries are all t).
        """
        return self.process.simulate(original_samples, _as_step(timesteps), generator=generator)

    def init_noise_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """States drawn from the prior at t = T (von Mises(ψ_ref, κ) per element for Kuramoto, N(0, I) for Euclidean).

        Use this instead of diffusers' ``randn · init_noise_sigma``: the Kuramoto prior is not Gaussian.
        """
        return self.process.prior_sample(shape, generator=generator, dtype=dtype, device=device)

    # ----- persistence ------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``scheduler_config.json`` (``_class_name``, the process config and the sampler) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        contents = {"_class_name": type(self).__name__, **config_to_dict(self.config)}
        write_json_atomic(directory / SCHEDULER_CONFIG_NAME, contents)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DiffusionScheduler:
        """Load ``scheduler_config.json`` from ``directory`` strictly: a foreign ``_class_name``, unknown keys
        or ill-typed values are a UserError naming the file."""
        path = Path(directory) / SCHEDULER_CONFIG_NAME
        data = read_json(path)
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object")
        class_name = data.pop("_class_name", None)
        if class_name != cls.__name__:
            raise UserError(
                f"{path}: _class_name is {class_name!r}, not {cls.__name__!r}; load it with the class that wrote it"
            )
        try:
            config = config_from_dict(SchedulerConfig, data, where=str(path))
            return cls(config.process, config.sampler)
        except UserError as error:
            # Errors of the config classes' own checks do not name the file yet.
            message = str(error)
            raise UserError(message if message.startswith(str(path)) else f"{path}: {message}") from None


class KuramotoScheduler(DiffusionScheduler):
    """``DiffusionScheduler`` for a Kuramoto process (global or local coupling) only."""

    def __init__(self, process_config: KuramotoConfig, sampler: str = "sde") -> None:
        if not isinstance(process_config, KuramotoConfig):
            raise UserError(
                f"KuramotoScheduler needs a KuramotoConfig, got {type(process_config).__name__}; "
                "use DiffusionScheduler for other processes"
            )
        super().__init__(process_config, sampler)


def _as_step(timestep: int | Tensor) -> int:
    """An integer step from an int or a tensor whose entries are all that step."""
    if isinstance(timestep, Tensor):
        if timestep.numel() == 0 or timestep.is_floating_point() or timestep.is_complex():
            raise UserError(
                "timestep must be an integer step or a tensor of integer steps, "
                f"got a {timestep.dtype} tensor of shape {tuple(timestep.shape)}"
            )
        first = timestep.flatten()[0]
        if not bool((timestep == first).all()):
            raise UserError("all examples must share one timestep; split the batch by timestep")
        return int(first)
    if isinstance(timestep, bool) or not isinstance(timestep, int):
        raise UserError(f"timestep must be an integer step, got {timestep!r}")
    return timestep


def _replayed_scores(scores: list[tuple[int, Tensor]]) -> ScoreFn:
    """A score function that answers a step's queries, in order, with the (step, score) pairs already evaluated,
    and raises ``_ScoreDue`` at the first query beyond them."""
    answers = iter(scores)

    def score_fn(state: Tensor, step: int) -> Tensor:
        answer = next(answers, None)
        if answer is None:
            raise _ScoreDue(state, step)
        evaluated_at, score = answer
        if evaluated_at != step:
            raise RuntimeError(
                f"the reverse step asked for the score at step {step}, but it was evaluated at {evaluated_at}"
            )
        return score

    return score_fn
