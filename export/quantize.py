"""int8 static quantization of an exported file: Q/DQ around the backbone's convolutions.

ONNX Runtime's ``quantize_static`` calibrates by running the model in one plain session, which
can only reach our scan node through the onnxruntime-extensions bridge (about 60 ns per element,
minutes per image at full size). So the file is cut at its scan nodes exactly as ``OnnxRunner``
runs it (``cut_at_scans``); the fp32 file runs on the calibration images and each stage between
the scans is calibrated on the tensors it reads there and quantized on its own (after ORT's
``quant_pre_process``: shape inference and the Conv + BatchNorm folds); the quantized stages and
the untouched scan nodes make one file again, checked like every export.

Only the convolutions before the scans are quantized (ResNet-50 + FPN: 94% of the paper
model's FLOPs), weights per output channel; the scans, their projections, LayerNorm, the heads
after the scans and MANO stay float32. Quantizing the heads as well (``scope="all"``) saves no
time (47.7 vs 48.1 ms at batch 1 on the paper model, same run) and costs accuracy (through the
demo checkpoint, PA-MPJPE +0.060 mm against +0.019 mm, joint shift p90 9.3 mm against 6.1).
The format:

* ``u8s8``: uint8 activations (asymmetric), int8 weights: ONNX Runtime's fast CPU format. On a
  CPU without VNNI, weights use 7 bits (``reduce_range``), which avoids the saturation of
  AVX2/AVX-512 u8s8 dot products; with VNNI the full 8 bits.
* ``s8s8``: int8 activations and weights, both symmetric (zero points 0): the Q/DQ file TensorRT
  builds explicit int8 engines from (``handssca build-engine``), and ORT runs it too.
* ``auto``: ``u8s8`` (the right one for ONNX Runtime on this CPU).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from handssca.errors import RunError
from handssca.measure import cpu_info
from handssca.runtime.backends.onnx_file import read_onnx
from handssca.runtime.backends.onnx_runner import OnnxRunner, cut_at_scans
from handssca.runtime.files import check_writable, write_together
from handssca.runtime.scan.node import register_scan_schema

from .options import INT8_FORMATS


@dataclass(frozen=True)
class Int8Format:
    name: str
    activations: str  # onnxruntime.quantization.QuantType member
    reduce_range: bool
    symmetric_activations: bool

    def describe(self) -> str:
        weights = "int8 weights (7 bits: no VNNI here)" if self.reduce_range else "int8 weights"
        zero = ", zero points 0 (TensorRT's explicit int8)" if self.symmetric_activations else ""
        return f"{self.name}: {self.activations[1:].lower()} activations, {weights} per channel{zero}"


def has_vnni() -> bool:
    return any(f in cpu_info()["features"] for f in ("avx512_vnni", "avx_vnni"))


def int8_format(name: str = "auto") -> Int8Format:
    """The format ``name`` stands for on this CPU (see the module's docstring)."""
    if name not in INT8_FORMATS:
        raise RunError(f"int8 format {name!r}: expected one of {', '.join(INT8_FORMATS)}")
    if name in ("auto", "u8s8"):
        return Int8Format("u8s8", "QUInt8", reduce_range=not has_vnni(), symmetric_activations=False)
    return Int8Format("s8s8", "QInt8", reduce_range=False, symmetric_activations=True)


class _Feeds:
    """onnxruntime.quantization's CalibrationDataReader over recorded stage inputs."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def quantize_int8(
    source: str | Path,
    output: str | Path,
    images: np.ndarray,
    fmt: str = "auto",
    batch_size: int = 4,
    show_progress: bool = True,
    calibration: str = "given images",
    scope: str = "backbone",
    check=None,
) -> dict:
    """Writes ``output`` (and its .json sidecar): the fp32 export ``source`` with every
    convolution before the scans (``scope="all"``: every convolution) quantized to int8,
    calibrated on ``images`` (N, 3, S, S), preprocessed as the metadata says. Returns what the
    metadata records under "int8". ``check(path of the int8 model) -> dict``, given, runs on the
    finished model before it is written and what it returns is recorded under "int8" too."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from tqdm import tqdm

    source, output = Path(source), Path(output)
    if output.suffix != ".onnx":
        raise RunError(f"{output}: the output file must end in .onnx")
    check_writable(output)
    chosen = int8_format(fmt)
    if scope not in ("backbone", "all"):
        raise RunError(f"int8 scope {scope!r}: expected backbone or all")
    if images.ndim != 4 or len(images) == 0:
        raise RunError(f"calibration: expected a non-empty (N, 3, S, S) batch of crops, got {images.shape}")
    runner = OnnxRunner(source)
    metadata = dict(runner.metadata)
    if metadata.get("precision", "fp32") != "fp32":
        raise RunError(f"{source}: int8 starts from an fp32 export, this one is {metadata.get('precision')}")

    proto = read_onnx(source, error=RunError).model
    constants = {i.name for i in proto.graph.initializer}
    stages = cut_at_scans(proto, runner.input_name, runner.output_names, constants)
    # A stage after a scan holds the heads: quantized only with scope "all".
    chosen_stages = [k for k, stage in enumerate(stages) if stage.model is not None and (scope == "all" or k == 0)]
    recorded: list[list[dict]] = [[] for _ in stages]
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="calibrating", unit="batch", disable=not show_progress):
        values = runner.intermediates(np.ascontiguousarray(images[start : start + batch_size]))
        for k in chosen_stages:
            recorded[k].append({t: values[t] for t in stages[k].inputs})

    activation_type = getattr(QuantType, chosen.activations)
    extra = {"WeightSymmetric": True, "ActivationSymmetric": chosen.symmetric_activations}
    quantized = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, stage in enumerate(tqdm(stages, desc="quantizing", unit="stage", disable=not show_progress)):
            if k not in chosen_stages:
                quantized.append(stage.model)  # float32 as exported (None: scans only)
                continue
            plain, prepared, done = (Path(tmp) / f"stage{k}{suffix}.onnx" for suffix in ("", "_pre", "_int8"))
            onnx.save(stage.model, plain)
            quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(done),
                _Feeds(recorded[k]),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=True,
                reduce_range=chosen.reduce_range,
                activation_type=activation_type,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options=extra,
            )
            quantized.append(onnx.load(done))
    merged = _merge(proto, stages, quantized)
    info = {
        "format": chosen.name,
        "description": chosen.describe(),
        "quantized": (
            "every Conv (per output channel)" if scope == "all" else "the Convs before the scans (per output channel)"
        )
        + "; scans, projections, LayerNorm and MANO stay float32",
        "scope": scope,
        "calibration": calibration,
        "calibration_images": int(len(images)),
        "calibration_method": "MinMax",
        "reduce_range": chosen.reduce_range,
    }
    metadata["precision"] = "int8"
    metadata.pop("validation", None)  # the fp32 file's comparison with PyTorch is not this file's
    metadata["int8"] = info
    del merged.metadata_props[:]
    entry = merged.metadata_props.add()
    entry.key, entry.value = "handssca", json.dumps(metadata)
    register_scan_schema()
    try:
        onnx.checker.check_model(merged, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RunError(f"{output}: the quantized graph fails onnx's checker: {str(exc).splitlines()[0]}") from exc
    if check is not None:
        with tempfile.TemporaryDirectory() as tmp:
            onnx.save(merged, Path(tmp) / "int8.onnx")
            info.update(check(Path(tmp) / "int8.onnx"))
        entry.value = json.dumps(metadata)  # with what the check found
    sidecar = output.with_suffix(".json")
    write_together({output: merged.SerializeToString(), sidecar: json.dumps(metadata, indent=2).encode()})
    return info


def _merge(original, stages, quantized):
    """One model again: each stage's scan nodes, then its quantized nodes, in stage order."""
    graph = original.graph
    nodes, initializers, seen = [], {}, set()
    for stage, model in zip(stages, quantized, strict=True):
        nodes += stage.scans
        if model is None:
            continue
        for init in model.graph.initializer:
            if init.name in initializers:
                if (
                    onnx.numpy_helper.to_array(init).tobytes()
                    != onnx.numpy_helper.to_array(initializers[init.name]).tobytes()
                ):
                    raise RunError(f"stages disagree on the quantization constant '{init.name}'")
                continue
            initializers[init.name] = init
        for node in model.graph.node:
            produced = [t for t in node.output if t]
            if any(t in seen for t in produced):
                # The same tensor quantized in two stages (one Q node per consumer stage): the
                # constants were checked equal above, so the first node serves both.
                continue
            seen.update(produced)
            nodes.append(node)
    scan_inputs = {t for stage in stages for n in stage.scans for t in n.input}
    for init in graph.initializer:
        if init.name in scan_inputs and init.name not in initializers:
            initializers[init.name] = init
    merged_graph = onnx.helper.make_graph(
        nodes, graph.name, list(graph.input), list(graph.output), list(initializers.values())
    )
    opsets = {entry.domain: entry.version for entry in original.opset_import}
    for model in quantized:
        if model is not None:
            for entry in model.opset_import:
                domain = "" if entry.domain == "ai.onnx" else entry.domain
                opsets[domain] = max(opsets.get(domain, 0), entry.version)
    merged = onnx.helper.make_model(
        merged_graph,
        opset_imports=[onnx.helper.make_opsetid(domain, version) for domain, version in opsets.items()],
        producer_name="handssca int8",
    )
    merged.ir_version = max([original.ir_version] + [m.ir_version for m in quantized if m is not None])
    return merged


def export_int8(model, path: str | Path, *, calibration: str, images: int = 64, fmt: str = "auto", **export_options):
    """``handssca export --precision int8``: the fp32 export (validated against PyTorch as usual),
    then ``quantize_int8`` calibrated on ``images`` crops from ``calibration`` (a data set folder
    or "synth"; see ``calibration_crops``). Returns (the int8 metadata, the calibration images
    counted out)."""
    from handssca.training.samples import calibration_crops

    from .onnx_export import export_onnx

    path = Path(path)
    check_writable(path)
    int8_format(fmt)  # a bad format is refused before the work
    say = export_options.get("say") or (lambda text: None)
    say(f"export: rendering or reading {images} calibration crops ({calibration}) ...")
    crops, skipped = calibration_crops(calibration, images, model.config.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(model, Path(tmp) / f"{path.stem}_fp32.onnx", **export_options)
        label = f"{calibration} ({len(crops)} images{f', {len(skipped)} counted out' if skipped else ''})"

        def against_pytorch(int8_path: Path) -> dict:
            say(f"export: int8 against PyTorch on the {len(crops)} calibration crops ...")
            return {"shift_vs_pytorch": int8_shift(model, int8_path, crops, export_options.get("mano"),
                                                   export_options.get("fingertip_ids"))}  # fmt: skip

        say(f"export: calibrating int8 on {len(crops)} crops ...")
        info = quantize_int8(fp32.path, path, crops, fmt, calibration=label, check=against_pytorch)
    return info, skipped


def int8_shift(model, int8_path: Path, crops: np.ndarray, mano=None, fingertip_ids=None) -> dict:
    """What int8 changes against PyTorch on ``crops``: how far its root-relative joints and
    vertices move (mm: median, p90, max; ``prediction_shift``), through ``mano`` (the built-in
    hand when None), the same check fp32 and fp16 exports pass, said as the accuracy it costs."""
    from handssca.models import TorchRunner
    from handssca.runtime.mano.load import BUILTIN, load_hand_model
    from handssca.runtime.mano.model import meshes_from_outputs
    from handssca.training.metrics import prediction_shift

    if mano is None:
        mano, fingertip_ids, _ = load_hand_model(BUILTIN)
    meshes = []
    for runner in (TorchRunner(model), OnnxRunner(int8_path)):
        outputs = {}
        for start in range(0, len(crops), 8):  # a bounded batch: the paper model's activations are large
            part = runner.run(np.ascontiguousarray(crops[start : start + 8]))
            for name, value in part.items():
                outputs.setdefault(name, []).append(value)
        vertices, joints = meshes_from_outputs({k: np.concatenate(v) for k, v in outputs.items()}, mano, fingertip_ids)
        meshes.append((joints - joints[:, :1], vertices - joints[:, :1]))
    return {**prediction_shift(*meshes), "samples": len(crops), "mano": getattr(mano, "note", "") or "MANO"}
