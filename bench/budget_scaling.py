"""Sample quality against training budget: each method's best row per budget, slopes and crossover.

    python bench/budget_scaling.py RESULT.json ... [--methods euclidean kuramoto-local]
                                   [--out bench/results/budget_scaling.json]
                                   [--figure bench/results/budget_scaling.png]

Reads result files of ``bench/quality.py`` (any budgets, any data sets). A row's budget is its file's
training examples, train_steps × batch_size. A row's method family is its label up to the first "[" or
space, with "euclidean-clip" (the same weights with x₀ clipping) counted as "euclidean"; rows trained
at another T than the budget's (labels such as "euclidean T1000") are left out, and a model trained at
a phase range of its own (label "r0.5π") is a family of its own ("kuramoto-local r0.5π"). For every data set,
family, budget and seed the best value of each metric over the family's rows (samplers, NFE, variants)
is taken, the convention of the K/E ratios in BENCHMARKS.md; the point is its mean over the seeds given.

Per data set and family the slope is the least-squares slope of log(metric) against log(examples)
(metric ∝ examples^slope; negative is better with more training). Between two families the crossover
is where their fitted lines meet, in training examples; it is "measured" when it lies between the
smallest and largest budget both have, "extrapolated" otherwise, and absent for parallel lines.

Writes the points, slopes and crossovers as JSON, prints them as tables, and draws one panel per
data set and metric (log–log; the grey line is the metrics' floor, two held-out sets against each other).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shlex
import sys
from pathlib import Path

from common import RESULTS, print_table, write_json
from kuramoto_diffusion.viz.images import figure_to_image, save_image_atomic

METRICS = ("swd_mean", "orientation_w1")
METRIC_TITLES = {"swd_mean": "SWD ×1e3", "orientation_w1": "orientation W1"}
PHASE_RANGE_TAG = re.compile(r" (r[0-9.]+π)")  # bench/quality.py's label of --phase-range


def family(method: str) -> str | None:
    """The method family of a row label, None for rows at another T than the budget's."""
    if " T" in method:
        return None
    name = method.split("[")[0].split(" ")[0]
    if name == "euclidean-clip":
        return "euclidean"
    # A model trained at a phase range of its own is a line of its own: "kuramoto-local r0.5π".
    phase_range = PHASE_RANGE_TAG.search(method)
    return f"{name} {phase_range.group(1)}" if phase_range else name


def best_points(paths: list[Path], methods: list[str]) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """(points, floors): per (data, family, examples) each metric's best value of a seed, averaged over the
    seeds, with the rows it came from; and the real-vs-real rows per data set."""
    best: dict[tuple[str, str, int, int], dict] = {}
    floors: dict[str, dict[str, float]] = {}
    for path in paths:
        payload = json.loads(path.read_text())
        examples = payload["settings"]["train_steps"] * payload["settings"]["batch_size"]
        for row in payload["rows"]:
            if row["method"] == "real":
                floors[row["data"]] = {metric: row[metric] for metric in METRICS}
                continue
            name = family(row["method"])
            if name not in methods:
                continue
            seeded = best.setdefault((row["data"], name, examples, payload["seed"]), {})
            for metric in METRICS:
                if metric in row and row[metric] < seeded.get(metric, (math.inf, ""))[0]:
                    seeded[metric] = (row[metric], f"{row['method']} {row['sampler']} {row['nfe']} ({path.name})")
    points: dict[tuple[str, str, int], dict] = {}
    for (data, name, examples, seed), seeded in sorted(best.items()):
        point = points.setdefault(
            (data, name, examples), {"data": data, "method": name, "examples": examples, "seeds": []}
        )
        point["seeds"].append(seed)
        for metric, (value, source) in seeded.items():
            point.setdefault(f"{metric}_per_seed", []).append(value)
            point.setdefault(f"{metric}_from", []).append(source)
    for point in points.values():
        for metric in METRICS:
            if f"{metric}_per_seed" in point:
                point[metric] = sum(point[f"{metric}_per_seed"]) / len(point[f"{metric}_per_seed"])
    return list(points.values()), floors


