"""``handssca doctor``: what this machine can run, one line per item, each problem with its fix.

What a user reads when a path does not work: the CPU scan kernel, ONNX Runtime's providers,
PyTorch and its CUDA devices, mamba-ssm, our CUDA kernel library (and whether its architectures
cover this GPU), TensorRT, pycuda, whether the plugin library loads and registers
HandSSCASelectiveScan, and the serving path (tritonclient, Triton's environment). Imports each
dependency only inside its own check, so it answers on a deployment box without torch as well as
on a GPU machine. An item is "ok", "missing" (an
optional part that is not installed or built here: not an error) or "broken" (present but not
working); the command fails only on broken items.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_KERNEL_LIBRARY = Path("build/plugins/selective_scan/libhandssca_selective_scan_kernel.so")
DEFAULT_PLUGIN_LIBRARY = Path("build/plugins/libhandssca_plugins.so")
BUILD_PLUGINS = "cmake -S plugins -B build/plugins && cmake --build build/plugins -j (plugins/README.md)"


@dataclass
class Finding:
    item: str
    status: str  # "ok" | "missing" | "broken"
    detail: str
    fix: str = ""


def cpu() -> Finding:
    from handssca.measure import cpu_info

    info = cpu_info()
    features = " ".join(info["features"]) or "instruction sets unknown"
    return Finding("cpu", "ok", f"{info['name']}, {info['cores']} cores, {features}")


def cpu_scan_kernel() -> Finding:
    try:
        from handssca.runtime import kernel_info

        info = kernel_info()
    except Exception as exc:  # an extension that fails to import is the whole CPU path failing
        reason = str(exc).splitlines()[0]
        return Finding("cpu scan kernel", "broken", reason, "pip install -e . (rebuilds it)")
    threads = f"{info['max_threads']} threads" + (" (OpenMP)" if info.get("openmp") else "")
    return Finding("cpu scan kernel", "ok", f"{info['isa']} code path, {threads}")


def onnx_runtime() -> Finding:
    try:
        import onnxruntime
    except ImportError:
        return Finding("onnxruntime", "broken", "not installed", "pip install onnxruntime (or onnxruntime-gpu)")
    providers = onnxruntime.get_available_providers()
    return Finding("onnxruntime", "ok", f"{onnxruntime.__version__}, providers {', '.join(providers)}")


def torch_devices() -> list[Finding]:
    try:
        import torch
    except ImportError:
        return [
            Finding(
                "torch",
                "missing",
                "not installed (not needed to run ONNX or TensorRT models)",
                "pip install torch==2.13.0 && pip install -e '.[train]' for training, export, eval",
            )
        ]
    found = [Finding("torch", "ok", f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}")]
    if not torch.cuda.is_available():
        fix = "" if torch.version.cuda else "a CUDA build of torch for GPU work (this one is CPU-only)"
        found.append(Finding("cuda devices", "missing", "none visible to torch", fix))
        return found
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        name = torch.cuda.get_device_name(index)
        found.append(Finding(f"cuda device {index}", "ok", f"{name}, compute capability {major}.{minor}"))
    return found


def mamba_ssm() -> Finding:
    try:
        from handssca.ops import available_backends

        if "mamba-ssm" in available_backends("cuda"):
            return Finding("mamba-ssm", "ok", "its CUDA scan kernel is importable")
    except ImportError:
        return Finding("mamba-ssm", "missing", "needs torch")
    return Finding(
        "mamba-ssm",
        "missing",
        "not importable (optional: a faster PyTorch scan on GPUs)",
        "pip install -e '.[cuda]' on a CUDA machine",
    )


def architecture_covers(architectures: str, capability: str) -> bool | None:
    """Whether a library built for ``architectures`` ("75-real,80-real,...,120" as CMake lists them)
    runs on a GPU of compute capability ``capability`` ("9.0"): machine code for it, or PTX for an
    older one that the driver compiles at load. None when the list cannot be read."""
    target = int(capability.replace(".", ""))
    machine, ptx = set(), set()
    for entry in filter(None, re.split(r"[,;\s]+", architectures)):
        match = re.fullmatch(r"(\d+)a?(-real|-virtual)?", entry)
        if match is None:
            return None
        number, kind = int(match.group(1)), match.group(2)
        if kind != "-virtual":
            machine.add(number)
        if kind != "-real":
            ptx.add(number)
    if not machine and not ptx:
        return None
    return target in machine or any(p <= target for p in ptx)


def cuda_kernel_library(gpu_capabilities: list[str]) -> Finding:
    path = Path(os.environ.get("HANDSSCA_CUDA_KERNEL") or DEFAULT_KERNEL_LIBRARY)
    if not path.is_file():
        return Finding(
            "cuda kernel library",
            "missing",
            f"{path} not found (PyTorch's cuda-kernel scan backend)",
            f"{BUILD_PLUGINS}, then HANDSSCA_CUDA_KERNEL={DEFAULT_KERNEL_LIBRARY}",
        )
    try:
        from handssca.errors import MissingBackend
        from handssca.ops.cuda_kernel import CudaScanKernel
    except ImportError:
        return Finding("cuda kernel library", "missing", f"{path} is built, but torch is not installed to use it")
    try:
        kernel = CudaScanKernel(path)
    except MissingBackend as exc:
        return Finding("cuda kernel library", "broken", str(exc), f"rebuild it: {BUILD_PLUGINS}")
    uncovered = [c for c in gpu_capabilities if architecture_covers(kernel.architectures, c) is False]
    if uncovered:
        return Finding(
            "cuda kernel library",
            "broken",
            f"{path} is built for {kernel.architectures}, not for this GPU (compute capability {', '.join(uncovered)})",
            f"rebuild with -DCMAKE_CUDA_ARCHITECTURES={uncovered[0].replace('.', '')}",
        )
    return Finding("cuda kernel library", "ok", f"{path}, architectures {kernel.architectures}")


def tensorrt_and_plugin() -> list[Finding]:
    from handssca.errors import MissingBackend
    from handssca.runtime.backends.tensorrt_libs import PLUGIN_CREATOR, PLUGIN_ENV, load_plugin_library

    plugin = Path(os.environ.get(PLUGIN_ENV) or DEFAULT_PLUGIN_LIBRARY)
    try:
        import tensorrt as trt
    except ImportError:
        where = f"; the plugin library {plugin} is {'built' if plugin.is_file() else 'not built'}"
        return [
            Finding(
                "tensorrt",
                "missing",
                "not installed" + where,
                "on an NVIDIA GPU machine: pip install 'handssca[trt]' (NVIDIA's package index)",
            )
        ]
    found = [Finding("tensorrt", "ok", trt.__version__)]
    if not plugin.is_file():
        found.append(
            Finding(
                "tensorrt plugin",
                "missing",
                f"{plugin} not found",
                f"{BUILD_PLUGINS} -DTENSORRT_INCLUDE_DIR=<folder with NvInfer.h>, or set {PLUGIN_ENV}",
            )
        )
        return found
    try:
        load_plugin_library(trt, plugin)
    except MissingBackend as exc:
        fix = f"rebuild it against TensorRT {trt.__version__}"
        found.append(Finding("tensorrt plugin", "broken", str(exc), fix))
        return found
    if trt.get_plugin_registry().get_creator(*PLUGIN_CREATOR) is None:
        found.append(
            Finding(
                "tensorrt plugin",
                "broken",
                f"{plugin} loads but registers no {PLUGIN_CREATOR[0]}",
                "rebuild plugins/ from this checkout",
            )
        )
        return found
    found.append(Finding("tensorrt plugin", "ok", f"{plugin} loads and registers {PLUGIN_CREATOR[0]} v1"))
    return found


def pycuda() -> Finding:
    try:
        import pycuda.driver as cuda
    except ImportError:
        return Finding(
            "pycuda", "missing", "not installed (TensorRT engines run through it)", "pip install 'handssca[trt]'"
        )
    try:
        cuda.init()
        count = cuda.Device.count()
    except cuda.Error as exc:
        return Finding("pycuda", "broken", f"CUDA driver unusable: {exc}", "install or repair the NVIDIA driver")
    return Finding("pycuda", "ok" if count else "missing", f"{count} device(s)")


def triton_server() -> list[Finding]:
    """The serving path: tritonclient here, and a Triton server environment (``serve setup``)."""
    try:
        import tritonclient  # noqa: F401
    except ImportError:
        found = [
            Finding("tritonclient", "missing", "not installed (the serving client)", "pip install 'handssca[serve]'")
        ]
    else:
        found = [Finding("tritonclient", "ok", "HTTP and gRPC clients, Triton's config definitions")]
    from handssca.errors import MissingBackend, ServingError
    from handssca.serving.server import ServerEnvironment

    try:
        environment = ServerEnvironment.find()
    except (ServingError, MissingBackend) as exc:
        if not isinstance(exc, MissingBackend):  # one made here, but damaged
            found.append(Finding("triton server", "broken", str(exc), "handssca serve setup"))
            return found
        found.append(
            Finding("triton server", "missing", str(exc).split(":", 1)[0] + ": not set up", "handssca serve setup")
        )
        return found
    if not environment.binary.is_file():
        found.append(Finding("triton server", "broken", f"{environment.binary} is missing", "handssca serve setup"))
    else:
        found.append(Finding("triton server", "ok", str(environment.binary)))
    return found


def diagnose() -> list[Finding]:
    findings = [cpu(), cpu_scan_kernel(), onnx_runtime(), *torch_devices(), mamba_ssm()]
    capabilities = [f.detail.rsplit(" ", 1)[1] for f in findings if f.item.startswith("cuda device ")]
    findings.append(cuda_kernel_library(capabilities))
    findings += tensorrt_and_plugin()
    findings.append(pycuda())
    findings += triton_server()
    return findings


def format_findings(findings: list[Finding]) -> str:
    lines = []
    for f in findings:
        line = f"{f.status:<8}{f.item:<22}{f.detail}"
        lines.append(line + (f"\n{'':<30}fix: {f.fix}" if f.fix and f.status != "ok" else ""))
    return "\n".join(lines)


def as_json(findings: list[Finding]) -> list[dict]:
    return [asdict(f) for f in findings]


def doctor_report(json_output: bool = False) -> tuple[str, bool]:
    """``handssca doctor``: (the findings as a table or JSON, whether anything is broken)."""
    findings = diagnose()
    text = json.dumps(as_json(findings), indent=2) if json_output else format_findings(findings)
    return text, any(f.status == "broken" for f in findings)
