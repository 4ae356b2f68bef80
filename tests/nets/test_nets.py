"""Tests of the network backbones (shapes, init, symmetry, gradients, configs)."""

from __future__ import annotations

import json

import pytest
import torch

from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.nets import (
    MLP,
    UNET_PRESETS,
    MLPConfig,
    UNet,
    UNetConfig,
    count_parameters,
    sinusoidal_embedding,
    unet_config_from_preset,
)
from kuramoto_diffusion.serialization import config_from_dict, config_to_dict


def tiny(**overrides) -> UNetConfig:
    return unet_config_from_preset("tiny", **overrides)


def randomize_output_layer(net: torch.nn.Module) -> None:
    """Make the zero-initialised last layer non-zero so outputs and gradients are informative."""
    last = net.output_conv if isinstance(net, UNet) else net.output_layer
    with torch.no_grad():
        last.weight.normal_(0.0, 0.1)
        last.bias.normal_(0.0, 0.1)


# ----------------------------------------------------------------------------- UNet shapes


@pytest.mark.parametrize(
    "config, side",
    [
        (tiny(), 8),
        (tiny(), 16),  # image_size is only a construction hint
        (tiny(in_channels=4, out_channels=6), 8),
        (tiny(condition_channels=3), 8),
        (tiny(num_classes=5), 8),
        (tiny(padding_mode="circular", channel_mults=(1, 2, 2), image_size=16, attention_resolutions=(4,)), 16),
        (tiny(padding_mode="circular", channel_mults=(1, 2, 2), image_size=16, attention_resolutions=(4,)), 32),
        (tiny(padding_mode="reflect", attention_heads=2, attention_resolutions=(8,), middle_attention=True), 8),
    ],
)
def test_unet_output_shape(config: UNetConfig, side: int) -> None:
    torch.manual_seed(0)
    net = UNet(config)
    batch = 3
    x = torch.randn(batch, config.in_channels, side, side)
    condition = torch.randn(batch, config.condition_channels, side, side) if config.condition_channels else None
    labels = torch.tensor([0, config.num_classes, 1]) if config.num_classes else None
    out = net(x, torch.rand(batch), condition=condition, class_labels=labels)
    assert out.shape == (batch, config.out_channels, side, side)


def test_unet_rectangular_input_and_scalar_time() -> None:
    net = UNet(tiny())
    out = net(torch.randn(2, 2, 8, 16), torch.tensor(0.3))
    assert out.shape == (2, 2, 8, 16)


def test_unet_rejects_bad_inputs() -> None:
    net = UNet(tiny(condition_channels=1))
    with pytest.raises(UserError, match="divisible by 2"):
        net(torch.randn(1, 2, 5, 5), torch.rand(1), condition=torch.randn(1, 1, 5, 5))
    with pytest.raises(UserError, match="condition of shape"):
        net(torch.randn(1, 2, 8, 8), torch.rand(1))
    with pytest.raises(UserError, match="num_classes=0"):
        net(torch.randn(1, 2, 8, 8), torch.rand(1), condition=torch.randn(1, 1, 8, 8), class_labels=torch.tensor([0]))
    with pytest.raises(UserError, match=r"\(B, 2, H, W\)"):
        net(torch.randn(1, 3, 8, 8), torch.rand(1), condition=torch.randn(1, 1, 8, 8))


# ----------------------------------------------------------------------------- init and gradients


def test_untrained_nets_output_zero() -> None:
    torch.manual_seed(0)
    unet = UNet(tiny(num_classes=2, condition_channels=1))
    out = unet(torch.randn(2, 2, 8, 8), torch.rand(2), torch.randn(2, 1, 8, 8), torch.tensor([0, 2]))
    assert torch.count_nonzero(out) == 0
    mlp = MLP(MLPConfig(hidden_features=32, num_layers=2))
    assert torch.count_nonzero(mlp(torch.randn(5, 4), torch.rand(5))) == 0


def _assert_all_parameters_get_gradient(net: torch.nn.Module) -> None:
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reached: {missing}"


