"""Regressor (paper section 3.4): heatmaps -> 2D joints, then residual encoder -> MANO parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MANO_POSE_DIM = 48  # 16 joints x axis-angle, global rotation first
MANO_SHAPE_DIM = 10
CAMERA_DIM = 3  # weak perspective: scale, tx, ty


class HeatmapHead(nn.Module):
    """A conv cascade producing one heatmap per joint, normalised by a spatial softmax."""

    def __init__(self, channels: int, num_joints: int, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
            ]
        self.convs = nn.Sequential(*layers)
        self.score = nn.Conv2d(channels, num_joints, 1)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.score(self.convs(x))
        batch, joints, h, w = logits.shape
        return logits.flatten(2).softmax(dim=-1).reshape(batch, joints, h, w)


def soft_argmax(heatmaps: Tensor) -> Tensor:
    """(B, J, H, W) probabilities -> (B, J, 2) expected (u, v) in [0, 1] of the map, at cell centres."""
    _, _, h, w = heatmaps.shape
    u = (torch.arange(w, device=heatmaps.device, dtype=heatmaps.dtype) + 0.5) / w
    v = (torch.arange(h, device=heatmaps.device, dtype=heatmaps.dtype) + 0.5) / h
    return torch.stack([(heatmaps.sum(dim=2) * u).sum(-1), (heatmaps.sum(dim=3) * v).sum(-1)], dim=-1)


class Residual(nn.Module):
    """Pre-activation bottleneck residual unit (HandOccNet's encoder unit)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.LeakyReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1),
        )
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.skip(x)


class MeshEncoder(nn.Module):
    """Features + heatmaps -> one vector: a 1x1 fusion, then four residual blocks each halving
    the resolution; the last doubles the channels, so 256 x 32 x 32 becomes 512 x 2 x 2 = 2048."""

    def __init__(self, channels: int, num_joints: int, blocks: int = 4):
        super().__init__()
        self.fuse = nn.Conv2d(channels + num_joints, channels, 1)
        widths = [channels] * blocks + [2 * channels]
        self.blocks = nn.ModuleList(Residual(widths[i], widths[i + 1]) for i in range(blocks))

    def forward(self, features: Tensor, heatmaps: Tensor) -> Tensor:
        x = self.fuse(torch.cat([features, heatmaps], dim=1))
        for block in self.blocks:
            x = F.max_pool2d(block(x), 2)
        return x.flatten(1)


class MANOParamHead(nn.Module):
    """FC layers from the encoder vector to MANO pose (48), shape (10) and a weak-perspective camera (3)."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (1024, 512)):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(inplace=True)]
            width = h
        self.base = nn.Sequential(*layers)
        self.pose = nn.Linear(width, MANO_POSE_DIM)
        self.shape = nn.Linear(width, MANO_SHAPE_DIM)
        self.camera = nn.Linear(width, CAMERA_DIM)
        # Start at the mean hand (zero pose and shape offsets) with small updates.
        for head in (self.pose, self.shape, self.camera):
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.base(x)
        return self.pose(h), self.shape(h), self.camera(h)
