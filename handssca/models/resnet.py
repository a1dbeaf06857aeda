"""ResNet-50 with torchvision's parameter names, so ImageNet weights load from a file.

torchvision is not a dependency; this module only has to agree with its state-dict layout
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from handssca.errors import InputError


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50(nn.Module):
    """ResNet-50 trunk returning the four stage outputs C2..C5 (strides 4, 8, 16, 32).

    ``width`` is the stem width (64 in ResNet-50); smaller values give proportionally thinner
    networks for tests. The classifier (``avgpool``/``fc``) is left out: it is never used here.
    """

    layers = (3, 4, 6, 3)

    def __init__(self, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(width, self.layers[0], 1)
        self.layer2 = self._make_layer(width * 2, self.layers[1], 2)
        self.layer3 = self._make_layer(width * 4, self.layers[2], 2)
        self.layer4 = self._make_layer(width * 8, self.layers[3], 2)
        self.stage_channels = tuple(width * m * Bottleneck.expansion for m in (1, 2, 4, 8))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of each block so every residual branch starts as identity.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c2, c3, c4, c5


def load_torchvision_resnet50(model: ResNet50, path: str | Path) -> None:
    """Loads a torchvision ``resnet50-*.pth`` state dict from disk into ``model``.

    The file is read with ``weights_only=True`` (no arbitrary unpickling). The classifier
    (``fc.*``) is ignored; any other missing, unexpected or mis-shaped key is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: ImageNet weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, forbidden pickle content
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise InputError(f"{path}: cannot read as a torch state dict ({type(exc).__name__}: {reason})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise InputError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(
            f"{path}: not a torchvision ResNet-50 state dict "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise InputError(
                f"{path}: {key} has shape {tuple(value.shape)}, this ResNet-50 expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=False)
