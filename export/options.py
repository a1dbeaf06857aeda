"""The export's choices and options, importable without torch (the CLI offers them)."""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("fp32", "fp16", "int8")  # activations; A, D, delta_bias and the scan state stay fp32
INT8_FORMATS = ("auto", "u8s8", "s8s8")  # see export.quantize
SCAN_VARIANTS = ("custom", "portable")  # one HandSSCASelectiveScan node per scan, or standard ONNX ops
DEFAULT_OPSET = 18  # what torch's exporter writes natively
# Opsets a file can be written in: 17 (TensorRT 8.6-era parsers, many deployment stacks) by
# converting down from 18; above 18 by onnx's version converter, up to what onnx here knows.
MIN_OPSET = 17


@dataclass
class ExportOptions:
    """``handssca export``: where to write, which weights, and how (see ``export.pipeline``)."""

    output: str = "handssca.onnx"
    checkpoint: str | None = None  # trained weights (None: the untrained network of ``seed``)
    config: str | None = None  # a YAML file with a 'model:' section (None: the paper's model)
    attention: str | None = None  # the paper's ablation (None: the config's, ssca)
    input_size: int | None = None
    batch: int | None = None  # a fixed batch (None: dynamic)
    opset: int = DEFAULT_OPSET
    precision: str = PRECISIONS[0]
    calibration: str | None = None  # int8: a data set folder, or synth
    calibration_images: int = 64
    int8_format: str = INT8_FORMATS[0]
    scan: str = SCAN_VARIANTS[0]
    seed: int = 0
    validate: bool = True  # the ONNX Runtime vs PyTorch comparison (--no-validate: skipped)
    tolerance: float | None = None  # largest |ORT - PyTorch| accepted (None: 1e-4 fp32, 5e-2 fp16)
    mano: str | None = None  # MANO in the graph (--with-mano): a .pkl/.npz, or builtin
    flat_hand_mean: bool = False
    fingertips: str = "smplx"  # whose fingertip vertices (export_onnx takes their ids)
