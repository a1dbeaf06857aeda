"""handssca.export: the network to ONNX, with each selective scan as one custom node.

Names are imported on first use (PEP 562): ``handssca.export.options`` needs no torch.
"""

from importlib import import_module

_HOMES = {"ExportError": ".onnx_export", "ExportResult": ".onnx_export", "export_onnx": ".onnx_export"}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_HOMES[name], __name__), name)
