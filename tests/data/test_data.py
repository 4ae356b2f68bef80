"""Data layer: image folders, textures, synthetic fingerprints and CIFAR-10 binary archives."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kuramoto_diffusion.data import (
    DATA_CHOICES,
    Cifar10Source,
    FingerprintSource,
    ImageFolderSource,
    ImageSource,
    TextureSource,
    open_image_source,
    synthesize_fingerprint,
)
from kuramoto_diffusion.data.fingerprints import print_seed
from kuramoto_diffusion.data.image_io import read_image
from kuramoto_diffusion.errors import UserError


def noise_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels == 3 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def assert_one_line_user_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ----------------------------------------------------------------------------------------------
# Image folders


def test_folder_search_is_recursive_case_insensitive_and_skips_hidden_and_other_files(tmp_path):
    save(tmp_path / "a.png", noise_image(20, 20, 1))
    save(tmp_path / "sub" / "deeper" / "b.JPG", noise_image(20, 24, 1))
    save(tmp_path / "sub" / "c.Tiff", noise_image(24, 20, 1))
    save(tmp_path / ".hidden" / "d.png", noise_image(20, 20, 1))
    (tmp_path / "._e.png").write_bytes(b"AppleDouble junk")  # would be a decode error if not skipped
    (tmp_path / "notes.txt").write_text("not an image")
    source = ImageFolderSource(tmp_path, 16, split="all")
    names = sorted(path.name for path in source.paths)
    assert names == ["a.png", "b.JPG", "c.Tiff"]
    assert len(source) == 3


def test_folder_channels_follow_the_images_unless_forced(tmp_path):
    gray_folder, mixed_folder = tmp_path / "gray", tmp_path / "mixed"
    save(gray_folder / "a.png", noise_image(20, 20, 1))
    save(gray_folder / "b.png", noise_image(20, 20, 1, seed=1))
    save(mixed_folder / "a.png", noise_image(20, 20, 1))
    save(mixed_folder / "b.png", noise_image(20, 20, 3))
    generator = torch.Generator().manual_seed(0)
    assert ImageFolderSource(gray_folder, 16, split="all").channels == 1
    mixed = ImageFolderSource(mixed_folder, 16, split="all")
    assert mixed.channels == 3
    assert mixed.sample_batch(5, generator).shape == (5, 3, 16, 16)
    forced_gray = ImageFolderSource(mixed_folder, 16, split="all", channels=1)
    assert forced_gray.sample_batch(5, generator).shape == (5, 1, 16, 16)
    forced_rgb = ImageFolderSource(gray_folder, 16, split="all", channels=3)
    batch = forced_rgb.sample_batch(4, generator)
    assert batch.shape == (4, 3, 16, 16)
    assert torch.equal(batch[:, 0], batch[:, 1]) and torch.equal(batch[:, 1], batch[:, 2])  # replicated gray


def test_folder_batch_values_are_scaled_to_minus_one_one(tmp_path):
    image = np.zeros((16, 16), dtype=np.uint8)
    image[:, 8:] = 255
    save(tmp_path / "half.png", image)
    source = ImageFolderSource(tmp_path, 16, split="all", flip=False)
    batch = source.sample_batch(3, torch.Generator().manual_seed(0))
    assert batch.dtype == torch.float32 and batch.shape == (3, 1, 16, 16)
    assert torch.all(batch[..., :8] == -1.0) and torch.all(batch[..., 8:] == 1.0)
    save(tmp_path / "noise.png", noise_image(30, 40))
    noisy = ImageFolderSource(tmp_path, 16, split="all").sample_batch(64, torch.Generator().manual_seed(1))
    assert noisy.min() >= -1.0 and noisy.max() <= 1.0 and noisy.min() < -0.9 and noisy.max() > 0.9


def test_sample_batch_is_determined_by_the_generator_state(tmp_path):
    for index in range(5):
        save(tmp_path / f"{index}.png", noise_image(40, 50, seed=index))
    source = ImageFolderSource(tmp_path, 16, split="all")
    first = source.sample_batch(8, torch.Generator().manual_seed(7))
    again = source.sample_batch(8, torch.Generator().manual_seed(7))
    other = source.sample_batch(8, torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    # A generator that has moved on gives a different batch, and the batch does not depend on torch's global RNG.
    generator = torch.Generator().manual_seed(7)
    source.sample_batch(8, generator)
    assert not torch.equal(source.sample_batch(8, generator), first)
    torch.manual_seed(999)
    assert torch.equal(source.sample_batch(8, torch.Generator().manual_seed(7)), first)


def test_crops_are_windows_of_the_resized_image_and_flips_happen(tmp_path):
    original = noise_image(40, 50)
    save(tmp_path / "only.png", original)
    image_size, crop_scale = 16, 1.5
    source = ImageFolderSource(tmp_path, image_size, split="all", crop_scale=crop_scale)
    # Direct computation: shorter side 40 -> round(16 * 1.5) = 24, longer side 50 -> 30, Lanczos.
    resized = np.asarray(Image.fromarray(original).resize((30, 24), Image.Resampling.LANCZOS))
    windows = np.lib.stride_tricks.sliding_window_view(resized, (image_size, image_size, 3))[:, :, 0]
    batch = source.sample_batch(64, torch.Generator().manual_seed(3))
    crops = np.rint((batch.permute(0, 2, 3, 1).numpy() + 1.0) * 127.5).astype(np.uint8)
    positions, flipped = set(), 0
    for crop in crops:
        plain = np.argwhere((windows == crop).all(axis=(2, 3, 4)))
        mirrored = np.argwhere((windows == crop[:, ::-1]).all(axis=(2, 3, 4)))
        assert len(plain) + len(mirrored) >= 1, "a crop is not a window of the resized image"
        positions.add(tuple((plain if len(plain) else mirrored)[0]))
        flipped += int(len(plain) == 0)
    assert len(positions) > 10  # crops move around
    assert 10 < flipped < 54  # about half are flipped
    no_flip = ImageFolderSource(tmp_path, image_size, split="all", crop_scale=crop_scale, flip=False)
    for crop in np.rint(
        (no_flip.sample_batch(32, torch.Generator().manual_seed(3)).permute(0, 2, 3, 1).numpy() + 1) * 127.5
    ):
        assert (windows == crop.astype(np.uint8)).all(axis=(2, 3, 4)).any()
    # fixed_batch: the centre window, identical on every call.
    fixed = no_flip.fixed_batch(2)
    assert torch.equal(fixed, no_flip.fixed_batch(2))
    centre = resized[4:20, 7:23]
    assert np.array_equal(np.rint((fixed[0].permute(1, 2, 0).numpy() + 1) * 127.5).astype(np.uint8), centre)


def test_socofing_like_bmp_is_cropped_not_resized_at_96(tmp_path):
    scan = noise_image(103, 96, 1)  # 96 wide x 103 high, like SOCOFing
    save(tmp_path / "1__M_Left_index_finger.BMP", scan)
    source = ImageFolderSource(tmp_path, 96, split="all", flip=False)
    assert source.images[0].shape == (103, 96, 1)
    crop = np.rint((source.fixed_batch(1)[0, 0].numpy() + 1) * 127.5).astype(np.uint8)
    assert np.array_equal(crop, scan[3:99])


def test_unusual_modes_load(tmp_path):
    rgb = noise_image(24, 24)
    Image.fromarray(rgb).quantize(16).save(tmp_path / "palette_real.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    sixteen = np.full((24, 24), 65535, dtype=np.uint16)
    sixteen[:, :12] = 257 * 200  # 16-bit 51400 is 8-bit 200 (v / 257), not 201 (v / 256)
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    rgba = np.dstack([rgb, np.zeros((24, 24), np.uint8)])  # fully transparent: alpha must just be dropped
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(noise_image(24, 24, 1)).convert("1").save(tmp_path / "bilevel.png")
    Image.fromarray(noise_image(24, 24, 1)).convert("LA").save(tmp_path / "gray_alpha.png")
    frames = [Image.fromarray(np.full((24, 24), value, np.uint8)) for value in (10, 200)]
    frames[0].save(tmp_path / "multipage.tif", save_all=True, append_images=frames[1:])

    sixteen_pixels = read_image(tmp_path / "sixteen.png")
    assert sixteen_pixels.dtype == np.uint8
    assert (sixteen_pixels[:, :12] == 200).all() and (sixteen_pixels[:, 12:] == 255).all()
    assert np.array_equal(read_image(tmp_path / "rgba.png"), rgb)
    assert read_image(tmp_path / "palette_real.png").shape == (24, 24, 3)
    assert read_image(tmp_path / "cmyk.tif").shape == (24, 24, 3)
    assert (read_image(tmp_path / "multipage.tif") == 10).all()  # first frame
    source = ImageFolderSource(tmp_path, 16, split="all")
    assert len(source) == 8 and source.channels == 3
    batch = source.sample_batch(16, torch.Generator().manual_seed(0))
    assert batch.shape == (16, 3, 16, 16) and batch.min() >= -1 and batch.max() <= 1


def test_gray_palette_counts_as_grayscale(tmp_path):
    gray = Image.fromarray(noise_image(20, 20, 1)).convert("P")  # L -> P keeps a gray palette
    gray.save(tmp_path / "gray_palette.png")
    assert ImageFolderSource(tmp_path, 16, split="all").channels == 1


@pytest.mark.parametrize(
    ("setup", "expected_fragment"),
    [
        ("missing", "no such file or folder"),
        ("empty", "folder is empty"),
        ("no_images", ".png"),
        ("zero_byte", "bad.png"),
        ("truncated", "bad.png"),
        ("too_small", "bad.png"),
        ("garbage", "bad.png"),
    ],
)
def test_bad_folders_raise_one_line_user_errors_naming_the_culprit(tmp_path, setup, expected_fragment):
    folder = tmp_path / "data"
    if setup != "missing":
        folder.mkdir()
    if setup not in ("missing", "empty"):
        save(folder / "good.png", noise_image(40, 40))
    if setup == "no_images":
        (folder / "good.png").unlink()
        (folder / "readme.txt").write_text("hello")
    elif setup == "zero_byte":
        (folder / "bad.png").write_bytes(b"")
    elif setup == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(noise_image(40, 40)).save(buffer, format="PNG")
        (folder / "bad.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif setup == "too_small":
        save(folder / "bad.png", noise_image(10, 30))
    elif setup == "garbage":
        (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(UserError) as excinfo:
        ImageFolderSource(folder, 16, split="all")
    assert_one_line_user_error(excinfo, expected_fragment)
    if setup == "missing":
        assert_one_line_user_error(excinfo, str(folder))
    if setup == "too_small":
        assert_one_line_user_error(excinfo, "30x10", "image_size=10")
    if setup in ("zero_byte", "truncated", "garbage"):
        assert_one_line_user_error(excinfo, "remove or replace")


@pytest.mark.parametrize("image_size", [4, 7, "32", 16.0, True])
def test_bad_image_size_is_a_user_error(tmp_path, image_size):
    save(tmp_path / "a.png", noise_image(40, 40))
    with pytest.raises(UserError, match="image.size|image_size"):
        ImageFolderSource(tmp_path, image_size, split="all")


def test_a_file_instead_of_a_folder_and_a_misspelt_data_name(tmp_path):
    image = save(tmp_path / "a.png", noise_image(40, 40))
    with pytest.raises(UserError) as excinfo:
        open_image_source(str(image), 16)
    assert_one_line_user_error(excinfo, "not a folder")
    with pytest.raises(UserError) as excinfo:
        open_image_source("texturez", 16)
    assert_one_line_user_error(excinfo, "textures", "fingerprints")


# ----------------------------------------------------------------------------------------------
# Splits


def test_folder_split_is_disjoint_complete_and_deterministic(tmp_path):
    for index in range(20):
        save(tmp_path / f"{index:02d}.png", noise_image(16, 16, 1, seed=index))
    train = ImageFolderSource(tmp_path, 8, split="train", val_fraction=0.2, seed=5)
    val = ImageFolderSource(tmp_path, 8, split="val", val_fraction=0.2, seed=5)
    everything = ImageFolderSource(tmp_path, 8, split="all")
    assert len(train) == 16 and len(val) == 4 and len(everything) == 20
    assert not set(train.paths) & set(val.paths)
    assert set(train.paths) | set(val.paths) == set(everything.paths)
    assert ImageFolderSource(tmp_path, 8, split="val", val_fraction=0.2, seed=5).paths == val.paths
    assert ImageFolderSource(tmp_path, 8, split="val", val_fraction=0.2, seed=6).paths != val.paths
    assert val.paths != everything.paths[-4:]  # a seeded random subset, not simply the last files


def test_validation_split_needs_images_and_valid_arguments(tmp_path):
    save(tmp_path / "only.png", noise_image(16, 16))
    assert len(ImageFolderSource(tmp_path, 8, split="train")) == 1  # a single image all goes to training
    with pytest.raises(UserError, match="nothing for validation"):
        ImageFolderSource(tmp_path, 8, split="val")
    with pytest.raises(UserError, match="split"):
        ImageFolderSource(tmp_path, 8, split="test")
    with pytest.raises(UserError, match="val_fraction"):
        ImageFolderSource(tmp_path, 8, split="train", val_fraction=1.0)


# ----------------------------------------------------------------------------------------------
# Textures


@pytest.mark.parametrize("image_size", [8, 32, 64])
def test_texture_batches_have_the_right_shape_and_real_content(image_size):
    source = open_image_source("textures", image_size)
    assert isinstance(source, ImageSource) and isinstance(source, TextureSource)
    assert len(source) == 3 and source.channels == 1 and source.name == "textures"
    batch = source.sample_batch(12, torch.Generator().manual_seed(0))
    assert batch.shape == (12, 1, image_size, image_size) and batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1
    # Real photo content: every crop has contrast, and the crops differ.
    assert (batch.flatten(1).std(dim=1) > 0.03).all()
    assert (batch[1:] - batch[:1]).abs().mean() > 0.05
    fixed = source.fixed_batch(6, seed=2)
    assert fixed.shape == (6, 1, image_size, image_size) and torch.equal(fixed, source.fixed_batch(6, seed=2))


def test_texture_split_is_spatial_and_disjoint():
    train = TextureSource(32, split="train")
    val = TextureSource(32, split="val")
    everything = TextureSource(32, split="all")
    for train_image, val_image, whole in zip(train.images, val.images, everything.images):
        width = train_image.shape[1]
        assert train_image.shape[1] + val_image.shape[1] == whole.shape[1]
        assert np.array_equal(whole[:, :width], train_image) and np.array_equal(whole[:, width:], val_image)
        assert val_image.shape[1] >= 32
    assert not torch.equal(train.fixed_batch(8), val.fixed_batch(8))
    assert TextureSource(32, channels=3).sample_batch(2, torch.Generator().manual_seed(0)).shape == (2, 3, 32, 32)
    with pytest.raises(UserError, match="too large"):
        TextureSource(513)


# ----------------------------------------------------------------------------------------------
# Fingerprints


def dominant_period(image: np.ndarray, crop: int = 64, padded: int = 128) -> float:
    """Wavelength in pixels of the strongest radial frequency of the central crop's power spectrum."""
    start = (image.shape[0] - crop) // 2
    region = image[start : start + crop, start : start + crop].astype(np.float64)
    window = np.hanning(crop)
    region = (region - region.mean()) * window[:, None] * window[None, :]
    power = np.abs(np.fft.fft2(region, s=(padded, padded))) ** 2
    frequency = np.fft.fftfreq(padded)
    radius = np.rint(np.hypot(frequency[:, None], frequency[None, :]) * padded).astype(int)
    profile = np.bincount(radius.ravel(), power.ravel())
    profile[: padded // 24] = 0  # ignore the slow shading of the finger mask (periods > 24 px)
    return padded / int(np.argmax(profile))


def box_mean(values: np.ndarray, size: int) -> np.ndarray:
    sums = np.cumsum(np.cumsum(np.pad(values, ((1, 0), (1, 0))), axis=0), axis=1)
    return (sums[size:, size:] - sums[:-size, size:] - sums[size:, :-size] + sums[:-size, :-size]) / size**2


def mean_coherence(image: np.ndarray, crop: int = 64, window: int = 9) -> float:
    """Mean structure-tensor coherence (0 = isotropic, 1 = perfectly oriented) of the central crop."""
    start = (image.shape[0] - crop) // 2
    region = image[start : start + crop, start : start + crop].astype(np.float64)
    grad_y, grad_x = np.gradient(region)
    jxx, jyy, jxy = (box_mean(g, window) for g in (grad_x * grad_x, grad_y * grad_y, grad_x * grad_y))
    return float((np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-12)).mean())


