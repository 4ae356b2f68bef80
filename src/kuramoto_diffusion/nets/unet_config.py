"""The UNet's configuration (``UNetConfig``, checked when built) and its named presets (``UNET_PRESETS``);
unet.py builds the network from it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from ..errors import UserError
from ..serialization import check_choices

PaddingMode = Literal["zeros", "circular", "reflect"]


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of a UNet. All widths are channel counts, all resolutions are pixels per side.

    ``groups`` is the GroupNorm group count. Each level width ``base_channels * mult``
    (and ``middle_channels``) must be divisible by ``min(groups, width)``, so narrow
    nets fall back to fewer groups automatically (16 channels -> 16 groups). A norm
    over a concatenation of two widths uses ``gcd(groups, total)`` groups.

    ``middle_channels`` is the width of the bottleneck between encoder and decoder;
    0 means "same as the deepest level". ``middle_attention`` puts self-attention
    in the bottleneck (DDPM practice) independently of ``attention_resolutions``.
    ``attention_heads`` is the number of heads; each attended width must divide by it.
    """

    kind: Literal["unet"] = "unet"  # tags the backbone section of a model config (``config.Backbone``)
    in_channels: int = 2
    out_channels: int = 2
    image_size: int = 32
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (8,)
    middle_channels: int = 0
    middle_attention: bool = True
    dropout: float = 0.1
    padding_mode: PaddingMode = "zeros"
    time_embedding_dim: int = 256
    condition_channels: int = 0
    num_classes: int = 0
    groups: int = 32
    attention_heads: int = 1

    def __post_init__(self) -> None:
        check_choices(self)
        _require_positive(
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            image_size=self.image_size,
            base_channels=self.base_channels,
            num_res_blocks=self.num_res_blocks,
            time_embedding_dim=self.time_embedding_dim,
            groups=self.groups,
            attention_heads=self.attention_heads,
        )
        _require_non_negative(
            middle_channels=self.middle_channels,
            condition_channels=self.condition_channels,
            num_classes=self.num_classes,
        )
        # Lists are accepted for convenience and stored as tuples (hashable, JSON round trip).
        for name in ("channel_mults", "attention_resolutions"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            elif not isinstance(value, tuple):
                raise UserError(f"{name} must be a tuple of integers, got {value!r}")
        if not self.channel_mults or any(m <= 0 for m in self.channel_mults):
            raise UserError(f"channel_mults must be a non-empty tuple of positive integers, got {self.channel_mults}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}")

        factor = self.downsampling_factor
        if self.image_size % factor:
            raise UserError(
                f"image_size {self.image_size} must be divisible by 2**(len(channel_mults)-1) = {factor} "
                f"for {len(self.channel_mults)} levels; change image_size or use fewer channel_mults"
            )
        sides = self.level_sides
        unreached = sorted(set(self.attention_resolutions) - set(sides), reverse=True)
        if unreached:
            raise UserError(
                f"attention_resolutions {unreached} are never reached; with image_size {self.image_size} "
                f"and {len(self.channel_mults)} levels the feature sides are {', '.join(map(str, sides))}"
            )
        if self.padding_mode == "reflect" and sides[-1] < 2:
            raise UserError(
                f"padding_mode 'reflect' needs feature maps of side >= 2 but the deepest level is "
                f"{sides[-1]}x{sides[-1]}; use fewer channel_mults or a larger image_size"
            )

        for level, width in enumerate(self.level_channels):
            groups = min(self.groups, width)
            if width % groups:
                raise UserError(
                    f"level {level} has {width} channels (base_channels {self.base_channels} x mult "
                    f"{self.channel_mults[level]}), not divisible by groups={groups}; "
                    f"use a multiple of {groups} or change groups"
                )
        if self.middle_channels and self.middle_channels % min(self.groups, self.middle_channels):
            raise UserError(
                f"middle_channels {self.middle_channels} is not divisible by groups="
                f"{min(self.groups, self.middle_channels)}; use a multiple or change groups"
            )

        attended = [
            (f"level at side {side}", width)
            for side, width in zip(sides, self.level_channels)
            if side in self.attention_resolutions
        ]
        if self.middle_attention:
            attended.append(("middle block", self.bottleneck_channels))
        for where, width in attended:
            if width % self.attention_heads:
                raise UserError(
                    f"attention_heads={self.attention_heads} does not divide the {width} channels of the "
                    f"{where}; choose a head count that divides it"
                )

    @property
    def downsampling_factor(self) -> int:
        """Ratio between the input side and the deepest feature side: 2**(levels - 1)."""
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def level_sides(self) -> tuple[int, ...]:
        """Feature-map side (pixels) at each level for an ``image_size`` input."""
        return tuple(self.image_size // 2**level for level in range(len(self.channel_mults)))

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * mult for mult in self.channel_mults)

    @property
    def bottleneck_channels(self) -> int:
        return self.middle_channels or self.level_channels[-1]


def _require_positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise UserError(f"{name} must be positive, got {value}")


def _require_non_negative(**values: int) -> None:
    for name, value in values.items():
        if value < 0:
            raise UserError(f"{name} must be >= 0, got {value}")


# Every preset keeps at least 4 channels per GroupNorm group. With one channel per group the
# output block (GroupNorm -> SiLU -> conv) removes each image's mean, and an epsilon-predicting
# (Euclidean) model can then not predict the mean of the noise: its samples saturate
# (bench/groupnorm_dc.py measures the effect; BENCHMARKS.md has the numbers).
UNET_PRESETS: dict[str, dict[str, Any]] = {
    # For unit tests on 8x8 images: two levels, no attention, runs in milliseconds.
    "tiny": dict(
        image_size=8,
        base_channels=16,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        middle_attention=False,
        dropout=0.0,
        time_embedding_dim=64,
        groups=4,
    ),
    # CPU-friendly 32 px demos: widths 32-64-64, attention at 8x8 and in the 8x8 bottleneck.
    "small": dict(
        image_size=32,
        base_channels=32,
        channel_mults=(1, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(8,),
        dropout=0.1,
        time_embedding_dim=128,
        groups=8,
    ),
    # The paper's CIFAR-scale net: widths 64-128-256-256 at sides 32-16-8-4, a 512-wide
    # middle block at 4x4, self-attention at 16x16, 8x8 and in the middle, 256-d time embedding.
    "paper-cifar": dict(
        image_size=32,
        base_channels=64,
        channel_mults=(1, 2, 4, 4),
        num_res_blocks=2,
        attention_resolutions=(16, 8),
        middle_channels=512,
        dropout=0.1,
        time_embedding_dim=256,
    ),
}


def unet_config_from_preset(name: str, **overrides: Any) -> UNetConfig:
    """The preset ``name`` with any field replaced by ``overrides`` (e.g. ``padding_mode="circular"``)."""
    if name not in UNET_PRESETS:
        raise UserError(f"unknown UNet preset {name!r}; valid presets are {', '.join(UNET_PRESETS)}")
    return UNetConfig(**{**UNET_PRESETS[name], **overrides})
