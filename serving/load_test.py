"""Load test: N concurrent clients against a real Triton serving the model, dynamic batching on and off.

For each batching mode the repository is written to a temporary folder and served; for each
concurrency level N, N threads (one client each, as N camera streams) send one hand per request
for a fixed time and every answer is compared with the runtime's own (HandMeshPredictor over
OnnxRunner, in this process) for the same crop. Per level: throughput, latency percentiles,
errors, parity failures and the network's mean executed batch (from Triton's statistics). The
in-process predictor's own throughput is measured in the same run, as the yardstick.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handssca.errors import ServingError

from .repository import NETWORK, ServingOptions, write_repository

# An answer further than this from the runtime's own is a parity failure (batching reorders
# float sums in the convolutions, which moves results by ~1e-7; a wrong hand moves them by cm).
TOLERANCE = {"vertices": 1e-4, "joints_3d": 1e-4, "keypoints_2d": 1e-2, "pose": 1e-4, "shape": 1e-4, "confidence": 1e-4}


IN_PROCESS_S = 20.0  # the longest the in-process yardstick is timed


@dataclass
class Hands:
    """A fixed set of hands to send: crops, boxes and sides, and the runtime's answers."""

    crops: np.ndarray
    boxes: np.ndarray
    is_left: np.ndarray
    reference: dict[str, np.ndarray]


def make_hands(predictor, count: int, seed: int = 0) -> Hands:
    """``count`` hands cut from random frames (every other one a left hand), with the predictor's
    answers for each alone (batch 1), as a client would get them from the runtime."""
    from handssca.runtime.predictor import hand_crops

    rng = np.random.default_rng(seed)
    crops, boxes, sides, reference = [], [], [], {k: [] for k in TOLERANCE}
    for i in range(count):
        frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        x0, y0 = rng.uniform(0, 150), rng.uniform(0, 90)
        box = np.array([x0, y0, x0 + rng.uniform(60, 160), y0 + rng.uniform(60, 140)])
        side = "left" if i % 2 else "right"
        image = frame[..., ::-1] if predictor.rgb else frame  # the frame is BGR, as from OpenCV
        crop, _ = hand_crops(image, [box], [side], predictor.size)
        (hand,) = predictor.predict(frame, [box], sides=[side])
        crops.append(crop[0])
        boxes.append(box)
        sides.append(side)
        for key in TOLERANCE:
            reference[key].append(getattr(hand, key))
    return Hands(
        np.stack(crops),
        np.asarray(boxes, np.float64),
        np.array([[s == "left"] for s in sides]),
        {k: np.stack(v) for k, v in reference.items()},
    )


def _latency_percentiles(samples: list[float]) -> dict[str, float | None]:
    """p50, p90 and p99 of the requests' latencies (ms, ``measure.stats``), None without any."""
    from handssca.measure import stats

    timing = stats(samples) if samples else {}
    keys = {"p50_ms": "median_ms", "p90_ms": "p90_ms", "p99_ms": "p99_ms"}
    return {key: round(float(timing[name]), 2) if timing else None for key, name in keys.items()}


