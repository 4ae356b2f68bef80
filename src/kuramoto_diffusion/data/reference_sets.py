"""Disjoint sets of held-out real images, for scoring generated samples against several independent references.

A **crop window** is one ``image_size`` square of one base image at one (top, left) position; a flipped window
is the same window. ``disjoint_crop_sets`` splits the held-out windows into ``parts`` parts and draws each
set's crops, without replacement, from its own part only, so **no window is in two sets**:

- where the source has at least ``parts`` base images, the parts are disjoint sets of *base images* (a
  seeded shuffle dealt round-robin): sets share no image at all. Fingerprints and image folders are split
  this way.
- otherwise (the texture photos: 3 held-out strips) each base image's window positions are cut into
  ``parts`` contiguous bands of rows (of columns where the rows are too few): sets share no window, but
  windows near a band edge overlap windows of the neighbouring band by up to ``image_size − 1`` pixels.

More sets, or larger sets, than the held-out windows can fill raises ``UserError``. ``held_out_source`` opens
the held-out split; for the synthetic fingerprints it may extend it with further prints of the same seed,
which no split of the default set contains and so no model was trained on.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import UserError
from .images import InMemoryImageSource, crop_batch

if TYPE_CHECKING:
    from . import ImageSource


@dataclass(frozen=True)
class _Block:
    """The windows of one base image whose top-left lies in tops × lefts (half-open pixel ranges)."""

    image: int
    tops: tuple[int, int]
    lefts: tuple[int, int]

    @property
    def count(self) -> int:
        return (self.tops[1] - self.tops[0]) * (self.lefts[1] - self.lefts[0])


def in_memory(source: object) -> InMemoryImageSource:
    """``source`` where its images are held in memory, which disjoint reference sets need; else a UserError."""
    if not isinstance(source, InMemoryImageSource):
        raise UserError(
            f"{getattr(source, 'name', source)}: disjoint reference sets need a source held in memory "
            "(textures, fingerprints or an image folder opened without lazy loading)"
        )
    return source


def _images_of(source: object) -> Sequence[np.ndarray] | np.ndarray:
    return in_memory(source).images


def partition_windows(source: InMemoryImageSource, parts: int, seed: int = 0) -> list[list[_Block]]:
    """The held-out windows of ``source`` split into ``parts`` disjoint parts (module docstring)."""
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise UserError(f"the number of disjoint sets must be a positive integer, got {parts!r}")
    images = _images_of(source)
    size = source.image_size
    free = [(image.shape[0] - size + 1, image.shape[1] - size + 1) for image in images]
    result: list[list[_Block]] = [[] for _ in range(parts)]
    if len(images) >= parts:
        order = np.random.default_rng(seed).permutation(len(images))
        for slot, index in enumerate(order):
            rows, cols = free[int(index)]
            result[slot % parts].append(_Block(int(index), (0, rows), (0, cols)))
        return result
    for index, (rows, cols) in enumerate(free):
        along_rows = rows >= parts or rows >= cols
        bands = np.array_split(np.arange(rows if along_rows else cols), parts)
        for part, band in enumerate(bands):
            if len(band):
                span = (int(band[0]), int(band[-1]) + 1)
                result[part].append(_Block(index, span, (0, cols)) if along_rows else _Block(index, (0, rows), span))
    return result


def crop_capacity(source: InMemoryImageSource, parts: int, seed: int = 0) -> int:
    """The most distinct windows every one of ``parts`` disjoint sets can hold (the smallest part's count)."""
    return min(sum(block.count for block in part) for part in partition_windows(source, parts, seed))


def _draw(source: InMemoryImageSource, blocks: Sequence[_Block], size: int, rng: np.random.Generator) -> torch.Tensor:
    """``size`` crops of the windows in ``blocks``: distinct while there are enough, then each window again in a
    fresh random order (so no window is used twice before all are used once); random flips where the source flips."""
    counts = np.array([block.count for block in blocks])
    ends = np.cumsum(counts)
    total = int(ends[-1])
    rounds = -(-size // total)
    flat = np.concatenate([rng.choice(total, size=min(total, size - k * total), replace=False) for k in range(rounds)])
    which = np.searchsorted(ends, flat, side="right")
    offsets = flat - (ends[which] - counts[which])
    images = source.images
    chosen, positions = [], np.empty((size, 2), dtype=np.float64)
    for row, (block_index, offset) in enumerate(zip(which, offsets)):
        block = blocks[int(block_index)]
        width = block.lefts[1] - block.lefts[0]
        top, left = block.tops[0] + int(offset) // width, block.lefts[0] + int(offset) % width
        image = images[block.image]
        chosen.append(image)
        # crop_batch takes fractional positions: the centre of the pixel's bin maps back to it exactly.
        positions[row] = (
            (top + 0.5) / (image.shape[0] - source.image_size + 1),
            (left + 0.5) / (image.shape[1] - source.image_size + 1),
        )
    coins = (rng.random(size) < 0.5).tolist()
    return crop_batch(chosen, positions, coins, source.image_size, flip=source.flip)


def disjoint_crop_sets(source: InMemoryImageSource, parts: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    """``parts`` sets of ``size`` crops each, float32 (size, C, image_size, image_size) in [-1, 1]: distinct
    windows within a set, none shared between sets, flipped at random where the source flips. Deterministic
    given ``seed``. Raises UserError when a part holds fewer than ``size`` windows."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"the reference set size must be a positive integer, got {size!r}")
    partition = partition_windows(source, parts, seed)
    capacity = min(sum(block.count for block in part) for part in partition)
    if capacity < size:
        raise UserError(
            f"{source.name}: the held-out split fills {parts} disjoint sets with at most {capacity} "
            f"distinct crops each, not {size}; ask for fewer sets or smaller ones"
        )
    rng = np.random.default_rng([seed, 1])
    return [_draw(source, part, size, rng) for part in partition]


def complement_crops(
    source: InMemoryImageSource, parts: int, excluded: int, size: int, seed: int = 0
) -> tuple[torch.Tensor, int]:
    """``size`` crops from the windows outside part ``excluded`` of ``disjoint_crop_sets``' partition (same
    ``parts`` and ``seed``): a real set that shares no window with reference set ``excluded``, e.g. to measure
    the real-against-real floor. Windows repeat only where the other parts hold fewer than ``size``. Returns
    the crops and the number of distinct windows among them."""
    partition = partition_windows(source, parts, seed)
    if not 0 <= excluded < parts:
        raise UserError(f"part {excluded} does not exist among {parts} parts")
    blocks = [block for index, part in enumerate(partition) if index != excluded for block in part]
    available = sum(block.count for block in blocks)
    if available == 0:
        raise UserError(f"{source.name}: the held-out split has no window outside set {excluded}; ask for more sets")
    rng = np.random.default_rng([seed, 2, excluded, size])
    return _draw(source, blocks, size, rng), min(size, available)


def _extra_prints(seed: int, first: int, count: int, cache_dir: Path | None) -> np.ndarray:
    """uint8 (count, 96, 96): prints first … first + count − 1 of the seed's sequence, kept in ``cache_dir`` (None:
    not cached) as an .npz so that reruns of a protocol do not synthesize them again (~10 ms each, more on a busy
    machine). A missing, partial or foreign cache file is only synthesized again."""
    from .fingerprints import NATIVE_PRINT_SIZE, SYNTHESIZER_VERSION, print_seed, synthesize_fingerprint

    path = (
        None
        if cache_dir is None
        else (
            Path(cache_dir)
            / f"fingerprints-v{SYNTHESIZER_VERSION}-{NATIVE_PRINT_SIZE}px-from{first}-n{count}-seed{seed}.npz"
        )
    )
    if path is not None:
        try:
            with np.load(path, allow_pickle=False) as stored:  # never unpickle
                prints = stored["prints"]
            if prints.shape == (count, NATIVE_PRINT_SIZE, NATIVE_PRINT_SIZE) and prints.dtype == np.uint8:
                return prints
        except Exception:  # noqa: BLE001 - any unreadable cache file is synthesized again
            pass
    prints = np.stack(
        [
            np.rint(synthesize_fingerprint(NATIVE_PRINT_SIZE, print_seed(seed, index)) * 255.0).astype(np.uint8)
            for index in range(first, first + count)
        ]
    )
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write to a temporary file and rename, so a crash or a concurrent run never leaves half a file.
            handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".fingerprints-", suffix=".tmp")
            with os.fdopen(handle, "wb") as file:
                np.savez_compressed(file, prints=prints)
            os.replace(temporary, path)
        except OSError:
            pass  # a read-only or full disk only costs the synthesis next time
    return prints


def held_out_source(
    spec: str,
    image_size: int,
    *,
    seed: int = 0,
    channels: int | None = None,
    minimum: int = 0,
    on_bad_image: str = "error",
    cache_dir: str | os.PathLike[str] | None | bool = True,
    val_fraction: float = 0.1,
) -> ImageSource:
    """The held-out ("val") split of ``spec`` as ``open_image_source`` opens it, except for the synthetic
    fingerprints when their held-out prints (51 of the default 512) are fewer than ``minimum``: then the
    held-out prints followed by prints 512, 513, … of the same seed's sequence, ``minimum`` in all. Those lie
    beyond the default set, so neither of its splits contains them and no model was trained on them.
    ``cache_dir``: where the extra prints are kept (True: the fingerprints' default cache folder; None: nowhere).
    ``val_fraction``: the held-out share, as ``open_image_source`` takes it (the model's ``DataConfig.val_fraction``)."""
    from . import open_image_source
    from .fingerprints import FingerprintSource, default_cache_dir
    from .image_io import resize_uint8

    if spec != "fingerprints":
        return open_image_source(
            spec,
            image_size,
            channels=channels,
            split="val",
            val_fraction=val_fraction,
            seed=seed,
            on_bad_image=on_bad_image,
        )
    held_out = FingerprintSource(image_size, channels=channels, split="val", val_fraction=val_fraction, seed=seed)
    if minimum <= len(held_out):
        return held_out
    folder = (
        default_cache_dir()
        if cache_dir is True
        else (None if cache_dir is None or cache_dir is False else Path(cache_dir))
    )
    natives = _extra_prints(seed, held_out.num_prints, minimum - len(held_out), folder)
    extra = np.stack(
        [
            np.repeat(resize_uint8(native[..., None], image_size, image_size), held_out.channels, axis=-1)
            for native in natives
        ]
    )
    images = np.concatenate([np.asarray(held_out.images), extra])
    return InMemoryImageSource(images, image_size, name="fingerprints", channels=held_out.channels, flip=held_out.flip)
