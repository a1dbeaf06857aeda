"""handssca.runtime: low-latency inference without torch (numpy + ONNX Runtime or TensorRT).

Nothing in this package imports torch; a test runs it with torch hidden. The entry points:
``open_runner`` (any runner: ONNX Runtime, TensorRT, or PyTorch where installed),
``HandMeshPredictor`` (frames and boxes in, meshes out), the CPU scan kernel. Names are imported
on first use (PEP 562), so ``import handssca.runtime`` loads nothing it does not need.
"""

from handssca.lazy import lazy_attributes

_HOMES = {
    "kernel_info": ".selective_scan",
    "selective_scan_forward": ".selective_scan",
    "selective_scan_backward": ".selective_scan",
    "open_runner": ".runner",
    "meshes_from_outputs": ".runner",
    "OnnxRunner": ".onnx_runner",
    "TensorRTRunner": ".tensorrt_runner",
    "HandMeshPredictor": ".predictor",
    "HandPrediction": ".predictor",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_attributes(__name__, _HOMES)
