"""handssca.export: the network to ONNX, with each selective scan as one custom node."""

from .onnx_export import ExportError, ExportResult, export_onnx

__all__ = ["ExportError", "ExportResult", "export_onnx"]
