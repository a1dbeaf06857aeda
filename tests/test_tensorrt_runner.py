"""The TensorRT builder and backend, with tensorrt and pycuda replaced at the boundary.

TensorRT cannot be installed on the machines this project is built on, so these tests run the
real builder/backend code against small stand-ins of the TensorRT 10 Python API and pycuda that
keep device memory in numpy arrays. The "engine" computes y = 2 * image per batch item and a
per-item sum, so buffer binding, batch slicing and copies are checked end to end.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from handssca.cli import main
from handssca.runtime import files
from handssca.runtime.backends import engine_build, tensorrt_libs, tensorrt_runner


def onnx_file(tmp_path, batch="batch"):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["heatmaps"])],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 4, 4])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [batch, 3, 4, 4])],
    )
    model = helper.make_model(graph)
    entry = model.metadata_props.add()
    entry.key, entry.value = "handssca", json.dumps({"format": "handssca-onnx/1"})
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    return path


class FakeCuda(types.ModuleType):
    """pycuda.driver over numpy: device pointers index a dict of arrays."""

    class Error(Exception):
        pass

    class MemoryError(Error):  # pycuda.driver.MemoryError derives from pycuda.driver.Error
        pass

    def __init__(self, devices=1, device_bytes=1 << 30):
        super().__init__("pycuda.driver")
        self.memory: dict[int, np.ndarray] = {}
        self.devices = devices
        self.device_bytes = device_bytes
        cuda = self

        class Device:
            @staticmethod
            def count():
                return cuda.devices

            def __init__(self, index):
                pass

            def name(self):
                return "Fake GPU"

            def compute_capability(self):
                return (9, 0)

            def retain_primary_context(self):
                return types.SimpleNamespace(push=lambda: None, pop=lambda: None)

        class Stream:
            handle = 1234

            def synchronize(self):
                pass

        self.Device, self.Stream = Device, Stream

    def init(self):
        pass

    def mem_alloc(self, nbytes):
        """pycuda's mem_alloc raises pycuda.driver.MemoryError ("cuMemAlloc failed: out of memory")
        when the device has no room, like cuMemAlloc's CUDA_ERROR_OUT_OF_MEMORY."""
        if sum(m.size for m in self.memory.values()) + nbytes > self.device_bytes:
            raise self.MemoryError("cuMemAlloc failed: out of memory")
        pointer = 0x1000 * (len(self.memory) + 1)
        self.memory[pointer] = np.zeros(nbytes, np.uint8)
        return pointer

    def pagelocked_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def memcpy_htod_async(self, pointer, host, stream):
        raw = np.ascontiguousarray(host).view(np.uint8).ravel()
        self.memory[int(pointer)][: raw.size] = raw

    def memcpy_dtoh_async(self, host, pointer, stream):
        raw = host.view(np.uint8).reshape(-1)
        raw[:] = self.memory[int(pointer)][: raw.size]


