"""Serving through Triton Inference Server.

The repository writer and checker run without a server. The rest starts a real tritonserver
from the environment ``handssca serve setup`` makes (the README's test command makes it first;
without it these tests skip, unless HANDSSCA_REQUIRE_TRITON=1, as in CI, makes that a failure)
and drives it with tritonclient over gRPC and HTTP: the served meshes equal the runtime's, bad
requests get clear errors while the server keeps serving, a client that hangs up costs nobody
else their answer, and SIGTERM stops it cleanly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from handssca.errors import MissingBackend, ServingError
from handssca.export import export_onnx
from handssca.models import HandSSCA, HandSSCAConfig
from handssca.runtime.crop import normalise
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.mano.files import load_mano
from handssca.runtime.predictor import HandMeshPredictor
from handssca.serving import repository as rp
from handssca.serving.client import HandMeshClient
from handssca.serving.load_test import make_hands, run_load_test, summary_table
from handssca.serving.server import ServerEnvironment, TritonServer, free_ports

from conftest import TINY

SIZE = TINY["input_size"]  # the tiny network's crop


@pytest.fixture(scope="module")
def predictor(tiny_onnx):
    mano, fingertip_ids = build_builtin_hand()
    return HandMeshPredictor.open(tiny_onnx, mano, fingertip_ids)


def read_config(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


# ---------------------------------------------------------------- the repository, no server


def test_repository_layout_names_and_shapes_come_from_the_model(tiny_onnx, tmp_path):
    report = rp.write_repository(tiny_onnx, tmp_path / "repo")
    repo = report.path
    assert sorted(p.name for p in repo.iterdir()) == sorted(
        [rp.ENSEMBLE, rp.PREPROCESS, rp.NETWORK, rp.MESH, rp.MANIFEST]
    )
    assert (repo / rp.NETWORK / "1" / "model.onnx").read_bytes() == tiny_onnx.read_bytes()
    for name, cls in ((rp.PREPROCESS, "PreprocessModel"), (rp.NETWORK, "NetworkModel"), (rp.MESH, "MeshModel")):
        assert f"import {cls} as TritonPythonModel" in (repo / name / "1" / "model.py").read_text()
    assert (repo / rp.ENSEMBLE / "1").is_dir()
    assert len(load_mano(repo / rp.MESH / "1" / "mano.npz").v_template) == 778

    network = read_config(repo / rp.NETWORK / "config.pbtxt")  # Triton's own definitions parse it
    assert network.backend == "python" and network.max_batch_size == 16
    assert [(t.name, list(t.dims)) for t in network.input] == [("image", [3, SIZE, SIZE])]
    outputs = {t.name: list(t.dims) for t in network.output}
    assert outputs == {"heatmaps": [21, 16, 16], "joints_2d": [21, 2], "pose": [48], "shape": [10], "camera": [3]}
    assert list(network.dynamic_batching.preferred_batch_size) == [8]
    assert network.dynamic_batching.max_queue_delay_microseconds == 2000
    assert network.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU

    ensemble = read_config(repo / rp.ENSEMBLE / "config.pbtxt")
    assert ensemble.platform == "ensemble"
    inputs = {t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in ensemble.input}
    assert inputs == {
        "crops": ("TYPE_UINT8", [SIZE, SIZE, 3]),
        "boxes": ("TYPE_FP64", [4]),
        "is_left": ("TYPE_BOOL", [1]),
    }
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [rp.PREPROCESS, rp.NETWORK, rp.MESH]
    assert {t.name for t in ensemble.output} == {name for name, _, _ in rp.MESH_OUTPUTS}
    preprocess = read_config(repo / rp.PREPROCESS / "config.pbtxt")
    assert json.loads(preprocess.parameters["mean"].string_value) == [0.485, 0.456, 0.406]
    manifest = json.loads((repo / rp.MANIFEST).read_text())
    assert manifest["kind"] == "onnx" and len(manifest["model_sha256"]) == 64
    assert set(rp.check_repository(repo)) == {rp.ENSEMBLE, rp.PREPROCESS, rp.NETWORK, rp.MESH}


def test_scheduling_options_are_written(tiny_onnx, tmp_path):
    options = rp.ServingOptions(max_batch=6, preferred_batch=3, queue_delay_us=500, instances=2, threads=1)
    repo = rp.write_repository(tiny_onnx, tmp_path / "repo", options=options).path
    network = read_config(repo / rp.NETWORK / "config.pbtxt")
    assert network.max_batch_size == 6 and network.instance_group[0].count == 2
    assert list(network.dynamic_batching.preferred_batch_size) == [3]
    assert network.dynamic_batching.max_queue_delay_microseconds == 500
    mesh = read_config(repo / rp.MESH / "config.pbtxt")
    assert mesh.HasField("dynamic_batching") and mesh.dynamic_batching.max_queue_delay_microseconds == 0
    single = rp.write_repository(tiny_onnx, tmp_path / "single", options=rp.ServingOptions(dynamic_batching=False))
    for name in (rp.PREPROCESS, rp.NETWORK, rp.MESH):
        assert not read_config(single.path / name / "config.pbtxt").HasField("dynamic_batching")
    with pytest.raises(rp.ModelFileError, match="preferred batch 9 is larger than the max batch 8"):
        rp.ServingOptions(max_batch=8, preferred_batch=9).check()


def test_versions_go_beside_older_ones_and_nothing_is_overwritten(tiny_onnx, tmp_path):
    repo = tmp_path / "repo"
    rp.write_repository(tiny_onnx, repo)
    rp.write_repository(tiny_onnx, repo, options=rp.ServingOptions(version=2, max_batch=4, preferred_batch=2))
    for name in (rp.PREPROCESS, rp.NETWORK, rp.MESH, rp.ENSEMBLE):
        assert {p.name for p in (repo / name).iterdir() if p.is_dir()} == {"1", "2"}
    assert read_config(repo / rp.NETWORK / "config.pbtxt").max_batch_size == 4  # the newest config
    assert json.loads((repo / rp.MANIFEST).read_text())["version"] == 2
    with pytest.raises(rp.ModelFileError, match="version 2 exists already; pass --version 3"):
        rp.write_repository(tiny_onnx, repo, options=rp.ServingOptions(version=2))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(rp.ModelFileError, match="not a HandSSCA model repository is in the way"):
        rp.write_repository(tiny_onnx, foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left


def test_a_failed_write_leaves_nothing(tiny_onnx, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise rp.ModelFileError("checked and refused")

    monkeypatch.setattr(rp, "check_repository", broken)
    with pytest.raises(rp.ModelFileError, match="checked and refused"):
        rp.write_repository(tiny_onnx, tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []


def test_a_version_that_cannot_be_written_leaves_the_repository_as_it_was(tiny_onnx, tmp_path, monkeypatch):
    repo = rp.write_repository(tiny_onnx, tmp_path / "repo").path
    before = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}

    def full_disk(files):
        raise rp.OutputError(f"{next(iter(files))}: cannot write it (No space left on device)")

    monkeypatch.setattr(rp, "write_together", full_disk)
    with pytest.raises(rp.OutputError, match="No space left on device"):
        rp.write_repository(tiny_onnx, repo, options=rp.ServingOptions(version=2))
    after = {p.relative_to(repo): p.read_bytes() for p in repo.rglob("*") if p.is_file()}
    assert after == before  # no version 2 folder beside configs that do not describe it
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_fixed_batch_export_is_refused(tmp_path):
    torch.manual_seed(0)
    net = HandSSCA(HandSSCAConfig(**TINY)).eval()
    export_onnx(net, tmp_path / "fixed.onnx", batch=2, validate=False)
    with pytest.raises(rp.ModelFileError, match="exported with a fixed batch of 2; export it without --batch"):
        rp.write_repository(tmp_path / "fixed.onnx", tmp_path / "repo")


def fake_engine(tmp_path, io=True):
    """An engine file and the sidecar build-engine writes (bytes only: nothing here runs it)."""
    engine = tmp_path / "hand.engine"
    engine.write_bytes(b"serialized engine bytes")
    plugin = tmp_path / "libhandssca_plugins.so"
    plugin.write_bytes(b"\x7fELF plugin")
    (tmp_path / rp.TRITON_LOADER).write_bytes(b"\x7fELF loader")
    shapes = {"heatmaps": [-1, 21, 16, 16], "joints_2d": [-1, 21, 2], "pose": [-1, 48], "shape": [-1, 10]}
    sidecar = {
        "format": "handssca-engine/1",
        "plugin_library": str(plugin),
        "profile": {"input": "image", "min": [1, 3, SIZE, SIZE], "opt": [4, 3, SIZE, SIZE], "max": [8, 3, SIZE, SIZE]},
        "model": {"input": {"shape": ["batch", 3, SIZE, SIZE], "mean": [0.5] * 3, "std": [0.25] * 3}},
    }
    if io:
        sidecar["io"] = [{"name": "image", "is_input": True, "dtype": "float32", "shape": [-1, 3, SIZE, SIZE]}] + [
            {"name": n, "is_input": False, "dtype": "float32", "shape": s} for n, s in shapes.items()
        ]
    (tmp_path / "hand.engine.json").write_text(json.dumps(sidecar))
    return engine, plugin


def test_engine_repositories_serve_a_tensorrt_plan_with_the_plugin(tmp_path):
    engine, plugin = fake_engine(tmp_path)
    repo = rp.write_repository(engine, tmp_path / "repo", options=rp.ServingOptions(max_batch=8)).path
    network = read_config(repo / rp.NETWORK / "config.pbtxt")
    assert network.platform == "tensorrt_plan" and not network.backend
    assert network.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert [list(t.dims) for t in network.input] == [[3, SIZE, SIZE]]
    assert (repo / rp.NETWORK / "1" / "model.plan").read_bytes() == engine.read_bytes()
    assert (repo / rp.PLUGIN_FOLDER / plugin.name).read_bytes() == plugin.read_bytes()
    assert (repo / rp.PLUGIN_FOLDER / rp.TRITON_LOADER).read_bytes() == b"\x7fELF loader"
    assert json.loads(read_config(repo / rp.PREPROCESS / "config.pbtxt").parameters["std"].string_value) == [0.25] * 3
    with pytest.raises(rp.ModelFileError, match="takes batches up to 8; serve it with --max-batch 8 or less"):
        rp.write_repository(engine, tmp_path / "big", options=rp.ServingOptions(max_batch=16))
    sidecar = json.loads((tmp_path / "hand.engine.json").read_text())
    for key, value in (("min", [2, 3, SIZE, SIZE]), ("io", None)):
        changed = json.loads(json.dumps(sidecar))
        if key == "min":
            changed["profile"]["min"] = value
        else:
            changed["io"][0]["shape"][0] = 4  # a static batch
        (tmp_path / "hand.engine.json").write_text(json.dumps(changed))
        with pytest.raises(rp.ModelFileError, match="dynamic batch and --min-batch 1"):
            rp.write_repository(engine, tmp_path / "refused", options=rp.ServingOptions(max_batch=4, preferred_batch=2))
    (tmp_path / "hand.engine.json").write_text(json.dumps(sidecar))
    (tmp_path / rp.TRITON_LOADER).unlink()
    with pytest.raises(rp.ModelFileError, match="libhandssca_plugins_triton.so: missing beside the plugin library"):
        rp.write_repository(engine, tmp_path / "no_loader")
    (tmp_path / "old").mkdir()
    old_engine, _ = fake_engine(tmp_path / "old", io=False)
    with pytest.raises(rp.ModelFileError, match="records no input/output tensors.*rebuild it"):
        rp.write_repository(old_engine, tmp_path / "old_repo")


def test_an_engine_repository_starts_triton_with_the_plugin_loader(tmp_path):
    engine, _ = fake_engine(tmp_path)
    repo = rp.write_repository(engine, tmp_path / "repo", options=rp.ServingOptions(max_batch=8)).path
    environment = ServerEnvironment(None, tmp_path / "tritonserver", tmp_path / "backends", [], [])
    command = TritonServer(repo, environment=environment, http_port=8000, grpc_port=8001, metrics_port=8002).command
    loader = repo.resolve() / rp.PLUGIN_FOLDER / rp.TRITON_LOADER
    assert f"--backend-config=tensorrt,plugins={loader}" in command
    assert "--http-port=8000" in command and f"--model-repository={repo.resolve()}" in command
    server = TritonServer(repo, environment=environment)
    assert server._environ()["OPENBLAS_NUM_THREADS"] == "1"  # the python steps' numpy must not spin


@pytest.fixture
def repo(tiny_onnx, tmp_path):
    return rp.write_repository(tiny_onnx, tmp_path / "repo").path


@pytest.mark.parametrize(
    "model, old, new, message",
    [
        (rp.ENSEMBLE, "dims: 778", "dims: 777", "output 'vertices' is declared TYPE_FP32 \\[777, 3\\]"),
        (rp.MESH, 'name: "boxes"\n  data_type: TYPE_FP64', 'name: "boxes"\n  data_type: TYPE_FP32',
         "'boxes' is TYPE_FP64 \\[4\\] but handssca_mesh's input 'boxes' is TYPE_FP32"),
        (rp.ENSEMBLE, 'model_name: "handssca_mesh"', 'model_name: "handssca_meshes"', "calls 'handssca_meshes'"),
        (rp.ENSEMBLE, 'key: "boxes"\n      value: "boxes"', 'key: "boxes"\n      value: "box"',
         "reads 'box' before any step makes it"),
        (rp.NETWORK, 'name: "handssca_network"', 'name: "network"', "names the model 'network' but its folder"),
        (rp.NETWORK, "preferred_batch_size: 8", "preferred_batch_size: 32", "preferred batch size is larger"),
        (rp.PREPROCESS, 'backend: "python"', 'backend: "python"\nbatch_size: 3', "not a Triton model configuration"),
    ],
)  # fmt: skip
def test_check_repository_refuses_what_would_not_serve(repo, model, old, new, message):
    config = repo / model / "config.pbtxt"
    text = config.read_text()
    assert old in text
    config.write_text(text.replace(old, new, 1))
    with pytest.raises(rp.ModelFileError, match=message):
        rp.check_repository(repo)


def test_check_repository_wants_version_folders_and_code(repo):
    (repo / rp.MESH / "1" / "model.py").unlink()
    with pytest.raises(rp.ModelFileError, match="model.py is missing"):
        rp.check_repository(repo)
    shutil.rmtree(repo / rp.MESH / "1")
    with pytest.raises(rp.ModelFileError, match="no version folder"):
        rp.check_repository(repo)


def test_serve_cli_writes_and_checks(tiny_onnx, tmp_path, capsys):
    from handssca.cli import main

    assert main(["serve", "repository", str(tiny_onnx), "-o", str(tmp_path / "repo"), "--max-batch", "4",
                 "--preferred-batch", "2"]) == 0  # fmt: skip
    assert "handssca serve start" in capsys.readouterr().out
    assert main(["serve", "check", str(tmp_path / "repo")]) == 0
    assert "4 models" in capsys.readouterr().out
    network = tmp_path / "repo" / rp.NETWORK / "1" / "model.onnx"
    network.write_bytes(network.read_bytes() + b"\0")  # its configs cannot tell
    assert main(["serve", "check", str(tmp_path / "repo")]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{network}: changed since 'handssca serve repository' wrote it" in line and "--trust-modified" in line
    assert main(["serve", "check", str(tmp_path / "repo"), "--trust-modified"]) == 0
    assert main(["serve", "repository", str(tiny_onnx), "-o", str(tmp_path / "b"), "--preferred-batch", "32"]) == 1
    assert "preferred batch 32 is larger than the max batch 16" in capsys.readouterr().err


def test_without_a_server_environment_or_server_the_errors_say_what_to_do(tmp_path, monkeypatch):
    from handssca.serving import server as sv

    monkeypatch.setenv(sv.ENV_VARIABLE, str(tmp_path / "nothing"))
    monkeypatch.setattr(sv.shutil, "which", lambda name: None)
    with pytest.raises(MissingBackend, match="no Triton server environment here: make one with 'handssca serve setup"):
        ServerEnvironment.find()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    with pytest.raises(ServingError, match="not empty and not a server environment"):
        sv.setup_server_environment(foreign)
    assert [p.name for p in foreign.iterdir()] == ["thesis.tex"]
    (port,) = free_ports(1)
    with pytest.raises(ServingError, match=f"localhost:{port}: cannot read the config of model 'handssca'"):
        HandMeshClient(f"localhost:{port}", "http", timeout_s=2)


class PythonBackendUtils(types.ModuleType):
    """triton_python_backend_utils as the python backend's README documents it, for calling our
    models' execute without the stub: ``pb_utils.get_input_tensor_by_name(request, name)`` and
    its ``.as_numpy()``; ``pb_utils.Tensor(name, array)``; ``pb_utils.InferenceResponse(
    output_tensors=[...], error=pb_utils.TritonError(message))``; "the length of this list
    [of responses] must be the same as `requests`"."""

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, np.asarray(array)

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        def __init__(self, message):
            self._message = message

        def message(self):
            return self._message

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self._outputs, self._error = output_tensors, error

        def output_tensors(self):
            return self._outputs

        def has_error(self):
            return self._error is not None

        def error(self):
            return self._error

    class InferenceRequest:
        def __init__(self, **arrays):
            self._inputs = [PythonBackendUtils.Tensor(k, v) for k, v in arrays.items()]

        def inputs(self):
            return self._inputs

    def __init__(self):
        super().__init__("triton_python_backend_utils")

    @staticmethod
    def get_input_tensor_by_name(request, name):
        return next((t for t in request.inputs() if t.name() == name), None)

    @staticmethod
    def triton_string_to_numpy(name):
        return {"TYPE_FP32": np.float32, "TYPE_FP64": np.float64, "TYPE_UINT8": np.uint8, "TYPE_BOOL": np.bool_}[name]


