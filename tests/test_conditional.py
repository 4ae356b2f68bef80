"""Class-conditional training with condition dropout and classifier-free guidance."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kuramoto_diffusion.config import DataConfig, RunConfig, TrainConfig, image_model_config
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import DiffusionModel
from kuramoto_diffusion.processes import EuclideanConfig, KuramotoConfig
from kuramoto_diffusion.training import Trainer

LOCAL = KuramotoConfig(coupling="local", neighbourhood=3, steps=20)


def stripes(horizontal: bool, size: int, phase: float) -> np.ndarray:
    """uint8 (size, size) sinusoidal stripes, period 4 px: horizontal or vertical."""
    coordinate = np.arange(size)[:, None] if horizontal else np.arange(size)[None, :]
    wave = np.sin(2 * np.pi * coordinate / 4 + phase) * np.ones((size, size))
    return np.rint(127.5 + 110 * wave).astype(np.uint8)


def make_class_folder(root: Path, size: int = 12, per_class: int = 6) -> Path:
    for name, horizontal in (("horizontal", True), ("vertical", False)):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            Image.fromarray(stripes(horizontal, size, phase=index)).save(root / name / f"{index}.png")
    return root


def test_folder_classes_give_labels(tmp_path):
    folder = make_class_folder(tmp_path / "data")
    source = open_image_source(folder, 8, split="all", classes=True)
    assert source.class_names == ("horizontal", "vertical")
    images, labels = source.sample_labelled_batch(64, torch.Generator().manual_seed(0))
    # Horizontal stripes vary along rows (dim 2), vertical ones along columns (dim 3).
    row_variation = images.diff(dim=2).abs().mean(dim=(1, 2, 3))
    column_variation = images.diff(dim=3).abs().mean(dim=(1, 2, 3))
    assert torch.equal(labels, (column_variation > row_variation).long())
    assert 0 < labels.sum() < 64
    (folder / "loose.png").write_bytes((folder / "vertical" / "0.png").read_bytes())
    with pytest.raises(UserError, match="not inside a class subfolder"):
        open_image_source(folder, 8, split="all", classes=True)
    single = tmp_path / "single" / "only"
    single.mkdir(parents=True)
    (single / "0.png").write_bytes((folder / "vertical" / "0.png").read_bytes())
    with pytest.raises(UserError, match="at least 2 class subfolders"):
        open_image_source(single.parent, 8, split="all", classes=True)
    with pytest.raises(UserError, match="has no classes"):
        open_image_source("textures", 8, classes=True)


def conditional_model(process=LOCAL) -> DiffusionModel:
    torch.manual_seed(0)
    model = DiffusionModel(image_model_config(process, 1, 8, "tiny", class_names=("a", "b", "c")))
    with torch.no_grad():  # random weights everywhere (the output layer starts at zero), so classes differ
        for parameter in model.network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.to(torch.device("cpu"))


@pytest.mark.parametrize("process", [LOCAL, EuclideanConfig(steps=20)], ids=["kuramoto", "euclidean"])
def test_guidance_combines_conditional_and_unconditional_scores(process):
    model = conditional_model(process)
    model.network.double()
    x = (torch.rand(4, 1, 8, 8, dtype=torch.float64) * 2 - 1) * math.pi
    labels = torch.tensor([0, 1, 2, 0])
    unconditional = model.score(x, 7, class_labels=torch.full((4,), 3))
    conditional = model.score(x, 7, class_labels=labels)
    assert not torch.allclose(conditional, unconditional)
    assert torch.allclose(model.score(x, 7), unconditional)  # no labels = the "no class" label
    assert torch.allclose(model.score(x, 7, class_labels=labels, guidance=0.0), unconditional, atol=1e-12)
    assert torch.allclose(model.score(x, 7, class_labels=labels, guidance=1.0), conditional, atol=1e-12)
    guided = model.score(x, 7, class_labels=labels, guidance=3.0)
    assert torch.allclose(guided, unconditional + 3.0 * (conditional - unconditional), atol=1e-12)
    if process.kind == "kuramoto":
        # Tangent to the torus: as a vector in the plane of e^{iθ} it is orthogonal to the radius,
        # and it is the same at θ and θ + 2π.
        tangent = torch.stack([-torch.sin(x) * guided, torch.cos(x) * guided])
        radius = torch.stack([torch.cos(x), torch.sin(x)])
        assert (tangent * radius).sum(0).abs().max() < 1e-12
        assert torch.allclose(model.score(x + 2 * math.pi, 7, class_labels=labels, guidance=3.0), guided, atol=1e-9)


def test_guided_sampling_with_guidance_zero_is_the_unconditional_sweep():
    model = conditional_model()
    labels = model.class_labels("b", 3)
    plain = model.sample(3, nfe=5, generator=torch.Generator().manual_seed(1)).states
    guided = model.sample(
        3, nfe=5, generator=torch.Generator().manual_seed(1), class_labels=labels, guidance=0.0
    ).states
    conditional = model.sample(3, nfe=5, generator=torch.Generator().manual_seed(1), class_labels=labels).states
    # float32 rounding of s_∅ + 0·(s_y − s_∅) only, against a real difference for the conditional sweep.
    assert (plain - guided).abs().max() < 1e-3 and (plain - conditional).abs().max() > 0.05
    with pytest.raises(UserError, match="this model knows a, b, c"):
        model.class_labels("d", 2)
    unconditional = DiffusionModel(image_model_config(LOCAL, 1, 8, "tiny"))
    with pytest.raises(UserError, match="not class-conditional"):
        unconditional.sample(2, nfe=2, class_labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(UserError, match="guidance needs a class"):
        unconditional.sample(2, nfe=2, guidance=2.0)


def test_class_dropout_rate_and_labels_reach_the_network(tmp_path):
    folder = make_class_folder(tmp_path / "data")
    source = open_image_source(folder, 8, split="all", classes=True)
    config = RunConfig(
        model=image_model_config(LOCAL, 1, 8, "tiny", class_names=source.class_names),
        data=DataConfig(source=str(folder), image_size=8, classes=True),
        training=TrainConfig(train_steps=4, batch_size=8, checkpoint_every=2, sample_every=0, class_dropout=0.3),
    )
    trainer = Trainer(config, source, tmp_path / "run", quiet=True)
    trainer.start()
    dropped = trainer.drop_conditions(torch.zeros(20_000, dtype=torch.long))
    assert set(dropped.unique().tolist()) == {0, 2}
    assert abs(float((dropped == 2).float().mean()) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 20_000)
    trainer.train()
    resumed = Trainer.resume(tmp_path / "run", source, train_steps=6, quiet=True)  # labels in the pool's checkpoint
    assert torch.equal(resumed.pool.conditions, trainer.pool.conditions)
    resumed.train()
    assert DiffusionModel.from_pretrained(tmp_path / "run").config.class_names == ("horizontal", "vertical")


@pytest.mark.slow
def test_guided_samples_are_classified_as_their_class(tmp_path):
    """Train a conditional model on horizontal vs vertical stripes and a small classifier on the same
    data; guided samples of each class should be classified as it far more often than chance."""
    folder = make_class_folder(tmp_path / "data", size=12, per_class=8)
    source = open_image_source(folder, 8, split="all", classes=True)
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "kuramoto_diffusion",
            "train",
            "--data",
            str(folder),
            "--classes",
            "--image-size",
            "8",
            "--preset",
            "tiny",
            "--steps",
            "20",
            "--neighbourhood",
            "3",
            "--train-steps",
            "1500",
            "--batch-size",
            "32",
            "--lr",
            "1e-3",
            "--ema-decay",
            "0.99",
            "--sample-every",
            "0",
            "--checkpoint-every",
            "1500",
            "--out",
            str(run),
            "--quiet",
        ],
        check=True,
        env=environment,
        timeout=900,
    )
    # The classifier: a small CNN (translation-invariant, so stripe phase does not matter), trained here.
    torch.manual_seed(0)
    classifier = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 2),
    )
    optimiser = torch.optim.Adam(classifier.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        images, labels = source.sample_labelled_batch(64, generator)
        loss = torch.nn.functional.cross_entropy(classifier(images), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    test_images, test_labels = source.sample_labelled_batch(256, torch.Generator().manual_seed(1))
    assert (classifier(test_images).argmax(1) == test_labels).float().mean() > 0.95
    model = DiffusionModel.from_pretrained(run)
    accuracy = {}
    for guidance in (0.0, 2.0):
        correct = 0
        for name in model.config.class_names:
            labels = model.class_labels(name, 64)
            result = model.sample(
                64, nfe=20, generator=torch.Generator().manual_seed(2), class_labels=labels, guidance=guidance
            )
            images, _ = model.decode(result.states)
            correct += int((classifier(images).argmax(1) == labels).sum())
        accuracy[guidance] = correct / 128
    print("accuracy by guidance:", accuracy)
    assert accuracy[2.0] > 0.8 and accuracy[2.0] > accuracy[0.0] + 0.2


def test_field_conditioning_channels_reach_the_score_and_the_loss():
    """Extra conditioning channels (the flows' previous frames) enter the UNet beside the state."""
    from kuramoto_diffusion.training.objectives import Conditioning, StartingStates, build_objective

    torch.manual_seed(0)
    model = DiffusionModel(image_model_config(LOCAL, 1, 8, "tiny", condition_channels=2))
    with torch.no_grad():
        for parameter in model.network.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    x = torch.rand(3, 1, 8, 8) * 2 - 1
    first, second = torch.zeros(3, 2, 8, 8), torch.ones(3, 2, 8, 8)
    assert not torch.allclose(model.score(x, 5, condition=first), model.score(x, 5, condition=second))
    with pytest.raises(UserError, match="condition of shape"):
        model.score(x, 5)
    objective = build_objective(
        model.process, TrainConfig(objective="markov", draws=2), conditioning=Conditioning("context")
    )
    start = StartingStates(x, torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long), second, None)
    loss = objective.loss(model.network, objective.examples_from(start, None))
    loss.backward()
    assert model.network.backbone.input_conv.weight.grad[:, 2:].abs().sum() > 0  # the condition's input weights learn
