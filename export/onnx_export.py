"""HandSSCA -> ONNX, each selective scan one custom node, checked and compared with PyTorch."""

from __future__ import annotations

import contextlib
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
from handssca.models import HandSSCA
from handssca.models.mano import MANOGraph
from handssca.models.ss2d import SS2D
from handssca.runtime.files import write_atomically
from handssca.runtime.mano import ManoModel
from handssca.runtime.scan_node import DOMAIN, OP_TYPE, OP_VERSION, PLUGIN_NAMESPACE, PLUGIN_VERSION

from .scan_node import count_scan_nodes, register_scan_schema, scan_translation

INPUT_NAME = "image"
OUTPUTS = {
    "heatmaps": "(B, 21, S/8, S/8) spatial-softmax joint heatmaps",
    "joints_2d": "(B, 21, 2) joint (u, v) in [0, 1] of the input crop",
    "pose": "(B, 48) MANO axis-angle pose, global rotation first",
    "shape": "(B, 10) MANO betas",
    "camera": "(B, 3) weak-perspective camera (scale, tx, ty)",
}
JOINT_ORDER = ["wrist"] + [
    f"{finger}_{i}" for finger in ("thumb", "index", "middle", "ring", "pinky") for i in range(1, 5)
]
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, RGB, on 0..1 pixel values
IMAGE_STD = (0.229, 0.224, 0.225)


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


class ExportError(RuntimeError):
    """The export or its validation failed; the message says which check and by how much."""


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    scan_nodes: int
    max_abs_diff: dict[str, float] | None


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _metadata(
    model: torch.nn.Module, outputs: dict, batch: int | None, opset: int, scan_nodes: int, mano: dict | None
) -> dict:
    size = model.config.input_size
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
        "scan_node": {
            "op_type": OP_TYPE,
            "domain": DOMAIN,
            "version": OP_VERSION,
            "plugin_version": PLUGIN_VERSION,
            "plugin_namespace": PLUGIN_NAMESPACE,
            "count": scan_nodes,
        },
        "opset": opset,
        "model_config": model.config.to_dict(),
        "weights_sha256": weights_sha256(model),
    }


def export_onnx(
    model: HandSSCA,
    path: str | Path,
    *,
    batch: int | None = None,
    opset: int = 18,
    validate: bool = True,
    tolerance: float = 1e-4,
    mano: ManoModel | None = None,
    mano_flat_hand_mean: bool | None = None,
    fingertip_ids: tuple[int, ...] | None = None,
) -> ExportResult:
    """Writes ``path`` (.onnx, metadata inside) and ``path`` with .json (the same metadata).

    batch=None exports a dynamic batch dimension. With ``validate``, ONNX Runtime runs the file
    (the scan through handssca.runtime's kernel) and every output must match PyTorch within
    ``tolerance`` (absolute), or ExportError is raised and nothing is written.

    With ``mano`` the MANO layer runs inside the graph (outputs gain vertices and joints_3d);
    then ``mano_flat_hand_mean`` and ``fingertip_ids`` must be given: they are the conventions
    the network's pose was trained in, and they are recorded in the metadata.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ExportError(f"{path}: the output file must end in .onnx")
    register_scan_schema()
    outputs = dict(OUTPUTS)
    mano_info = None
    if mano is not None:
        if mano_flat_hand_mean is None or fingertip_ids is None:
            raise ExportError("exporting with MANO needs mano_flat_hand_mean and fingertip_ids")
        mano_layer = MANOGraph(mano, flat_hand_mean=mano_flat_hand_mean, fingertip_ids=tuple(fingertip_ids))
        model = HandSSCAWithMANO(model, mano_layer)
        outputs.update(MANO_OUTPUTS)
        mano_info = {
            "model": mano.note or Path(mano.source).name,
            "flat_hand_mean": mano_flat_hand_mean,
            "fingertip_ids": list(fingertip_ids),
            "units": "m",
        }
    model = model.eval()
    size = model.config.input_size
    # torch.export specialises dimensions whose example size is 1, so a dynamic batch needs 2.
    example = torch.randn(2 if batch is None else batch, 3, size, size)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if batch is None else None
    expected_nodes = sum(isinstance(m, SS2D) for m in model.modules())
    # The exporter logs a warning per missing torchvision op and prints its stages; keep them
    # out of the user's terminal unless the export fails.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(outputs),
                dynamic_shapes=dynamic,
                opset_version=opset,
                custom_translation_table={torch.ops.handssca.selective_scan.default: scan_translation},
                verbose=False,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    proto = program.model_proto
    found = count_scan_nodes(proto)
    if found != expected_nodes:
        raise ExportError(f"expected {expected_nodes} {OP_TYPE} nodes (one per scan), the graph has {found}")
    metadata = _metadata(model, outputs, batch, opset, found, mano_info)
    entry = proto.metadata_props.add()
    entry.key, entry.value = "handssca", json.dumps(metadata)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx checker: {str(exc).splitlines()[0]}") from exc
    data = proto.SerializeToString()

    diffs = None
    if validate:
        from handssca.runtime.onnx_backend import OnnxModel

        image = torch.randn(example.shape[0] if batch else 3, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected = {k: v.numpy() for k, v in model(image).items()}
        got = OnnxModel(data).run(image.numpy())
        diffs = {k: float(np.abs(got[k] - expected[k]).max()) for k in outputs}
        worst = max(diffs, key=diffs.get)
        if diffs[worst] > tolerance:
            raise ExportError(
                f"ONNX Runtime disagrees with PyTorch: max |diff| {diffs[worst]:.3g} in '{worst}' > {tolerance:g} "
                f"(all: {', '.join(f'{k} {v:.2g}' for k, v in diffs.items())})"
            )
    write_atomically(path, data)
    sidecar = path.with_suffix(".json")
    write_atomically(sidecar, json.dumps(metadata, indent=2).encode())
    return ExportResult(path, sidecar, found, diffs)
