"""Training data: image sources that hand out batches of square images in [-1, 1].

``open_image_source(spec, image_size)`` opens one of

- "textures": crops of the brick / grass / gravel photos that ship with scikit-image (textures.py);
- "fingerprints": synthetic fingerprints made on the fly (fingerprints.py);
- a folder of image files, searched recursively (images.py);
- CIFAR-10 in its binary form: cifar-10-binary.tar.gz or its folder cifar-10-batches-bin (cifar.py).

Angle data (``angles:FILE`` for a .npy/.csv array of N rows by D angles, ``torus:NAME`` for a
known 2-torus density) is opened with ``open_angle_source`` instead (angles.py).

Nothing is downloaded at run time. Every image source satisfies the ``ImageSource`` protocol; what a source
can do for training (labels, frame sequences, decoding selected rows) is told by the protocols of sources.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ..config import BAD_IMAGE_POLICIES, DEFAULT_MAX_IMAGE_PIXELS, DataConfig
from ..errors import UserError
from .angles import (
    ANGLE_EXTENSIONS,
    AngleFileSource,
    AngleSource,
    TorusAngleSource,
    is_angle_spec,
    open_angle_source,
    read_angle_file,
    save_angles,
)
from .cifar import Cifar10Source, is_cifar_path, read_cifar10_binary
from .fingerprints import FingerprintSource, synthesize_fingerprint
from .flows import FLOW_PREFIX, FlowSource, is_flow_spec, open_flow_source
from .image_io import IMAGE_EXTENSIONS
from .images import ImageFolderSource, InMemoryImageSource
from .lazy_folder import LazyImageFolderSource
from .sources import BatchSource, LabelledSource, RowDecodingSource, SequenceSource
from .textures import TextureSource

# The embedded image data sets by name: adding one is its module (a source class taking image_size, channels, split,
# val_fraction, seed and flip, as these do) and one line here. DATA_CHOICES, the CLI's names, follow.
EMBEDDED_IMAGE_SETS: dict[str, type[TextureSource] | type[FingerprintSource]] = {
    "textures": TextureSource,
    "fingerprints": FingerprintSource,
}
DATA_CHOICES = tuple(EMBEDDED_IMAGE_SETS)


@runtime_checkable
class ImageSource(Protocol):
    """A data set of square images, sampled as float32 batches in [-1, 1]."""

    name: str  # e.g. "textures", "fingerprints", or the folder path
    channels: int  # 1 (grayscale) or 3 (RGB)
    image_size: int  # square output side in pixels
    class_names: tuple[str, ...]  # one per class of a folder of class subfolders (or CIFAR-10); () for unlabelled data

    def __len__(self) -> int:
        """Number of distinct base images (for textures: number of photos)."""
        ...

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """(batch_size, channels, image_size, image_size) float32 in [-1, 1]; random images with
        random crops (and horizontal flips if enabled). ALL randomness must come from `generator`
        (torch.randint/torch.rand with generator=...), so that the same generator state gives the same batch."""
        ...

    def fixed_batch(self, num: int, seed: int = 0) -> torch.Tensor:
        """A deterministic batch (same result every call for the same num/seed), used for picture grids and evaluation."""
        ...


def open_image_source(
    spec: str,
    image_size: int,
    *,
    channels: int | None = None,
    split: str = "train",
    val_fraction: float = 0.1,
    seed: int = 0,
    flip: bool = True,
    on_bad_image: str = "error",
    classes: bool = False,
    lazy: bool = False,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> ImageSource:
    """spec is "textures", "fingerprints", a path to a folder of images, or a path to a CIFAR-10 binary
    archive (cifar-10-binary.tar.gz) / its extracted folder cifar-10-batches-bin. split is "train", "val" or "all";
    the split is by base image, deterministic given seed. channels None = the data's natural count
    (folder: 3 if any image is colour, else 1; textures/fingerprints: 1; CIFAR: 3); 1 or 3 converts.

    Textures split spatially (photo strips) and CIFAR uses its official test batch as "val"
    (also accepted as "test"); see their modules. ``on_bad_image`` ("error" | "skip") applies to
    image folders, and so does ``classes`` (each first-level subfolder is a class): see ``ImageFolderSource``.
    ``lazy`` opens a folder as a ``LazyImageFolderSource`` (files decoded per batch; for folders larger than memory).
    ``max_image_pixels``: an image file of a folder whose header declares more pixels (width × height) is refused
    before it is decoded (a decompression-bomb guard; default Pillow's 89,478,485); raise it for trusted large files.
    """
    if classes and spec in EMBEDDED_IMAGE_SETS:
        raise UserError(
            f"{spec!r} has no classes; class-conditional training needs a folder with one subfolder per class"
        )
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str) or not spec:
        raise UserError(f"data must be one of {', '.join(DATA_CHOICES)} or a path, got {spec!r}")
    if is_angle_spec(spec):
        raise UserError(
            f"{spec} is angle data, not images; this command needs images (textures, fingerprints, a folder)"
        )
    if is_flow_spec(spec):
        raise UserError(
            f"{spec} is flow data, not images; this command needs images (textures, fingerprints, a folder)"
        )
    if spec in EMBEDDED_IMAGE_SETS:
        return EMBEDDED_IMAGE_SETS[spec](
            image_size, channels=channels, split=split, val_fraction=val_fraction, seed=seed, flip=flip
        )
    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep not in spec and "/" not in spec:
            # Most likely a misspelt data set name rather than a path.
            raise UserError(
                f"{spec!r} is neither an embedded data set ({', '.join(DATA_CHOICES)}) nor an existing path; "
                "check the spelling"
            )
        raise UserError(f"{path}: no such file or folder; check the path")
    if path.is_file() and path.suffix.lower() in ANGLE_EXTENSIONS:
        raise UserError(
            f"{path}: a {path.suffix} file is angle data; pass the data as angles:{spec} (and degrees=True if it holds degrees)"
        )
    if is_cifar_path(path):
        return Cifar10Source(path, image_size, channels=channels, split=split, flip=flip)
    folder_source = LazyImageFolderSource if lazy else ImageFolderSource
    return folder_source(
        path,
        image_size,
        channels=channels,
        split=split,
        val_fraction=val_fraction,
        seed=seed,
        flip=flip,
        on_bad_image=on_bad_image,
        classes=classes,
        max_image_pixels=max_image_pixels,
    )


def open_source(data: DataConfig, split: str = "train") -> ImageSource | AngleSource | FlowSource:
    """The source a run's ``DataConfig`` names (images, angles or flows), at ``split``."""
    if is_flow_spec(data.source):
        return open_flow_source(data.source, split=split, val_fraction=data.val_fraction, seed=data.seed)
    if is_angle_spec(data.source):
        return open_angle_source(
            data.source, degrees=data.degrees, split=split, val_fraction=data.val_fraction, seed=data.seed
        )
    return open_image_source(
        data.source,
        data.image_size,
        channels=data.channels,
        split=split,
        val_fraction=data.val_fraction,
        seed=data.seed,
        flip=data.flip,
        on_bad_image=data.on_bad_image,
        classes=data.classes,
        lazy=data.lazy,
        max_image_pixels=data.max_image_pixels,
    )


__all__ = [
    "open_source",
    "BatchSource",
    "LabelledSource",
    "RowDecodingSource",
    "SequenceSource",
    "FLOW_PREFIX",
    "FlowSource",
    "is_flow_spec",
    "open_flow_source",
    "ANGLE_EXTENSIONS",
    "AngleFileSource",
    "AngleSource",
    "TorusAngleSource",
    "is_angle_spec",
    "open_angle_source",
    "read_angle_file",
    "save_angles",
    "BAD_IMAGE_POLICIES",
    "DATA_CHOICES",
    "EMBEDDED_IMAGE_SETS",
    "IMAGE_EXTENSIONS",
    "Cifar10Source",
    "FingerprintSource",
    "ImageFolderSource",
    "ImageSource",
    "InMemoryImageSource",
    "LazyImageFolderSource",
    "TextureSource",
    "is_cifar_path",
    "open_image_source",
    "read_cifar10_binary",
    "synthesize_fingerprint",
]
