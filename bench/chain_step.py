"""The cost of one forward chain step per 32-px image, against an elementwise floor measured in the same run.

    python bench/chain_step.py [--batches 32 500] [--image-size 32] [--repeat 30] [--device auto]
                               [--out chain_step.json]

For Kuramoto global and local coupling, times (µs per image, median of ``--repeat`` calls after warm-up):

* ``plain``: ``process.step`` (the chain's draw: drift, wrap, fresh noise), what the pool does under the
  Markov objectives;
* ``propagated``: the chain step of the propagated objective (``chain_pool._propagated_step``: the draw, the
  kernel's score and the carried score estimate's update), what the pool and its fill do by default;
* ``floor``: one fused elementwise pass over the same tensors, ``torch.addcmul(x, estimate, noise, out=…)``
  (three reads and one write of an image-sized array): what any step must at least spend moving its data.

``propagated_before`` is the propagated step with the implementation before 2026-12-06 patched in (shifted-slice
correlations on a padded copy, index-based padding adjoint, the score update term by term, softmax over stacked
wrapped-normal terms; copied below), timed in the same rounds: ``speedup`` is its time ÷ ``propagated``'s.

``state_max_gap`` and ``estimate_max_gap`` (relative to the largest estimate) compare one draw of both, with the
same noise: they differ by rounding only (float32).

Speeds are reported as ratios to the floor of the same run (``plain_to_floor``, ``propagated_to_floor``), so
a loaded machine shifts the µs but much less the ratios. The batch is the number of images stepped at once
(the pool advances 200 chains per training step at T = 100; its fill at T = 1000 steps 1 … 1000 chains at a time).
Keys ``<coupling>_B<batch>_<what>``. Writes bench/results/chain_step.json.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor

from common import print_table, synchronized_seconds, write_json
from kuramoto_diffusion.processes import KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.training.objectives.propagated import compile_propagated_steps
from kuramoto_diffusion.training.objectives.propagated import propagated_chain_step as _propagated_step


# ----- the implementation before 2026-12-06, for the same-run comparison ----------------------------------------
def _correlate(field: Tensor, weights: list[float], dim: int, length: int) -> Tensor:
    out = field.narrow(dim, 0, length) * weights[0]
    for offset, weight in enumerate(weights[1:], start=1):
        out = out.add(field.narrow(dim, offset, length), alpha=weight)
    return out


def _padding_sources(process: KuramotoProcess, length: int, device: torch.device) -> Tensor:
    size = process.config.neighbourhood
    index = torch.arange(length, dtype=torch.float64).view(1, 1, length)
    padded = F.pad(index, ((size - 1) // 2, size // 2), mode=process.config.padding)
    return padded.view(-1).round().long().to(device)


def _slices_local_average(self: KuramotoProcess, field: Tensor) -> Tensor:
    batch, channels, height, width = field.shape
    size = self.config.neighbourhood
    before, after = (size - 1) // 2, size // 2
    flat = field.reshape(batch * channels, 1, height, width)
    padded = F.pad(flat, (before, after, before, after), mode=self.config.padding) if size > 1 else flat
    weights = self._kernel_1d.tolist()
    return _correlate(_correlate(padded, weights, 2, height), weights, 3, width).reshape(batch, channels, height, width)


def _slices_average_transpose(self: KuramotoProcess, field: Tensor) -> Tensor:
    if self.config.coupling == "global":
        return field.mean(dim=tuple(range(1, field.dim())), keepdim=True)
    batch, channels, height, width = field.shape
    size = self.config.neighbourhood
    flat = field.reshape(batch * channels, 1, height, width)
    flipped = self._kernel_1d.flip(0).tolist()
    spread = F.pad(flat, (size - 1, size - 1, size - 1, size - 1))
    spread = _correlate(_correlate(spread, flipped, 3, width + size - 1), flipped, 2, height + size - 1)
    if size > 1:
        cache = self.__dict__.setdefault("_bench_sources", {})
        if (height, width) not in cache:
            cache[height, width] = (
                _padding_sources(self, height, field.device),
                _padding_sources(self, width, field.device),
            )
        rows, columns = cache[height, width]
        spread = torch.zeros(
            *spread.shape[:2], height, spread.shape[3], dtype=field.dtype, device=field.device
        ).index_add_(2, rows, spread)
        spread = torch.zeros(*spread.shape[:3], width, dtype=field.dtype, device=field.device).index_add_(
            3, columns, spread
        )
    return spread.reshape(batch, channels, height, width)


def _softmax_wrapped_normal_score(x: Tensor, mean: Tensor | float, scale: Tensor | float) -> Tensor:
    scale_t = torch.as_tensor(scale, dtype=x.dtype, device=x.device)
    offset = torch.remainder(x - mean + math.pi, 2 * math.pi) - math.pi
    offset = torch.where(offset >= math.pi, offset - 2 * math.pi, offset)
    k_max = max(1, math.ceil((9.0 * float(scale_t.max()) + math.pi) / (2 * math.pi)))
    shifts = 2 * math.pi * torch.arange(-k_max, k_max + 1, dtype=x.dtype, device=x.device)
    terms = offset.unsqueeze(0) + shifts.view(-1, *([1] * offset.dim()))
    weights = torch.softmax(-0.5 * (terms / scale_t) ** 2, dim=0)
    return -(weights * terms).sum(dim=0) / scale_t**2


def _term_by_term_propagate_score(
    self: KuramotoProcess, x: Tensor, t: object, estimate: Tensor, *, inverse_terms: int = 2
) -> Tensor:
    cfg = self.config
    strength = self.coupling_strength(t, 1, like=x)
    cos_theta, sin_theta = torch.cos(x), torch.sin(x)
    mean_cos, mean_sin = self.neighbourhood_mean(x)
    back_cos, back_sin = self.average_transpose(cos_theta), self.average_transpose(sin_theta)
    coupling = mean_sin * cos_theta - mean_cos * sin_theta
    reverse_coupling = back_sin * cos_theta - back_cos * sin_theta
    log_det_gradient = strength * (-coupling - reverse_coupling - cfg.ref_strength * torch.sin(cfg.ref_phase - x))
    diagonal = -(mean_cos * cos_theta + mean_sin * sin_theta) - cfg.ref_strength * torch.cos(cfg.ref_phase - x)
    carried = estimate - log_det_gradient
    inverse = carried
    for _ in range(inverse_terms):
        transposed = (
            cos_theta * self.average_transpose(inverse * cos_theta)
            + sin_theta * self.average_transpose(inverse * sin_theta)
            + diagonal * inverse
        )
        inverse = carried - strength * transposed
    return inverse


@contextlib.contextmanager
def former_implementation() -> Iterator[None]:
    """The chain step as it was before 2026-12-06 (same results up to rounding)."""
    with (
        mock.patch.object(KuramotoProcess, "_local_average", _slices_local_average),
        mock.patch.object(KuramotoProcess, "average_transpose", _slices_average_transpose),
        mock.patch.object(KuramotoProcess, "propagate_score", _term_by_term_propagate_score),
        mock.patch("kuramoto_diffusion.processes.kuramoto.wrapped_normal_score", _softmax_wrapped_normal_score),
    ):
        yield


def _former_propagated_step(*args: object) -> object:
    with former_implementation():
        return _propagated_step(*args)  # type: ignore[arg-type]


@torch.compile(dynamic=True)
def transcendental_floor(x: Tensor, estimate: Tensor, noise: Tensor) -> Tensor:
    """One fused pass with the transcendental work any propagated step needs per value: cos θ and sin θ (the
    drift and the score update) and the two exps of the wrapped-normal score's terms at ±2π."""
    return (torch.cos(x) * estimate + torch.sin(x) * noise) * (torch.exp(-noise * noise) + torch.exp(-x * estimate))


