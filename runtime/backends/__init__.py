"""Backends: the one runner contract (base.py) and its runners (ONNX Runtime, TensorRT), the ONNX
file reader, TensorRT's libraries and engine build, and the comparison of backends' outputs.
``runner.open_runner`` picks the runner for a file."""
