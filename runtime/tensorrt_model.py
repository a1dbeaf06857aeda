"""TensorRT: build an engine from the exported ONNX, and run it. No torch.

``build_engine`` parses the ONNX file with our selective-scan plugin loaded, builds a serialized
engine for one optimisation profile over the batch, and writes it atomically with a sidecar
(``.engine.json``) that records what the engine is bound to: TensorRT version, GPU and compute
capability, plugin library hash, ONNX hash. ``TensorRTModel`` checks that sidecar against the
machine before deserialising, then runs the engine with pycuda: pinned host buffers, device
buffers reused across calls, one stream, async copies, named I/O tensors (TensorRT 10+ API).

Everything that is logic rather than a TensorRT call (shape plans, buffer sizes, sidecar checks,
the trtexec line) is a plain function, so it is tested without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HandSSCAError
from .files import check_writable, write_together
from .models import batch_problem

SIDECAR_FORMAT = "handssca-engine/1"
PLUGIN_ENV = "HANDSSCA_TRT_PLUGIN"  # where the plugin library is, when not given


class TensorRTModelError(HandSSCAError, RuntimeError):
    """A one-line, user-facing TensorRT problem (names the file and what to do)."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTModelError(
            "TensorRT is not installed: on a machine with an NVIDIA GPU, pip install 'handssca[trt]' "
            "(tensorrt comes from NVIDIA's package index; see the README's TensorRT section)"
        ) from exc
    return trt


def import_pycuda():
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise TensorRTModelError("pycuda is not installed: pip install 'handssca[trt]'") from exc
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise TensorRTModelError("no CUDA GPU found: TensorRT engines need an NVIDIA GPU")
    except cuda.Error as exc:
        raise TensorRTModelError(f"no usable CUDA GPU ({exc}): TensorRT engines need an NVIDIA GPU and driver") from exc
    return cuda


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_plugin_library(path: str | Path | None) -> Path:
    """The plugin .so: the given path, else $HANDSSCA_TRT_PLUGIN; a clear error when missing."""
    import os

    candidate = path or os.environ.get(PLUGIN_ENV)
    if not candidate:
        raise TensorRTModelError(
            f"no plugin library given: build plugins/ (plugins/README.md), then pass --plugin PATH or set {PLUGIN_ENV}"
        )
    candidate = Path(candidate)
    if not candidate.is_file():
        raise TensorRTModelError(f"{candidate}: plugin library not found (build it with CMake from plugins/)")
    return candidate


PLUGIN_CREATOR = ("HandSSCASelectiveScan", "1", "")  # name, version, namespace the ONNX parser looks up
# Per plugin registry (one per process in real TensorRT): the registry, and the digest and path of
# the library we loaded into it.
_LOADED_PLUGINS: dict[int, tuple[object, str, Path]] = {}


def load_plugin_library(trt, path: Path, digest: str | None = None) -> None:
    """Loads the plugin through the registry (getCreators), as trtexec --dynamicPlugins does, once
    per process: IPluginRegistry::loadLibrary "will fail and return nullptr if any of the plugins
    are already registered" (NvInferRuntimeCommon.h), so a second build or engine in one process
    reuses the first load. Another build of the library cannot replace it in the same process; a
    creator registered by someone else (a preloaded library) is used as it is."""
    registry = trt.get_plugin_registry()
    digest = digest or sha256_file(path)
    loaded = _LOADED_PLUGINS.get(id(registry))
    if loaded is not None:
        if loaded[1] == digest:
            return
        raise TensorRTModelError(
            f"{path}: another build of the plugin library ({loaded[2]}) is already loaded in this process, "
            "and TensorRT keeps the first: use that library, or a new process"
        )
    get_creator = getattr(registry, "get_creator", None)
    if get_creator is not None and get_creator(*PLUGIN_CREATOR) is not None:
        return
    try:
        handle = registry.load_library(str(path))
    except Exception as exc:  # the bindings raise on dlopen or symbol failures
        raise TensorRTModelError(f"{path}: cannot load the plugin library ({str(exc).splitlines()[0]})") from exc
    if handle is None:
        raise TensorRTModelError(
            f"{path}: TensorRT refused the plugin library (built for another TensorRT version, or missing getCreators)"
        )
    _LOADED_PLUGINS[id(registry)] = (registry, digest, path)


