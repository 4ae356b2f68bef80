"""A DDPM++-style UNet: (B, in_channels, H, W) x time -> (B, out_channels, H, W).

The network is a plain function of (x, t, condition, class label); it knows
nothing about phases or diffusion processes. Layout:

    input conv -> [encoder level: ResBlocks (+attention), downsample] * L
               -> middle: ResBlock, attention, ResBlock
               -> [decoder level: ResBlocks on concatenated skips (+attention), upsample] * L
               -> GroupNorm, SiLU, output conv (zero-initialised)

Level ``i`` works at side ``H / 2**i`` with ``base_channels * channel_mults[i]``
channels. Every 3x3 convolution, including the down- and up-sampling ones, uses
``config.padding_mode``; with ``"circular"`` the whole network is exactly
equivariant to circular shifts by multiples of ``2**(L-1)`` pixels, i.e. it treats
the image as a seamless torus.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .embeddings import ClassEmbedding, TimeEmbedding, broadcast_time
from .unet_config import UNET_PRESETS as UNET_PRESETS  # re-exported: nets/__init__.py and the app take them from here
from .unet_config import PaddingMode, UNetConfig
from .unet_config import unet_config_from_preset as unet_config_from_preset  # re-exported

# ----------------------------------------------------------------------------- layers


def _group_norm(channels: int, groups: int) -> nn.GroupNorm:
    # gcd always divides; for the validated level widths it equals min(groups, channels).
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


def _conv3x3(in_channels: int, out_channels: int, padding_mode: PaddingMode, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, padding_mode=padding_mode)


class ResBlock(nn.Module):
    """Pre-activation residual block with FiLM conditioning on the embedding.

    out = (skip(x) + conv2(dropout(SiLU(GN(conv1(SiLU(GN(x)))) * (1 + scale) + shift)))) / sqrt(2)
    where (scale, shift) is a linear map of the time/class embedding. The 1/sqrt(2)
    keeps the activation variance from growing with depth (DDPM++ / EDM practice).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embedding_dim: int,
        *,
        dropout: float,
        padding_mode: PaddingMode,
        groups: int,
    ) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels, groups)
        self.conv1 = _conv3x3(in_channels, out_channels, padding_mode)
        self.embedding_to_scale_shift = nn.Linear(embedding_dim, 2 * out_channels)
        self.norm2 = _group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _conv3x3(out_channels, out_channels, padding_mode)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.embedding_to_scale_shift(F.silu(embedding))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(self.dropout(h))
        return (self.skip(x) + h) * math.sqrt(0.5)


