"""The headline comparison: Kuramoto against the Euclidean baseline, with intervals that cover the seeds.

    python bench/headline.py bench/results/quality_*.json [--out bench/results/headline.json]
                             [--metrics swd swd_excess orientation_w1 ...] [--write-table README.md]
                             [--ablation kuramoto-local kuramoto-none ...]

Reads quality JSON files (bench/quality.py, written with the interval protocol: rows with "tables") and
builds one row per (data, T, budget, metric):

- each method's **best setting** is the (method label, sampler, NFE) with the lowest mean of that metric over
  the seeds; "kuramoto" is every label that starts with "kuramoto", "euclidean" every label that starts with
  "euclidean" (the clipped sampler included). A setting counts only where it has a row at every seed;
- ``seeds`` are the training seeds (the files' ``--seed``) at which both methods have rows;
- each method's ``mean`` / ``low`` / ``high``: the mean over seeds × groups × reference sets and its
  percentile-bootstrap 95 % interval, resampling seeds, groups within seeds and reference sets
  (``metrics.intervals.mean_interval``), so the interval covers the seed-to-seed spread;
- ``ratio``: K/E, paired by (seed, reference set) (``metrics.intervals.ratio_interval``); pairing requires
  both methods to have been scored with the same protocol (groups, reference sets and their sizes);
- ``command``: this script's command line; ``sources``: the quality files and the commands that wrote them.

``--ablation A B`` adds rows comparing two methods by their own labels, paired the same way (key "ablations"; e.g.
Kuramoto-local against Kuramoto without coupling: what the coupling itself adds). A side written
``METHOD@SAMPLER:NFE`` is that one setting instead of the method's best (``kuramoto-local@sde-heun:25
kuramoto-local@sde:100``: a few-step sampler against the model's own reverse SDE; NFE as the rows give it).
A label's " T<steps>" suffix (``quality.py --steps``) may be left out: ``kuramoto-local euclidean`` pairs the
T = 100 rows and, in a row of its own, the ``kuramoto-local T1000`` and ``euclidean T1000`` rows.

Writes ``{"rows": [...], "ablations": [...]}`` (plus the machine and command) to --out and prints the Markdown "Where it stands"
table; --write-table PATH replaces the text between ``<!-- headline:start -->`` and ``<!-- headline:end -->``
in PATH with it. Rows written before the interval protocol (no "tables") are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

from common import RESULTS, steps_suffix, write_json
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.intervals import mean_interval, ratio_interval

# The names the headline uses, and the quality rows' keys they come from (the same where not listed).
METRIC_KEYS = {"swd": "swd_mean"}
DEFAULT_METRICS = ("swd", "swd_excess", "kid_random", "minutiae_w1", "singular_points_w1", "orientation_w1")
RESAMPLES = 4000  # bootstrap resamples of every interval
PROTOCOL_KEYS = ("groups", "reference_sets", "group_size", "reference_size")
START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def family(method: str) -> str | None:
    """ "kuramoto" or "euclidean" for a quality row's method label; None for the real floor and anything else."""
    for name in ("kuramoto", "euclidean"):
        if method.startswith(name):
            return name
    return None


def budget_of(payload: dict) -> str:
    """The budget a quality file was run at: its "budget" key, or for older files the --budget of its command."""
    if "budget" in payload:
        return str(payload["budget"])
    found = re.search(r"--budget[ =](\S+)", str(payload.get("command", "")))
    return found.group(1) if found else "small"


def ablation_names(method: str, steps: int) -> set[str]:
    """The names an ablation side may give a method label: the label itself and, where quality.py's ``--steps``
    added " T<steps>" to it, the label without that suffix, so that one ``--ablation`` pair matches at every T
    (the rows' key holds T already)."""
    return {method, re.sub(re.escape(steps_suffix(steps)) + "(?= |$)", "", method, count=1)}


