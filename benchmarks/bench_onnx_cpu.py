"""PyTorch eager vs ONNX Runtime on the CPU: the paper model with MANO, batch 1 and 8, one run.

The network (with the built-in hand's MANO layer in the graph, so outputs include vertices) is
exported three ways and each file runs in ONNX Runtime:

* ``onnxruntime``: the custom scan node, run by OnnxRunner (graph cut at the scans, kernel direct);
* ``onnxruntime_bridge``: the same file in one plain session through onnxruntime-extensions;
* ``onnxruntime_portable``: scans in standard ONNX ops (``--scan portable``);
* ``onnxruntime_fp16``: the fp16 export (activations fp16; ONNX Runtime's CPU fp16 is not fast).

Latency rounds are interleaved so machine noise hits every backend alike. Parity is measured by
polygraphy's Comparator against PyTorch fp32 on one seeded input.

    python benchmarks/bench_onnx_cpu.py --out benchmarks/results/onnx_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

import torch

from handssca.export import export_onnx
from handssca.export.onnx_export import HandSSCAWithMANO
from handssca.measure import environment, random_images, time_models, write_json
from handssca.models import HandSSCA, TorchRunner
from handssca.models.mano import MANOGraph
from handssca.runtime.backends.compare import compare_models
from handssca.runtime.backends.onnx_runner import OnnxRunner
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.scan.ort_bridge import register_ort_scan_op


def plain_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(register_ort_scan_op())
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(names, session.run(None, {"image": x}), strict=True))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds at batch 1 (a third at larger batches)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/onnx_cpu.json"))
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    from handssca.models import HandSSCAConfig

    net = HandSSCA(HandSSCAConfig(input_size=args.input_size)).eval()
    mano, fingertip_ids = build_builtin_hand()
    mano_kw = dict(mano=mano, flat_hand_mean=False, fingertip_ids=fingertip_ids)
    model = HandSSCAWithMANO(net, MANOGraph(mano, flat_hand_mean=False, fingertip_ids=fingertip_ids)).eval()
    size = args.input_size
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for name, kw in {"custom": {}, "portable": {"scan": "portable"}, "fp16": {"precision": "fp16"}}.items():
            start = time.perf_counter()
            files[name] = export_onnx(net, Path(tmp) / f"{name}.onnx", validate=False, **mano_kw, **kw).path
            print(f"exported {name} in {time.perf_counter() - start:.0f} s", flush=True)
        models = {
            "onnxruntime": OnnxRunner(files["custom"]),
            "onnxruntime_portable": OnnxRunner(files["portable"]),
            "onnxruntime_fp16": OnnxRunner(files["fp16"]),
        }
        runners = {
            "pytorch_eager": TorchRunner(model),
            "onnxruntime": models["onnxruntime"],
            "onnxruntime_bridge": plain_session(files["custom"]),
            "onnxruntime_portable": models["onnxruntime_portable"],
            "onnxruntime_fp16": models["onnxruntime_fp16"],
        }

        comparison = compare_models(runners, random_images(2, size, seed=0), reference="pytorch_eager", atol=1e-4)

        results, scan_share = {}, {}
        calls = {name: getattr(runner, "run", runner) for name, runner in runners.items()}
        for batch in args.batches:
            images = random_images(batch, size)
            split = {"scan_ms": 0.0, "ort_ms": 0.0}
            rounds = args.repeats if batch == 1 else max(3, args.repeats // 3)
            # After each round, untimed: the scan kernel's share of OnnxRunner's time.
            split_round = functools.partial(models["onnxruntime"].run, images, timings=split)
            results[batch] = time_models(calls, images, 1, rounds, after_round=split_round)
            scan_share[batch] = split["scan_ms"] / (split["scan_ms"] + split["ort_ms"])

    print(f"\nHandSSCA + MANO ({size}x{size}) on the CPU, {environment()['cpu']}, {torch.get_num_threads()} threads")
    header = f"{'batch':>5}  {'backend':<24}{'median ms':>11}{'vs PyTorch':>12}{'images/s':>10}{'mesh diff mm':>14}"
    print(header)
    print("-" * len(header))
    summary = {}
    for batch, rows in results.items():
        base = rows["pytorch_eager"]["median_ms"]
        for name, row in rows.items():
            ratio = row["median_ms"] / base
            mm = ""
            if name in comparison.diffs:
                diff = comparison.diffs[name]
                mm = f"{1e3 * max(diff['vertices'].max_abs, diff['joints_3d'].max_abs):.1e}"
            rate = row["throughput_img_s"]
            print(f"{batch:>5}  {name:<24}{row['median_ms']:>11.1f}{ratio:>11.2f}x{rate:>10.1f}{mm:>14}")
            summary[f"batch{batch}_{name}_vs_pytorch"] = ratio
        print(f"       scan kernel share of onnxruntime's time: {scan_share[batch]:.0%}")
    for name in comparison.diffs:
        print(f"{name} vs PyTorch fp32, max |diff|: {comparison.summary(name)}")
    report = {
        "environment": environment(),
        "input_size": size,
        "timings": {str(b): r for b, r in results.items()},
        "summary": summary,
        "scan_share_of_onnxruntime_time": {str(b): v for b, v in scan_share.items()},
        "parity": comparison.to_dict(),
        "worst_mesh_diff_mm": {
            name: 1e3 * max(d["vertices"].max_abs, d["joints_3d"].max_abs) for name, d in comparison.diffs.items()
        },
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