def python_model(monkeypatch, repo, name, cls):
    """One of our python models, initialised as the stub does (model_config as Triton's JSON)."""
    from google.protobuf import json_format

    from handssca.serving import backends

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", PythonBackendUtils())
    config = json_format.MessageToDict(read_config(repo / name / "config.pbtxt"), preserving_proto_field_name=True)
    model = getattr(backends, cls)()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repo / name), "model_version": "1"})
    return model


def outputs_of(response):
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def test_a_bad_request_gets_its_own_error_and_never_fails_its_batch(repo, predictor, monkeypatch):
    pb = PythonBackendUtils
    hands = make_hands(predictor, 3)
    network = python_model(monkeypatch, repo, rp.NETWORK, "NetworkModel")
    mesh = python_model(monkeypatch, repo, rp.MESH, "MeshModel")
    images = normalise(hands.crops, predictor.mean, predictor.std)
    broken = images[:1].copy()
    broken[0, 0, 5, 5] = np.nan
    answers = network.execute([pb.InferenceRequest(image=images[:1]), pb.InferenceRequest(image=broken),
                               pb.InferenceRequest(image=images[1:])])  # fmt: skip
    assert len(answers) == 3 and answers[1].has_error() and "1 NaN or infinite" in answers[1].error().message()
    first, rest = outputs_of(answers[0]), outputs_of(answers[2])
    assert first["pose"].shape == (1, 48) and rest["pose"].shape == (2, 48)  # split back per request
    alone = network.model.run(images[1:])
    np.testing.assert_allclose(rest["pose"], alone["pose"], atol=1e-6)

    def mesh_request(outputs, boxes, left):
        return pb.InferenceRequest(**{k: outputs[k] for k in rp.MESH_READS}, boxes=boxes, is_left=left)

    empty_box = np.array([[60.0, 60.0, 50.0, 90.0]])
    answers = mesh.execute([
        mesh_request(first, hands.boxes[:1], hands.is_left[:1]),
        mesh_request(first, empty_box, hands.is_left[:1]),
        mesh_request(rest, hands.boxes[1:], hands.is_left[1:]),
    ])  # fmt: skip
    assert len(answers) == 3 and "is empty" in answers[1].error().message()
    served = np.concatenate([outputs_of(answers[0])["vertices"], outputs_of(answers[2])["vertices"]])
    assert np.abs(served - hands.reference["vertices"]).max() < 1e-6  # left and right hands alike


