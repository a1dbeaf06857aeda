"""The CUDA selective-scan kernel and its TensorRT plugin (plugins/).

* The kernel library builds with CMake and nvcc for every target architecture (no GPU needed):
  a compile error fails here, and so in CI.
* The plugin's host-side test builds and runs against the TensorRT headers that
  $TENSORRT_INCLUDE_DIR points at (skipped, with the reason, otherwise).
* The kernel's chunked block scan is replayed in numpy, step for step (per-thread maps, warp
  shuffles, warp totals, carry between chunks), on small block sizes, against the reference.
* On a CUDA machine, the kernel runs through ctypes against the reference on random inputs
  and odd sizes, in fp32, fp16 and bf16.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from handssca.ops import selective_scan_ref

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
ARCHITECTURES = "80;86;89;90;100;120"


def _cmake_build(build: Path, *options: str) -> subprocess.CompletedProcess:
    configure = subprocess.run(
        ["cmake", "-S", str(PLUGINS), "-B", str(build), *options], capture_output=True, text=True, timeout=300
    )
    if configure.returncode != 0:
        return configure
    built = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True, timeout=600)
    built.stdout = configure.stdout + built.stdout
    return built


def _need_toolchain():
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if shutil.which("nvcc") is None and not Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("nvcc (the CUDA toolkit) is not installed: the CUDA sources cannot be compiled here")


@pytest.fixture(scope="module")
def kernel_build(tmp_path_factory):
    """The kernel library built for every target architecture, without TensorRT."""
    _need_toolchain()
    build = tmp_path_factory.mktemp("plugins_build")
    env_include = os.environ.pop("TENSORRT_INCLUDE_DIR", None)
    try:
        result = _cmake_build(build, f"-DCMAKE_CUDA_ARCHITECTURES={ARCHITECTURES}", "-DTENSORRT_INCLUDE_DIR=")
    finally:
        if env_include is not None:
            os.environ["TENSORRT_INCLUDE_DIR"] = env_include
    return build, result


def test_cuda_kernel_compiles_for_every_architecture(kernel_build):
    build, result = kernel_build
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    library = build / "selective_scan" / "libhandssca_selective_scan_kernel.so"
    assert library.is_file()
    assert "TensorRT headers not found: building the CUDA kernel libraries only" in result.stdout
    if shutil.which("cuobjdump"):
        listing = subprocess.run(["cuobjdump", "--list-elf", str(library)], capture_output=True, text=True).stdout
        for arch in ARCHITECTURES.split(";"):
            assert f"sm_{arch}" in listing, f"no code for sm_{arch}"
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True).stdout
    assert "handsscaSelectiveScanForward" in symbols


def test_the_kernel_library_loads_through_ctypes_and_refuses_cpu_tensors(kernel_build):
    from handssca.ops.cuda_kernel import CudaKernelError, CudaScanKernel

    build, result = kernel_build
    assert result.returncode == 0
    kernel = CudaScanKernel(build / "selective_scan" / "libhandssca_selective_scan_kernel.so")
    u = torch.zeros(1, 4, 8)
    with pytest.raises(CudaKernelError, match="needs CUDA tensors, got cpu"):
        kernel(u, u, torch.zeros(4, 2), torch.zeros(1, 1, 2, 8), torch.zeros(1, 1, 2, 8))


def test_cuda_kernel_backend_dispatch_and_errors(tmp_path, monkeypatch):
    from handssca.ops import available_backends, scan_backend, use_scan_backend
    from handssca.ops.cuda_kernel import CudaKernelError, CudaScanKernel

    monkeypatch.delenv("HANDSSCA_CUDA_KERNEL", raising=False)
    assert "cuda-kernel" not in available_backends("cuda")
    with pytest.raises(CudaKernelError, match="HANDSSCA_CUDA_KERNEL is not set"):
        with use_scan_backend("cuda-kernel"):
            scan_backend("cuda")
    monkeypatch.setenv("HANDSSCA_CUDA_KERNEL", str(tmp_path / "missing.so"))
    assert "cuda-kernel" not in available_backends("cuda")
    with pytest.raises(CudaKernelError, match="missing.so: CUDA kernel library not found"):
        with use_scan_backend("cuda-kernel"):
            scan_backend("cuda")
    with pytest.raises(RuntimeError, match="'cuda-kernel' is not available on cpu"):
        with use_scan_backend("cuda-kernel"):
            scan_backend("cpu")
    not_a_library = tmp_path / "notes.so"
    not_a_library.write_text("not ELF")
    with pytest.raises(CudaKernelError, match="notes.so: not a loadable HandSSCA kernel library"):
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


# ------------------------------------------------------------------------------------------------
# The kernel's algorithm, replayed in numpy


def emulate_kernel(u, delta, A, B, C, D, delta_bias, softplus, threads=8, items=3, warp=4):
    """The CUDA kernel's block scan with small blocks: per (batch, channel) block, chunks of
    threads * items steps; per state n, each thread composes its steps' affine maps, warps scan
    them with shuffles (Hillis-Steele), warp totals give each warp's prefix, the chunk's carry
    starts the replay, and the last thread's state carries into the next chunk."""
    batch, dim, length = u.shape
    dstate, groups = A.shape[1], B.shape[1]
    chunk = threads * items
    out = np.zeros_like(u)
    lane = np.arange(threads) % warp
    warp_of = np.arange(threads) // warp
    for b in range(batch):
        for d in range(dim):
            g = d // (dim // groups)
            carry = np.zeros(dstate)
            for start in range(0, length, chunk):
                pos = start + np.arange(chunk).reshape(threads, items)
                valid = pos < length
                p = np.minimum(pos, length - 1)
                raw = delta[b, d, p] + delta_bias[d]
                dt = np.where(raw <= 20, np.log1p(np.exp(np.minimum(raw, 20))), raw) if softplus else raw
                dt = np.where(valid, dt, 0.0)
                uu = np.where(valid, u[b, d, p], 0.0)
                y = np.zeros((threads, items))
                for n in range(dstate):
                    a = np.where(valid, np.exp2(dt * A[d, n] * np.log2(np.e)), 1.0)
                    bb = np.where(valid, dt * uu * B[b, g, n, p], 0.0)
                    mine_a, mine_b = np.ones(threads), np.zeros(threads)
                    for i in range(items):
                        mine_a, mine_b = a[:, i] * mine_a, a[:, i] * mine_b + bb[:, i]
                    inc_a, inc_b = mine_a.copy(), mine_b.copy()
                    offset = 1
                    while offset < warp:
                        src = np.arange(threads) - offset
                        take = lane >= offset
                        prev_a, prev_b = inc_a[np.maximum(src, 0)], inc_b[np.maximum(src, 0)]
                        inc_a, inc_b = (
                            np.where(take, inc_a * prev_a, inc_a),
                            np.where(take, inc_a * prev_b + inc_b, inc_b),
                        )
                        offset *= 2
                    totals = [(inc_a[w * warp + warp - 1], inc_b[w * warp + warp - 1]) for w in range(threads // warp)]
                    shifted = np.maximum(np.arange(threads) - 1, 0)
                    exc_a = np.where(lane == 0, 1.0, inc_a[shifted])
                    exc_b = np.where(lane == 0, 0.0, inc_b[shifted])
                    h_last = None
                    for t in range(threads):
                        before_a, before_b = 1.0, 0.0
                        for w in range(warp_of[t]):
                            before_a, before_b = totals[w][0] * before_a, totals[w][0] * before_b + totals[w][1]
                        pre_a, pre_b = exc_a[t] * before_a, exc_a[t] * before_b + exc_b[t]
                        h = pre_a * carry[n] + pre_b
                        for i in range(items):
                            h = a[t, i] * h + bb[t, i]
                            if valid[t, i]:
                                y[t, i] += h * C[b, g, n, p[t, i]]
                        h_last = h
                    carry[n] = h_last
                result = y + D[d] * uu
                out[b, d, pos[valid]] = result[valid]
    return out


@pytest.mark.parametrize(
    "batch, dim, length, dstate, groups, softplus",
    [(2, 3, 37, 3, 1, True), (1, 4, 24, 2, 2, True), (1, 2, 5, 1, 1, False), (1, 4, 50, 2, 4, True)],
)
def test_the_kernels_block_scan_algorithm_matches_the_reference(rng, batch, dim, length, dstate, groups, softplus):
    from scan_inputs import make_scan_inputs

    x = make_scan_inputs(rng, batch, dim, length, dstate, groups, np.float64, with_z=False, softplus=softplus)
    x["delta_bias"][0] = 25.0  # past softplus's threshold
    got = emulate_kernel(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"], softplus)
    t = {k: torch.from_numpy(v) for k, v in x.items() if v is not None}
    expected = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], t["D"], None, t["delta_bias"], softplus)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-10, atol=1e-10)


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
    from scan_inputs import make_scan_inputs

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