def fake_tensorrt(cuda: FakeCuda, parse_ok=True, loads=True, version="10.16.0", builds=True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
    trt.nptype = lambda dtype: dtype
    trt.calls = []

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    trt.Logger = Logger
    trt.init_libnvinfer_plugins = lambda logger, ns: True

    class Registry:
        """IPluginRegistry, one per process. loadLibrary: "The call will fail and return nullptr if
        any of the plugins are already registered" (NvInferRuntimeCommon.h); getCreator returns
        nullptr for a creator that is not registered. Every library given here registers our one
        creator; ``loads=False`` is a library built for another TensorRT (its getCreators fails)."""

        def __init__(self):
            self.creators = set()

        def load_library(self, path):
            trt.calls.append(("load_library", path))
            if not loads or ("HandSSCASelectiveScan", "1", "") in self.creators:
                return None
            self.creators.add(("HandSSCASelectiveScan", "1", ""))
            return object()

        def get_creator(self, name, version, namespace=""):
            return object() if (name, version, namespace) in self.creators else None

    trt.registry = Registry()
    trt.get_plugin_registry = lambda: trt.registry

    class ParserError:
        def desc(self):
            return "Plugin not found, are the plugin name, version, and namespace correct?"

        def node_name(self):
            return "node_selective_scan"

        def node_operator(self):
            return "HandSSCASelectiveScan"

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse(self, data, path):
            trt.calls.append(("parse", path))
            return parse_ok

        def get_error(self, i):
            return ParserError()

    trt.OnnxParser = OnnxParser

    class Cache:
        def __init__(self, data=b""):
            self.data = data

        def serialize(self):
            return b"timing-cache"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def add_optimization_profile(self, profile):
            trt.calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            trt.calls.append(("timing_cache_in", data))
            return Cache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            """setTimingCache: "A failure will be reported if the CUDA device property in the provided
            cache is different from current environment" ... "\\return true if set successfully, false
            otherwise" (NvInfer.h). Here a cache is ours when empty or what serialize() wrote."""
            return ignore_mismatch or cache.data in (b"", b"timing-cache")

        def get_timing_cache(self):
            return Cache()

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Tensor:
        def __init__(self, name, shape):
            self.name, self.shape, self.dtype = name, shape, np.float32

    class Network:
        """INetworkDefinition after parsing: getNbInputs/getInput, getNbOutputs/getOutput."""

        num_inputs, num_outputs = 1, 2

        def get_input(self, i):
            return Tensor("image", (-1, 3, 4, 4))

        def get_output(self, i):
            return [Tensor("heatmaps", (-1, 3, 4, 4)), Tensor("total", (-1,))][i]

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.calls.append(("flags", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            """buildSerializedNetwork: "\\return A pointer to a IHostMemory object that contains a
            serialized network", nullptr when the build fails (NvInfer.h)."""
            return b"serialized-engine" if builds else None

    trt.Builder = Builder

    shapes = {"image": (-1, 3, 4, 4), "heatmaps": (-1, 3, 4, 4), "total": (-1,)}

    profile = [(1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)]

    class Context:
        refused: set = set()  # shapes TensorRT refuses for "some other error"

        def __init__(self):
            self.address, self.shape = {}, None

        def set_tensor_address(self, name, pointer):
            self.address[name] = pointer

        def set_input_shape(self, name, shape):
            """setInputShape: "\\return True on success, false if the provided name does not map to an
            input tensor, or if some other error occurred" (NvInferRuntime.h); on failure the context
            keeps the shape it had."""
            shape = tuple(shape)
            inside = name == "image" and all(
                lo <= d <= hi for lo, d, hi in zip(profile[0], shape, profile[2], strict=True)
            )
            if not inside or shape in self.refused:
                return False
            self.shape = shape
            return True

        def execute_async_v3(self, stream):
            """enqueueV3: false when the shapes are not all specified."""
            if self.shape is None:
                return False
            batch = self.shape[0]
            count = int(np.prod(self.shape))
            image = cuda.memory[self.address["image"]][: 4 * count].view(np.float32).reshape(self.shape)
            cuda.memory[self.address["heatmaps"]][: 4 * count] = (2 * image).view(np.uint8).ravel()
            total = image.reshape(batch, -1).sum(axis=1).astype(np.float32)
            cuda.memory[self.address["total"]][: 4 * batch] = total.view(np.uint8)
            return True

    class Engine:
        num_io_tensors = 3

        def get_tensor_name(self, i):
            return ["heatmaps", "image", "total"][i]  # outputs first: the plan must sort inputs first

        def get_tensor_mode(self, name):
            return "in" if name == "image" else "out"

        def get_tensor_dtype(self, name):
            return np.float32

        def get_tensor_shape(self, name):
            return shapes[name]

        def get_tensor_profile_shape(self, name, index):
            return profile

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            """deserializeCudaEngine: "\\return The engine, or nullptr if it could not be deserialized"
            (NvInferRuntime.h), as for an engine of another TensorRT version."""
            return Engine() if data == b"serialized-engine" else None

    trt.Runtime = Runtime
    trt.Context = Context
    return trt


@pytest.fixture
def fakes(monkeypatch):
    cuda = FakeCuda()
    trt = fake_tensorrt(cuda)
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    return trt, cuda


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "libhandssca_plugins.so"
    path.write_bytes(b"\x7fELF plugin bytes")
    return path


def test_without_tensorrt_the_errors_say_how_to_install(tmp_path, plugin, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import fails
    with pytest.raises(tensorrt_libs.MissingBackend, match=r"TensorRT is not installed.*handssca\[trt\]"):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)
    with pytest.raises(tensorrt_libs.MissingBackend, match="engine file not found"):
        tensorrt_runner.TensorRTRunner(tmp_path / "missing.engine")


def test_missing_plugin_and_gpu_are_clear(tmp_path, fakes, monkeypatch):
    monkeypatch.delenv(tensorrt_libs.PLUGIN_ENV, raising=False)
    with pytest.raises(tensorrt_libs.MissingBackend, match="no plugin library given"):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine")
    with pytest.raises(tensorrt_libs.MissingBackend, match="nothere.so: plugin library not found"):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=tmp_path / "nothere.so")
    _, cuda = fakes
    cuda.devices = 0
    (tmp_path / "p.so").write_bytes(b"x")
    with pytest.raises(tensorrt_libs.MissingBackend, match="no CUDA GPU found"):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=tmp_path / "p.so")


def test_build_writes_engine_sidecar_and_trtexec_line(tmp_path, fakes, plugin):
    trt, _ = fakes
    cache = tmp_path / "timing.cache"
    result = engine_build.build_engine(
        onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin, max_batch=4, opt_batch=2, timing_cache=cache
    )
    assert result.engine.read_bytes() == b"serialized-engine" and cache.read_bytes() == b"timing-cache"
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["tensorrt_version"] == "10.16.0" and sidecar["gpu"] == {
        "name": "Fake GPU",
        "compute_capability": "9.0",
    }
    assert sidecar["plugin_sha256"] == files.sha256_file(plugin) and len(sidecar["onnx_sha256"]) == 64
    assert sidecar["profile"]["max"] == [4, 3, 4, 4] and sidecar["model"] == {"format": "handssca-onnx/1"}
    assert sidecar["io"] == [  # what a Triton repository is written from, without TensorRT
        {"name": "image", "is_input": True, "dtype": "float32", "shape": [-1, 3, 4, 4]},
        {"name": "heatmaps", "is_input": False, "dtype": "float32", "shape": [-1, 3, 4, 4]},
        {"name": "total", "is_input": False, "dtype": "float32", "shape": [-1]},
    ]
    assert ("load_library", str(plugin)) in trt.calls and ("flags", 2) in trt.calls
    assert ("profile", ("image", (1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4))) in trt.calls
    assert f"--dynamicPlugins={plugin}" in result.trtexec and "--maxShapes=image:4x3x4x4" in result.trtexec
    assert "--stronglyTyped" in result.trtexec
    engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m2.engine", plugin=plugin, timing_cache=cache)
    assert ("timing_cache_in", b"timing-cache") in trt.calls  # the cache is reused


def test_parser_rejection_names_the_node(tmp_path, monkeypatch, fakes, plugin):
    _, cuda = fakes
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda, parse_ok=False))
    with pytest.raises(
        tensorrt_libs.MissingBackend, match="rejected node node_selective_scan .HandSSCASelectiveScan.: Plugin"
    ):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)
    assert not (tmp_path / "m.engine").exists()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda, loads=False))
    with pytest.raises(tensorrt_libs.MissingBackend, match="refused the plugin library"):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)