class SelfAttention(nn.Module):
    """Multi-head self-attention over all H*W positions, with a residual connection.

    Position-agnostic (no positional encoding), so it commutes with any permutation
    of pixels, circular shifts included.
    """

    def __init__(self, channels: int, *, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = _group_norm(channels, groups)
        self.to_qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        qkv = self.to_qkv(self.norm(x)).reshape(batch, 3, self.heads, channels // self.heads, height * width)
        # (B, heads, tokens, head_dim) for each of q, k, v
        query, key, value = qkv.transpose(-1, -2).unbind(dim=1)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(-1, -2).reshape(batch, channels, height, width)
        return (x + self.proj(attended)) * math.sqrt(0.5)


class Downsample(nn.Module):
    """Halve the side with a stride-2 3x3 conv (same padding mode as every other conv)."""

    def __init__(self, channels: int, padding_mode: PaddingMode) -> None:
        super().__init__()
        self.conv = _conv3x3(channels, channels, padding_mode, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the side: nearest-neighbour upsampling, then a 3x3 conv."""

    def __init__(self, channels: int, padding_mode: PaddingMode) -> None:
        super().__init__()
        self.conv = _conv3x3(channels, channels, padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """A ResBlock optionally followed by self-attention: the unit repeated at each level."""

    def __init__(self, res_block: ResBlock, attention: SelfAttention | None) -> None:
        super().__init__()
        self.res_block = res_block
        self.attention = attention if attention is not None else nn.Identity()

    def forward(self, x: Tensor, embedding: Tensor) -> Tensor:
        return self.attention(self.res_block(x, embedding))


# ----------------------------------------------------------------------------- network


class UNet(nn.Module):
    """DDPM++-style UNet; see the module docstring for the layout."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        cfg = config
        embedding_dim = cfg.time_embedding_dim

        def res_block(in_channels: int, out_channels: int) -> ResBlock:
            return ResBlock(
                in_channels,
                out_channels,
                embedding_dim,
                dropout=cfg.dropout,
                padding_mode=cfg.padding_mode,
                groups=cfg.groups,
            )

        def attention(channels: int, side: int) -> SelfAttention | None:
            if side not in cfg.attention_resolutions:
                return None
            return SelfAttention(channels, heads=cfg.attention_heads, groups=cfg.groups)

        self.time_embedding = TimeEmbedding(embedding_dim)
        self.class_embedding = ClassEmbedding(cfg.num_classes, embedding_dim) if cfg.num_classes > 0 else None

        self.input_conv = _conv3x3(cfg.in_channels + cfg.condition_channels, cfg.base_channels, cfg.padding_mode)

        # Encoder. `skip_channels` records the width of every tensor pushed onto the skip
        # stack, so the decoder knows what each concatenation adds.
        self.encoder = nn.ModuleList()
        skip_channels = [cfg.base_channels]
        channels = cfg.base_channels
        last_level = len(cfg.channel_mults) - 1
        for level, (width, side) in enumerate(zip(cfg.level_channels, cfg.level_sides)):
            for _ in range(cfg.num_res_blocks):
                self.encoder.append(_Level(res_block(channels, width), attention(width, side)))
                channels = width
                skip_channels.append(channels)
            if level != last_level:
                self.encoder.append(Downsample(channels, cfg.padding_mode))
                skip_channels.append(channels)

        # Bottleneck at the deepest side, possibly wider than the deepest level.
        middle = cfg.bottleneck_channels
        self.middle_in = res_block(channels, middle)
        self.middle_attention = (
            SelfAttention(middle, heads=cfg.attention_heads, groups=cfg.groups)
            if cfg.middle_attention
            else nn.Identity()
        )
        self.middle_out = res_block(middle, channels)

        # Decoder: one more ResBlock per level than the encoder, so that the skip from
        # each downsample (and the input conv) is consumed too.
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mults))):
            width, side = cfg.level_channels[level], cfg.level_sides[level]
            for _ in range(cfg.num_res_blocks + 1):
                self.decoder.append(_Level(res_block(channels + skip_channels.pop(), width), attention(width, side)))
                channels = width
            if level != 0:
                self.decoder.append(Upsample(channels, cfg.padding_mode))
        assert not skip_channels, "every skip connection must be consumed"

        self.output_norm = _group_norm(channels, cfg.groups)
        self.output_conv = _conv3x3(channels, cfg.out_channels, cfg.padding_mode)
        # Zero-init: an untrained net predicts exactly 0 everywhere, i.e. it starts from
        # the zero score / zero velocity instead of a random field of O(1) bias, which
        # makes the first updates well-scaled (EDM / DDPM++ practice).
        nn.init.zeros_(self.output_conv.weight)
        assert self.output_conv.bias is not None  # _conv3x3 makes its convolutions with a bias
        nn.init.zeros_(self.output_conv.bias)

    def forward(
        self,
        x: Tensor,
        time: Tensor,
        condition: Tensor | None = None,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        """Evaluate the network.

        x: (B, in_channels, H, W) with H and W divisible by 2**(levels - 1).
        time: (B,) float (or a scalar), diffusion time in [0, 1].
        condition: (B, condition_channels, H, W), concatenated to ``x``; required iff
            ``condition_channels > 0``.
        class_labels: (B,) integer in [0, num_classes], ``num_classes`` meaning "no class";
            None means "no class" for the whole batch. Only for ``num_classes > 0``.
        Returns (B, out_channels, H, W).
        """
        self._check_inputs(x, condition, class_labels)
        batch = x.shape[0]
        embedding = self.time_embedding(broadcast_time(time, batch, x.device, x.dtype))
        if self.class_embedding is not None:
            embedding = embedding + self.class_embedding(class_labels, batch, x.device)

        h = x if condition is None else torch.cat([x, condition.to(x.dtype)], dim=1)
        h = self.input_conv(h)
        skips = [h]
        for block in self.encoder:
            h = block(h, embedding) if isinstance(block, _Level) else block(h)
            skips.append(h)

        h = self.middle_out(self.middle_attention(self.middle_in(h, embedding)), embedding)

        for block in self.decoder:
            if isinstance(block, _Level):
                h = block(torch.cat([h, skips.pop()], dim=1), embedding)
            else:
                h = block(h)
        return self.output_conv(F.silu(self.output_norm(h)))

    def _check_inputs(self, x: Tensor, condition: Tensor | None, class_labels: Tensor | None) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise UserError(f"UNet expects x of shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        factor = cfg.downsampling_factor
        if height % factor or width % factor:
            raise UserError(
                f"UNet with {len(cfg.channel_mults)} levels needs H and W divisible by {factor}, got {height}x{width}"
            )
        if cfg.padding_mode == "reflect" and min(height, width) // factor < 2:
            raise UserError(f"padding_mode 'reflect' needs H, W >= {2 * factor}, got {height}x{width}")
        if cfg.condition_channels:
            expected = (x.shape[0], cfg.condition_channels, height, width)
            if condition is None or tuple(condition.shape) != expected:
                got = None if condition is None else tuple(condition.shape)
                raise UserError(f"UNet expects condition of shape {expected}, got {got}")
        elif condition is not None:
            raise UserError("UNet was built with condition_channels=0 but a condition was passed")
        if class_labels is not None and cfg.num_classes == 0:
            raise UserError("UNet was built with num_classes=0 but class_labels were passed")
