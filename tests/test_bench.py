"""The benchmark harness on a tiny model: every backend is timed or skipped with a reason."""

from __future__ import annotations

import json

import pytest

from handssca.bench import STAGES, format_bench_table, run_bench
from handssca.models import HandSSCAConfig
from handssca.progress import without_progress

from conftest import TINY as TINY_FIELDS

TINY = HandSSCAConfig(**TINY_FIELDS)


@pytest.mark.slow  # a whole command end to end (training, bench, int8, the demo)
def test_bench_report_is_complete_and_consistent(tmp_path):
    from handssca.runtime.mano.builtin import build_builtin_hand
    from handssca.training.synthetic import SynthOptions, make_synthetic_dataset

    data = tmp_path / "data"
    options = SynthOptions(train=1, evaluation=3, seed=2)
    make_synthetic_dataset(data, *build_builtin_hand(), options, show_progress=False)
    report = run_bench(
        tmp_path / "out",
        model_config=TINY,
        batches=(1, 2),
        runs=3,
        compile_model=False,
        scan_runs=2,
        show_progress=False,
        data_root=str(data),
        data_samples=3,
        int8_images=4,
    )
    tmp_path = tmp_path / "out"
    int8 = next(r for r in report["backends"] if r["precision"] == "int8")
    on_disk = json.loads((tmp_path / "bench.json").read_text())
    assert [r["backend"] for r in on_disk["backends"]] == [r["backend"] for r in report["backends"]]
    names = {(r["backend"], r["precision"]) for r in report["backends"]}
    expected = {
        ("pytorch-cpu", "fp32"),
        ("pytorch-cpu-rewritten", "fp32"),
        ("pytorch-compile-cpu", "fp32"),
        ("pytorch-cuda-reference-scan", "fp32"),
        ("pytorch-cuda-mamba-ssm", "fp32"),
        ("onnxruntime-cpu", "fp32"),
        ("onnxruntime-cpu-portable", "fp32"),
        ("onnxruntime-cpu", "fp16"),
        ("onnxruntime-cpu", "int8"),
        ("onnxruntime-cuda", "fp32"),
        ("tensorrt", "fp32"),
        ("tensorrt", "fp16"),
    }
    assert expected <= names
    for row in report["backends"]:
        if row.get("skipped"):
            assert isinstance(row["skipped"], str) and row["skipped"] and "latency" not in row
            continue
        assert set(row["latency"]) == {"1", "2"}
        for timing in row["latency"].values():
            assert timing["median_ms"] > 0 and timing["p90_ms"] >= timing["median_ms"] >= timing["min_ms"]
            assert len(timing["samples_ms"]) >= 3 and timing["throughput_img_s"] > 0
        assert set(row["end_to_end_ms"]) == set(STAGES) and row["end_to_end_ms"]["total_ms"] > 0
        if row["backend"] == "pytorch-cpu":
            assert row["time_vs_pytorch"] == {"1": 1.0, "2": 1.0} and row["parity"] is None
        else:
            parity = row["parity"]
            assert set(parity) == {"vertices_mm", "joints_mm", "keypoints_px", "pose", "shape"}
            limit = 1e-3 if row["precision"] == "fp32" else 10.0  # mm; fp16 and int8 are only reported
            assert parity["vertices_mm"]["max_abs"] < limit, row["backend"]
        metrics = row["dataset_metrics"]
        assert metrics["count"] == 3 and metrics["pa_mpjpe_mm"] > 0
        reference = report["backends"][0]["dataset_metrics"]
        if row["precision"] == "fp32":  # the same model scores the same on every fp32 backend
            assert abs(metrics["pa_mpjpe_mm"] - reference["pa_mpjpe_mm"]) < 1e-3, row["backend"]
        if row["backend"] != "pytorch-cpu":  # the raw shift of every prediction, beside the metrics
            shift = metrics["shift_vs_pytorch"]["joints_mm"]
            assert shift["max"] >= shift["p90"] >= shift["median"] >= 0
        assert row["time_vs_pytorch"]["1"] > 0
    assert {"spatial", "channel"} == set(report["selective_scan"])
    assert report["selective_scan"]["spatial"]["cpu-kernel"]["median_ms"] > 0
    assert all((tmp_path / p).is_file() for p in ("latency_by_backend.png", "throughput_by_batch.png"))
    table = format_bench_table(report)
    assert "skipped: no CUDA GPU" in table or "pytorch-cuda-reference-scan" in table
    assert table.count("\n") >= len(report["backends"]) + 2 and "end to end" in table
    assert "on the data set (3 samples)" in table and "dPA-MPJPE" in table
    assert "median ms by batch" in table and "onnxruntime-cpu int8" in table
    env = report["environment"]
    assert env["scan_kernel"]["isa"] and len(env["load_average"]) == 3 and len(env["load_average_after_timing"]) == 3
    assert int8["latency"]["1"]["median_ms"] > 0 and int8["size_mb"] > 0


