"""One contract for running the network, whatever runs it (mmdeploy's wrapper per backend).

Every runner extends ``Runner``: it has ``name``, ``metadata`` (the export's: input shape, colour
order, mean/std, whether MANO is in the graph), ``run(images) -> {output: array}`` on normalised
crops (B, 3, S, S), and ``warmup()``. The base checks every input the same way (an array, its
shape, dtype, an empty batch, NaN or inf, the batch range) before a runner's ``_run`` sees it:

    OnnxRunner      runtime/backends/onnx_runner.py          ONNX Runtime, the scan node on our CPU kernel
    TensorRTRunner  runtime/backends/tensorrt_runner.py      a TensorRT engine with our plugin (tensorrt, pycuda)
    TorchRunner     handssca/models/torch_runner.py  PyTorch (needs torch; not part of the runtime)

The base and its errors live in ``runner_base.py``. ``open_runner`` picks a runner by what it is
given; ``meshes_from_outputs`` turns any runner's outputs plus MANO (in the graph, or the
runtime's numpy MANO) into vertices and joints. The predictor, evaluation, benchmark, demo,
export's validation and ``handssca infer`` all go through these two.
"""

from __future__ import annotations

from pathlib import Path

from handssca.errors import ModelFileError
from handssca.runtime.backends.base import Runner
from handssca.runtime.backends.onnx_file import NOTHING, not_a_file, path_kind

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def open_runner(source, *, plugin=None, device: str = "cpu", threads: int = 0) -> Runner:
    """The runner for ``source``: an .onnx file (ONNX Runtime on ``device``), an .engine/.plan
    file (TensorRT, with ``plugin`` or $HANDSSCA_TRT_PLUGIN), a .pt checkpoint or a torch network
    (PyTorch: needs torch). Each kind refuses what it cannot run in one line naming the file; a
    path that is something else (a folder, a device, a link loop) is named as what it is."""
    if not isinstance(source, (str, Path)):
        from handssca.models import TorchRunner

        return TorchRunner(source, device=device)
    path = Path(source)
    if path_kind(path) != NOTHING and (problem := not_a_file(path)):  # each kind says "not found" in its words
        raise ModelFileError(problem)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from handssca.runtime.backends.onnx_runner import OnnxRunner

        return OnnxRunner(path, device=device, threads=threads)
    if suffix in ENGINE_SUFFIXES:
        from handssca.runtime.backends.tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path, plugin=plugin)
    if suffix in CHECKPOINT_SUFFIXES:
        try:
            from handssca.models import TorchRunner
            from handssca.training.checkpoint import model_from_checkpoint
        except ImportError as exc:
            raise ModelFileError(f"{path}: a PyTorch checkpoint needs torch: pip install 'handssca[train]'") from exc
        return TorchRunner(model_from_checkpoint(path).rewrite_for_inference(), device=device, name=path.name)
    raise ModelFileError(
        f"{path}: not a model this can run (.onnx, {', '.join(ENGINE_SUFFIXES)} or a {'/'.join(CHECKPOINT_SUFFIXES)} "
        "checkpoint)"
    )
