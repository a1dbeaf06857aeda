"""HandSSCA -> ONNX, each selective scan one custom node, checked and compared with PyTorch."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch

from handssca import __version__
from handssca.errors import RunError
from handssca.models import HandSSCA
from handssca.models.handssca import INFERENCE_REWRITES
from handssca.models.mano import MANOGraph
from handssca.models.ss2d import SS2D
from handssca.runtime.crop import IMAGE_MEAN, IMAGE_STD
from handssca.runtime.files import check_writable, write_together
from handssca.runtime.mano.model import JOINT_ORDER, ManoModel
from handssca.runtime.scan.node import (
    DOMAIN,
    OP_TYPE,
    OP_VERSION,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    count_scan_nodes,
    register_scan_schema,
)

from .options import DEFAULT_OPSET, MIN_OPSET, PRECISIONS, SCAN_VARIANTS
from .portable import lower_scan_nodes
from .scan_translation import scan_translation

# Largest |ONNX Runtime - PyTorch fp32| accepted by the export check, per precision. fp16 is
# judged against the fp32 network: its error is reported, and only a gross one fails the export.
DEFAULT_TOLERANCE = {"fp32": 1e-4, "fp16": 5e-2}

INPUT_NAME = "image"
OUTPUTS = {
    "heatmaps": "(B, 21, S/8, S/8) spatial-softmax joint heatmaps",
    "joints_2d": "(B, 21, 2) joint (u, v) in [0, 1] of the input crop",
    "pose": "(B, 48) MANO axis-angle pose, global rotation first",
    "shape": "(B, 10) MANO betas",
    "camera": "(B, 3) weak-perspective camera (scale, tx, ty)",
}


MANO_OUTPUTS = {
    "vertices": "(B, 778, 3) MANO mesh, root-relative rotation about the wrist, metres",
    "joints_3d": "(B, 21, 3) joints in joint_order, metres",
}


class HandSSCAWithMANO(torch.nn.Module):
    """The network followed by MANO in the same graph: outputs gain vertices and joints_3d."""

    def __init__(self, net: HandSSCA, mano: MANOGraph):
        super().__init__()
        self.net, self.mano = net, mano
        self.config = net.config

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(image)
        vertices, joints = self.mano(out["pose"], out["shape"])
        return {**out, "vertices": vertices, "joints_3d": joints}


class Float16Network(torch.nn.Module):
    """The network in float16 between a float32 input and float32 outputs.

    The scan's A (from A_logs), D and delta_bias stay float32, as the node's schema and the
    plugin expect; the scan state is float32 inside every kernel. Inputs and outputs stay
    float32 so pre- and post-processing are the same for every precision.
    """

    def __init__(self, net: HandSSCA):
        super().__init__()
        self.config = net.config
        self.net = copy.deepcopy(net).half()
        for half, full in zip(self.net.modules(), net.modules(), strict=True):
            if isinstance(half, SS2D):
                for name in ("A_logs", "Ds", "dt_projs_bias"):
                    getattr(half, name).data = getattr(full, name).data.float().clone()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.float() for k, v in self.net(image.half()).items()}


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    scan_nodes: int
    comparison: object | None  # handssca.runtime.backends.compare.Comparison of ONNX Runtime vs PyTorch

    @property
    def max_abs_diff(self) -> dict[str, float] | None:
        if self.comparison is None:
            return None
        return {k: d.max_abs for k, d in self.comparison.diffs["onnxruntime"].items()}


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _metadata(
    net: HandSSCA,
    outputs: dict,
    batch: int | None,
    opset: int,
    scan_nodes: int,
    mano: dict | None,
    precision: str,
    scan: str,
    weights: str,
) -> dict:
    size = net.config.input_size
    return {
        "format": "handssca-onnx/1",
        "handssca_version": __version__,
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch" if batch is None else batch, 3, size, size],
            "dtype": "float32",
            "colour_order": "RGB",
            "normalisation": "pixels / 255, then (x - mean) / std per channel",
            "mean": list(IMAGE_MEAN),
            "std": list(IMAGE_STD),
        },
        "outputs": outputs,
        "joint_order": JOINT_ORDER,
        "mano": {
            "pose": "axis-angle, 16 joints x 3, global first",
            "betas": 10,
            "in_graph": mano is not None,
            **(mano or {}),
        },
        "precision": precision,
        "scan_node": {
            "variant": scan,
            "op_type": OP_TYPE,
            "domain": DOMAIN,
            "version": OP_VERSION,
            "plugin_version": PLUGIN_VERSION,
            "plugin_namespace": PLUGIN_NAMESPACE,
            "count": scan_nodes,
        },
        "opset": opset,
        "model_config": net.config.to_dict(),
        "weights": weights,
        "weights_sha256": weights_sha256(net),
    }


def export_onnx(
    model: HandSSCA,
    path: str | Path,
    *,
    batch: int | None = None,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    scan: str = "custom",
    validate: bool = True,
    tolerance: float | None = None,
    mano: ManoModel | None = None,
    flat_hand_mean: bool | None = None,
    fingertip_ids: tuple[int, ...] | None = None,
    say=None,
    weights: str = "untrained",
    rewrite: bool = True,
) -> ExportResult:
    """Writes ``path`` (.onnx, metadata inside) and ``path`` with .json (the same metadata).

    batch=None exports a dynamic batch dimension. ``precision`` "fp16" runs the network in
    float16 (see Float16Network). ``scan`` "portable" writes every scan in standard ONNX ops
    instead of the custom node (see export.portable). With ``validate``, ONNX Runtime runs the
    file and polygraphy compares every output with the float32 PyTorch network; a difference
    above ``tolerance`` (absolute; default DEFAULT_TOLERANCE[precision]) raises RunError and
    nothing is written.

    With ``mano`` the MANO layer runs inside the graph (outputs gain vertices and joints_3d);
    then ``flat_hand_mean`` and ``fingertip_ids`` must be given: they are the conventions
    the network's pose was trained in, and they are recorded in the metadata. MANO runs in
    float32 at every precision. ``weights`` says where the weights came from (for the metadata).
    ``rewrite`` writes the graph with the exact INFERENCE_REWRITES (listed in the metadata).
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise RunError(f"{path}: the output file must end in .onnx")
    check_writable(path)  # before minutes of export and validation, not after
    if precision not in PRECISIONS:
        raise RunError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "int8":
        raise RunError("int8 needs calibration images: use export.quantize.export_int8 (--calibration)")
    if scan not in SCAN_VARIANTS:
        raise RunError(f"scan {scan!r}: expected one of {', '.join(SCAN_VARIANTS)}")
    if batch is not None and batch < 1:
        raise RunError(f"batch {batch}: must be at least 1 (or None for a dynamic batch)")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise RunError(f"opset {opset}: this export writes opsets {MIN_OPSET} to {newest} (onnx {onnx.__version__})")
    tolerance = DEFAULT_TOLERANCE[precision] if tolerance is None else tolerance
    register_scan_schema()
    net = model.eval()
    # Validation always compares with the float32 network as written; the file gets the exact
    # inference rewrites (HandSSCA.rewrite_for_inference), so the comparison is their proof too.
    reference = copy.deepcopy(net).drop_inference_rewrites() if net.rewritten else net
    traced = copy.deepcopy(net).rewrite_for_inference() if rewrite else reference
    graph_model: torch.nn.Module = Float16Network(traced).eval() if precision == "fp16" else traced
    outputs = dict(OUTPUTS)
    mano_info = None
    if mano is not None:
        if flat_hand_mean is None or fingertip_ids is None:
            raise RunError("exporting with MANO needs flat_hand_mean and fingertip_ids")
        mano_layer = MANOGraph(mano, flat_hand_mean=flat_hand_mean, fingertip_ids=tuple(fingertip_ids))
        graph_model = HandSSCAWithMANO(graph_model, mano_layer).eval()
        reference = HandSSCAWithMANO(reference, mano_layer).eval()
        outputs.update(MANO_OUTPUTS)
        mano_info = {
            "model": mano.note or Path(mano.source).name,
            "flat_hand_mean": flat_hand_mean,
            "fingertip_ids": list(fingertip_ids),
            "units": "m",
        }
    size = net.config.input_size
    # torch.export specialises dimensions whose example size is 1, so a dynamic batch needs 2.
    example = torch.randn(2 if batch is None else batch, 3, size, size)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if batch is None else None
    expected_nodes = sum(isinstance(m, SS2D) for m in net.modules())
    # The exporter logs a warning per missing torchvision op and prints its stages; keep them
    # out of the user's terminal unless the export fails.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    chatter = io.StringIO()
    say = say or (lambda text: None)  # the steps that take seconds say so (the CLI passes progress.say)
    say(f"export: tracing the network with torch.export ({net.config.input_size} px input; the longest step) ...")
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                graph_model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(outputs),
                dynamic_shapes=dynamic,
                opset_version=DEFAULT_OPSET,  # torch's native opset; converted below when asked
                custom_translation_table={torch.ops.handssca.selective_scan.default: scan_translation},
                verbose=False,
            )
    except Exception as exc:
        raise RunError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    proto = program.model_proto
    found = count_scan_nodes(proto)
    if found != expected_nodes:
        raise RunError(f"expected {expected_nodes} {OP_TYPE} nodes (one per scan), the graph has {found}")
    if scan == "portable":
        try:
            proto = lower_scan_nodes(proto)
        except RunError as exc:
            raise RunError(str(exc)) from exc
    if opset != DEFAULT_OPSET:
        proto = convert_opset(proto, opset)
    nodes = count_scan_nodes(proto)
    metadata = _metadata(net, outputs, batch, opset, nodes, mano_info, precision, scan, weights)
    metadata["rewrites"] = list(INFERENCE_REWRITES) if rewrite else []
    entry = proto.metadata_props.add()
    entry.key, entry.value = "handssca", json.dumps(metadata)
    say("export: checking the ONNX file (onnx.checker, full check) ...")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise RunError(f"onnx checker: {str(exc).splitlines()[0]}") from exc
    data = proto.SerializeToString()

    comparison = None
    if validate:
        say("export: running it in ONNX Runtime against PyTorch (polygraphy) ...")
        comparison = compare_with_pytorch(reference, data, batch or 3, tolerance)
        if not comparison.passed:
            name, diff = comparison.worst("onnxruntime")
            raise RunError(
                f"ONNX Runtime disagrees with PyTorch: max |diff| {diff.max_abs:.3g} in '{name}' > {tolerance:g} "
                f"(all: {comparison.summary('onnxruntime')})"
            )
    sidecar = path.with_suffix(".json")
    write_together({path: data, sidecar: json.dumps(metadata, indent=2).encode()})  # the pair, or neither
    return ExportResult(path, sidecar, nodes, comparison)


