"""One contract for running the network, whatever runs it (mmdeploy's wrapper per backend).

A runner has ``name``, ``metadata`` (the export's: input shape, colour order, mean/std, whether
MANO is in the graph), ``run(images) -> {output: array}`` on normalised crops (B, 3, S, S)
float32, and ``warmup()``. The runners, named alike:

    OnnxModel      runtime/onnx_model.py        ONNX Runtime, the scan node on our CPU kernel
    TensorRTModel  runtime/tensorrt_model.py    a TensorRT engine with our plugin (tensorrt, pycuda)
    TorchModel     handssca/models/torch_model.py   PyTorch (needs torch; not part of the runtime)

``open_model`` picks one by what it is given; ``meshes_from_outputs`` turns any runner's outputs
plus MANO (in the graph, or the runtime's numpy MANO) into vertices and joints. The predictor,
evaluation, benchmark, demo, export's validation and ``handssca infer`` all go through these two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import HandSSCAError
from .mano import ManoModel, mano_forward

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


class ModelFileError(HandSSCAError, ValueError):
    """A file that is none of the model kinds this can run."""


class HandNetwork(Protocol):
    name: str
    metadata: dict

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]: ...

    def warmup(self, runs: int = 2) -> None: ...


def batch_problem(images: np.ndarray) -> str | None:
    """What makes a well-shaped batch unusable, in words (None when it is fine): no images, or
    NaN/inf values, which would come out as NaN meshes without a word."""
    if images.shape[0] == 0:
        return "the batch is empty (0 images)"
    # One pass without a temporary: NaN or inf anywhere makes the sum non-finite (a float64 sum of
    # normalised pixels cannot overflow); they are counted only then.
    if np.isfinite(images.sum(dtype=np.float64)):
        return None
    bad = images.size - int(np.count_nonzero(np.isfinite(images)))
    return f"the input has {bad} NaN or infinite values (a broken frame or crop?)"


def open_model(source, *, plugin=None, device: str = "cpu", threads: int = 0) -> HandNetwork:
    """The runner for ``source``: an .onnx file (ONNX Runtime on ``device``), an .engine/.plan
    file (TensorRT, with ``plugin`` or $HANDSSCA_TRT_PLUGIN), a .pt checkpoint or a torch network
    (PyTorch: needs torch). Each kind refuses what it cannot run in one line naming the file."""
    if not isinstance(source, (str, Path)):
        from handssca.models import TorchModel

        return TorchModel(source, device=device)
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_model import OnnxModel

        return OnnxModel(path, device=device, threads=threads)
    if suffix in ENGINE_SUFFIXES:
        from .tensorrt_model import TensorRTModel

        return TensorRTModel(path, plugin=plugin)
    if suffix in CHECKPOINT_SUFFIXES:
        try:
            from handssca.models import TorchModel
            from handssca.training.checkpoint import model_from_checkpoint
        except ImportError as exc:
            raise ModelFileError(f"{path}: a PyTorch checkpoint needs torch: pip install 'handssca[train]'") from exc
        return TorchModel(model_from_checkpoint(path).rewrite_for_inference(), device=device, name=path.name)
    raise ModelFileError(
        f"{path}: not a model this can run (.onnx, {', '.join(ENGINE_SUFFIXES)} or a {'/'.join(CHECKPOINT_SUFFIXES)} "
        "checkpoint)"
    )


def meshes_from_outputs(outputs: dict[str, np.ndarray], mano: ManoModel | None, fingertip_ids) -> tuple:
    """(vertices (B, 778, 3), joints (B, 21, 3)) in metres, float64, as MANO gives them (not root
    relative): from the graph when the export put MANO in it, else the runtime's numpy MANO on the
    predicted pose (relative to the mean hand) and shape."""
    if "vertices" in outputs and "joints_3d" in outputs:
        return outputs["vertices"].astype(np.float64), outputs["joints_3d"].astype(np.float64)
    if mano is None:
        raise ModelFileError("the model's outputs have no MANO in the graph: give a MANO model (--mano)")
    fingertip_ids = None if fingertip_ids is None else tuple(fingertip_ids)
    return mano_forward(mano, outputs["pose"], outputs["shape"], flat_hand_mean=False, fingertip_ids=fingertip_ids)
