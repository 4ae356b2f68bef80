"""CIFAR-10 from its binary distribution (cifar-10-binary.tar.gz), read without extracting.

Accepted: the archive itself (any .tar.gz / .tgz / .tar holding the ``*.bin`` batches)
or the extracted folder ``cifar-10-batches-bin`` (or a folder that contains it). Each
batch file is a run of 3073-byte records: 1 label byte (0-9), then the 32 x 32 red,
green and blue planes (1024 bytes each, row-major). ``batches.meta.txt`` holds the
class names, one per line.

Splits are the official ones: "train" = data_batch_1.bin .. data_batch_5.bin (50 000
images), "val" (alias "test") = test_batch.bin (10 000), "all" = both; val_fraction
and the seed play no part.

The Python version (cifar-10-python.tar.gz, folder cifar-10-batches-py) is refused:
its batches are pickles, and unpickling a file can run arbitrary code.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from .image_io import check_channels, check_image_size, convert_channels, resize_uint8
from .images import InMemoryImageSource
from .splits import check_split

CIFAR_SIDE = 32
RECORD_BYTES = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE  # label + RGB planes = 3073
TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_BATCH = "test_batch.bin"
META_FILE = "batches.meta.txt"
BINARY_FOLDER = "cifar-10-batches-bin"
PICKLE_FOLDER = "cifar-10-batches-py"
CIFAR_SPLITS = ("train", "val", "test", "all")
# The official order; used only if batches.meta.txt is missing.
DEFAULT_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def _pickle_refusal(path: Path) -> UserError:
    return UserError(
        f"{path}: this is the Python (pickle) version of CIFAR-10, and this tool never unpickles files "
        "(unpickling can run arbitrary code); download cifar-10-binary.tar.gz (the binary version) instead"
    )


def is_cifar_path(path: Path) -> bool:
    """Whether ``path`` should be read as CIFAR-10: a tar archive, or a folder holding CIFAR batches
    (binary or pickled; the pickled kind is then refused by the reader with an explanation)."""
    if path.is_file():
        return path.name.lower().endswith(_ARCHIVE_SUFFIXES)
    if not path.is_dir():
        return False
    return path.name in (BINARY_FOLDER, PICKLE_FOLDER) or any(
        (path / name).exists() for name in (TRAIN_BATCHES[0], TEST_BATCH, "data_batch_1", BINARY_FOLDER, PICKLE_FOLDER)
    )


def _batch_names(split: str) -> tuple[str, ...]:
    if split == "train":
        return TRAIN_BATCHES
    if split in ("val", "test"):
        return (TEST_BATCH,)
    return TRAIN_BATCHES + (TEST_BATCH,)


def _read_folder(folder: Path, wanted: tuple[str, ...]) -> tuple[dict[str, bytes], set[str]]:
    """(contents of the wanted files and the meta file, names of all CIFAR batch files present)."""
    if (folder / BINARY_FOLDER).is_dir():
        folder = folder / BINARY_FOLDER
    if folder.name == PICKLE_FOLDER or (folder / PICKLE_FOLDER).is_dir() or (folder / "data_batch_1").is_file():
        if not (folder / TRAIN_BATCHES[0]).is_file():
            raise _pickle_refusal(folder)
    present = {name for name in TRAIN_BATCHES + (TEST_BATCH,) if (folder / name).is_file()}
    found = {}
    for name in wanted + (META_FILE,):
        file = folder / name
        if file.is_file():
            try:
                found[name] = file.read_bytes()
            except OSError as error:
                raise UserError(f"{file}: cannot read ({error.strerror}); check its permissions") from None
    return found, present


def _read_archive(archive_path: Path, wanted: tuple[str, ...]) -> tuple[dict[str, bytes], set[str]]:
    """Like _read_folder, for a tar archive."""
    if "cifar-10-python" in archive_path.name.lower():
        raise _pickle_refusal(archive_path)
    found: dict[str, bytes] = {}
    present: set[str] = set()
    saw_pickle = False
    try:
        # One sequential pass: random access into a .tar.gz would decompress from the start each time.
        with tarfile.open(archive_path, "r:*") as archive:
            for member in archive:
                base = member.name.rsplit("/", 1)[-1]
                if PICKLE_FOLDER in member.name.split("/"):
                    saw_pickle = True
                if member.isfile() and base in TRAIN_BATCHES + (TEST_BATCH,):
                    present.add(base)
                if member.isfile() and base in wanted + (META_FILE,) and base not in found:
                    handle = archive.extractfile(member)
                    if handle is not None:
                        found[base] = handle.read()
    except (tarfile.TarError, EOFError, OSError) as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise UserError(
            f"{archive_path}: cannot read the archive ({reason}; truncated or corrupt?); download cifar-10-binary.tar.gz again"
        ) from None
    if saw_pickle and not present:
        raise _pickle_refusal(archive_path)
    return found, present


def _decode_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Records -> (images uint8 (N, 32, 32, 3), labels int64 (N,))."""
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise UserError(
            f"{where}: {len(data)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records; "
            "download cifar-10-binary.tar.gz again"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise UserError(
            f"{where}: label {labels.max()} outside 0-9, not a CIFAR-10 batch; download cifar-10-binary.tar.gz again"
        )
    images = records[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).transpose(0, 2, 3, 1)  # planes -> HWC
    return np.ascontiguousarray(images), labels


def read_cifar10_binary(
    path: str | os.PathLike[str], split: str = "train"
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read a CIFAR-10 binary archive or folder -> (images uint8 (N, 32, 32, 3), labels int64 (N,) in 0..9,
    class names). Batches come in file order (data_batch_1..5, then test_batch)."""
    split = check_split(split, CIFAR_SPLITS)
    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"{path}: no such file or folder; check the path")
    wanted = _batch_names(split)
    found, present = _read_folder(path, wanted) if path.is_dir() else _read_archive(path, wanted)
    missing = [name for name in wanted if name not in found]
    if not present:
        raise UserError(
            f"{path}: no CIFAR-10 batches (data_batch_*.bin, test_batch.bin) inside; pass cifar-10-binary.tar.gz "
            "or its folder cifar-10-batches-bin (archives of image files are not read: extract them into a folder)"
        )
    if missing:
        raise UserError(
            f"{path}: {', '.join(missing)} not found, so this is not a complete CIFAR-10 binary archive; "
            "download cifar-10-binary.tar.gz"
        )
    decoded = [_decode_batch(found[name], f"{path}:{name}") for name in wanted]
    images = np.concatenate([images for images, _ in decoded])
    labels = np.concatenate([labels for _, labels in decoded])
    class_names: tuple[str, ...] = DEFAULT_CLASS_NAMES
    if META_FILE in found:
        names = tuple(line.strip() for line in found[META_FILE].decode("utf-8", "replace").splitlines() if line.strip())
        if len(names) >= 10:
            class_names = names[:10]
    return images, labels, class_names


class Cifar10Source(InMemoryImageSource):
    """CIFAR-10 images (32 x 32 RGB), resized to image_size <= 32 when smaller; whole images, no crop.

    ``labels`` (int64, one per base image, 0..9) and ``class_names`` describe the images;
    ``channels`` None or 3 = RGB, 1 = luma.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_size: int = CIFAR_SIDE,
        *,
        channels: int | None = None,
        split: str = "train",
        flip: bool = True,
    ) -> None:
        image_size = check_image_size(image_size, largest=CIFAR_SIDE, what="image_size (CIFAR-10 images are 32x32)")
        split = check_split(split, CIFAR_SPLITS)
        channels = check_channels(channels) or 3
        images, labels, class_names = read_cifar10_binary(path, split)
        images = convert_channels(images, channels)
        if image_size != CIFAR_SIDE:
            images = np.stack([resize_uint8(image, image_size, image_size) for image in images])
        super().__init__(
            images,
            image_size,
            name=str(Path(path).expanduser()),
            channels=channels,
            flip=flip,
            labels=labels,
            class_names=class_names,
        )
