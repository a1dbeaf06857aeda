"""Running a TensorRT engine (built by ``engine_build.py``) with pycuda. No torch.

``TensorRTRunner`` checks the engine's sidecar against this machine (``tensorrt_libs``) before
deserialising, then runs the engine: pinned host buffers, device buffers reused across calls,
one stream, async copies, named I/O tensors (TensorRT 10+ API). The shape and buffer logic is a
plain function, tested without TensorRT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handssca.errors import MissingBackend
from handssca.runtime.backends.base import Runner
from handssca.runtime.backends.tensorrt_libs import (
    check_sidecar,
    find_plugin_library,
    gpu_description,
    import_pycuda,
    import_tensorrt,
    load_plugin_library,
    sidecar_path_for,
)
from handssca.runtime.files import sha256_file


@dataclass(frozen=True)
class TensorSpec:
    name: str
    is_input: bool
    dtype: np.dtype
    shape: tuple  # -1 where dynamic


def io_plan(engine, trt) -> list[TensorSpec]:
    """The engine's named I/O tensors (TensorRT 10+ tensor API), inputs first."""
    specs = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        specs.append(
            TensorSpec(
                name=name,
                is_input=engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                dtype=np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                shape=tuple(engine.get_tensor_shape(name)),
            )
        )
    return sorted(specs, key=lambda s: not s.is_input)


def resolve_shape(shape: tuple, batch: int) -> tuple:
    """A tensor's shape at ``batch``: only the leading (batch) axis may be dynamic."""
    if any(d < 0 for d in shape[1:]):
        raise MissingBackend(f"only the batch axis may be dynamic, got shape {shape}")
    return (batch if shape[0] < 0 else shape[0], *shape[1:])


def buffer_bytes(spec: TensorSpec, batch: int) -> int:
    return int(np.prod(resolve_shape(spec.shape, batch))) * spec.dtype.itemsize


class TensorRTRunner(Runner):
    """``TensorRTRunner(engine_path).run(image)`` -> dict of output arrays, like OnnxRunner.

    Buffers are allocated for the profile's largest batch once and reused. (No CUDA-graph replay:
    released pycuda has no stream capture; ``trtexec --useCudaGraph`` measures what it would give.)
    """

    error = MissingBackend

    def __init__(self, engine_path: str | Path, plugin: str | Path | None = None):
        path = Path(engine_path)
        self.name = str(path)
        if not path.is_file():
            raise MissingBackend(f"{path}: engine file not found")
        sidecar_path = sidecar_path_for(path)
        if not sidecar_path.is_file():
            raise MissingBackend(
                f"{path}: its sidecar {sidecar_path.name} is missing (build engines with build-engine)"
            )
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except json.JSONDecodeError as exc:
            raise MissingBackend(f"{sidecar_path}: not valid JSON ({exc})") from exc
        trt = import_tensorrt()
        cuda = import_pycuda()
        plugin = find_plugin_library(plugin or sidecar.get("plugin_library"))
        gpu = gpu_description()
        plugin_sha256 = sha256_file(plugin)
        check_sidecar(sidecar, path, trt.__version__, gpu, plugin_sha256)
        self.metadata = sidecar.get("model") or {}
        self._cuda = cuda
        self._context_cuda = cuda.Device(0).retain_primary_context()
        self._context_cuda.push()
        try:
            logger = trt.Logger(trt.Logger.WARNING)
            trt.init_libnvinfer_plugins(logger, "")
            load_plugin_library(trt, plugin, plugin_sha256)
            self._runtime = trt.Runtime(logger)
            self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if self._engine is None:
                raise MissingBackend(f"{path}: TensorRT could not deserialise the engine (see the messages above)")
            self._context = self._engine.create_execution_context()
            self._specs = io_plan(self._engine, trt)
            inputs = [s for s in self._specs if s.is_input]
            if len(inputs) != 1:
                raise MissingBackend(f"{path}: expected one input tensor, the engine has {len(inputs)}")
            self._input = inputs[0]
            self.input_name, self.input_dtype = self._input.name, self._input.dtype
            self.input_shape = list(self._input.shape)
            self.output_names = [s.name for s in self._specs if not s.is_input]
            profile = self._engine.get_tensor_profile_shape(self.input_name, 0)
            self.min_batch, self.max_batch = int(profile[0][0]), int(profile[2][0])
            self._stream = cuda.Stream()
            try:
                self._device = {s.name: cuda.mem_alloc(buffer_bytes(s, self.max_batch)) for s in self._specs}
            except cuda.MemoryError as exc:
                raise MissingBackend(
                    f"{path}: not enough GPU memory for the buffers of batch {self.max_batch} ({exc}): "
                    "build the engine with a smaller --max-batch"
                ) from exc
            self._host = {
                s.name: cuda.pagelocked_empty(resolve_shape(s.shape, self.max_batch), s.dtype) for s in self._specs
            }
            for s in self._specs:
                self._context.set_tensor_address(s.name, int(self._device[s.name]))
        finally:
            self._context_cuda.pop()

    def _run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        batch = image.shape[0]
        cuda = self._cuda
        self._context_cuda.push()
        try:
            shape = resolve_shape(self._input.shape, batch)
            # setInputShape: "false if the provided name does not map to an input tensor, or if some
            # other error occurred" (NvInferRuntime.h); the context would then run the previous shape.
            if not self._context.set_input_shape(self.input_name, shape):
                raise MissingBackend(f"{self.name}: TensorRT refused input shape {shape} for {self.input_name}")
            host_in = self._host[self.input_name][:batch]
            np.copyto(host_in, image)
            cuda.memcpy_htod_async(self._device[self.input_name], host_in, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise MissingBackend(f"{self.name}: TensorRT execution failed (see the messages above)")
            outputs = {}
            for name in self.output_names:
                host = self._host[name][:batch]
                cuda.memcpy_dtoh_async(host, self._device[name], self._stream)
                outputs[name] = host
            self._stream.synchronize()
            return {name: np.array(value) for name, value in outputs.items()}
        finally:
            self._context_cuda.pop()
