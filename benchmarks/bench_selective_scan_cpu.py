"""CPU selective-scan benchmark at the model's real shapes.

Compares, in one run on the same inputs:
  * a straightforward scalar loop (numba, one thread): the baseline the kernel must beat 10x;
  * the compiled kernel of handssca.runtime, forward (all threads and one thread) and backward;
  * the kernel's floor: the same exp + recurrence arithmetic on buffers in L1 (no memory
    traffic, transposes or softplus), timed interleaved with the forward; the target is a
    forward within 1.5x of it;
  * the torch reference (handssca.ops.selective_scan_ref);
and puts the two scans next to the rest of a full HandSSCA forward pass (batch 1, CPU).

Prints a table and writes JSON (environment + every raw timing):
    python benchmarks/bench_selective_scan_cpu.py --out benchmarks/results/selective_scan_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from pathlib import Path

import numpy as np

from handssca.measure import environment, load_average, time_models, write_json
from handssca.runtime import kernel_info, selective_scan_backward, selective_scan_forward
from handssca.runtime.scan.kernel import arithmetic_floor
from handssca.scan_bench import ScanImpl, model_scan_shapes, time_scans
from handssca.training.config import load_model_config


def scalar_loop():
    """The straightforward baseline: the S6 recurrence as plain loops, compiled by numba."""
    try:
        import numba
    except ImportError:
        return None

    @numba.njit(cache=False)
    def scan(u, delta, A, B, C, D, delta_bias, out):
        batch, dim, length = u.shape
        n_state = A.shape[1]
        groups = B.shape[1]
        h = np.zeros(n_state, np.float32)
        for b in range(batch):
            for d in range(dim):
                g = d // (dim // groups)
                h[:] = 0.0
                for t in range(length):
                    dt = delta[b, d, t] + delta_bias[d]
                    if dt <= 20.0:
                        dt = math.log1p(math.exp(dt))
                    y = 0.0
                    for n in range(n_state):
                        h[n] = math.exp(dt * A[d, n]) * h[n] + dt * B[b, g, n, t] * u[b, d, t]
                        y += h[n] * C[b, g, n, t]
                    out[b, d, t] = y + D[d] * u[b, d, t]

    def run(x):
        out = np.empty_like(x["u"])
        scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["delta_bias"], out)
        return out

    return run


def bench_scans(config, repeats, with_reference):
    """Both scans of ``config``'s model: the kernel forward (interleaved with its floor, and on one
    thread), backward, the scalar loop and the torch reference, on the same inputs."""
    baseline = scalar_loop()

    def forward(**options):
        return lambda x: functools.partial(selective_scan_forward, **x, delta_softplus=True, **options)

    def backward(x):
        dout = np.ones_like(x["u"])
        return functools.partial(selective_scan_backward, dout, **x, delta_softplus=True)

    def floor(x):
        batch, dim, length = x["u"].shape
        return functools.partial(arithmetic_floor, batch * dim, length)

    implementations = {
        # Two warm-up calls each: the kernel's threads start on its first.
        "kernel_forward": ScanImpl(forward(), 2, repeats),
        "floor_exp_recurrence": ScanImpl(floor, 2, repeats),
        "kernel_forward_1thread": ScanImpl(forward(num_threads=1), 1, repeats),
        "kernel_backward": ScanImpl(backward, 1, max(3, repeats // 2)),
    }
    if baseline is not None:  # its first call compiles it: one more untimed
        implementations["scalar_loop"] = ScanImpl(lambda x: functools.partial(baseline, x), 2, max(3, repeats // 3))
    if with_reference:
        import torch

        from handssca.ops import selective_scan_ref

        def reference(x):
            t = {k: None if v is None else torch.from_numpy(v) for k, v in x.items()}
            return functools.partial(selective_scan_ref, **t, delta_softplus=True)

        implementations["torch_reference"] = ScanImpl(reference, 0, 2, context=torch.inference_mode)

    def after(inputs, calls, timings):
        row = {"notes": [], "forward_over_floor": timings["kernel_forward"]["median_ms"]
               / timings["floor_exp_recurrence"]["median_ms"]}  # fmt: skip
        if baseline is not None:
            row["max_abs_diff_vs_scalar_loop"] = float(np.abs(calls["kernel_forward"]() - calls["scalar_loop"]()).max())
        else:
            row["notes"].append("scalar loop skipped: numba is not installed (pip install 'handssca[dev]')")
        return row

    rows = time_scans(
        model_scan_shapes(config), implementations, interleaved=("kernel_forward", "floor_exp_recurrence"), after=after
    )
    return {row.pop("scan"): row for row in rows}


def bench_model(config, repeats):
    """A full forward pass (batch 1) with the kernel; the scans' share of it."""
    import torch

    from handssca.models import HandSSCA

    torch.manual_seed(0)
    model = HandSSCA(config).eval()
    image = torch.randn(1, 3, config.input_size, config.input_size)
    with torch.inference_mode():
        timing = time_models({"forward": model}, image, 2, repeats)["forward"]
    return {"forward_batch1": timing, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--config", help="model config YAML whose scans to time (default: the paper's model)")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) torch reference")
    parser.add_argument("--no-model", action="store_true", help="skip the full-model forward pass")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/selective_scan_cpu.json"))
    args = parser.parse_args(argv)
    config = load_model_config(args.config, {})

    report = {
        "environment": environment(kernel=kernel_info()),
        "model_config": config.to_dict(),
        "scans": bench_scans(config, args.repeats, not args.no_reference),
    }
    if not args.no_model:
        report["model"] = bench_model(config, args.repeats)

    print(
        f"CPU selective scan, {report['environment']['cpu']} ({', '.join(report['environment']['cpu_features'])}), "
        f"{report['environment']['cpu_count']} cores, kernel clone {report['environment']['kernel']['isa']}, "
        f"load average {report['environment']['load_average']}"
    )
    header = f"{'scan':<9}{'implementation':<26}{'median ms':>11}{'speed-up vs loop':>18}"
    print(header)
    print("-" * len(header))
    for name, row in report["scans"].items():
        base = row["timings"].get("scalar_loop", {}).get("median_ms")
        for impl, t in row["timings"].items():
            ratio = f"{base / t['median_ms']:>17.1f}x" if base else f"{'-':>18}"
            print(f"{name:<9}{impl:<26}{t['median_ms']:>11.2f}{ratio}")
        print(f"{'':<9}forward / floor: {row['forward_over_floor']:.2f}x (target <= 1.5x)")
        for note in row["notes"]:
            print(f"{'':<9}{note}")
    scans_ms = sum(row["timings"]["kernel_forward"]["median_ms"] for row in report["scans"].values())
    summary = {"scans_forward_ms": scans_ms}
    for name, row in report["scans"].items():
        if "scalar_loop" in row["timings"]:
            summary[f"{name}_speedup_vs_scalar_loop"] = (
                row["timings"]["scalar_loop"]["median_ms"] / row["timings"]["kernel_forward"]["median_ms"]
            )
    if "model" in report:
        forward = report["model"]["forward_batch1"]["median_ms"]
        summary.update(
            model_forward_ms=forward, rest_of_forward_ms=forward - scans_ms, scans_share_of_forward=scans_ms / forward
        )
        print(
            f"full forward (batch 1, {report['model']['threads']} threads): {forward:.1f} ms; both scans "
            f"{scans_ms:.1f} ms = {scans_ms / forward:.0%} of it (rest {forward - scans_ms:.1f} ms)"
        )
    report["summary"] = summary
    report["environment"]["load_average_at_end"] = load_average()
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