def test_profile_rules(tmp_path):
    assert engine_build.batch_profile(["batch", 3, 8, 8], 1, 2, 4) == ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
    assert engine_build.batch_profile([2, 3, 8, 8], 2, 2, 2)[2] == (2, 3, 8, 8)
    with pytest.raises(tensorrt_libs.MissingBackend, match="fixed batch of 2"):
        engine_build.batch_profile([2, 3, 8, 8], 1, 2, 4)
    with pytest.raises(tensorrt_libs.MissingBackend, match="min <= opt <= max"):
        engine_build.batch_profile(["b", 3, 8, 8], 4, 2, 8)


def test_backend_runs_through_named_buffers(tmp_path, fakes, plugin):
    result = engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin, max_batch=4)
    model = tensorrt_runner.TensorRTRunner(result.engine)
    assert model.output_names == ["heatmaps", "total"] and (model.min_batch, model.max_batch) == (1, 4)
    model.warmup()
    for batch in (3, 1, 4):  # buffers sized for 4 are reused for every batch
        image = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
        out = model.run(image)
        np.testing.assert_array_equal(out["heatmaps"], 2 * image)
        np.testing.assert_allclose(out["total"], image.reshape(batch, -1).sum(1), rtol=1e-6)
    with pytest.raises(tensorrt_libs.MissingBackend, match="batch 5 is outside the engine's profile 1..4"):
        model.run(np.zeros((5, 3, 4, 4), np.float32))
    with pytest.raises(tensorrt_libs.MissingBackend, match="must be float32"):
        model.run(np.zeros((1, 3, 4, 4), np.float64))
    with pytest.raises(tensorrt_libs.MissingBackend, match=r"expected \[-1, 3, 4, 4\] \(axis 2\)"):
        model.run(np.zeros((1, 3, 5, 4), np.float32))