def test_fingerprints_are_deterministic_and_differ_between_seeds():
    first = synthesize_fingerprint(96, seed=3)
    assert first.shape == (96, 96) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert np.array_equal(first, synthesize_fingerprint(96, seed=3))
    assert np.abs(first - synthesize_fingerprint(96, seed=4)).mean() > 0.1
    # Dark ridges on light paper: the corners are background, the centre alternates dark and light.
    assert first[:5, :5].mean() > 0.85
    centre = first[32:64, 32:64]
    assert centre.min() < 0.3 and centre.max() > 0.75


@pytest.mark.parametrize("seed", range(8))
def test_fingerprint_ridges_have_the_right_period_and_are_oriented(seed):
    image = synthesize_fingerprint(96, seed=seed)
    assert 7.0 <= dominant_period(image) <= 11.0
    coherence = mean_coherence(image)
    noise_coherence = mean_coherence(np.random.default_rng(seed).random((96, 96)))
    assert coherence > 0.7 and coherence > noise_coherence + 0.4


def test_fingerprint_period_scales_with_size():
    assert 14.0 <= dominant_period(synthesize_fingerprint(192, seed=0), crop=128, padded=256) <= 22.0


def test_fingerprint_synthesis_is_fast():
    synthesize_fingerprint(96, seed=0)  # warm-up
    start = time.perf_counter()
    for seed in range(10):
        synthesize_fingerprint(96, seed=seed)
    per_print = (time.perf_counter() - start) / 10
    assert per_print < 0.2  # ~10 ms on one core; generous for loaded CI machines


