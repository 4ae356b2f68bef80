"""Inpainting: known pixels kept, shared sweep, the known data's forward chain, resampling, input errors."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, angle_model_config, image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.orientation import structure_tensor_orientation
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, EuclideanVPProcess, KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.sampling.inpainting import independent_generator, inpaint_sweep
from kuramoto_diffusion.training import Trainer

LOCAL = KuramotoConfig(coupling="local", neighbourhood=3)
PROCESSES = {"kuramoto-local": LOCAL, "euclidean": EuclideanConfig()}
GREY_LEVEL = 1 / 127.5


def tiny_model(process, size: int = 16) -> DiffusionModel:
    torch.manual_seed(0)  # untrained weights, but the same ones every run
    return DiffusionModel(image_model_config(process, 1, size, "tiny"))


def random_images(count: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def centre_mask(size: int = 16, hole: int = 6) -> torch.Tensor:
    """(1, 1, size, size): 1 (white, to fill) in the centre hole×hole square, 0 (black, known) outside."""
    mask = torch.zeros(1, 1, size, size)
    start = (size - hole) // 2
    mask[..., start : start + hole, start : start + hole] = 1
    return mask


def zero_score(x: torch.Tensor, t: int) -> torch.Tensor:
    return torch.zeros_like(x)


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("sampler", ["sde", "ode-heun"])
def test_known_pixels_are_kept_whatever_the_network(name, sampler):
    model = tiny_model(PROCESSES[name])
    images, mask = random_images(5), centre_mask()
    result = model.inpaint(
        images, mask, sampler=sampler, nfe=9, batch_size=3, generator=torch.Generator().manual_seed(1)
    )
    decoded, _ = model.decode(result.states)
    assert (decoded - images).mul(1 - mask).abs().max() <= GREY_LEVEL
    assert not torch.allclose(decoded * mask, images * mask, atol=0.1)  # the hole was filled, not copied


@pytest.mark.parametrize("name", PROCESSES)
def test_all_black_mask_gives_the_known_images_and_all_white_mask_gives_plain_samples(name):
    model = tiny_model(PROCESSES[name])
    images = random_images(5)
    with pytest.warns(UserWarning, match=r"mask is all 0 \(black = keep\): there is nothing to fill"):
        full = model.inpaint(images, torch.zeros(1, 1, 16, 16), nfe=6, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(model.decode(full.states)[0], images, atol=1e-6)
    # An all-white mask must reproduce `sample` bit for bit, also across batches: the sweep is shared
    # and the known data's chain does not consume the sweep's random numbers.
    with pytest.warns(UserWarning, match=r"mask is all 1 \(white = fill\): nothing of the images is kept"):
        empty = model.inpaint(
            images, torch.ones(5, 1, 1, 1), nfe=6, batch_size=2, generator=torch.Generator().manual_seed(3)
        )
    plain = model.sample(5, nfe=6, batch_size=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(empty.states, plain.states)
    assert empty.function_evaluations == plain.function_evaluations == 6


def test_values_under_the_hole_are_ignored():
    model = tiny_model(LOCAL)
    images, mask = random_images(3), centre_mask()
    other = torch.where(mask.bool(), -images, images)
    a = model.inpaint(images, mask, nfe=5, generator=torch.Generator().manual_seed(4)).states
    b = model.inpaint(other, mask, nfe=5, generator=torch.Generator().manual_seed(4)).states
    assert torch.equal(a, b)


def test_euclidean_known_chain_has_the_vp_marginal():
    # With an all-ones mask every recorded state is the known data's chain at that grid step,
    # which for VP must be N(√ᾱ_t·x0, 1 − ᾱ_t) (the kernel over each stride is exact).
    process = EuclideanVPProcess(steps=100)
    count, x0 = 40000, 0.5
    known = torch.full((count, 1), x0, dtype=torch.float64)
    start = process.prior_sample((count, 1), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = inpaint_sweep(
        process,
        zero_score,
        start,
        known,
        torch.ones(1, 1),
        nfe=7,
        generator=torch.Generator().manual_seed(1),
        record_trajectory=True,
    )
    assert result.steps[0] == 100 and len(result.steps) == 8
    for step, states in zip(result.steps, result.trajectory):
        signal = math.exp(float(process.log_signal(0, step))) if step > 0 else 1.0
        variance = 1.0 - signal**2
        if step == 0:
            assert torch.equal(states, known)
            continue
        assert states.mean().item() == pytest.approx(signal * x0, abs=5 * math.sqrt(variance / count))
        assert states.var().item() == pytest.approx(variance, abs=5 * variance * math.sqrt(2 / count))


def test_kuramoto_known_chain_is_the_simulated_forward_chain():
    # The chain takes single steps between the (strided) grid points, drawn with the generator
    # derived from the sweep's: it is exactly `simulate` with that generator, read at the grid.
    process = KuramotoProcess(LOCAL)
    known = random_images(4, 8).double() * (0.9 * math.pi)
    mask = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :, :4] = True  # left half known
    generator = torch.Generator().manual_seed(5)
    expected = process.simulate(known, 100, generator=independent_generator(generator), return_trajectory=True)
    start = process.prior_sample(known.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    result = inpaint_sweep(process, zero_score, start, known, mask, nfe=7, generator=generator, record_trajectory=True)
    assert result.steps == [100, 86, 71, 57, 43, 29, 14, 0]
    for step, states in zip(result.steps, result.trajectory):
        assert torch.equal(states[..., :4], expected[step][..., :4])
        assert not torch.equal(states[..., 4:], expected[step][..., 4:])


@pytest.mark.parametrize("name", PROCESSES)
@pytest.mark.parametrize("sampler,nfe,per_sweep", [("sde", 10, 10), ("ode", 10, 10), ("ode-heun", 9, 9)])
def test_resampling_counts_every_evaluation_and_keeps_known_pixels(name, sampler, nfe, per_sweep):
    model = tiny_model(PROCESSES[name])
    images, mask = random_images(3), centre_mask()
    calls = []

    def counting_score(x, t, condition=None, class_labels=None):
        calls.append(t)
        return DiffusionModel.score(model, x, t, condition, class_labels)

    model.score = counting_score  # type: ignore[method-assign]
    result = model.inpaint(
        images, mask, sampler=sampler, nfe=nfe, resample=2, generator=torch.Generator().manual_seed(7)
    )
    assert result.function_evaluations == len(calls) == 2 * per_sweep
    decoded, _ = model.decode(result.states)
    assert (decoded - images).mul(1 - mask).abs().max() <= GREY_LEVEL


def test_angle_models_inpaint_too():
    model = DiffusionModel(angle_model_config(KuramotoConfig(), 4, hidden_features=16, num_layers=1))
    angles = torch.tensor([[3.0, -3.0, 0.5, 1.0], [-1.0, 2.0, 3.1, -3.1]])
    mask = torch.tensor([[0.0, 0.0, 1.0, 1.0]])  # fill the last two
    result = model.inpaint(angles, mask, nfe=5, generator=torch.Generator().manual_seed(8))
    assert torch.allclose(result.states[:, :2], angles[:, :2], atol=1e-6)


def test_bad_inputs_are_explained():
    model = tiny_model(LOCAL)
    images = random_images(2)
    with pytest.raises(UserError, match=r"mask of size 1×1×8×8 and images of size 2×1×16×16 differ"):
        model.inpaint(images, torch.ones(1, 1, 8, 8))
    soft = centre_mask() * 0.5 + 0.5
    with pytest.raises(UserError, match=r"must be 0 or 1, found 0\.5; threshold"):
        model.inpaint(images, soft)
    with pytest.raises(UserError, match=r"images of size 2×3×16×16 do not fit this model's data of size N×1×16×16"):
        model.inpaint(torch.zeros(2, 3, 16, 16), centre_mask())
    with pytest.raises(UserError, match=r"\[-1, 1\]"):
        model.inpaint(images * 3, centre_mask())
    with pytest.raises(UserError, match="resample must be an integer ≥ 1"):
        model.inpaint(images, centre_mask(), resample=0)


# ----- trained models continue oriented gratings into the hole ---------------------------------
GRATING_SIZE, GRATING_PERIOD, HOLE = 16, 6.0, 6


def gratings(count: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 1, 16, 16) sinusoidal gratings in [-1, 1], period 6 px, uniform random orientation and phase."""
    angle = torch.rand(count, 1, 1, generator=generator) * math.pi
    phase = torch.rand(count, 1, 1, generator=generator) * 2 * math.pi
    pixels = torch.arange(GRATING_SIZE, dtype=torch.float32)
    rows, cols = torch.meshgrid(pixels, pixels, indexing="ij")
    along = cols * torch.cos(angle) - rows * torch.sin(angle)
    return torch.cos(2 * math.pi * along / GRATING_PERIOD + phase)[:, None]


