"""Image folders too large for memory: files are decoded when a batch picks them, by a pool of threads.

``LazyImageFolderSource`` has the interface of ``ImageFolderSource`` (``sample_batch``,
``sample_labelled_batch``, ``fixed_batch``) and draws its random picks the same way, but keeps only
the list of files: each batch decodes its own files (Pillow releases the GIL while decoding, so
``workers`` threads decode in parallel) and nothing else stays in memory.

The file list of a folder is cached in ``~/.cache/kuramoto-diffusion/index-<hash>.json`` together
with the modification times of its directories; the next run re-lists the folder only if one of
them changed, so a folder of a million files is scanned once. Colour is decided from the headers
of up to 256 files spread over the folder (``channels`` overrides it), not from every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from ..config import BAD_IMAGE_POLICIES
from ..errors import UserError
from ..serialization import choice_check, write_json_atomic
from .image_io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    check_channels,
    check_image_size,
    check_max_image_pixels,
    find_image_files,
    folder_classes,
    folder_labels,
    image_is_colour,
    list_folder_images,
    read_image_at_least,
)
from .images import crop_batch, draw_crop_picks
from .splits import check_split, check_val_fraction, split_indices

INDEX_VERSION = 1
PROBED_FILES = 256


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kuramoto-diffusion"


def _directory_times(folder: Path) -> dict[str, int]:
    """Modification time (ns) of ``folder`` and every non-hidden directory under it (a directory's time
    changes when an entry is added, removed or renamed in it). Walks the whole folder."""
    times = {}
    for root, dirs, _ in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        times[os.path.relpath(root, folder)] = os.stat(root).st_mtime_ns
    return times


def _unchanged(folder: Path, times: dict[str, int]) -> bool:
    """Whether every recorded directory still has its recorded time: one stat per directory, no listing.

    A new subdirectory changes its parent's time, so it is noticed too.
    """
    try:
        return all(os.stat(folder / relative).st_mtime_ns == time for relative, time in times.items())
    except (OSError, TypeError):
        return False


def indexed_image_files(folder: Path, cache: Path | None = None) -> list[Path]:
    """``find_image_files(folder)``, from the cached index when no directory of the folder changed since.

    A cache hit stats the recorded directories only; a miss lists the folder (and records it).
    """
    folder = folder.resolve()
    cache = cache if cache is not None else cache_folder()
    key = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
    index_path = cache / f"index-{key}.json"
    try:
        stored = json.loads(index_path.read_text())
        if (
            stored.get("version") == INDEX_VERSION
            and stored.get("folder") == str(folder)
            and isinstance(stored.get("times"), dict)
            and _unchanged(folder, stored["times"])
        ):
            return [folder / name for name in stored["files"]]
    except (OSError, ValueError, TypeError, AttributeError):
        pass  # missing, unreadable or foreign: list the folder again
    times = _directory_times(folder)
    files = find_image_files(folder)
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            index_path,
            {
                "version": INDEX_VERSION,
                "folder": str(folder),
                "times": times,
                "files": [str(path.relative_to(folder)) for path in files],
            },
        )
    except OSError:
        pass  # a cache we cannot write only costs time
    return files


class LazyImageFolderSource:
    """Random crops of the images of a (large) folder, decoded on demand; see the module docstring."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        image_size: int,
        *,
        channels: int | None = None,
        split: str = "train",
        val_fraction: float = 0.1,
        seed: int = 0,
        flip: bool = True,
        on_bad_image: str = "error",
        classes: bool = False,
        workers: int = 4,
        index_cache: Path | None = None,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        self.image_size = check_image_size(image_size)
        self.max_image_pixels = check_max_image_pixels(max_image_pixels)
        split = check_split(split)
        val_fraction = check_val_fraction(val_fraction)
        channels = check_channels(channels)
        choice_check("on_bad_image", on_bad_image, BAD_IMAGE_POLICIES)
        folder, all_paths = list_folder_images(folder, lambda found: indexed_image_files(found, index_cache))
        self.name = str(folder)
        self.flip = flip
        self.on_bad_image = on_bad_image
        self.class_names = folder_classes(folder, all_paths) if classes else ()
        if channels is None:
            probe = [all_paths[int(i)] for i in np.linspace(0, len(all_paths) - 1, min(PROBED_FILES, len(all_paths)))]
            channels = 3 if any(self._safe_colour(path) for path in probe) else 1
        self.channels = channels
        indices = split_indices(len(all_paths), split, val_fraction, seed, where=str(folder))
        self.paths: list[Path] = [all_paths[int(i)] for i in indices]
        self.labels = torch.tensor(folder_labels(folder, self.paths, self.class_names)) if classes else None
        self.skipped: list[tuple[Path, str]] = []
        self._bad: set[int] = set()  # indices into self.paths of files skipped once: never decoded again
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="decode")

    def _safe_colour(self, path: Path) -> bool:
        try:
            return image_is_colour(path, self.max_image_pixels)
        except UserError:
            if self.on_bad_image == "error":
                raise
            return False

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"LazyImageFolderSource(name={self.name!r}, files={len(self)}, channels={self.channels})"

    def _decode(self, index: int) -> np.ndarray | None:
        """File ``index`` of ``self.paths`` as uint8 (H, W, channels) resized so the shorter side is image_size;
        None for a skipped bad file (remembered, so that it is neither decoded nor reported again)."""
        if index in self._bad:
            return None
        path = self.paths[index]
        try:
            return read_image_at_least(path, self.image_size, self.channels, self.image_size, self.max_image_pixels)
        except UserError as error:
            if self.on_bad_image == "error":
                raise
            self._bad.add(index)
            self.skipped.append((path, str(error)))  # reported by _crops once the batch is complete
            return None

    def _replacement(self, index: int) -> tuple[int, np.ndarray]:
        """The first usable file after bad file ``index`` (cyclically): at most one pass over the list, then a
        UserError, so that a folder where nothing decodes stops instead of looping."""
        for step in range(1, len(self.paths) + 1):
            candidate = (index + step) % len(self.paths)
            image = self._decode(candidate)
            if image is not None:
                return candidate, image
        first = self.skipped[0][1] if self.skipped else "no file decodes"
        raise UserError(
            f"{self.name}: none of the {len(self.paths)} image file(s) of this split is usable "
            f"(first: {first}); fix or remove the files"
        )

    def _crops(
        self, which: list[int], positions: np.ndarray, coins: Sequence[bool], flip: bool, rows: slice | None = None
    ) -> tuple[torch.Tensor, list[int]]:
        """Decode the picked files of ``rows`` (all rows if None) in parallel and crop them; other rows stay 0.

        A skipped bad file is replaced by the next file of the list (not by a new random pick: every process
        of a data-parallel job must agree on the picks while decoding only its own rows).
        """
        chosen = range(len(which))[rows] if rows is not None else range(len(which))
        skipped_before = len(self.skipped)
        # Each picked file is decoded once, even when several rows pick it (rows share the read-only array).
        unique = list(dict.fromkeys(which[row] for row in chosen))
        decoded = dict(zip(unique, self._pool.map(self._decode, unique)))
        replacements: dict[int, tuple[int, np.ndarray]] = {}
        images: dict[int, np.ndarray] = {}
        for row in chosen:
            image = decoded[which[row]]
            if image is None:
                if which[row] not in replacements:
                    replacements[which[row]] = self._replacement(which[row])
                which[row], image = replacements[which[row]]
            images[row] = image
        if len(self.skipped) > skipped_before:
            # One warning per batch, after it is complete: a folder where nothing decodes ends with its one error line.
            path, reason = self.skipped[skipped_before]
            others = len(self.skipped) - skipped_before - 1
            more = f" and {others} more in this batch" if others else ""
            warnings.warn(f"skipped {path} ({reason}){more}; {len(self.skipped)} skipped so far", stacklevel=3)
        batch = torch.zeros(len(which), self.channels, self.image_size, self.image_size)
        if images:
            batch[chosen.start : chosen.stop] = crop_batch(
                [images[row] for row in chosen],
                positions[chosen.start : chosen.stop],
                [coins[row] for row in chosen],
                self.image_size,
                flip=flip,
            )
        return batch, which

    # Data-parallel training asks each process for its own rows only (``rows``): the picks are drawn for the
    # whole batch, so every process agrees on them, but only the rows it trains on are decoded.
    decodes_rows_on_demand: ClassVar[Literal[True]] = True  # a data.sources.RowDecodingSource

    def sample_batch(self, batch_size: int, generator: torch.Generator, rows: slice | None = None) -> torch.Tensor:
        """(batch_size, channels, image_size, image_size) in [-1, 1]: random files, crops and flips (as ImageFolderSource).

        With ``rows``, only those rows are decoded (the others are 0); the random draws are those of the whole batch.
        """
        return self._random_crops(batch_size, generator, rows)[0]

    def sample_labelled_batch(
        self, batch_size: int, generator: torch.Generator, rows: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.labels is None:
            raise UserError(
                f"{self.name}: has no class labels; class-conditional training needs a folder of class subfolders"
            )
        batch, which = self._random_crops(batch_size, generator, rows)
        return batch, self.labels[which]

    def _random_crops(
        self, batch_size: int, generator: torch.Generator, rows: slice | None
    ) -> tuple[torch.Tensor, list[int]]:
        which, positions, coins = draw_crop_picks(len(self.paths), batch_size, generator)
        return self._crops(which, positions, coins, self.flip, rows)

    def fixed_batch(self, num: int, seed: int = 0) -> torch.Tensor:
        """``num`` centre crops of files in a seeded order (cycling when num > len(self)); no flips."""
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(self)) for _ in range(-(-num // len(self)))])[:num]
        positions = np.full((num, 2), 0.5)
        return self._crops([int(i) for i in order], positions, [False] * num, False)[0]
