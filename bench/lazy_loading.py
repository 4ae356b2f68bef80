"""Large image folders: start-up with and without the cached file index, and batch throughput of lazy decoding.

    python bench/lazy_loading.py [--files 3000] [--side 256] [--batch 64] [--workers 1 2 4]

Writes a folder of JPEG crops of scikit-image's photos (noise added so that no two files are equal) to a
temporary directory, then measures:

* start-up: opening ``LazyImageFolderSource`` with an empty index cache (lists the folder) and again with the
  cache written by the first opening (stats the directories only);
* throughput: training batches per second of lazy decoding with 1, 2, 4 decoding threads, as a ratio to one
  thread, beside ``ImageFolderSource`` (everything decoded into memory at start) and its start-up time;
* memory: the bytes of decoded pixels the in-memory source holds (the lazy source holds only paths).

Every ratio is against a reference measured in the same run. Writes bench/results/lazy_loading.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data as skdata

from common import print_table, write_json
from kuramoto_diffusion.data import ImageFolderSource, LazyImageFolderSource


def write_folder(folder: Path, files: int, side: int, seed: int) -> None:
    """``files`` JPEGs of ``side`` px in 10 subfolders: random crops of the photos plus noise."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(skdata, name)(), dtype=np.float32) for name in ("camera", "brick", "grass", "gravel")]
    photos = [p if p.ndim == 2 else p.mean(axis=2) for p in photos]
    for index in range(files):
        photo = photos[index % len(photos)]
        top, left = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        crop = photo[top : top + side, left : left + side] + rng.normal(0, 8, (side, side))
        sub = folder / f"part{index % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).save(sub / f"{index:06d}.jpg", quality=90)


def batches_per_second(source, batch: int, seconds: float = 4.0) -> float:  # noqa: ANN001 - any image source
    generator = torch.Generator().manual_seed(0)
    source.sample_batch(batch, generator)  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        source.sample_batch(batch, generator)
        count += 1
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", default="lazy_loading.json")
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder, cache = Path(scratch) / "images", Path(scratch) / "cache"
        start = time.perf_counter()
        write_folder(folder, args.files, args.side, seed=0)
        print(f"wrote {args.files} files in {time.perf_counter() - start:.0f} s", flush=True)

        def open_lazy(workers: int) -> tuple[LazyImageFolderSource, float]:
            begin = time.perf_counter()
            source = LazyImageFolderSource(folder, args.image_size, channels=1, workers=workers, index_cache=cache)
            return source, time.perf_counter() - begin

        _, cold = open_lazy(1)
        _, warm = open_lazy(1)
        rows.append({"what": "lazy start-up, no index cache", "seconds": cold, "ratio": 1.0})
        rows.append({"what": "lazy start-up, cached index", "seconds": warm, "ratio": warm / cold})
        reference = None
        for workers in args.workers:
            source, _ = open_lazy(workers)
            rate = batches_per_second(source, args.batch)
            reference = reference or rate
            rows.append(
                {
                    "what": f"lazy batches/s, {workers} thread(s)",
                    "seconds": 1 / rate,
                    "ratio": rate / reference,
                    "images_per_s": rate * args.batch,
                }
            )
        begin = time.perf_counter()
        eager = ImageFolderSource(folder, args.image_size, channels=1)
        eager_start = time.perf_counter() - begin
        held_mib = sum(image.nbytes for image in eager.images) / 2**20
        rate = batches_per_second(eager, args.batch)
        rows.append(
            {"what": "in-memory start-up (decodes every file)", "seconds": eager_start, "ratio": eager_start / cold}
        )
        rows.append(
            {
                "what": "in-memory batches/s",
                "seconds": 1 / rate,
                "ratio": rate / reference,
                "images_per_s": rate * args.batch,
            }
        )
        rows.append({"what": "decoded pixels held in memory (MiB)", "seconds": held_mib})
    print_table(rows, ["what", "seconds", "ratio", "images_per_s"])
    write_json(args.out, {"command": "python bench/lazy_loading.py", "settings": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