def interleaved_medians(
    functions: dict[str, Callable[[], object]], repeat: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each function, timed in turn (one call of each per round) after a warm-up."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for round_ in range(repeat + 2):
        for name, function in functions.items():
            seconds = synchronized_seconds(function, device)
            if round_ >= 2:  # two warm-up rounds
                samples[name].append(seconds)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 500], help="images stepped at once")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000, help="the process's T (the step timed is T/2)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--out", type=Path, default=Path("chain_step.json"), help="JSON file (a bare name goes into bench/results/)"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    payload: dict[str, object] = {
        "command": shlex.join(["python", "bench/chain_step.py", *sys.argv[1:]]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
    }
    rows = []
    for coupling in ("global", "local"):
        process = KuramotoProcess(KuramotoConfig(coupling=coupling, steps=args.steps))
        for batch in args.batches:
            generator = torch.Generator(device=device).manual_seed(0)
            shape = (batch, 1, args.image_size, args.image_size)
            x = torch.rand(shape, generator=generator, device=device) * 2 * torch.pi - torch.pi
            estimate = torch.randn(shape, generator=generator, device=device)
            noise = torch.randn(shape, generator=generator, device=device)
            out = torch.empty_like(x)
            t = torch.full((batch,), args.steps // 2, device=device)
            # An equal process of its own (processes compare by identity) whose steps go through torch.compile.
            compiled = KuramotoProcess(process.config)
            compile_propagated_steps(compiled)
            start = time.perf_counter()
            _propagated_step(compiled, x, t, estimate, generator)  # the first call compiles
            compile_s = time.perf_counter() - start
            seconds = interleaved_medians(
                {
                    "floor": lambda: torch.addcmul(x, estimate, noise, out=out),
                    "transcendental_floor": lambda: transcendental_floor(x, estimate, noise),
                    "plain": lambda: process.step(x, t, generator=generator),
                    "propagated": lambda: _propagated_step(process, x, t, estimate, generator),
                    "propagated_before": lambda: _former_propagated_step(process, x, t, estimate, generator),
                    "propagated_compiled": lambda: _propagated_step(compiled, x, t, estimate, generator),
                },
                args.repeat,
                device,
            )
            # The same draw both ways (same noise): the states and estimates agree to rounding.
            now = _propagated_step(process, x, t, estimate, torch.Generator(device=device).manual_seed(1))
            former = _former_propagated_step(process, x, t, estimate, torch.Generator(device=device).manual_seed(1))
            fused = _propagated_step(compiled, x, t, estimate, torch.Generator(device=device).manual_seed(1))
            compiled_gap = float((now[0] - fused[0]).abs().max())
            compiled_estimate_gap = float((now[1] - fused[1]).abs().max() / now[1].abs().max())
            state_gap = float((now[0] - former[0]).abs().max())
            estimate_gap = float((now[1] - former[1]).abs().max() / former[1].abs().max())
            row = {
                "coupling": coupling,
                "batch": batch,
                "state_max_gap": state_gap,
                "estimate_max_gap": estimate_gap,
                "compiled_state_max_gap": compiled_gap,
                "compiled_estimate_max_gap": compiled_estimate_gap,
                "compile_s": compile_s,
                **{f"{name}_us_per_image": 1e6 * value / batch for name, value in seconds.items()},
                "plain_to_floor": seconds["plain"] / seconds["floor"],
                "propagated_to_floor": seconds["propagated"] / seconds["floor"],
                "speedup": seconds["propagated_before"] / seconds["propagated"],
                "compiled_to_floor": seconds["propagated_compiled"] / seconds["floor"],
                "compiled_to_transcendental_floor": seconds["propagated_compiled"] / seconds["transcendental_floor"],
                "compiled_speedup": seconds["propagated"] / seconds["propagated_compiled"],
            }
            rows.append(row)
            for key, value in row.items():
                if (
                    key not in ("coupling", "batch", "state_max_gap", "estimate_max_gap", "compile_s")
                    and "gap" not in key
                ):
                    payload[f"{coupling}_B{batch}_{key}"] = value
    payload["rows"] = rows
    payload["table"] = print_table(
        rows,
        [
            "coupling",
            "batch",
            "floor_us_per_image",
            "plain_us_per_image",
            "propagated_us_per_image",
            "propagated_before_us_per_image",
            "plain_to_floor",
            "propagated_to_floor",
            "speedup",
            "transcendental_floor_us_per_image",
            "propagated_compiled_us_per_image",
            "compiled_to_floor",
            "compiled_to_transcendental_floor",
            "compiled_speedup",
            "compile_s",
            "state_max_gap",
            "estimate_max_gap",
            "compiled_estimate_max_gap",
        ],
    )
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