# ---------------------------------------------------------------- a stand-in tritonserver

# A tritonserver for the serving loop's faults, in seconds and without Triton: it logs what a real
# one logs on a machine without a GPU (errors included), starts a python-step "stub" (a process
# named like the python backend's, with Triton's pid where the stub has it), answers every HTTP
# request as ready and done, exits 0 on SIGTERM, and then does $FAKE_TRITON: "kill-self" (kill -9
# of tritonserver, at once or after it is ready), "kill-stub" (kill -9 of its stub), or nothing.
FAKE_TRITON = """#!PYTHON
import http.server, os, signal, subprocess, sys, threading

print('W1207 17:14:37.380644 6026 pinned_memory_manager.cc:273] "Unable to allocate pinned system memory, '
      'pinned memory pool will not be available: CUDA driver version is insufficient for CUDA runtime version"')
print('E1207 17:14:37.380954 6026 server.cc:241] "CudaDriverHelper has not been initialized."')
print('E1207 17:14:39.681359 6026 ensemble_scheduler.cc:1468] "unable to create stream for handssca: CUDA '
      'driver version is insufficient for CUDA runtime version"')
print('I1207 17:14:39.687038 6026 grpc_server.cc:2558] "Started GRPCInferenceService at 127.0.0.1:1"', flush=True)
does, delay = os.environ.get("FAKE_TRITON", "nothing:0").split(":")
if does == "kill-self" and delay == "0":
    os.kill(os.getpid(), signal.SIGKILL)
stub = subprocess.Popen(["triton_python_backend_stub", "STUB", "shm", "1", "2", str(os.getpid())],
                        executable=sys.executable)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))


class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.do_GET()

    def log_message(self, *args):
        pass


victim = {"kill-stub": stub.pid, "kill-self": os.getpid()}.get(does)
if victim:
    threading.Timer(float(delay), os.kill, (victim, signal.SIGKILL)).start()
port = int(next(a.split("=")[1] for a in sys.argv if a.startswith("--http-port=")))
http.server.ThreadingHTTPServer(("127.0.0.1", port), Answer).serve_forever()
"""