def test_fingerprint_source_splits_caches_and_resizes(tmp_path):
    cache = tmp_path / "cache"
    train = FingerprintSource(32, num_prints=10, val_fraction=0.2, cache_dir=cache)
    assert len(train) == 8 and train.channels == 1
    assert not cache.exists()  # lazy: nothing is synthesized before the first batch
    batch = train.sample_batch(4, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 1, 32, 32) and batch.min() >= -1 and batch.max() <= 1
    cache_files = list(cache.glob("fingerprints-*.npz"))
    assert len(cache_files) == 1 and not list(cache.glob(".*tmp"))
    val = FingerprintSource(32, num_prints=10, val_fraction=0.2, cache_dir=cache, split="val")
    assert len(val) == 2
    # Disjoint: no validation print equals a training print.
    for val_print in val.images:
        assert all(not np.array_equal(val_print, train_print) for train_print in train.images)
    # The cache holds exactly what synthesis gives; a corrupt cache is silently regenerated.
    fresh = FingerprintSource(32, num_prints=10, val_fraction=0.2, disk_cache=False)
    assert np.array_equal(fresh.images, train.images)
    cache_files[0].write_bytes(b"garbage")
    regenerated = FingerprintSource(32, num_prints=10, val_fraction=0.2, cache_dir=cache)
    assert np.array_equal(regenerated.images, train.images)
    assert np.load(cache_files[0])["prints"].shape == (10, 96, 96)
    # Whole prints, no crop: the native size is returned unchanged at 96 px.
    native = FingerprintSource(96, num_prints=3, val_fraction=0.0, disk_cache=False, flip=False)
    expected = np.rint(synthesize_fingerprint(96, seed=print_seed(0, 0)) * 255).astype(np.uint8)
    assert np.array_equal(native.images[0][..., 0], expected)
    assert native.fixed_batch(3).shape == (3, 1, 96, 96)
    assert FingerprintSource(32, num_prints=3, channels=3, disk_cache=False).fixed_batch(2).shape == (2, 3, 32, 32)


