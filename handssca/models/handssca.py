"""The HandSSCA network: backbone -> attention -> regressor (paper Fig. 2)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .attention import build_attention
from .backbone import FPNBackbone
from .config import ENCODER_BLOCKS, HandSSCAConfig
from .regressor import HeatmapHead, MANOParamHead, MeshEncoder, soft_argmax
from .resnet import load_torchvision_resnet50

# The exact rewrites ``rewrite_for_inference`` applies (and the export writes), by what they do.
INFERENCE_REWRITES = ("FPN smooth2 3x3 conv + 2x2 average pool -> one 4x4 stride-2 conv",)


class HandSSCA(nn.Module):
    """RGB crop (B, 3, S, S), normalised -> heatmaps, 2D joints, MANO pose/shape and camera.

    Outputs (a dict of tensors):
      heatmaps  (B, 21, S/8, S/8)  spatial-softmax probabilities
      joints_2d (B, 21, 2)         (u, v) in [0, 1] of the input crop
      pose      (B, 48)            MANO axis-angle, global rotation first
      shape     (B, 10)            MANO betas
      camera    (B, 3)             weak perspective (scale, tx, ty) for the 2D-joint loss
    """

    def __init__(self, config: HandSSCAConfig | None = None, imagenet_weights: str | Path | None = None):
        """``imagenet_weights``: a torchvision ``resnet50-*.pth`` file to initialise the ResNet-50 from."""
        super().__init__()
        self.config = config = config or HandSSCAConfig()
        c, s = config.fpn_channels, config.feature_size
        self.backbone = FPNBackbone(config.resnet_width, c)
        if imagenet_weights is not None:
            load_torchvision_resnet50(self.backbone.resnet, imagenet_weights)
        self.attention = build_attention(
            config.attention, c, s, config.d_state, config.spatial_expand, config.channel_expand
        )
        self.heatmap_head = HeatmapHead(c, config.num_joints, config.heatmap_depth)
        self.encoder = MeshEncoder(c, config.num_joints, ENCODER_BLOCKS)
        vector = 2 * c * (s // 2**ENCODER_BLOCKS) ** 2
        self.mano_head = MANOParamHead(vector, config.mano_hidden)

    def rewrite_for_inference(self) -> HandSSCA:
        """Eval mode with INFERENCE_REWRITES on: the same outputs (to float rounding, tested) for
        less work, from the same weights, so any checkpoint takes them. ``train()`` and
        ``load_state_dict`` undo them."""
        self.eval()
        self.backbone.fold_for_inference()
        return self

    def drop_inference_rewrites(self) -> HandSSCA:
        """The network as written again (what ``train()`` and loading weights also do), still in its
        current mode."""
        self.backbone.unfold()
        return self

    @property
    def rewritten(self) -> bool:
        return self.backbone.smooth_pool_weight is not None

    def check_input(self, image: Tensor) -> None:
        size = self.config.input_size
        expected = f"(batch, 3, {size}, {size}) floating-point tensor"
        if not isinstance(image, Tensor):
            raise TypeError(f"HandSSCA expects a {expected}, got {type(image).__name__}")
        if not image.is_floating_point():
            raise TypeError(f"HandSSCA expects a {expected}, got dtype {image.dtype}")
        if image.dim() != 4:
            raise ValueError(f"HandSSCA expects a {expected}, got shape {tuple(image.shape)}")
        if image.shape[1] != 3:
            raise ValueError(
                f"HandSSCA expects 3 colour channels (RGB, channels first), got {image.shape[1]} "
                f"in shape {tuple(image.shape)}"
            )
        if tuple(image.shape[2:]) != (size, size):
            raise ValueError(f"HandSSCA expects {size}x{size} crops, got shape {tuple(image.shape)}")

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            self.check_input(image)
        features = self.attention(self.backbone(image))
        heatmaps = self.heatmap_head(features)
        pose, shape, camera = self.mano_head(self.encoder(features, heatmaps))
        return {
            "heatmaps": heatmaps,
            "joints_2d": soft_argmax(heatmaps),
            "pose": pose,
            "shape": shape,
            "camera": camera,
        }
