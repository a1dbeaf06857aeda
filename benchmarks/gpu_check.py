"""The one-call GPU check, for any CUDA machine with torch and the CUDA toolkit:

    python benchmarks/gpu_check.py [--out DIR] [--runs 30]

1. builds the kernel library for this GPU (CMake from plugins/, or nvcc directly without CMake);
2. runs the GPU tests against it (tests/test_plugins.py, tests/test_cuda_kernel_emulated.py);
3. times the selective scan at the model's shapes, batch 1 and 32: our kernel with its own plan
   and unsplit, the torch reference, and mamba-ssm's kernel where installed, with parity;
4. runs the whole model (the paper's configuration) in PyTorch with the scans on our kernel, on
   the reference scan, and on mamba-ssm where installed, batch 1 and 32, fp32 and fp16: latency
   (CUDA events), throughput, and the largest difference from the fp32 reference-scan model;
and writes check.json and table.txt to DIR (benchmarks/results/gpu_check/<gpu> by default).
Installs the package from this checkout first when it is not importable (no downloads).
Without a CUDA GPU it says so and exits 1: nothing was checked.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCAN_SHAPES = {"spatial": (2048, 1024, 16, 4), "channel": (128, 8192, 16, 4)}  # (dim, L, N, G) of the model


def ensure_package() -> None:
    if importlib.util.find_spec("handssca") is None or importlib.util.find_spec("handssca.runtime") is None:
        print("installing handssca from this checkout (no dependencies, no downloads)")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(ROOT)],
            check=True,
        )
        importlib.invalidate_caches()


def build_kernel(build: Path, arch: str) -> tuple[Path, str]:
    """The kernel library for ``arch`` (e.g. "90"): (path, how it was built)."""
    library = build / "selective_scan" / "libhandssca_selective_scan_kernel.so"
    if shutil.which("cmake"):
        configure = ["cmake", "-S", str(ROOT / "plugins"), "-B", str(build), f"-DCMAKE_CUDA_ARCHITECTURES={arch}"]
        subprocess.run([*configure, "-DTENSORRT_INCLUDE_DIR="], check=True, capture_output=True, text=True)
        subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)], check=True)
        return library, f"cmake, CMAKE_CUDA_ARCHITECTURES={arch}"
    library.parent.mkdir(parents=True, exist_ok=True)
    source = ROOT / "plugins" / "selective_scan" / "selectiveScanKernel.cu"
    command = [
        "nvcc", "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", f"-arch=sm_{arch}",
        f'-DHANDSSCA_CUDA_ARCHITECTURES="{arch}"', str(source), "-o", str(library),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    return library, f"nvcc -arch=sm_{arch} (no cmake here)"


def run_gpu_tests(library: Path) -> dict:
    tests = ["tests/test_plugins.py", "tests/test_cuda_kernel_emulated.py"]
    env = {**os.environ, "HANDSSCA_CUDA_KERNEL": str(library)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    summary = (run.stdout.strip().splitlines() or [""])[-1]
    counts = {key: int(n) for n, key in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    return {"command": "pytest -q " + " ".join(tests), "exit": run.returncode, "summary": summary, **counts,
            "tail": run.stdout[-4000:]}  # fmt: skip


def relative_difference(got, expected) -> float:
    return float((got.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-12))


def check_scans(kernel, batches, runs) -> list[dict]:
    import numpy as np
    import torch

    from handssca.measure import time_runner
    from handssca.ops import available_backends, selective_scan_ref
    from handssca.runtime.scan_node import make_scan_inputs

    mamba = None
    if "mamba-ssm" in available_backends("cuda"):
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as mamba

    rows = []
    for name, (dim, length, dstate, groups) in SCAN_SHAPES.items():
        for batch in batches:
            x = make_scan_inputs(np.random.default_rng(0), batch, dim, length, dstate, groups, with_z=False)
            x = {k: torch.from_numpy(v).cuda() for k, v in x.items() if v is not None}
            ordered = [x[k] for k in ("u", "delta", "A", "B", "C", "D")]
            with torch.inference_mode():
                expected = selective_scan_ref(*ordered, None, x["delta_bias"], True)
                kernel_args = (*ordered, x["delta_bias"], True)
                calls = {
                    "ours": functools.partial(kernel, *kernel_args),
                    "ours-unsplit": functools.partial(kernel, *kernel_args, segments=1),
                    "reference": functools.partial(selective_scan_ref, *ordered, None, x["delta_bias"], True),
                }
                if mamba is not None:
                    calls["mamba-ssm"] = functools.partial(mamba, *ordered, None, x["delta_bias"], True)
                for label, call in calls.items():
                    timing = time_runner(call, 2, runs if label != "reference" else max(3, runs // 10), cuda=True)
                    timing.pop("samples_ms")
                    rows.append({"scan": name, "batch": batch, "impl": label, **timing,
                                 "max_rel_diff": relative_difference(call(), expected)})  # fmt: skip
    return rows


def check_model(batches, precisions, runs) -> list[dict]:
    import torch

    from handssca.measure import time_runner
    from handssca.models import HandSSCA, HandSSCAConfig
    from handssca.ops import available_backends, use_scan_backend

    torch.manual_seed(0)
    fp32 = HandSSCA(HandSSCAConfig()).cuda().eval()
    backends = [b for b in ("cuda-kernel", "mamba-ssm") if b in available_backends("cuda")] + ["reference"]
    rows = []
    for batch in batches:
        image = torch.randn(batch, 3, fp32.config.input_size, fp32.config.input_size, device="cuda")
        with torch.inference_mode(), use_scan_backend("reference"):
            expected = fp32(image)
        for precision in precisions:
            net = fp32 if precision == "fp32" else HandSSCA(fp32.config).cuda().eval().half()
            if net is not fp32:
                net.load_state_dict(fp32.state_dict())
            cast = image if precision == "fp32" else image.half()
            for backend in backends:
                with torch.inference_mode(), use_scan_backend(backend):
                    timing = time_runner(
                        functools.partial(net, cast), 3, runs if backend != "reference" else 3, cuda=True
                    )
                    outputs = net(cast)
                timing.pop("samples_ms")
                parity = {key: relative_difference(outputs[key], expected[key]) for key in expected}
                rows.append({"batch": batch, "precision": precision, "scan": backend, **timing,
                             "images_per_s": batch / timing["median_ms"] * 1e3,
                             "max_rel_diff_vs_fp32_reference": max(parity.values()), "parity": parity})  # fmt: skip
    return rows


def format_check_table(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"GPU check, {env['date']}: {env.get('gpu')} (CUDA {env.get('cuda')}, torch {env['torch']}), "
        f"kernel built by {report['build']}",
        f"GPU tests: {report['tests']['summary']}",
        "",
        f"{'scan':<8}{'batch':>6}  {'implementation':<14}{'median ms':>11}{'p90 ms':>9}{'max rel diff':>14}",
    ]
    for row in report["scans"]:
        lines.append(
            f"{row['scan']:<8}{row['batch']:>6}  {row['impl']:<14}{row['median_ms']:>11.3f}{row['p90_ms']:>9.3f}"
            f"{row['max_rel_diff']:>14.2e}"
        )
    lines += ["", f"{'model':<6}{'batch':>6}  {'scan':<12}{'median ms':>11}{'images/s':>10}{'max rel diff':>14}"]
    for row in report["model"]:
        lines.append(
            f"{row['precision']:<6}{row['batch']:>6}  {row['scan']:<12}{row['median_ms']:>11.2f}"
            f"{row['images_per_s']:>10.1f}{row['max_rel_diff_vs_fp32_reference']:>14.2e}"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/gpu_check/<gpu name>")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--skip-tests", action="store_true", help="only measure (the tests take a minute or two)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine: nothing was checked (run it where torch sees a GPU)")
        return 1
    ensure_package()
    from handssca.measure import environment
    from handssca.ops.cuda_kernel import CudaScanKernel
    from handssca.runtime.files import write_atomically

    major, minor = torch.cuda.get_device_capability(0)
    library, build = build_kernel(ROOT / "build" / "gpu_check", f"{major}{minor}")
    os.environ["HANDSSCA_CUDA_KERNEL"] = str(library)  # the cuda-kernel scan backend for the model
    report = {"environment": environment(), "build": build, "library": str(library)}
    report["tests"] = {"summary": "skipped (--skip-tests)"} if args.skip_tests else run_gpu_tests(library)
    print(f"GPU tests: {report['tests']['summary']}")
    report["scans"] = check_scans(CudaScanKernel(library), args.batches, args.runs)
    report["model"] = check_model(args.batches, ("fp32", "fp16"), args.runs)
    table = format_check_table(report)
    gpu = re.sub(r"[^A-Za-z0-9._-]+", "_", report["environment"].get("gpu") or "gpu").strip("_")
    out = args.out or ROOT / "benchmarks" / "results" / "gpu_check" / gpu
    write_atomically(out / "check.json", json.dumps(report, indent=2).encode())
    write_atomically(out / "table.txt", table.encode())
    print(table + f"wrote {out / 'check.json'} and {out / 'table.txt'}")
    failed = report["tests"].get("exit", 0) != 0
    if failed:
        print("gpu_check: the GPU tests FAILED (see check.json's tests.tail)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
