"""The export's choices, importable without torch (the CLI offers them)."""

PRECISIONS = ("fp32", "fp16")  # activations; A, D, delta_bias and the scan state stay fp32
SCAN_VARIANTS = ("custom", "portable")  # one HandSSCASelectiveScan node per scan, or standard ONNX ops
DEFAULT_OPSET = 18
