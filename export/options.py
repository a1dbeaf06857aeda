"""The export's choices, importable without torch (the CLI offers them)."""

PRECISIONS = ("fp32", "fp16", "int8")  # activations; A, D, delta_bias and the scan state stay fp32
INT8_FORMATS = ("auto", "u8s8", "s8s8")  # see export.quantize
SCAN_VARIANTS = ("custom", "portable")  # one HandSSCASelectiveScan node per scan, or standard ONNX ops
DEFAULT_OPSET = 18  # what torch's exporter writes natively
# Opsets a file can be written in: 17 (TensorRT 8.6-era parsers, many deployment stacks) by
# converting down from 18; above 18 by onnx's version converter, up to what onnx here knows.
MIN_OPSET = 17
