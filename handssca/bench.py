"""``handssca bench``: every available backend against PyTorch, latency and parity, in one table.

Backends are discovered, not assumed: each row is run when its requirements are here and
listed as skipped with the reason otherwise (no GPU, no TensorRT, no mamba-ssm ...). For each
backend: model-only latency (warm-up, then timed runs; median, p90, p99, mean, spread) over a
batch sweep with throughput; end-to-end latency per stage through the predictor (crop, engine,
MANO); parity against PyTorch fp32 on the same inputs (vertices and joints in mm, 2D keypoints
in pixels, MANO parameters) through polygraphy; optionally the change in the official metrics
on a data set. Also a micro-benchmark of the selective scan alone at the model's shapes.
Writes a JSON with the environment and every raw timing, and PNG plots.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from handssca.errors import OptionError
from handssca.measure import environment, load_average, random_images, stats, time_models, time_runner
from handssca.models import TorchRunner
from handssca.progress import say
from handssca.runtime.files import check_writable, write_atomically


@dataclass
class Backend:
    name: str
    precision: str
    runner: object | None = None  # .run(images) -> dict of arrays
    skipped: str | None = None
    size_mb: float | None = None
    cuda: bool = False  # time with CUDA events / synchronisation
    results: dict = field(default_factory=dict)


def discover(
    net, workdir: Path, mano, fingertip_ids, *, compile_model: bool, precisions=("fp32", "fp16"), int8_calibration=None
) -> list[Backend]:
    """Every backend the bench knows, with a runner or the reason it is skipped here.
    ``int8_calibration``: (crops, description) to quantize the int8 row with; None leaves it out."""
    from handssca.export import export_onnx
    from handssca.ops.selective_scan import _mamba_available
    from handssca.runtime.backends.onnx_runner import OnnxRunner

    # PyTorch eager as written (every ratio's reference) and with the exact inference rewrites.
    backends = [
        Backend("pytorch-cpu", "fp32", TorchRunner(net, "cpu")),
        Backend("pytorch-cpu-rewritten", "fp32", TorchRunner(copy.deepcopy(net).rewrite_for_inference(), "cpu")),
    ]
    if compile_model:
        try:
            compiled = torch.compile(net)
            runner = TorchRunner(net, "cpu", forward=compiled)
            size = net.config.input_size
            runner.run(np.zeros((1, 3, size, size), np.float32))  # compile now, fail here if it cannot
            backends.append(Backend("pytorch-compile-cpu", "fp32", runner))
        except Exception as exc:  # inductor failures come in many types
            backends.append(Backend("pytorch-compile-cpu", "fp32", skipped=f"torch.compile failed: {exc!s:.120}"))
    else:
        backends.append(Backend("pytorch-compile-cpu", "fp32", skipped="not requested (--compile)"))
    cuda = torch.cuda.is_available()
    no_gpu = "no CUDA GPU on this machine"
    if cuda:
        gpu_net = type(net)(net.config).cuda().eval()
        gpu_net.load_state_dict(net.state_dict())
        backends.append(
            Backend("pytorch-cuda-reference-scan", "fp32", TorchRunner(gpu_net, "cuda", "reference"), cuda=True)
        )
        if _mamba_available():
            backends.append(
                Backend("pytorch-cuda-mamba-ssm", "fp32", TorchRunner(gpu_net, "cuda", "mamba-ssm"), cuda=True)
            )
        else:
            backends.append(Backend("pytorch-cuda-mamba-ssm", "fp32", skipped="mamba-ssm is not installed ([cuda])"))
        from handssca.ops.selective_scan import _cuda_kernel_available

        if _cuda_kernel_available():
            backends.append(
                Backend("pytorch-cuda-handssca-kernel", "fp32", TorchRunner(gpu_net, "cuda", "cuda-kernel"), cuda=True)
            )
        else:
            backends.append(
                Backend(
                    "pytorch-cuda-handssca-kernel",
                    "fp32",
                    skipped="$HANDSSCA_CUDA_KERNEL does not name a loadable libhandssca_selective_scan_kernel.so",
                )
            )
    else:
        for name in ("pytorch-cuda-reference-scan", "pytorch-cuda-mamba-ssm", "pytorch-cuda-handssca-kernel"):
            backends.append(Backend(name, "fp32", skipped=no_gpu))

    files = {}
    for variant, kw in (
        ("custom", {}),
        ("portable", {"scan": "portable"}),
        ("fp16", {"precision": "fp16"}),
    ):
        if variant == "fp16" and "fp16" not in precisions:
            continue
        path = workdir / f"handssca_{variant}.onnx"
        export_onnx(net, path, validate=False, **kw)
        files[variant] = path
    if int8_calibration:
        from handssca.export.quantize import quantize_int8

        files["int8"] = workdir / "handssca_int8.onnx"
        quantize_int8(files["custom"], files["int8"], int8_calibration[0], calibration=int8_calibration[1])
    size_mb = {k: p.stat().st_size / 2**20 for k, p in files.items()}
    backends.append(Backend("onnxruntime-cpu", "fp32", OnnxRunner(files["custom"]), size_mb=size_mb["custom"]))
    backends.append(
        Backend("onnxruntime-cpu-portable", "fp32", OnnxRunner(files["portable"]), size_mb=size_mb["portable"])
    )
    if "fp16" in files:
        backends.append(Backend("onnxruntime-cpu", "fp16", OnnxRunner(files["fp16"]), size_mb=size_mb["fp16"]))
    if "int8" in files:
        backends.append(Backend("onnxruntime-cpu", "int8", OnnxRunner(files["int8"]), size_mb=size_mb["int8"]))
    else:
        backends.append(Backend("onnxruntime-cpu", "int8", skipped="not requested (--int8-calibration 0)"))
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        backends.append(
            Backend("onnxruntime-cuda", "fp32", OnnxRunner(files["custom"], device="cuda"), size_mb=size_mb["custom"])
        )
    else:
        backends.append(Backend("onnxruntime-cuda", "fp32", skipped="onnxruntime has no CUDA provider here"))
    backends += _tensorrt_backends(files, workdir)
    return backends


def _tensorrt_backends(files: dict, workdir: Path) -> list[Backend]:
    """TensorRT fp32 and fp16 engines with our plugin, built here when TensorRT, a GPU and the
    plugin library ($HANDSSCA_TRT_PLUGIN) are all present."""
    from handssca.errors import MissingBackend
    from handssca.runtime.backends.engine_build import build_engine
    from handssca.runtime.backends.tensorrt_libs import import_tensorrt
    from handssca.runtime.backends.tensorrt_runner import TensorRTRunner

    variants = {precision: v for precision, v in (("fp32", "custom"), ("fp16", "fp16")) if v in files}
    try:
        import_tensorrt()
    except MissingBackend:  # import_tensorrt raises it only when the import fails: that is the reason
        return [Backend("tensorrt", precision, skipped="TensorRT is not installed") for precision in variants]
    rows = []
    for precision, variant in variants.items():
        try:
            engine = workdir / f"handssca_{precision}.engine"
            build_engine(files[variant], engine, min_batch=1, opt_batch=1, max_batch=32)
            rows.append(Backend("tensorrt", precision, TensorRTRunner(engine), size_mb=engine.stat().st_size / 2**20))
        except MissingBackend as exc:
            rows.append(Backend("tensorrt", precision, skipped=str(exc)))
    return rows


def mesh_outputs(outputs: dict[str, np.ndarray], mano, fingertip_ids, size: int) -> dict[str, np.ndarray]:
    """What users compare: vertices and joints (mm), keypoints (pixels), MANO parameters."""
    from handssca.runtime.mano.model import meshes_from_outputs

    vertices, joints = meshes_from_outputs(outputs, mano, fingertip_ids)
    return {
        "vertices_mm": 1e3 * vertices,
        "joints_mm": 1e3 * joints,
        "keypoints_px": outputs["joints_2d"].astype(np.float64) * size,
        "pose": outputs["pose"],
        "shape": outputs["shape"],
    }


def parity(backends: list[Backend], mano, fingertip_ids, size: int, seed: int = 0) -> dict:
    from handssca.runtime.backends.compare import compare_models

    image = random_images(2, size, seed)
    active = {f"{b.name}:{b.precision}": b for b in backends if b.runner is not None}
    functions = {
        key: (lambda images, b=b: mesh_outputs(b.runner.run(images), mano, fingertip_ids, size))
        for key, b in active.items()
    }
    comparison = compare_models(functions, image, reference="pytorch-cpu:fp32", atol=1e-3)
    return {
        key: {name: {"max_abs": d.max_abs, "mean_abs": d.mean_abs} for name, d in outputs.items()}
        for key, outputs in comparison.diffs.items()
    }


def end_to_end(backend: Backend, mano, fingertip_ids, runs: int) -> dict:
    """Per-stage medians of the predictor (crop, engine, MANO) on a 640x480 frame with one hand box."""
    from handssca.runtime.predictor import HandMeshPredictor

    predictor = HandMeshPredictor(backend.runner, mano, fingertip_ids)
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    seen: list[dict[str, float]] = []

    def predict():
        predictor.predict(frame, [(200, 120, 440, 360)], K=K)
        seen.append(predictor.timings)

    total = time_runner(predict, 1, runs)["samples_ms"]
    seen = seen[1:]  # not the warm-up's
    stages = {key: [s[key] for s in seen] for key in ("crop_ms", "engine_ms", "mano_ms")}
    stages["post_ms"] = [t - sum(s.values()) for t, s in zip(total, seen, strict=True)]
    stages["total_ms"] = total
    return {k: stats(v)["median_ms"] for k, v in stages.items()}


@contextlib.contextmanager
def _forced_scan(backend: str | None):
    """Inference mode, with the selective scan forced to ``backend`` when one is named."""
    from handssca.ops import use_scan_backend

    forced = use_scan_backend(backend) if backend else contextlib.nullcontext()
    with torch.inference_mode(), forced:
        yield


def scan_microbenchmark(config, runs: int) -> dict:
    """The scans at the model's shapes: torch reference, CPU kernel, CUDA kernels when here."""
    from handssca.ops import available_backends, selective_scan, selective_scan_ref
    from handssca.runtime import selective_scan_forward
    from handssca.scan_bench import ScanImpl, model_scan_shapes, time_scans

    def on(device, function):
        def bind(x):
            t = {k: torch.from_numpy(v).to(device) for k, v in x.items() if v is not None}
            return functools.partial(function, **t, delta_softplus=True)

        return bind

    implementations: dict[str, ScanImpl | str] = {
        "cpu-kernel": ScanImpl(lambda x: functools.partial(selective_scan_forward, **x, delta_softplus=True), 1, runs),
        "torch-reference-cpu": ScanImpl(
            on("cpu", selective_scan_ref), 0, max(1, runs // 5), context=functools.partial(_forced_scan, None)
        ),
    }
    cuda = {"torch-reference-cuda": "reference", "mamba-ssm-cuda": "mamba-ssm", "handssca-cuda-kernel": "cuda-kernel"}
    reasons = {"mamba-ssm": "mamba-ssm is not installed ([cuda])",
               "cuda-kernel": "$HANDSSCA_CUDA_KERNEL is not set to the kernel library"}  # fmt: skip
    available = available_backends("cuda") if torch.cuda.is_available() else None
    for key, backend in cuda.items():
        if available is None:
            implementations[key] = "no CUDA GPU on this machine"
        elif backend not in available:
            implementations[key] = reasons[backend]
        else:
            implementations[key] = ScanImpl(
                on("cuda", selective_scan), 3, runs, cuda=True, context=functools.partial(_forced_scan, backend)
            )
    rows = time_scans(model_scan_shapes(config), implementations)
    return {row["scan"]: {"shape": row["shape"], **row["timings"]} for row in rows}


def _save_figure(fig, path: Path) -> Path:
    """A matplotlib figure as a PNG, written atomically (a full disk: OutputError naming it)."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return write_atomically(path, buffer.getvalue())


def _plots(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["backends"] if r.get("latency")]
    written = []
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(rows)))
    labels = [f"{r['backend']} ({r['precision']})" for r in rows]
    b1 = [r["latency"]["1"]["median_ms"] for r in rows]
    spread = [r["latency"]["1"]["p90_ms"] - r["latency"]["1"]["median_ms"] for r in rows]
    ax.barh(labels, b1, xerr=[np.zeros(len(spread)), spread], color="#4878a8")
    ax.invert_yaxis()
    ax.set_xlabel("latency at batch 1, ms (median, bar to p90)")
    ax.set_title(f"HandSSCA latency, {report['environment']['cpu']}")
    fig.tight_layout()
    written.append(str(_save_figure(fig, out / "latency_by_backend.png")))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r, label in zip(rows, labels, strict=True):
        batches = sorted(int(k) for k in r["latency"])
        ax.plot(batches, [r["latency"][str(b)]["throughput_img_s"] for b in batches], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch")
    ax.set_ylabel("images / s")
    ax.set_title("throughput by batch")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(str(_save_figure(fig, out / "throughput_by_batch.png")))
    return written


def format_bench_table(report: dict) -> str:
    header = (
        f"{'backend':<30}{'precision':<10}{'size MB':>9}{'b1 ms':>9}{'p90 ms':>9}{'best img/s':>11}"
        f"{'vs PyTorch':>11}{'vertex mm':>11}{'keypt px':>10}  status"
    )
    lines = [header, "-" * len(header)]
    for r in report["backends"]:
        if r.get("skipped"):
            lines.append(
                f"{r['backend']:<30}{r['precision']:<10}{'':>9}{'':>9}{'':>9}{'':>11}{'':>10}{'':>11}{'':>10}  "
                f"skipped: {r['skipped']}"
            )
            continue
        b1 = r["latency"]["1"]
        best = max(v["throughput_img_s"] for v in r["latency"].values())
        size = f"{r['size_mb']:.1f}" if r.get("size_mb") else "-"
        diff = r.get("parity") or {}
        vertex = f"{diff['vertices_mm']['max_abs']:.1e}" if "vertices_mm" in diff else "ref"
        keypoint = f"{diff['keypoints_px']['max_abs']:.1e}" if "keypoints_px" in diff else "ref"
        lines.append(
            f"{r['backend']:<30}{r['precision']:<10}{size:>9}{b1['median_ms']:>9.1f}{b1['p90_ms']:>9.1f}{best:>11.1f}"
            f"{r['time_vs_pytorch']['1']:>10.2f}x{vertex:>11}{keypoint:>10}  ok"
        )
    timed = [r for r in report["backends"] if not r.get("skipped")]
    batches = sorted({int(b) for r in timed for b in r["latency"]})
    lines += ["", "median ms by batch (time vs PyTorch eager fp32), all rows timed interleaved"]
    lines.append(f"{'':<40}" + "".join(f"{'b' + str(b):>16}" for b in batches))
    for r in timed:
        cells = "".join(
            f"{r['latency'][str(b)]['median_ms']:>9.1f} ({r['time_vs_pytorch'][str(b)]:.2f}x)" for b in batches
        )
        lines.append(f"{r['backend'] + ' ' + r['precision']:<40}{cells}")
    lines += ["", f"{'end to end (640x480 frame, 1 hand)':<40}" + "".join(f"{k:>10}" for k in STAGES)]
    for r in report["backends"]:
        if not r.get("skipped"):
            stages = r["end_to_end_ms"]
            lines.append(f"{r['backend'] + ' ' + r['precision']:<40}" + "".join(f"{stages[k]:>10.1f}" for k in STAGES))
    scored = [r for r in report["backends"] if r.get("dataset_metrics")]
    if scored:
        reference = scored[0]["dataset_metrics"]
        lines += ["", f"{'on the data set (' + str(reference['count']) + ' samples)':<40}" + "".join(
            f"{name:>11}" for name in ("PA-MPJPE", "PA-MPVPE", "F@5", "F@15", "dPA-MPJPE")
        ) + "   joint shift vs PyTorch mm (median/p90/max)"]  # fmt: skip
        for r in scored:
            m = r["dataset_metrics"]
            change = m["pa_mpjpe_mm"] - reference["pa_mpjpe_mm"]
            shift = m.get("shift_vs_pytorch", {}).get("joints_mm")
            moved = f"{shift['median']:.2f} / {shift['p90']:.2f} / {shift['max']:.2f}" if shift else "ref"
            lines.append(
                f"{r['backend'] + ' ' + r['precision']:<40}{m['pa_mpjpe_mm']:>11.3f}{m['pa_mpvpe_mm'] or 0:>11.3f}"
                f"{100 * (m['f5'] or 0):>10.2f}%{100 * (m['f15'] or 0):>10.2f}%{change:>+11.2e}   {moved}"
            )
    return "\n".join(lines)


STAGES = ("crop_ms", "engine_ms", "mano_ms", "post_ms", "total_ms")


@contextlib.contextmanager
def _no_empty_folder_left(out: Path):
    """Makes ``out``; if the work inside fails or is interrupted before writing anything there,
    removes it again (a folder the bench created), so no empty result folder is left behind."""
    created = not out.exists()
    check_writable(out / "bench.json")  # a read-only folder or a file in the way: one line, before the work
    try:
        yield
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def run_bench(
    out: Path,
    *,
    model_config=None,
    checkpoint: str | None = None,
    batches=(1, 2, 4, 8, 16, 32),
    runs: int = 20,
    warmup: int = 2,
    compile_model: bool = True,
    data_root: str | None = None,
    data_samples: int = 64,
    scan_runs: int = 10,
    show_progress: bool = True,
    int8_images: int = 32,
) -> dict:
    """Every backend timed or skipped with its reason, parity, data-set metrics; writes bench.json,
    table.txt and the plots into ``out``. ``int8_images`` synthetic hands calibrate the int8 row
    (0: no int8 row)."""
    from tqdm import tqdm

    from handssca.models import HandSSCAConfig
    from handssca.runtime import kernel_info
    from handssca.runtime.mano.builtin import STAND_IN_NOTE, build_builtin_hand
    from handssca.training.checkpoint import load_network

    batches = tuple(sorted({1, *batches}))  # batch 1 is every ratio's reference
    if data_root:  # a data set that cannot be scored is refused before minutes of timing
        from handssca.errors import InputError
        from handssca.training.datasets import FreiHAND

        evaluation = FreiHAND(data_root, "evaluation")
        if evaluation.xyz is None:
            raise InputError(f"{data_root}: its evaluation split has no ground truth (evaluation_xyz.json) to score")
    with _no_empty_folder_left(out):
        net, weights = load_network(checkpoint, model_config or (None if checkpoint else HandSSCAConfig()))
        mano, fingertip_ids = build_builtin_hand()
        size = net.config.input_size
        report = {
            "environment": environment(scan_kernel=kernel_info()),
            "model": {"config": net.config.to_dict(), "weights": weights, "mano": STAND_IN_NOTE},
            "settings": {"batches": list(batches), "runs": runs, "warmup": warmup},
            "backends": [],
        }
        with tempfile.TemporaryDirectory() as tmp:
            calibration = None
            if int8_images:
                from handssca.training.samples import calibration_crops

                say(f"bench: rendering {int8_images} synthetic hands to calibrate the int8 row ...")
                crops, _ = calibration_crops("synth", int8_images, size)
                calibration = (crops, f"synth ({len(crops)} images)")
            say(f"bench: exporting the network ({size} px) to ONNX and opening every backend (about a minute "
                "for the paper model on 2 cores) ...")  # fmt: skip
            backends = discover(
                net, Path(tmp), mano, fingertip_ids, compile_model=compile_model, int8_calibration=calibration
            )
            active = [b for b in backends if b.runner is not None]
            load_before = load_average()
            for backend in active:
                backend.results["latency"] = {}
            # Every backend in turn within each round, so machine noise hits all alike: the
            # ratios between rows are measured side by side.
            for batch in tqdm(batches, desc="timing (interleaved)", unit="batch", disable=not show_progress):
                runners = {id(b): b.runner.run for b in active}
                cuda = {id(b) for b in active if b.cuda}
                timings = time_models(runners, random_images(batch, size), warmup, max(3, runs // batch), cuda=cuda)
                for backend in active:
                    backend.results["latency"][str(batch)] = timings[id(backend)]
            say("bench: end-to-end stages, parity and the scan micro-benchmark ...")
            for backend in active:
                backend.results["end_to_end_ms"] = end_to_end(backend, mano, fingertip_ids, max(3, runs // 2))
            report["environment"]["load_average_after_timing"] = load_average()
            report["environment"]["load_average"] = load_before
            diffs = parity(backends, mano, fingertip_ids, size)
            metrics = None
            if data_root:
                metrics = _dataset_metrics(active, data_root, mano, fingertip_ids, size, data_samples)
            pytorch = next(b for b in backends if b.name == "pytorch-cpu").results["latency"]
            for b in backends:
                row = {"backend": b.name, "precision": b.precision, "size_mb": b.size_mb}
                if b.skipped:
                    row["skipped"] = b.skipped
                else:
                    row.update(b.results)
                    row["time_vs_pytorch"] = {
                        batch: t["median_ms"] / pytorch[batch]["median_ms"] for batch, t in b.results["latency"].items()
                    }
                    row["parity"] = diffs.get(f"{b.name}:{b.precision}")
                    if metrics:
                        row["dataset_metrics"] = metrics.get(f"{b.name}:{b.precision}")
                report["backends"].append(row)
        report["selective_scan"] = scan_microbenchmark(net.config, scan_runs)
        report["plots"] = _plots(report, out)
        write_atomically(out / "bench.json", json.dumps(report, indent=2, default=float).encode())
        write_atomically(out / "table.txt", (summary_text(report) + "\n").encode())
        return report


@dataclass(frozen=True)
class BenchOptions:
    """``handssca bench``: which network, the batch sweep and runs, what else to compare, where to write."""

    output: str = "bench_results"
    checkpoint: str | None = None  # trained weights (None: the untrained network of ``config``)
    config: str | None = None  # a YAML file with a 'model:' section (None: the paper's model)
    input_size: int | None = None
    batches: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    runs: int = 20
    compile_model: bool = False  # also time torch.compile (slow to compile on a CPU)
    data_root: str | None = None  # a FreiHAND-layout folder: the official metrics per backend too
    data_samples: int = 64
    int8_images: int = 32  # synthetic hands to calibrate the int8 row with (0: no int8 row)


MAX_BATCH = 256  # beyond it a CPU sweep runs for hours and the activations outgrow the machine


def run_bench_command(options: BenchOptions) -> list[str]:
    """``handssca bench``: ``run_bench`` with ``options``; the table and what was written."""
    from handssca.training.config import load_model_config

    largest = max(options.batches)
    if largest > MAX_BATCH:
        size = options.input_size or 256
        gib = largest * 3 * size * size * 4 / 2**30
        raise OptionError(
            f"--batches {largest}: at most {MAX_BATCH} (batch {largest} needs {gib:.1f} GiB for its input images "
            "alone, and many times that for the network's activations)"
        )

    config = None if options.checkpoint else load_model_config(options.config, {"input_size": options.input_size})
    out = Path(options.output)
    report = run_bench(
        out, model_config=config, checkpoint=options.checkpoint, batches=options.batches, runs=options.runs,
        compile_model=options.compile_model, data_root=options.data_root, data_samples=options.data_samples,
        int8_images=options.int8_images,
    )  # fmt: skip
    return [summary_text(report), f"wrote {out / 'bench.json'}, table.txt and {', '.join(report['plots'])}"]


def summary_text(report: dict) -> str:
    """The machine, the table of every backend, and the scan micro-benchmark, as table.txt has them."""
    env = report["environment"]
    kernel = env.get("scan_kernel", {})
    lines = [
        f"HandSSCA {report['model']['weights']}, input {report['model']['config']['input_size']}; {env['date']}",
        f"machine: {env['cpu']} ({', '.join(env['cpu_features'])}), {env['cpu_count']} cores, "
        f"{env['torch_threads']} threads; scan kernel {kernel.get('isa', '?')}, {kernel.get('max_threads', '?')} "
        f"threads{'; ' + env['gpu'] if env.get('gpu') else ''}",
        f"load average (1/5/15 min): {env.get('load_average')} before timing, "
        f"{env.get('load_average_after_timing')} after",
        format_bench_table(report),
    ]
    for name, row in report["selective_scan"].items():
        parts = [f"{k} {v['median_ms']:.1f} ms" for k, v in row.items() if isinstance(v, dict) and "median_ms" in v]
        lines.append(f"scan {name} {tuple(row['shape'].values())}: " + ", ".join(parts))
    return "\n".join(lines)


def _dataset_metrics(backends: list[Backend], root: str, mano, fingertip_ids, size: int, samples: int) -> dict:
    from handssca.training.datasets import FreiHAND
    from handssca.training.evaluate import evaluate, model_predictor
    from handssca.training.metrics import prediction_shift
    from handssca.training.samples import HandCrops

    crops = HandCrops(FreiHAND(root, "evaluation"), size=size, augment=None, substitute=False)
    functions = {f"{b.name}:{b.precision}": model_predictor(b.runner, mano, fingertip_ids) for b in backends}
    results = evaluate(functions, crops, limit=samples, progress=False)
    predictions = results.pop("_predictions")
    for key in ("_skipped", "_scored"):
        results.pop(key)
    reference = predictions.get("pytorch-cpu:fp32")
    for name, predicted in predictions.items():
        if reference is not None and name != "pytorch-cpu:fp32":
            results[name]["shift_vs_pytorch"] = prediction_shift(reference, predicted)
    return results
