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
    run = subprocess.run(  # addopts=-ra: one process, whether or not the device box has pytest-xdist
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", *tests],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    summary = (run.stdout.strip().splitlines() or [""])[-1]
    counts = {key: int(n) for n, key in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    return {"command": "pytest -q " + " ".join(tests), "exit": run.returncode, "summary": summary, **counts,
            "tail": run.stdout[-4000:]}  # fmt: skip


def relative_difference(got, expected) -> float:
    return float((got.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-12))


def check_scans(kernel, config, batches, runs) -> list[dict]:
    """The scans of ``config``'s model at each batch: ours (own plan and unsplit), the reference,
    mamba-ssm where installed; CUDA-event timings and the largest relative difference."""
    import torch

    from handssca.ops import available_backends, selective_scan_ref
    from handssca.scan_bench import ScanImpl, model_scan_shapes, time_scans

    def on_gpu(function, *tail, **options):
        def bind(x):
            t = {k: torch.from_numpy(v).cuda() for k, v in x.items() if v is not None}
            ordered = [t[k] for k in ("u", "delta", "A", "B", "C", "D")]
            return functools.partial(function, *ordered, *tail, t["delta_bias"], True, **options)

        return bind

    implementations = {
        "ours": ScanImpl(on_gpu(kernel), 2, runs, cuda=True),
        "ours-unsplit": ScanImpl(on_gpu(kernel, segments=1), 2, runs, cuda=True),
        "reference": ScanImpl(on_gpu(selective_scan_ref, None), 2, max(3, runs // 10), cuda=True),
    }
    if "mamba-ssm" in available_backends("cuda"):
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as mamba

        implementations["mamba-ssm"] = ScanImpl(on_gpu(mamba, None), 2, runs, cuda=True)

    def parity(inputs, calls, timings):
        expected = calls["reference"]()
        return {"max_rel_diff": {label: relative_difference(call(), expected) for label, call in calls.items()}}

    with torch.inference_mode():
        scans = time_scans(model_scan_shapes(config), implementations, batches=batches, after=parity)
    rows = []
    for scan in scans:
        for label, timing in scan["timings"].items():
            timing.pop("samples_ms")
            rows.append({"scan": scan["scan"], "batch": scan["shape"]["batch"], "impl": label, **timing,
                         "max_rel_diff": scan["max_rel_diff"][label]})  # fmt: skip
    return rows


def check_model(config, batches, precisions, runs) -> list[dict]:
    import torch

    from handssca.measure import random_images, time_models
    from handssca.models import HandSSCA
    from handssca.ops import available_backends, use_scan_backend

    torch.manual_seed(0)
    fp32 = HandSSCA(config).cuda().eval()
    backends = [b for b in ("cuda-kernel", "mamba-ssm") if b in available_backends("cuda")] + ["reference"]
    rows = []
    for batch in batches:
        image = torch.from_numpy(random_images(batch, config.input_size)).cuda()
        with torch.inference_mode(), use_scan_backend("reference"):
            expected = fp32(image)
        for precision in precisions:
            net = fp32 if precision == "fp32" else HandSSCA(fp32.config).cuda().eval().half()
            if net is not fp32:
                net.load_state_dict(fp32.state_dict())
            cast = image if precision == "fp32" else image.half()
            for backend in backends:
                with torch.inference_mode(), use_scan_backend(backend):
                    rounds = runs if backend != "reference" else 3
                    timing = time_models({backend: net}, cast, 3, rounds, cuda={backend})[backend]
                    outputs = net(cast)
                timing.pop("samples_ms")
                images_per_s = timing.pop("throughput_img_s")
                parity = {key: relative_difference(outputs[key], expected[key]) for key in expected}
                rows.append({"batch": batch, "precision": precision, "scan": backend, **timing,
                             "images_per_s": images_per_s,
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
    from handssca.models import HandSSCAConfig
    from handssca.ops.cuda_kernel import CudaScanKernel
    from handssca.runtime.files import write_atomically

    major, minor = torch.cuda.get_device_capability(0)
    library, build = build_kernel(ROOT / "build" / "gpu_check", f"{major}{minor}")
    os.environ["HANDSSCA_CUDA_KERNEL"] = str(library)  # the cuda-kernel scan backend for the model
    report = {"environment": environment(), "build": build, "library": str(library)}
    report["tests"] = {"summary": "skipped (--skip-tests)"} if args.skip_tests else run_gpu_tests(library)
    print(f"GPU tests: {report['tests']['summary']}")
    config = HandSSCAConfig()  # the paper's model: its scans' shapes and the network timed whole
    report["scans"] = check_scans(CudaScanKernel(library), config, args.batches, args.runs)
    report["model"] = check_model(config, args.batches, ("fp32", "fp16"), args.runs)
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