def _server_statistics(url: str, protocol: str) -> dict[str, dict[str, int]]:
    """Triton's cumulative statistics per model: inferences, executions, and nanoseconds queued
    and computing (input, infer, output)."""
    from .client import tritonclient_module

    module = tritonclient_module(protocol)
    client = module.InferenceServerClient(url)
    try:
        stats = (
            client.get_inference_statistics(as_json=True) if protocol == "grpc" else client.get_inference_statistics()
        )
    finally:
        client.close()
    found = {}
    for model in stats["model_stats"]:
        times = model.get("inference_stats", {})
        found[model["name"]] = {
            "inferences": int(model.get("inference_count", 0)),
            "executions": int(model.get("execution_count", 0)),
            "queue_ns": int(times.get("queue", {}).get("ns", 0)),
            "compute_ns": sum(
                int(times.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer", "compute_output")
            ),
        }
    return found


def _per_model(before: dict, after: dict) -> dict[str, dict]:
    """Per model over one level: mean batch, and the mean milliseconds a request spent queued and
    computing there (Triton's own split of the latency)."""
    result = {}
    for name, end in after.items():
        start = before.get(name, dict.fromkeys(end, 0))
        inferences = end["inferences"] - start["inferences"]
        executions = end["executions"] - start["executions"]
        if not inferences:
            continue
        result[name] = {
            "mean_batch": round(inferences / executions, 2) if executions else None,
            "queue_ms": round((end["queue_ns"] - start["queue_ns"]) / inferences / 1e6, 2),
            "compute_ms": round((end["compute_ns"] - start["compute_ns"]) / inferences / 1e6, 2),
        }
    return result


def server_rss_mb(server) -> float | None:
    """Resident memory of Triton and its python stubs together (MB), from /proc."""
    pids = [server.process.pid] + [pid for pids in server._stubs().values() for pid in pids]
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1) if total else None


def drive(
    url: str, protocol: str, hands: Hands, concurrency: int, duration_s: float, server=None, kill_every_s: float = 0.0
) -> dict:
    """``concurrency`` clients for ``duration_s`` against a running server: one level's figures.
    With ``server``, its memory is sampled every second; with ``kill_every_s`` > 0 the network's
    python step is SIGKILLed that often (the watchdog's test) and each kill is timed: recovery,
    from the kill to the first answer to a request sent after it; and from the kill to the last
    error it caused (the requests the dead step held are failed last)."""
    import os
    import signal

    from .client import HandMeshClient

    latencies: list[float] = []
    errors: list[str] = []
    outcomes: list[tuple[float, float, bool]] = []  # (start, end, answered) of every request
    kills: list[float] = []
    memory: list[tuple[float, float | None]] = []
    parity = {"failures": 0, "max_diff": {k: 0.0 for k in TOLERANCE}}
    lock = threading.Lock()
    start_line = threading.Barrier(concurrency + 1, timeout=120)
    stop_at = [0.0]

    def record_error(exc: BaseException) -> None:
        with lock:
            errors.append(str(exc) or type(exc).__name__)

    def client_loop(index: int) -> None:
        try:
            client = HandMeshClient(url, protocol)
        except Exception as exc:  # counted, and the others still start
            record_error(exc)
            start_line.wait()
            return
        with client:
            start_line.wait()
            n = index
            while time.perf_counter() < stop_at[0]:
                i = n % len(hands.crops)
                n += concurrency
                begin = time.perf_counter()
                try:
                    out = client.infer(hands.crops[i : i + 1], hands.boxes[i : i + 1], hands.is_left[i : i + 1])
                except Exception as exc:  # every failed request is counted, never dropped
                    record_error(exc)
                    with lock:
                        outcomes.append((begin, time.perf_counter(), False))
                    continue
                with lock:
                    outcomes.append((begin, time.perf_counter(), True))
                elapsed = (time.perf_counter() - begin) * 1e3
                diffs = {k: float(np.abs(out[k][0] - hands.reference[k][i]).max()) for k in TOLERANCE}
                with lock:
                    latencies.append(elapsed)
                    for k, d in diffs.items():
                        parity["max_diff"][k] = max(parity["max_diff"][k], d)
                    if any(d > TOLERANCE[k] for k, d in diffs.items()):
                        parity["failures"] += 1

    def watch():
        next_kill = begin + kill_every_s
        while time.perf_counter() < stop_at[0]:
            now = time.perf_counter()
            if int(now - begin) >= len(memory):
                memory.append((round(now - begin, 1), server_rss_mb(server)))
            if kill_every_s > 0 and now >= next_kill and now < stop_at[0] - 1.0:
                stubs = sorted(server._stubs().get(NETWORK, ()))
                if stubs:
                    os.kill(stubs[0], signal.SIGKILL)
                    kills.append(now)
                next_kill += kill_every_s
            time.sleep(0.05)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    before = _server_statistics(url, protocol)
    stop_at[0] = time.perf_counter() + duration_s
    begin = time.perf_counter()
    watcher = threading.Thread(target=watch, daemon=True) if server is not None else None
    if watcher is not None:
        watcher.start()
    start_line.wait()
    for t in threads:
        t.join()
    if watcher is not None:
        watcher.join()
    wall = time.perf_counter() - begin
    models = _per_model(before, _server_statistics(url, protocol))
    faults = None
    if kills:
        bounds = [*kills[1:], float("inf")]
        spans = list(zip(kills, bounds, strict=True))
        recovery = [
            min([end - kill for start, end, ok in outcomes if ok and kill < start < bound], default=None)
            for kill, bound in spans
        ]
        last_error = [
            max([end - kill for start, end, ok in outcomes if not ok and kill <= end < bound], default=0.0)
            for kill, bound in spans
        ]
        faults = {
            "kills": len(kills),
            "every_s": kill_every_s,
            "lost_requests": len(errors),
            "recovery_s": [None if r is None else round(r, 2) for r in recovery],
            "last_error_s": [round(r, 2) for r in last_error],
            "restarts": dict(server.restarts),
        }
    return {
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "parity_failures": parity["failures"],
        "max_diff": {k: float(f"{v:.3g}") for k, v in parity["max_diff"].items()},
        "hands_per_s": round(len(latencies) / wall, 2),
        **_latency_percentiles(latencies),
        "mean_network_batch": models.get(NETWORK, {}).get("mean_batch"),
        "models": models,
        "server_rss_mb": memory,
        "faults": faults,
    }