@pytest.fixture
def fake_triton(tmp_path):
    """A server environment (as 'handssca serve setup' makes one) whose tritonserver is FAKE_TRITON."""
    from handssca.serving.server import ENV_MARKER

    folder, site = tmp_path / "fake_env", tmp_path / "fake_env" / "site"
    stub = tmp_path / "stub" / rp.MESH / "1" / "model.py"  # the stub's model, as the watchdog reads it
    stub.parent.mkdir(parents=True)
    stub.write_text("import time\ntime.sleep(600)\n")
    binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    binary.write_text(FAKE_TRITON.replace("PYTHON", sys.executable, 1).replace("STUB", str(stub)))
    binary.chmod(0o755)
    (folder / ENV_MARKER).write_text(json.dumps({"site_packages": str(site)}))
    return folder


def serve_start(repository, environment, *options):
    """``handssca serve start`` in this process, on free ports: its exit status and stderr lines."""
    from handssca.cli import main

    ports = [str(p) for p in free_ports(3)]
    return main(["serve", "start", str(repository), "--env", str(environment), "--http-port", ports[0],
                 "--grpc-port", ports[1], "--metrics-port", ports[2], *options])  # fmt: skip


@pytest.mark.parametrize(("delay", "when"), [("0", "before it was ready"), ("1", "while serving")])
def test_a_killed_triton_is_said_to_be_killed_by_its_signal(tmp_path, fake_triton, monkeypatch, capsys, delay, when):
    engine, _ = fake_engine(tmp_path)
    repo = rp.write_repository(engine, tmp_path / "repo", options=rp.ServingOptions(max_batch=8)).path
    monkeypatch.setenv("FAKE_TRITON", f"kill-self:{delay}")
    assert serve_start(repo, fake_triton) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert f"tritonserver was killed by SIGKILL {when} (log: " in line, line
    assert "CUDA" not in line  # never the harmless lines of a start without a GPU


