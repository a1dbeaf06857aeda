"""Parameter counts per module, next to the paper's figures."""

from __future__ import annotations

from torch import nn

# Paper section 4 / Table 6: whole model, and the attention modules of the ablation.
PAPER_PARAMETERS = {
    "model": 31.8e6,
    "ssca": 0.58e6,
    "ssa": 0.57e6,
    "self_attention": 4.6e6,
}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_summary(model: nn.Module) -> list[tuple[str, int]]:
    """(name, parameters) for each part of a HandSSCA model, then the total."""
    backbone = model.backbone
    rows = [
        ("backbone.resnet50", count_parameters(backbone.resnet)),
        ("backbone.fpn", count_parameters(backbone) - count_parameters(backbone.resnet)),
        (f"attention ({model.config.attention})", count_parameters(model.attention)),
        ("regressor.heatmap_head", count_parameters(model.heatmap_head)),
        ("regressor.encoder", count_parameters(model.encoder)),
        ("regressor.mano_head", count_parameters(model.mano_head)),
    ]
    rows.append(("total", count_parameters(model)))
    return rows