def in_process_rate(predictor, hands: Hands, duration_s: float) -> float:
    """Hands per second of the runtime itself doing the server's work for one hand at a time (one
    thread, no network between): normalise the crop, run the network, MANO and the keypoints."""
    from handssca.runtime.crop import normalise
    from handssca.runtime.predictor import hand_affines, hand_arrays

    sides = ["left" if left else "right" for left in hands.is_left[:, 0]]
    affines = hand_affines(hands.boxes, sides, predictor.size)
    count, begin = 0, time.perf_counter()
    while time.perf_counter() - begin < duration_s:
        i = count % len(hands.crops)
        outputs = predictor.model.run(normalise(hands.crops[i : i + 1], predictor.mean, predictor.std))
        hand_arrays(
            outputs, affines[i : i + 1], sides[i : i + 1], predictor.size, predictor.mano, predictor.fingertip_ids
        )
        count += 1
    return round(count / (time.perf_counter() - begin), 2)


def run_load_test(
    model: str | Path,
    *,
    concurrency=(1, 2, 4, 8),
    duration_s: float = 10.0,
    protocol: str = "grpc",
    environment=None,
    mano=None,
    hands: int = 16,
    options: ServingOptions | None = None,
    modes=(True, False),
    kill_step_every_s: float = 0.0,
    progress=print,
) -> dict:
    """The load test's report (a dict ready for JSON): per batching mode, per concurrency level,
    and the in-process runtime's own rate for the same work, all measured side by side."""
    from handssca.measure import load_average
    from handssca.runtime.mano.load import load_hand_model
    from handssca.runtime.predictor import HandMeshPredictor

    from .server import TritonServer

    base = options or ServingOptions()
    mano_model, fingertip_ids, mano_label = load_hand_model(mano)
    predictor = HandMeshPredictor.open(model, mano_model, fingertip_ids)
    hand_set = make_hands(predictor, hands)
    report = {
        "model": str(model),
        "network": {k: predictor.model.metadata.get(k) for k in ("model_config", "weights", "precision")},
        "protocol": protocol,
        "duration_s": duration_s,
        "hands": hands,
        "kill_step_every_s": kill_step_every_s,
        "mano": mano_label,
        "tolerance": TOLERANCE,
        "options": {k: v for k, v in vars(base).items() if k != "dynamic_batching"},
        "load_average_before": load_average(),
        "in_process_hands_per_s": None,
        "modes": {},
    }
    names = {True: "dynamic batching", False: "no batching"}
    with tempfile.TemporaryDirectory(prefix="handssca-load-") as folder, contextlib.ExitStack() as stack:
        # Every mode's server runs from the start and the levels alternate between them, so each
        # comparison is measured side by side under the same machine load; an idle server costs nothing.
        servers = {}
        for dynamic in modes:
            repo = Path(folder) / ("dynamic" if dynamic else "single")
            write_repository(
                model, repo, mano=mano, options=ServingOptions(**{**vars(base), "dynamic_batching": dynamic})
            )
            # With faults injected, enough restarts for every planned kill.
            restarts = 5 + (int(duration_s * len(concurrency) / kill_step_every_s) if kill_step_every_s else 0)
            server = stack.enter_context(
                TritonServer(
                    repo, environment=environment, log=Path(folder) / f"{repo.name}.log", max_restarts=restarts
                )
            )
            servers[names[dynamic]] = server
            report["modes"][names[dynamic]] = {"exit_code": None, "levels": []}
        urls = {mode: s.grpc_url if protocol == "grpc" else s.http_url for mode, s in servers.items()}
        for url in urls.values():
            drive(url, protocol, hand_set, 1, min(2.0, duration_s))  # warm-up: first calls allocate
        yardstick_s = min(duration_s, IN_PROCESS_S)  # a rate, steady after seconds: a soak need not wait
        progress(f"in-process runtime, one hand at a time, {yardstick_s:.0f} s ...")
        report["in_process_hands_per_s"] = in_process_rate(predictor, hand_set, yardstick_s)
        for k, n in enumerate(concurrency):
            order = list(urls) if k % 2 == 0 else list(reversed(urls))
            for mode in order:
                progress(f"{mode}: {n} clients, {duration_s:.0f} s ...")
                level = drive(urls[mode], protocol, hand_set, n, duration_s, servers[mode], kill_step_every_s)
                report["modes"][mode]["levels"].append(level)
                progress(format_level(level))
        stack.close()  # stop every server (drained, SIGTERM) and record how each exited
        for mode, server in servers.items():
            report["modes"][mode]["exit_code"] = server.exit_code
    report["load_average_after"] = load_average()
    return report