def test_unet_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    config = tiny(
        channel_mults=(1, 2, 2),
        image_size=16,
        attention_resolutions=(8,),
        middle_attention=True,
        middle_channels=64,
        condition_channels=1,
        num_classes=3,
        dropout=0.1,
    )
    net = UNet(config)
    randomize_output_layer(net)
    x = torch.randn(4, 2, 16, 16)
    out = net(x, torch.rand(4), torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 3]))  # every label row
    (out * torch.randn_like(out)).sum().backward()
    _assert_all_parameters_get_gradient(net)


def test_mlp_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = MLP(MLPConfig(hidden_features=32, num_layers=3, condition_features=2, num_classes=2, dropout=0.1))
    randomize_output_layer(net)
    out = net(torch.randn(6, 4), torch.rand(6), torch.randn(6, 2), torch.tensor([0, 1, 2, 0, 1, 2]))
    assert out.shape == (6, 4)
    (out * torch.randn_like(out)).sum().backward()
    _assert_all_parameters_get_gradient(net)


# ----------------------------------------------------------------------------- periodic symmetry


def _shift_error(padding_mode: str, shift: tuple[int, int]) -> float:
    torch.manual_seed(0)
    config = tiny(
        padding_mode=padding_mode,
        channel_mults=(1, 2, 2),
        image_size=16,
        attention_resolutions=(8,),
        middle_attention=True,
        condition_channels=1,
    )
    net = UNet(config).double().eval()
    randomize_output_layer(net)
    x = torch.randn(2, 2, 16, 16, dtype=torch.float64)
    condition = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    time = torch.rand(2, dtype=torch.float64)

    def roll(tensor: torch.Tensor) -> torch.Tensor:
        return torch.roll(tensor, shifts=shift, dims=(-2, -1))

    with torch.no_grad():
        shifted_then_net = net(roll(x), time, roll(condition))
        net_then_shifted = roll(net(x, time, condition))
    assert net_then_shifted.abs().max() > 1e-2  # the comparison is not between zeros
    return (shifted_then_net - net_then_shifted).abs().max().item()


@pytest.mark.parametrize("shift", [(4, 0), (0, 8), (4, 12)])
def test_circular_unet_is_shift_equivariant(shift: tuple[int, int]) -> None:
    # Three levels -> two stride-2 downsamples -> exact for shifts that are multiples of 4.
    assert _shift_error("circular", shift) < 1e-10


def test_zero_padded_unet_is_not_shift_equivariant() -> None:
    assert _shift_error("zeros", (4, 12)) > 1e-3


# ----------------------------------------------------------------------------- embeddings


def test_sinusoidal_embedding_shape_dtype_and_distinctness() -> None:
    time = torch.linspace(0.0, 1.0, 11) * 1000
    emb = sinusoidal_embedding(time, 32)
    assert emb.shape == (11, 32) and emb.dtype == torch.float32
    assert torch.cdist(emb, emb).add(torch.eye(11)).min() > 0.1  # all pairs differ
    emb64 = sinusoidal_embedding(time.double(), 31)
    assert emb64.shape == (11, 31) and emb64.dtype == torch.float64
    assert torch.all(emb64[:, -1] == 0)  # odd dim: zero pad column
    # Neighbouring diffusion steps (dt = 1e-3, scaled by 1000) are distinguishable.
    steps = sinusoidal_embedding(torch.tensor([500.0, 501.0]), 64)
    assert (steps[0] - steps[1]).norm() > 0.5


def test_unet_time_and_class_conditioning_change_output() -> None:
    torch.manual_seed(0)
    net = UNet(tiny(num_classes=3))
    randomize_output_layer(net)
    x = torch.randn(1, 2, 8, 8).expand(2, -1, -1, -1)
    with torch.no_grad():
        out = net(x, torch.tensor([0.5, 0.501]))
        assert (out[0] - out[1]).abs().max() > 1e-6
        by_label = net(x, torch.tensor([0.5, 0.5]), class_labels=torch.tensor([0, 1]))
        assert (by_label[0] - by_label[1]).abs().max() > 1e-6