def batch_profile(input_shape: list, min_batch: int, opt_batch: int, max_batch: int) -> tuple[tuple, tuple, tuple]:
    """(min, opt, max) shapes of the image input; the ONNX's batch axis must be dynamic unless all are equal."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise TensorRTModelError(
            f"batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}, {opt_batch}, {max_batch}"
        )
    fixed = input_shape[0] if isinstance(input_shape[0], int) and input_shape[0] > 0 else None
    if fixed is not None and not (min_batch == opt_batch == max_batch == fixed):
        raise TensorRTModelError(
            f"the ONNX file has a fixed batch of {fixed}; export with a dynamic batch for a profile "
            f"{min_batch}/{opt_batch}/{max_batch}"
        )
    rest = tuple(int(d) for d in input_shape[1:])
    return (min_batch, *rest), (opt_batch, *rest), (max_batch, *rest)


def trtexec_command(onnx_path, engine_path, plugin, input_name, profile, workspace_mib, timing_cache) -> str:
    """The trtexec line that builds the same engine (for users who prefer NVIDIA's tool)."""

    def shape(s):
        return "x".join(str(d) for d in s)

    args = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--dynamicPlugins={plugin}",
        f"--minShapes={input_name}:{shape(profile[0])}",
        f"--optShapes={input_name}:{shape(profile[1])}",
        f"--maxShapes={input_name}:{shape(profile[2])}",
        f"--memPoolSize=workspace:{workspace_mib}M",
        "--stronglyTyped",
    ]
    if timing_cache:
        args.append(f"--timingCacheFile={timing_cache}")
    return " ".join(shlex.quote(a) for a in args)


def gpu_description() -> dict:
    cuda = import_pycuda()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    return {"name": device.name(), "compute_capability": f"{major}.{minor}"}


def check_sidecar(sidecar: dict, path: Path, trt_version: str, gpu: dict, plugin_sha256: str | None) -> None:
    """Refuses, in one line, an engine built for another TensorRT, GPU or plugin build."""
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise TensorRTModelError(f"{path}: not a handssca engine sidecar (format {sidecar.get('format')!r})")
    built = sidecar.get("tensorrt_version")
    if built != trt_version:
        raise TensorRTModelError(
            f"{path}: engine built with TensorRT {built}, this is TensorRT {trt_version}: rebuild it with "
            "handssca build-engine on this machine"
        )
    built_cc = sidecar.get("gpu", {}).get("compute_capability")
    if built_cc != gpu["compute_capability"]:
        raise TensorRTModelError(
            f"{path}: engine built for compute capability {built_cc} ({sidecar.get('gpu', {}).get('name')}), "
            f"this GPU is {gpu['compute_capability']} ({gpu['name']}): rebuild it on this machine"
        )
    if plugin_sha256 is not None and sidecar.get("plugin_sha256") not in (None, plugin_sha256):
        raise TensorRTModelError(
            f"{path}: engine built with another build of the plugin library (sha256 differs): rebuild the engine"
        )


