"""benchmarks/gpu_check.py: the parts that run without a GPU (the GPU parts run where one is lent)."""

from __future__ import annotations

import pytest
import torch

from conftest import TINY


@pytest.fixture(scope="module")
def gpu_check():
    from conftest import load_gpu_check

    return load_gpu_check()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_without_a_gpu_it_checks_nothing_and_says_so(gpu_check, capsys):
    assert gpu_check.main([]) == 1
    assert "no CUDA GPU on this machine: nothing was checked" in capsys.readouterr().out


def test_without_cmake_it_builds_the_kernel_with_nvcc(sm90_kernel_library):
    from handssca.ops.cuda_kernel import CudaScanKernel

    library, how = sm90_kernel_library
    assert how == "nvcc -arch=sm_90 (no cmake here)"
    assert CudaScanKernel(library).architectures == "90"


def test_the_table_names_the_machine_and_every_row(gpu_check):
    report = {
        "environment": {"date": "2026-11-24", "gpu": "NVIDIA H100", "cuda": "13.0", "torch": "2.11"},
        "build": "cmake, CMAKE_CUDA_ARCHITECTURES=90",
        "tests": {"summary": "97 passed, 2 skipped in 80.0s"},
        "scans": [
            {"scan": "channel", "batch": 1, "impl": "ours", "median_ms": 0.5, "p90_ms": 0.6, "max_rel_diff": 1e-6}
        ],
        "model": [
            {"batch": 32, "precision": "fp16", "scan": "cuda-kernel", "median_ms": 12.0, "images_per_s": 2666.7,
             "max_rel_diff_vs_fp32_reference": 2e-3}
        ],
    }  # fmt: skip
    table = gpu_check.format_check_table(report)
    assert "NVIDIA H100 (CUDA 13.0, torch 2.11)" in table and "97 passed" in table
    assert "channel      1  ours" in table and "fp16      32  cuda-kernel" in table and "2666.7" in table


@pytest.fixture
def on_the_cpu(monkeypatch):
    """The check's GPU steps on the CPU: .cuda() a no-op and every timing a plain one."""
    import handssca.measure as measure

    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *args, **kwargs: self)
    plain = measure._time_call
    monkeypatch.setattr(measure, "_time_call", lambda run, cuda: plain(run, False))


def test_the_scans_are_checked_at_the_models_shapes(gpu_check, on_the_cpu):
    from handssca.models import HandSSCAConfig
    from handssca.ops import selective_scan_ref

    def kernel(u, delta, A, B, C, D, delta_bias, softplus, segments=None):  # a stand-in for CudaScanKernel
        return selective_scan_ref(u, delta, A, B, C, D, None, delta_bias, softplus)

    config = HandSSCAConfig(**TINY)
    rows = gpu_check.check_scans(kernel, config, [1, 2], 2)
    assert [(r["scan"], r["batch"], r["impl"]) for r in rows] == [
        (scan, batch, impl)
        for scan in ("spatial", "channel")
        for batch in (1, 2)
        for impl in ("ours", "ours-unsplit", "reference")
    ]
    for row in rows:
        assert row["median_ms"] > 0 and "samples_ms" not in row and row["max_rel_diff"] < 1e-6


def test_the_model_is_checked_on_every_scan_backend(gpu_check, on_the_cpu):
    from handssca.models import HandSSCAConfig

    rows = gpu_check.check_model(HandSSCAConfig(**TINY), [2], ("fp32",), 2)
    assert [(r["batch"], r["precision"], r["scan"]) for r in rows] == [(2, "fp32", "reference")]
    (row,) = rows
    assert row["images_per_s"] == 2e3 / row["median_ms"] and "throughput_img_s" not in row and "samples_ms" not in row
    assert set(row["parity"]) == {"heatmaps", "joints_2d", "pose", "shape", "camera"}
    assert row["max_rel_diff_vs_fp32_reference"] == max(row["parity"].values()) < 1e-6
