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
from handssca.runtime import tensorrt_engine as te


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

    def __init__(self, devices=1):
        super().__init__("pycuda.driver")
        self.memory: dict[int, np.ndarray] = {}
        self.devices = devices
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


def fake_tensorrt(cuda: FakeCuda, parse_ok=True, loads=True, version="10.16.0"):
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
        def load_library(self, path):
            trt.calls.append(("load_library", path))
            return object() if loads else None

    trt.get_plugin_registry = lambda: Registry()

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
        def serialize(self):
            return b"timing-cache"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            trt.calls.append(("workspace", size))

        def add_optimization_profile(self, profile):
            trt.calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            trt.calls.append(("timing_cache_in", data))
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

        def get_timing_cache(self):
            return Cache()

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shapes = (name, lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.calls.append(("flags", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return b"serialized-engine"

    trt.Builder = Builder

    shapes = {"image": (-1, 3, 4, 4), "heatmaps": (-1, 3, 4, 4), "total": (-1,)}

    class Context:
        def __init__(self):
            self.address, self.shape = {}, None

        def set_tensor_address(self, name, pointer):
            self.address[name] = pointer

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)

        def execute_async_v3(self, stream):
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
            return [(1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4)]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if data == b"serialized-engine" else None

    trt.Runtime = Runtime
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
    with pytest.raises(te.TensorRTError, match=r"TensorRT is not installed.*handssca\[trt\]"):
        te.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)
    with pytest.raises(te.TensorRTError, match="engine file not found"):
        te.TensorRTModel(tmp_path / "missing.engine")


def test_missing_plugin_and_gpu_are_clear(tmp_path, fakes, monkeypatch):
    monkeypatch.delenv(te.PLUGIN_ENV, raising=False)
    with pytest.raises(te.TensorRTError, match="no plugin library given"):
        te.build_engine(onnx_file(tmp_path), tmp_path / "m.engine")
    with pytest.raises(te.TensorRTError, match="nothere.so: plugin library not found"):
        te.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=tmp_path / "nothere.so")
    _, cuda = fakes
    cuda.devices = 0
    (tmp_path / "p.so").write_bytes(b"x")
    with pytest.raises(te.TensorRTError, match="no CUDA GPU found"):
        te.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=tmp_path / "p.so")


def test_build_writes_engine_sidecar_and_trtexec_line(tmp_path, fakes, plugin):
    trt, _ = fakes
    cache = tmp_path / "timing.cache"
    result = te.build_engine(
        onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin, max_batch=4, opt_batch=2, timing_cache=cache
    )
    assert result.engine.read_bytes() == b"serialized-engine" and cache.read_bytes() == b"timing-cache"
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["tensorrt_version"] == "10.16.0" and sidecar["gpu"] == {
        "name": "Fake GPU",
        "compute_capability": "9.0",
    }
    assert sidecar["plugin_sha256"] == te.sha256_file(plugin) and len(sidecar["onnx_sha256"]) == 64
    assert sidecar["profile"]["max"] == [4, 3, 4, 4] and sidecar["model"] == {"format": "handssca-onnx/1"}
    assert ("load_library", str(plugin)) in trt.calls and ("flags", 2) in trt.calls
    assert ("profile", ("image", (1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4))) in trt.calls
    assert f"--dynamicPlugins={plugin}" in result.trtexec and "--maxShapes=image:4x3x4x4" in result.trtexec
    assert "--stronglyTyped" in result.trtexec
    te.build_engine(onnx_file(tmp_path), tmp_path / "m2.engine", plugin=plugin, timing_cache=cache)
    assert ("timing_cache_in", b"timing-cache") in trt.calls  # the cache is reused


def test_parser_rejection_names_the_node(tmp_path, monkeypatch, plugin):
    cuda = FakeCuda()
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda, parse_ok=False))
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    with pytest.raises(te.TensorRTError, match="rejected node node_selective_scan .HandSSCASelectiveScan.: Plugin"):
        te.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)
    assert not (tmp_path / "m.engine").exists()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda, loads=False))
    with pytest.raises(te.TensorRTError, match="refused the plugin library"):
        te.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)


