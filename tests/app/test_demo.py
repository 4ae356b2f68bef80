"""The demo's comparison of shipped models: kuramoto_vs_euclidean.png."""

from __future__ import annotations

import torch
from PIL import Image

from kuramoto_diffusion.app.demo import compare_shipped_models
from kuramoto_diffusion.config import image_model_config
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.viz.images import image_grid


def save_untrained(directory, process) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    DiffusionModel(image_model_config(process, 1, 8, "tiny")).save_pretrained(directory)


def test_the_comparison_shows_real_crops_then_each_shipped_model_of_a_complete_pair(tmp_path):
    save_untrained(tmp_path / "fp-k", KuramotoConfig(coupling="local", steps=3))
    save_untrained(tmp_path / "fp-e", EuclideanConfig(steps=3))
    save_untrained(tmp_path / "tex-k", KuramotoConfig(coupling="local", steps=3))  # its baseline is missing
    pairs = {"fingerprints": ("fp-k", "fp-e"), "textures": ("tex-k", "tex-e")}
    picture = tmp_path / "out" / "comparison.png"

    drawn = compare_shipped_models(picture, root=tmp_path, pairs=pairs, num=3, seed=1)

    assert [(entry.data, entry.model) for entry in drawn] == [("fingerprints", "fp-k"), ("fingerprints", "fp-e")]
    assert 0.0 <= drawn[0].clipped_fraction <= 1.0
    assert drawn[1].clipped_fraction == 0.0  # the baseline is sampled with x₀ clipping, its best sampler
    row_height = image_grid(torch.zeros(3, 1, 8, 8), columns=3, upscale=2).height
    with Image.open(picture) as image:
        assert image.height == 3 * row_height  # real crops, Kuramoto, Euclidean: the textures pair is left out
    first = picture.read_bytes()
    compare_shipped_models(picture, root=tmp_path, pairs=pairs, num=3, seed=1)
    assert picture.read_bytes() == first  # seeded
    compare_shipped_models(picture, root=tmp_path, pairs=pairs, num=3, seed=2)
    assert picture.read_bytes() != first


def test_no_picture_without_a_complete_pair(tmp_path):
    save_untrained(tmp_path / "fp-k", KuramotoConfig(coupling="local", steps=3))
    picture = tmp_path / "comparison.png"
    assert compare_shipped_models(picture, root=tmp_path, pairs={"fingerprints": ("fp-k", "fp-e")}, num=2) == []
    assert not picture.exists()


def test_each_shipped_pair_is_a_fair_comparison_within_the_size_bound():
    # README "The shipped models": same network, examples, seed and budget for both methods, at most 10 MB each.
    from kuramoto_diffusion.app.demo import PRETRAINED_ROOT, SHIPPED_PAIRS, complete_pairs
    from kuramoto_diffusion.serialization import read_json

    shipped = complete_pairs(PRETRAINED_ROOT, SHIPPED_PAIRS)
    assert set(shipped) == set(SHIPPED_PAIRS), f"pairs missing under pretrained/: {set(SHIPPED_PAIRS) - set(shipped)}"
    for data, names in shipped.items():
        configs = [read_json(PRETRAINED_ROOT / name / "config.json") for name in names]
        for name in names:
            assert (PRETRAINED_ROOT / name / "model.safetensors").stat().st_size <= 10 * 2**20, name
        kuramoto, euclidean = (DiffusionModel.from_pretrained(PRETRAINED_ROOT / name) for name in names)
        assert kuramoto.config.periodic and kuramoto.config.process.coupling == "local"
        # Trained with the winning defaults: the encoding's phase range is today's default, not the paper's 0.9π.
        assert kuramoto.config.process.phase_range == KuramotoConfig().phase_range, (data, "phase_range")
        assert not euclidean.config.periodic
        assert kuramoto.config.process.steps == euclidean.config.process.steps
        # The same UNet but for its input and output channels: a phase enters as (cos, sin), a grey value as one.
        widths = ("in_channels", "out_channels")
        assert {k: v for k, v in configs[0]["model"]["unet"].items() if k not in widths} == {
            k: v for k, v in configs[1]["model"]["unet"].items() if k not in widths
        }
        assert configs[0]["data"] == configs[1]["data"] and configs[0]["data"]["source"] == data
        for key in ("train_steps", "batch_size", "seed", "lr", "ema_decay"):
            assert configs[0]["training"][key] == configs[1]["training"][key], (data, key)
