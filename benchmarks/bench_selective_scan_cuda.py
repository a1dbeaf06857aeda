"""The selective scan on a GPU at the model's shapes: our CUDA kernel vs the torch reference vs
mamba-ssm's kernel (when installed), batch 1 and 32, CUDA-event timing, one run.

    cmake -S plugins -B build/plugins && cmake --build build/plugins -j
    python benchmarks/bench_selective_scan_cuda.py \
        --kernel build/plugins/selective_scan/libhandssca_selective_scan_kernel.so

Without a CUDA GPU it says so and exits 0, writing nothing.
"""

from __future__ import annotations

import argparse
import functools
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from bench_selective_scan_cpu import summarize, write_json_atomically

from handssca.ops import selective_scan_ref

SHAPES = {"spatial": (2048, 1024, 16, 4), "channel": (128, 8192, 16, 4)}  # (dim, L, N, G)


def cuda_timed(fn, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end))
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--kernel", type=Path, default=Path("build/plugins/selective_scan/libhandssca_selective_scan_kernel.so")
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/selective_scan_cuda.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure (run this on a GPU machine)")
        return 0
    from handssca.ops.cuda_kernel import CudaKernelError, CudaScanKernel

    try:
        kernel = CudaScanKernel(args.kernel)
    except CudaKernelError as exc:
        print(exc)
        return 1
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # not installed, or installed without its compiled extension
        selective_scan_fn = None
    rows = {}
    rng = np.random.default_rng(0)
    for name, (dim, length, dstate, groups) in SHAPES.items():
        for batch in args.batches:

            def tensor(*shape, scale=1.0, shift=0.0):
                return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32) * scale + shift).cuda()

            x = {
                "u": tensor(batch, dim, length),
                "delta": tensor(batch, dim, length, scale=0.5, shift=-1.0),
                "A": -torch.exp(tensor(dim, dstate, scale=0.5)),
                "B": tensor(batch, groups, dstate, length),
                "C": tensor(batch, groups, dstate, length),
                "D": tensor(dim),
                "delta_bias": tensor(dim, scale=0.3),
            }
            args_ = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"])
            row = {"shape": {"batch": batch, "dim": dim, "L": length, "N": dstate, "G": groups}}
            with torch.inference_mode():
                ours = kernel(*args_, x["delta_bias"], True)
                reference = selective_scan_ref(*args_, None, x["delta_bias"], True)
                row["max_abs_diff_vs_reference"] = float((ours - reference).abs().max())
                ours_call = functools.partial(kernel, *args_, x["delta_bias"], True)
                reference_call = functools.partial(selective_scan_ref, *args_, None, x["delta_bias"], True)
                row["handssca_cuda_kernel"] = summarize(cuda_timed(ours_call, args.repeats))
                row["torch_reference"] = summarize(cuda_timed(reference_call, max(3, args.repeats // 10)))
                if selective_scan_fn is not None:
                    mamba_call = functools.partial(selective_scan_fn, *args_, None, x["delta_bias"], True)
                    row["mamba_ssm"] = summarize(cuda_timed(mamba_call, args.repeats))
            rows[f"{name}_b{batch}"] = row
            ours_ms = row["handssca_cuda_kernel"]["median_ms"]
            reference_ms = row["torch_reference"]["median_ms"]
            line = f"{name:<8} batch {batch:>3}: ours {ours_ms:8.3f} ms, reference {reference_ms:8.2f} ms"
            if "mamba_ssm" in row:
                mamba_ms = row["mamba_ssm"]["median_ms"]
                line += f", mamba-ssm {mamba_ms:8.3f} ms (ours/mamba {ours_ms / mamba_ms:.2f}x)"
            print(line + f", max |diff| {row['max_abs_diff_vs_reference']:.2g}")
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "mamba_ssm": selective_scan_fn is not None,
        "results": rows,
    }
    write_json_atomically(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
