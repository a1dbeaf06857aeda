"""PyTorch eager vs ONNX Runtime on the CPU, the paper model, batch 1 and 8, in one run.

ONNX Runtime runs the exported file two ways: OnnxModel (the graph cut at the scan nodes, the
kernel called directly) and one plain session with the onnxruntime-extensions bridge. Timings are
interleaved per round so machine noise hits all three alike.

    python benchmarks/bench_onnx_cpu.py --out benchmarks/results/onnx_cpu.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_selective_scan_cpu import environment, summarize, write_json_atomically

from handssca.export import export_onnx
from handssca.models import HandSSCA
from handssca.runtime.onnx_backend import OnnxModel
from handssca.runtime.scan_node import register_ort_scan_op


def plain_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(register_ort_scan_op())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx_cpu.json"))
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = HandSSCA().eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "handssca.onnx"
        export = export_onnx(model, path)
        runners = {
            "pytorch_eager": None,
            "onnxruntime_staged": OnnxModel(path).run,
            "onnxruntime_extensions_bridge": plain_session(path),
        }
        results = {}
        for batch in args.batches:
            image = torch.randn(batch, 3, 256, 256)
            array = image.numpy()

            def torch_run(image=image):
                with torch.inference_mode():
                    return model(image)

            calls = {
                name: (torch_run if fn is None else (lambda fn=fn, a=array: fn(a))) for name, fn in runners.items()
            }
            for fn in calls.values():  # warm-up
                fn()
            samples = {name: [] for name in calls}
            for _ in range(args.repeats if batch == 1 else max(3, args.repeats // 3)):
                for name, fn in calls.items():
                    start = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - start) * 1e3)
            results[batch] = {name: summarize(s) for name, s in samples.items()}

    print(f"HandSSCA (paper size) on the CPU, {environment()['cpu']}, {torch.get_num_threads()} threads")
    header = f"{'batch':>5}  {'backend':<32}{'median ms':>11}{'vs PyTorch':>12}{'images/s':>10}"
    print(header)
    print("-" * len(header))
    summary = {}
    for batch, rows in results.items():
        base = rows["pytorch_eager"]["median_ms"]
        for name, row in rows.items():
            ratio = row["median_ms"] / base
            print(
                f"{batch:>5}  {name:<32}{row['median_ms']:>11.1f}{ratio:>11.2f}x{1e3 * batch / row['median_ms']:>10.1f}"
            )
            summary[f"batch{batch}_{name}_vs_pytorch"] = ratio
    print(f"export parity (max |diff| vs PyTorch): {max(export.max_abs_diff.values()):.2g}")
    report = {
        "environment": environment(),
        "timings": {str(b): r for b, r in results.items()},
        "summary": summary,
        "export_max_abs_diff": export.max_abs_diff,
    }
    write_json_atomically(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
