"""The network's configuration, importable without torch (the CLI's choices, checkpoints' metadata)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from handssca.errors import OptionError

# The attention module after the FPN: the paper's SSCA and its ablations (Table 6).
ATTENTION_KINDS = ("none", "self_attention", "ssa", "ssca")
ENCODER_BLOCKS = 4


@dataclass(frozen=True)
class HandSSCAConfig:
    """Everything that fixes the network's shape. The defaults are the paper's model."""

    attention: str = "ssca"  # none | self_attention | ssa | ssca (the paper's ablation)
    input_size: int = 256
    resnet_width: int = 64
    fpn_channels: int = 256
    num_joints: int = 21
    d_state: int = 16
    spatial_expand: int = 2
    channel_expand: int = 1
    heatmap_depth: int = 3
    mano_hidden: tuple[int, ...] = (1024, 512)

    def __post_init__(self):
        if self.attention not in ATTENTION_KINDS:
            raise OptionError(f"attention {self.attention!r}: expected one of {', '.join(ATTENTION_KINDS)}")
        step = 8 * 2**ENCODER_BLOCKS  # stride-8 features, then one 2x pooling per encoder block
        if self.input_size < step or self.input_size % step:
            raise OptionError(f"input_size {self.input_size}: must be a positive multiple of {step}")
        object.__setattr__(self, "mano_hidden", tuple(self.mano_hidden))

    @property
    def feature_size(self) -> int:
        """Side of the square feature map the attention and heatmaps work on (32 at 256)."""
        return self.input_size // 8

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HandSSCAConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise OptionError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mano_hidden"] = list(self.mano_hidden)
        return d