def test_null_class_label_equals_no_labels() -> None:
    torch.manual_seed(0)
    net = UNet(tiny(num_classes=4)).eval()
    randomize_output_layer(net)
    x, time = torch.randn(3, 2, 8, 8), torch.rand(3)
    with torch.no_grad():
        unconditional = net(x, time)
        null = net(x, time, class_labels=torch.full((3,), 4))
        conditional = net(x, time, class_labels=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(unconditional, null, rtol=0, atol=0)
    assert (unconditional - conditional).abs().max() > 1e-6


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(base_channels=0), "base_channels must be positive"),
        (dict(num_res_blocks=-1), "num_res_blocks must be positive"),
        (dict(channel_mults=()), "channel_mults"),
        (dict(channel_mults=(1, 0)), "channel_mults"),
        (dict(image_size=12, channel_mults=(1, 2, 2, 2)), "divisible by 2"),
        (dict(attention_resolutions=(16,)), r"attention_resolutions \[16\] are never reached"),
        (dict(base_channels=48, groups=32), "not divisible by groups=32"),
        (dict(middle_channels=40, groups=16), "middle_channels 40"),
        (dict(padding_mode="periodic"), "valid values are zeros, circular, reflect"),
        (dict(attention_resolutions=(8,), attention_heads=3), "attention_heads=3"),
        (dict(dropout=1.0), "dropout"),
        (dict(num_classes=-1), "num_classes must be >= 0"),
        (dict(padding_mode="reflect", image_size=2), "reflect"),
    ],
)
def test_invalid_unet_configs_raise_user_error(overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        tiny(**overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_features=0), "hidden_features must be positive"),
        (dict(condition_features=-2), "condition_features must be >= 0"),
        (dict(dropout=-0.1), "dropout"),
    ],
)
def test_invalid_mlp_configs_raise_user_error(overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        MLPConfig(**overrides)


def test_unknown_preset_lists_valid_names() -> None:
    with pytest.raises(UserError, match="valid presets are tiny, small, paper-cifar"):
        unet_config_from_preset("huge")


@pytest.mark.parametrize("name", list(UNET_PRESETS))
def test_unet_config_json_round_trip(name: str) -> None:
    config = unet_config_from_preset(name, padding_mode="circular", condition_channels=2, num_classes=10)
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(UNetConfig, data) == config


def test_mlp_config_json_round_trip() -> None:
    config = MLPConfig(in_features=6, hidden_features=64, condition_features=1, num_classes=3, dropout=0.2)
    assert config_from_dict(MLPConfig, json.loads(json.dumps(config_to_dict(config)))) == config


def test_lists_are_stored_as_tuples() -> None:
    config = tiny(channel_mults=[1, 2], attention_resolutions=[4])
    assert config.channel_mults == (1, 2) and config.attention_resolutions == (4,)
    assert config == tiny(channel_mults=(1, 2), attention_resolutions=(4,))


@pytest.mark.parametrize("name", list(UNET_PRESETS))
def test_presets_construct_and_run(name: str) -> None:
    config = unet_config_from_preset(name)
    net = UNet(config)
    assert count_parameters(net) > 0
    with torch.no_grad():
        out = net(torch.randn(1, 2, config.image_size, config.image_size), torch.rand(1))
    assert out.shape == (1, 2, config.image_size, config.image_size)


def test_small_preset_is_cpu_sized() -> None:
    assert count_parameters(UNet(unet_config_from_preset("small"))) < 5_000_000


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_presets_let_the_output_follow_the_input_mean(preset):
    """The output block's GroupNorm must not remove each image's mean: an ε-predicting (Euclidean) model needs it.

    With one channel per group (groups = 32 on these widths) the mean of the output barely moves when the
    input is shifted by a constant; with the presets' groups (≥ 4 channels per group) it does.
    """
    from kuramoto_diffusion.config import image_model_config
    from kuramoto_diffusion.model import build_network
    from kuramoto_diffusion.processes import EuclideanConfig

    def relative_mean_spread(**overrides):
        torch.manual_seed(0)
        network = build_network(image_model_config(EuclideanConfig(), 1, 32, preset, **overrides))
        with torch.no_grad():
            for parameter in network.parameters():  # the output layer starts at zero: make it trained-like
                parameter.add_(0.2 * torch.randn_like(parameter))
            shifts = torch.linspace(-2, 2, 32).reshape(32, 1, 1, 1)
            output = network(0.1 * torch.randn(32, 1, 32, 32) + shifts, torch.full((32,), 0.5))
        return float(output.mean(dim=(1, 2, 3)).std() / output.std())

    assert relative_mean_spread() > 0.15
    assert relative_mean_spread(groups=32) < 0.05  # one channel per group: the failure this guards against
