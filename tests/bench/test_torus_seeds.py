"""bench/torus_seeds.py on synthetic torus.py results whose summary is known by construction."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import torus_seeds  # noqa: E402 - bench/ is a folder of scripts, put on the path above

T_975_DF2 = 4.302652729911275  # Student-t 97.5 % quantile at 2 degrees of freedom (printed tables)


SETTINGS = {"budget": "small", "steps": 100, "part": ["main"], "bins": 50}


def write_run(
    folder: Path,
    seed: int,
    kl: dict[tuple[str, int, str], float],
    name: str | None = None,
    complete: bool = True,
    **settings: object,
) -> Path:
    """A torus.py --part main result of one seed: one sde row per (density, NFE, process) at T = 100, plus a prior
    row."""
    rows = [
        {"part": "main", "density": d, "process": p, "T": 100, "sampler": "sde", "nfe": n, "kl": value}
        for (d, n, p), value in kl.items()
    ]
    prior = {"part": "main", "density": "wrapped-mixture", "process": "euclidean", "T": 100, "sampler": "prior"}
    rows.append({**prior, "nfe": 0})
    path = folder / (name or f"torus_seed{seed}.json")
    payload = {
        "settings": {**SETTINGS, **settings, "seed": seed, "out": str(path)},
        "complete": complete,
        "rows": rows,
    }
    path.write_text(json.dumps(payload))
    return path


@pytest.fixture
def three_seeds(tmp_path: Path) -> list[Path]:
    """kuramoto-none is kuramoto-global + 0.01 at every seed; euclidean differs by 0.03, 0.05, 0.04."""
    paths = []
    for seed, (base, gap) in enumerate([(0.10, 0.03), (0.12, 0.05), (0.14, 0.04)]):
        kl = {
            ("wrapped-mixture", 100, "kuramoto-global"): base,
            ("wrapped-mixture", 100, "kuramoto-none"): base + 0.01,
            ("wrapped-mixture", 100, "euclidean"): base + gap,
        }
        paths.append(write_run(tmp_path, seed, kl))
    return paths


def test_intervals_over_seeds_and_paired_differences(three_seeds: list[Path]) -> None:
    rows = torus_seeds.summary_rows(torus_seeds.load_seeds(three_seeds), "kuramoto-global")
    by_process = {row["process"]: row for row in rows}
    assert set(by_process) == {"kuramoto-global", "kuramoto-none", "euclidean"}  # the prior row is left out
    base = by_process["kuramoto-global"]["kl"]
    # values 0.10, 0.12, 0.14: mean 0.12, sample sd 0.02, half width t·sd/√3
    assert base["per_seed"] == pytest.approx([0.10, 0.12, 0.14])
    assert base["mean"] == pytest.approx(0.12)
    assert base["high"] - base["mean"] == pytest.approx(T_975_DF2 * 0.02 / math.sqrt(3))
    assert "minus_kuramoto-global" not in by_process["kuramoto-global"]
    # a constant offset is a zero-width paired difference, although each method's own interval is wide
    none = by_process["kuramoto-none"]["minus_kuramoto-global"]
    assert (none["mean"], none["low"], none["high"]) == pytest.approx((0.01, 0.01, 0.01))
    gap = by_process["euclidean"]["minus_kuramoto-global"]
    assert gap["mean"] == pytest.approx(0.04)
    assert gap["high"] - gap["mean"] == pytest.approx(T_975_DF2 * 0.01 / math.sqrt(3))
    assert gap["low"] > 0  # Euclidean is worse at every seed, by more than the noise


def test_only_cells_every_seed_has_are_summarised(tmp_path: Path, three_seeds: list[Path]) -> None:
    extra = write_run(
        tmp_path,
        3,
        {("wrapped-mixture", 100, "kuramoto-global"): 0.1, ("checkerboard", 100, "kuramoto-global"): 0.8},
    )
    rows = torus_seeds.summary_rows(torus_seeds.load_seeds([*three_seeds, extra]), "kuramoto-global")
    assert [(row["density"], row["T"], row["process"], row["seeds"]) for row in rows] == [
        ("wrapped-mixture", 100, "kuramoto-global", [0, 1, 2, 3])
    ]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("one seed", "at least 2 seeds"),
        ("same seed twice", "seed 0 is given twice"),
        ("no main rows", "no --part main rows"),
        ("not json", "not a bench/torus.py result"),
        ("unknown against", "--against torus-brownian: no such process"),
        ("other budget", "settings differ from"),
        ("unfinished", "the run did not finish"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, three_seeds: list[Path], capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    argv = [str(path) for path in three_seeds]
    if case == "one seed":
        argv = argv[:1]
    elif case == "same seed twice":
        argv.append(str(write_run(tmp_path, 0, {("wrapped-mixture", 100, "euclidean"): 0.2}, name="again.json")))
    elif case == "no main rows":
        empty = tmp_path / "sweep.json"
        empty.write_text(json.dumps({"settings": {"seed": 5}, "rows": [{"part": "sweep", "kl": 0.1}]}))
        argv.append(str(empty))
    elif case == "not json":
        broken = tmp_path / "broken.json"
        broken.write_text("{")
        argv.append(str(broken))
    elif case == "other budget":
        other = write_run(tmp_path, 7, {("wrapped-mixture", 100, "euclidean"): 0.2}, budget="tiny", steps=1000)
        argv.append(str(other))
    elif case == "unfinished":
        argv.append(str(write_run(tmp_path, 8, {("wrapped-mixture", 100, "euclidean"): 0.2}, complete=False)))
    else:
        argv += ["--against", "torus-brownian"]
    assert torus_seeds.main([*argv, "--out", str(tmp_path / "out.json")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and message in error
    assert not (tmp_path / "out.json").exists()


def test_cli_writes_the_rows_and_the_table(tmp_path: Path, three_seeds: list[Path]) -> None:
    out = tmp_path / "seeds.json"
    assert torus_seeds.main([*map(str, three_seeds), "--out", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert len(payload["rows"]) == 3 and payload["against"] == "kuramoto-global"
    assert "0.040 [" in payload["table"] and "0.100 / 0.120 / 0.140" in payload["table"]