class GratingSource:
    def sample_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return gratings(batch_size, generator)


def hole_orientation(images: torch.Tensor) -> torch.Tensor:
    """(N,) dominant orientation (radians, [0, π)) of the hole's content alone: the coherence-weighted
    doubled-angle mean of the structure tensor's orientation over the cropped hole. A flat or
    structureless fill carries no orientation, so it cannot borrow one from the known border."""
    start = (GRATING_SIZE - HOLE) // 2
    crop = images[..., start : start + HOLE, start : start + HOLE].double()
    orientation, coherence = structure_tensor_orientation(crop, gradient_sigma=1.0, window_sigma=1.5)
    doubled = (coherence * torch.exp(2j * orientation)).sum((1, 2))
    return torch.remainder(0.5 * torch.angle(doubled), math.pi)


def orientation_error(filled: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean axial difference (radians, 0 … π/2) between the holes' dominant orientations."""
    difference = torch.remainder(hole_orientation(filled) - hole_orientation(truth), math.pi)
    return torch.minimum(difference, math.pi - difference).mean().item()


def train_on_gratings(process, run_dir) -> DiffusionModel:
    config = RunConfig(
        model=image_model_config(process, 1, GRATING_SIZE, "tiny"),
        data=DataConfig(image_size=GRATING_SIZE),
        training=TrainConfig(
            train_steps=300,
            batch_size=32,
            lr=2e-3,
            warmup_steps=20,
            ema_decay=0.99,
            checkpoint_every=10_000,
            sample_every=0,
            log_every=50,
        ),
    )
    trainer = Trainer(config, GratingSource(), run_dir, quiet=True)
    trainer.start()
    return trainer.train()


@pytest.mark.slow
def test_trained_models_continue_a_grating_into_the_hole(tmp_path):
    # 300 steps of a tiny net (≈30 s each on one CPU thread). Measured with these settings:
    # Kuramoto-local ≈ 0.06 rad, Euclidean ≈ 0.01 rad; a fill without information ≈ π/4 ≈ 0.79.
    truth = gratings(64, torch.Generator().manual_seed(123))
    mask = centre_mask(GRATING_SIZE, HOLE)
    random_fill = torch.where(mask.bool(), gratings(64, torch.Generator().manual_seed(124)), truth)
    chance = orientation_error(random_fill, truth)
    flat = orientation_error(truth * (1 - mask), truth)
    assert chance > 0.6 and flat > 0.6  # the measure gives no credit for fills without information
    errors = {}
    for name, process in PROCESSES.items():
        model = train_on_gratings(process, tmp_path / name)
        result = model.inpaint(truth, mask, nfe=100, generator=torch.Generator().manual_seed(5))
        errors[name] = orientation_error(model.decode(result.states)[0], truth)
    print(f"hole orientation error (rad): {errors}, random-orientation fill {chance:.3f}, flat fill {flat:.3f}")
    assert errors["kuramoto-local"] < 0.3
    assert errors["euclidean"] < 0.3
