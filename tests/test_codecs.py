"""The codecs (data ⇄ states) in float64: round trips, and each log-Jacobian against autograd's."""

from __future__ import annotations

import math

import pytest
import torch

from kuramoto_diffusion.codecs import AngleCodec, FlowCodec, FlowNormalisation, ImageCodec, build_codec
from kuramoto_diffusion.config import angle_model_config, flow_model_config, image_model_config
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
    yield "image-kuramoto", ImageCodec(image_torus), torch.rand(1, 1, 3, 3, dtype=torch.float64) * 1.8 - 0.9
    yield "image-euclidean", ImageCodec(build_process(EuclideanConfig())), torch.rand(1, 1, 3, 3, dtype=torch.float64) - 0.5
    angles = build_process(KuramotoConfig(coupling="global"))
    yield "angle", AngleCodec(angles), torch.rand(1, 4, dtype=torch.float64) * 4 - 2
    velocity = torch.randn(1, 2, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    yield "flow-phase-amplitude", FlowCodec(build_process(PhaseAmplitudeConfig()), NORMALISATION), velocity
    yield "flow-euclidean", FlowCodec(build_process(EuclideanConfig()), NORMALISATION), velocity


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
    codec = ImageCodec(build_process(KuramotoConfig(coupling="local")))
    images, clipped = codec.decode(torch.tensor([[[[0.95 * math.pi, 0.5, -math.pi + 1e-3]]]], dtype=torch.float64))
    assert clipped == 2 and images.abs().max() <= 1
    flow = FlowCodec(build_process(PhaseAmplitudeConfig()), NORMALISATION)
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
    assert isinstance(build_codec(angle_model_config(global_coupling, 3, "tiny"), build_process(global_coupling)), AngleCodec)
    flows = PhaseAmplitudeConfig()
    config = flow_model_config(flows, 16, NORMALISATION, "tiny")
    assert isinstance(build_codec(config, build_process(flows)), FlowCodec)