def format_level(level: dict) -> str:
    network = level["models"].get(NETWORK, {})
    return (
        f"  {level['concurrency']:>3} clients  {level['hands_per_s']:>7.1f} hands/s  p50 {level['p50_ms']} ms  "
        f"p90 {level['p90_ms']} ms  p99 {level['p99_ms']} ms  errors {level['errors']}  "
        f"parity failures {level['parity_failures']}  network: batch {level['mean_network_batch']}, "
        f"queued {network.get('queue_ms')} ms, computing {network.get('compute_ms')} ms"
    )


def summary_table(report: dict) -> str:
    lines = [
        f"in-process runtime (batch 1, one thread): {report['in_process_hands_per_s']} hands/s",
        "| batching | clients | hands/s | p50 ms | p90 ms | p99 ms | errors | parity failures | network batch "
        "| network queue ms | network compute ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, result in report["modes"].items():
        for lv in result["levels"]:
            network = lv["models"].get(NETWORK, {})
            lines.append(
                f"| {mode} | {lv['concurrency']} | {lv['hands_per_s']} | {lv['p50_ms']} | {lv['p90_ms']} | "
                f"{lv['p99_ms']} | {lv['errors']} | {lv['parity_failures']} | {lv['mean_network_batch']} | "
                f"{network.get('queue_ms')} | {network.get('compute_ms')} |"
            )
    for mode, result in report["modes"].items():
        for lv in result["levels"]:
            memory = [mb for _, mb in lv.get("server_rss_mb") or [] if mb]
            if memory:
                lines.append(
                    f"{mode}, {lv['concurrency']} clients: server memory {memory[0]} -> {memory[-1]} MB "
                    f"(max {max(memory)})"
                )
            if lv.get("faults"):
                f = lv["faults"]
                lines.append(
                    f"{mode}, {lv['concurrency']} clients: {f['kills']} kills of the network step, "
                    f"{f['lost_requests']} requests lost; answers again after (s): {f['recovery_s']}; "
                    f"last error after (s): {f['last_error_s']}"
                )
    return "\n".join(lines)


def plot_report(report: dict, path: Path) -> Path:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for mode, result in report["modes"].items():
        n = [lv["concurrency"] for lv in result["levels"]]
        left.plot(n, [lv["hands_per_s"] for lv in result["levels"]], marker="o", label=mode)
        right.plot(n, [lv["p50_ms"] for lv in result["levels"]], marker="o", label=f"{mode} p50")
        right.plot(n, [lv["p99_ms"] for lv in result["levels"]], marker="x", linestyle="--", label=f"{mode} p99")
    left.axhline(report["in_process_hands_per_s"], color="grey", linestyle=":", label="in-process runtime, batch 1")
    left.set(xlabel="concurrent clients", ylabel="hands / s", title="Throughput", xscale="log", xticks=n)
    left.set_ylim(bottom=0)
    right.set(xlabel="concurrent clients", ylabel="latency (ms)", title="Latency", xscale="log", xticks=n)
    for ax in (left, right):
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xticklabels([str(v) for v in n])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    env = report.get("environment", {})
    fig.suptitle(
        f"Triton on {env.get('cpu', 'this machine')} ({env.get('cpu_count', '?')} cores), {report['protocol']}"
    )
    fig.tight_layout()
    import io

    from handssca.runtime.files import write_atomically

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return write_atomically(path, buffer.getvalue())


BATCHING_MODES = {"both": (True, False), "dynamic": (True,), "none": (False,)}


@dataclass
class LoadTestOptions:
    """``handssca serve load-test``: the levels, how long each runs, what is sent, where it goes."""

    output: str = "benchmarks/results/triton_cpu"  # folder for load_test.json, table.md, load_test.png
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16)
    duration_s: float = 10.0  # per level
    protocol: str = "grpc"
    hands: int = 16  # distinct hands sent
    environment: str | None = None  # the server environment (None: as 'serve setup')
    batching: str = "both"  # the servers to run: both, dynamic, none
    kill_step_every_s: float = 0.0  # SIGKILL the network's python step this often (0: never)
    mano: str | None = None  # the mesh model's MANO (None: the built-in stand-in hand)


