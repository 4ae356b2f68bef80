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
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import BAD_IMAGE_POLICIES
from ..serialization import choice_check
from ..errors import UserError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
MIN_IMAGE_SIZE = 8
SPLITS = ("train", "val", "all")

# Modes whose pixels carry no colour. Palette images are decided by their palette.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


# ----------------------------------------------------------------------------------------------
# Argument checks shared by all sources


def check_image_size(image_size: object, *, largest: int | None = None, what: str = "image_size") -> int:
    """Return ``image_size`` if it is an int in [8, largest]; otherwise raise a one-line UserError."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise UserError(f"{what} must be an integer number of pixels, got {image_size!r}; pass e.g. image_size=32")
    if image_size < MIN_IMAGE_SIZE:
        raise UserError(f"{what} {image_size} is too small; use image_size={MIN_IMAGE_SIZE} or more")
    if largest is not None and image_size > largest:
        raise UserError(f"{what} {image_size} is too large for this data; use image_size={largest} or less")
    return int(image_size)


def check_split(split: object, allowed: Sequence[str] = SPLITS) -> str:
    """Return ``split`` if it is one of ``allowed``; otherwise raise a UserError listing them."""
    if split not in allowed:
        raise UserError(f"unknown split {split!r}; valid values are {', '.join(allowed)}")
    return str(split)


def check_val_fraction(val_fraction: object) -> float:
    """Return ``val_fraction`` as a float if it lies in [0, 1)."""
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0.0 <= val_fraction < 1.0:
        raise UserError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    return float(val_fraction)


def check_channels(channels: object) -> int | None:
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise UserError(f"channels must be 1 (grayscale), 3 (RGB) or None (the data's own), got {channels!r}")
    return None if channels is None else int(channels)  # type: ignore[call-overload]


def split_counts(total: int, val_fraction: float) -> tuple[int, int]:
    """(train, val) counts for ``total`` base images: val is round(total * val_fraction),
    at least 1 when val_fraction > 0, and always leaves at least one for training."""
    if val_fraction <= 0.0 or total < 2:
        return total, 0
    num_val = min(max(1, round(total * val_fraction)), total - 1)
    return total - num_val, num_val


def split_indices(total: int, split: str, val_fraction: float, seed: int, *, where: str) -> np.ndarray:
    """Sorted indices of the base images in ``split``; val is a seeded random subset, train the rest.

    Deterministic given (total, val_fraction, seed); train and val never share an index.
    """
    if split == "all":
        return np.arange(total)
    num_train, num_val = split_counts(total, val_fraction)
    if split == "val" and num_val == 0:
        raise UserError(
            f"{where}: {total} image(s) with val_fraction {val_fraction} leave nothing for validation; "
            "add images, raise val_fraction or use split 'all'"
        )
    order = np.random.default_rng(seed).permutation(total)
    chosen = order[:num_val] if split == "val" else order[num_val:]
    return np.sort(chosen)


# ----------------------------------------------------------------------------------------------
# Pixel helpers


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of uint8 RGB (..., 3) -> uint8 (..., 1), bit-identical to Pillow's convert("L")."""
    rgb32 = rgb.astype(np.uint32)
    luma = (rgb32[..., 0] * 19595 + rgb32[..., 1] * 38470 + rgb32[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]


def convert_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (..., H, W, C) with C in {1, 3} -> the same with ``channels`` channels (luma or replication)."""
    have = image.shape[-1]
    if have == channels:
        return image
    if channels == 1:
        return rgb_to_gray(image)
    return np.repeat(image, 3, axis=-1)


def resize_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 (H, W, C) to (height, width, C) with Pillow's Lanczos filter (no-op if the size matches)."""
    if image.shape[:2] == (height, width):
        return image
    squeeze = image.shape[2] == 1
    resized = Image.fromarray(image[..., 0] if squeeze else image).resize((width, height), Image.Resampling.LANCZOS)
    array = np.asarray(resized)
    return array[..., None] if squeeze else array


def resize_shorter_side(image: np.ndarray, shorter: int) -> np.ndarray:
    """Resize uint8 (H, W, C) so that min(H, W) == shorter, keeping the aspect ratio."""
    height, width = image.shape[:2]
    if height <= width:
        new_height, new_width = shorter, max(shorter, round(width * shorter / height))
    else:
        new_height, new_width = max(shorter, round(height * shorter / width)), shorter
    return resize_uint8(image, new_height, new_width)


def uint8_batch_to_tensor(batch: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float32 (N, C, H, W) with v -> v / 127.5 - 1, i.e. 0 -> -1 and 255 -> 1."""
    tensor = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).contiguous()
    return tensor.to(torch.float32).div_(127.5).sub_(1.0)


# ----------------------------------------------------------------------------------------------
# Decoding image files


def find_image_files(folder: Path) -> list[Path]:
    """All image files under ``folder`` (recursive, sorted, hidden names skipped)."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(root) / name)
    return sorted(found)


def folder_classes(folder: Path, paths: Sequence[Path]) -> tuple[str, ...]:
    """Sorted names of the first-level subfolders of ``folder`` that hold the image ``paths`` (one class each)."""
    loose = [path for path in paths if len(path.relative_to(folder).parts) == 1]
    if loose:
        raise UserError(
            f"{loose[0]}: is not inside a class subfolder of {folder}; with classes every image goes into "
            "FOLDER/CLASS_NAME/ (move it, or train without classes)"
        )
    names = tuple(sorted({path.relative_to(folder).parts[0] for path in paths}))
    if len(names) < 2:
        raise UserError(f"{folder}: class-conditional training needs at least 2 class subfolders with images, found {len(names)}")
    return names


def folder_labels(folder: Path, paths: Sequence[Path], class_names: Sequence[str]) -> list[int]:
    """The class index of each image: the position of its first-level subfolder in ``class_names``."""
    return [list(class_names).index(path.relative_to(folder).parts[0]) for path in paths]


def list_folder_images(
    folder: str | os.PathLike[str], find: Callable[[Path], list[Path]] = find_image_files
) -> tuple[Path, list[Path]]:
    """(folder, its image files found by ``find``), or a UserError for a missing path, a file, an empty
    folder or a folder without images."""
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise UserError(f"{folder}: no such file or folder; check the path")
    if not folder.is_dir():
        raise UserError(f"{folder}: is a file, not a folder of images; pass the folder that contains the images")
    paths = find(folder)
    if not paths:
        if not any(folder.iterdir()):
            raise UserError(f"{folder}: folder is empty; put the training images in it or pick another folder")
        raise UserError(
            f"{folder}: no images found (searched recursively for {', '.join(IMAGE_EXTENSIONS)}, any case); "
            "add images or point to the folder that holds them"
        )
    return folder, paths


def _decode_failure(path: Path, error: BaseException) -> UserError:
    reason = " ".join(str(error).split()) or type(error).__name__
    return UserError(f"{path}: cannot decode image ({reason}); the file is truncated or corrupt, remove or replace it")


def image_is_colour(path: Path) -> bool:
    """Whether the image at ``path`` has colour, judged from its header (mode and palette) only."""
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes); remove or replace it")
    try:
        with Image.open(path) as image:
            if image.mode in _GRAY_MODES:
                return False
            if image.mode in ("P", "PA"):
                palette = image.getpalette()
                if palette is None:
                    return True
                entries = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
                return bool(np.any(entries != entries[:, :1]))
            return True
    except UserError:
        raise
    except Exception as error:  # Pillow raises many types for bad files; all mean the same to the user
        raise _decode_failure(path, error) from None


def _to_uint8(image: Image.Image) -> np.ndarray:
    """Pixels of a loaded Pillow image as uint8 (H, W, 1) or (H, W, 3)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        # 'I;16*' is 16-bit by definition; 'I' (32-bit) usually holds 16-bit data, unless all values fit in 8 bits.
        if mode != "I" or values.max(initial=0) > 255:
            values = values / 257.0  # 65535 -> 255
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)[..., None]
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if values.size and values.min() >= 0.0 and values.max() <= 1.0:
            values = values * 255.0  # float images in [0, 1]
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)[..., None]
    if mode in _GRAY_MODES:  # 1, L, LA: alpha dropped
        return np.asarray(image.convert("L"))[..., None]
    if mode in ("P", "PA"):
        rgb = np.asarray(image.convert("RGB"))
        gray = np.all(rgb == rgb[..., :1], axis=-1).all()
        return rgb[..., :1].copy() if gray else rgb
    return np.asarray(image.convert("RGB"))  # RGB, RGBA (alpha dropped), CMYK, YCbCr, ...


def read_image(path: Path) -> np.ndarray:
    """Fully decode the first frame of an image file -> uint8 (H, W, 1) for gray or (H, W, 3) for colour.

    16-bit images are scaled to 8 bits (v / 257); alpha channels are dropped. Any decoding
    problem (zero bytes, truncation, unknown format) becomes a UserError that names the file.
    """
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes); remove or replace it")
    try:
        with Image.open(path) as image:
            image.seek(0)  # multi-frame (GIF-like TIFF, multipage): the first frame
            image.load()  # decode everything now, so truncation is caught here and not during training
            return _to_uint8(image)
    except Exception as error:
        raise _decode_failure(path, error) from None


def centre_square(image: np.ndarray, size: int, resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """uint8 (H, W, C) resized so its shorter side is ``size`` (aspect kept), then the centre size × size."""
    height, width = image.shape[:2]
    if min(height, width) != size:
        scale = size / min(height, width)
        new_height, new_width = max(size, round(height * scale)), max(size, round(width * scale))
        squeeze = image.shape[2] == 1
        resized = Image.fromarray(image[..., 0] if squeeze else image).resize((new_width, new_height), resample)
        image = np.asarray(resized)
        image = image[..., None] if squeeze else image
        height, width = new_height, new_width
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size].copy()  # writable: Pillow's arrays are read-only


def read_image_for_model(path: str | os.PathLike[str], image_size: int, channels: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image file as a (1, channels, image_size, image_size) tensor in [-1, 1], and its original (width, height).

    The image is resized so that its shorter side is image_size and centre-cropped to a square.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such image file; check the path")
    pixels = read_image(path)
    size = (pixels.shape[1], pixels.shape[0])
    square = centre_square(convert_channels(pixels, channels), image_size)
    return uint8_batch_to_tensor(square[None]), size


def read_mask_for_model(path: str | os.PathLike[str], image_size: int, image_path: str | os.PathLike[str], image_dims: tuple[int, int]) -> torch.Tensor:
    """A mask file as a (1, 1, image_size, image_size) tensor of 0/1: 1 where it is white (the region to
    fill, in the convention of ``DiffusionModel.inpaint``), 0 where it is black.

    It must have the size of the image it belongs to, and goes through the same resize and centre
    crop (nearest neighbour). Grey values are thresholded at 50 %, with one warning saying how many.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such mask file; check the path")
    pixels = convert_channels(read_image(path), 1)
    if (pixels.shape[1], pixels.shape[0]) != tuple(image_dims):
        raise UserError(
            f"{path}: mask is {pixels.shape[1]}x{pixels.shape[0]} pixels but {image_path} is {image_dims[0]}x{image_dims[1]}; "
            "make a mask of the image's size (white = fill, black = keep)"
        )
    grey = int(((pixels > 0) & (pixels < 255)).sum())
    if grey:
        warnings.warn(
            f"{path}: {grey} mask pixel(s) are neither black nor white; thresholded at 50 % (≥ 128 = white)",
            stacklevel=2,
        )
    binary = np.where(pixels >= 128, 255, 0).astype(np.uint8)
    square = centre_square(binary, image_size, Image.Resampling.NEAREST)
    return torch.from_numpy((square[..., 0] >= 128).astype(np.float32))[None, None]


def draw_crop_picks(count: int, batch_size: int, generator: torch.Generator) -> tuple[list[int], np.ndarray, list[bool]]:
    """The random part of a crop batch, in a fixed order: which of ``count`` images, where (fractions in [0, 1))
    and whether to flip. Every folder source draws its batches this way, so they agree crop for crop."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    which = torch.randint(count, (batch_size,), generator=generator).tolist()
    positions = torch.rand((batch_size, 2), generator=generator, dtype=torch.float64).numpy()
    coins = (torch.rand(batch_size, generator=generator) < 0.5).tolist()
    return which, positions, coins


def crop_batch(images: Sequence[np.ndarray], positions: np.ndarray, coins: Sequence[bool], size: int, *, flip: bool) -> torch.Tensor:
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


def read_image_at_least(path: Path, image_size: int, channels: int, shorter: int) -> np.ndarray:
    """``read_image``, converted to ``channels`` and resized so the shorter side is ``shorter``; a UserError
    naming the file and the fix if the image is smaller than ``image_size``."""
    pixels = read_image(path)
    height, width = pixels.shape[:2]
    if min(height, width) < image_size:
        raise UserError(
            f"{path}: image is {width}x{height} pixels, smaller than image_size {image_size} on its "
            f"shorter side; use image_size={max(MIN_IMAGE_SIZE, min(height, width))} or less, or remove the file"
        )
    return resize_shorter_side(convert_channels(pixels, channels), shorter)


# ----------------------------------------------------------------------------------------------
# Sources


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
        labels: Sequence[int] | None = None,
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
            raise UserError(f"{self.name}: has no class labels; class-conditional training needs a folder of class subfolders")
        batch, which = self._random_crops(batch_size, generator, flip=self.flip)
        return batch, self.labels[which]

    def _random_crops(self, batch_size: int, generator: torch.Generator, *, flip: bool) -> tuple[torch.Tensor, list[int]]:
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
    ) -> None:
        image_size = check_image_size(image_size)
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
            channels = 3 if any(usable(image_is_colour, path) for path in all_paths) else 1
            self.skipped.clear()  # reported below, for this split's files only
        indices = split_indices(len(all_paths), split, val_fraction, seed, where=str(folder))
        self.crop_scale = float(crop_scale)
        shorter = round(image_size * crop_scale)

        def decoded(path: Path) -> np.ndarray:
            return read_image_at_least(path, image_size, channels, shorter)

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
