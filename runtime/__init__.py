"""handssca.runtime: low-latency inference without torch (numpy + ONNX Runtime or TensorRT).

Nothing in this package imports torch; a test runs it with torch hidden.
"""

from .selective_scan import kernel_info, selective_scan_backward, selective_scan_forward

__all__ = ["kernel_info", "selective_scan_backward", "selective_scan_forward"]