@pytest.mark.slow  # a whole command end to end (training, bench, int8, the demo)
def test_bench_command_prints_and_writes_the_table(tmp_path, capsys):
    from pathlib import Path

    from handssca.cli import main

    tiny = Path(__file__).parent.parent / "configs" / "model" / "tiny.yaml"
    assert main(["bench", "--config", str(tiny), "--batches", "1", "--runs", "3", "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    table = (tmp_path / "table.txt").read_text()
    assert "onnxruntime-cpu" in table and "skipped:" in table and "scan spatial" in table
    assert table.splitlines()[0] in printed and (tmp_path / "bench.json").is_file()


def test_an_interrupted_bench_leaves_no_empty_folder(tmp_path, monkeypatch):
    import handssca.bench as bench

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("handssca.training.checkpoint.load_network", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.run_bench(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ctrl_c_in_a_command_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    from handssca.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("handssca.training.checkpoint.load_network", interrupted)
    assert main(["bench", "-o", str(tmp_path / "out")]) == 130
    lines = without_progress(capsys.readouterr().err)  # the line saying what it loads, then this alone
    assert lines == ["handssca bench: interrupted"] and not (tmp_path / "out").exists()


def test_the_scan_shapes_come_from_the_model_config():
    from dataclasses import replace
    from pathlib import Path

    from handssca.scan_bench import model_scan_shapes
    from handssca.training.config import load_model_config

    # The shapes benchmarks/bench_selective_scan_cpu.py had written out for the paper's model.
    assert model_scan_shapes(HandSSCAConfig()) == {"spatial": (1, 2048, 1024, 16, 4), "channel": (1, 128, 8192, 16, 4)}
    tiny = load_model_config(Path(__file__).parent.parent / "configs" / "model" / "tiny.yaml", {})
    assert model_scan_shapes(tiny) == {"spatial": (1, 256, 256, 16, 4), "channel": (1, 64, 512, 16, 4)}
    assert model_scan_shapes(tiny, batch=8)["channel"] == (8, 64, 512, 16, 4)
    assert set(model_scan_shapes(replace(tiny, attention="ssa"))) == {"spatial"}
    assert model_scan_shapes(replace(tiny, attention="none")) == {}


def test_the_scan_shapes_are_those_the_network_calls_the_scan_with(monkeypatch):
    import torch

    import handssca.models.ss2d as ss2d
    from handssca.models import HandSSCA
    from handssca.runtime.scan.node import scan_shapes
    from handssca.scan_bench import model_scan_shapes

    config = HandSSCAConfig(**TINY_FIELDS, d_state=4)
    called, scan = [], ss2d.selective_scan

    def recording(*args):
        called.append(scan_shapes(*args[:5]))
        return scan(*args)

    monkeypatch.setattr(ss2d, "selective_scan", recording)
    with torch.inference_mode():
        HandSSCA(config).eval()(torch.zeros(2, 3, 128, 128))
    assert called == list(model_scan_shapes(config, batch=2).values())


def test_one_routine_times_every_scan_implementation():
    import numpy as np

    from handssca.scan_bench import ScanImpl, time_scans

    def total(x):
        return lambda: float(np.sum(x["u"]))

    rows = time_scans(
        {"spatial": (1, 8, 16, 4, 2), "channel": (1, 4, 32, 4, 2)},
        {"sum": ScanImpl(total, 0, 3), "sum again": ScanImpl(total, 1, 2), "gpu": "no CUDA GPU on this machine"},
        batches=(1, 2),
        interleaved=("sum", "sum again"),
        after=lambda inputs, calls, timings: {"same": calls["sum"]() == calls["sum again"]()},
    )
    assert [(r["scan"], r["shape"]["batch"]) for r in rows] == [
        ("spatial", 1),
        ("spatial", 2),
        ("channel", 1),
        ("channel", 2),
    ]
    for row in rows:
        assert row["same"] and row["timings"]["gpu"] == {"skipped": "no CUDA GPU on this machine"}
        assert len(row["timings"]["sum"]["samples_ms"]) == 3 == len(row["timings"]["sum again"]["samples_ms"])
    assert rows[3]["shape"] == {"batch": 2, "dim": 4, "L": 32, "N": 4, "G": 2}


def test_model_timing_is_interleaved_with_throughput():
    from handssca.measure import random_images, time_models

    images = random_images(4, 16)
    assert images.shape == (4, 3, 16, 16) and (images == random_images(4, 16)).all()
    seen, rounds = [], []
    timings = time_models(
        {"a": lambda x: seen.append(("a", len(x))), "b": lambda x: seen.append(("b", len(x)))},
        images,
        1,
        3,
        after_round=lambda: rounds.append(len(seen)),
    )
    assert seen == [("a", 4), ("b", 4)] * 4 and rounds == [4, 6, 8]
    for timing in timings.values():
        assert len(timing["samples_ms"]) == 3 and timing["throughput_img_s"] == 4e3 / timing["median_ms"]


def test_load_test_percentiles_come_from_measure():
    import numpy as np

    from handssca.serving.load_test import _latency_percentiles

    samples = list(np.random.default_rng(0).exponential(5.0, 200))
    assert _latency_percentiles(samples) == {
        key: round(float(np.percentile(samples, q)), 2) for key, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99))
    }
    assert _latency_percentiles([]) == {"p50_ms": None, "p90_ms": None, "p99_ms": None}


def test_the_hand_finder_benchmark_says_in_one_line_what_it_needs():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    hide = "import sys, runpy; sys.modules['ai_edge_litert'] = None; sys.argv = ['bench_hand_finder.py']; "
    run = subprocess.run(
        [sys.executable, "-c", hide + "runpy.run_path('benchmarks/bench_hand_finder.py', run_name='__main__')"],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert len(run.stderr.strip().splitlines()) == 1 and "needs ai_edge_litert: pip install -e '.[dev]'" in run.stderr