@dataclass
class BuildResult:
    engine: Path
    sidecar: Path
    trtexec: str
    seconds: float


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    plugin: str | Path | None = None,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    workspace_mib: int = 2048,
    timing_cache: str | Path | None = None,
) -> BuildResult:
    """ONNX -> serialized TensorRT engine (precision from the graph: export fp16 for fp16)."""
    import time

    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise TensorRTModelError(f"{onnx_path}: ONNX file not found")
    plugin = find_plugin_library(plugin)
    trt = import_tensorrt()
    gpu = gpu_description()
    import onnx

    check_writable(engine_path)  # before minutes of building, not after
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise TensorRTModelError(f"{onnx_path}: not an ONNX model (cannot parse the protobuf)") from exc
    initializers = {i.name for i in model.graph.initializer}
    image = next(i for i in model.graph.input if i.name not in initializers)
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in image.type.tensor_type.shape.dim]
    profile_shapes = batch_profile(shape, min_batch, opt_batch, max_batch)
    command = trtexec_command(onnx_path, engine_path, plugin, image.name, profile_shapes, workspace_mib, timing_cache)

    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    plugin_sha256 = sha256_file(plugin)
    load_plugin_library(trt, plugin, plugin_sha256)
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT 10; TensorRT 11 networks are always strongly typed
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        first = errors[0] if errors else None
        where = ""
        if first is not None:
            node = first.node_name() if hasattr(first, "node_name") else first.node()
            op = first.node_operator() if hasattr(first, "node_operator") else ""
            where = f"node {node} ({op}): " if node not in (None, "", -1) else ""
        message = first.desc() if first is not None else "unknown error"
        raise TensorRTModelError(f"{onnx_path}: the TensorRT ONNX parser rejected {where}{message}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(image.name, *profile_shapes)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    # setTimingCache: "true if set successfully, false otherwise" (NvInfer.h); a cache from another
    # GPU or TensorRT version is refused, and building on without it would drop it silently.
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if cache_path is None:
            raise TensorRTModelError(f"{onnx_path}: TensorRT could not set up a timing cache (see the messages above)")
        raise TensorRTModelError(
            f"{cache_path}: TensorRT cannot use this timing cache (made on another GPU or TensorRT version, or "
            "corrupt): delete it, or pass another --timing-cache"
        )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTModelError(f"{onnx_path}: TensorRT could not build an engine (see the messages above)")
    seconds = time.perf_counter() - start
    metadata = {p.key: p.value for p in model.metadata_props}.get("handssca")
    # The tensors as the engine has them, so a Triton repository can be written on a machine
    # without TensorRT (handssca serve repository): -1 marks the dynamic batch axis.
    io = [
        {"name": t.name, "is_input": is_input, "dtype": np.dtype(trt.nptype(t.dtype)).name, "shape": list(t.shape)}
        for is_input, count, get in ((True, network.num_inputs, network.get_input),
                                     (False, network.num_outputs, network.get_output))
        for t in (get(i) for i in range(count))
    ]  # fmt: skip
    sidecar = {
        "format": SIDECAR_FORMAT,
        "tensorrt_version": trt.__version__,
        "gpu": gpu,
        "plugin_library": str(plugin),
        "plugin_sha256": plugin_sha256,
        "onnx": str(onnx_path),
        "onnx_sha256": sha256_file(onnx_path),
        "profile": {"input": image.name, "min": profile_shapes[0], "opt": profile_shapes[1], "max": profile_shapes[2]},
        "io": io,
        "workspace_mib": workspace_mib,
        "build_seconds": round(seconds, 1),
        "model": json.loads(metadata) if metadata else None,
    }
    sidecar_path = sidecar_path_for(engine_path)
    outputs = {Path(engine_path): bytes(serialized), sidecar_path: json.dumps(sidecar, indent=2).encode()}
    if cache_path:
        outputs[Path(cache_path)] = bytes(config.get_timing_cache().serialize())
    write_together(outputs)  # the engine and the sidecar that describes it, or neither
    return BuildResult(engine_path, sidecar_path, command, seconds)


def sidecar_path_for(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")


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
        raise TensorRTModelError(f"only the batch axis may be dynamic, got shape {shape}")
    return (batch if shape[0] < 0 else shape[0], *shape[1:])


def buffer_bytes(spec: TensorSpec, batch: int) -> int:
    return int(np.prod(resolve_shape(spec.shape, batch))) * spec.dtype.itemsize


class TensorRTModel:
    """``TensorRTModel(engine_path).run(image)`` -> dict of output arrays, like OnnxModel.

    Buffers are allocated for the profile's largest batch once and reused. (No CUDA-graph replay:
    released pycuda has no stream capture; ``trtexec --useCudaGraph`` measures what it would give.)
    """

    def __init__(self, engine_path: str | Path, plugin: str | Path | None = None):
        path = Path(engine_path)
        self.name = str(path)
        if not path.is_file():
            raise TensorRTModelError(f"{path}: engine file not found")
        sidecar_path = sidecar_path_for(path)
        if not sidecar_path.is_file():
            raise TensorRTModelError(
                f"{path}: its sidecar {sidecar_path.name} is missing (build engines with build-engine)"
            )
        try:
            sidecar = json.loads(sidecar_path.read_text())
        except json.JSONDecodeError as exc:
            raise TensorRTModelError(f"{sidecar_path}: not valid JSON ({exc})") from exc
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
                raise TensorRTModelError(f"{path}: TensorRT could not deserialise the engine (see the messages above)")
            self._context = self._engine.create_execution_context()
            self._specs = io_plan(self._engine, trt)
            inputs = [s for s in self._specs if s.is_input]
            if len(inputs) != 1:
                raise TensorRTModelError(f"{path}: expected one input tensor, the engine has {len(inputs)}")
            self.input = inputs[0]
            self.input_shape = list(self.input.shape)
            self.output_names = [s.name for s in self._specs if not s.is_input]
            profile = self._engine.get_tensor_profile_shape(self.input.name, 0)
            self.min_batch, self.max_batch = int(profile[0][0]), int(profile[2][0])
            self._stream = cuda.Stream()
            try:
                self._device = {s.name: cuda.mem_alloc(buffer_bytes(s, self.max_batch)) for s in self._specs}
            except cuda.MemoryError as exc:
                raise TensorRTModelError(
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

    def _check(self, image) -> int:
        if not isinstance(image, np.ndarray) or image.ndim != len(self.input_shape):
            raise TensorRTModelError(f"{self.name}: input must be an array of shape {self.input_shape}")
        if image.dtype != self.input.dtype:
            raise TensorRTModelError(f"{self.name}: input must be {self.input.dtype}, got {image.dtype}")
        expected = resolve_shape(self.input.shape, image.shape[0])
        if image.shape != expected:
            raise TensorRTModelError(f"{self.name}: input has shape {image.shape}, expected {expected}")
        problem = batch_problem(image)
        if problem:
            raise TensorRTModelError(f"{self.name}: {problem}")
        batch = image.shape[0]
        if not self.min_batch <= batch <= self.max_batch:
            raise TensorRTModelError(
                f"{self.name}: batch {batch} is outside the engine's profile {self.min_batch}..{self.max_batch}"
            )
        return batch

    def run(self, image: np.ndarray) -> dict[str, np.ndarray]:
        batch = self._check(image)
        cuda = self._cuda
        self._context_cuda.push()
        try:
            shape = resolve_shape(self.input.shape, batch)
            # setInputShape: "false if the provided name does not map to an input tensor, or if some
            # other error occurred" (NvInferRuntime.h); the context would then run the previous shape.
            if not self._context.set_input_shape(self.input.name, shape):
                raise TensorRTModelError(f"{self.name}: TensorRT refused input shape {shape} for {self.input.name}")
            host_in = self._host[self.input.name][:batch]
            np.copyto(host_in, image)
            cuda.memcpy_htod_async(self._device[self.input.name], host_in, self._stream)
            if not self._context.execute_async_v3(self._stream.handle):
                raise TensorRTModelError(f"{self.name}: TensorRT execution failed (see the messages above)")
            outputs = {}
            for name in self.output_names:
                host = self._host[name][:batch]
                cuda.memcpy_dtoh_async(host, self._device[name], self._stream)
                outputs[name] = host
            self._stream.synchronize()
            return {name: np.array(value) for name, value in outputs.items()}
        finally:
            self._context_cuda.pop()

    def warmup(self, runs: int = 3) -> None:
        shape = resolve_shape(self.input.shape, self.min_batch)
        for _ in range(runs):
            self.run(np.zeros(shape, self.input.dtype))
