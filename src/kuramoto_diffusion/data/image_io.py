"""Images on disk: finding them in folders (and class subfolders), decoding them with any mode to uint8 arrays,
pixel operations (grey, resize, batches as tensors in [-1, 1]), and the single image and mask files the command
line reads. Every failure is a one-line UserError naming the file."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config import DEFAULT_MAX_IMAGE_PIXELS  # ``max_image_pixels`` raises it for trusted files
from ..errors import UserError

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")
MIN_IMAGE_SIZE = 8
# Modes whose pixels carry no colour. Palette images are decided by their palette.
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# Pillow's own bomb check runs inside Image.open, before this module can name the file: it is switched off
# for the open call alone (under this lock, as Image.MAX_IMAGE_PIXELS is a global) and replaced by
# ``_check_pixels``, which names the file, the size and the option.
_PILLOW_LIMIT_LOCK = threading.Lock()


def check_image_size(image_size: object, *, largest: int | None = None, what: str = "image_size") -> int:
    """Return ``image_size`` if it is an int in [8, largest]; otherwise raise a one-line UserError."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise UserError(f"{what} must be an integer number of pixels, got {image_size!r}; pass e.g. image_size=32")
    if image_size < MIN_IMAGE_SIZE:
        raise UserError(f"{what} {image_size} is too small; use image_size={MIN_IMAGE_SIZE} or more")
    if largest is not None and image_size > largest:
        raise UserError(f"{what} {image_size} is too large for this data; use image_size={largest} or less")
    return int(image_size)


def check_channels(channels: object) -> int | None:
    if channels is not None and (isinstance(channels, bool) or channels not in (1, 3)):
        raise UserError(f"channels must be 1 (grayscale), 3 (RGB) or None (the data's own), got {channels!r}")
    return None if channels is None else int(channels)


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
        raise UserError(
            f"{folder}: class-conditional training needs at least 2 class subfolders with images, found {len(names)}"
        )
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


def check_max_image_pixels(max_image_pixels: object) -> int:
    """Return ``max_image_pixels`` if it is a positive int; otherwise raise a one-line UserError."""
    if (
        isinstance(max_image_pixels, bool)
        or not isinstance(max_image_pixels, (int, np.integer))
        or max_image_pixels < 1
    ):
        raise UserError(f"max_image_pixels must be a positive whole number of pixels, got {max_image_pixels!r}")
    return int(max_image_pixels)


def _open_image(path: Path, max_image_pixels: int) -> Image.Image:
    """``Image.open`` (the header only; pixels are not decoded yet), refusing a file that cannot be opened
    (a dangling symlink, a symlink loop, no permission) or that declares more than ``max_image_pixels``."""
    try:
        if path.stat().st_size == 0:
            raise UserError(f"{path}: empty file (0 bytes); remove or replace it")
    except OSError as error:  # dangling symlink, symlink loop, permission denied
        reason = error.strerror or type(error).__name__
        raise UserError(f"{path}: cannot open ({reason}); fix or remove the file (a broken link?)") from None
    try:
        with _PILLOW_LIMIT_LOCK:
            pillow_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = pillow_limit
    except OSError as error:
        if isinstance(error, Image.UnidentifiedImageError) or error.errno is None:
            raise _decode_failure(path, error) from None
        reason = error.strerror or type(error).__name__
        raise UserError(f"{path}: cannot open ({reason}); fix or remove the file") from None
    except Exception as error:  # Pillow raises many types for bad files; all mean the same to the user
        raise _decode_failure(path, error) from None
    width, height = image.size
    if width * height > max_image_pixels:
        image.close()
        raise UserError(
            f"{path}: image is {width}x{height} = {width * height:,} pixels, more than the limit of {max_image_pixels:,} "
            "(a guard against decompression bombs); shrink the file, or if you trust it raise max_image_pixels="
            f"{width * height}"
        )
    return image


def _decode_failure(path: Path, error: BaseException) -> UserError:
    reason = " ".join(str(error).split()) or type(error).__name__
    return UserError(f"{path}: cannot decode image ({reason}); the file is truncated or corrupt, remove or replace it")


def image_is_colour(path: Path, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> bool:
    """Whether the image at ``path`` has colour, judged from its header (mode and palette) only."""
    try:
        with _open_image(path, max_image_pixels) as image:
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


def read_image(path: Path, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Fully decode the first frame of an image file -> uint8 (H, W, 1) for gray or (H, W, 3) for colour.

    16-bit images are scaled to 8 bits (v / 257); alpha channels are dropped. Any decoding
    problem (zero bytes, truncation, unknown format, a path that cannot be opened) becomes a UserError
    that names the file, and so does a header declaring more than ``max_image_pixels`` pixels (checked
    before anything is decoded).
    """
    image = _open_image(path, max_image_pixels)
    try:
        with image:
            image.seek(0)  # multi-frame (GIF-like TIFF, multipage): the first frame
            image.load()  # decode everything now, so truncation is caught here and not during training
            return _to_uint8(image)
    except UserError:
        raise
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


def read_image_for_model(
    path: str | os.PathLike[str], image_size: int, channels: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[torch.Tensor, tuple[int, int]]:
    """One image file as a (1, channels, image_size, image_size) tensor in [-1, 1], and its original (width, height).

    The image is resized so that its shorter side is image_size and centre-cropped to a square.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such image file; check the path")
    pixels = read_image(path, check_max_image_pixels(max_image_pixels))
    size = (pixels.shape[1], pixels.shape[0])
    square = centre_square(convert_channels(pixels, channels), image_size)
    return uint8_batch_to_tensor(square[None]), size


def read_mask_for_model(
    path: str | os.PathLike[str],
    image_size: int,
    image_path: str | os.PathLike[str],
    image_dims: tuple[int, int],
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> torch.Tensor:
    """A mask file as a (1, 1, image_size, image_size) tensor of 0/1: 1 where it is white (the region to
    fill, in the convention of ``DiffusionModel.inpaint``), 0 where it is black.

    It must have the size of the image it belongs to, and goes through the same resize and centre
    crop (nearest neighbour). Grey values are thresholded at 50 %, with one warning saying how many.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: no such mask file; check the path")
    pixels = convert_channels(read_image(path, check_max_image_pixels(max_image_pixels)), 1)
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


def read_image_at_least(
    path: Path, image_size: int, channels: int, shorter: int, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """``read_image``, converted to ``channels`` and resized so the shorter side is ``shorter``; a UserError
    naming the file and the fix if the image is smaller than ``image_size``."""
    pixels = read_image(path, max_image_pixels)
    height, width = pixels.shape[:2]
    if min(height, width) < image_size:
        raise UserError(
            f"{path}: image is {width}x{height} pixels, smaller than image_size {image_size} on its "
            f"shorter side; use image_size={max(MIN_IMAGE_SIZE, min(height, width))} or less, or remove the file"
        )
    return resize_shorter_side(convert_channels(pixels, channels), shorter)
