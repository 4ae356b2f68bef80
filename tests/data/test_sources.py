"""Each real data source satisfies the capability protocols of data/sources.py that the trainer dispatches on,
and no others; a source's declared capability does what it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kuramoto_diffusion.data import (
    AngleFileSource,
    BatchSource,
    Cifar10Source,
    FingerprintSource,
    FlowSource,
    ImageFolderSource,
    InMemoryImageSource,
    LabelledSource,
    LazyImageFolderSource,
    RowDecodingSource,
    SequenceSource,
    TextureSource,
    TorusAngleSource,
    open_angle_source,
)
from kuramoto_diffusion.data.torus import TORUS_DENSITIES

PROTOCOLS = (BatchSource, LabelledSource, SequenceSource, RowDecodingSource)


def capabilities(source: object) -> set[str]:
    return {protocol.__name__ for protocol in PROTOCOLS if isinstance(source, protocol)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(4):
        (root / "ab"[index % 2]).mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(root / "ab"[index % 2] / f"{index}.png")
    return root


def test_image_sources_are_labelled_batch_sources(folder, tmp_path):
    images = np.zeros((3, 8, 8), dtype=np.uint8)
    sources = [
        InMemoryImageSource(images, 8, name="zeros", channels=1, labels=[0, 1, 0]),
        ImageFolderSource(folder, 8, split="all", classes=True),
        TextureSource(8),
    ]
    for source in sources:
        assert capabilities(source) == {"BatchSource", "LabelledSource"}, source
    # Sources too costly to open here: their classes have the methods (RowDecodingSource has a data member, which
    # issubclass cannot check; the lazy folder's instance is checked below).
    for cls in (Cifar10Source, FingerprintSource):
        assert issubclass(cls, LabelledSource) and not issubclass(cls, SequenceSource), cls
        assert not hasattr(cls, "decodes_rows_on_demand"), cls


def test_a_lazy_folder_decodes_rows_and_the_rest_do_not(folder, tmp_path):
    lazy = LazyImageFolderSource(folder, 8, split="all", classes=True, index_cache=tmp_path / "cache")
    assert capabilities(lazy) == {"BatchSource", "LabelledSource", "RowDecodingSource"}
    full, labels = lazy.sample_labelled_batch(4, torch.Generator().manual_seed(3))
    part, part_labels = lazy.sample_labelled_batch(4, torch.Generator().manual_seed(3), rows=slice(1, 3))
    assert torch.equal(part[1:3], full[1:3]) and not part[0].any() and torch.equal(part_labels, labels)


def test_angle_and_flow_sources(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((10, 3)))
    assert capabilities(AngleFileSource(tmp_path / "a.npy", split="all")) == {"BatchSource"}
    torus = open_angle_source(f"torus:{next(iter(TORUS_DENSITIES))}")
    assert isinstance(torus, TorusAngleSource) and capabilities(torus) == {"BatchSource"}
    assert capabilities(TORUS_DENSITIES[next(iter(TORUS_DENSITIES))]()) == {"BatchSource"}

    flows = tmp_path / "flows"
    flows.mkdir()
    np.savez(flows / "a.npz", velocity=np.arange(3 * 2 * 4 * 4, dtype=np.float32).reshape(3, 2, 4, 4))
    source = FlowSource(flows, split="all")
    assert capabilities(source) == {"BatchSource", "SequenceSource"}
    sequences = source.sample_sequences(2, 2, torch.Generator().manual_seed(0))
    assert sequences.shape == (2, 2, 2, 4, 4) and torch.equal(
        sequences[:, 1] - sequences[:, 0], torch.full_like(sequences[:, 0], 32)
    )


def test_a_source_without_a_capability_fails_the_protocol():
    class Plain:
        def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
            return torch.zeros(batch_size, 1)

    class MarkerOnly(Plain):
        decodes_rows_on_demand = True

    assert capabilities(Plain()) == {"BatchSource"}
    assert capabilities(object()) == set()
    assert "RowDecodingSource" not in capabilities(MarkerOnly())  # a marker without the labelled method is not enough


def test_the_embedded_sets_are_one_registry_that_open_image_source_and_the_cli_read():
    """Every embedded set is one entry of EMBEDDED_IMAGE_SETS: open_image_source opens it by name with the same
    arguments, and DATA_CHOICES (the CLI's names) are the registry's keys."""
    from kuramoto_diffusion.data import DATA_CHOICES, EMBEDDED_IMAGE_SETS, open_image_source

    assert DATA_CHOICES == tuple(EMBEDDED_IMAGE_SETS)
    for name, source_class in EMBEDDED_IMAGE_SETS.items():
        source = open_image_source(name, 16, split="val", seed=3)
        assert type(source) is source_class
        batch = source.sample_batch(2, torch.Generator().manual_seed(0))
        assert batch.shape == (2, 1, 16, 16) and bool((batch.abs() <= 1).all())
