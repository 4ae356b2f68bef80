"""Disjoint held-out reference sets (data.reference_sets): no crop window in two sets, capacity errors, and the
fingerprints' held-out extension."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kuramoto_diffusion.data import FingerprintSource, InMemoryImageSource
from kuramoto_diffusion.data.reference_sets import (
    complement_crops,
    crop_capacity,
    disjoint_crop_sets,
    held_out_source,
    in_memory,
)
from kuramoto_diffusion.errors import UserError


def labelled_strips(count: int, rows: int, cols: int) -> list[np.ndarray]:
    """uint8 (rows, cols, 1) images whose pixels all differ: a crop's top-left pixel names its window."""
    values = np.arange(count * rows * cols, dtype=np.int64)
    assert values[-1] < 256
    return [
        values[i * rows * cols : (i + 1) * rows * cols].reshape(rows, cols, 1).astype(np.uint8) for i in range(count)
    ]


def window_ids(crops: torch.Tensor) -> list[int]:
    """The top-left pixel value of each crop (uint8 back from [-1, 1])."""
    return [int(v) for v in torch.round((crops[:, 0, 0, 0] + 1) * 127.5).tolist()]


def test_band_split_gives_distinct_windows_and_no_window_in_two_sets() -> None:
    # Two strips (fewer images than sets): windows are split into row bands.
    strips = labelled_strips(2, 30, 4)
    source = InMemoryImageSource(strips, 4, name="strips", channels=1, flip=False)
    assert crop_capacity(source, 3) == 2 * 9  # 27 tops per strip in bands of 9, one left
    sets = disjoint_crop_sets(source, 3, 18, seed=4)
    ids = [window_ids(crops) for crops in sets]
    for one in ids:
        assert len(set(one)) == len(one) == 18
    assert not set(ids[0]) & set(ids[1]) and not set(ids[1]) & set(ids[2]) and not set(ids[0]) & set(ids[2])
    # Each crop is the window its top-left pixel names, and set p's tops lie in band p.
    for part, crops in enumerate(sets):
        for crop, value in zip(crops, ids[part]):
            image, top = divmod(value, 120)[0], divmod(value, 120)[1] // 4
            assert 9 * part <= top < 9 * (part + 1)
            expected = torch.from_numpy(strips[image][top : top + 4, :, 0].astype(np.float64)) / 127.5 - 1
            torch.testing.assert_close(crop[0].double(), expected, atol=1e-6, rtol=0)


def test_image_split_shares_no_base_image() -> None:
    images = [np.full((6, 6, 1), 10 * i, dtype=np.uint8) for i in range(12)]
    source = InMemoryImageSource(images, 4, name="flat", channels=1, flip=True)
    assert crop_capacity(source, 4) == 3 * 9
    sets = disjoint_crop_sets(source, 4, 20, seed=0)
    owners = [set(window_ids(crops)) for crops in sets]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not owners[a] & owners[b]
    assert disjoint_crop_sets(source, 4, 20, seed=0)[2].equal(sets[2])  # deterministic


def test_more_sets_than_the_held_out_split_can_fill_raise() -> None:
    source = InMemoryImageSource(labelled_strips(2, 30, 4), 4, name="strips", channels=1, flip=False)
    with pytest.raises(UserError, match="strips: the held-out split fills 3 disjoint sets with at most 18"):
        disjoint_crop_sets(source, 3, 19)
    with pytest.raises(UserError, match="at most 0"):
        disjoint_crop_sets(InMemoryImageSource(labelled_strips(1, 4, 4), 4, name="one", channels=1), 2, 1)


def test_fingerprints_held_out_extension_starts_with_the_validation_prints(tmp_path, monkeypatch) -> None:
    plain = held_out_source("fingerprints", 16, seed=0, minimum=10)
    assert isinstance(plain, FingerprintSource) and len(plain) == 51
    extended = held_out_source("fingerprints", 16, seed=0, minimum=53, cache_dir=tmp_path)
    assert len(extended) == 53
    cached = list(tmp_path.iterdir())
    assert len(cached) == 1 and "from512-n2-seed0" in cached[0].name
    np.testing.assert_array_equal(np.asarray(extended.images[:51]), np.asarray(plain.images))
    # The extra prints are prints 512 and 513 of the seed-0 sequence (FingerprintSource: print i has seed print_seed(0, i)).
    from kuramoto_diffusion.data.fingerprints import NATIVE_PRINT_SIZE, print_seed, synthesize_fingerprint
    from kuramoto_diffusion.data.image_io import resize_uint8

    for offset, index in enumerate((512, 513)):
        native = np.rint(synthesize_fingerprint(NATIVE_PRINT_SIZE, print_seed(0, index)) * 255.0).astype(np.uint8)
        np.testing.assert_array_equal(extended.images[51 + offset], resize_uint8(native[..., None], 16, 16))
    training = FingerprintSource(16, split="train", seed=0).images
    assert not any(np.array_equal(extended.images[-1], image) for image in training)
    # A rerun reads the extra prints from the cache instead of synthesizing them.
    import kuramoto_diffusion.data.fingerprints as fingerprints

    def no_synthesis(*args: object) -> None:
        raise AssertionError("the cached prints should have been read")

    monkeypatch.setattr(fingerprints, "synthesize_fingerprint", no_synthesis)
    again = held_out_source("fingerprints", 16, seed=0, minimum=53, cache_dir=tmp_path)
    np.testing.assert_array_equal(np.asarray(again.images), np.asarray(extended.images))


def test_complement_crops_avoid_their_reference_set_and_repeat_only_when_short() -> None:
    source = InMemoryImageSource(labelled_strips(2, 30, 4), 4, name="strips", channels=1, flip=False)
    references = disjoint_crop_sets(source, 3, 18, seed=4)
    floor, distinct = complement_crops(source, 3, 1, 30, seed=4)
    ids = window_ids(floor)
    assert distinct == 30 and len(set(ids)) == 30
    assert not set(ids) & set(window_ids(references[1]))  # outside set 1's band …
    assert all(9 <= (value % 120) // 4 < 18 for value in window_ids(references[1]))
    assert all(not 9 <= (value % 120) // 4 < 18 for value in ids)
    short, distinct = complement_crops(source, 3, 0, 50, seed=4)  # 36 windows outside band 0
    counts = np.bincount(window_ids(short))
    assert distinct == 36 and len(set(window_ids(short))) == 36 and counts.max() == 2


def test_held_out_source_takes_the_models_val_fraction() -> None:
    for fraction in (0.1, 0.25):
        expected = FingerprintSource(32, split="val", val_fraction=fraction)
        held_out = held_out_source("fingerprints", 32, val_fraction=fraction)
        assert len(held_out) == len(expected)
        np.testing.assert_array_equal(np.asarray(held_out.images), np.asarray(expected.images))
    assert len(held_out_source("fingerprints", 32, val_fraction=0.25)) > len(held_out_source("fingerprints", 32))
    wide = held_out_source("textures", 32, val_fraction=0.3)
    assert all(image.shape[1] == 38 for image in in_memory(wide).images)
