"""Users' own angle data: .npy/.csv loading, units, wrapping, bad files, splits, and the CLI round trip."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_runner import shared_cli
from kuramoto_diffusion.config import DataConfig
from kuramoto_diffusion.data import AngleFileSource, open_angle_source, open_image_source, read_angle_file, save_angles
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.serialization import config_from_dict, config_to_dict

ROOT = Path(__file__).resolve().parents[2]


def independent_radians(degrees: np.ndarray) -> np.ndarray:
    """Degrees → radians in [-π, π), computed without the package."""
    radians = np.asarray(degrees, dtype=np.float64) * (math.pi / 180.0)
    wrapped = np.mod(radians + math.pi, 2 * math.pi) - math.pi
    return np.where(wrapped >= math.pi, wrapped - 2 * math.pi, wrapped)


def write_csv(path: Path, values: np.ndarray, header: str | None = "phi,psi,omega") -> Path:
    np.savetxt(path, values, fmt="%.17g", delimiter=",", header=header or "", comments="")
    return path


@pytest.fixture()
def degrees_data() -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.uniform(-360.0, 360.0, (40, 3))
    values[:4, 0] = [180.0, -180.0, 360.0, -360.0]  # the edges of the accepted range and the seam
    return values


# ----- loading, units and wrapping ----------------------------------------------------------------
def test_npy_and_csv_in_radians_and_degrees_give_the_same_radians(tmp_path: Path, degrees_data: np.ndarray) -> None:
    expected = independent_radians(degrees_data)
    radians_raw = degrees_data * (math.pi / 180.0)  # in [-2π, 2π]: accepted, then wrapped
    np.save(tmp_path / "deg.npy", degrees_data)
    np.save(tmp_path / "rad.npy", radians_raw)
    files = {
        "deg.npy": read_angle_file(tmp_path / "deg.npy", degrees=True),
        "deg.csv": read_angle_file(write_csv(tmp_path / "deg.csv", degrees_data), degrees=True),
        "rad.npy": read_angle_file(tmp_path / "rad.npy"),
        "rad.csv": read_angle_file(write_csv(tmp_path / "rad.csv", radians_raw, header=None)),
    }
    for name, radians in files.items():
        assert radians.dtype == np.float64 and radians.shape == (40, 3), name
        assert np.all(radians >= -math.pi) and np.all(radians < math.pi), name
        gap = np.abs(np.mod(radians - expected + math.pi, 2 * math.pi) - math.pi)
        assert gap.max() < 1e-12, (name, gap.max())
    source = AngleFileSource(tmp_path / "deg.csv", degrees=True, split="all")
    assert source.angles.dtype == torch.float32 and source.dims == 3 and len(source) == 40
    assert bool((source.angles >= -math.pi).all()) and bool((source.angles < math.pi).all())
    assert np.abs(source.angles.double().numpy() - files["deg.csv"]).max() < 1e-6


def test_wrapping_edges_and_one_dimensional_arrays(tmp_path: Path) -> None:
    values = np.array([0.0, math.pi, -math.pi, 2 * math.pi, 1.5 * math.pi, -1.5 * math.pi, 6.2832])
    np.save(tmp_path / "one.npy", values)  # 1-D: N examples of one angle
    radians = read_angle_file(tmp_path / "one.npy")
    assert radians.shape == (7, 1)
    np.testing.assert_allclose(
        radians[:, 0], [0.0, -math.pi, -math.pi, 0.0, -0.5 * math.pi, 0.5 * math.pi, 6.2832 - 2 * math.pi], atol=1e-12
    )
    degrees = read_angle_file(
        write_csv(tmp_path / "d.csv", np.array([[180.0], [359.0], [-190.0]]), header="angle"), degrees=True
    )
    np.testing.assert_allclose(degrees[:, 0], np.deg2rad([-180.0, -1.0, 170.0]), atol=1e-12)


class _Payload:
    """Unpickling this creates the file it names: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def _bad_files(folder: Path) -> dict[str, tuple[Path, bool, str]]:
    """name -> (file, degrees, words the error must contain)."""
    good = np.array([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]])
    nan = good.copy()
    nan[1, 1] = np.nan
    inf = np.deg2rad(good)
    inf[2, 0] = np.inf
    np.save(folder / "three_d.npy", np.zeros((4, 2, 2)))
    np.save(folder / "nan.npy", nan)
    np.save(folder / "inf.npy", inf)
    np.save(folder / "one_row.npy", good[:1])
    np.save(folder / "no_columns.npy", np.zeros((5, 0)))
    np.save(folder / "strings.npy", np.array(["10", "20"]))
    np.save(folder / "booleans.npy", np.ones((3, 2), dtype=bool))
    np.save(
        folder / "objects.npy",
        np.array([_Payload(folder / "PICKLE_WAS_EXECUTED"), 1.0], dtype=object),
        allow_pickle=True,
    )
    (folder / "text.csv").write_text("phi,psi\n10,20\n30,abc\n")
    (folder / "empty_cell.csv").write_text("10,20\n30,\n")
    (folder / "ragged.csv").write_text("10,20\n30,40,50\n")
    (folder / "semicolons.csv").write_text("10;20\n30;40\n")
    (folder / "header_only.csv").write_text("phi,psi\n")
    (folder / "binary.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    write_csv(folder / "degrees.csv", good * 3, header="phi,psi")
    write_csv(folder / "beyond_360.csv", good * 10, header="phi,psi")
    (folder / "angles.txt").write_text("10,20\n30,40\n")
    (folder / "a_folder.npy").mkdir()
    return {
        "missing": (folder / "nope.csv", False, "no such file"),
        "folder": (folder / "a_folder.npy", False, "is a folder"),
        "extension": (folder / "angles.txt", False, "unknown extension '.txt'"),
        "three_d": (folder / "three_d.npy", False, "shape (4, 2, 2), expected (N, D)"),
        "nan": (folder / "nan.npy", True, "value nan at row 2, column 2"),
        "inf": (folder / "inf.npy", False, "value inf at row 3, column 1"),
        "one_row": (folder / "one_row.npy", True, "at least 2 examples"),
        "no_columns": (folder / "no_columns.npy", False, "has no angles"),
        "strings": (folder / "strings.npy", False, "not real numbers"),
        "booleans": (folder / "booleans.npy", False, "not real numbers"),
        "objects": (folder / "objects.npy", False, "never done"),
        "text": (folder / "text.csv", True, "line 3, column 2: 'abc' is not a number"),
        "empty_cell": (folder / "empty_cell.csv", True, "line 2, column 2: '' is not a number"),
        "ragged": (folder / "ragged.csv", True, "line 2 has 3 values but line 1 has 2"),
        "semicolons": (folder / "semicolons.csv", True, "'30;40' is not a number; the file must hold comma-separated"),
        "header_only": (folder / "header_only.csv", True, "no data rows"),
        "binary": (folder / "binary.csv", True, "not a text file"),
        "degrees_without_flag": (
            folder / "degrees.csv",
            False,
            "outside [-2π, 2π] radians; if the file holds degrees, pass degrees=True",
        ),
        "beyond_a_turn": (folder / "beyond_360.csv", True, "outside [-360, 360] degrees"),
    }


def test_bad_files_are_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    for name, (path, degrees, words) in _bad_files(tmp_path).items():
        with pytest.raises(UserError) as caught:
            open_angle_source(f"angles:{path}", degrees=degrees)
        message = str(caught.value)
        assert str(path) in message and words in message and "\n" not in message, (name, message)
    assert not (tmp_path / "PICKLE_WAS_EXECUTED").exists(), "a pickle payload was executed"


def test_specs_that_are_not_angle_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="names no file"):
        open_angle_source("angles:")
    with pytest.raises(UserError, match="drop degrees=True"):
        open_angle_source("torus:checkerboard", degrees=True)
    with pytest.raises(UserError, match="valid names are"):
        open_angle_source("torus:donut")
    with pytest.raises(UserError, match="angle data is angles:FILE"):
        open_angle_source("textures")
    write_csv(tmp_path / "d.csv", np.zeros((3, 2)), header=None)
    with pytest.raises(UserError, match="pass the data as angles:"):
        open_image_source(str(tmp_path / "d.csv"), 16)
    torus = open_angle_source("torus:wrapped-mixture")
    batch = torus.sample_batch(64, torch.Generator().manual_seed(0))
    assert batch.shape == (64, 2) and batch.dtype == torch.float32 and torus.dims == 2
    assert torch.equal(torus.fixed_batch(5, seed=3), torus.fixed_batch(5, seed=3))