def run_load_test_command(model: str | Path, options: LoadTestOptions, serving: ServingOptions | None = None) -> str:
    """``handssca serve load-test``: ``run_load_test``, its JSON, table and plot written
    atomically, and the table; ServingError when requests failed or differed from the runtime
    (requests lost to python steps killed on purpose are the measurement, not a failure)."""
    from handssca.measure import environment, write_json
    from handssca.runtime.files import check_writable, write_atomically

    if options.batching not in BATCHING_MODES:
        raise ServingError(f"--batching {options.batching}: expected one of {', '.join(BATCHING_MODES)}")
    output = Path(options.output)
    check_writable(output / "load_test.json")
    report = run_load_test(
        model, concurrency=options.concurrency, duration_s=options.duration_s, protocol=options.protocol,
        environment=options.environment, mano=options.mano, hands=options.hands, options=serving,
        modes=BATCHING_MODES[options.batching], kill_step_every_s=options.kill_step_every_s,
    )  # fmt: skip
    report = {"environment": environment(), **report}
    table = summary_table(report)
    write_json(output / "load_test.json", report)
    write_atomically(output / "table.md", (table + "\n").encode())
    plot = plot_report(report, output / "load_test.png")
    levels = [level for mode in report["modes"].values() for level in mode["levels"]]
    failures = sum(lv["parity_failures"] + (0 if lv["faults"] else lv["errors"]) for lv in levels)
    if failures:
        raise ServingError(f"{failures} requests failed or differed from the runtime (see {output / 'load_test.json'})")
    return f"{table}\nwrote {output / 'load_test.json'}, {output / 'table.md'} and {plot}"