def test_a_watchdog_that_gives_up_says_so_once(tmp_path, fake_triton, monkeypatch, capsys):
    engine, _ = fake_engine(tmp_path)
    repo = rp.write_repository(engine, tmp_path / "repo", options=rp.ServingOptions(max_batch=8)).path
    monkeypatch.setenv("FAKE_TRITON", "kill-stub:0.5")  # no reload brings this stub back
    assert serve_start(repo, fake_triton) == 1
    err = capsys.readouterr().err
    gave_up = "the python step of model 'handssca_mesh' died 6 times: not restarted again"
    assert err.count(gave_up) == 1, err
    assert err.splitlines()[-1].startswith(f"handssca serve: {gave_up}; stopped Triton (exit 0; log: "), err
    assert err.count("(restart 5 of 5)") == 1, err


def test_the_manifest_records_the_hash_of_every_file_served(tmp_path):
    from handssca.runtime.files import sha256_file

    engine, _ = fake_engine(tmp_path)
    repo = rp.write_repository(engine, tmp_path / "repo", options=rp.ServingOptions(max_batch=8)).path
    files = json.loads((repo / rp.MANIFEST).read_text())["files"]
    assert set(files) == {f"{rp.NETWORK}/1/model.plan", f"{rp.PREPROCESS}/1/model.py", f"{rp.MESH}/1/model.py",
                          f"{rp.MESH}/1/mano.npz", f"{rp.PLUGIN_FOLDER}/libhandssca_plugins.so",
                          f"{rp.PLUGIN_FOLDER}/{rp.TRITON_LOADER}"}  # fmt: skip
    assert all(digest == sha256_file(repo / name) for name, digest in files.items())
    rp.write_repository(engine, repo, options=rp.ServingOptions(max_batch=8, version=2))
    files = json.loads((repo / rp.MANIFEST).read_text())["files"]
    assert {f"{rp.MESH}/1/model.py", f"{rp.MESH}/2/model.py"} <= set(files)  # the older version's too
    cache = repo / rp.MESH / "2" / "__pycache__" / "model.cpython-311.pyc"  # what the stub's import leaves
    cache.parent.mkdir()
    cache.write_bytes(b"bytecode")
    assert set(rp.check_repository(repo)) == {rp.ENSEMBLE, rp.PREPROCESS, rp.NETWORK, rp.MESH}


def _append(path, data):
    path.write_bytes(path.read_bytes() + data)


def _without_hashes(manifest):
    manifest.write_text(json.dumps({k: v for k, v in json.loads(manifest.read_text()).items() if k != "files"}))


MODIFIED = {  # what was done to a repository written by 'serve repository', and what the refusal says
    "model": (lambda repo: _append(repo / rp.NETWORK / "1" / "model.plan", b"!"),
              f"{rp.NETWORK}/1/model.plan: changed since 'handssca serve repository' wrote it"),
    "code": (lambda repo: _append(repo / rp.MESH / "1" / "model.py", b"import os\n"),
             f"{rp.MESH}/1/model.py: changed since 'handssca serve repository' wrote it"),
    "plugin": (lambda repo: _append(repo / rp.PLUGIN_FOLDER / rp.TRITON_LOADER, b"!"),
               f"{rp.PLUGIN_FOLDER}/{rp.TRITON_LOADER}: changed since"),
    "a version by hand": (lambda repo: shutil.copytree(repo / rp.PREPROCESS / "1", repo / rp.PREPROCESS / "2"),
                          f"{rp.PREPROCESS}/2/model.py: not written by 'handssca serve repository'"),
    "a file removed": (lambda repo: (repo / rp.MESH / "1" / "mano.npz").unlink(),
                       f"{rp.MESH}/1/mano.npz: missing (handssca_repository.json records it)"),
    "no manifest": (lambda repo: (repo / rp.MANIFEST).unlink(), "repo: no handssca_repository.json"),
    "an older manifest": (lambda repo: _without_hashes(repo / rp.MANIFEST),
                          "handssca_repository.json: records no file hashes"),
}  # fmt: skip