def load_settings(paths: list[Path]) -> tuple[dict, list[str]]:
    """{(data, T, budget): {family: {setting label: {seed: (row, source)}}}} and notes about skipped rows. Besides the
    two families, every method label is also a key of its own (its settings are its sampler:NFE), for ``--ablation``."""
    found: dict = {}
    notes: list[str] = []
    for path in paths:
        try:
            payload = json.loads(Path(path).read_text())
            rows, seed, steps = payload["rows"], int(payload["seed"]), int(payload["settings"]["steps"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserError(
                f"{path}: not a quality JSON file of bench/quality.py ({error}); pass quality_*.json files"
            ) from None
        source = {"file": str(path), "command": payload.get("command", "")}
        for row in rows:
            kind = family(str(row.get("method", "")))
            if kind is None:
                continue
            if "tables" not in row:
                notes.append(
                    f"{path}: {row['data']} {row['method']} {row['sampler']}:{row['nfe']} has no cell tables "
                    "(written before the interval protocol); skipped"
                )
                continue
            label = f"{row['method']} {row['sampler']}:{row['nfe']}"
            key = (str(row["data"]), steps, budget_of(payload))
            found.setdefault(key, {}).setdefault(kind, {}).setdefault(label, {})[seed] = (row, source)
            for method in ablation_names(str(row["method"]), steps):
                setting = f"{method} {row['sampler']}:{row['nfe']}"
                found[key].setdefault(f"method:{method}", {}).setdefault(label, {})[seed] = (row, source)
                found[key].setdefault(f"setting:{setting}", {}).setdefault(label, {})[seed] = (row, source)
    return found, notes


def stacked(runs: dict[int, tuple[dict, dict]], seeds: list[int], key: str) -> np.ndarray:
    """The (seeds, groups, sets) table of metric ``key`` of one setting."""
    return np.stack([np.asarray(runs[seed][0]["tables"][key], dtype=np.float64) for seed in seeds])


def protocol_of(runs: dict[int, tuple[dict, dict]], seeds: list[int]) -> set[tuple]:
    return {tuple(runs[seed][0].get(name) for name in PROTOCOL_KEYS) for seed in seeds}


def seeds_with(settings: dict[str, dict], key: str) -> set[int]:
    """The seeds at which any of one method's settings has a table of ``key``."""
    return set().union(
        *({seed for seed, (row, _) in runs.items() if key in row["tables"]} for runs in settings.values())
    )


def best_setting(settings: dict[str, dict], seeds: list[int], key: str) -> tuple[str, dict] | None:
    """The label and runs of the setting with the lowest mean of ``key`` over ``seeds`` (rows at every seed)."""
    candidates = {
        label: runs
        for label, runs in settings.items()
        if all(seed in runs and key in runs[seed][0]["tables"] for seed in seeds)
    }
    if not candidates:
        return None
    return min(candidates.items(), key=lambda item: float(stacked(item[1], seeds, key).mean()))


class Comparison(NamedTuple):
    """Two method groups' best settings at the seeds both have: labels, (seeds, groups, sets) tables, paired ratio."""

    seeds: list[int]
    first_label: str
    first_runs: dict
    first: np.ndarray
    second_label: str
    second_runs: dict
    second: np.ndarray
    ratio: dict | None


def compare(first: dict, second: dict, metric: str, where: str, notes: list[str], resamples: int) -> Comparison | None:
    """The best setting of each group (labels → runs) on ``metric`` at the seeds both have, paired by (seed, reference
    set) as K/E is; None where there is nothing to pair, with a note in ``notes`` where the reason is not obvious."""
    key = METRIC_KEYS.get(metric, metric)
    seeds = sorted(seeds_with(first, key) & seeds_with(second, key))
    if not seeds:
        return None
    chosen = best_setting(first, seeds, key), best_setting(second, seeds, key)
    if chosen[0] is None or chosen[1] is None:
        notes.append(f"{where} {metric}: no setting of each method has rows at seeds {seeds}")
        return None
    (first_label, first_runs), (second_label, second_runs) = chosen
    protocols = protocol_of(first_runs, seeds) | protocol_of(second_runs, seeds)
    if len(protocols) > 1:
        notes.append(
            f"{where} {metric}: {first_label} and {second_label} were scored with different "
            f"protocols {sorted(protocols, key=str)} (groups, sets, sizes); not paired"
        )
        return None
    first_table, second_table = stacked(first_runs, seeds, key), stacked(second_runs, seeds, key)
    try:
        ratio = ratio_interval(first_table, second_table, resamples=resamples).as_dict()
    except UserError as error:  # e.g. a non-positive mean excess in the denominator
        notes.append(f"{where} {metric} {first_label} / {second_label}: no ratio ({error})")
        ratio = None
    return Comparison(seeds, first_label, first_runs, first_table, second_label, second_runs, second_table, ratio)


def headline_rows(found: dict, metrics: list[str], command: str, notes: list[str], resamples: int) -> list[dict]:
    """The headline rows (module docstring) from ``load_settings``'s settings; what was left out goes to ``notes``."""
    rows = []
    for (data, steps, budget), families in found.items():
        where = f"{data} T={steps} {budget}"
        if not {"kuramoto", "euclidean"} <= set(families):
            kinds = [kind for kind in families if not kind.startswith("method:")]
            notes.append(f"{where}: only {', '.join(kinds)} rows; a ratio needs both methods")
            continue
        for metric in metrics:
            pair = compare(families["kuramoto"], families["euclidean"], metric, where, notes, resamples)
            if pair is None:
                continue
            sources = sorted(
                {
                    json.dumps(runs[seed][1], sort_keys=True)
                    for runs in (pair.first_runs, pair.second_runs)
                    for seed in pair.seeds
                }
            )
            rows.append(
                {
                    "data": data,
                    "T": steps,
                    "budget": budget,
                    "metric": metric,
                    "seeds": pair.seeds,
                    "kuramoto": {"label": pair.first_label, **mean_interval(pair.first, resamples=resamples).as_dict()},
                    "euclidean": {
                        "label": pair.second_label,
                        **mean_interval(pair.second, resamples=resamples).as_dict(),
                    },
                    "ratio": pair.ratio,
                    "command": command,
                    "sources": [json.loads(source) for source in sources],
                }
            )
    rows.sort(
        key=lambda row: (
            row["data"],
            row["T"],
            row["budget"],
            DEFAULT_METRICS.index(row["metric"]) if row["metric"] in DEFAULT_METRICS else len(DEFAULT_METRICS),
            row["metric"],
        )
    )
    return rows


def comparison_rows(
    found: dict, ablations: list[tuple[str, str]], metrics: list[str], command: str, notes: list[str], resamples: int
) -> list[dict]:
    """One row per (data, T, budget, metric, ablation A/B): the method labelled A against the one labelled B (each at
    its best sampler setting, over the seeds both have), paired by (seed, reference set) as K/E is. For example
    ``kuramoto-local`` against ``kuramoto-none``: what the coupling itself adds (ratio below 1: it helps)."""
    rows = []
    for (data, steps, budget), families in found.items():
        for numerator, denominator in ablations:
            a, b = families.get(group_key(numerator)), families.get(group_key(denominator))
            if a is None or b is None:
                continue
            for metric in metrics:
                pair = compare(a, b, metric, f"{data} T={steps} {budget}", notes, resamples)
                if pair is None:
                    continue
                rows.append(
                    {
                        "data": data,
                        "T": steps,
                        "budget": budget,
                        "metric": metric,
                        "seeds": pair.seeds,
                        "numerator": {
                            "label": pair.first_label,
                            **mean_interval(pair.first, resamples=resamples).as_dict(),
                        },
                        "denominator": {
                            "label": pair.second_label,
                            **mean_interval(pair.second, resamples=resamples).as_dict(),
                        },
                        "ratio": pair.ratio,
                        "command": command,
                    }
                )
    return rows


def group_key(side: str) -> str:
    """The ``load_settings`` key of an ablation side: a method's settings, or with ``@SAMPLER:NFE`` that one."""
    method, _, setting = side.partition("@")
    return f"setting:{method} {setting}" if setting else f"method:{method}"


def build_rows(
    paths: list[Path], metrics: list[str], command: str, *, resamples: int = RESAMPLES
) -> tuple[list[dict], list[str]]:
    """The headline rows from quality files, and notes about what was left out."""
    found, notes = load_settings(paths)
    return headline_rows(found, metrics, command, notes, resamples), notes


def ablation_rows(
    paths: list[Path], ablations: list[tuple[str, str]], metrics: list[str], command: str, *, resamples: int = RESAMPLES
) -> tuple[list[dict], list[str]]:
    """``comparison_rows`` from quality files, and notes about what was left out."""
    found, notes = load_settings(paths)
    return comparison_rows(found, ablations, metrics, command, notes, resamples), notes


def ablation_table(rows: list[dict]) -> str:
    """The ablation rows as Markdown: A against B with the paired ratio A/B."""
    lines = ["| data | T | budget | metric | seeds | A | B | A/B [95 %] |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        a, b = row["numerator"], row["denominator"]
        lines.append(
            f"| {row['data']} | {row['T']} | {row['budget']} | {row['metric']} | {len(row['seeds'])} | "
            f"{_interval(a)} ({a['label']}) | {_interval(b)} ({b['label']}) | {_interval(row['ratio'], 3)} |"
        )
    return "\n".join(lines)


def _interval(entry: dict | None, digits: int = 4) -> str:
    if entry is None:
        return "—"
    return f"{entry['mean']:.{digits}g} [{entry['low']:.{digits}g}, {entry['high']:.{digits}g}]"


def markdown_table(rows: list[dict]) -> str:
    """The "Where it stands" table: one line per headline row; intervals are bootstrap 95 %."""
    lines = [
        "| data | T | budget | metric | seeds | Kuramoto, best setting | Euclidean, best setting | K/E [95 %] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        k, e = row["kuramoto"], row["euclidean"]
        lines.append(
            f"| {row['data']} | {row['T']} | {row['budget']} | {row['metric']} | {len(row['seeds'])} | "
            f"{_interval(k)} ({k['label']}) | {_interval(e)} ({e['label']}) | {_interval(row['ratio'], 3)} |"
        )
    return "\n".join(lines)


def write_table(path: Path, table: str) -> None:
    """Replace what lies between the headline markers in ``path`` by ``table``."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror}); pass an existing file to --write-table") from None
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise UserError(f"{path}: no {START} … {END} markers; add them where the table belongs")
    Path(path).write_text(text[: start + len(START)] + "\n" + table + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", type=Path, nargs="+", help="quality JSON files (bench/quality.py), any seeds")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=list(DEFAULT_METRICS),
        help="headline metrics (swd = the rows' swd_mean; others by their quality key)",
    )
    parser.add_argument(
        "--ablation",
        nargs=2,
        action="append",
        default=[],
        metavar=("A", "B"),
        help="also compare method A against method B (labels as in the quality rows, e.g. "
        "kuramoto-local kuramoto-none: what the coupling adds; METHOD@SAMPLER:NFE for one setting); repeatable",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "headline.json")
    parser.add_argument(
        "--write-table",
        type=Path,
        default=None,
        help=f"write the Markdown table into this file between {START} and {END}",
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "bench/headline.py", *(sys.argv[1:] if argv is None else argv)])
    try:
        found, notes = load_settings(args.files)  # read once: the headline and the ablations pair the same rows
        rows = headline_rows(found, args.metrics, command, notes, RESAMPLES)
        ablations = comparison_rows(
            found, [tuple(pair) for pair in args.ablation], args.metrics, command, notes, RESAMPLES
        )
        for note in notes:
            print(f"note: {note}")
        table = markdown_table(rows)
        print(table)
        if ablations:
            print("\nAblations (A/B < 1: A is better)")
            print(ablation_table(ablations))
        if args.write_table is not None:
            write_table(args.write_table, table)
            print(f"wrote the table into {args.write_table}")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_json(args.out, {"command": command, "rows": rows, "ablations": ablations})
    return 0


if __name__ == "__main__":
    sys.exit(main())
