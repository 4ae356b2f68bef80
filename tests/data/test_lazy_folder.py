"""Folders larger than memory: lazy decoding, the cached file index, bad files met during training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kuramoto_diffusion.data import ImageFolderSource, LazyImageFolderSource, lazy_folder, open_image_source
from kuramoto_diffusion.errors import UserError


def make_folder(root, sizes=((20, 24), (16, 30), (40, 18), (22, 22), (25, 17)), classes=False):
    rng = np.random.default_rng(0)
    for index, (height, width) in enumerate(sizes):
        folder = root / (("a", "b")[index % 2] if classes else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8)).save(folder / f"{index}.png")
    return root


@pytest.mark.parametrize("classes", [False, True])
def test_lazy_source_gives_the_in_memory_batches(tmp_path, classes):
    folder = make_folder(tmp_path / "images", classes=classes)
    cache = tmp_path / "cache"
    eager = ImageFolderSource(folder, 16, split="all", classes=classes)
    lazy = LazyImageFolderSource(folder, 16, split="all", classes=classes, index_cache=cache)
    assert lazy.channels == eager.channels == 1 and len(lazy) == len(eager)
    for seed in range(3):
        if classes:
            a, labels_a = eager.sample_labelled_batch(12, torch.Generator().manual_seed(seed))
            b, labels_b = lazy.sample_labelled_batch(12, torch.Generator().manual_seed(seed))
            assert torch.equal(labels_a, labels_b)
        else:
            a = eager.sample_batch(12, torch.Generator().manual_seed(seed))
            b = lazy.sample_batch(12, torch.Generator().manual_seed(seed))
        assert torch.equal(a, b)
    assert lazy.fixed_batch(7, seed=1).shape == (7, 1, 16, 16)
    assert isinstance(open_image_source(folder, 16, split="all", lazy=True), LazyImageFolderSource)


def test_the_file_index_is_cached_until_a_directory_changes(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    first = lazy_folder.indexed_image_files(folder, cache)
    calls = []
    real_find = lazy_folder.find_image_files
    monkeypatch.setattr(lazy_folder, "find_image_files", lambda path: calls.append(path) or real_find(path))
    assert lazy_folder.indexed_image_files(folder, cache) == first and calls == []  # from the cache
    (folder / "sub").mkdir()
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(folder / "sub" / "new.png")
    again = lazy_folder.indexed_image_files(folder, cache)
    assert len(calls) == 1 and len(again) == len(first) + 1
    (cache / next(p.name for p in cache.iterdir())).write_text("{not json")  # a damaged cache is rebuilt
    assert lazy_folder.indexed_image_files(folder, cache) == again


def test_a_bad_file_met_in_training_stops_or_is_skipped(tmp_path):
    folder = make_folder(tmp_path / "images")
    data = (folder / "0.png").read_bytes()
    (folder / "0.png").write_bytes(data[: len(data) // 2])  # truncated after the index was made
    strict = LazyImageFolderSource(folder, 16, split="all", channels=1, index_cache=tmp_path / "cache")
    with pytest.raises(UserError, match="0.png: cannot decode image"):
        for seed in range(20):
            strict.sample_batch(8, torch.Generator().manual_seed(seed))
    tolerant = LazyImageFolderSource(
        folder, 16, split="all", channels=1, on_bad_image="skip", index_cache=tmp_path / "cache"
    )
    with pytest.warns(UserWarning, match="skipped .*0.png"):
        for seed in range(20):
            batch = tolerant.sample_batch(8, torch.Generator().manual_seed(seed))
            assert batch.shape == (8, 1, 16, 16)
    assert tolerant.skipped and all(path.name == "0.png" for path, _ in tolerant.skipped)


def test_train_and_resume_with_lazy_loading(tmp_path):
    import json
    import os
    import subprocess
    import sys

    folder = make_folder(tmp_path / "images")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    base = [
        sys.executable,
        "-m",
        "kuramoto_diffusion",
        "train",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        "--checkpoint-every",
        "2",
        "--sample-every",
        "0",
    ]
    subprocess.run(
        [
            *base,
            "--data",
            str(folder),
            "--lazy",
            "--image-size",
            "16",
            "--preset",
            "tiny",
            "--steps",
            "10",
            "--batch-size",
            "4",
            "--train-steps",
            "2",
        ],
        check=True,
        env=environment,
        timeout=300,
    )
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["lazy"] is True
    assert any((tmp_path / "cache" / "kuramoto-diffusion").glob("index-*.json"))
    subprocess.run([*base, "--resume", "--train-steps", "4"], check=True, env=environment, timeout=300)
    assert (tmp_path / "run" / "checkpoints" / "step-00000004").is_dir()


def test_a_cache_hit_does_not_list_the_folder(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images")
    cache = tmp_path / "cache"
    first = lazy_folder.indexed_image_files(folder, cache)
    import os

    def no_walk(*args, **kwargs):
        raise AssertionError("the folder was listed on a cache hit")

    monkeypatch.setattr(os, "walk", no_walk)
    monkeypatch.setattr(lazy_folder, "find_image_files", no_walk)
    assert lazy_folder.indexed_image_files(folder, cache) == first


def test_a_process_decodes_only_its_rows_of_the_shared_picks(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "images", classes=True)
    lazy = LazyImageFolderSource(folder, 16, split="all", classes=True, index_cache=tmp_path / "cache")
    full_generator, part_generator = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    full, full_labels = lazy.sample_labelled_batch(12, full_generator)
    decoded = []
    original = lazy._decode
    monkeypatch.setattr(lazy, "_decode", lambda path: decoded.append(path) or original(path))
    part, part_labels = lazy.sample_labelled_batch(12, part_generator, rows=slice(4, 8))
    which = torch.randint(
        len(lazy.paths), (12,), generator=torch.Generator().manual_seed(3)
    ).tolist()  # draw_crop_picks' first draw
    assert sorted(decoded) == sorted(set(which[4:8]))  # only the process's own rows are read, each file once
    assert torch.equal(part[4:8], full[4:8]) and not part[:4].any() and not part[8:].any()
    assert torch.equal(part_labels[4:8], full_labels[4:8])
    assert torch.equal(part_generator.get_state(), full_generator.get_state())  # every process draws the same


def test_a_skipped_file_is_replaced_by_the_next_without_drawing(tmp_path):
    folder = make_folder(tmp_path / "images")
    data = (folder / "0.png").read_bytes()
    (folder / "0.png").write_bytes(data[: len(data) // 2])
    lazy = LazyImageFolderSource(
        folder, 16, split="all", channels=1, on_bad_image="skip", index_cache=tmp_path / "cache"
    )
    bad = next(i for i, path in enumerate(lazy.paths) if path.name == "0.png")
    with pytest.warns(UserWarning, match="skipped .*0.png"):
        batch, which = lazy._crops([bad, bad], np.full((2, 2), 0.5), [False, False], False)
    following = (bad + 1) % len(lazy.paths)
    assert which == [following, following]
    assert torch.equal(batch, lazy._crops([following, following], np.full((2, 2), 0.5), [False, False], False)[0])
