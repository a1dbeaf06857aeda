"""TensorRT, pycuda and our plugin library: importing them with a clear error, loading the plugin
into TensorRT's registry once per process, and the sidecar (``.engine.json``) that binds an
engine to the TensorRT version, GPU and plugin build it was made with. The engine build
(``engine_build.py``) and the engine runner (``tensorrt_runner.py``) both stand on this. No torch.
"""

from __future__ import annotations

from pathlib import Path

from handssca.errors import MissingBackend
from handssca.runtime.files import sha256_file

SIDECAR_FORMAT = "handssca-engine/1"
PLUGIN_ENV = "HANDSSCA_TRT_PLUGIN"  # where the plugin library is, when not given


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingBackend(
            "TensorRT is not installed: on a machine with an NVIDIA GPU, pip install 'handssca[trt]' "
            "(tensorrt comes from NVIDIA's package index; see docs/tensorrt.md)"
        ) from exc
    return trt


def import_pycuda():
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise MissingBackend("pycuda is not installed: pip install 'handssca[trt]'") from exc
    try:
        cuda.init()
        if cuda.Device.count() == 0:
            raise MissingBackend("no CUDA GPU found: TensorRT engines need an NVIDIA GPU")
    except cuda.Error as exc:
        raise MissingBackend(f"no usable CUDA GPU ({exc}): TensorRT engines need an NVIDIA GPU and driver") from exc
    return cuda


def gpu_description() -> dict:
    cuda = import_pycuda()
    device = cuda.Device(0)
    major, minor = device.compute_capability()
    return {"name": device.name(), "compute_capability": f"{major}.{minor}"}


def find_plugin_library(path: str | Path | None) -> Path:
    """The plugin .so: the given path, else $HANDSSCA_TRT_PLUGIN; a clear error when missing."""
    import os

    candidate = path or os.environ.get(PLUGIN_ENV)
    if not candidate:
        raise MissingBackend(
            f"no plugin library given: build plugins/ (plugins/README.md), then pass --plugin PATH or set {PLUGIN_ENV}"
        )
    candidate = Path(candidate)
    if not candidate.is_file():
        raise MissingBackend(f"{candidate}: plugin library not found (build it with CMake from plugins/)")
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
        raise MissingBackend(
            f"{path}: another build of the plugin library ({loaded[2]}) is already loaded in this process, "
            "and TensorRT keeps the first: use that library, or a new process"
        )
    get_creator = getattr(registry, "get_creator", None)
    if get_creator is not None and get_creator(*PLUGIN_CREATOR) is not None:
        return
    try:
        handle = registry.load_library(str(path))
    except Exception as exc:  # the bindings raise on dlopen or symbol failures
        raise MissingBackend(f"{path}: cannot load the plugin library ({str(exc).splitlines()[0]})") from exc
    if handle is None:
        raise MissingBackend(
            f"{path}: TensorRT refused the plugin library (built for another TensorRT version, or missing getCreators)"
        )
    _LOADED_PLUGINS[id(registry)] = (registry, digest, path)


def check_sidecar(sidecar: dict, path: Path, trt_version: str, gpu: dict, plugin_sha256: str | None) -> None:
    """Refuses, in one line, an engine built for another TensorRT, GPU or plugin build."""
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise MissingBackend(f"{path}: not a handssca engine sidecar (format {sidecar.get('format')!r})")
    built = sidecar.get("tensorrt_version")
    if built != trt_version:
        raise MissingBackend(
            f"{path}: engine built with TensorRT {built}, this is TensorRT {trt_version}: rebuild it with "
            "handssca build-engine on this machine"
        )
    built_cc = sidecar.get("gpu", {}).get("compute_capability")
    if built_cc != gpu["compute_capability"]:
        raise MissingBackend(
            f"{path}: engine built for compute capability {built_cc} ({sidecar.get('gpu', {}).get('name')}), "
            f"this GPU is {gpu['compute_capability']} ({gpu['name']}): rebuild it on this machine"
        )
    if plugin_sha256 is not None and sidecar.get("plugin_sha256") not in (None, plugin_sha256):
        raise MissingBackend(
            f"{path}: engine built with another build of the plugin library (sha256 differs): rebuild the engine"
        )


def sidecar_path_for(engine_path: Path) -> Path:
    return engine_path.with_name(engine_path.name + ".json")
