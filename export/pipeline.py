"""``handssca export`` from start to end: the weights loaded, the float or int8 export written
and validated, and the lines that report it."""

from __future__ import annotations

from pathlib import Path

from handssca.errors import RunError
from handssca.progress import say

from .options import ExportOptions


def run_export(options: ExportOptions) -> list[str]:
    """Writes ``options.output`` (and its sidecar) and returns what to tell the user."""
    from handssca.runtime.files import check_writable
    from handssca.runtime.mano.load import BUILTIN, load_hand_model
    from handssca.training.checkpoint import load_network

    if options.precision == "int8" and not options.calibration:
        raise RunError("--precision int8 needs --calibration DATA (a data set folder, or synth)")
    check_writable(options.output)  # before the weights are loaded and the graph traced
    lines = []
    overrides = {"attention": options.attention, "input_size": options.input_size}
    model, weights = load_network(options.checkpoint, options.config, overrides, options.seed)
    if weights.startswith("untrained"):
        lines.append(f"exporting the {weights} network: pass --checkpoint for trained weights")
    mano, fingertip_ids = None, None
    if options.mano:
        mano, fingertip_ids, label = load_hand_model(options.mano, options.fingertips)
        hint = " (pass --with-mano PATH for the real model)" if options.mano == BUILTIN else ""
        lines.append(f"MANO in the graph: {label}{hint}")
    settings = dict(
        batch=options.batch, opset=options.opset, scan=options.scan, validate=options.validate,
        tolerance=options.tolerance, mano=mano, flat_hand_mean=options.flat_hand_mean,
        fingertip_ids=fingertip_ids, weights=weights, say=say,
    )  # fmt: skip
    if options.precision == "int8":
        from .quantize import export_int8

        info, skipped = export_int8(
            model, options.output, calibration=options.calibration, images=options.calibration_images,
            fmt=options.int8_format, **settings,
        )  # fmt: skip
        lines += [f"calibration: counted out {reason}" for reason in skipped]
        lines.append(f"wrote {options.output}: {info['description']}; calibrated on {info['calibration']}")
        joints = info["shift_vs_pytorch"]["joints_mm"]
        lines.append(
            f"int8 against PyTorch on the {info['shift_vs_pytorch']['samples']} calibration crops: joints move "
            f"{joints['median']:.2f} mm median, {joints['p90']:.2f} p90, {joints['max']:.2f} max (in the sidecar)"
        )
        root = options.calibration if options.calibration and Path(str(options.calibration)).is_dir() else "DATA"
        lines.append(f"measure what it costs: handssca eval --root {root} --onnx FP32.onnx --onnx {options.output}")
        return lines
    from .onnx_export import export_onnx

    result = export_onnx(model, options.output, precision=options.precision, **settings)
    nodes = f"{result.scan_nodes} selective-scan nodes" if options.scan == "custom" else "scans in standard ONNX ops"
    lines.append(f"wrote {result.path} ({options.precision}, {nodes}) and {result.sidecar}")
    if result.comparison is not None:
        lines.append(
            "ONNX Runtime vs PyTorch fp32 (polygraphy), max |diff|: " + result.comparison.summary("onnxruntime")
        )
    return lines
