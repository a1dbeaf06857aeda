"""handssca.runtime: low-latency inference without torch (numpy + ONNX Runtime or TensorRT).

By idea: ``backends`` (the runners and model files), ``scan`` (the selective scan's node and CPU
kernel), ``hands`` (finding and tracking hands), ``mano`` (the hand model); the application
modules (predictor, crop, infer, webcam, overlay, mesh_render, files, photos) sit at the top.

Nothing in this package imports torch; a test runs it with torch hidden. The entry points:
``open_runner`` (any runner: ONNX Runtime, TensorRT, or PyTorch where installed),
``HandMeshPredictor`` (frames and boxes in, meshes out), the CPU scan kernel. Names are imported
on first use (PEP 562), so ``import handssca.runtime`` loads nothing it does not need.
"""

from handssca.lazy import lazy_attributes

_HOMES = {
    "kernel_info": ".scan.kernel",
    "selective_scan_forward": ".scan.kernel",
    "selective_scan_backward": ".scan.kernel",
    "open_runner": ".backends.runner",
    "meshes_from_outputs": ".mano.model",
    "OnnxRunner": ".backends.onnx_runner",
    "TensorRTRunner": ".backends.tensorrt_runner",
    "HandMeshPredictor": ".predictor",
    "HandPrediction": ".predictor",
}

__all__ = sorted(_HOMES)


__getattr__ = lazy_attributes(__name__, _HOMES)