def test_degrees_flag_on_radian_looking_data_warns(tmp_path: Path) -> None:
    write_csv(tmp_path / "rad.csv", np.random.default_rng(1).uniform(-3, 3, (20, 2)), header=None)
    with pytest.warns(UserWarning, match="drop degrees=True"):
        read_angle_file(tmp_path / "rad.csv", degrees=True)


# ----- splits and batches ------------------------------------------------------------------------
def test_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.linspace(-3, 3, 200).reshape(100, 2))
    train = AngleFileSource(tmp_path / "a.npy", split="train", val_fraction=0.2, seed=5)
    val = AngleFileSource(tmp_path / "a.npy", split="val", val_fraction=0.2, seed=5)
    assert len(train) == 80 and len(val) == 20
    assert set(train.rows.tolist()).isdisjoint(val.rows.tolist())
    assert sorted(train.rows.tolist() + val.rows.tolist()) == list(range(100))
    again = AngleFileSource(tmp_path / "a.npy", split="val", val_fraction=0.2, seed=5)
    other = AngleFileSource(tmp_path / "a.npy", split="val", val_fraction=0.2, seed=6)
    assert np.array_equal(again.rows, val.rows) and not np.array_equal(other.rows, val.rows)
    with pytest.raises(UserError, match="unknown split"):
        AngleFileSource(tmp_path / "a.npy", split="test")