def test_open_fingerprints_is_lazy_and_uses_the_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source = open_image_source("fingerprints", 64, split="val")
    assert isinstance(source, FingerprintSource) and isinstance(source, ImageSource)
    assert len(source) == 51 and source.channels == 1 and source.image_size == 64
    assert source.cache_path.parent == tmp_path / "kuramoto-diffusion"
    assert "fingerprints" in DATA_CHOICES and "textures" in DATA_CHOICES


# ----------------------------------------------------------------------------------------------
# CIFAR-10 binary


CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fake_cifar_batches(
    records_per_batch: int = 3, test_records: int = 5
) -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    """{file name: (bytes, images (N, 32, 32, 3), labels)} for 5 train batches and a test batch."""
    rng = np.random.default_rng(0)
    batches = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        count = test_records if name == "test_batch.bin" else records_per_batch
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        planes = images.transpose(0, 3, 1, 2).reshape(count, -1)  # R plane, G plane, B plane
        records = np.concatenate([labels[:, None], planes], axis=1)
        batches[name] = (records.tobytes(), images, labels.astype(np.int64))
    return batches


def write_cifar_folder(folder: Path, batches) -> Path:
    folder.mkdir(parents=True)
    for name, (data, _, _) in batches.items():
        (folder / name).write_bytes(data)
    (folder / "batches.meta.txt").write_text("\n".join(CLASS_NAMES) + "\n\n")
    return folder


