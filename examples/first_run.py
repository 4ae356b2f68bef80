"""A first run on your own folder, as a new user would make it: the README's "first run".

    python examples/first_run.py [WORK_DIR]          (default runs/first-run)

1. Writes a folder of 300 stripe images, 32 px grey, of random orientation, period and phase (zebra-like):
   stand-in for your own folder.
2. Trains a Kuramoto-local model on it for 600 steps with ``--preset tiny`` (about 0.3 s a step on 2 free
   CPU cores: a few minutes).
3. Samples 64 images into WORK_DIR/samples.png and checks that the model says less than 1 % of the decoded
   values were clipped (an untrained model clips a large share: its samples are noise).

Each step is the command line you would type; the script prints it before running it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

IMAGES, SIZE, STEPS = 300, 32, 600
MAX_CLIPPED = 0.01


def write_stripes(folder: Path, count: int = IMAGES, size: int = SIZE, seed: int = 0) -> Path:
    """``count`` grey PNGs of sinusoidal stripes: orientation uniform, period 5–10 px, random phase and contrast."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    for index in range(count):
        angle, period = rng.uniform(0, np.pi), rng.uniform(5, 10)
        phase, contrast = rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 1.0)
        wave = np.sin(2 * np.pi * (x * np.cos(angle) + y * np.sin(angle)) / period + phase)
        Image.fromarray(np.rint(127.5 + 127.5 * contrast * wave).astype(np.uint8)).save(
            folder / f"stripe_{index:03d}.png"
        )
    return folder


def kuramoto_diffusion(*args: str, capture: bool = False) -> str:
    """Run ``kuramoto-diffusion ARGS`` (as ``python -m kuramoto_diffusion``), echoing it; with ``capture`` return its
    standard output (printed when it ends) instead of letting it through as it comes."""
    print("$ kuramoto-diffusion " + " ".join(args), flush=True)
    began = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "kuramoto_diffusion", *args], stdout=subprocess.PIPE if capture else None, text=True
    )
    print(result.stdout or "", end="", flush=True)
    if result.returncode != 0:
        raise SystemExit(f"the command failed with exit status {result.returncode}")
    print(f"  ({time.perf_counter() - began:.0f} s)", flush=True)
    return result.stdout or ""


def clipped_share(sample_output: str) -> float:
    """The share of decoded values clipped, from sample's message 'N of M values (p %) clipped at decode'."""
    found = re.search(r"(\d+) of (\d+) values \([0-9.]+ %\) clipped", sample_output)
    if found is None:
        raise SystemExit(f"sample did not report its clipped values:\n{sample_output}")
    return int(found.group(1)) / int(found.group(2))


def main(argv: list[str] | None = None) -> float:
    """Run the first run in WORK_DIR (argv[0]); return the clipped share of the samples."""
    argv = sys.argv[1:] if argv is None else argv
    work = Path(argv[0] if argv else "runs/first-run")
    data = write_stripes(work / "stripes")
    print(f"wrote {IMAGES} stripe images to {data}")
    run = work / "run"
    kuramoto_diffusion("train", "--data", str(data), "--preset", "tiny", "--train-steps", str(STEPS), "--out", str(run))
    output = kuramoto_diffusion(
        "sample", "--checkpoint", str(run), "--num", "64", "--out", str(work / "samples.png"), capture=True
    )
    share = clipped_share(output)
    assert share < MAX_CLIPPED, f"{100 * share:.2f} % of decoded values clipped (expected < {100 * MAX_CLIPPED:g} %)"
    print(
        f"first run done: {100 * share:.3f} % of decoded values clipped; samples in {work / 'samples.png'}, "
        f"TensorBoard: tensorboard --logdir {run / 'tensorboard'}"
    )
    return share


if __name__ == "__main__":
    main()