def test_batches_come_from_the_rows_and_the_generator(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.linspace(-3, 3, 60).reshape(20, 3))
    source = AngleFileSource(tmp_path / "a.npy", split="all")
    first = source.sample_batch(50, torch.Generator().manual_seed(1))
    assert first.shape == (50, 3) and first.dtype == torch.float32
    assert torch.equal(first, source.sample_batch(50, torch.Generator().manual_seed(1)))
    rows = {tuple(row.tolist()) for row in source.angles}
    assert all(tuple(row.tolist()) in rows for row in first)
    fixed = source.fixed_batch(45, seed=2)
    assert fixed.shape == (45, 3) and torch.equal(fixed, source.fixed_batch(45, seed=2))
    assert {tuple(row.tolist()) for row in fixed[:20]} == rows  # a permutation first, then repeats


# ----- writing samples ---------------------------------------------------------------------------
def test_saved_angles_stay_below_the_upper_end_and_round_trip(tmp_path: Path) -> None:
    below_pi = torch.tensor([[math.pi - 1e-9, -math.pi], [0.5, -0.25]], dtype=torch.float64)
    written = save_angles(tmp_path / "s.csv", below_pi, degrees=True)
    assert written.min() >= -180.0 and written.max() < 180.0
    lines = (tmp_path / "s.csv").read_text().splitlines()
    assert lines[0] == "angle_1,angle_2" and lines[1] == "-180.000000,-180.000000"
    np.testing.assert_allclose(read_angle_file(tmp_path / "s.csv", degrees=True)[1], [0.5, -0.25], atol=1e-7)
    save_angles(tmp_path / "s.npy", below_pi.float(), degrees=False)
    array = np.load(tmp_path / "s.npy", allow_pickle=False)
    assert array.dtype == np.float64 and array.shape == (2, 2) and array.max() < math.pi and array.min() >= -math.pi
    assert not list(tmp_path.glob(".*tmp*")), "a temporary file was left behind"