@pytest.mark.parametrize("change", sorted(MODIFIED))
def test_a_modified_repository_is_refused_unless_trusted(tmp_path, fake_triton, monkeypatch, capsys, change):
    """'serve check' and 'serve start' alike, in one line naming the file and how to go on."""
    from handssca.cli import main

    engine, _ = fake_engine(tmp_path)
    repo = rp.write_repository(engine, tmp_path / "repo", options=rp.ServingOptions(max_batch=8)).path
    modify, message = MODIFIED[change]
    modify(repo)
    assert main(["serve", "check", str(repo)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert message in line and line.endswith("or pass --trust-modified to use it as it is"), line
    assert serve_start(repo, fake_triton) == 1
    assert capsys.readouterr().err.splitlines() == [line]  # refused before Triton starts
    assert main(["serve", "check", str(repo), "--trust-modified"]) == 0
    monkeypatch.setenv("FAKE_TRITON", "kill-self:1")  # started: it stops in its own line
    assert serve_start(repo, fake_triton, "--trust-modified") == 1
    assert "tritonserver was killed by SIGKILL" in capsys.readouterr().err


# ---------------------------------------------------------------- a real Triton


@pytest.fixture(scope="module")
def environment():
    try:
        return ServerEnvironment.find()
    except MissingBackend as exc:
        if os.environ.get("HANDSSCA_REQUIRE_TRITON") == "1":
            raise
        pytest.skip(f"no Triton server environment ({exc})")


@pytest.fixture(scope="module")
def server(tiny_onnx, environment, tmp_path_factory):
    options = rp.ServingOptions(max_batch=4, preferred_batch=2, queue_delay_us=1000)
    repo = rp.write_repository(tiny_onnx, tmp_path_factory.mktemp("triton") / "repo", options=options).path
    with TritonServer(repo, environment=environment) as running:
        yield running
    assert running.exit_code == 0


def frame_and_boxes(seed=3):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, (203, 311, 3), dtype=np.uint8)  # odd sizes
    # Odd and not representable in float32: the boxes travel as float64, as the predictor takes them.
    boxes = [(40, 30, 140, 150), (150.1, 60.3, 260.7, 199.9), (5, 7, 70, 61), (180, 20, 300, 90), (90, 90, 131, 160),
             (0.3, 100.7, 100.9, 202.1)]  # fmt: skip
    return frame, boxes, ["right", "left", "left", "right", "right", "left"]


@pytest.mark.slow  # a real tritonserver
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_meshes_equal_the_runtime(server, predictor, protocol):
    frame, boxes, sides = frame_and_boxes()
    K = np.array([[500.0, 0, 155], [0, 500, 101], [0, 0, 1]])
    expected = predictor.predict(frame, boxes, sides=sides, K=K)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with HandMeshClient(url, protocol) as client:
        assert client.size == SIZE and client.max_batch == 4  # 6 hands go as 4 + 2
        served = client.predict(frame, boxes, sides=sides, K=K)
    for got, want in zip(served, expected, strict=True):
        assert got.side == want.side
        assert np.abs(got.vertices - want.vertices).max() < 1e-6  # metres; float32 on the wire
        assert np.abs(got.joints_3d - want.joints_3d).max() < 1e-6
        assert np.abs(got.keypoints_2d - want.keypoints_2d).max() < 1e-4  # pixels
        # The depth of an untrained network's small, flat hand is ill-conditioned: float32 keypoints
        # on the wire move it by ~1e-3 of itself.
        np.testing.assert_allclose(got.translation, want.translation, rtol=1e-2)
        np.testing.assert_allclose(got.pose, want.pose, atol=1e-6)
        np.testing.assert_allclose(got.shape, want.shape, atol=1e-6)
        assert got.confidence == pytest.approx(want.confidence, abs=1e-6)


@pytest.mark.slow  # a real tritonserver
def test_bad_requests_get_clear_errors_and_the_server_keeps_serving(server, predictor):
    hands = make_hands(predictor, 2)
    with HandMeshClient(server.grpc_url) as client:
        small = np.zeros((1, 64, 64, 3), np.uint8)
        with pytest.raises(ServingError, match="unexpected shape for input 'crops'.*\\[1,64,64,3\\]"):
            client.infer(small, hands.boxes[:1], hands.is_left[:1])
        with pytest.raises(ServingError, match="input 'crops' data-type is 'FP32'.*expects 'UINT8'"):
            client.infer(hands.crops[:1].astype(np.float32), hands.boxes[:1], hands.is_left[:1])
        with pytest.raises(ServingError, match="hand box .* is empty"):
            client.infer(hands.crops[:1], np.array([[50, 50, 40, 90]], np.float64), hands.is_left[:1])
        with pytest.raises(ServingError, match="batch-size must be <= 4"):
            client.infer(np.repeat(hands.crops[:1], 5, axis=0), np.repeat(hands.boxes[:1], 5, 0),
                         np.repeat(hands.is_left[:1], 5, 0))  # fmt: skip
        out = client.infer(hands.crops, hands.boxes, hands.is_left)
    assert server.ready()
    assert np.abs(out["vertices"] - hands.reference["vertices"]).max() < 1e-6


def infer_body(hands) -> bytes:
    inputs = [
        {"name": "crops", "shape": list(hands.crops.shape), "datatype": "UINT8", "data": hands.crops.ravel().tolist()},
        {"name": "boxes", "shape": list(hands.boxes.shape), "datatype": "FP64", "data": hands.boxes.ravel().tolist()},
        {"name": "is_left", "shape": list(hands.is_left.shape), "datatype": "BOOL",
         "data": hands.is_left.ravel().tolist()},
    ]  # fmt: skip
    return json.dumps({"inputs": inputs}).encode()


@pytest.mark.slow  # a real tritonserver
def test_a_client_that_hangs_up_costs_nobody_else_their_answer(server, predictor):
    hands = make_hands(predictor, 4)
    body = infer_body(hands)
    host, port = server.http_url.split(":")
    header = (f"POST /v2/models/{rp.ENSEMBLE}/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n").encode()  # fmt: skip
    results, failures = [], []

    def steady_client(index):
        with HandMeshClient(server.grpc_url) as client:
            for _ in range(6):
                out = client.infer(hands.crops, hands.boxes, hands.is_left)
                diff = np.abs(out["vertices"] - hands.reference["vertices"]).max()
                (results if diff < 1e-6 else failures).append(diff)

    workers = [threading.Thread(target=steady_client, args=(i,)) for i in range(3)]
    for w in workers:
        w.start()
    for cut in (len(body), len(body) // 2):  # the whole request, then half of one: hang up before the answer
        for _ in range(3):
            with socket.create_connection((host, int(port))) as sock:
                sock.sendall(header + body[:cut])
    for w in workers:
        w.join()
    assert not failures and len(results) == 18
    assert server.ready()
    with HandMeshClient(server.http_url, "http") as client:  # and the server still answers everyone
        out = client.infer(hands.crops, hands.boxes, hands.is_left)
    assert np.abs(out["keypoints_2d"] - hands.reference["keypoints_2d"]).max() < 1e-3


@pytest.mark.slow  # a real tritonserver
def test_stopping_answers_what_is_in_flight_and_exits_cleanly(tiny_onnx, predictor, environment, tmp_path):
    """Stop while a request waits in the network's batching queue (a 2 s queue delay holds it there
    for certain): it is answered, correctly; a request sent while stopping is refused in words;
    Triton exits 0. Triton alone, sent SIGTERM, fails that in-flight request at the ensemble's next
    step; TritonServer.stop drains the ensemble first (without it this test fails)."""
    options = rp.ServingOptions(preferred_batch=8, queue_delay_us=2_000_000)
    repo = rp.write_repository(tiny_onnx, tmp_path / "repo", options=options).path
    hands = make_hands(predictor, 1)
    answers, refusals = [], []

    def send(client):
        try:
            answers.append(client.infer(hands.crops, hands.boxes, hands.is_left))
        except ServingError as exc:
            refusals.append(str(exc))

    with TritonServer(repo, environment=environment) as server:
        early, late = HandMeshClient(server.grpc_url), HandMeshClient(server.grpc_url)
        in_flight = threading.Thread(target=send, args=(early,))
        in_flight.start()
        time.sleep(0.5)  # sent and queued: the batcher holds it up to 2 s for a fuller batch
        assert in_flight.is_alive() and not answers
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        time.sleep(0.3)
        send(late)
        in_flight.join(timeout=60)
        stopping.join(timeout=120)
    early.close()
    late.close()
    assert server.exit_code == 0 and server.drained and server.process.poll() is not None
    assert len(answers) == 1, refusals
    assert np.abs(answers[0]["vertices"] - hands.reference["vertices"]).max() < 1e-6
    assert len(refusals) == 1 and "handssca" in refusals[0], refusals
    assert not server.log_path.exists()  # a clean stop removes the log it made


@pytest.mark.slow  # a real tritonserver
def test_start_refuses_a_broken_repository_with_the_servers_reason(tiny_onnx, environment, tmp_path):
    repo = rp.write_repository(tiny_onnx, tmp_path / "repo").path
    (repo / rp.NETWORK / "1" / "model.onnx").write_bytes(b"not onnx")  # the checker cannot see inside it
    with pytest.raises(ServingError, match="exited with 1 before it was ready"):
        with TritonServer(repo, environment=environment, start_timeout_s=120, trust_modified=True):
            pass


@pytest.mark.slow  # a real tritonserver
@pytest.mark.parametrize("host", [None, "0.0.0.0"])
def test_serve_start_command_stops_on_sigterm(tiny_onnx, environment, tmp_path, host):
    import selectors

    repo = rp.write_repository(tiny_onnx, tmp_path / "repo").path
    http, grpc, metrics = free_ports(3)
    command = [sys.executable, "-m", "handssca", "serve", "start", str(repo), "--env", str(environment.folder),
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]  # fmt: skip
    command += ["--host", host] if host else []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # it must flush on its own
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=120), "serve start printed nothing within 120 s"
        lines = []
        while not lines or "stops it" not in lines[-1]:
            lines.append(process.stdout.readline())
            assert lines[-1], process.stderr.read()
        assert f"gRPC 127.0.0.1:{grpc}" in lines[0] and f"on {host or '127.0.0.1'}:" in lines[0], lines
        assert any("no authentication" in line for line in lines) == (host is not None), lines
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # SIGTERM lets it stop Triton too; kill only what will not stop
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    assert process.returncode == 0, err
    assert "stopped: tritonserver exited with 0" in out


@pytest.mark.slow  # a real tritonserver
def test_sigterm_to_a_load_test_stops_its_servers_and_leaves_nothing(tiny_onnx, environment, tmp_path):
    """A service manager's SIGTERM unwinds the command like Ctrl-C: both Triton servers are
    stopped (none left running) and the temporary repositories are gone; exit 130."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    command = [sys.executable, "-u", "-m", "handssca", "serve", "load-test", str(tiny_onnx), "-o",
               str(tmp_path / "out"), "--env", str(environment.folder), "--concurrency", "1,2", "--duration", "8",
               "--hands", "2"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(scratch)})  # fmt: skip
    try:
        for line in process.stdout:
            if "clients, 8 s" in line:  # both servers up, a level under way
                break
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130 and "interrupted" in err, err
    left = subprocess.run(["pgrep", "-f", str(scratch)], capture_output=True, text=True).stdout.split()
    assert not left, f"processes still running from {scratch}: {left}"
    assert not [p for p in scratch.iterdir() if p.name.startswith("handssca-load-")]
    assert not (tmp_path / "out" / "load_test.json").exists()  # an interrupted run publishes nothing


@pytest.mark.slow  # a real tritonserver
def test_load_test_reports_every_level_with_parity(tiny_onnx, environment):
    options = rp.ServingOptions(max_batch=4, preferred_batch=2)
    report = run_load_test(tiny_onnx, concurrency=(1, 3), duration_s=1.0, hands=4, environment=environment,
                           options=options, progress=lambda _: None)  # fmt: skip
    assert report["in_process_hands_per_s"] > 0
    assert set(report["modes"]) == {"dynamic batching", "no batching"}
    for mode in report["modes"].values():
        assert mode["exit_code"] == 0
        assert [lv["concurrency"] for lv in mode["levels"]] == [1, 3]
        for level in mode["levels"]:
            assert level["requests"] > 0 and level["errors"] == 0 and level["parity_failures"] == 0
            assert level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"]
            assert level["max_diff"]["vertices"] < 1e-6 and level["mean_network_batch"] >= 1
            assert set(level["models"]) == {rp.ENSEMBLE, rp.PREPROCESS, rp.NETWORK, rp.MESH}
            network = level["models"][rp.NETWORK]
            assert network["compute_ms"] > 0 and network["queue_ms"] >= 0
    assert all(lv["mean_network_batch"] == 1 for lv in report["modes"]["no batching"]["levels"])
    assert all(lv["faults"] is None and lv["server_rss_mb"] for m in report["modes"].values() for lv in m["levels"])


@pytest.mark.slow  # a real tritonserver
def test_the_load_test_kills_the_network_step_and_times_each_recovery(tiny_onnx, environment):
    report = run_load_test(tiny_onnx, concurrency=(3,), duration_s=14.0, hands=4, environment=environment,
                           modes=(False,), kill_step_every_s=5.0, progress=lambda _: None)  # fmt: skip
    (level,) = report["modes"]["no batching"]["levels"]
    faults = level["faults"]
    assert faults["kills"] == 2 and faults["restarts"] == {rp.NETWORK: 2}, faults
    assert faults["lost_requests"] == level["errors"] > 0 and level["parity_failures"] == 0
    # Each kill: answers again before the next one (the watchdog's poll and one reload, ~2 s here),
    # and its last error (the requests the dead step held) within the same span.
    assert all(r is not None and 0 < r < 5.0 for r in faults["recovery_s"]), faults
    assert all(0 < r < 8.0 for r in faults["last_error_s"]), faults
    assert level["requests"] > 0 and "kills of the network step" in summary_table(report)


@pytest.mark.slow  # a real tritonserver
def test_frames_without_boxes_are_found_in_the_client(server, predictor):
    from handssca.runtime.photos import load_photo

    photo = load_photo("back_projection")
    frame = np.concatenate([photo, photo[:, ::-1]], axis=1)
    expected = predictor.predict(frame)
    with HandMeshClient(server.grpc_url) as client:
        served = client.predict(frame)
    assert sorted(h.side for h in served) == ["left", "right"]
    for got, want in zip(served, expected, strict=True):
        assert got.side == want.side and got.found is not None
        np.testing.assert_array_equal(got.box, want.box)
        assert np.abs(got.vertices - want.vertices).max() < 1e-6


def listening_addresses(pid: int, ports) -> dict[int, set[str]]:
    """The local addresses that process ``pid``'s listening TCP sockets on ``ports`` are bound to
    (read from /proc: the socket inodes the process holds, then /proc/net/tcp and tcp6)."""
    import ipaddress

    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found: dict[int, set[str]] = {port: set() for port in ports}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] != "0A" or fields[9] not in inodes or int(port, 16) not in found:
                continue
            raw = bytes.fromhex(address)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
            ip = ipaddress.ip_address(words)
            found[int(port, 16)].add(str(getattr(ip, "ipv4_mapped", None) or ip))  # gRPC: ::ffff:127.0.0.1
    return found


@pytest.mark.slow  # a real tritonserver
def test_triton_listens_on_loopback_unless_told(server, tiny_onnx, environment, tmp_path, capsys):
    ports = (server.http_port, server.grpc_port, server.metrics_port)
    assert listening_addresses(server.process.pid, ports) == {port: {"127.0.0.1"} for port in ports}
    repo = rp.write_repository(tiny_onnx, tmp_path / "repo").path
    with TritonServer(repo, environment=environment, host="0.0.0.0") as everywhere:
        ports = (everywhere.http_port, everywhere.grpc_port, everywhere.metrics_port)
        bound = listening_addresses(everywhere.process.pid, ports)
        assert all(bound[port] and bound[port] <= {"0.0.0.0", "::"} for port in ports), bound
        with HandMeshClient(everywhere.grpc_url) as client:  # reached through loopback
            assert client.size == SIZE
    assert "--http-address=127.0.0.1" in TritonServer(repo, environment=environment).command


def kill_stub(server, model: str) -> int:
    """SIGKILL to one python-backend stub of ``model`` (what an out-of-memory kill does)."""
    (pid, *_) = sorted(server._stubs()[model])
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.slow  # a real tritonserver
def test_a_killed_python_step_is_reloaded_and_answers_resume(tiny_onnx, predictor, environment, tmp_path):
    """Three clients under load; the network's stub is SIGKILLed: requests in flight then get an
    error, the watchdog reloads the model, and every answer after that succeeds."""
    repo = rp.write_repository(tiny_onnx, tmp_path / "repo").path
    frame, boxes, sides = frame_and_boxes()
    expected = predictor.predict(frame, boxes[:2], sides=sides[:2])
    events = []
    results: list[tuple[float, bool]] = []
    stop = threading.Event()
    server = TritonServer(repo, environment=environment, on_event=events.append, stop_timeout_s=10)
    with server:

        def client():
            with HandMeshClient(server.grpc_url, timeout_s=30) as c:
                while not stop.is_set():
                    try:
                        got = c.predict(frame, boxes[:2], sides=sides[:2])
                        ok = np.abs(got[1].vertices - expected[1].vertices).max() < 1e-6
                    except ServingError:
                        ok = False
                    results.append((time.monotonic(), ok))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        killed_at = time.monotonic()
        kill_stub(server, "handssca_network")
        time.sleep(12.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        log = server.log_path.read_text(errors="replace")
    assert server.restarts == {"handssca_network": 1}, events
    # The requests the dead stub held are never answered, so Triton may wait for them to its exit
    # timeout when stopped: said, not raised.
    assert server.exit_code == 0 or "held requests that never finish" in server.stop_note
    assert any("died; reloading it (restart 1 of 5)" in e for e in events), events
    assert any("reloaded in" in e for e in events) and "handssca watchdog: model 'handssca_network' reloaded" in log
    before = [ok for t, ok in results if t < killed_at]
    after = [(t - killed_at, ok) for t, ok in results if t >= killed_at]
    failed = [t for t, ok in after if not ok]
    assert all(before) and before and failed, (len(before), len(failed))
    recovered = max(failed)
    assert recovered < 10.0, recovered  # the bound: the watchdog's poll + one reload (~2 s here)
    later = [ok for t, ok in after if t > recovered]
    assert later and all(later), len(later)


@pytest.mark.slow  # a real tritonserver
def test_a_step_that_keeps_dying_is_given_up_in_one_line(tiny_onnx, environment, tmp_path):
    repo = rp.write_repository(tiny_onnx, tmp_path / "repo").path
    events = []
    server = TritonServer(repo, environment=environment, on_event=events.append, max_restarts=0)
    with server:
        kill_stub(server, "handssca_mesh")
        deadline = time.monotonic() + 20
        while server.gave_up is None and time.monotonic() < deadline:
            time.sleep(0.1)
    assert server.gave_up == "the python step of model 'handssca_mesh' died 1 times: not restarted again", events
    assert events == [f"handssca serve: {server.gave_up}"]


@pytest.mark.slow  # a real tritonserver
def test_serve_start_exits_in_one_line_when_triton_itself_dies(tiny_onnx, environment, tmp_path):
    import selectors

    repo = rp.write_repository(tiny_onnx, tmp_path / "repo").path
    http, grpc, metrics = free_ports(3)
    command = [sys.executable, "-m", "handssca", "serve", "start", str(repo), "--env", str(environment.folder),
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout=120), "serve start printed nothing within 120 s"
        process.stdout.readline()
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        (triton,) = [int(c) for c in children if b"tritonserver" in Path(f"/proc/{c}/cmdline").read_bytes()]
        os.kill(triton, signal.SIGKILL)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    lines = err.strip().splitlines()
    # Not the harmless CUDA line a start without a GPU logs last among its errors.
    assert len(lines) == 1 and "tritonserver was killed by SIGKILL while serving" in lines[0], err