# Opset 18 gave these an axes *input* where 17 has an attribute (ReduceSum did so already in 13).
_REDUCE_AXES_18 = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                   "ReduceLogSumExp", "ReduceSumSquare"}  # fmt: skip
_RESIZE_18_ATTRIBUTES = {"antialias", "axes", "keep_aspect_ratio_policy"}


def convert_opset(proto, opset: int):
    """``proto`` (opset 18, as torch writes it) in ``opset``, checked to really be that opset.

    Up: onnx's version converter. Down to 17: onnx's converter has no 18 -> 17 adapter for Split,
    so the operators whose signature changed in 18 are lowered here, exactly: Split's
    ``num_outputs`` becomes explicit sizes (from ONNX shape inference), the Reduce ops' axes input
    an attribute; Resize is the same operator unless it uses 18's new attributes. Everything else
    reads the same in 17, which the checker (full_check) and the ONNX Runtime comparison confirm.
    """
    if opset > DEFAULT_OPSET:
        from onnx import version_converter

        try:
            converted = version_converter.convert_version(proto, opset)
        except Exception as exc:  # the converter raises RuntimeError/ValidationError with its own text
            raise RunError(f"opset {opset}: onnx's version converter failed ({str(exc).splitlines()[0]})") from exc
    else:
        converted = _lower_to_17(proto)
    found = next((o.version for o in converted.opset_import if o.domain in ("", "ai.onnx")), None)
    if found != opset:
        raise RunError(f"opset {opset}: the converted file is opset {found}")
    return converted