def test_data_config_records_degrees_and_old_configs_still_load() -> None:
    angle = DataConfig(source="angles:dihedrals.csv", image_size=0, channels=2, degrees=True)
    assert config_from_dict(DataConfig, config_to_dict(angle)) == angle
    old = {
        "source": "textures",
        "image_size": 32,
        "channels": 1,
        "flip": True,
        "val_fraction": 0.1,
        "seed": 0,
        "on_bad_image": "error",
    }
    assert config_from_dict(DataConfig, old).degrees is False
    with pytest.raises(UserError, match="degrees applies to angle data"):
        DataConfig(source="textures", degrees=True)


# ----- the command line --------------------------------------------------------------------------
def cli(*arguments: str) -> subprocess.CompletedProcess[str]:
    return shared_cli().run(list(arguments), timeout=240, cwd=ROOT)


def test_cli_round_trip_in_degrees(tmp_path: Path, degrees_data: np.ndarray) -> None:
    data = write_csv(tmp_path / "dihedrals.csv", degrees_data)
    run = tmp_path / "run"
    common = (
        "--preset",
        "tiny",
        "--batch-size",
        "8",
        "--steps",
        "20",
        "--checkpoint-every",
        "5",
        "--device",
        "cpu",
        "--quiet",
    )
    trained = cli(
        "train",
        "--data",
        f"angles:{data}",
        "--degrees",
        "--process",
        "kuramoto-global",
        "--train-steps",
        "5",
        "--out",
        str(run),
        *common,
    )
    assert trained.returncode == 0, trained.stderr
    saved = json.loads((run / "config.json").read_text())
    assert (
        saved["data"]["degrees"] is True and saved["data"]["channels"] == 3 and saved["model"]["data_kind"] == "angle"
    )
    resumed = cli("train", "--out", str(run), "--resume", "--train-steps", "7", "--device", "cpu", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "checkpoints" / "step-00000007").is_dir()
    sampled = cli(
        "sample",
        "--checkpoint",
        str(run),
        "--num",
        "9",
        "--nfe",
        "5",
        "--out",
        str(tmp_path / "x.csv"),
        "--out-plot",
        str(tmp_path / "x.png"),
        "--device",
        "cpu",
    )
    assert sampled.returncode == 0, sampled.stderr
    assert "in degrees" in sampled.stdout
    values = np.loadtxt(tmp_path / "x.csv", delimiter=",", skiprows=1)
    assert values.shape == (9, 3) and values.min() >= -180.0 and values.max() < 180.0
    assert (tmp_path / "x.png").stat().st_size > 1000
    local = cli(
        "train",
        "--data",
        f"angles:{data}",
        "--degrees",
        "--process",
        "kuramoto-local",
        "--train-steps",
        "1",
        "--out",
        str(tmp_path / "local"),
        "--quiet",
    )
    lines = [line for line in local.stderr.splitlines() if line.strip()]
    assert local.returncode == 2 and len(lines) == 1 and "use --process kuramoto-global" in lines[0], local.stderr
    assert not (tmp_path / "local").exists()


def test_image_model_writes_npy(tmp_path: Path) -> None:
    from kuramoto_diffusion.config import image_model_config
    from kuramoto_diffusion.model import DiffusionModel
    from kuramoto_diffusion.processes import KuramotoConfig

    torch.manual_seed(0)
    DiffusionModel(image_model_config(KuramotoConfig(coupling="local", steps=4), 1, 8, "tiny")).save_pretrained(
        tmp_path / "model"
    )
    result = cli(
        "sample",
        "--checkpoint",
        str(tmp_path / "model"),
        "--num",
        "3",
        "--nfe",
        "2",
        "--out",
        str(tmp_path / "g.png"),
        "--out-npy",
        str(tmp_path / "g.npy"),
        "--device",
        "cpu",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    images = np.load(tmp_path / "g.npy", allow_pickle=False)
    assert images.dtype == np.float32 and images.shape == (3, 1, 8, 8) and np.abs(images).max() <= 1.0
    assert (tmp_path / "g.png").is_file()