def test_profile_rules(tmp_path):
    assert te.batch_profile(["batch", 3, 8, 8], 1, 2, 4) == ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))
    assert te.batch_profile([2, 3, 8, 8], 2, 2, 2)[2] == (2, 3, 8, 8)
    with pytest.raises(te.TensorRTError, match="fixed batch of 2"):
        te.batch_profile([2, 3, 8, 8], 1, 2, 4)
    with pytest.raises(te.TensorRTError, match="min <= opt <= max"):
        te.batch_profile(["b", 3, 8, 8], 4, 2, 8)


def test_backend_runs_through_named_buffers(tmp_path, fakes, plugin):
    result = te.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin, max_batch=4)
    model = te.TensorRTModel(result.engine)
    assert model.output_names == ["heatmaps", "total"] and (model.min_batch, model.max_batch) == (1, 4)
    model.warmup()
    for batch in (3, 1, 4):  # buffers sized for 4 are reused for every batch
        image = np.random.default_rng(batch).standard_normal((batch, 3, 4, 4)).astype(np.float32)
        out = model.run(image)
        np.testing.assert_array_equal(out["heatmaps"], 2 * image)
        np.testing.assert_allclose(out["total"], image.reshape(batch, -1).sum(1), rtol=1e-6)
    with pytest.raises(te.TensorRTError, match="batch 5 is outside the engine's profile 1..4"):
        model.run(np.zeros((5, 3, 4, 4), np.float32))
    with pytest.raises(te.TensorRTError, match="must be float32"):
        model.run(np.zeros((1, 3, 4, 4), np.float64))
    with pytest.raises(te.TensorRTError, match=r"expected \(1, 3, 4, 4\)"):
        model.run(np.zeros((1, 3, 5, 4), np.float32))


def test_engines_from_another_tensorrt_gpu_or_plugin_are_refused(tmp_path, fakes, plugin):
    result = te.build_engine(onnx_file(tmp_path), tmp_path / "m.engine", plugin=plugin)
    sidecar = json.loads(result.sidecar.read_text())
    for change, message in [
        ({"tensorrt_version": "11.1.0"}, "built with TensorRT 11.1.0, this is TensorRT 10.16.0"),
        ({"gpu": {"name": "A100", "compute_capability": "8.0"}}, "compute capability 8.0 .A100., this GPU is 9.0"),
        ({"plugin_sha256": "0" * 64}, "another build of the plugin library"),
        ({"format": "something"}, "not a handssca engine sidecar"),
    ]:
        result.sidecar.write_text(json.dumps({**sidecar, **change}))
        with pytest.raises(te.TensorRTError, match=message):
            te.TensorRTModel(result.engine)
    result.sidecar.write_text(json.dumps(sidecar))
    result.engine.write_bytes(b"garbage")
    with pytest.raises(te.TensorRTError, match="could not deserialise the engine"):
        te.TensorRTModel(result.engine)
    result.sidecar.unlink()
    with pytest.raises(te.TensorRTError, match="sidecar m.engine.json is missing"):
        te.TensorRTModel(result.engine)


def test_build_engine_command(tmp_path, fakes, plugin, capsys, monkeypatch):
    monkeypatch.setenv(te.PLUGIN_ENV, str(plugin))
    path = onnx_file(tmp_path)
    assert main(["build-engine", str(path), "--max-batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "trtexec --onnx=" in out and (tmp_path / "m.engine").is_file()
    assert main(["build-engine", str(tmp_path / "nope.onnx")]) == 1
    assert "nope.onnx: ONNX file not found" in capsys.readouterr().err


def test_runtime_module_imports_without_tensorrt_or_torch():
    from test_runtime_without_torch import run_without_torch

    out = run_without_torch(
        """
        sys.modules["tensorrt"] = None
        from handssca.runtime.tensorrt_engine import TensorRTError, import_tensorrt
        try:
            import_tensorrt()
        except TensorRTError as exc:
            print(exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert "TensorRT is not installed" in out.stdout
