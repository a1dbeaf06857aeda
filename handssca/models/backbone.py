"""ResNet-50 + FPN top-down fusion to one stride-8 feature map (as HandOccNet's backbone)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import ResNet50


def smooth_then_pool_as_one_conv(weight: Tensor) -> Tensor:
    """The 4x4 kernel of the one stride-2 convolution (padding 1) that equals a 3x3 convolution
    (padding 1, ``weight`` (out, in, 3, 3)) followed by 2x2 average pooling (stride 2).

    Output (i, j) of the pool averages the convolution at rows 2i, 2i+1 and columns 2j, 2j+1,
    which read input rows 2i-1 ... 2i+2: a 4x4 window at stride 2. Its tap (r, c) sums the 3x3
    taps (r - a, c - b) for a, b in {0, 1}, over 4; the bias passes through the average
    unchanged. Exact for every input size (the pool's floor and the strided window agree), with
    4.8 instead of 10.9 multiply-adds per output value at 256 channels: 12% of the paper model's
    FLOPs. Differences are float rounding (about 1e-7 relative).
    """
    out_channels, in_channels = weight.shape[:2]
    folded = weight.new_zeros(out_channels, in_channels, 4, 4)
    for a in (0, 1):
        for b in (0, 1):
            folded[:, :, a : a + 3, b : b + 3] += weight
    return folded / 4


class FPNBackbone(nn.Module):
    """Image (B, 3, S, S) -> features (B, C, S/8, S/8).

    Lateral 1x1 convolutions bring C2..C5 to C channels, the top-down path adds each level to
    the upsampled coarser one, a 3x3 convolution smooths the finest level P2 (S/4), and 2x2
    average pooling gives the S/8 map the attention module works on (256 x 32 x 32 at S=256).
    Only P2 is used downstream, so only P2 is smoothed.
    """

    def __init__(self, resnet_width: int = 64, channels: int = 256):
        super().__init__()
        self.resnet = ResNet50(resnet_width)
        c2, c3, c4, c5 = self.resnet.stage_channels
        self.top = nn.Conv2d(c5, channels, 1)
        self.lateral4 = nn.Conv2d(c4, channels, 1)
        self.lateral3 = nn.Conv2d(c3, channels, 1)
        self.lateral2 = nn.Conv2d(c2, channels, 1)
        self.smooth2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.pool = nn.AvgPool2d(2, stride=2)
        self.out_channels = channels
        # The smooth-then-pool kernel while folded for inference (not saved with the weights).
        self.register_buffer("smooth_pool_weight", None, persistent=False)
        # New weights would make a fold stale: loading them unfolds (as written is never wrong).
        self.register_load_state_dict_post_hook(lambda module, keys: module.unfold())

    @torch.no_grad()
    def fold_for_inference(self) -> None:
        """Runs smooth2 and the pool as one convolution (smooth_then_pool_as_one_conv) until the
        next ``train()``; the weights themselves do not change."""
        self.smooth_pool_weight = smooth_then_pool_as_one_conv(self.smooth2.weight)

    def unfold(self) -> None:
        self.smooth_pool_weight = None

    def train(self, mode: bool = True):
        if mode:
            self.unfold()  # training changes smooth2
        return super().train(mode)

    @staticmethod
    def _upsample_add(coarse: Tensor, lateral: Tensor) -> Tensor:
        return F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral

    def forward(self, image: Tensor) -> Tensor:
        c2, c3, c4, c5 = self.resnet(image)
        p5 = self.top(c5)
        p4 = self._upsample_add(p5, self.lateral4(c4))
        p3 = self._upsample_add(p4, self.lateral3(c3))
        p2 = self._upsample_add(p3, self.lateral2(c2))
        if self.smooth_pool_weight is not None:
            return F.conv2d(p2, self.smooth_pool_weight, self.smooth2.bias, stride=2, padding=1)
        return self.pool(self.smooth2(p2))
