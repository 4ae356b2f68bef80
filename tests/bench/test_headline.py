"""bench/headline.py on small synthetic quality JSON files whose answer is known by construction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import headline  # noqa: E402 - bench/ is a folder of scripts, put on the path above

PROTOCOL = {"groups": 3, "reference_sets": 4, "group_size": 8, "reference_size": 8}
SET_OFFSETS = np.array([1.0, 3.0, 0.5, 2.0])  # a reference set that makes every method look worse by a factor


def quality_row(method: str, sampler: str, nfe: int, value: float, offsets: np.ndarray = SET_OFFSETS) -> dict:
    """A quality row whose swd table is ``value`` × the reference set's factor in every group."""
    table = np.tile(value * offsets, (PROTOCOL["groups"], 1))
    return {
        "data": "fingerprints",
        "method": method,
        "sampler": sampler,
        "nfe": nfe,
        "swd_mean": float(table.mean()),
        "tables": {"swd_mean": table.tolist(), "orientation_w1": (table / 100).tolist()},
        **PROTOCOL,
    }


def write_quality(folder: Path, seed: int, rows: list[dict], name: str | None = None, steps: int = 100) -> Path:
    path = folder / (name or f"quality_seed{seed}.json")
    path.write_text(
        json.dumps(
            {
                "command": f"python bench/quality.py --budget small --seed {seed}",
                "seed": seed,
                "settings": {"steps": steps},
                "rows": rows,
            }
        )
    )
    return path


@pytest.fixture
def three_seeds(tmp_path: Path) -> list[Path]:
    """Kuramoto-local beats Euclidean by exactly 0.8 at every seed and set; the seeds differ by a factor."""
    paths = []
    for seed, scale in zip((0, 1, 2), (10.0, 12.0, 9.0)):
        rows = [
            quality_row("real", "-", 0, 5.0),
            quality_row("euclidean", "sde", 100, scale),
            quality_row("euclidean-clip", "sde", 100, 1.5 * scale),
            quality_row("kuramoto-local", "sde", 100, 0.8 * scale),
            quality_row("kuramoto-local", "ode", 50, 2 * scale),
        ]
        paths.append(write_quality(tmp_path, seed, rows))
    return paths


def test_headline_rows_pick_the_best_settings_and_pair_the_ratio(three_seeds: list[Path]) -> None:
    rows, notes = headline.build_rows(
        three_seeds, ["swd", "orientation_w1", "kid_random"], "python bench/headline.py …", resamples=500
    )
    assert notes == []
    assert [row["metric"] for row in rows] == ["swd", "orientation_w1"]  # no kid_random tables: no row
    row = rows[0]
    assert set(row) >= {"data", "T", "budget", "metric", "seeds", "kuramoto", "euclidean", "ratio", "command"}
    assert (row["data"], row["T"], row["budget"], row["seeds"]) == ("fingerprints", 100, "small", [0, 1, 2])
    assert row["kuramoto"]["label"] == "kuramoto-local sde:100" and row["euclidean"]["label"] == "euclidean sde:100"
    # K = 0.8 E in every (seed, set) cell: the paired ratio is 0.8 whatever seeds and sets are drawn.
    assert row["ratio"]["mean"] == pytest.approx(0.8, rel=1e-12)
    assert row["ratio"]["low"] == pytest.approx(0.8, rel=1e-12) and row["ratio"]["high"] == pytest.approx(
        0.8, rel=1e-12
    )
    kuramoto = row["kuramoto"]
    assert kuramoto["mean"] == pytest.approx(0.8 * np.mean([10.0, 12.0, 9.0]) * SET_OFFSETS.mean(), rel=1e-12)
    assert len(row["sources"]) == 3 and "--seed 1" in row["sources"][1]["command"]


def test_the_interval_covers_the_seeds(tmp_path: Path) -> None:
    # Every group and reference set of a seed scores the same: only resampling the seeds can give a spread.
    flat, values = np.ones(4), (6.0, 9.0, 7.0, 10.0, 8.0)
    paths = [
        write_quality(
            tmp_path,
            seed,
            [quality_row("euclidean", "sde", 100, 10.0, flat), quality_row("kuramoto-global", "sde", 100, value, flat)],
        )
        for seed, value in enumerate(values)
    ]
    kuramoto = headline.build_rows(paths, ["swd"], "cmd", resamples=4000)[0][0]["kuramoto"]
    assert kuramoto["mean"] == pytest.approx(8.0, rel=1e-12)
    # Brute force: the means of all 5⁵ equally likely draws of 5 seeds with replacement, and their quantiles.
    means = np.array(np.meshgrid(*[values] * 5)).reshape(5, -1).mean(axis=0)
    low, high = np.quantile(means, [0.025, 0.975])
    assert kuramoto["low"] == pytest.approx(low, abs=0.2) and kuramoto["high"] == pytest.approx(high, abs=0.2)
    assert high - low > 2.0


