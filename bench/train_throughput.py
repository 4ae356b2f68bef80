"""Training throughput: the O(1) chain pool against the authors' re-simulate-to-t, same network.

    python bench/train_throughput.py [--steps 5] [--presets small tiny] [--image-size 32]
                                     [--horizons 100 1000] [--objective auto] [--objectives markov ...]

For Kuramoto global and local coupling at T = 100 and T = 1000, times training steps
(forward states + loss + backward + AdamW) with each way of getting x_t, and reports
examples/s and the speedup pool ÷ re-simulate (measured in the same run), for each network
preset: the pool removes the O(T) forward cost, so the speedup is larger the cheaper the
network is relative to T forward steps. Keys ``speedup_local_T1000`` etc. are for the first
preset, ``speedup_local_T1000_<preset>`` for each. ``forward_share_*``: the share of the pool's step
time spent advancing the chains (pool advance time ÷ step time), and ``speedup_ceiling_*`` the
speed-up of a step with no forward cost at all (the network's own cost bounds the pool's). Also records
peak memory of training at the default preset (RSS on CPU, CUDA peak on GPU).

Every run uses TrainConfig's defaults, ``--objective`` (auto: propagated for Kuramoto) and the default
number of chains the pool advances per step (``pool_advance`` column). Where that is fewer than all of
them (T = 1000), a row "every chain" times the same pool advancing all N, the design before
2026-12-02 (keys ``forward_share_all_<coupling>_T<steps>[_<preset>]``). ``--objectives markov ...`` adds
the pool's examples/s with each other objective and its ratio to ``--objective``'s (key
``ratio_<objective>_to_default_<coupling>_T<steps>_<preset>``).
Writes bench/results/train_throughput.json.

``--mode cost`` (``all`` does both) instead compares a Kuramoto step with a Euclidean (VP) one, each with
TrainConfig's defaults (the pool, the propagated objective): a Euclidean trainer and one Kuramoto trainer per
``--regimes`` spec (bench/synchrony.py's syntax, e.g. ``local:k3:ref0.5`` or ``none:ref1.95``; default global and
local) are built in one process, then timed interleaved, ``--steps`` training steps of each in turn for
``--rounds`` rounds, the first round dropped (warm-up). Keys ``cost_ratio_<regime>_T<steps>_<preset>``
(Kuramoto ÷ Euclidean seconds per step, summed over the kept rounds, with a paired bootstrap 95 % interval over
rounds as ``cost_ratio_low``/``_high`` in the rows; ``cost_ratio_median_…`` the median of the rounds' ratios,
with min and max in the table) and ``pool_fill_s_<regime>_T<steps>`` (seconds to build the pool
at the start, for the first preset; ``…_<preset>`` for each). Each cost row also carries the regime's process
config, which bench/screen.py ``--costs`` matches against the screen's trained regimes (issue 31 §5.5). ``--compile-chain`` adds ``<regime>-compiled`` for each regime: the same
runs with the pool's propagated step through ``torch.compile`` (``compile_propagated_steps``), timed in the
same rounds, so that the compiled and eager steps are compared on one machine state.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import peak_rss_mib, print_table, synchronized_seconds, write_json
from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.runtime import resolve_device
from kuramoto_diffusion.serialization import config_to_dict
from kuramoto_diffusion.training import Trainer
from kuramoto_diffusion.training.objectives import compile_propagated_steps, default_pool_size
from synchrony import regime_config


def examples_per_second(
    process: KuramotoConfig,
    forward_states: str,
    preset: str,
    args: argparse.Namespace,
    device: torch.device,
    objective: str,
    pool_advance: int = 0,
) -> tuple[float, float, int]:
    """(examples/s, the share of the step time spent advancing the chain pool (0 without a pool), chains advanced
    per step)."""
    source = open_image_source(args.dataset, args.image_size, channels=1)
    config = RunConfig(
        model=image_model_config(process, 1, args.image_size, preset),
        data=DataConfig(image_size=args.image_size),
        training=TrainConfig(
            train_steps=10**6,
            batch_size=args.batch_size,
            forward_states=forward_states,
            fit_prior=False,
            checkpoint_every=10**6,
            sample_every=0,
            objective=objective,
            pool_advance=pool_advance,
        ),
    )
    with tempfile.TemporaryDirectory() as folder:
        trainer = Trainer(config, source, folder, device=device, quiet=True)
        trainer.start()
        trainer.train_step()  # warm-up
        advancing = [0.0]
        if trainer.pool is not None:
            advance = trainer.pool.advance

            def timed_advance() -> None:
                advancing[0] += synchronized_seconds(advance, device)

            trainer.pool.advance = timed_advance  # type: ignore[method-assign]

        def steps() -> None:
            for _ in range(args.steps):
                trainer.train_step()

        elapsed = synchronized_seconds(steps, device)
        advanced = trainer.pool.advance_count if trainer.pool is not None else 0
        return args.steps * args.batch_size / elapsed, advancing[0] / elapsed, advanced


def interleaved_costs(
    steps: int, preset: str, args: argparse.Namespace, device: torch.device
) -> tuple[dict[str, list[float]], dict[str, float], dict[str, dict]]:
    """({model: seconds per training step in each kept round}, {regime: pool fill seconds}, {model: process
    config}) for the Euclidean model and each ``--regimes`` Kuramoto model at T = ``steps``, timed interleaved
    (see the module docstring)."""
    source = open_image_source(args.dataset, args.image_size, channels=1)
    processes: dict[str, EuclideanConfig | KuramotoConfig] = {"euclidean": EuclideanConfig(steps=steps)}
    processes.update({spec: regime_config(spec, steps) for spec in args.regimes})
    if args.compile_chain:  # beside the eager ones, in the same rounds
        processes.update({f"{name}-compiled": processes[name] for name in args.regimes})
    trainers, fills, folders = {}, {}, []
    try:
        for name, process in processes.items():
            config = RunConfig(
                model=image_model_config(process, 1, args.image_size, preset),
                data=DataConfig(image_size=args.image_size),
                training=TrainConfig(
                    train_steps=10**6,
                    batch_size=args.batch_size,
                    fit_prior=False,
                    checkpoint_every=10**6,
                    sample_every=0,
                    objective=args.objective,
                    # passed only when set, so that the script also times code from before the option
                    **(
                        {"pool_fill_trajectories": args.pool_fill_trajectories}
                        if args.pool_fill_trajectories and name != "euclidean"
                        else {}
                    ),
                ),
            )
            folders.append(tempfile.TemporaryDirectory())
            trainer = Trainer(config, source, folders[-1].name, device=device, quiet=True)
            if name.endswith("-compiled"):
                compile_propagated_steps(trainer.process)  # the fill below includes the compile
            fill = synchronized_seconds(trainer.start, device)  # builds the pool (fit_prior is off): the fill
            if name != "euclidean":
                fills[name] = fill
            trainer.train_step()  # warm-up
            trainers[name] = trainer
        rounds: dict[str, list[float]] = {name: [] for name in trainers}
        for round_ in range(args.rounds):
            for name, trainer in trainers.items():
                seconds = synchronized_seconds(
                    lambda trainer=trainer: [trainer.train_step() for _ in range(args.steps)], device
                )
                if round_:  # the first round is a warm-up
                    rounds[name].append(seconds / args.steps)
        return rounds, fills, {name: config_to_dict(process) for name, process in processes.items()}
    finally:
        for folder in folders:
            folder.cleanup()


def paired_ratio_interval(
    seconds: list[float], reference: list[float], resamples: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """Percentile-bootstrap interval of sum(seconds) / sum(reference), rounds drawn with replacement and each
    round's two timings together (they shared the machine's load)."""
    mine, theirs = np.asarray(seconds), np.asarray(reference)
    draws = np.random.default_rng(0).integers(0, len(mine), size=(resamples, len(mine)))
    ratios = mine[draws].sum(axis=1) / theirs[draws].sum(axis=1)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))


def cost_rows(args: argparse.Namespace, device: torch.device, payload: dict[str, object]) -> list[dict[str, object]]:
    """The ``--mode cost`` table: seconds per step of each model and Kuramoto ÷ Euclidean, per preset and T."""
    rows = []
    for preset in args.presets:
        for steps in args.horizons:
            rounds, fills, configs = interleaved_costs(steps, preset, args, device)
            reference = rounds["euclidean"]
            for name, seconds in rounds.items():
                ratio = sum(seconds) / sum(reference)
                low, high = paired_ratio_interval(seconds, reference)
                # Each round's ratio: their spread shows how much the machine's load moved the figure.
                each = sorted(mine / theirs for mine, theirs in zip(seconds, reference))
                rows.append(
                    {
                        "preset": preset,
                        "model": name,
                        "T": steps,
                        "ms_per_step": 1e3 * statistics.mean(seconds),
                        "ms_per_example": 1e3 * statistics.mean(seconds) / args.batch_size,
                        "cost_ratio": ratio,
                        "cost_ratio_low": low,
                        "cost_ratio_high": high,
                        "round_ratio_min": each[0],
                        "round_ratio_median": statistics.median(each),
                        "round_ratio_max": each[-1],
                        "pool_fill_s": fills.get(name, 0.0),
                        "compiled": name.endswith("-compiled"),
                        "config": configs[name],
                    }
                )
                if name == "euclidean":
                    continue
                payload[f"cost_ratio_{name}_T{steps}_{preset}"] = ratio
                payload[f"cost_ratio_median_{name}_T{steps}_{preset}"] = statistics.median(each)
                payload[f"pool_fill_s_{name}_T{steps}_{preset}"] = fills[name]
                if preset == args.presets[0]:
                    payload[f"pool_fill_s_{name}_T{steps}"] = fills[name]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5, help="training steps per timing (per round in --mode cost)")
    parser.add_argument(
        "--mode",
        choices=["pool", "cost", "all"],
        default="pool",
        help="pool: the pool against re-simulation; cost: Kuramoto against Euclidean, interleaved",
    )
    parser.add_argument(
        "--rounds", type=int, default=6, help="--mode cost: rounds of interleaved timing (the first dropped)"
    )
    parser.add_argument("--dataset", default="textures", help="the built-in image data set")
    parser.add_argument(
        "--pool-fill-trajectories",
        type=int,
        default=0,
        help="--mode cost: TrainConfig.pool_fill_trajectories of the Kuramoto runs (0: the default fill)",
    )
    parser.add_argument(
        "--compile-chain",
        action="store_true",
        help="--mode cost: also time Kuramoto runs whose pools' propagated step goes through torch.compile (as "
        "TrainConfig.compile does, without compiling the networks), rows '<coupling>-compiled'; their fill "
        "time includes the compile",
    )
    parser.add_argument(
        "--regimes",
        nargs="+",
        default=["global", "local"],
        help="--mode cost: the Kuramoto regimes timed against Euclidean, as bench/synchrony.py writes them "
        "(COUPLING[:k<scale>][:kconst][:unit][:ref<κ>])",
    )
    parser.add_argument("--presets", nargs="+", default=["small", "tiny"])
    parser.add_argument("--horizons", type=int, nargs="+", default=[100, 1000], help="the T of each run")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--objective", default="auto", help="the DSM objective of every run (TrainConfig's default)")
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=[],
        help="also time these DSM objectives with the pool, as a ratio to --objective's in the same run",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("train_throughput.json"),
        help="JSON file (a bare name goes into bench/results/)",
    )
    args = parser.parse_args()
    try:  # a bad regime fails before any timing
        for spec in args.regimes:
            regime_config(spec, args.horizons[0])
    except UserError as error:
        parser.exit(2, f"error: --regimes: {error}\n")
    if len(set(args.regimes)) != len(args.regimes):
        parser.exit(2, "error: --regimes: each regime once; drop the repeated spec\n")
    device = resolve_device(args.device)
    rows, objective_rows = [], []
    payload: dict[str, object] = {
        "command": shlex.join(["python", "bench/train_throughput.py", *sys.argv[1:]]),
        "settings": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
    }
    if args.mode in ("cost", "all"):
        payload["cost_rows"] = cost = cost_rows(args, device, payload)
        payload["cost_table"] = print_table(
            cost,
            [
                "preset",
                "model",
                "T",
                "ms_per_step",
                "ms_per_example",
                "cost_ratio",
                "cost_ratio_low",
                "cost_ratio_high",
                "round_ratio_min",
                "round_ratio_median",
                "round_ratio_max",
                "pool_fill_s",
            ],
        )
    for preset in args.presets if args.mode != "cost" else ():
        for steps in args.horizons:
            for coupling in ("global", "local"):
                process = KuramotoConfig(coupling=coupling, steps=steps)
                pool, forward_share, advanced = examples_per_second(
                    process, "pool", preset, args, device, args.objective
                )
                reference, _, _ = examples_per_second(process, "resimulate", preset, args, device, args.objective)
                # The pool cannot beat a step without any forward cost: that ceiling is 1/(1 − share) × the pool's rate.
                ceiling = reference and pool / (1 - forward_share) / reference
                rows.append(
                    {
                        "preset": preset,
                        "coupling": coupling,
                        "T": steps,
                        "pool_advance": advanced,
                        "pool_examples_per_s": pool,
                        "resimulate_examples_per_s": reference,
                        "speedup": pool / reference,
                        "forward_share": forward_share,
                        "speedup_ceiling": ceiling,
                    }
                )
                for key, value in (
                    ("speedup", pool / reference),
                    ("forward_share", forward_share),
                    ("speedup_ceiling", ceiling),
                ):
                    payload[f"{key}_{coupling}_T{steps}_{preset}"] = value
                    if preset == args.presets[0]:
                        payload[f"{key}_{coupling}_T{steps}"] = value
                size = default_pool_size(steps, args.batch_size)
                if advanced < size:  # the same pool advancing every chain: the former design
                    every, every_share, _ = examples_per_second(
                        process, "pool", preset, args, device, args.objective, size
                    )
                    rows.append(
                        {
                            "preset": preset,
                            "coupling": coupling,
                            "T": steps,
                            "pool_advance": size,
                            "pool_examples_per_s": every,
                            "resimulate_examples_per_s": reference,
                            "speedup": every / reference,
                            "forward_share": every_share,
                            "speedup_ceiling": reference and every / (1 - every_share) / reference,
                        }
                    )
                    payload[f"forward_share_all_{coupling}_T{steps}_{preset}"] = every_share
                    if preset == args.presets[0]:
                        payload[f"forward_share_all_{coupling}_T{steps}"] = every_share
                for objective in args.objectives:
                    if objective == args.objective:
                        continue
                    other, other_share, _ = examples_per_second(process, "pool", preset, args, device, objective)
                    objective_rows.append(
                        {
                            "preset": preset,
                            "coupling": coupling,
                            "T": steps,
                            "objective": objective,
                            "examples_per_s": other,
                            "default_examples_per_s": pool,
                            "ratio_to_default": other / pool,
                            "forward_share": other_share,
                        }
                    )
                    payload[f"ratio_{objective}_to_default_{coupling}_T{steps}_{preset}"] = other / pool
    if args.mode != "cost":
        payload["rows"] = rows
        payload["table"] = print_table(
            rows,
            [
                "preset",
                "coupling",
                "T",
                "pool_advance",
                "pool_examples_per_s",
                "resimulate_examples_per_s",
                "speedup",
                "forward_share",
                "speedup_ceiling",
            ],
        )
    if objective_rows:
        payload["objective_rows"] = objective_rows
        payload["objective_table"] = print_table(
            objective_rows,
            [
                "preset",
                "coupling",
                "T",
                "objective",
                "examples_per_s",
                "default_examples_per_s",
                "ratio_to_default",
                "forward_share",
            ],
        )
    if device.type == "cuda":
        payload["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
        payload["peak_memory_kind"] = "CUDA max_memory_allocated"
    else:
        payload["peak_memory_mib"] = peak_rss_mib()
        payload["peak_memory_kind"] = "process peak RSS (CPU)"
    print(
        f"peak memory of training ({', '.join(args.presets)}, batch {args.batch_size}, {args.image_size} px): "
        f"{payload['peak_memory_mib']:.0f} MiB ({payload['peak_memory_kind']})"
    )
    write_json(args.out, payload)


if __name__ == "__main__":
    main()
