"""Issue 32 §3–§4 in process: inputs small on disk cannot take unbounded memory or time, outputs are never
silently mixed or overwritten, and failed writes leave nothing behind. (The same behaviours through the real
command line, with their exit status and one line, are rows of tests/app/test_bad_inputs.py.)"""

from __future__ import annotations

import errno
import io
import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kuramoto_diffusion.app import cli
from kuramoto_diffusion.app.train import check_fresh_out
from kuramoto_diffusion.data import FlowSource, ImageFolderSource, LazyImageFolderSource, lazy_folder
from kuramoto_diffusion.data.flows import _npz_velocity_bytes
from kuramoto_diffusion.data.image_io import read_image
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.serialization import atomic_path, write_json_atomic

PRETRAINED = (
    Path(__file__).resolve().parents[2] / "src" / "kuramoto_diffusion" / "pretrained" / "textures-kuramoto-local-32"
)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares width × height, with a body of a few bytes (never decodable)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _good(folder: Path, count: int = 3, size: int = 20) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / f"good{index}.png")


# ----- oversized images ---------------------------------------------------------------------------
def test_a_declared_size_over_the_limit_is_refused_from_the_header(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 60_000, 60_000)  # 3.6 billion pixels declared in 80 bytes
    with pytest.raises(
        UserError, match=r"bomb.png: image is 60000x60000 = 3,600,000,000 pixels, more than the limit of 89,478,485"
    ):
        read_image(bomb)
    # The same file with a limit it fits gets as far as decoding, which fails on the missing body: the size
    # check above came first and decoded nothing.
    with pytest.raises(UserError, match="cannot decode image"):
        read_image(bomb, max_image_pixels=60_000 * 60_000)


def test_the_limit_can_be_raised_and_pillow_stays_silent_and_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "large.png"
    Image.fromarray(np.full((120, 100), 7, np.uint8)).save(path)  # 12,000 pixels
    with pytest.raises(UserError, match="raise max_image_pixels=12000"):
        read_image(path, max_image_pixels=11_999)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # Pillow alone would warn about this image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pixels = read_image(path, max_image_pixels=12_000)
    assert pixels.shape == (120, 100, 1) and int(pixels[0, 0, 0]) == 7
    assert Image.MAX_IMAGE_PIXELS == 5_000  # Pillow's own setting is restored after the header is read


def test_folder_sources_pass_the_limit_on(tmp_path):
    _good(tmp_path / "images", size=20)  # 400 pixels each
    with pytest.raises(UserError, match="more than the limit of 399"):
        ImageFolderSource(tmp_path / "images", 8, split="all", max_image_pixels=399)
    assert len(ImageFolderSource(tmp_path / "images", 8, split="all", max_image_pixels=400)) == 3
    lazy = LazyImageFolderSource(
        tmp_path / "images", 8, split="all", channels=1, max_image_pixels=399, index_cache=tmp_path / "cache"
    )
    with pytest.raises(UserError, match="more than the limit of 399"):
        lazy.sample_batch(2, torch.Generator().manual_seed(0))


# ----- files that cannot be opened, and skipping that ends ----------------------------------------
def _links(folder: Path) -> Path:
    _good(folder)
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    (folder / "loop1.png").symlink_to(folder / "loop2.png")
    (folder / "loop2.png").symlink_to(folder / "loop1.png")
    return folder


def test_dangling_symlinks_and_loops_are_bad_files_that_skip_leaves_out(tmp_path):
    folder = _links(tmp_path / "links")
    with pytest.raises(UserError, match=r"dangling.png: cannot open \(No such file or directory\)"):
        ImageFolderSource(folder, 8, split="all")
    with pytest.warns(UserWarning, match="skipped 3 of 6"):
        source = ImageFolderSource(folder, 8, split="all", on_bad_image="skip")
    assert sorted(path.name for path in source.paths) == ["good0.png", "good1.png", "good2.png"]
    assert sorted(path.name for path, _ in source.skipped) == ["dangling.png", "loop1.png", "loop2.png"]
    lazy = LazyImageFolderSource(
        folder, 8, split="all", channels=1, on_bad_image="skip", index_cache=tmp_path / "cache"
    )
    with pytest.warns(UserWarning, match="skipped"):
        for seed in range(6):
            assert lazy.sample_batch(4, torch.Generator().manual_seed(seed)).shape == (4, 1, 8, 8)