def _lower_to_17(proto):
    from onnx import numpy_helper, shape_inference

    inferred = shape_inference.infer_shapes(proto)
    shapes = {v.name: v.type.tensor_type.shape for v in [*inferred.graph.value_info, *inferred.graph.input]}
    constants = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}

    def attribute(node, name, default=None):
        return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)

    def replace_attributes(node, drop: str, add=None):
        kept = [a for a in node.attribute if a.name != drop]
        del node.attribute[:]
        node.attribute.extend(kept + ([add] if add is not None else []))

    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        label = f"{node.op_type} '{node.name or node.output[0]}'"
        if node.op_type == "Split" and attribute(node, "num_outputs") is not None:
            count, axis = attribute(node, "num_outputs"), attribute(node, "axis", 0)
            dims = shapes.get(node.input[0])
            size = dims.dim[axis].dim_value if dims is not None and len(dims.dim) > abs(axis) else 0
            if size <= 0:
                raise RunError(f"opset 17: cannot lower {label}: its axis is dynamic (use opset 18)")
            chunk = -(-size // count)  # opset 18: equal chunks, the last one smaller
            sizes = [chunk] * (count - 1) + [size - chunk * (count - 1)]
            name = f"{node.output[0]}__split_sizes"
            proto.graph.initializer.append(numpy_helper.from_array(np.array(sizes, np.int64), name))
            del node.input[1:]
            node.input.append(name)
            replace_attributes(node, "num_outputs")
        elif node.op_type in _REDUCE_AXES_18:
            if len(node.input) > 1 and node.input[1]:
                if node.input[1] not in constants:
                    raise RunError(f"opset 17: cannot lower {label}: its axes are computed (use opset 18)")
                axes = [int(a) for a in constants[node.input[1]].reshape(-1)]
                del node.input[1:]
                node.attribute.append(onnx.helper.make_attribute("axes", axes))
            elif attribute(node, "noop_with_empty_axes", 0):
                raise RunError(f"opset 17: cannot lower {label}: it reduces nothing (noop_with_empty_axes)")
            replace_attributes(node, "noop_with_empty_axes")  # 18's; 0 is what 17 always does
        elif node.op_type == "Resize":
            # Opset 18's new attributes at their defaults mean what Resize-13 does: drop them.
            if attribute(node, "axes") is not None or attribute(node, "antialias", 0) != 0:
                raise RunError(f"opset 17: cannot lower {label}: it uses opset 18's Resize attributes")
            if attribute(node, "keep_aspect_ratio_policy", b"stretch") not in (b"stretch", "stretch"):
                raise RunError(f"opset 17: cannot lower {label}: it uses opset 18's Resize attributes")
            for name in _RESIZE_18_ATTRIBUTES:
                replace_attributes(node, name)
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = 17
    return proto


def compare_with_pytorch(model: torch.nn.Module, onnx_model: bytes | str | Path, batch: int, tolerance: float):
    """polygraphy's comparison of the ONNX file in ONNX Runtime against ``model`` on a seeded input."""
    from handssca.models import TorchRunner
    from handssca.runtime.backends.compare import compare_models
    from handssca.runtime.backends.onnx_runner import OnnxRunner

    size = model.config.input_size
    image = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    models = {"pytorch": TorchRunner(model), "onnxruntime": OnnxRunner(onnx_model)}
    return compare_models(models, image, reference="pytorch", atol=tolerance)