def test_engines_from_another_tensorrt_gpu_or_plugin_are_refused(tmp_path, fakes, plugin):
    result = engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)
    sidecar = json.loads(result.sidecar.read_text())
    for change, message in [
        ({"tensorrt_version": "11.1.0"}, "built with TensorRT 11.1.0, this is TensorRT 10.16.0"),
        ({"gpu": {"name": "A100", "compute_capability": "8.0"}}, "compute capability 8.0 .A100., this GPU is 9.0"),
        ({"plugin_sha256": "0" * 64}, "another build of the plugin library"),
        ({"format": "something"}, "not a handssca engine sidecar"),
    ]:
        result.sidecar.write_text(json.dumps({**sidecar, **change}))
        with pytest.raises(tensorrt_libs.MissingBackend, match=message):
            tensorrt_runner.TensorRTRunner(result.engine)
    result.sidecar.write_text(json.dumps(sidecar))
    result.engine.write_bytes(b"garbage")
    with pytest.raises(tensorrt_libs.MissingBackend, match="could not deserialise the engine"):
        tensorrt_runner.TensorRTRunner(result.engine)
    result.sidecar.unlink()
    with pytest.raises(tensorrt_libs.MissingBackend, match="sidecar m.engine.json is missing"):
        tensorrt_runner.TensorRTRunner(result.engine)


