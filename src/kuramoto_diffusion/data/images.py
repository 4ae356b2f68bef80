"""Image folders, and the in-memory crop sampler that every image source shares.

An image folder is searched recursively for .png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff and .webp
files (any letter case; hidden files and folders, whose names start with ".", are
skipped, which also skips macOS "._name.png" resource forks). Every image of the
chosen split is decoded once, resized so that its shorter side is
``round(image_size * crop_scale)`` pixels, and kept in memory as uint8; training
batches are random ``image_size`` x ``image_size`` crops of those arrays.

Keeping decoded images in memory makes sampling fast but limits this loader to
folders that fit in RAM (at 64 px and crop_scale 1: about 12 kB per RGB image,
so ~1 GB for 80 000 images).

Example: the SOCOFing fingerprint scans are 96 x 103 grayscale BMPs. At
``image_size=96`` the shorter side already is 96, so nothing is resized, and each
sample is a random 96 x 96 window of the 103-pixel height (``fixed_batch`` takes
the centre window).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import BAD_IMAGE_POLICIES
from ..errors import UserError
from ..serialization import choice_check
from .image_io import (
    DEFAULT_MAX_IMAGE_PIXELS,
    check_channels,
    check_image_size,
    check_max_image_pixels,
    folder_classes,
    folder_labels,
    image_is_colour,
    list_folder_images,
    read_image_at_least,
    uint8_batch_to_tensor,
)
from .splits import check_split, check_val_fraction, split_indices


def draw_crop_picks(
    count: int, batch_size: int, generator: torch.Generator
) -> tuple[list[int], np.ndarray, list[bool]]:
    """The random part of a crop batch, in a fixed order: which of ``count`` images, where (fractions in [0, 1))
    and whether to flip. Every folder source draws its batches this way, so they agree crop for crop."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    which = torch.randint(count, (batch_size,), generator=generator).tolist()
    positions = torch.rand((batch_size, 2), generator=generator, dtype=torch.float64).numpy()
    coins = (torch.rand(batch_size, generator=generator) < 0.5).tolist()
    return which, positions, coins


def crop_batch(
    images: Sequence[np.ndarray], positions: np.ndarray, coins: Sequence[bool], size: int, *, flip: bool
) -> torch.Tensor:
    """One size × size crop of each uint8 (H, W, C) image at the given fractional positions, flipped where
    ``flip`` and its coin say so: float32 (N, C, size, size) in [-1, 1]."""
    batch = np.empty((len(images), size, size, images[0].shape[2]), dtype=np.uint8)
    for row, image in enumerate(images):
        free_rows, free_cols = image.shape[0] - size + 1, image.shape[1] - size + 1
        # floor(u * n) with u in [0, 1) is uniform on 0..n-1; min() guards against rounding up.
        top = min(int(positions[row, 0] * free_rows), free_rows - 1)
        left = min(int(positions[row, 1] * free_cols), free_cols - 1)
        crop = image[top : top + size, left : left + size]
        batch[row] = crop[:, ::-1] if (flip and coins[row]) else crop
    return uint8_batch_to_tensor(batch)


