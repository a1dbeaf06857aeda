"""Timing, and the machine it ran on: the one place ``handssca bench``, the benchmark scripts,
the demo, ``benchmarks/gpu_check.py``, the serving load test and ``handssca doctor`` take them
from. ``stats`` is the one summary of timings; ``time_runner`` and ``time_interleaved`` the
timing loops; ``time_models`` the model benchmark (runners on one batch, interleaved). The
selective-scan micro-benchmark is ``handssca.scan_bench``.

Every published figure names its machine (CPU model and instruction sets, GPU) because the
machines here differ between sessions; ``environment()`` is that record. Imports torch only when
it is installed (and CUDA timing only when asked), so the torch-free runtime can use it too.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

# The instruction sets the kernels' speed depends on (x86), as /proc/cpuinfo names them.
CPU_FEATURES = ("sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile")


def cpu_info() -> dict:
    """{"name", "features" (of CPU_FEATURES), "cores"} of this machine."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
            if name and flags:
                break
    except OSError:
        pass
    return {"name": name, "features": [f for f in CPU_FEATURES if f in flags], "cores": os.cpu_count()}


def load_average() -> list[float] | None:
    """1-, 5- and 15-minute load averages: a figure taken while the machine was busy says so."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def environment(**extra) -> dict:
    """The date, this machine (CPU, instruction sets, GPU), and the versions that matter."""
    cpu = cpu_info()
    env = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu": cpu["name"],
        "cpu_features": cpu["features"],
        "cpu_count": cpu["cores"],
        "load_average": load_average(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    for module in ("torch", "onnxruntime", "numba", "tensorrt"):
        env[module] = _version(module)
    if env["torch"]:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
    env.update(extra)
    return env


def stats(samples: list[float]) -> dict:
    """Median, p90, p99, mean, spread and minimum of timings in ms, with the samples."""
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": float(np.quantile(ordered, 0.9)),
        "p99_ms": float(np.quantile(ordered, 0.99)),
        "mean_ms": statistics.fmean(ordered),
        "stdev_ms": statistics.stdev(ordered) if len(ordered) > 1 else 0.0,
        "min_ms": ordered[0],
        "samples_ms": samples,
    }


def _time_call(run: Callable[[], object], cuda: bool) -> float:
    """Milliseconds of one call; on the GPU timed with CUDA events."""
    if cuda:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end)
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def time_runner(run: Callable[[], object], warmup: int, runs: int, cuda: bool = False) -> dict:
    """``stats`` of ``runs`` calls after ``warmup`` untimed ones; on the GPU timed with CUDA events."""
    for _ in range(warmup):
        run()
    return stats([_time_call(run, cuda) for _ in range(runs)])


def time_interleaved(
    runs: dict[str, Callable[[], object]],
    warmup: int,
    rounds: int,
    cuda=(),
    after_round: Callable[[], object] | None = None,
) -> dict[str, dict]:
    """``stats`` per name of ``rounds`` rounds in which every call runs once in turn, so that a slow
    spell of a shared machine hits all of them alike: the way to measure ratios between them.
    Names in ``cuda`` are timed with CUDA events; ``after_round``, untimed, ends each round."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(_time_call(run, name in cuda))
        if after_round is not None:
            after_round()
    return {name: stats(values) for name, values in samples.items()}


def random_images(batch: int, size: int, seed: int | None = None) -> np.ndarray:
    """A (batch, 3, size, size) float32 batch of standard-normal "images"; seeded by the batch
    unless ``seed`` is given, so that every model benchmark times the same inputs."""
    rng = np.random.default_rng(batch if seed is None else seed)
    return rng.standard_normal((batch, 3, size, size)).astype(np.float32)


def time_models(
    runners: dict[str, Callable[[object], object]],
    images,
    warmup: int,
    rounds: int,
    cuda=(),
    after_round: Callable[[], object] | None = None,
) -> dict[str, dict]:
    """The model benchmark: every runner (a callable on a batch) on ``images``, interleaved
    (``time_interleaved``), each timing with its ``throughput_img_s``."""
    calls = {name: (lambda run=run: run(images)) for name, run in runners.items()}
    timings = time_interleaved(calls, warmup, rounds, cuda=cuda, after_round=after_round)
    for timing in timings.values():
        timing["throughput_img_s"] = 1e3 * len(images) / timing["median_ms"]
    return timings


def write_json(path: str | Path, data: dict) -> Path:
    """``data`` as indented JSON, written atomically (numpy scalars as floats)."""
    from handssca.runtime.files import write_atomically

    return write_atomically(Path(path), json.dumps(data, indent=2, default=float).encode())
