"""ResNet-50 + FPN top-down fusion to one stride-8 feature map (as HandOccNet's backbone)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import ResNet50


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

    @staticmethod
    def _upsample_add(coarse: Tensor, lateral: Tensor) -> Tensor:
        return F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral

    def forward(self, image: Tensor) -> Tensor:
        c2, c3, c4, c5 = self.resnet(image)
        p5 = self.top(c5)
        p4 = self._upsample_add(p5, self.lateral4(c4))
        p3 = self._upsample_add(p4, self.lateral3(c3))
        p2 = self._upsample_add(p3, self.lateral2(c2))
        return self.pool(self.smooth2(p2))
