"""Soak: `handssca webcam --headless` over a long video, its resident memory sampled every second.

Two runs of the command as a user runs it, each in its own process:
1. ``--frames`` (20,000) frames of the rendered stand-in hand (48 frames repeated), the demo's
   tiny network, one hand followed from its box (``--no-finder``: the finder cannot see the
   stand-in hand);
2. ``--finder-frames`` (2,000) frames of the two-hand video made from the photographs, with the
   hand finder and tracking on.
Per run: frames, FPS, the resident memory after the first tenth of the frames (warm) and at the
end, its growth per 1,000 frames, and the samples. The serving soak is ``handssca serve
load-test MODEL --batching none --concurrency 4 --duration 600`` (its JSON samples Triton's memory).

    python benchmarks/soak_webcam.py -o benchmarks/results/soak
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from handssca.measure import environment, write_json
from handssca.runtime.webcam import HeadlessOutputs


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def write_long_video(path: Path, frames: list[np.ndarray], count: int, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    for i in range(count):
        writer.write(frames[i % len(frames)])
    writer.release()
    return path


def soak(command: list[str], out: Path, frames: int) -> dict:
    """Runs ``command`` (a headless webcam writing to ``out``), sampling its memory every second."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples = []
    begin = time.monotonic()
    while process.poll() is None:
        lines = out / HeadlessOutputs.PARTIAL_LINES  # frames.jsonl while the run writes it
        done = lines.stat().st_size if lines.is_file() else 0
        memory = rss_mb(process.pid)
        if memory is not None:
            samples.append(
                {"s": round(time.monotonic() - begin, 1), "bytes_of_jsonl": done, "rss_mb": round(memory, 1)}
            )
        time.sleep(1.0)
    stdout, stderr = process.communicate()
    summary = json.loads((out / "summary.json").read_text())
    if process.returncode != 0 or summary["frames"] != frames:
        raise SystemExit(f"the soak run failed ({process.returncode}): {stderr[-2000:]}")
    warm = samples[max(1, len(samples) // 10)]["rss_mb"]
    end = samples[-1]["rss_mb"]
    return {
        "frames": summary["frames"],
        "fps": round(summary["fps"], 1),
        "seconds": round(time.monotonic() - begin, 1),
        "rss_warm_mb": warm,
        "rss_end_mb": end,
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "growth_mb_per_1000_frames": round((end - warm) / (0.9 * frames / 1000), 3),
        "tracking": summary.get("tracking"),
        "samples": samples,
        "stdout": stdout.strip().splitlines(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="benchmarks/results/soak")
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--finder-frames", type=int, default=2000)
    args = parser.parse_args()
    from handssca.demo import SHIPPED_CHECKPOINT
    from handssca.export import export_onnx
    from handssca.runtime.mano.builtin import build_builtin_hand
    from handssca.runtime.photos import two_hands_sequence
    from handssca.training.checkpoint import load_network
    from handssca.training.synthetic import render_sequence

    report = {"environment": environment()}
    with tempfile.TemporaryDirectory(prefix="handssca-soak-") as tmp:
        folder = Path(tmp)
        model = folder / "tiny.onnx"
        export_onnx(load_network(SHIPPED_CHECKPOINT)[0], model, validate=False)
        images, truth = render_sequence(*build_builtin_hand(), 48, seed=0)
        stand_in = write_long_video(folder / "stand_in.mp4", images, args.frames)
        box = ",".join(str(v) for v in truth[0]["box"] + [-8, -8, 8, 8])
        photos = write_long_video(folder / "photos.mp4", [f.image for f in two_hands_sequence(96)], args.finder_frames)
        base = [sys.executable, "-m", "handssca.cli", "webcam", "--model", str(model), "--headless"]
        runs = {
            "stand_in_no_finder": ([*base, "--source", str(stand_in), "--box", box, "--no-finder"], args.frames),
            "photos_with_finder": ([*base, "--source", str(photos)], args.finder_frames),
        }
        for name, (command, frames) in runs.items():
            out = folder / name
            print(f"{name}: {frames} frames ...", flush=True)
            report[name] = soak([*command, "-o", str(out)], out, frames)
            row = report[name]
            print(
                f"  {row['fps']} FPS; resident {row['rss_warm_mb']:.0f} MB warm -> {row['rss_end_mb']:.0f} MB at the "
                f"end (max {row['rss_max_mb']:.0f}): {row['growth_mb_per_1000_frames']:+.3f} MB per 1000 frames"
            )
    write_json(Path(args.output) / "soak_webcam.json", report)
    print(f"wrote {Path(args.output) / 'soak_webcam.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
