"""The attention modules of the paper's ablation, all (B, C, H, W) -> (B, C, H, W).

* ``none``: the baseline, features pass through unchanged.
* ``ssa``: state space attention, the spatial branch alone (SS2D over the H x W plane).
* ``ssca``: state space channel attention (paper Fig. 3): the spatial branch plus a channel
  branch that treats the H x C plane as the grid and W as the feature size, summed.
* ``self_attention``: transformer self-attention over the H x W tokens (the 4.6M ablation).

Each branch is pre-normalised and added to the input (VMamba's block form), so every variant
starts near the baseline.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from handssca.errors import OptionError

from .config import ATTENTION_KINDS
from .ss2d import SS2D


class SpatialScan(nn.Module):
    """SS2D on the H x W plane with the C channels as features."""

    def __init__(self, channels: int, d_state: int = 16, expand: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.ss2d = SS2D(channels, d_state=d_state, expand=expand)

    def forward(self, x: Tensor) -> Tensor:
        y = self.ss2d(self.norm(x.permute(0, 2, 3, 1)))  # (B, H, W, C)
        return y.permute(0, 3, 1, 2)


class ChannelScan(nn.Module):
    """SS2D on the H x C plane with the W columns as features (sequence length H*C)."""

    def __init__(self, width: int, d_state: int = 16, expand: int = 1):
        super().__init__()
        self.width = width
        self.norm = nn.LayerNorm(width)
        self.ss2d = SS2D(width, d_state=d_state, expand=expand)

    def forward(self, x: Tensor) -> Tensor:
        y = self.ss2d(self.norm(x.permute(0, 2, 1, 3)))  # (B, H, C, W)
        return y.permute(0, 2, 1, 3)


class StateSpaceAttention(nn.Module):
    """SSA (spatial only) or SSCA (spatial + channel): x + spatial(x) [+ channel(x)]."""

    def __init__(
        self,
        channels: int,
        width: int,
        d_state: int = 16,
        spatial_expand: int = 2,
        channel_expand: int = 1,
        with_channel: bool = True,
    ):
        super().__init__()
        self.spatial = SpatialScan(channels, d_state, spatial_expand)
        self.channel = ChannelScan(width, d_state, channel_expand) if with_channel else None

    def forward(self, x: Tensor) -> Tensor:
        out = x + self.spatial(x)
        if self.channel is not None:
            out = out + self.channel(x)
        return out


class SelfAttention(nn.Module):
    """Pre-norm transformer encoder over the H*W tokens with a learned position embedding,
    then a 3x3 convolution fusing input and attended features (HandOccNet's fusion step)."""

    def __init__(self, channels: int, size: int, depth: int = 4, heads: int = 8, mlp_ratio: int = 4):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, size * size, channels))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            channels,
            heads,
            dim_feedforward=mlp_ratio * channels,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.fuse = nn.Conv2d(2 * channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = self.encoder(x.flatten(2).transpose(1, 2) + self.pos_embed)
        attended = tokens.transpose(1, 2).reshape(batch, channels, height, width)
        return self.fuse(torch.cat([x, attended], dim=1))


def build_attention(
    kind: str, channels: int, size: int, d_state: int = 16, spatial_expand: int = 2, channel_expand: int = 1
) -> nn.Module:
    """The attention module named ``kind`` for a (channels x size x size) feature map."""
    if kind == "none":
        return nn.Identity()
    if kind in ("ssa", "ssca"):
        return StateSpaceAttention(channels, size, d_state, spatial_expand, channel_expand, with_channel=kind == "ssca")
    if kind == "self_attention":
        return SelfAttention(channels, size)
    raise OptionError(f"unknown attention {kind!r}; expected one of {', '.join(ATTENTION_KINDS)}")