def test_build_engine_command(tmp_path, fakes, plugin, capsys, monkeypatch):
    monkeypatch.setenv(tensorrt_libs.PLUGIN_ENV, str(plugin))
    path = onnx_file(tmp_path)
    assert main(["build-engine", str(path), "--max-batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "trtexec --onnx=" in out and (tmp_path / "m.engine").is_file()
    assert main(["build-engine", str(tmp_path / "nope.onnx")]) == 1
    assert "nope.onnx: model file not found" in capsys.readouterr().err


def test_runtime_module_imports_without_tensorrt_or_torch():
    from test_runtime_without_torch import run_without_torch

    out = run_without_torch(
        """
        sys.modules["tensorrt"] = None
        from handssca.runtime.backends.tensorrt_libs import import_tensorrt
        from handssca.errors import MissingBackend
        try:
            import_tensorrt()
        except MissingBackend as exc:
            print(exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "TensorRT is not installed" in out.stdout


def test_one_process_builds_and_opens_several_engines(tmp_path, fakes, plugin):
    """The plugin library is loaded once per process: a second load would be refused by TensorRT
    (bench builds then opens; eval opens several engines)."""
    trt, _ = fakes
    first = engine_build.build_engine(onnx_file(tmp_path), tmp_path / "a.engine", plugin=plugin)
    second = engine_build.build_engine(onnx_file(tmp_path), tmp_path / "b.engine", plugin=plugin)
    models = [tensorrt_runner.TensorRTRunner(first.engine), tensorrt_runner.TensorRTRunner(second.engine)]
    image = np.ones((2, 3, 4, 4), np.float32)
    for model in models:
        np.testing.assert_array_equal(model.run(image)["heatmaps"], 2 * image)
    assert [c for c in trt.calls if c[0] == "load_library"] == [("load_library", str(plugin))]


def test_another_build_of_the_plugin_cannot_replace_the_loaded_one(tmp_path, fakes, plugin):
    engine_build.build_engine(onnx_file(tmp_path), tmp_path / "a.engine", plugin=plugin)
    other = tmp_path / "other" / plugin.name
    other.parent.mkdir()
    other.write_bytes(b"\x7fELF another build")
    with pytest.raises(tensorrt_libs.MissingBackend, match="another build of the plugin library .* is already loaded"):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "b.engine", plugin=other)
    copy = tmp_path / "copy.so"
    copy.write_bytes(plugin.read_bytes())  # the same build under another name is the same plugin
    engine_build.build_engine(onnx_file(tmp_path), tmp_path / "c.engine", plugin=copy)


def test_a_preloaded_plugin_is_used_as_it_is(tmp_path, fakes, plugin):
    trt, _ = fakes
    trt.registry.load_library("/elsewhere/libhandssca_plugins.so")  # e.g. loaded by the user's own code
    engine_build.build_engine(onnx_file(tmp_path), tmp_path / "a.engine", plugin=plugin)


def test_a_timing_cache_from_another_gpu_is_refused(tmp_path, fakes, plugin):
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"a cache written on another GPU")
    with pytest.raises(tensorrt_libs.MissingBackend, match="timing.cache: TensorRT cannot use this timing cache"):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin, timing_cache=cache)
    assert not (tmp_path / "m.engine").exists()
    assert cache.read_bytes() == b"a cache written on another GPU"  # left as it was


def test_a_shape_tensorrt_refuses_is_an_error_not_the_previous_shape(tmp_path, fakes, plugin):
    trt, _ = fakes
    model = tensorrt_runner.TensorRTRunner(
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin).engine
    )
    model.run(np.zeros((1, 3, 4, 4), np.float32))
    trt.Context.refused = {(3, 3, 4, 4)}
    with pytest.raises(tensorrt_libs.MissingBackend, match=r"refused input shape \(3, 3, 4, 4\) for image"):
        model.run(np.zeros((3, 3, 4, 4), np.float32))


def test_no_cuda_graph_option_that_does_nothing():
    """pycuda has no stream capture, so the option is gone rather than silently ignored."""
    import inspect

    assert "cuda_graph" not in inspect.signature(tensorrt_runner.TensorRTRunner).parameters


def test_a_failed_build_writes_nothing(tmp_path, monkeypatch, fakes, plugin):
    _, cuda = fakes
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda, builds=False))
    with pytest.raises(tensorrt_libs.MissingBackend, match="m.onnx: TensorRT could not build an engine"):
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)
    assert not (tmp_path / "m.engine").exists() and not (tmp_path / "m.engine.json").exists()


def test_too_little_gpu_memory_for_the_profile_is_one_line(tmp_path, fakes, plugin):
    _, cuda = fakes
    result = engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin, max_batch=4)
    cuda.device_bytes = 100  # less than the buffers of batch 4
    with pytest.raises(
        tensorrt_libs.MissingBackend, match=r"m.engine: not enough GPU memory for the buffers of batch 4 "
    ):
        tensorrt_runner.TensorRTRunner(result.engine)


def test_non_finite_input_is_refused(tmp_path, fakes, plugin):
    model = tensorrt_runner.TensorRTRunner(
        engine_build.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin).engine
    )
    image = np.zeros((1, 3, 4, 4), np.float32)
    image[0, 0, 0, 0] = np.inf
    with pytest.raises(tensorrt_libs.MissingBackend, match="1 NaN or infinite values"):
        model.run(image)
