"""The HandSSCA network and its parts.

Names are imported on first use (PEP 562), so that ``handssca.models.config`` (the configuration,
torch-free) can be read where torch is not installed.
"""

from handssca.lazy import lazy_attributes

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
    "TorchRunner": ".torch_runner",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_attributes(__name__, _HOMES)
