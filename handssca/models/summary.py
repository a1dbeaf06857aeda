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


def model_report(config, batch: int = 1, imagenet_weights=None) -> dict:
    """``handssca info``: parameters per module next to the paper's, the scan implementation, the
    outputs' shapes and a timed CPU forward pass of a network built from ``config``."""
    import torch

    from handssca import __version__
    from handssca.measure import time_runner
    from handssca.ops import describe_scan_backend

    from .handssca import HandSSCA

    torch.manual_seed(0)
    model = HandSSCA(config, imagenet_weights=imagenet_weights).eval()
    rows = parameter_summary(model)
    image = torch.randn(batch, 3, config.input_size, config.input_size)
    with torch.inference_mode():
        outputs = model(image)  # also the warm-up
        forward_ms = time_runner(lambda: model(image), warmup=0, runs=1)["median_ms"]
    paper = {"total": PAPER_PARAMETERS["model"] if config.attention == "ssca" else None}
    attention_key = next(name for name, _ in rows if name.startswith("attention"))
    paper[attention_key] = PAPER_PARAMETERS.get(config.attention)
    return {
        "version": __version__,
        "config": config.to_dict(),
        "parameters": dict(rows),
        "paper_parameters": {k: v for k, v in paper.items() if v},
        "selective_scan": describe_scan_backend("cpu"),
        "outputs": {k: list(v.shape) for k, v in outputs.items()},
        "forward_ms": round(forward_ms, 1),
        "batch": batch,
        "threads": torch.get_num_threads(),
    }


def format_model_report(report: dict) -> str:
    config = report["config"]
    lines = [
        f"HandSSCA {report['version']}  attention={config['attention']}  "
        f"input={config['input_size']}x{config['input_size']}",
        f"{'module':<30}{'parameters':>14}{'paper':>10}{'diff':>8}",
    ]
    for name, count in report["parameters"].items():
        target = report["paper_parameters"].get(name)
        extra = f"{target / 1e6:>9.2f}M{(count - target) / target:>+8.1%}" if target else ""
        lines.append(f"{name:<30}{count / 1e6:>13.3f}M{extra}")
    lines.append("outputs: " + ", ".join(f"{k} {tuple(v)}" for k, v in report["outputs"].items()))
    lines.append(f"selective scan (cpu): {report['selective_scan']}")
    lines.append(f"forward, batch {report['batch']}, CPU, {report['threads']} threads: {report['forward_ms']:.1f} ms")
    return "\n".join(lines)