def write_tar_gz(archive: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_cifar_binary_folder_and_archive_read_exact_pixels_and_labels(tmp_path):
    batches = fake_cifar_batches()
    folder = write_cifar_folder(tmp_path / "cifar-10-batches-bin", batches)
    members = {f"cifar-10-batches-bin/{name}": data for name, (data, _, _) in batches.items()}
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(CLASS_NAMES) + "\n").encode()
    archive = write_tar_gz(tmp_path / "cifar-10-binary.tar.gz", members)
    train_names = [f"data_batch_{i}.bin" for i in range(1, 6)]
    expected_train = np.concatenate([batches[name][1] for name in train_names])
    expected_labels = np.concatenate([batches[name][2] for name in train_names])
    for spec in (folder, archive, tmp_path):  # tmp_path: the folder that holds cifar-10-batches-bin
        source = open_image_source(str(spec), 32, flip=False)
        assert isinstance(source, Cifar10Source) and isinstance(source, ImageSource)
        assert len(source) == 15 and source.channels == 3
        assert np.array_equal(source.images, expected_train)
        assert np.array_equal(source.labels, expected_labels)
        assert list(source.class_names) == CLASS_NAMES
        first = np.rint((source.fixed_batch(15).permute(0, 2, 3, 1).numpy() + 1) * 127.5).astype(np.uint8)
        assert sorted(map(bytes, first)) == sorted(map(bytes, expected_train))  # fixed_batch covers them all
        val = open_image_source(str(spec), 32, split="val")
        assert len(val) == 5 and np.array_equal(val.images, batches["test_batch.bin"][1])
        assert np.array_equal(val.labels, batches["test_batch.bin"][2])
    assert len(Cifar10Source(archive, split="all")) == 20
    small = Cifar10Source(archive, 16, channels=1)
    assert small.sample_batch(4, torch.Generator().manual_seed(0)).shape == (4, 1, 16, 16)
    with pytest.raises(UserError, match="32"):
        Cifar10Source(archive, 64)


