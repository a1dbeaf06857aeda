"""The HandSSCA network and its parts.

Names are imported on first use (PEP 562), so that ``handssca.models.config`` (the configuration,
torch-free) can be read where torch is not installed.
"""

from importlib import import_module

_HOMES = {
    "ATTENTION_KINDS": ".config",
    "HandSSCAConfig": ".config",
    "build_attention": ".attention",
    "HandSSCA": ".handssca",
    "ResNet50": ".resnet",
    "load_torchvision_resnet50": ".resnet",
    "PAPER_PARAMETERS": ".summary",
    "format_model_report": ".summary",
    "model_report": ".summary",
    "parameter_summary": ".summary",
    "TorchModel": ".torch_model",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name], __name__), name)