class InMemoryImageSource:
    """Random crops of uint8 images held in memory; implements the ImageSource protocol.

    ``images`` is a sequence of uint8 arrays (H, W, channels) with H, W >= image_size (the
    arrays may differ in size), or one uint8 array (N, H, W, channels). Subclasses that create
    their images lazily pass ``images=None`` and override ``_load_images``.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray] | np.ndarray | None,
        image_size: int,
        *,
        name: str,
        channels: int,
        flip: bool = True,
        labels: Sequence[int] | np.ndarray | None = None,
        class_names: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.channels = channels
        self.image_size = image_size
        self.flip = flip
        self._images = images
        self.class_names = tuple(class_names)  # () for unlabelled data
        self.labels = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)

    def _load_images(self) -> Sequence[np.ndarray] | np.ndarray:
        raise NotImplementedError("images were not given and this source cannot create them")

    @property
    def images(self) -> Sequence[np.ndarray] | np.ndarray:
        """The base images, uint8 (H, W, channels) each."""
        if self._images is None:
            self._images = self._load_images()
        return self._images

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, channels={self.channels}, image_size={self.image_size})"

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """(batch_size, channels, image_size, image_size) float32 in [-1, 1]: uniformly chosen images,
        uniformly placed crops, horizontal flips with probability 1/2 if enabled.

        All randomness comes from ``generator``, drawn in a fixed order (flip coins are drawn even when
        flips are off, so turning them on does not change which crops are taken).
        """
        return self._random_crops(batch_size, generator, flip=self.flip)[0]

    def sample_labelled_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``sample_batch`` and the (batch_size,) class index of each crop's image (labelled sources only)."""
        if self.labels is None:
            raise UserError(
                f"{self.name}: has no class labels; class-conditional training needs a folder of class subfolders"
            )
        batch, which = self._random_crops(batch_size, generator, flip=self.flip)
        return batch, self.labels[which]

    def _random_crops(
        self, batch_size: int, generator: torch.Generator, *, flip: bool
    ) -> tuple[torch.Tensor, list[int]]:
        images = self.images
        which, positions, coins = draw_crop_picks(len(images), batch_size, generator)
        return crop_batch([images[index] for index in which], positions, coins, self.image_size, flip=flip), which

    def fixed_batch(self, num: int, seed: int = 0) -> torch.Tensor:
        """(num, channels, image_size, image_size) float32 in [-1, 1]: centre crops, no flips, of the
        base images in a seeded random order (repeating the order when num > len(self)).

        The same (num, seed) always gives the same batch.
        """
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}")
        images = self.images
        rng = np.random.default_rng(seed)
        order = np.concatenate([rng.permutation(len(images)) for _ in range(-(-num // len(images)))])[:num]
        size = self.image_size
        batch = np.empty((num, size, size, self.channels), dtype=np.uint8)
        for row, index in enumerate(order):
            image = images[int(index)]
            top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
            batch[row] = image[top : top + size, left : left + size]
        return uint8_batch_to_tensor(batch)


class ImageFolderSource(InMemoryImageSource):
    """Random crops of the images in a folder (searched recursively), decoded into memory at construction.

    - ``channels``: None = 3 if any image in the folder (all splits) is colour by its header, else 1;
      1 or 3 converts (luma / replication).
    - ``split``: the folder's images are split per file into a seeded random validation subset of
      ``val_fraction`` (at least one image) and the training rest; "all" uses every file.
    - ``crop_scale`` >= 1: images are resized so their shorter side is round(image_size * crop_scale);
      1 means crops span the full shorter side, 2 means each crop shows half of it.
    - ``classes``: each first-level subfolder is a class (``class_names`` sorted, ``labels`` per
      image); every image must be inside one.
    - ``on_bad_image``: "error" stops at the first file that cannot be decoded (empty, truncated, not
      an image, a decompression bomb) or is smaller than image_size; "skip" leaves such files out
      and emits one warning with the count and the first file and reason (``self.skipped`` lists all).
      A path that cannot be opened (a dangling symlink, a symlink loop) counts as such a file.
    - ``max_image_pixels``: a file whose header declares more pixels (width × height) is refused before
      it is decoded, as a possible decompression bomb (``image_io.DEFAULT_MAX_IMAGE_PIXELS``).

    Raises UserError (one line, naming the file) for a missing path, an empty folder, a folder
    without images, an unusable image (with "error"), or no usable image at all (with "skip").
    """

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
        crop_scale: float = 1.0,
        on_bad_image: str = "error",
        classes: bool = False,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        image_size = check_image_size(image_size)
        max_image_pixels = check_max_image_pixels(max_image_pixels)
        choice_check("on_bad_image", on_bad_image, BAD_IMAGE_POLICIES)
        split = check_split(split)
        val_fraction = check_val_fraction(val_fraction)
        channels = check_channels(channels)
        if isinstance(crop_scale, bool) or not isinstance(crop_scale, (int, float)) or not crop_scale >= 1.0:
            raise UserError(f"crop_scale must be a number >= 1, got {crop_scale!r}")
        folder, all_paths = list_folder_images(folder)
        class_names = folder_classes(folder, all_paths) if classes else ()
        self.skipped: list[tuple[Path, str]] = []

        def usable(check, path: Path):  # noqa: ANN001, ANN202 - check(path) -> value, or None when skipped
            try:
                return check(path)
            except UserError as error:
                if on_bad_image == "error":
                    raise
                self.skipped.append((path, str(error)))
                return None

        if channels is None:
            # Header-only probe of every file (not just this split) so that train and val agree.
            channels = (
                3 if any(usable(lambda p: image_is_colour(p, max_image_pixels), path) for path in all_paths) else 1
            )
            self.skipped.clear()  # reported below, for this split's files only
        indices = split_indices(len(all_paths), split, val_fraction, seed, where=str(folder))
        self.crop_scale = float(crop_scale)
        shorter = round(image_size * crop_scale)

        def decoded(path: Path) -> np.ndarray:
            return read_image_at_least(path, image_size, channels, shorter, max_image_pixels)

        self.paths: list[Path] = []
        images = []
        for index in indices:
            path = all_paths[int(index)]
            image = usable(decoded, path)
            if image is not None:
                self.paths.append(path)
                images.append(image)
        if not images:
            path, reason = self.skipped[0]
            raise UserError(
                f"{folder}: none of the {len(self.skipped)} image file(s) of the {split} split is usable "
                f"(first: {reason}); fix or remove the files"
            )
        if self.skipped:
            warnings.warn(
                f"{folder}: skipped {len(self.skipped)} of {len(self.skipped) + len(images)} image file(s) of the "
                f"{split} split that cannot be used (first: {self.skipped[0][1]})",
                stacklevel=2,
            )
        labels = folder_labels(folder, self.paths, class_names) if classes else None
        super().__init__(
            images, image_size, name=str(folder), channels=channels, flip=flip, labels=labels, class_names=class_names
        )
