"""The regime screen (issue 31 §5.1): every Kuramoto regime's chain statistics beside its quality against Euclidean.

    python bench/screen.py bench/results/screen/fp_*.json [--metrics swd minutiae_w1 kid_random]
                           [--images 64] [--costs bench/results/train_cost_regimes.json]
                           [--out bench/results/screen.json]

Reads quality JSON files (bench/quality.py with the interval protocol). For each Kuramoto method label (one
regime: coupling, K range and shape, norm, κ_ref, prior), a row gives

- **the chain's statistics at t = T** (as bench/synchrony.py measures them, docs/synchrony.md): the mean
  cos(θ_p − θ_q) of pixels 1 and 8 px apart (both axes) and the order parameter R, on ``--images`` held-out crops
  of the data set, encoded as the model encodes them. The regime is rebuilt from the quality file's own settings
  (its "objective" key, through ``quality.process_for``), so a row's statistics are those of the trained chain;
- **its quality**: each metric's mean with its bootstrap 95 % interval over seeds, groups and reference sets, and
  the ratio to the Euclidean baseline paired by (seed, reference set) over the seeds both have (``headline.compare``:
  each side at its best sampler setting, the Euclidean side over every "euclidean…" label);
- **its training cost** (§5.5): with ``--costs`` (JSON of ``bench/train_throughput.py --mode cost --regimes …``),
  milliseconds per training example and their ratio to a Euclidean model timed in the same interleaved rounds,
  with its bootstrap 95 % interval over rounds; the cost row is the one whose process config equals the trained
  regime's in everything a training step uses (every key but the prior's), at the budget's network preset. Without it
  (and always in the JSON, as ``train_s_over_euclidean``), the training seconds ÷ the Euclidean model's over the
  same seeds: separate jobs on a shared machine, so indicative only.

Prints the table and writes ``{"rows": [...]}`` to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import torch

import headline
import quality
from common import RESULTS, print_table, write_json
from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.intervals import mean_interval
from kuramoto_diffusion.metrics.synchrony import forward_synchrony
from kuramoto_diffusion.processes import KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.serialization import config_to_dict

CROP_SEED = 50_000  # bench/synchrony.py's held-out crops
DISTANCES = (1, 8)


def regimes(paths: list[Path]) -> dict[str, quality.Objective]:
    """{method label: the quality Objective it was trained with}, from each file's "objective" key."""
    found: dict[str, quality.Objective] = {}
    for path in paths:
        payload = json.loads(Path(path).read_text())
        settings = dict(payload.get("objective") or {})
        if settings.get("coupling_range") is not None:
            settings["coupling_range"] = tuple(settings["coupling_range"])
        objective = quality.Objective(**settings)
        for row in payload["rows"]:
            if str(row.get("method", "")).startswith("kuramoto"):
                found[row["method"]] = objective
    return found


def held_out_crops(data: str, images: int, size: int = 32) -> torch.Tensor:
    """bench/synchrony.py's ``images`` held-out crops of ``data`` (size px, grey), the chain statistics' start."""
    source = open_image_source(data, size, channels=1, split="val")
    return source.sample_batch(images, torch.Generator().manual_seed(CROP_SEED))


def chain_statistics(config: KuramotoConfig, steps: int, crops: torch.Tensor) -> dict:
    """d1, d8 and R at t = T of the chain ``config``, started from ``crops`` (``held_out_crops``)."""
    process = KuramotoProcess(config)
    theta0 = ImageCodec.for_process(process).encode(crops.to(torch.float64))
    with torch.no_grad():
        stats = forward_synchrony(process, theta0, [steps], DISTANCES, generator=torch.Generator().manual_seed(1))
    return {"d1": stats.at(steps, 1), "d8": stats.at(steps, 8), "R": float(stats.order[-1])}


def train_cost_ratio(kuramoto: dict, euclidean: dict) -> dict | None:
    """Training seconds of the regime ÷ the Euclidean model's, over the seeds both trained (§5.5).

    ``kuramoto`` and ``euclidean`` are ``headline.load_settings`` families ({setting: {seed: (row, source)}}); every
    setting of one model carries the same ``train_s``. Rows of loaded models (``train_s`` 0) do not count. The two
    were timed in separate jobs that shared the machine with others, so the ratio is indicative only: in-run cost
    ratios are ``bench/train_throughput.py --mode cost``'s.
    """

    def seconds(family: dict) -> dict[int, float]:
        found: dict[int, float] = {}
        for by_seed in family.values():
            for seed, (row, _) in by_seed.items():
                if float(row.get("train_s") or 0.0) > 0.0:
                    found[seed] = float(row["train_s"])
        return found

    mine, theirs = seconds(kuramoto), seconds(euclidean)
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    return {"seeds": seeds, "ratio": sum(mine[s] for s in seeds) / sum(theirs[s] for s in seeds)}


def training_signature(config: dict) -> dict:
    """A process config's keys that a training step uses: all but the prior's (which only sampling reads)."""
    return {key: value for key, value in json.loads(json.dumps(config)).items() if not key.startswith("prior")}


def same_values(mine: object, theirs: object) -> bool:
    """Equal JSON values, floats to 1e-9 relative (3e-5 × 10 written two ways differs in the last bit)."""
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return mine.keys() == theirs.keys() and all(same_values(mine[key], theirs[key]) for key in mine)
    if isinstance(mine, list) and isinstance(theirs, list):
        return len(mine) == len(theirs) and all(same_values(a, b) for a, b in zip(mine, theirs))
    if isinstance(mine, float) or isinstance(theirs, float):
        return isinstance(mine, (int, float)) and isinstance(theirs, (int, float)) and math.isclose(mine, theirs)
    return mine == theirs