def test_a_seed_missing_for_the_best_setting_and_old_files_are_reported(
    three_seeds: list[Path], tmp_path: Path
) -> None:
    old = write_quality(
        tmp_path,
        0,
        [{"data": "fingerprints", "method": "euclidean", "sampler": "sde", "nfe": 100, "swd_mean": 1.0}],
        name="old.json",
    )
    rows, notes = headline.build_rows([*three_seeds, old], ["swd"], "cmd", resamples=500)
    assert len(rows) == 1 and any("old.json" in note and "no cell tables" in note for note in notes)
    # A fourth seed with only a Euclidean row: seed 3 is not shared, so the headline stays at seeds 0–2.
    extra = write_quality(tmp_path, 3, [quality_row("euclidean", "sde", 100, 1.0)])
    rows, _ = headline.build_rows([*three_seeds, extra], ["swd"], "cmd", resamples=500)
    assert rows[0]["seeds"] == [0, 1, 2]


def test_different_protocols_are_not_paired(three_seeds: list[Path], tmp_path: Path) -> None:
    payload = json.loads(three_seeds[0].read_text())
    for row in payload["rows"]:
        if row["method"] == "euclidean":
            row["reference_size"] = 16
    three_seeds[0].write_text(json.dumps(payload))
    rows, notes = headline.build_rows(three_seeds, ["swd"], "cmd", resamples=500)
    assert rows == [] and any("different protocols" in note and "euclidean sde:100" in note for note in notes)


