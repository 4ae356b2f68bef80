"""The bad-input matrix: every command against every kind of bad input, through the real CLI.

Each case runs ``python -m kuramoto_diffusion ...`` in its own process (forked from one interpreter that
imported the package once, ``cli_runner.ForkingCLI``) and checks the outcome:
an error exits 2 with exactly one line on stderr that contains the expected words, shows no
Python traceback and leaves no output file behind; an accepted input exits 0 and writes its
output (a skipped file adds one warning line). ``docs/robustness.md`` is generated from CASES
(``python tests/app/test_bad_inputs.py``), and a test keeps it current.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if (
    __name__ == "__main__"
):  # run as a script: the shared helpers are one folder up (tests/conftest.py does it for pytest)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cli_runner import ForkingCLI, shared_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "robustness.md"


# ----- the inputs ------------------------------------------------------------------------------
def _texture(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, np.pi)
    wave = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 0.6 + rng.uniform(0, 6))
    return np.clip(127.5 + 100 * wave + rng.normal(0, 10, (size, size)), 0, 255).astype(np.uint8)


def _good_images(folder: Path, count: int = 3, size: int = 24) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(_texture(size, index)).save(folder / f"good{index}.png")


def _png_claiming_size(path: Path, width: int, height: int) -> None:
    """A valid PNG header that declares width × height, with a tiny body: a decompression bomb probe."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def _npz_claiming_shape(path: Path, shape: tuple[int, ...]) -> None:
    """A .npz whose 'velocity' header declares ``shape`` (float32) with no data after it: a few hundred bytes
    on disk that np.load would try to turn into shape's worth of memory."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("velocity.npy", header.getvalue())


class _Payload:
    """Unpickling this creates the file it names: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def _make_folders(root: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}

    def folder(name: str) -> Path:
        paths[name] = root / name
        paths[name].mkdir(parents=True, exist_ok=True)
        return paths[name]

    _good_images(folder("good"))
    folder("empty")
    (folder("no_images") / "notes.txt").write_text("not an image\n")
    _good_images(folder("zero_byte"))
    (paths["zero_byte"] / "empty.png").write_bytes(b"")
    _good_images(folder("truncated"))
    data = (paths["truncated"] / "good0.png").read_bytes()
    (paths["truncated"] / "cut.png").write_bytes(data[: len(data) // 2])
    _good_images(folder("not_image"))
    (paths["not_image"] / "fake.jpg").write_text("<html>404 Not Found</html>\n")
    Image.fromarray(_texture(24, 5).astype(np.uint16) * 257).save(folder("sixteen_bit") / "deep.png")
    assert Image.open(paths["sixteen_bit"] / "deep.png").mode.startswith("I")
    Image.fromarray(np.stack([_texture(24, i) for i in range(3)], -1)).convert("CMYK").save(
        folder("cmyk") / "print.jpg"
    )
    Image.fromarray(_texture(24, 6)).convert("P").save(folder("palette") / "indexed.png")
    frames = [Image.fromarray(_texture(24, i)) for i in range(3)]
    frames[0].save(folder("animated") / "clip.gif", save_all=True, append_images=frames[1:], loop=0)
    _png_claiming_size(folder("huge") / "bomb.png", 60_000, 60_000)
    Image.fromarray(_texture(120, 12)).save(folder("big") / "large.png")  # 14,400 pixels
    links = folder("links")
    _good_images(links)
    (links / "dangling.png").symlink_to(root / "nowhere.png")
    (links / "loop1.png").symlink_to(links / "loop2.png")
    (links / "loop2.png").symlink_to(links / "loop1.png")
    (folder("foreign") / "notes.txt").write_text("the user's own file\n")
    Image.fromarray(_texture(16, 13)).save(folder("sampled_other") / "000000.png")
    (paths["sampled_other"] / "sample-manifest.json").write_text(
        json.dumps({"checkpoint": "/elsewhere/model", "weights_sha256": "0" * 64, "settings": {"seed": 0}})
    )
    Image.fromarray(_texture(16, 14)).save(folder("sampled_unknown") / "000000.png")
    Image.fromarray(_texture(4, 7)).save(folder("tiny") / "icon.png")
    mixed = folder("mixed")
    Image.fromarray(_texture(24, 8)).save(mixed / "grey.png")
    Image.fromarray(np.stack([_texture(24, i) for i in range(3)], -1)).save(mixed / "rgb.png")
    Image.fromarray(np.stack([_texture(24, i) for i in range(4)], -1)).save(mixed / "rgba.png")
    Image.fromarray(_texture(24, 9)).convert("LA").save(mixed / "grey_alpha.png")
    Image.fromarray(_texture(24, 10)).convert("P").save(mixed / "palette.png")
    partly = folder("partly_bad")
    _good_images(partly)
    (partly / "cut.png").write_bytes(data[: len(data) // 3])
    (partly / "zero.png").write_bytes(b"")
    all_bad = folder("all_bad")
    (all_bad / "cut.png").write_bytes(data[: len(data) // 3])
    (all_bad / "fake.bmp").write_text("nothing\n")
    inpaint = folder("inpaint")
    Image.fromarray(_texture(20, 11)).save(inpaint / "image.png")
    mask = np.zeros((20, 20), np.uint8)
    mask[6:14, 6:14] = 255  # white = fill
    Image.fromarray(mask).save(inpaint / "mask.png")
    Image.fromarray(np.full((20, 20), 255, np.uint8)).save(inpaint / "white_mask.png")
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(inpaint / "black_mask.png")
    Image.fromarray(mask[:16]).save(inpaint / "short_mask.png")
    soft = mask.copy()
    soft[0, :3] = 90  # anti-aliased edge pixels
    Image.fromarray(soft).save(inpaint / "soft_mask.png")
    (root / "a_file.txt").write_text("a file where a folder should be\n")
    paths["a_file"] = root / "a_file.txt"
    angles = folder("angles")
    pairs = np.array([[-63.0, -43.0], [-120.0, 130.0], [57.0, 47.0], [-70.0, -40.0]])  # degrees
    np.savetxt(angles / "degrees.csv", pairs, fmt="%.1f", delimiter=",", header="phi,psi", comments="")
    with_nan = np.deg2rad(pairs)
    with_nan[1, 1] = np.nan
    np.savetxt(angles / "nan.csv", with_nan, delimiter=",", header="phi,psi", comments="")
    (angles / "text_cell.csv").write_text("phi,psi\n-1.1,-0.75\n-2.1,beta\n")
    np.save(angles / "three_d.npy", np.zeros((4, 2, 2)))
    np.save(angles / "one_row.npy", np.deg2rad(pairs[:1]))
    (angles / "angles.txt").write_text("-1.1,-0.75\n-2.1,2.3\n")
    for name in ("degrees.csv", "nan.csv", "text_cell.csv", "three_d.npy", "one_row.npy", "angles.txt"):
        paths[f"angles_{name.split('.')[0]}"] = angles / name
    return paths


def _make_checkpoints(root: Path) -> dict[str, Path]:
    import torch

    from kuramoto_diffusion.config import image_model_config
    from kuramoto_diffusion.model import DiffusionModel
    from kuramoto_diffusion.processes import KuramotoConfig

    torch.manual_seed(0)
    good = root / "model"
    config = image_model_config(KuramotoConfig(coupling="local", steps=6), 1, 16, "tiny")
    DiffusionModel(config).save_pretrained(good)
    paths = {"model": good}

    def variant(name: str) -> Path:
        folder = root / name
        folder.mkdir()
        for item in good.iterdir():
            (folder / item.name).write_bytes(item.read_bytes())
        paths[name] = folder
        return folder

    (variant("ckpt_no_weights") / "model.safetensors").rename(paths["ckpt_no_weights"] / "model.safetensors.bak")
    (variant("ckpt_no_config") / "config.json").unlink()
    weights = (good / "model.safetensors").read_bytes()
    (variant("ckpt_cut") / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    other = root / "other_model"
    DiffusionModel(
        image_model_config(KuramotoConfig(coupling="local", steps=6), 1, 16, "tiny", base_channels=32)
    ).save_pretrained(other)
    (variant("ckpt_other_config") / "config.json").write_bytes((other / "config.json").read_bytes())
    saved = json.loads((good / "config.json").read_text())
    unknown = json.loads(json.dumps(saved))
    unknown["model"]["process"]["stepz"] = 6
    (variant("ckpt_unknown_key") / "config.json").write_text(json.dumps(unknown))
    ill_typed = json.loads(json.dumps(saved))
    ill_typed["model"]["process"]["steps"] = "six"
    (variant("ckpt_ill_typed") / "config.json").write_text(json.dumps(ill_typed))
    (variant("ckpt_bad_json") / "config.json").write_text('{"model": {"process": ')
    marker = root / "PICKLE_WAS_EXECUTED"
    (variant("ckpt_pickle_weights") / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    (variant("ckpt_pickle_beside") / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    np.save(root / "angles_pickle.npy", np.array([_Payload(marker), 1.0], dtype=object), allow_pickle=True)
    paths["angles_pickle"] = root / "angles_pickle.npy"
    from kuramoto_diffusion.config import angle_model_config

    paths["angle_model"] = root / "angle_model"
    DiffusionModel(angle_model_config(KuramotoConfig(coupling="global", steps=6), 2, "tiny")).save_pretrained(
        paths["angle_model"]
    )
    paths["relaxed_model"] = root / "relaxed_model"
    DiffusionModel(
        image_model_config(KuramotoConfig(coupling="local", steps=6, prior="relaxed"), 1, 16, "tiny")
    ).save_pretrained(paths["relaxed_model"])
    paths["class_model"] = root / "class_model"
    DiffusionModel(
        image_model_config(KuramotoConfig(coupling="local", steps=6), 1, 16, "tiny", class_names=("loops", "whorls"))
    ).save_pretrained(paths["class_model"])
    from kuramoto_diffusion.config import FlowNormalisation, flow_model_config
    from kuramoto_diffusion.processes import PhaseAmplitudeConfig

    paths["flow_model"] = root / "flow_model"
    DiffusionModel(flow_model_config(PhaseAmplitudeConfig(steps=6), 16, FlowNormalisation(), "tiny")).save_pretrained(
        paths["flow_model"]
    )
    velocity = np.random.default_rng(0).normal(size=(4, 2, 16, 16)).astype(np.float32)
    for name in ("flows", "flows_nan", "flows_huge"):
        paths[name] = root / name
        paths[name].mkdir()
    np.savez(paths["flows"] / "trajectory_00000.npz", velocity=velocity)
    np.savez(paths["flows"] / "trajectory_00001.npz", velocity=velocity[::-1].copy())
    _npz_claiming_shape(paths["flows_huge"] / "trajectory_00000.npz", (100_000, 2, 1024, 1024))
    velocity[2, 0, 3, 3] = np.nan
    np.savez(paths["flows_nan"] / "trajectory_00000.npz", velocity=velocity)
    paths["pickle_marker"] = marker
    paths.update(_make_run(root))
    return paths


def _make_run(root: Path) -> dict[str, Path]:
    """A trained run (2 steps, a checkpoint at each) and copies whose newest checkpoint is damaged."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
    from kuramoto_diffusion.data import open_source
    from kuramoto_diffusion.processes import KuramotoConfig
    from kuramoto_diffusion.training import Trainer

    data = DataConfig(source="textures", image_size=16)
    config = RunConfig(
        model=image_model_config(KuramotoConfig(coupling="local", steps=6), 1, 16, "tiny"),
        data=data,
        training=TrainConfig(train_steps=2, batch_size=4, checkpoint_every=1, sample_every=0, warmup_steps=1),
    )
    trainer = Trainer(config, open_source(data), root / "run", quiet=True)
    trainer.start()
    trainer.train()
    paths = {"run": root / "run"}
    newest = Path("checkpoints") / "step-00000002"
    for name in ("run_damaged", "run_nan", "run_bad_seconds"):
        shutil.copytree(root / "run", root / name)
        paths[name] = root / name
    (paths["run_damaged"] / newest / "state.json").write_bytes(b"")
    marker = paths["run_bad_seconds"] / newest / "state.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "train_seconds": -5}))
    paths["run_bad_seconds_checkpoint"] = paths["run_bad_seconds"] / newest
    tensors = load_file(str(paths["run_nan"] / newest / "ema.safetensors"))
    first = next(iter(tensors))
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    save_file(tensors, str(paths["run_nan"] / newest / "ema.safetensors"))
    paths["run_nan_checkpoint"] = paths["run_nan"] / newest
    paths["run_damaged_checkpoint"] = paths["run_damaged"] / newest
    return paths


def _resume_copy(run: str, *extra: str) -> Callable[[dict[str, Path]], list[str]]:
    """Resume a copy of the run ``run`` made in the case's own output folder (the shared input stays as it is)."""

    def argv(p: dict[str, Path]) -> list[str]:
        import shutil

        shutil.copytree(p[run], p["out"] / "run")
        return ["--out", str(p["out"] / "run"), "--resume", "--quiet", *extra]

    return argv


# ----- the matrix ------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    command: str
    bad_input: str  # what is wrong, in words (the documentation's row)
    argv: Callable[[dict[str, Path]], list[str]]  # arguments after the command
    outcome: str  # "error", "accepted" or "accepted with a warning"
    expect: str  # words the one stderr line must contain (errors, warnings)


# Rows whose message is also checked in-process by a library test (test_sampling, test_inpainting,
# test_circular, test_likelihood, test_propagated): through the CLI they run with the slow tests, to keep the fast suite short.
ALSO_CHECKED_IN_PROCESS = {
    "inpaint-white-mask",
    "inpaint-black-mask",
    "inpaint-inverted-white-mask",
    "corrector-on-ode",
    "snr-zero",
    "grid-unknown",
    "rho-without-grid",
    "probes-zero",
    "nll-wrong-data",
    "phase-range-outside",
    "propagated-window",
    "propagated-anchor",
    "propagated-exact-strides",
}


def _forward(data: str, *extra: str) -> Callable[[dict[str, Path]], list[str]]:
    return lambda p: [
        "--data",
        str(p[data]),
        "--image-size",
        "8",
        "--num",
        "1",
        "--frames",
        "2",
        "--steps",
        "3",
        "--out",
        str(p["out"] / "forward.png"),
        *extra,
    ]


def _train(data: str, *extra: str) -> Callable[[dict[str, Path]], list[str]]:
    return lambda p: [
        "--data",
        str(p[data]),
        "--image-size",
        "16",
        "--preset",
        "tiny",
        "--train-steps",
        "1",
        "--out",
        str(p["out"] / "run"),
        "--quiet",
        *extra,
    ]


def _sample(checkpoint: str, *extra: str) -> Callable[[dict[str, Path]], list[str]]:
    return lambda p: ["--checkpoint", str(p[checkpoint]), "--num", "2", "--out", str(p["out"] / "samples.png"), *extra]


def _train_angles(data: str, *extra: str) -> Callable[[dict[str, Path]], list[str]]:
    return lambda p: [
        "--data",
        f"angles:{p[data]}",
        "--preset",
        "tiny",
        "--train-steps",
        "1",
        "--out",
        str(p["out"] / "run"),
        "--quiet",
        *extra,
    ]


def _train_flows(data: str, *extra: str) -> Callable[[dict[str, Path]], list[str]]:
    return lambda p: [
        "--data",
        f"flows:{p[data]}",
        "--preset",
        "tiny",
        "--steps",
        "6",
        "--train-steps",
        "1",
        "--out",
        str(p["out"] / "run"),
        "--quiet",
        *extra,
    ]


CASES = [
    # data folders
    Case(
        "missing-path", "train", "data path that does not exist", _train("missing"), "error", "no such file or folder"
    ),
    Case("file-not-folder", "train", "data path is a plain file", _train("a_file"), "error", "not a folder of images"),
    Case("empty-folder", "train", "empty folder", _train("empty"), "error", "folder is empty"),
    Case("no-images", "forward", "folder without image files", _forward("no_images"), "error", "no images found"),
    Case(
        "zero-byte", "train", "zero-byte .png among good images", _train("zero_byte"), "error", "empty file (0 bytes)"
    ),
    Case("truncated", "forward", "truncated .png", _forward("truncated"), "error", "cannot decode image"),
    Case("not-an-image", "forward", "text file named .jpg", _forward("not_image"), "error", "cannot decode image"),
    Case(
        "decompression-bomb",
        "forward",
        "PNG declaring 60000×60000 pixels (checked from the header, nothing decoded)",
        _forward("huge"),
        "error",
        "more than the limit of 89,478,485",
    ),
    Case(
        "over-pixel-limit",
        "forward",
        "120×120 image with --max-image-pixels 10000",
        _forward("big", "--max-image-pixels", "10000"),
        "error",
        "if you trust it raise --max-image-pixels 14400",
    ),
    Case(
        "pixel-limit-raised",
        "forward",
        "120×120 image with --max-image-pixels 20000",
        _forward("big", "--max-image-pixels", "20000"),
        "accepted",
        "",
    ),
    Case(
        "dangling-symlink",
        "forward",
        "a dangling symlink among good images",
        _forward("links"),
        "error",
        "dangling.png: cannot open (No such file or directory)",
    ),
    Case(
        "skip-symlinks",
        "forward",
        "a dangling symlink and a symlink loop, --on-bad-image skip",
        _forward("links", "--on-bad-image", "skip"),
        "accepted with a warning",
        "skipped 3 of 6",
    ),
    Case(
        "lazy-skip-all-bad",
        "train",
        "--lazy --on-bad-image skip on a folder where no file decodes",
        _train("all_bad", "--lazy", "--on-bad-image", "skip"),
        "error",
        "is usable",
    ),
    Case(
        "too-small",
        "forward",
        "4×4 image, --image-size 8",
        _forward("tiny"),
        "error",
        "smaller than --image-size 8 on its shorter side; use --image-size",
    ),
    Case("sixteen-bit", "forward", "16-bit greyscale PNG", _forward("sixteen_bit"), "accepted", ""),
    Case("cmyk", "forward", "CMYK JPEG", _forward("cmyk"), "accepted", ""),
    Case("palette", "forward", "palette (P mode) PNG", _forward("palette"), "accepted", ""),
    Case("animated-gif", "forward", "animated GIF (first frame used)", _forward("animated"), "accepted", ""),
    Case(
        "mixed-modes",
        "forward",
        "grey, RGB, RGBA, grey+alpha and palette images in one folder",
        _forward("mixed"),
        "accepted",
        "",
    ),
    Case(
        "skip-bad",
        "forward",
        "2 broken files among 3 good, --on-bad-image skip",
        _forward("partly_bad", "--on-bad-image", "skip"),
        "accepted with a warning",
        "skipped 2 of 5",
    ),
    Case(
        "skip-all-bad",
        "forward",
        "only broken files, --on-bad-image skip",
        _forward("all_bad", "--on-bad-image", "skip"),
        "error",
        "is usable",
    ),
    Case(
        "bad-fake-folder",
        "evaluate",
        "--fake folder that is empty",
        lambda p: ["--real", "textures", "--fake", str(p["empty"]), "--json", str(p["out"] / "metrics.json")],
        "error",
        "folder is empty",
    ),
    Case(
        "from-data-missing",
        "sample",
        "--from-data folder that does not exist",
        _sample("model", "--from-data", "/nonexistent/prints"),
        "error",
        "no such file or folder",
    ),
    # checkpoints
    Case(
        "checkpoint-missing",
        "sample",
        "checkpoint path that does not exist",
        _sample("missing"),
        "error",
        "no such checkpoint",
    ),
    Case(
        "checkpoint-no-weights",
        "sample",
        "model.safetensors renamed away",
        _sample("ckpt_no_weights"),
        "error",
        "no model.safetensors",
    ),
    Case("checkpoint-no-config", "sample", "config.json deleted", _sample("ckpt_no_config"), "error", "config.json"),
    Case(
        "checkpoint-cut",
        "sample",
        "safetensors file cut in half",
        _sample("ckpt_cut"),
        "error",
        "not a readable safetensors file",
    ),
    Case(
        "checkpoint-other-config",
        "sample",
        "config.json of another model beside the weights",
        _sample("ckpt_other_config"),
        "error",
        "weights do not match",
    ),
    Case(
        "checkpoint-unknown-key",
        "info",
        "config.json with an unknown key",
        lambda p: [str(p["ckpt_unknown_key"])],
        "error",
        "unknown key(s) stepz",
    ),
    Case(
        "checkpoint-ill-typed",
        "sample",
        "config.json with a string where a number belongs",
        _sample("ckpt_ill_typed"),
        "error",
        "steps",
    ),
    Case(
        "checkpoint-bad-json",
        "sample",
        "config.json that is not valid JSON",
        _sample("ckpt_bad_json"),
        "error",
        "config.json",
    ),
    Case(
        "checkpoint-nan-weights",
        "sample",
        "a checkpoint whose EMA weights hold NaN",
        _sample("run_nan_checkpoint"),
        "error",
        "holds NaN or infinite values",
    ),
    Case(
        "run-nan-newest",
        "sample",
        "a run folder whose newest checkpoint holds NaN weights: the one before is used",
        _sample("run_nan"),
        "accepted with a warning",
        "skipped a damaged checkpoint",
    ),
    Case(
        "checkpoint-damaged-state",
        "info",
        "a training checkpoint with a zero-byte state.json",
        lambda p: [str(p["run_damaged_checkpoint"])],
        "error",
        "state.json: not valid JSON",
    ),
    Case(
        "checkpoint-pickle",
        "sample",
        "a pickle payload saved as model.safetensors (never executed)",
        _sample("ckpt_pickle_weights"),
        "error",
        "not a readable safetensors file",
    ),
    Case(
        "pickle-beside",
        "sample",
        "a pickle file beside good weights (ignored, never executed)",
        _sample("ckpt_pickle_beside"),
        "accepted",
        "",
    ),
    Case(
        "inpaint-without-mask",
        "sample",
        "--inpaint without --mask",
        _sample("model", "--inpaint", "x.png"),
        "error",
        "--inpaint and --mask go together",
    ),
    Case(
        "inpaint-mask-size",
        "sample",
        "mask of another size than the image",
        lambda p: (
            _sample("model")(p)
            + ["--inpaint", str(p["inpaint"] / "image.png"), "--mask", str(p["inpaint"] / "short_mask.png")]
        ),
        "error",
        "mask is 20x16 pixels but",
    ),
    Case(
        "inpaint-soft-mask",
        "sample",
        "mask with grey (anti-aliased) pixels: thresholded at 50 %",
        lambda p: (
            _sample("model")(p)
            + ["--inpaint", str(p["inpaint"] / "image.png"), "--mask", str(p["inpaint"] / "soft_mask.png")]
        ),
        "accepted with a warning",
        "3 mask pixel(s) are neither black nor white",
    ),
    Case(
        "inpaint-white-mask",
        "sample",
        "all-white mask: nothing of the image is kept",
        lambda p: (
            _sample("model")(p)
            + [
                "--inpaint",
                str(p["inpaint"] / "image.png"),
                "--mask",
                str(p["inpaint"] / "white_mask.png"),
                "--nfe",
                "2",
            ]
        ),
        "accepted with a warning",
        "mask is all 1 (white = fill): nothing of the images is kept",
    ),
    Case(
        "inpaint-black-mask",
        "sample",
        "all-black mask: nothing to fill",
        lambda p: (
            _sample("model")(p)
            + [
                "--inpaint",
                str(p["inpaint"] / "image.png"),
                "--mask",
                str(p["inpaint"] / "black_mask.png"),
                "--nfe",
                "2",
            ]
        ),
        "accepted with a warning",
        "mask is all 0 (black = keep): there is nothing to fill",
    ),
    Case(
        "inpaint-inverted-white-mask",
        "sample",
        "all-white mask with --invert-mask (RePaint's convention): nothing to fill",
        lambda p: (
            _sample("model")(p)
            + [
                "--inpaint",
                str(p["inpaint"] / "image.png"),
                "--mask",
                str(p["inpaint"] / "white_mask.png"),
                "--invert-mask",
                "--nfe",
                "2",
            ]
        ),
        "accepted with a warning",
        "there is nothing to fill",
    ),
    Case(
        "invert-mask-without-mask",
        "sample",
        "--invert-mask without --mask",
        _sample("model", "--invert-mask"),
        "error",
        "--invert-mask needs --mask",
    ),
    Case(
        "inpaint-missing-image",
        "sample",
        "--inpaint image that does not exist",
        lambda p: (
            _sample("model")(p)
            + ["--inpaint", str(p["inpaint"] / "nope.png"), "--mask", str(p["inpaint"] / "mask.png")]
        ),
        "error",
        "no such image file",
    ),
    Case(
        "class-unknown",
        "sample",
        "--class that the checkpoint does not know",
        _sample("class_model", "--class", "arches"),
        "error",
        "unknown class 'arches'; this model knows loops, whorls",
    ),
    Case(
        "class-unconditional",
        "sample",
        "--class on an unconditional checkpoint",
        _sample("model", "--class", "loops"),
        "error",
        "not class-conditional",
    ),
    Case(
        "guidance-without-class",
        "sample",
        "--guidance without --class",
        _sample("model", "--guidance", "3"),
        "error",
        "guidance needs a class",
    ),
    Case(
        "classes-embedded-data",
        "train",
        "--classes with the embedded textures",
        lambda p: _train("good")(p)[2:] + ["--data", "textures", "--classes"],
        "error",
        "has no classes",
    ),
    Case(
        "classes-loose-images",
        "train",
        "--classes on a folder whose images are not in class subfolders",
        _train("good", "--classes"),
        "error",
        "is not inside a class subfolder",
    ),
    Case(
        "clip-on-kuramoto",
        "sample",
        "--clip-denoised on a Kuramoto model",
        _sample("model", "--clip-denoised"),
        "error",
        "--clip-denoised is for Euclidean models",
    ),
    Case(
        "flows-odd-size",
        "flows",
        "flows generate --size 33",
        lambda p: ["generate", "--out", str(p["out"] / "flows"), "--num", "1", "--size", "33", "--quiet"],
        "error",
        "33",
    ),
    Case(
        "flows-out-under-a-file",
        "flows",
        "flows generate --out inside a plain file",
        lambda p: ["generate", "--out", str(p["a_file"] / "flows"), "--num", "1", "--size", "16", "--quiet"],
        "error",
        "a_file.txt",
    ),
    Case(
        "out-not-run-folder",
        "train",
        "--out a folder of other files (not a run)",
        lambda p: _train("good")(p)[:-3] + ["--out", str(p["foreign"])],
        "error",
        "is not empty and not a run folder",
    ),
    Case(
        "out-inside-data",
        "train",
        "--out inside the --data folder",
        lambda p: _train("good")(p)[:-3] + ["--out", str(p["good"] / "run")],
        "error",
        "is inside the --data folder",
    ),
    Case(
        "out-dir-other-model",
        "sample",
        "--out-dir made by another model (its manifest differs)",
        lambda p: _sample("model")(p) + ["--out-dir", str(p["sampled_other"])],
        "error",
        "its images were made with another model",
    ),
    Case(
        "out-dir-unknown-images",
        "sample",
        "--out-dir holding numbered images but no manifest",
        lambda p: _sample("model")(p) + ["--out-dir", str(p["sampled_unknown"])],
        "error",
        "no sample-manifest.json",
    ),
    Case(
        "resume-nothing",
        "train",
        "--resume on a folder without checkpoints",
        lambda p: ["--resume", "--out", str(p["empty"]), "--quiet"],
        "error",
        "no complete checkpoint",
    ),
    Case(
        "resume-damaged-newest",
        "train",
        "--resume when the newest checkpoint is damaged (a zero-byte state.json)",
        _resume_copy("run_damaged"),
        "accepted with a warning",
        "skipped a damaged checkpoint",
    ),
    Case(
        "resume-from-damaged",
        "train",
        "--resume-from a damaged checkpoint",
        lambda p: ["--out", str(p["run_damaged"]), "--resume-from", str(p["run_damaged_checkpoint"])],
        "error",
        "state.json: not valid JSON",
    ),
    Case(
        "resume-from-bad-seconds",
        "train",
        "--resume-from a checkpoint whose state.json says train_seconds -5",
        lambda p: ["--out", str(p["run_bad_seconds"]), "--resume-from", str(p["run_bad_seconds_checkpoint"])],
        "error",
        "'train_seconds' is -5, not a finite number ≥ 0",
    ),
    Case(
        "resume-disagreeing-options",
        "train",
        "--resume with --lr and --batch-size other than the run's",
        lambda p: ["--out", str(p["run"]), "--resume", "--lr", "1e-3", "--batch-size", "2"],
        "error",
        "--batch-size 2 (the run: 4); --lr 0.001 (the run: 0.0002)",
    ),
    Case(
        "resume-below-step",
        "train",
        "--resume with --train-steps below the run's step",
        lambda p: ["--out", str(p["run"]), "--resume", "--train-steps", "1"],
        "error",
        "--train-steps 1 is below the step 2",
    ),
    Case(
        "resume-other-data",
        "train",
        "--resume with --data other than the run's",
        lambda p: ["--out", str(p["run"]), "--resume", "--data", "fingerprints"],
        "error",
        "was trained on 'textures'",
    ),
    # options
    Case("draws-cap", "train", "--draws 1000000", _train("good", "--draws", "1000000"), "error", "must be ≤ 4,096"),
    Case(
        "batch-estimate",
        "train",
        "--batch-size 1000000 × --draws 1000",
        _train("good", "--batch-size", "1000000", "--draws", "1000"),
        "error",
        "more than the cap of 268,435,456",
    ),
    Case(
        "sample-num-cap",
        "sample",
        "--num 100000000",
        _sample("model", "--num", "100000000"),
        "error",
        "must be ≤ 10,000,000",
    ),
    Case(
        "sample-batch-estimate",
        "sample",
        "--num and --batch-size 2000000",
        _sample("model", "--num", "2000000", "--batch-size", "2000000"),
        "error",
        "lower --batch-size",
    ),
    Case(
        "sample-held-estimate",
        "sample",
        "--num 9000000 held in memory (no --out-dir)",
        _sample("model", "--num", "9000000"),
        "error",
        "write images in chunks with --out-dir",
    ),
    Case(
        "corrector-cap",
        "sample",
        "--corrector-steps 1000",
        _sample("model", "--sampler", "pc", "--corrector-steps", "1000"),
        "error",
        "must be ≤ 100",
    ),
    Case("resample-cap", "sample", "--resample 1000", _sample("model", "--resample", "1000"), "error", "must be ≤ 100"),
    Case(
        "forward-frames-cap", "forward", "--frames 1000", _forward("good", "--frames", "1000"), "error", "must be ≤ 100"
    ),
    Case(
        "evaluate-num-estimate",
        "evaluate",
        "--num 9000000 (real and generated sets held together)",
        lambda p: ["--checkpoint", str(p["model"]), "--num", "9000000", "--json", str(p["out"] / "metrics.json")],
        "error",
        "lower --num",
    ),
    Case(
        "flows-frames-estimate",
        "flows",
        "flows generate --frames 100000",
        lambda p: ["generate", "--out", str(p["out"] / "flows"), "--num", "1", "--frames", "100000", "--quiet"],
        "error",
        "lower --frames or --size",
    ),
    Case("num-zero", "sample", "--num 0", _sample("model", "--num", "0"), "error", "must be ≥ 1"),
    Case("num-text", "sample", "--num abc", _sample("model", "--num", "abc"), "error", "expected a whole number"),
    Case("nfe-negative", "sample", "--nfe -3", _sample("model", "--nfe", "-3"), "error", "must be ≥ 1"),
    Case(
        "sampler-unknown", "sample", "--sampler ddpm", _sample("model", "--sampler", "ddpm"), "error", "invalid choice"
    ),
    Case(
        "probes-zero",
        "evaluate",
        "--nll --probes 0",
        lambda p: ["--nll", "--checkpoint", str(p["model"]), "--probes", "0"],
        "error",
        "must be ≥ 1",
    ),
    Case(
        "probes-without-nll",
        "evaluate",
        "--probes without --nll",
        lambda p: ["--checkpoint", str(p["model"]), "--probes", "4"],
        "error",
        "--probes sets Hutchinson's estimator of --nll",
    ),
    Case(
        "nll-wrong-data",
        "evaluate",
        "--nll of an image model on angle data",
        lambda p: ["--nll", "--checkpoint", str(p["model"]), "--real", "torus:wrapped-mixture"],
        "error",
        "is an image model; --real must be images",
    ),
    Case(
        "corrector-on-ode",
        "sample",
        "--corrector-steps with --sampler ode (no corrector)",
        _sample("model", "--sampler", "ode", "--corrector-steps", "2"),
        "error",
        "the ode sampler has no corrector",
    ),
    Case(
        "snr-zero",
        "sample",
        "--snr 0",
        _sample("model", "--sampler", "pc", "--snr", "0"),
        "error",
        "must be a finite number > 0",
    ),
    Case("grid-unknown", "sample", "--grid log", _sample("model", "--grid", "log"), "error", "invalid choice: 'log'"),
    Case(
        "rho-without-grid",
        "sample",
        "--rho without --grid rho",
        _sample("model", "--rho", "3"),
        "error",
        "--rho sets the exponent of --grid rho",
    ),
    Case(
        "start-step-alone",
        "sample",
        "--start-step without --from-data",
        _sample("model", "--start-step", "3"),
        "error",
        "--start-step needs --from-data",
    ),
    Case(
        "start-step-too-large",
        "sample",
        "--start-step beyond T",
        _sample("model", "--from-data", "textures", "--start-step", "99"),
        "error",
        "--start-step must be in 1…6",
    ),
    Case(
        "phase-range-outside",
        "train",
        "--phase-range 1 (θ = π·x: black and white would meet)",
        _train("good", "--phase-range", "1"),
        "error",
        "must be in (0, 1) (a fraction of π)",
    ),
    Case(
        "phase-range-euclidean",
        "train",
        "--phase-range with --process euclidean",
        _train("good", "--process", "euclidean", "--phase-range", "0.5"),
        "error",
        "--phase-range sets the image encoding of the Kuramoto processes",
    ),
    Case(
        "coupling-range-negative",
        "train",
        "--coupling-range with a negative value",
        _train("good", "--coupling-range", "-0.001", "0.03"),
        "error",
        "argument --coupling-range: must be a finite number ≥ 0",
    ),
    Case(
        "coupling-range-nan",
        "train",
        "--coupling-range with a non-finite value",
        _train("good", "--coupling-range", "0", "nan"),
        "error",
        "argument --coupling-range: must be a finite number ≥ 0",
    ),
    Case(
        "ref-strength-negative",
        "train",
        "--ref-strength < 0 (κ_ref)",
        _train("good", "--ref-strength", "-0.5"),
        "error",
        "argument --ref-strength: must be a finite number ≥ 0",
    ),
    Case(
        "relax-steps-negative",
        "train",
        "--prior-relax-steps < 0",
        _train("good", "--prior", "relaxed", "--prior-relax-steps", "-5"),
        "error",
        "argument --prior-relax-steps: must be ≥ 0",
    ),
    Case(
        "relax-steps-without-relaxed",
        "train",
        "--prior-relax-steps without --prior relaxed",
        _train("good", "--prior-relax-steps", "50"),
        "error",
        "add --prior relaxed or drop --prior-relax-steps",
    ),
    Case(
        "prior-auto-unfitted",
        "train",
        "--prior auto with --no-fit-prior",
        _train("good", "--prior", "auto", "--no-fit-prior"),
        "error",
        "--prior auto chooses the prior at the prior fit, which --no-fit-prior turns off",
    ),
    Case(
        "prior-euclidean",
        "train",
        "--prior with --process euclidean",
        _train("good", "--process", "euclidean", "--prior", "relaxed"),
        "error",
        "--prior set(s) the Kuramoto coupling or prior",
    ),
    Case(
        "nll-relaxed-prior",
        "evaluate",
        "--nll of a model whose prior (relaxed) has no closed-form density",
        lambda p: ["--nll", "--checkpoint", str(p["relaxed_model"]), "--real", "textures", "--num", "2"],
        "error",
        "has no closed-form density, which --nll needs; retrain it with --prior von-mises",
    ),
    Case(
        "regime-euclidean",
        "train",
        "a Kuramoto regime option with --process euclidean",
        _train("good", "--process", "euclidean", "--ref-strength", "0.5"),
        "error",
        "--ref-strength set(s) the Kuramoto coupling",
    ),
    Case(
        "unit-norm-no-coupling",
        "train",
        "--coupling-norm unit with --process kuramoto-none",
        _train("good", "--process", "kuramoto-none", "--coupling-norm", "unit"),
        "error",
        "--process kuramoto-none has none",
    ),
    Case(
        "image-size-small",
        "train",
        "--image-size 4",
        _train("good", "--image-size", "4"),
        "error",
        "must be ≥ 8 pixels",
    ),
    Case("lr-nan", "train", "--lr nan", _train("good", "--lr", "nan"), "error", "finite number > 0"),
    Case(
        "ema-out-of-range",
        "train",
        "--ema-decay 1.5",
        _train("good", "--ema-decay", "1.5"),
        "error",
        "must be in [0, 1)",
    ),
    Case(
        "objective-unknown",
        "train",
        "--objective ddpm",
        _train("good", "--objective", "ddpm"),
        "error",
        "invalid choice",
    ),
    Case(
        "objective-exact-strides",
        "train",
        "--objective linearised with --process euclidean",
        _train("good", "--objective", "linearised", "--process", "euclidean"),
        "error",
        "strides are already exact",
    ),
    Case(
        "antithetic-odd-draws",
        "train",
        "--objective antithetic with one draw",
        _train("good", "--objective", "antithetic"),
        "error",
        "draws must be even",
    ),
    Case(
        "propagated-window",
        "train",
        "--objective propagated with --window 10",
        _train("good", "--objective", "propagated", "--window", "10"),
        "error",
        "use window 1 (or 0)",
    ),
    Case(
        "propagated-anchor",
        "train",
        "--objective propagated with --anchor 25",
        _train("good", "--objective", "propagated", "--anchor", "25"),
        "error",
        "use anchor 0",
    ),
    Case(
        "propagated-exact-strides",
        "train",
        "--objective propagated with --process euclidean",
        _train("good", "--objective", "propagated", "--process", "euclidean"),
        "error",
        "strides are already exact",
    ),
    Case(
        "anchor-longer-than-T",
        "train",
        "--anchor 200 with T = 100",
        _train("good", "--anchor", "200"),
        "error",
        "anchor horizon 200 is longer",
    ),
    Case(
        "window-longer-than-T",
        "train",
        "--window 200 with T = 100",
        _train("good", "--window", "200"),
        "error",
        "longer than the process's T = 100",
    ),
    Case(
        "neighbourhood-too-large",
        "train",
        "--neighbourhood 40 on 16-px images",
        _train("good", "--neighbourhood", "40"),
        "error",
        "neighbourhood 40 is larger",
    ),
    Case(
        "out-under-a-file",
        "train",
        "--out inside a plain file",
        lambda p: _train("good")(p)[:-3] + ["--out", str(p["a_file"] / "run")],
        "error",
        "a_file.txt",
    ),
    Case(
        "inception-missing",
        "evaluate",
        "--inception-weights file that does not exist",
        lambda p: [
            "--real",
            "textures",
            "--fake",
            str(p["good"]),
            "--image-size",
            "16",
            "--num",
            "4",
            "--inception-weights",
            str(p["out"] / "nope.pt"),
            "--json",
            str(p["out"] / "metrics.json"),
        ],
        "error",
        "inception",
    ),
    # angle data (angles:FILE)
    Case(
        "angles-missing", "train", "angles:FILE that does not exist", _train_angles("missing"), "error", "no such file"
    ),
    Case(
        "angles-extension",
        "train",
        "angle file named .txt",
        _train_angles("angles_angles"),
        "error",
        "unknown extension '.txt'",
    ),
    Case(
        "angles-nan",
        "train",
        "NaN in an angle CSV",
        _train_angles("angles_nan"),
        "error",
        "value nan at row 2, column 2",
    ),
    Case(
        "angles-text-cell",
        "train",
        "a word in a cell of an angle CSV",
        _train_angles("angles_text_cell"),
        "error",
        "line 3, column 2: 'beta' is not a number",
    ),
    Case(
        "angles-3d",
        "train",
        ".npy array of shape (4, 2, 2)",
        _train_angles("angles_three_d"),
        "error",
        "expected (N, D)",
    ),
    Case(
        "angles-one-row",
        "train",
        "angle file with a single row",
        _train_angles("angles_one_row"),
        "error",
        "at least 2 examples",
    ),
    Case(
        "angles-degrees-as-radians",
        "train",
        "degrees read as radians (no --degrees)",
        _train_angles("angles_degrees"),
        "error",
        "if the file holds degrees, pass --degrees",
    ),
    Case(
        "angles-pickle",
        "train",
        ".npy of pickled Python objects (never executed)",
        _train_angles("angles_pickle"),
        "error",
        "never done",
    ),
    Case(
        "angles-local",
        "train",
        "--process kuramoto-local on angle data",
        _train_angles("angles_degrees", "--degrees", "--process", "kuramoto-local"),
        "error",
        "use --process kuramoto-global",
    ),
    Case(
        "angles-paper-preset",
        "train",
        "--preset paper-cifar on angle data",
        _train_angles("angles_degrees", "--degrees", "--preset", "paper-cifar"),
        "error",
        "not an MLP size",
    ),
    Case(
        "angles-without-prefix",
        "train",
        "an angle .csv passed as --data FILE (no angles:)",
        lambda p: ["--data", str(p["angles_degrees"]), "--out", str(p["out"] / "run"), "--quiet"],
        "error",
        "pass the data as angles:",
    ),
    Case(
        "degrees-on-images",
        "train",
        "--degrees with image data",
        _train("good", "--degrees"),
        "error",
        "degrees applies to angle data",
    ),
    Case(
        "torus-unknown",
        "train",
        "torus:NAME that does not exist",
        lambda p: ["--data", "torus:donut", "--out", str(p["out"] / "run"), "--quiet"],
        "error",
        "valid names are",
    ),
    Case(
        "angle-model-png",
        "sample",
        "--out samples.png for an angle model",
        _sample("angle_model"),
        "error",
        "writes its samples as .csv or .npy",
    ),
    Case(
        "angle-model-out-dir",
        "sample",
        "--out-dir (image files) for an angle model",
        _sample("angle_model", "--out-dir", "/nonexistent/single"),
        "error",
        "--out-dir applies to image models",
    ),
    Case(
        "image-model-plot",
        "sample",
        "--out-plot (angle histograms) for an image model",
        _sample("model", "--out-plot", "p.png"),
        "error",
        "--out-plot draws angle data",
    ),
    Case(
        "image-model-npy-name",
        "sample",
        "--out-npy file not named .npy",
        _sample("model", "--out-npy", "images.csv"),
        "error",
        "--out-npy writes a NumPy .npy file",
    ),
    # flows
    Case(
        "flows-nan",
        "train",
        "flows:FOLDER whose velocity holds a NaN",
        _train_flows("flows_nan"),
        "error",
        "holds NaN or infinite values",
    ),
    Case(
        "flows-npz-huge",
        "train",
        "flows .npz whose header declares 100000×2×1024×1024 floats (nothing decompressed)",
        _train_flows("flows_huge"),
        "error",
        "more than the limit of 4.00 GiB",
    ),
    Case(
        "flows-kuramoto-local",
        "train",
        "--process kuramoto-local on flow data",
        _train_flows("flows", "--process", "kuramoto-local"),
        "error",
        "does not model flows",
    ),
    Case(
        "flows-classes",
        "train",
        "--classes on flow data",
        _train_flows("flows", "--classes"),
        "error",
        "flow data has no classes",
    ),
    Case(
        "phase-amplitude-on-images",
        "train",
        "--process phase-amplitude on images",
        _train("good", "--process", "phase-amplitude"),
        "error",
        "pass --data flows:PATH",
    ),
    Case(
        "flow-model-png",
        "sample",
        "--out samples.png for a flow model",
        _sample("flow_model"),
        "error",
        "writes its samples as .npz",
    ),
    Case(
        "flow-model-inpaint",
        "sample",
        "--inpaint for a flow model",
        _sample("flow_model", "--inpaint", "x.png", "--mask", "m.png"),
        "error",
        "--inpaint applies to image models",
    ),
    Case(
        "flows-real-image-model",
        "evaluate",
        "--real flows:… with an image model's --checkpoint",
        lambda p: [
            "--real",
            f"flows:{p['flows']}",
            "--real-split",
            "all",
            "--checkpoint",
            str(p["model"]),
            "--json",
            str(p["out"] / "metrics.json"),
        ],
        "error",
        "needs a flow model",
    ),
]

# Where each command writes: no such file may exist after an error.
OUTPUTS = {
    "flows": "flows",
    "forward": "forward.png",
    "train": "run",
    "sample": "samples.png",
    "evaluate": "metrics.json",
    "info": "-",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = {**_make_folders(root / "data"), **_make_checkpoints(root / "checkpoints")}
    paths["missing"] = root / "does-not-exist"
    return paths


@pytest.fixture(scope="module")
def cli() -> ForkingCLI:
    """The real CLI, one process per command, forked from one interpreter that imported the package once."""
    return shared_cli()


@pytest.mark.parametrize(
    "case",
    [pytest.param(case, marks=pytest.mark.slow) if case.id in ALSO_CHECKED_IN_PROCESS else case for case in CASES],
    ids=[case.id for case in CASES],
)
def test_bad_input(case: Case, inputs: dict[str, Path], tmp_path: Path, cli: ForkingCLI) -> None:
    paths = {**inputs, "out": tmp_path / "out"}
    paths["out"].mkdir()
    result = cli.run([case.command, *case.argv(paths)])
    # The models here are trained for a step or two, so sample's warning that they are probably undertrained (their
    # clipped share) is right and says nothing about the input under test.
    stderr_lines = [line for line in result.stderr.splitlines() if line.strip() and "probably undertrained" not in line]
    assert "Traceback" not in result.stderr, result.stderr
    output = paths["out"] / OUTPUTS[case.command]
    assert result.returncode != 1, f"exit 1 is for bugs, not for bad input: {result.stderr}"
    if case.outcome == "error":
        assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
        assert len(stderr_lines) == 1, result.stderr
        assert case.expect in stderr_lines[0], stderr_lines[0]
        assert not output.exists(), f"{output} was left behind"
        assert not any(paths["out"].iterdir()), list(paths["out"].iterdir())
    else:
        assert result.returncode == 0, result.stderr
        if case.command != "info":
            assert output.exists()
        if case.outcome == "accepted":
            assert stderr_lines == [], result.stderr
        else:
            assert len(stderr_lines) == 1 and "warning" in stderr_lines[0] and case.expect in stderr_lines[0], (
                result.stderr
            )
    assert not inputs["pickle_marker"].exists(), "a pickle payload was executed"


def test_debug_shows_the_traceback(inputs: dict[str, Path], tmp_path: Path, cli: ForkingCLI) -> None:
    result = cli.run(["sample", "--checkpoint", str(inputs["ckpt_cut"]), "--out", str(tmp_path / "x.png"), "--debug"])
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_no_unpickling_anywhere_in_the_package() -> None:
    """No import of a pickle-based module, no torch.load and no allow_pickle other than False anywhere in src/."""
    import ast

    banned_modules = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
    found = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [f"{path}: import {a.name}" for a in node.names if a.name.split(".")[0] in banned_modules]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in banned_modules:
                found.append(f"{path}: from {node.module} import")
            elif (
                isinstance(node, ast.Attribute)
                and node.attr == "load"
                and isinstance(node.value, ast.Name)
                and node.value.id == "torch"
            ):
                found.append(f"{path}:{node.lineno}: torch.load")
            elif (
                isinstance(node, ast.keyword)
                and node.arg == "allow_pickle"
                and not (isinstance(node.value, ast.Constant) and node.value.value is False)
            ):
                found.append(f"{path}:{node.lineno}: allow_pickle")
    assert found == []


# ----- the generated documentation ---------------------------------------------------------------
def robustness_markdown() -> str:
    lines = [
        "# Robustness: what each command does with bad input",
        "",
        "Generated from `tests/app/test_bad_inputs.py` (`python tests/app/test_bad_inputs.py`); the test suite",
        "fails when this file and the tests disagree. Every row is run through the real command line",
        "in its own process. An **error** exits with status 2 and exactly one line on stderr (no Python",
        "traceback unless `--debug`) and leaves no output behind; **accepted** exits 0 and writes its",
        "output; **accepted with a warning** exits 0 and prints one warning line (with the count).",
        "",
        "| command | input | outcome | the message contains |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        expect = f"`{case.expect}`" if case.expect else ""
        lines.append(f"| {case.command} | {case.bad_input} | {case.outcome} | {expect} |")
    lines += [
        "",
        "Decisions:",
        "",
        "- A file in an image folder that cannot be used (empty, truncated, not an image, a",
        "  decompression bomb, smaller than `--image-size`) stops the command by default",
        "  (`--on-bad-image error`); `--on-bad-image skip` leaves such files out with one warning",
        "  that gives the count and the first file, and stops only if nothing usable is left.",
        "- An image file whose header declares more than `--max-image-pixels` pixels (default Pillow's",
        "  89,478,485, about 0.25 GiB as 8-bit RGB) is refused before it is decoded, naming the file and the",
        "  value to pass if the file is trusted (`max_image_pixels=` in the Python API). A path that cannot be",
        "  opened (a dangling symlink, a symlink loop) counts as a bad file. `train --lazy --on-bad-image skip`",
        "  tries each file at most once and stops with one line when no file of the split decodes.",
        "- A flow `.npz` is checked from its array header before anything is decompressed: its `velocity`",
        "  arrays may take at most 4 GiB as float32 together (`FlowSource(max_bytes=...)`).",
        "- Options that multiply memory or work are capped when parsed (`--draws` ≤ 4,096, `--corrector-steps`",
        "  and `--resample` ≤ 100, `forward --num` ≤ 64 and `--frames` ≤ 100, `--num` ≤ 10,000,000), and the values",
        "  a command holds are estimated from the options before it starts: one batch through the network at",
        "  most 2^28 values (1 GiB as float32, before activations), results held until written at most 2^30",
        "  (4 GiB). Running out of memory anyway (Python's MemoryError or torch's allocation error) exits 2",
        "  with one line naming options of that command to lower.",
        "- `sample --out-dir DIR` writes `DIR/sample-manifest.json` (the checkpoint, a SHA-256 of the model's",
        "  config and weights, the seed, sampler, NFE, batch size and other settings). A rerun continues only",
        "  with the same model and settings (a larger `--num` is fine); otherwise it stops in one line naming",
        "  what differs. A folder of numbered images without a manifest is refused.",
        "- `train --out` of a new run refuses a non-empty folder that is not a run folder (visible entries other",
        "  than `config.json`, `checkpoints`, `samples`, `tensorboard`, or a `config.json` that is not a run's),",
        "  and a folder inside the `--data` image or flow folder.",
        "- Every write goes through a temporary `.NAME.tmp-PID` beside the file and a rename; a failure removes",
        "  the temporary file, and its error names the user's path.",
        "- An inpainting mask is white where to fill and black where to keep (diffusers, OpenCV, LaMa;",
        "  `--invert-mask` for RePaint's masks) and must have the image's size; grey mask pixels are",
        "  thresholded at 50 % (≥ 128 = white) with one warning; the Python API (`DiffusionModel.inpaint`)",
        "  is strict instead and rejects a mask that is not 0/1. A mask with nothing to keep or nothing",
        "  to fill is accepted with a warning that says what the result will be.",
        "- 16-bit images are scaled to 8 bits, alpha is dropped, palette and CMYK images are",
        "  converted, and animated images contribute their first frame.",
        "- Only safetensors and JSON are ever read from a checkpoint; other files there are ignored.",
        "- One writer per run folder: `train` holds an exclusive lock on `RUN/.lock` (the `filelock` library;",
        "  the kernel drops it when the process ends, kill -9 included, so a dead run never blocks a resume) for",
        "  the whole run; a second `train` on the same `--out` stops at once with exit 2, naming the holder's PID",
        "  and host (`RUN/.lock.json`). Under torchrun rank 0 holds it. A checkpoint is written under a name",
        "  unique to its process (`.tmp-step-N.HOST.PID`), and pruning removes only those of processes that",
        "  are gone (tests/training/test_run_folder.py).",
        "- A checkpoint is checked whole before it is used (every file parses; `state.json` has its step and,",
        "  if given, finite training seconds ≥ 0; every tensor is there with the config's shapes and is finite;",
        "  the optimizer state fits the weights; the generator states are there). `--resume` skips a damaged",
        "  newest checkpoint with one warning naming the file and the reason, and resumes from the newest",
        "  whole one; `--resume-from CHECKPOINT` chooses one. `sample`, `evaluate` and `info` on a run folder",
        "  do the same; on a checkpoint folder a NaN or infinite weight is an error.",
        "- `--resume` trains to the run's own target unless `--train-steps` is given, which extends the run",
        "  and is written into its `config.json`; a target below the run's step is an error. Options that",
        "  would change the model, the data or the arithmetic (`--lr`, `--batch-size`, `--preset`, `--process`,",
        "  `--image-size`, …) are refused in one line listing each with the run's value, unless equal to it;",
        "  `--checkpoint-every`, `--keep-checkpoints`, `--sample-every`, `--on-nan`, `--grad-accum`,",
        "  `--max-image-pixels` and `--device` apply. A run stores its data path absolute, so it resumes from",
        "  any folder, and `--data` naming the same place another way is accepted.",
        "- A full disk while a checkpoint is written (an OSError, or safetensors' own error) exits 2 naming",
        "  the file; the older checkpoints stay and no temporary file is left. A wrong type in any section of",
        "  a `config.json` names that one key and the type it needs.",
        "- SIGTERM or SIGINT (Ctrl-C) during `train` finishes the step, writes a checkpoint, prints",
        "  one line naming the step and how to continue, and exits with 143 or 130; under torchrun",
        "  every process stops after the same step. `sample --out-dir` stops after its current chunk.",
        "  Signals sent while that checkpoint is written are ignored (tests/training/test_stopping.py).",
        "",
    ]
    return "\n".join(lines)


def test_robustness_doc_is_current() -> None:
    assert DOC.read_text() == robustness_markdown(), "run: python tests/app/test_bad_inputs.py"


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(robustness_markdown())
    print(f"wrote {DOC}")