def in_run_costs(paths: list[Path]) -> list[dict]:
    """The eager cost rows of ``bench/train_throughput.py --mode cost`` files that carry their process config."""
    rows: list[dict] = []
    for path in paths:
        payload = json.loads(Path(path).read_text())
        if "cost_rows" not in payload:
            raise UserError(f"{path}: no cost rows; make it with bench/train_throughput.py --mode cost --regimes …")
        rows.extend(row for row in payload["cost_rows"] if "config" in row and not row.get("compiled"))
    return rows


def in_run_cost(config: KuramotoConfig, preset: str, costs: list[dict]) -> dict | None:
    """ms per training example of ``config`` at network ``preset`` and its ratio to Euclidean in the same run
    (``low``/``high``: its bootstrap 95 % interval over the timing rounds), from ``in_run_costs``; None when no row
    matches."""
    signature = training_signature(config_to_dict(config))
    for row in costs:
        if row["preset"] == preset and same_values(training_signature(row["config"]), signature):
            return {
                "ms_per_example": row["ms_per_example"],
                "ratio": row["cost_ratio"],
                "low": row["cost_ratio_low"],
                "high": row["cost_ratio_high"],
            }
    return None


def screen_rows(
    paths: list[Path], metrics: list[str], images: int, command: str, costs: list[dict] | None = None
) -> tuple[list[dict], list[str]]:
    found, notes = headline.load_settings(paths)
    trained = regimes(paths)
    rows = []
    crops: dict[str, torch.Tensor] = {}  # per data set, read once for all its regimes
    for (data, steps, budget), families in found.items():
        euclidean = families.get("euclidean")
        for key, settings in families.items():
            method = key.removeprefix("method:")
            if not key.startswith("method:kuramoto") or method not in trained:
                continue
            row: dict = {"data": data, "T": steps, "budget": budget, "regime": method}
            if data not in crops:
                crops[data] = held_out_crops(data, images)
            base = method.split("[")[0]
            config = quality.process_for(base, steps, trained[method])
            assert isinstance(config, KuramotoConfig)  # a "kuramoto…" method's
            row.update(chain_statistics(config, steps, crops[data]))
            for metric in metrics:
                metric_key = headline.METRIC_KEYS.get(metric, metric)
                seeds = sorted(headline.seeds_with(settings, metric_key))
                best = headline.best_setting(settings, seeds, metric_key) if seeds else None
                if best is None:
                    continue
                row["seeds"] = seeds
                row[metric] = {
                    "setting": best[0],
                    **mean_interval(
                        headline.stacked(best[1], seeds, metric_key), resamples=headline.RESAMPLES
                    ).as_dict(),
                }
                pair = (
                    None
                    if euclidean is None
                    else headline.compare(settings, euclidean, metric, data, notes, headline.RESAMPLES)
                )
                ratio = None if pair is None or pair.ratio is None else {"seeds": pair.seeds, **pair.ratio}
                row[f"{metric}_over_euclidean"] = ratio
            row["train_s_over_euclidean"] = None if euclidean is None else train_cost_ratio(settings, euclidean)
            if costs is not None:
                row["train_cost_in_run"] = in_run_cost(config, quality.BUDGETS[budget].preset, costs)
                if row["train_cost_in_run"] is None:
                    notes.append(f"{data} {method}: no --costs row has its process config; time it with --regimes")
            row["command"] = command
            rows.append(row)
    return rows, notes


def in_run_label(cost: dict | None) -> str:
    """``<ms per example> ms, <÷ E> [95 % interval]`` of an ``in_run_cost``, or — without one."""
    if cost is None:
        return "—"
    return f"{cost['ms_per_example']:.1f} ms, {cost['ratio']:.2f} [{cost['low']:.2f}, {cost['high']:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="quality JSON files of bench/quality.py")
    parser.add_argument("--metrics", nargs="+", default=["swd", "minutiae_w1", "kid_random"])
    parser.add_argument("--images", type=int, default=64, help="held-out crops for the chain statistics")
    parser.add_argument(
        "--costs",
        nargs="+",
        type=Path,
        default=None,
        help="JSON of bench/train_throughput.py --mode cost --regimes …: the in-run training cost of each regime",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "screen.json")
    args = parser.parse_args()
    command = shlex.join(["python", "bench/screen.py", *sys.argv[1:]])
    try:
        costs = None if args.costs is None else in_run_costs(args.costs)
        rows, notes = screen_rows(args.files, args.metrics, args.images, command, costs)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    table = [
        {
            "data": row["data"],
            "regime": row["regime"],
            "seeds": len(row.get("seeds", [])),
            "d1 / d8 at T": f"{row['d1']:.3f} / {row['d8']:.3f}",
            "R(T)": f"{row['R']:.2f}",
            **{f"{metric} ÷ E": headline._interval(row.get(f"{metric}_over_euclidean"), 3) for metric in args.metrics},
            args.metrics[0]: headline._interval(row.get(args.metrics[0]), 3),
            **(
                {"train ms/example ÷ E (same run)": in_run_label(row.get("train_cost_in_run"))}
                if args.costs is not None
                else {
                    "train s ÷ E (separate jobs)": "—"
                    if row["train_s_over_euclidean"] is None
                    else f"{row['train_s_over_euclidean']['ratio']:.2f}"
                }
            ),
        }
        for row in rows
    ]
    if table:
        print_table(table, list(table[0]))
    write_json(args.out, {"command": command, "rows": rows})


if __name__ == "__main__":
    main()
