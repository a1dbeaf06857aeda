"""The CUDA selective-scan kernel and its TensorRT plugin (plugins/).

* The kernel library builds with CMake and nvcc for every target architecture (no GPU needed):
  a compile error fails here, and so in CI.
* The plugin's host-side test builds and runs against the TensorRT headers that
  $TENSORRT_INCLUDE_DIR points at (skipped, with the reason, otherwise).
* The default architectures follow nvcc's version (plugins/cmake/HandsscaCudaArchitectures.cmake).
* The kernel's source itself runs on the CPU in tests/test_cuda_kernel_emulated.py.
* On a CUDA machine, the kernel runs through ctypes against the reference on random inputs
  and odd sizes, in fp32, fp16 and bf16.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from handssca.ops import selective_scan_ref

pytestmark = pytest.mark.slow  # nvcc and the C++ compiler build the kernel library and the plugin

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
# What the default build gives with nvcc 12.8+ (SASS; 120 also as PTX).
ARCHITECTURES = ["75", "80", "86", "89", "90", "100", "120"]


def _cmake_build(build: Path, *options: str) -> subprocess.CompletedProcess:
    configure = subprocess.run(
        ["cmake", "-S", str(PLUGINS), "-B", str(build), *options], capture_output=True, text=True, timeout=300
    )
    if configure.returncode != 0:
        return configure
    built = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True, timeout=600)
    built.stdout = configure.stdout + built.stdout
    return built


def _nvcc_version() -> tuple[int, int]:
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    text = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    major, minor = re.search(r"release (\d+)\.(\d+)", text).groups()
    return int(major), int(minor)


def fatbin_entries(library: Path) -> set[tuple[str, int]]:
    """("elf" | "ptx", sm) for each code object in the library's .nv_fatbin section (what cuobjdump
    --list-elf/--list-ptx print; the toolkit here has no cuobjdump). Containers: magic 0xBA55ED50,
    u16 version, u16 header size, u64 payload size; entries: u16 kind (1 PTX, 2 ELF), u16, u32
    header size, u64 payload size, ..., u32 sm at byte 28."""
    import struct
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        section = Path(folder) / "fatbin"
        subprocess.run(["objcopy", "-O", "binary", "--only-section=.nv_fatbin", str(library), str(section)], check=True)
        data = section.read_bytes()
    entries, pos = set(), 0
    while pos + 16 <= len(data):
        magic, _, header, size = struct.unpack_from("<IHHQ", data, pos)
        if magic != 0xBA55ED50:
            pos += 8
            continue
        entry, end = pos + header, pos + header + size
        while entry < end:
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            entries.add(({1: "ptx", 2: "elf"}.get(kind, str(kind)), struct.unpack_from("<I", data, entry + 28)[0]))
            entry += entry_header + payload
        pos = end
    return entries


def _need_toolchain():
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("nvcc (the CUDA toolkit) is not installed: the CUDA sources cannot be compiled here")


@pytest.fixture(scope="module")
def kernel_build(tmp_path_factory):
    """The kernel library built with the default architectures, without TensorRT."""
    _need_toolchain()
    build = tmp_path_factory.mktemp("plugins_build")
    env_include = os.environ.pop("TENSORRT_INCLUDE_DIR", None)
    try:
        result = _cmake_build(build, "-DTENSORRT_INCLUDE_DIR=")
    finally:
        if env_include is not None:
            os.environ["TENSORRT_INCLUDE_DIR"] = env_include
    return build, result


def test_the_default_build_has_code_for_every_current_gpu(kernel_build):
    build, result = kernel_build
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    library = build / "selective_scan" / "libhandssca_selective_scan_kernel.so"
    assert library.is_file()
    assert "TensorRT headers not found: building the CUDA kernel libraries only" in result.stdout
    if _nvcc_version() < (12, 8):
        pytest.skip("the SASS list below is what nvcc 12.8+ builds")
    code = fatbin_entries(library)
    assert {arch for kind, arch in code if kind == "elf"} == {int(a) for a in ARCHITECTURES}, code
    assert {arch for kind, arch in code if kind == "ptx"} == {120}  # PTX only for the newest: JIT on later GPUs
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    assert "handsscaSelectiveScanForward" in symbols and "handsscaSelectiveScanArchitectures" in symbols
    import ctypes

    names = ctypes.CDLL(str(library))
    names.handsscaSelectiveScanArchitectures.restype = ctypes.c_char_p
    assert names.handsscaSelectiveScanArchitectures().decode() == "75-real,80-real,86-real,89-real,90-real,100-real,120"


@pytest.mark.parametrize(
    "version, expected",
    [
        ("11.8", "75-real;80-real;86-real;89-real;90"),
        ("12.0", "75-real;80-real;86-real;89-real;90"),  # CUDA 12.0-12.7 (TensorRT 10.0-10.7): no sm_100
        ("12.7", "75-real;80-real;86-real;89-real;90"),
        ("12.8", "75-real;80-real;86-real;89-real;90-real;100-real;120"),
        ("13.0", "75-real;80-real;86-real;89-real;90-real;100-real;120"),
    ],
)
def test_default_architectures_follow_nvccs_version(tmp_path, version, expected):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    script = tmp_path / "archs.cmake"
    script.write_text(
        f"include({PLUGINS / 'cmake' / 'HandsscaCudaArchitectures.cmake'})\n"
        f"handssca_default_cuda_architectures({version} archs)\n"
        'message("${archs}")\n'
    )
    run = subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == expected


def test_a_users_architectures_are_kept(tmp_path):
    _need_toolchain()
    configure = subprocess.run(
        ["cmake", "-S", str(PLUGINS), "-B", str(tmp_path), "-DCMAKE_CUDA_ARCHITECTURES=86", "-DTENSORRT_INCLUDE_DIR="],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert configure.returncode == 0, configure.stderr[-2000:]
    assert "architectures: 86" in configure.stdout
    again = subprocess.run(["cmake", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert "architectures: 86" in again.stdout  # and a reconfigure keeps them


def test_the_kernel_library_loads_through_ctypes_and_refuses_cpu_tensors(kernel_build):
    from handssca.errors import MissingBackend
    from handssca.ops.cuda_kernel import CudaScanKernel

    build, result = kernel_build
    assert result.returncode == 0
    kernel = CudaScanKernel(build / "selective_scan" / "libhandssca_selective_scan_kernel.so")
    u = torch.zeros(1, 4, 8)
    with pytest.raises(MissingBackend, match="needs CUDA tensors, got cpu"):
        kernel(u, u, torch.zeros(4, 2), torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8))


@pytest.mark.parametrize(
    "name, shape, message",
    [
        ("delta", (1, 4, 7), r"delta has shape \(1, 4, 7\), expected \(1, 4, 8\)"),
        ("B", (1, 1, 3, 8), r"B has shape \(1, 1, 3, 8\), expected \(1, 1, 2, 8\)"),
        ("C", (1, 1, 2, 9), r"C has shape \(1, 1, 2, 9\), expected \(1, 1, 2, 8\)"),
        ("D", (5,), r"D has shape \(5,\), expected \(4,\)"),
        ("delta_bias", (3,), r"delta_bias has shape \(3,\), expected \(4,\)"),
        ("A", (3, 2), r"A must have shape \(4, N\)"),
    ],
)
def test_the_kernel_binding_checks_every_shape_before_the_kernel(kernel_build, name, shape, message):
    from handssca.errors import MissingBackend
    from handssca.ops.cuda_kernel import CudaScanKernel

    build, _ = kernel_build
    kernel = CudaScanKernel(build / "selective_scan" / "libhandssca_selective_scan_kernel.so")
    args = {
        "u": torch.zeros(1, 4, 8), "delta": torch.zeros(1, 4, 8), "A": torch.zeros(4, 2),
        "B": torch.zeros(1, 1, 2, 8), "C": torch.zeros(1, 1, 2, 8), "D": torch.zeros(4), "delta_bias": torch.zeros(4),
    }  # fmt: skip
    args[name] = torch.zeros(shape)
    with pytest.raises(MissingBackend, match=message):
        kernel(**args)


def test_the_kernel_binding_wants_one_device(kernel_build):
    from handssca.errors import MissingBackend
    from handssca.ops.cuda_kernel import CudaScanKernel

    build, _ = kernel_build
    kernel = CudaScanKernel(build / "selective_scan" / "libhandssca_selective_scan_kernel.so")
    u, A, BC = torch.zeros(1, 4, 8), torch.zeros(4, 2), torch.zeros(1, 1, 2, 8)
    with pytest.raises(MissingBackend, match="delta is on meta, u on cpu: one device for all"):
        kernel(u, torch.zeros(1, 4, 8, device="meta"), A, BC, BC)


def test_cuda_kernel_backend_dispatch_and_errors(tmp_path, monkeypatch):
    from handssca.errors import MissingBackend
    from handssca.ops import available_backends, scan_backend, use_scan_backend
    from handssca.ops.cuda_kernel import CudaScanKernel

    monkeypatch.delenv("HANDSSCA_CUDA_KERNEL", raising=False)
    assert "cuda-kernel" not in available_backends("cuda")
    with pytest.raises(MissingBackend, match="HANDSSCA_CUDA_KERNEL is not set"):
        with use_scan_backend("cuda-kernel"):
            scan_backend("cuda")
    monkeypatch.setenv("HANDSSCA_CUDA_KERNEL", str(tmp_path / "missing.so"))
    assert "cuda-kernel" not in available_backends("cuda")
    with pytest.raises(MissingBackend, match="missing.so: CUDA kernel library not found"):
        with use_scan_backend("cuda-kernel"):
            scan_backend("cuda")
    with pytest.raises(RuntimeError, match="'cuda-kernel' is not available on cpu"):
        with use_scan_backend("cuda-kernel"):
            scan_backend("cpu")
    not_a_library = tmp_path / "notes.so"
    not_a_library.write_text("not ELF")
    with pytest.raises(MissingBackend, match="notes.so: not a loadable HandSSCA kernel library"):
        CudaScanKernel(not_a_library)


def test_plugin_host_side(tmp_path):
    include = os.environ.get("TENSORRT_INCLUDE_DIR")
    if not include or not (Path(include) / "NvInfer.h").is_file():
        pytest.skip(
            "TENSORRT_INCLUDE_DIR does not point at TensorRT's headers (NvInfer.h); "
            "set it to run the plugin's host-side test"
        )
    _need_toolchain()
    result = _cmake_build(tmp_path, "-DCMAKE_CUDA_ARCHITECTURES=80", f"-DTENSORRT_INCLUDE_DIR={include}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    library = tmp_path / "libhandssca_plugins.so"
    exported = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    names = {line.split()[-1] for line in exported.splitlines() if " T " in line}
    assert names == {"getCreators", "setLoggerFinder"}, names  # everything else is hidden
    run = subprocess.run(
        [str(tmp_path / "selective_scan" / "test_selective_scan_plugin")], capture_output=True, text=True
    )
    print(run.stdout[-2000:])
    assert run.returncode == 0, run.stdout
    assert "0 failure(s)" in run.stdout


def test_triton_loader_loads_the_plugin_library_from_its_own_folder(tmp_path):
    """libhandssca_plugins_triton.so (what Triton's plugins setting opens) asks TensorRT's registry
    to loadLibrary the libhandssca_plugins.so beside it when it is opened. Built here against a
    stand-in libnvinfer whose getPluginRegistry returns nullptr ("\\return the plugin registry",
    NvInferRuntime.h; none here), so opening it must say which library it could not load."""
    include = os.environ.get("TENSORRT_INCLUDE_DIR")
    if not include or not (Path(include) / "NvInfer.h").is_file():
        pytest.skip("TENSORRT_INCLUDE_DIR does not point at TensorRT's headers (NvInfer.h)")
    _need_toolchain()
    stand_in = tmp_path / "nvinfer"
    stand_in.mkdir()
    (stand_in / "registry.cpp").write_text(
        "namespace nvinfer1 { class IPluginRegistry; }\n"
        'extern "C" nvinfer1::IPluginRegistry* getPluginRegistry() noexcept { return nullptr; }\n'
    )
    subprocess.run(["g++", "-shared", "-fPIC", str(stand_in / "registry.cpp"), "-o", str(stand_in / "libnvinfer.so")],
                   check=True)  # fmt: skip
    build = tmp_path / "build"
    result = _cmake_build(build, "-DCMAKE_CUDA_ARCHITECTURES=80", f"-DTENSORRT_INCLUDE_DIR={include}",
                          f"-DTENSORRT_LIB_DIR={stand_in}", "-DHANDSSCA_BUILD_TESTS=OFF")  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    loader = build / "libhandssca_plugins_triton.so"
    exported = subprocess.run(["nm", "-D", "--defined-only", str(loader)], capture_output=True, text=True).stdout
    assert not [line for line in exported.splitlines() if " T " in line]  # it only runs when opened
    opened = subprocess.run(
        [sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(loader)!r})"],
        capture_output=True, text=True, env={**os.environ, "LD_LIBRARY_PATH": str(stand_in)},
    )  # fmt: skip
    assert opened.returncode == 0
    assert f"TensorRT did not load {build / 'libhandssca_plugins.so'}" in opened.stderr


# ------------------------------------------------------------------------------------------------
# On a GPU


@pytest.fixture(scope="module")
def gpu_kernel(kernel_build):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU here: the kernel compiles (above) but cannot run")
    build, result = kernel_build
    assert result.returncode == 0
    from handssca.ops.cuda_kernel import LIBRARY_ENV, CudaScanKernel

    built = build / "selective_scan" / "libhandssca_selective_scan_kernel.so"
    return CudaScanKernel(os.environ.get(LIBRARY_ENV) or built)


SHAPES = [
    (1, 4, 1, 1, 1),
    (3, 8, 7, 5, 4),
    (2, 6, 1000, 16, 2),
    (1, 4, 2049, 16, 1),
    (2, 8, 4097, 256, 4),
    (1, 2048, 1024, 16, 4),  # the model's spatial scan
    (1, 128, 8192, 16, 4),  # the model's channel scan
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 2e-5), (torch.float16, 2e-2), (torch.bfloat16, 8e-2)])
@pytest.mark.parametrize("softplus", [True, False])
def test_cuda_kernel_matches_the_reference(gpu_kernel, rng, shape, dtype, tolerance, softplus):
    from handssca.scan_bench import make_scan_inputs

    batch, dim, length, dstate, groups = shape
    x = make_scan_inputs(rng, batch, dim, length, dstate, groups, with_z=False, softplus=softplus)
    t = {k: torch.from_numpy(v).cuda() for k, v in x.items() if v is not None}
    for k in ("u", "delta", "B", "C"):
        t[k] = t[k].to(dtype)
    got = gpu_kernel(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["delta_bias"], softplus)
    expected = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], None, t["delta_bias"], softplus)
    assert got.dtype == dtype
    scale = expected.float().abs().max().item()
    torch.testing.assert_close(got.float(), expected.float(), rtol=tolerance, atol=tolerance * max(scale, 1.0))


def test_the_model_runs_on_our_cuda_kernel_like_the_reference(gpu_kernel, monkeypatch):
    """PyTorch with the scans on our kernel (the backend the benchmark times) matches the reference."""
    from handssca.models import HandSSCA, HandSSCAConfig
    from handssca.ops import scan_backend, use_scan_backend

    monkeypatch.setenv("HANDSSCA_CUDA_KERNEL", str(gpu_kernel.path))
    torch.manual_seed(0)
    net = HandSSCA(HandSSCAConfig(input_size=96, resnet_width=8, fpn_channels=32, mano_hidden=(64,))).cuda().eval()
    image = torch.randn(3, 3, 96, 96, device="cuda")
    with torch.inference_mode():
        with use_scan_backend("cuda-kernel"):
            assert scan_backend("cuda") == "cuda-kernel"
            ours = net(image)
        with use_scan_backend("reference"):
            reference = net(image)
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_the_kernel_runs_on_a_gpu_that_is_not_the_current_one(gpu_kernel, rng):
    from handssca.scan_bench import make_scan_inputs

    x = make_scan_inputs(rng, 1, 4, 100, 4, 1, with_z=False)
    t = {k: torch.from_numpy(v).to("cuda:1") for k, v in x.items() if v is not None}
    assert torch.cuda.current_device() == 0
    got = gpu_kernel(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], t["delta_bias"], True)
    expected = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], None, t["delta_bias"], True)
    torch.testing.assert_close(got, expected, rtol=2e-5, atol=2e-5)
