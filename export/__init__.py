"""handssca.export: the network to ONNX, with each selective scan as one custom node.

Names are imported on first use (PEP 562): ``handssca.export.options`` needs no torch.
"""

from handssca.lazy import lazy_attributes

_HOMES = {
    "ExportResult": ".onnx_export",
    "export_onnx": ".onnx_export",
    "run_export": ".pipeline",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_attributes(__name__, _HOMES)
