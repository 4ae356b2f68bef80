"""The 2-torus comparison over training seeds: ``bench/torus.py --part main`` results of several seeds in one table.

    python bench/torus_seeds.py bench/results/screen/torus_seed*.json [--against kuramoto-global] [--out FILE]

``torus.py`` trains each process once per density and scores one set of samples by histogram KL, so one file
holds one number per (density, process, sampler, NFE) and says nothing about its noise. Given files of
different ``--seed`` (and otherwise the same settings), this prints and writes one row per (density, T, sampler,
NFE, process):

- ``kl``: the mean KL over the seeds, with a Student-t 95 % interval over seeds (n − 1 degrees of freedom) and
  the per-seed values;
- ``minus_<against>``: the paired difference to the process named by ``--against`` (default
  ``kuramoto-global``: what removing the coupling, or all drift, or the torus itself changes), with its paired
  t interval. A difference whose interval holds 0 is inside the noise.

With 2 or 3 seeds a t interval is wide (t₀.₉₇₅ is 12.7 at 2 seeds and 4.30 at 3): that is the honest width of
a seed-level comparison, and the reason the per-seed values are printed beside it. Only rows that every file
has are summarised; a file of the same seed twice, fewer than 2 files, an unfinished file, a file without main rows,
or files whose settings differ in anything but seed, output and device is an error.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
from scipy import stats

from common import RESULTS, print_table, write_json
from kuramoto_diffusion.errors import UserError

Cell = tuple[str, int, str, int, str]  # (density, T, sampler, NFE, process)
# Settings that may differ between the seeds' files; any other difference (budget, T, densities, bins, …) means
# the files measure different things and are refused.
PER_SEED_SETTINGS = {"seed", "out", "device"}


def t_interval(values: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean of ``values`` (≥ 2) and its Student-t interval at ``level`` (n − 1 degrees of freedom)."""
    data = np.asarray(values, dtype=np.float64)
    mean = float(data.mean())
    half = float(stats.t.ppf(0.5 + level / 2, data.size - 1) * data.std(ddof=1) / math.sqrt(data.size))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def load_seeds(paths: list[Path]) -> dict[int, dict[Cell, float]]:
    """{seed: {(density, T, sampler, NFE, process): KL}} from ``torus.py`` JSON files (main rows, prior rows left
    out). Raises UserError for an unreadable or unfinished file, one without main rows, a seed given twice, or
    files whose settings differ other than in seed, output and device."""
    by_seed: dict[int, dict[Cell, float]] = {}
    first: tuple[Path, dict] | None = None
    for path in paths:
        try:
            payload = json.loads(path.read_text())
            settings = dict(payload["settings"])
            seed = int(settings["seed"])
            complete = payload.get("complete", True)
            cells = {
                (row["density"], int(row["T"]), row["sampler"], int(row["nfe"]), row["process"]): float(row["kl"])
                for row in payload["rows"]
                if row.get("part") == "main" and row.get("sampler") != "prior"
            }
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(f"{path}: not a bench/torus.py result ({error}); pass the JSON that --out wrote") from None
        if complete is not True:
            raise UserError(f"{path}: the run did not finish (complete: false); rerun it, or leave the file out")
        if not cells:
            raise UserError(f"{path}: holds no --part main rows; pass a result of `torus.py --part main`")
        if seed in by_seed:
            raise UserError(f"{path}: seed {seed} is given twice; pass one file per training seed")
        shared = {key: value for key, value in settings.items() if key not in PER_SEED_SETTINGS}
        if first is None:
            first = (path, shared)
        elif shared != first[1]:
            differing = sorted(key for key in shared.keys() | first[1].keys() if shared.get(key) != first[1].get(key))
            raise UserError(
                f"{path}: its settings differ from {first[0]}'s in {', '.join(differing)}; "
                "pass runs that differ only in --seed"
            )
        by_seed[seed] = cells
    if len(by_seed) < 2:
        raise UserError(f"{len(by_seed)} seed(s) given; an interval over seeds needs files of at least 2 seeds")
    return by_seed


def summary_rows(by_seed: dict[int, dict[Cell, float]], against: str) -> list[dict]:
    """One row per cell every seed has: the mean KL over seeds with its t interval, and the paired difference
    to process ``against`` in the same (density, sampler, NFE) (absent where ``against`` is missing). Raises
    UserError where no cell is common to all seeds or ``against`` is not among the processes."""
    seeds = sorted(by_seed)
    common_cells = sorted(set.intersection(*(set(cells) for cells in by_seed.values())))
    if not common_cells:
        raise UserError("the files share no (density, T, sampler, NFE, process) row; pass runs of the same settings")
    processes = sorted({cell[-1] for cell in common_cells})
    if against not in processes:
        raise UserError(f"--against {against}: no such process in every file; choose one of {', '.join(processes)}")
    rows = []
    for cell in common_cells:
        density, steps, sampler, nfe, process = cell
        values = [by_seed[seed][cell] for seed in seeds]
        row: dict = {"density": density, "T": steps, "sampler": sampler, "nfe": nfe, "process": process}
        row["seeds"] = seeds
        row["kl"] = {**t_interval(values), "per_seed": values}
        baseline = (density, steps, sampler, nfe, against)
        if process != against and baseline in common_cells:
            differences = [by_seed[seed][cell] - by_seed[seed][baseline] for seed in seeds]
            row[f"minus_{against}"] = t_interval(differences)
        rows.append(row)
    return rows


def _text(entry: dict | None) -> str:
    return "—" if entry is None else f"{entry['mean']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def table_rows(rows: list[dict], against: str) -> list[dict[str, object]]:
    return [
        {
            "density": row["density"],
            "T": row["T"],
            "sampler": row["sampler"],
            "nfe": row["nfe"],
            "process": row["process"],
            "kl [95 % over seeds]": _text(row["kl"]),
            "per seed": " / ".join(f"{value:.3f}" for value in row["kl"]["per_seed"]),
            f"− {against} [95 %]": _text(row.get(f"minus_{against}")),
        }
        for row in rows
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("files", type=Path, nargs="+", help="bench/torus.py --part main JSON files, one per seed")
    parser.add_argument("--against", default="kuramoto-global", help="the process every other is paired with")
    parser.add_argument("--out", type=Path, default=RESULTS / "torus_seeds.json", help="JSON to write")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "bench/torus_seeds.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        rows = summary_rows(load_seeds(args.files), args.against)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lines = table_rows(rows, args.against)
    table = print_table(lines, list(lines[0]))
    write_json(args.out, {"command": command, "against": args.against, "rows": rows, "table": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
