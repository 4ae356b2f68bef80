"""Texture photos: the embedded default "textures" data set.

Random crops of the grayscale 512 x 512 texture photos that scikit-image ships inside
its wheel (no download): ``skimage.data.brick()``, ``grass()`` and ``gravel()``.

Scale: each photo is resized to ``texture_scale * image_size`` pixels per side, so a
crop always covers 1/texture_scale of the photo side whatever image_size is: with the
default 4, a crop spans 128 of the 512 original pixels, enough for a few bricks,
grass blades or dozens of gravel grains. The photo is never shrunk below 2 crops per
side (room for the split) and never enlarged beyond its 512 pixels unless that
minimum requires it (image_size > 256).

Split: spatial, so that training and validation crops never overlap: "val" is the
right-hand strip of every photo, val_fraction of its width but at least one crop wide,
"train" is the rest and "all" the whole photo. The seed plays no part.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .image_io import check_channels, check_image_size, convert_channels, resize_uint8
from .images import InMemoryImageSource
from .splits import check_split, check_val_fraction

TEXTURE_PHOTOS = ("brick", "grass", "gravel")
LARGEST_TEXTURE_SIZE = 512


def load_texture_photo(name: str) -> np.ndarray:
    """The scikit-image texture photo ``name`` as uint8 (H, W), grayscale."""
    if name not in TEXTURE_PHOTOS:
        raise UserError(f"unknown texture photo {name!r}; valid values are {', '.join(TEXTURE_PHOTOS)}")
    import skimage.data  # here only: scikit-image is slow to import and most jobs never need it

    try:
        photo = np.asarray(getattr(skimage.data, name)())
    except Exception as error:  # a stripped or broken scikit-image install
        raise UserError(f"skimage.data.{name}() failed ({error}); reinstall scikit-image") from None
    if photo.ndim == 3:
        photo = convert_channels(photo[..., :3].astype(np.uint8), 1)[..., 0]
    return photo.astype(np.uint8)


def texture_photo_side(image_size: int, texture_scale: float, native_side: int = LARGEST_TEXTURE_SIZE) -> int:
    """Side in pixels that the photos are resized to for a given crop size (see the module docstring)."""
    return max(min(round(texture_scale * image_size), native_side), 2 * image_size)


class TextureSource(InMemoryImageSource):
    """Random image_size x image_size crops of the brick, grass and gravel photos (len = number of photos).

    ``channels``: None or 1 = grayscale, 3 = gray replicated to RGB. ``texture_scale`` >= 2 sets how
    much of a photo a crop shows (1/texture_scale of its side); ``photos`` picks a subset of
    TEXTURE_PHOTOS. Split and scale rules: see the module docstring.
    """

    def __init__(
        self,
        image_size: int,
        *,
        channels: int | None = None,
        split: str = "train",
        val_fraction: float = 0.1,
        seed: int = 0,  # the split is spatial, so the seed plays no part; every embedded set takes the same arguments
        flip: bool = True,
        texture_scale: float = 4.0,
        photos: tuple[str, ...] = TEXTURE_PHOTOS,
    ) -> None:
        image_size = check_image_size(image_size, largest=LARGEST_TEXTURE_SIZE)
        split = check_split(split)
        val_fraction = check_val_fraction(val_fraction)
        channels = check_channels(channels) or 1
        if isinstance(texture_scale, bool) or not isinstance(texture_scale, (int, float)) or not texture_scale >= 2:
            raise UserError(f"texture_scale must be a number >= 2 (photo side / crop side), got {texture_scale!r}")
        if not photos:
            raise UserError(f"photos must name at least one of {', '.join(TEXTURE_PHOTOS)}")
        self.texture_scale = float(texture_scale)
        self.photo_names = tuple(photos)
        images = []
        for name in self.photo_names:
            photo = load_texture_photo(name)
            side = texture_photo_side(image_size, texture_scale, min(photo.shape))
            resized = resize_uint8(photo[..., None], side, side)
            # At least one crop wide on each side of the cut, so both splits always have valid crops.
            val_width = min(max(image_size, round(val_fraction * side)), side - image_size)
            columns = {"train": slice(0, side - val_width), "val": slice(side - val_width, side), "all": slice(0, side)}
            images.append(convert_channels(resized[:, columns[split]], channels))
        super().__init__(images, image_size, name="textures", channels=channels, flip=flip)

    def fixed_batch(self, num: int, seed: int = 0) -> torch.Tensor:
        """Like sample_batch but from a private generator seeded with ``seed`` and without flips
        (three photos give only three centre crops, too few for a picture grid)."""
        return self._random_crops(num, torch.Generator().manual_seed(seed), flip=False)[0]
