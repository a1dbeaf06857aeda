"""handssca doctor: one line per item, fixes for what is missing, exit 1 only for what is broken."""

from __future__ import annotations

import sys
import types

import pytest
from test_tensorrt_runner import FakeCuda, fake_tensorrt

from handssca.cli import main
from handssca.doctor import architecture_covers, diagnose


def findings_by_item():
    return {f.item: f for f in diagnose()}


def test_doctor_answers_here(capsys, monkeypatch):
    monkeypatch.delenv("HANDSSCA_CUDA_KERNEL", raising=False)
    monkeypatch.delenv("HANDSSCA_TRT_PLUGIN", raising=False)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert main(["doctor"]) == 0  # optional parts missing is not an error
    out = capsys.readouterr().out
    for item in ("cpu ", "cpu scan kernel", "onnxruntime", "torch", "cuda kernel library", "tensorrt", "pycuda"):
        assert item in out
    found = findings_by_item()
    assert found["cpu scan kernel"].status == "ok" and "threads" in found["cpu scan kernel"].detail
    assert found["tensorrt"].status == "missing" and "handssca[trt]" in found["tensorrt"].fix
    assert found["cuda kernel library"].status == "missing" and "cmake -S plugins" in found["cuda kernel library"].fix
    assert main(["doctor", "--json"]) == 0
    assert '"item": "onnxruntime"' in capsys.readouterr().out


def test_doctor_reports_the_serving_path(tmp_path, monkeypatch):
    from handssca.serving import server

    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    monkeypatch.setenv(server.ENV_VARIABLE, str(tmp_path / "none"))
    found = findings_by_item()
    assert found["tritonclient"].status == "ok"  # [dev] includes [serve]
    assert found["triton server"].status == "missing" and found["triton server"].fix == "handssca serve setup"
    made = tmp_path / "made"
    made.mkdir()
    (made / server.ENV_MARKER).write_text('{"site_packages": "%s"}' % (tmp_path / "gone"))
    monkeypatch.setenv(server.ENV_VARIABLE, str(made))
    assert findings_by_item()["triton server"].status == "broken"  # its tritonserver was removed
    (made / server.ENV_MARKER).write_text("{not json")
    damaged = findings_by_item()["triton server"]
    assert damaged.status == "broken" and "damaged" in damaged.detail


def test_a_broken_kernel_library_fails_the_doctor(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "libbad.so"
    bad.write_text("not a library")
    monkeypatch.setenv("HANDSSCA_CUDA_KERNEL", str(bad))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"broken  cuda kernel library   {bad}: not a loadable HandSSCA kernel library" in out
    assert "fix: rebuild it" in out


def test_the_kernel_librarys_architectures_against_the_gpu(sm90_kernel_library, monkeypatch):
    from handssca import doctor

    library, _ = sm90_kernel_library
    monkeypatch.setenv("HANDSSCA_CUDA_KERNEL", str(library))
    assert doctor.cuda_kernel_library(["9.0"]).status == "ok"
    wrong = doctor.cuda_kernel_library(["8.6"])
    assert wrong.status == "broken" and "not for this GPU (compute capability 8.6)" in wrong.detail
    assert "-DCMAKE_CUDA_ARCHITECTURES=86" in wrong.fix


@pytest.mark.parametrize(
    "architectures, capability, covered",
    [
        ("75-real,80-real,86-real,89-real,90-real,100-real,120", "9.0", True),
        ("75-real,80-real,86-real,89-real,90-real,100-real,120", "12.1", True),  # PTX 120, JIT-compiled
        ("75-real,80-real,86-real,89-real,90", "10.0", True),  # PTX 90 on Blackwell
        ("75-real,80-real", "9.0", False),
        ("90-real", "8.6", False),
        ("90a-real", "9.0", True),
        ("native", "9.0", None),
    ],
)
def test_architecture_coverage(architectures, capability, covered):
    assert architecture_covers(architectures, capability) is covered


def test_the_plugin_is_loaded_and_its_creator_found(tmp_path, monkeypatch):
    cuda = FakeCuda()
    plugin = tmp_path / "libhandssca_plugins.so"
    plugin.write_bytes(b"\x7fELF plugin")
    monkeypatch.setenv("HANDSSCA_TRT_PLUGIN", str(plugin))
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    monkeypatch.setitem(sys.modules, "pycuda", pycuda)
    monkeypatch.setitem(sys.modules, "pycuda.driver", cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda))
    found = findings_by_item()
    assert found["tensorrt"].detail == "10.16.0"
    assert (
        found["tensorrt plugin"].status == "ok"
        and "registers HandSSCASelectiveScan v1" in found["tensorrt plugin"].detail
    )
    assert found["pycuda"].status == "ok"
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(cuda, loads=False))
    refused = findings_by_item()["tensorrt plugin"]
    assert refused.status == "broken" and "refused the plugin library" in refused.detail