def fit_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of log(y) against log(x)."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    return slope, mean_y - slope * mean_x


def lines_and_crossovers(points: list[dict], methods: list[str]) -> tuple[list[dict], list[dict]]:
    """Fitted lines per (data, family, metric) with at least two budgets, and each pair's crossover."""
    lines = []
    for data in dict.fromkeys(p["data"] for p in points):
        for metric in METRICS:
            for method in methods:
                mine = [
                    (p["examples"], p[metric])
                    for p in points
                    if p["data"] == data and p["method"] == method and metric in p
                ]
                if len(mine) >= 2:
                    slope, intercept = fit_line(mine)
                    lines.append(
                        {
                            "data": data,
                            "metric": metric,
                            "method": method,
                            "slope": slope,
                            "intercept": intercept,
                            "examples": sorted(x for x, _ in mine),
                        }
                    )
    crossovers = []
    for first in lines:
        for second in lines:
            same = (first["data"], first["metric"]) == (second["data"], second["metric"])
            if not same or methods.index(first["method"]) >= methods.index(second["method"]):
                continue
            row = {
                "data": first["data"],
                "metric": first["metric"],
                "methods": f"{first['method']} / {second['method']}",
            }
            if math.isclose(first["slope"], second["slope"], abs_tol=1e-12):
                row.update(crossover_examples=None, where="parallel")
            else:
                log_x = (second["intercept"] - first["intercept"]) / (first["slope"] - second["slope"])
                low = max(first["examples"][0], second["examples"][0])
                high = min(first["examples"][-1], second["examples"][-1])
                row.update(
                    crossover_examples=math.exp(log_x),
                    where="measured" if low <= math.exp(log_x) <= high else "extrapolated",
                )
            crossovers.append(row)
    return lines, crossovers


def scaling_plot(points: list[dict], floors: dict[str, dict[str, float]], methods: list[str]) -> object:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(p["data"] for p in points))
    figure, axes = plt.subplots(
        len(datasets), len(METRICS), figsize=(4.6 * len(METRICS), 3.4 * len(datasets)), squeeze=False
    )
    for row_axes, data in zip(axes, datasets):
        for axis, metric in zip(row_axes, METRICS):
            for colour, method in enumerate(methods):
                mine = sorted(
                    (p["examples"], p[metric])
                    for p in points
                    if p["data"] == data and p["method"] == method and metric in p
                )
                if mine:
                    axis.plot(*zip(*mine), "-o", color=f"C{colour}", label=method)
            if metric in floors.get(data, {}):
                axis.axhline(floors[data][metric], color="grey", linewidth=1, label="real vs real")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_xlabel("training examples")
            axis.set_title(f"{data}: {METRIC_TITLES[metric]}")
            axis.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    figure.suptitle("best sample quality against training budget (lower is better)")
    figure.tight_layout()
    picture = figure_to_image(figure)
    plt.close(figure)
    return picture


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="result files of bench/quality.py")
    parser.add_argument("--methods", nargs="+", default=["euclidean", "kuramoto-local"])
    parser.add_argument("--out", type=Path, default=RESULTS / "budget_scaling.json")
    parser.add_argument("--figure", type=Path, default=RESULTS / "budget_scaling.png")
    args = parser.parse_args()
    points, floors = best_points(args.results, args.methods)
    lines, crossovers = lines_and_crossovers(points, args.methods)
    print_table(points, ["data", "method", "examples", "seeds", *METRICS, *(f"{m}_from" for m in METRICS)])
    print_table(lines, ["data", "metric", "method", "slope", "examples"])
    print_table(crossovers, ["data", "metric", "methods", "crossover_examples", "where"])
    save_image_atomic(scaling_plot(points, floors, args.methods), args.figure)
    write_json(
        args.out,
        {
            "command": shlex.join(["python", "bench/budget_scaling.py", *sys.argv[1:]]),
            "points": points,
            "floors": floors,
            "lines": lines,
            "crossovers": crossovers,
        },
    )


if __name__ == "__main__":
    main()