def test_lazy_skip_on_a_folder_where_nothing_decodes_stops_in_one_error(tmp_path, monkeypatch):
    folder = tmp_path / "bad"
    folder.mkdir()
    for index in range(4):
        (folder / f"{index}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    attempts = []
    real = lazy_folder.read_image_at_least
    monkeypatch.setattr(lazy_folder, "read_image_at_least", lambda path, *a: attempts.append(path) or real(path, *a))
    lazy = LazyImageFolderSource(
        folder, 8, split="all", channels=1, on_bad_image="skip", index_cache=tmp_path / "cache"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning line before the error: the command ends with one line
        with pytest.raises(UserError, match="none of the 4 image file.s. of this split is usable"):
            lazy.sample_batch(16, torch.Generator().manual_seed(0))
    assert sorted(attempts) == sorted(folder.iterdir())  # each file tried once


def test_lazy_skip_decodes_a_bad_file_once_and_warns_once_per_batch(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    _good(folder, count=4)
    (folder / "cut.png").write_bytes((folder / "good0.png").read_bytes()[:40])
    attempts = []
    real = lazy_folder.read_image_at_least
    monkeypatch.setattr(
        lazy_folder, "read_image_at_least", lambda path, *a: attempts.append(path.name) or real(path, *a)
    )
    lazy = LazyImageFolderSource(
        folder, 8, split="all", channels=1, on_bad_image="skip", workers=1, index_cache=tmp_path / "cache"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(10):
            lazy.sample_batch(8, torch.Generator().manual_seed(seed))
    assert attempts.count("cut.png") == 1
    assert len([w for w in caught if "skipped" in str(w.message)]) == 1


# ----- flow .npz headers ------------------------------------------------------------------------------
def _npz_declaring(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("velocity.npy", header.getvalue())


def test_flow_npz_sizes_come_from_the_header(tmp_path):
    velocity = np.random.default_rng(0).normal(size=(3, 2, 8, 8))  # float64 on disk: read as float32
    np.savez_compressed(tmp_path / "a.npz", velocity=velocity, other=np.zeros(5))
    assert _npz_velocity_bytes(tmp_path / "a.npz") == velocity.astype(np.float32).nbytes
    _npz_declaring(tmp_path / "huge.npz", (100_000, 2, 1024, 1024))
    with pytest.raises(UserError, match=r"huge.npz: the 'velocity' arrays read so far declare 781.25 GiB"):
        FlowSource(tmp_path / "huge.npz", split="all")
    _npz_declaring(tmp_path / "flat.npz", (10, 64))
    with pytest.raises(UserError, match=r"flat.npz: 'velocity' has shape \(10, 64\)"):
        FlowSource(tmp_path / "flat.npz", split="all")
    _npz_declaring(tmp_path / "objects.npz", (1, 2, 4, 4), dtype="|O")
    with pytest.raises(UserError, match="never unpickled"):
        FlowSource(tmp_path / "objects.npz", split="all")


def test_the_flow_limit_counts_all_files_and_can_be_raised(tmp_path):
    folder = tmp_path / "flows"
    folder.mkdir()
    for index in range(3):
        np.savez(folder / f"trajectory_{index:05d}.npz", velocity=np.zeros((2, 2, 8, 8), np.float32))  # 1 KiB each
    with pytest.raises(
        UserError,
        match=r"trajectory_00002.npz: the 'velocity' arrays read so far declare 3072 bytes as float32, more than the limit of 3071 bytes",
    ):
        FlowSource(folder, split="all", max_bytes=2048 + 1023)
    assert len(FlowSource(folder, split="all", max_bytes=3 * 1024)) == 3


# ----- temporary files ----------------------------------------------------------------------------------
def test_a_failed_write_leaves_no_temporary_file_and_names_the_users_path(tmp_path):
    target = tmp_path / "out" / "config.json"
    target.parent.mkdir()
    with pytest.raises(OSError) as raised:
        with atomic_path(target) as temporary:
            temporary.write_text("half a file")
            raise OSError(errno.ENOSPC, "No space left on device", str(temporary))
    assert raised.value.filename == str(target) and raised.value.errno == errno.ENOSPC
    assert ".tmp-" not in str(raised.value)
    with pytest.raises(ValueError):
        with atomic_path(target) as temporary:
            temporary.write_text("half a file")
            raise ValueError("a bug while writing")
    assert list(target.parent.iterdir()) == []
    with pytest.raises(FileNotFoundError) as missing:
        write_json_atomic(tmp_path / "no-such-folder" / "x.json", {})
    assert missing.value.filename == str(tmp_path / "no-such-folder" / "x.json")
    status, message = cli.describe_failure(missing.value, "sample")
    assert status == 2 and message.startswith(str(tmp_path / "no-such-folder" / "x.json")) and ".tmp-" not in message


# ----- out of memory --------------------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(cli.MEMORY_ADVICE))
@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 80 GB"
        ),
        RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
    ],
)
def test_memory_errors_are_one_line_naming_options_the_command_has(command, error):
    status, message = cli.describe_failure(error, command)
    assert status == 2 and message.startswith("out of memory; ") and "\n" not in message
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    known = {option for action in commands[command]._actions for option in action.option_strings}
    if command == "flows":
        known |= {
            option
            for action in commands["flows"]._actions
            if action.dest == "flows_command"
            for sub in action.choices.values()
            for inner in sub._actions
            for option in inner.option_strings
        }
    named = {word.strip(",():;") for word in message.split() if word.startswith("--")}
    assert named <= known, (command, named - known)


def test_other_runtime_errors_are_still_bugs():
    assert cli.describe_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "sample")[0] == 1


# ----- sample --out-dir manifest ------------------------------------------------------------------------
def test_sample_out_dir_continues_only_with_the_same_model_and_settings(tmp_path, capsys):
    folder, grid = tmp_path / "images", tmp_path / "grid.png"
    base = [
        "sample",
        "--checkpoint",
        str(PRETRAINED),
        "--nfe",
        "2",
        "--batch-size",
        "2",
        "--out-dir",
        str(folder),
        "--out",
        str(grid),
        "--quiet",
    ]
    assert cli.main([*base, "--num", "2"]) == 0
    manifest = json.loads((folder / "sample-manifest.json").read_text())
    assert (
        manifest["settings"]["nfe"] == 2 and manifest["settings"]["seed"] == 0 and len(manifest["weights_sha256"]) == 64
    )
    first = (folder / "000000.png").read_bytes()
    capsys.readouterr()
    for changed in (["--seed", "1"], ["--nfe", "3"], ["--sampler", "ode"], ["--no-ema"]):
        assert cli.main([*base, "--num", "4", *changed]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and "its images were made with" in error and "start it afresh" in error
        assert changed[0] in error
    assert sorted(path.name for path in folder.glob("*.png")) == ["000000.png", "000001.png"]
    assert cli.main([*base, "--num", "4"]) == 0  # the same settings: continues with images 2 and 3
    assert sorted(path.name for path in folder.glob("*.png")) == [f"{i:06d}.png" for i in range(4)]
    assert (folder / "000000.png").read_bytes() == first
    assert not [path for path in folder.iterdir() if ".tmp-" in path.name]


# ----- train --out -----------------------------------------------------------------------------------
def test_a_new_run_refuses_foreign_folders_and_its_own_data_folder(tmp_path):
    check_fresh_out(tmp_path / "new", "textures")  # a new folder
    (tmp_path / "empty").mkdir()
    check_fresh_out(tmp_path / "empty", "textures")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": {}, "data": {}, "training": {}}))
    check_fresh_out(run, "textures")  # a run folder: the trainer decides (it refuses one with checkpoints)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="is not empty and not a run folder .it holds notes.txt."):
        check_fresh_out(tmp_path / "mine", "textures")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"learning_rate": 3}')
    with pytest.raises(UserError, match="is not a run's config.json"):
        check_fresh_out(tmp_path / "other", "textures")
    _good(tmp_path / "data")
    for inside in (tmp_path / "data", tmp_path / "data" / "run", tmp_path / "data" / "a" / ".." / "b"):
        with pytest.raises(UserError, match="is inside the --data folder"):
            check_fresh_out(inside, str(tmp_path / "data"))
    flows = tmp_path / "flows"
    flows.mkdir()
    with pytest.raises(UserError, match="is inside the --data folder"):
        check_fresh_out(flows / "run", f"flows:{flows}")
    check_fresh_out(tmp_path / "beside", str(tmp_path / "data"))
