"""The codecs (data ⇄ states) in float64: round trips, and each log-Jacobian against autograd's."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.codecs import AngleCodec, FlowCodec, FlowNormalisation, ImageCodec
from kuramoto_diffusion.config import angle_model_config, flow_model_config, image_model_config
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.model import build_codec
from kuramoto_diffusion.processes import (
    EuclideanConfig,
    KuramotoConfig,
    PhaseAmplitudeConfig,
    build_process,
)


def autograd_log_det(encode, data: torch.Tensor) -> float:
    """log|det ∂encode(x)/∂x| of one sample, by the full autograd Jacobian."""
    jacobian = torch.autograd.functional.jacobian(lambda x: encode(x[None])[0].flatten(), data[0])
    return float(torch.linalg.slogdet(jacobian.reshape(data[0].numel(), data[0].numel()))[1])


NORMALISATION = FlowNormalisation(log_speed_mean=-0.3, log_speed_std=0.8, velocity_std=1.7, speed_epsilon=1e-4)


def codec_cases():
    image_torus = build_process(KuramotoConfig(coupling="local", phase_range=0.7 * math.pi))
    yield "image-kuramoto", ImageCodec.for_process(image_torus), torch.rand(1, 1, 3, 3, dtype=torch.float64) * 1.8 - 0.9
    yield (
        "image-euclidean",
        ImageCodec.for_process(build_process(EuclideanConfig())),
        torch.rand(1, 1, 3, 3, dtype=torch.float64) - 0.5,
    )
    yield "angle", AngleCodec(periodic=True), torch.rand(1, 4, dtype=torch.float64) * 4 - 2
    yield "angle-euclidean", AngleCodec(periodic=False), torch.rand(1, 4, dtype=torch.float64) * 4 - 2
    velocity = torch.randn(1, 2, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    yield "flow-phase-amplitude", FlowCodec(NORMALISATION, polar=True), velocity
    yield "flow-euclidean", FlowCodec(NORMALISATION, polar=False), velocity


CASES = list(codec_cases())


@pytest.mark.parametrize("name, codec, data", CASES, ids=[case[0] for case in CASES])
def test_log_jacobian_is_autograds(name, codec, data):
    assert codec.log_jacobian(data).item() == pytest.approx(autograd_log_det(codec.encode, data), abs=1e-9)


@pytest.mark.parametrize("name, codec, data", CASES, ids=[case[0] for case in CASES])
def test_decode_inverts_encode(name, codec, data):
    decoded, clipped = codec.decode(codec.encode(data))
    assert clipped == 0
    assert torch.allclose(decoded, data, atol=1e-10)


def test_decoding_counts_what_it_clips():
    codec = ImageCodec.for_process(build_process(KuramotoConfig(coupling="local")))
    images, clipped = codec.decode(torch.tensor([[[[0.95 * math.pi, 0.5, -math.pi + 1e-3]]]], dtype=torch.float64))
    assert clipped == 2 and images.abs().max() <= 1
    flow = FlowCodec(NORMALISATION)
    states = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    states[0, 1, 0, 0] = 100.0  # a log speed 100 standard deviations out: a sampling failure
    velocity, clipped = flow.decode(states)
    assert clipped == 1 and torch.isfinite(velocity).all()


def test_the_model_config_picks_the_codec():
    kuramoto = KuramotoConfig(coupling="local", phase_range=0.6 * math.pi)
    image = build_codec(image_model_config(kuramoto, 1, 16, "tiny"), build_process(kuramoto))
    assert isinstance(image, ImageCodec) and image.phase_range == pytest.approx(0.6 * math.pi)
    euclidean = EuclideanConfig()
    assert build_codec(image_model_config(euclidean, 1, 16, "tiny"), build_process(euclidean)).phase_range is None
    global_coupling = KuramotoConfig(coupling="global")
    assert build_codec(angle_model_config(global_coupling, 3, "tiny"), build_process(global_coupling)) == AngleCodec(
        periodic=True
    )
    assert build_codec(angle_model_config(euclidean, 3, "tiny"), build_process(euclidean)) == AngleCodec(periodic=False)
    for flows, polar in ((PhaseAmplitudeConfig(), True), (euclidean, False)):
        config = flow_model_config(flows, 16, NORMALISATION, "tiny")
        assert build_codec(config, build_process(flows)) == FlowCodec(NORMALISATION, polar=polar)


def test_a_periodic_process_without_an_image_encoding_has_no_image_codec():
    with pytest.raises(UserError, match="phase-amplitude process has no image encoding"):
        ImageCodec.for_process(build_process(PhaseAmplitudeConfig()))


@pytest.mark.parametrize(
    "config, expected",
    [
        (KuramotoConfig(coupling="local"), [0, 1, 3]),
        (EuclideanConfig(), [0, 0, 0]),
        (PhaseAmplitudeConfig(), [1, 1, 1]),
    ],
)
def test_each_process_declares_its_periodic_channels_and_project_wraps_those_alone(config, expected):
    process = build_process(config)
    assert [process.periodic_channels(channels) for channels in (0, 1, 3)] == expected
    channels = 2 if config.kind == "phase-amplitude" else 3
    x = torch.full((1, channels, 4, 4), 5.0, dtype=torch.float64)
    wrapped = process.project(x) != x  # 5 rad is outside [-π, π): a wrapped channel changes
    periodic = process.periodic_channels(channels)
    assert wrapped[:, :periodic].all() and not wrapped[:, periodic:].any()
