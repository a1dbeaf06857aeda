"""The CUDA scan kernel's real source, compiled with g++ against the CUDA emulation
(tests/cuda_emulation), run against the reference on the CPU.

``emulated_source`` changes nothing in the .cu but its ``<<<>>>`` launch; ``build_library``
compiles it with the emulation into a shared library with the kernel's own C entry point;
``run_emulated`` calls that entry point in a subprocess on guard-paged buffers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
KERNEL_SOURCE = ROOT / "plugins" / "selective_scan" / "selectiveScanKernel.cu"
EMULATION = Path(__file__).resolve().parent / "cuda_emulation"
LAUNCH = re.compile(r"([A-Za-z_][\w:]*(?:<[^<>;]*>)?)\s*<<<([^;]*?)>>>\s*\(([^;]*)\);")
SCHEDULES = {"in-order": 0, "reverse": 1, "random": 2, "lagging-warp": 3}
DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def cuda_include_dir() -> Path | None:
    """The CUDA toolkit's headers (for cuda_runtime_api.h and the fp16/bf16 types)."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(os.path.realpath(nvcc)).parent.parent))
    candidates.append("/usr/local/cuda")
    for base in filter(None, candidates):
        for include in (Path(base) / "include", Path(base) / "targets" / "x86_64-linux" / "include"):
            if (include / "cuda_fp16.h").is_file():
                return include
    return None


def emulated_source(text: str) -> str:
    """The kernel source with each ``k<<<grid, block, shared, stream>>>(args);`` as an emulated launch."""
    rewritten, count = LAUNCH.subn(r"::cuda_emu::launcher(\1, \2)(\3);", text)
    assert count >= 1, "no <<<>>> launch found in the kernel source"
    return rewritten


def build_library(source_text: str, directory: Path, name: str = "kernel") -> Path:
    """Compiles the (rewritten) kernel source with the emulation into ``directory/lib<name>.so``."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    include = cuda_include_dir()
    if include is None:
        pytest.skip("the CUDA toolkit's headers (cuda_fp16.h) are not installed")
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / f"{name}.cpp"
    source.write_text(emulated_source(source_text))
    library = directory / f"lib{name}.so"
    command = [
        # Standard C++: strict aliasing on (the kernel moves bytes between types with memcpy only).
        "g++", "-std=c++17", "-O2", "-fPIC", "-shared", "-Wstrict-aliasing=1", "-Werror=strict-aliasing",
        "-U_FORTIFY_SOURCE", "-Wno-attributes", "-I", str(KERNEL_SOURCE.parent), "-I", str(EMULATION),
        "-I", str(include),
        "-include", str(EMULATION / "cuda_emulation.h"), str(source), str(EMULATION / "cuda_emulation.cpp"),
        "-o", str(library),
    ]  # fmt: skip
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-4000:]
    return library


def to_words(array: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """fp32 values as the kernel's input type: float32, or the 16-bit words of fp16/bf16."""
    tensor = torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(dtype)
    return tensor.numpy() if dtype == torch.float32 else tensor.view(torch.int16).numpy().view(np.uint16)


def from_words(words: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.float32:
        return torch.from_numpy(words.astype(np.float32))
    return torch.from_numpy(words.view(np.int16).copy()).view(dtype)


def run_emulated(
    library: Path,
    inputs: dict,
    dtype: torch.dtype,
    softplus: bool,
    tmp_path: Path,
    schedule: str = "in-order",
    lagging_warp: int = -1,
    seed: int = 0,
    layout: str = "tail",
    segments: int = 0,
) -> dict:
    """Runs the kernel once in a subprocess: {"status", "message", "out" (a tensor), "counters"}."""
    case = {name: to_words(inputs[name], dtype) for name in ("u", "delta", "B", "C")}
    for name in ("A", "D", "delta_bias"):
        if inputs.get(name) is not None:
            case[name] = np.ascontiguousarray(inputs[name], np.float32)
    case.update(
        dtype=DTYPES[dtype], softplus=int(softplus), schedule=SCHEDULES[schedule], lagging_warp=lagging_warp,
        seed=seed, layout=layout, segments=segments,
    )  # fmt: skip
    case_path, result_path = tmp_path / "case.npz", tmp_path / "result.npz"
    np.savez(case_path, **case)
    run = subprocess.run(
        [sys.executable, str(EMULATION / "run_scan.py"), str(library), str(case_path), str(result_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (
        f"the emulated kernel's process died (exit {run.returncode}; -11 is a fault: a read or write past a "
        f"buffer): {run.stderr[-2000:]}"
    )
    result = dict(np.load(result_path))
    result["out"] = from_words(result["out"], dtype)
    result["message"] = str(result["message"])
    return result


def reference(inputs: dict, dtype: torch.dtype, softplus: bool) -> torch.Tensor:
    """selective_scan_ref in float64 on the inputs as the kernel sees them (rounded to ``dtype``)."""
    from handssca.ops import selective_scan_ref

    t = {}
    for name, value in inputs.items():
        if value is None:
            continue
        tensor = torch.from_numpy(np.asarray(value, np.float32))
        if name in ("u", "delta", "B", "C"):
            tensor = tensor.to(dtype)
        t[name] = tensor.double()
    return selective_scan_ref(
        t["u"], t["delta"], t["A"], t["B"], t["C"], t.get("D"), None, t.get("delta_bias"), softplus
    )