def test_main_writes_json_and_the_table_between_markers(three_seeds: list[Path], tmp_path: Path, capsys) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n<!-- headline:start -->\nold table\n<!-- headline:end -->\n\nAfter.\n")
    out = tmp_path / "headline.json"
    assert (
        headline.main([*map(str, three_seeds), "--metrics", "swd", "--out", str(out), "--write-table", str(page)]) == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["metric"] == "swd"
    text = page.read_text()
    assert "old table" not in text and text.startswith("# Title") and text.rstrip().endswith("After.")
    table = text.split("<!-- headline:start -->\n")[1].split("\n<!-- headline:end -->")[0]
    assert table == headline.markdown_table(rows) and table in capsys.readouterr().out
    assert "| fingerprints | 100 | small | swd | 3 |" in table and "0.8 [0.8, 0.8]" in table
    page.write_text("no markers here\n")
    assert headline.main([*map(str, three_seeds), "--out", str(out), "--write-table", str(page)]) == 2
    assert "headline:start" in capsys.readouterr().err


def test_an_ablation_pairs_two_methods_by_their_own_labels(tmp_path: Path) -> None:
    """Kuramoto-local is 0.9 × Kuramoto without coupling in every cell; Euclidean rows do not enter the ablation."""
    paths = []
    for seed, scale in zip((0, 1, 2), (10.0, 12.0, 9.0)):
        rows = [
            quality_row("euclidean", "sde", 100, 0.5 * scale),
            quality_row("kuramoto-none", "sde", 100, scale),
            quality_row("kuramoto-none", "ode", 50, 3 * scale),
            quality_row("kuramoto-local", "sde", 100, 0.9 * scale),
        ]
        paths.append(write_quality(tmp_path, seed, rows))
    rows, notes = headline.ablation_rows(
        paths,
        [("kuramoto-local", "kuramoto-none"), ("kuramoto-global", "kuramoto-none")],
        ["swd"],
        "python bench/headline.py …",
        resamples=300,
    )
    assert notes == [] and len(rows) == 1  # no kuramoto-global rows: no second ablation
    row = rows[0]
    assert (
        row["numerator"]["label"] == "kuramoto-local sde:100" and row["denominator"]["label"] == "kuramoto-none sde:100"
    )
    assert row["seeds"] == [0, 1, 2]
    assert row["ratio"]["low"] == pytest.approx(0.9, rel=1e-12) and row["ratio"]["high"] == pytest.approx(
        0.9, rel=1e-12
    )
    assert "| kuramoto-local sde:100" not in headline.ablation_table(rows)  # labels sit in brackets after the values
    assert "(kuramoto-local sde:100)" in headline.ablation_table(rows)


def test_an_ablation_pair_matches_at_every_T_without_the_label_suffix(tmp_path: Path) -> None:
    """quality.py --steps 1000 labels its rows "<method> T1000"; the pair written without the suffix makes one row
    per T (0.9 at T = 100, 0.7 at T = 1000), and the suffixed labels still name the T = 1000 rows alone."""
    paths = []
    for seed, scale in zip((0, 1, 2), (10.0, 12.0, 9.0)):
        short = [
            quality_row("kuramoto-none", "sde", 100, scale),
            quality_row("kuramoto-local", "sde", 100, 0.9 * scale),
        ]
        long = [
            quality_row("kuramoto-none T1000", "sde", 100, scale),
            quality_row("kuramoto-local T1000", "sde", 100, 0.7 * scale),
            quality_row("kuramoto-local T1000 sample-prior:relaxed", "sde", 100, 0.5 * scale),
        ]
        paths.append(write_quality(tmp_path, seed, short, name=f"short_seed{seed}.json"))
        paths.append(write_quality(tmp_path, seed, long, name=f"long_seed{seed}.json", steps=1000))
    rows, notes = headline.ablation_rows(
        paths, [("kuramoto-local", "kuramoto-none")], ["swd"], "python bench/headline.py …", resamples=300
    )
    assert notes == [] and sorted(row["T"] for row in rows) == [100, 1000]
    by_steps = {row["T"]: row for row in rows}
    assert by_steps[100]["ratio"]["mean"] == pytest.approx(0.9, rel=1e-12)
    assert by_steps[1000]["ratio"]["mean"] == pytest.approx(0.7, rel=1e-12)  # the prior variant is another method
    assert by_steps[1000]["numerator"]["label"] == "kuramoto-local T1000 sde:100"
    prior, _ = headline.ablation_rows(
        paths, [("kuramoto-local sample-prior:relaxed", "kuramoto-none")], ["swd"], "…", resamples=300
    )
    assert [row["T"] for row in prior] == [1000] and prior[0]["ratio"]["mean"] == pytest.approx(0.5, rel=1e-12)
    suffixed, _ = headline.ablation_rows(
        paths, [("kuramoto-local T1000@sde:100", "kuramoto-none T1000")], ["swd"], "…", resamples=300
    )
    assert [row["T"] for row in suffixed] == [1000] and suffixed[0]["ratio"]["mean"] == pytest.approx(0.7, rel=1e-12)


def test_an_ablation_side_can_be_one_setting(tmp_path: Path) -> None:
    """A few-step sampler against the same model's reverse SDE: ``METHOD@SAMPLER:NFE`` fixes the setting where the
    method's best (here the SDE) would otherwise be taken on both sides."""
    paths = []
    for seed, scale in zip((0, 1, 2), (10.0, 12.0, 9.0)):
        rows = [
            quality_row("kuramoto-local", "sde", 100, scale),
            quality_row("kuramoto-local", "sde-heun", 25, 1.25 * scale),
            quality_row("kuramoto-local", "sde-heun", 9, 2 * scale),
        ]
        paths.append(write_quality(tmp_path, seed, rows))
    pairs = [("kuramoto-local@sde-heun:25", "kuramoto-local@sde:100"), ("kuramoto-local@sde-heun:10", "kuramoto-local")]
    rows, notes = headline.ablation_rows(paths, pairs, ["swd"], "python bench/headline.py …", resamples=300)
    assert notes == [] and len(rows) == 1  # no sde-heun:10 rows (they say NFE 9): no second row
    row = rows[0]
    assert row["numerator"]["label"] == "kuramoto-local sde-heun:25"
    assert row["denominator"]["label"] == "kuramoto-local sde:100"
    assert row["ratio"]["low"] == pytest.approx(1.25, rel=1e-12) and row["ratio"]["high"] == pytest.approx(
        1.25, rel=1e-12
    )
    best, _ = headline.ablation_rows(
        paths, [("kuramoto-local@sde-heun:9", "kuramoto-local")], ["swd"], "…", resamples=300
    )
    assert best[0]["denominator"]["label"] == "kuramoto-local sde:100"  # without @: the method's best setting
    assert best[0]["ratio"]["mean"] == pytest.approx(2.0, rel=1e-12)


@pytest.mark.parametrize("steps", [100, 1000])
def test_ablation_names_strip_exactly_the_suffix_quality_writes(steps: int) -> None:
    """The label suffix has one home (common.steps_suffix): whatever quality.py appends, headline.py strips, and
    only where it stands as a whole word (T10 must not strip from T1000)."""
    import common  # noqa: PLC0415 - on the path set above

    label = f"kuramoto-local{common.steps_suffix(steps)} sample-prior:relaxed"
    assert headline.ablation_names(label, steps) == {label, "kuramoto-local sample-prior:relaxed"}
    assert headline.ablation_names(f"euclidean{common.steps_suffix(steps)}", steps) == {
        f"euclidean{common.steps_suffix(steps)}",
        "euclidean",
    }
    longer = f"euclidean{common.steps_suffix(steps * 10)}"
    assert headline.ablation_names(longer, steps) == {longer}
