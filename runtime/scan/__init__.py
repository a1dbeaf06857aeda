"""The selective scan outside torch: the custom ONNX node's schema and shape check (node.py), the
CPU kernel's binding (kernel.py, built from csrc/), and its registration with ONNX Runtime through
onnxruntime-extensions (ort_bridge.py)."""
