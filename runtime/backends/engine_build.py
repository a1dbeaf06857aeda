"""Building a TensorRT engine from the exported ONNX file. No torch.

``build_engine`` parses the ONNX file with our selective-scan plugin loaded, builds a serialized
engine for one optimisation profile over the batch, and writes it atomically with its sidecar
(``tensorrt_libs``: TensorRT version, GPU and compute capability, plugin library hash, ONNX
hash, the I/O tensors). The logic that is no TensorRT call (the profile's shapes, the trtexec
line) is a plain function, tested without TensorRT.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handssca.errors import MissingBackend
from handssca.runtime.backends.onnx_file import read_onnx
from handssca.runtime.backends.tensorrt_libs import (
    SIDECAR_FORMAT,
    find_plugin_library,
    gpu_description,
    import_tensorrt,
    load_plugin_library,
    sidecar_path_for,
)
from handssca.runtime.files import check_writable, sha256_file, write_together


def batch_profile(input_shape: list, min_batch: int, opt_batch: int, max_batch: int) -> tuple[tuple, tuple, tuple]:
    """(min, opt, max) shapes of the image input; the ONNX's batch axis must be dynamic unless all are equal."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise MissingBackend(
            f"batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}, {opt_batch}, {max_batch}"
        )
    fixed = input_shape[0] if isinstance(input_shape[0], int) and input_shape[0] > 0 else None
    if fixed is not None and not (min_batch == opt_batch == max_batch == fixed):
        raise MissingBackend(
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


@dataclass
class BuildResult:
    engine: Path
    sidecar: Path
    trtexec: str
    seconds: float

    def lines(self) -> list[str]:
        return [
            f"wrote {self.engine} and {self.sidecar} in {self.seconds:.0f} s",
            f"the same with trtexec: {self.trtexec}",
        ]


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None = None,
    *,
    plugin: str | Path | None = None,
    min_batch: int = 1,
    opt_batch: int = 1,
    max_batch: int = 8,
    workspace_mib: int = 2048,
    timing_cache: str | Path | None = None,
) -> BuildResult:
    """ONNX -> serialized TensorRT engine (precision from the graph: export fp16 for fp16), written
    to ``engine_path`` (default: the ONNX file's name with .engine)."""
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    file = read_onnx(onnx_path, error=MissingBackend)
    plugin = find_plugin_library(plugin)
    trt = import_tensorrt()
    gpu = gpu_description()
    check_writable(engine_path)  # before minutes of building, not after
    profile_shapes = batch_profile(file.input_shape, min_batch, opt_batch, max_batch)
    command = trtexec_command(
        onnx_path, engine_path, plugin, file.input_name, profile_shapes, workspace_mib, timing_cache
    )

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
    if not parser.parse(file.model.SerializeToString(), str(onnx_path)):
        errors = [parser.get_error(i) for i in range(parser.num_errors)]
        first = errors[0] if errors else None
        where = ""
        if first is not None:
            node = first.node_name() if hasattr(first, "node_name") else first.node()
            op = first.node_operator() if hasattr(first, "node_operator") else ""
            where = f"node {node} ({op}): " if node not in (None, "", -1) else ""
        message = first.desc() if first is not None else "unknown error"
        raise MissingBackend(f"{onnx_path}: the TensorRT ONNX parser rejected {where}{message}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(file.input_name, *profile_shapes)
    config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    # setTimingCache: "true if set successfully, false otherwise" (NvInfer.h); a cache from another
    # GPU or TensorRT version is refused, and building on without it would drop it silently.
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        if cache_path is None:
            raise MissingBackend(f"{onnx_path}: TensorRT could not set up a timing cache (see the messages above)")
        raise MissingBackend(
            f"{cache_path}: TensorRT cannot use this timing cache (made on another GPU or TensorRT version, or "
            "corrupt): delete it, or pass another --timing-cache"
        )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise MissingBackend(f"{onnx_path}: TensorRT could not build an engine (see the messages above)")
    seconds = time.perf_counter() - start
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
        "profile": {
            "input": file.input_name,
            "min": profile_shapes[0],
            "opt": profile_shapes[1],
            "max": profile_shapes[2],
        },
        "io": io,
        "workspace_mib": workspace_mib,
        "build_seconds": round(seconds, 1),
        "model": file.metadata or None,
    }
    sidecar_path = sidecar_path_for(engine_path)
    outputs = {Path(engine_path): bytes(serialized), sidecar_path: json.dumps(sidecar, indent=2).encode()}
    if cache_path:
        outputs[Path(cache_path)] = bytes(config.get_timing_cache().serialize())
    write_together(outputs)  # the engine and the sidecar that describes it, or neither
    return BuildResult(engine_path, sidecar_path, command, seconds)