def test_cifar_incomplete_or_corrupt_archives_are_user_errors(tmp_path):
    batches = fake_cifar_batches()
    missing = write_tar_gz(
        tmp_path / "partial.tar.gz", {"cifar-10-batches-bin/test_batch.bin": batches["test_batch.bin"][0]}
    )
    with pytest.raises(UserError) as excinfo:
        open_image_source(str(missing), 32)
    assert_one_line_user_error(excinfo, "data_batch_1.bin", "not found")
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(
        write_tar_gz(tmp_path / "whole.tar.gz", {"x/data_batch_1.bin": bytes(3073 * 50)}).read_bytes()[:200]
    )
    with pytest.raises(UserError) as excinfo:
        open_image_source(str(truncated), 32)
    assert_one_line_user_error(excinfo, "cut.tar.gz")
    photos = write_tar_gz(tmp_path / "photos.tar.gz", {"photos/a.png": b"not really"})
    with pytest.raises(UserError) as excinfo:
        open_image_source(str(photos), 32)
    assert_one_line_user_error(excinfo, "photos.tar.gz", "no CIFAR-10 batches", "extract them into a folder")
    odd = write_cifar_folder(tmp_path / "odd" / "cifar-10-batches-bin", batches)
    (odd / "data_batch_2.bin").write_bytes(bytes(3000))
    with pytest.raises(UserError) as excinfo:
        open_image_source(str(odd), 32)
    assert_one_line_user_error(excinfo, "data_batch_2.bin", "3073")


def test_cifar_pickle_version_is_refused_without_unpickling(tmp_path):
    # Contents that would run code if unpickled: the refusal must come before any unpickling.
    evil = b"cos\nsystem\n(S'echo pwned > " + str(tmp_path / "pwned").encode() + b"'\ntR."
    members = {"cifar-10-batches-py/data_batch_1": evil, "cifar-10-batches-py/batches.meta": evil}
    archives = [
        write_tar_gz(tmp_path / "cifar-10-python.tar.gz", members),
        write_tar_gz(tmp_path / "renamed.tar.gz", members),
    ]
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(evil)
    for spec in (*archives, folder):
        for split in ("train", "val"):
            with pytest.raises(UserError) as excinfo:
                open_image_source(str(spec), 32, split=split)
            assert_one_line_user_error(excinfo, "pickle", "arbitrary code", "cifar-10-binary.tar.gz")
    assert not (tmp_path / "pwned").exists()
