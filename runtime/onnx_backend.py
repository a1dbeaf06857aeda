"""Runs an exported HandSSCA .onnx in ONNX Runtime, the scan node on our CPU kernel. No torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .scan_node import register_ort_scan_op


class OnnxModelError(RuntimeError):
    """The model file cannot be run: names the file and the problem."""


class OnnxModel:
    """``OnnxModel(path_or_bytes).run(image)`` -> dict of output arrays.

    image: (B, 3, S, S) float32, normalised as the metadata's ``input`` says.
    """

    def __init__(self, source: str | Path | bytes, providers: list[str] | None = None, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise OnnxModelError("ONNX Runtime is not installed (pip install onnxruntime)") from exc
        self.name = "<bytes>" if isinstance(source, bytes) else str(source)
        if not isinstance(source, bytes):
            path = Path(source)
            if not path.is_file():
                raise OnnxModelError(f"{path}: model file not found")
            source = str(path)
        options = ort.SessionOptions()
        options.register_custom_ops_library(register_ort_scan_op())
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(source, options, providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for each failure
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "INVALID_PROTOBUF" in message or "Protobuf parsing failed" in message:
                message = "not an ONNX model (cannot parse the protobuf)"
            raise OnnxModelError(f"{self.name}: {message}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map.get("handssca")
        self.metadata = json.loads(meta) if meta else {}
        self.input = self.session.get_inputs()[0]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        expected = self.input.shape  # symbolic dimensions come back as strings
        if not isinstance(image, np.ndarray) or image.ndim != len(expected):
            raise OnnxModelError(
                f"{self.name}: input '{self.input.name}' must be an array of shape {expected}, "
                f"got {getattr(image, 'shape', type(image).__name__)}"
            )
        if image.dtype != np.float32:
            raise OnnxModelError(f"{self.name}: input '{self.input.name}' must be float32, got {image.dtype}")
        for axis, (want, got) in enumerate(zip(expected, image.shape, strict=True)):
            if isinstance(want, int) and want != got:
                raise OnnxModelError(
                    f"{self.name}: input '{self.input.name}' has shape {image.shape}, expected {expected} (axis {axis})"
                )
        outputs = self.session.run(None, {self.input.name: np.ascontiguousarray(image)})
        return dict(zip(self.output_names, outputs, strict=True))
