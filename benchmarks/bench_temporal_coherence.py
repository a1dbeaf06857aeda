"""Temporal coherence: how much a still hand jitters, with the webcam's filters off and on, and
what the filters cost in delay.

Two inputs, each a still scene shifted every frame by a random sub-pixel amount (up to half a
pixel each way, the known motion) and given camera noise (Gaussian, sigma 2 grey levels), at 30
frames a second:
- ``photographs``: the left hand of the back_projection photograph and its mirror image as a
  right hand, side by side, found and tracked by the finder as the webcam does;
- ``rendered``: the stand-in hand rendered from the hand model (the demo's), followed from its
  box. The shipped network was trained on such renders and has never seen a real hand, so on the
  photographs its hands are not hands (the landmark model drops its tracks within a few frames):
  the settings are chosen on the rendered hand, where the network's own noise is what is filtered.
The webcam's own FrameStep (tracking and the network) runs once per input with smoothing off;
each filter setting is then replayed over the same per-track parameters, through the same
``hand_from_parameters`` the webcam reports with, so the settings differ in nothing else. Per setting:
- keypoint jitter, px: the frame-to-frame motion of the 2D keypoints less the known shift, mean
  and p90 over joints and frames;
- joint acceleration, mm/frame^2: |J(t+1) - 2 J(t) + J(t-1)| of the camera-space joints;
- the delay the filter adds: the lag of its step response (a hand that turns 30 degrees and moves
  5 cm between two frames) until it is 90% there, in frames and ms at 30 frames a second;
- its compute time per hand and frame.
Writes ``temporal_coherence.json`` and ``temporal_coherence.png`` to ``-o``.

    python benchmarks/bench_temporal_coherence.py -o benchmarks/results/temporal_coherence
    python benchmarks/bench_temporal_coherence.py --model hand.onnx   # another network (default:
                                                                       # the shipped one, exported; needs [train])
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from handssca.measure import environment, stats, write_json
from handssca.runtime.camera import default_intrinsics
from handssca.runtime.hands.filters import HAND_SMOOTHING, HandFilter
from handssca.runtime.mano.conventions import axis_angle_to_quaternion
from handssca.runtime.photos import load_photo
from handssca.runtime.predictor import PredictorOptions, open_predictor
from handssca.runtime.webcam import FrameStep, WebcamOptions

FPS = 30.0
SHAPE = HAND_SMOOTHING["shape"]
# The settings compared: (min_cutoff Hz, beta, d_cutoff Hz) of the rotations and the translation.
SETTINGS = {
    "off": None,
    "chosen": HAND_SMOOTHING,  # min_cutoff 0.5 Hz; beta 4 (rotations), 16 (translation)
    "lighter": {"rotation": (1.0, 4.0, 1.0), "shape": SHAPE, "translation": (1.0, 16.0, 1.0)},
    "heavier": {"rotation": (0.3, 4.0, 1.0), "shape": SHAPE, "translation": (0.3, 16.0, 1.0)},
    "faster": {"rotation": (0.5, 8.0, 1.0), "shape": SHAPE, "translation": (0.5, 32.0, 1.0)},
    "slower": {"rotation": (0.5, 1.0, 1.0), "shape": SHAPE, "translation": (0.5, 4.0, 1.0)},
    "first_guess": {"rotation": (1.0, 0.5, 1.0), "shape": SHAPE, "translation": (1.0, 2.0, 1.0)},
}


def photographs(size=(640, 360)) -> tuple[np.ndarray, WebcamOptions]:
    """The left-hand photograph and its mirror image side by side, and the webcam's options (the
    finder on)."""
    left = load_photo("back_projection")
    width, height = size
    scene = np.empty((height, width, 3), np.uint8)
    scene[:] = np.asarray(left[:8].reshape(-1, 3).mean(0), np.uint8)  # the photograph's wall
    for photo, centre in ((left, 0.27), (np.ascontiguousarray(left[:, ::-1]), 0.73)):
        h, w = photo.shape[:2]
        x, y = int(width * centre - w / 2), int(height / 2 - h / 2)
        scene[max(y, 0) : y + h, max(x, 0) : x + w] = photo[max(-y, 0) : height - y, max(-x, 0) : width - x]
    return scene, WebcamOptions(smooth=False, headless=True)


def rendered() -> tuple[np.ndarray, WebcamOptions]:
    """The demo's rendered stand-in hand, and the webcam's options (followed from its box, as the
    demo does: the finder does not see it)."""
    from handssca.runtime.mano.builtin import build_builtin_hand
    from handssca.training.synthetic import render_sequence

    images, truth = render_sequence(*build_builtin_hand(), 1)
    box = tuple(truth[0]["box"] + [-8, -8, 8, 8])
    return images[0], WebcamOptions(smooth=False, headless=True, find_hands=False, box=box)


def held_still(scene: np.ndarray, frames: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``scene`` held still with camera noise: (frames, the known shift (frames, 2) px of each)."""
    import cv2

    rng = np.random.default_rng(seed)
    size = scene.shape[1::-1]
    shifts = rng.uniform(-0.5, 0.5, (frames, 2))
    images = []
    for dx, dy in shifts:
        moved = cv2.warpAffine(scene, np.array([[1, 0, dx], [0, 1, dy]]), size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
        noisy = moved.astype(np.float32) + rng.normal(0, 2.0, moved.shape)
        images.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return images, shifts


def raw_tracks(predictor, images: list[np.ndarray], options: WebcamOptions) -> dict[int, list[tuple]]:
    """The webcam's step with smoothing off: per track, [(frame, hand, K)] with the network's own
    parameters (hand_from_parameters of them, as the webcam reports them)."""
    step = FrameStep(predictor, options)
    tracks: dict[int, list[tuple]] = {}
    for index, image in enumerate(images):
        K = default_intrinsics(image.shape[1], image.shape[0])
        pairs = step(image, index, index / FPS, 0.0).pairs
        for track, hand in pairs:
            tracks.setdefault(track.id, []).append((index, hand, K))
    return tracks


def replay(predictor, step_offsets: dict, tracks: dict, settings: dict | None) -> tuple[dict, list[float]]:
    """Each track's hands through a fresh filter of ``settings`` (None: unfiltered); returns
    {track: [(frame, keypoints (21, 2), camera joints (21, 3))]} and the filter's times (ms)."""
    out, times = {}, []
    for track_id, hands in tracks.items():
        smoother = None if settings is None else HandFilter(step_offsets[hands[0][1].side], settings)
        rows = []
        for index, hand, K in hands:
            pose, shape, translation = hand.pose, hand.shape, hand.translation
            if smoother is not None:
                start = time.perf_counter()
                pose, shape, translation = smoother(pose, shape, translation, index / FPS)
                times.append((time.perf_counter() - start) * 1e3)
            settled = predictor.hand_from_parameters(hand, pose, shape, translation, K)
            rows.append((index, settled.keypoints_2d, settled.joints_camera))
        out[track_id] = rows
    return out, times


def coherence(replayed: dict, shifts: np.ndarray) -> dict:
    """Keypoint jitter (px, less the known shift) and joint acceleration (mm/frame^2)."""
    jitter, acceleration = [], []
    for rows in replayed.values():
        for (i0, k0, _), (i1, k1, _) in zip(rows, rows[1:], strict=False):
            if i1 == i0 + 1:
                motion = (k1 - k0) - (shifts[i1] - shifts[i0])
                jitter.extend(np.linalg.norm(motion, axis=1))
        for a, b, c in zip(rows, rows[1:], rows[2:], strict=False):
            if c[0] == a[0] + 2:
                acceleration.extend(np.linalg.norm(c[2] - 2 * b[2] + a[2], axis=1) * 1e3)
    return {
        "jitter_px_mean": float(np.mean(jitter)),
        "jitter_px_p90": float(np.quantile(jitter, 0.9)),
        "acceleration_mm_mean": float(np.mean(acceleration)),
        "acceleration_mm_p90": float(np.quantile(acceleration, 0.9)),
        "samples": len(jitter),
    }


def step_lag(settings: dict | None, offset: np.ndarray) -> dict:
    """Frames (and ms at FPS) until the filtered hand is 90% of the way through a step: a turn
    of 30 degrees (the global rotation) and a move of 5 cm, between two frames."""
    if settings is None:
        return {"rotation_frames": 0, "translation_frames": 0, "rotation_ms": 0.0, "translation_ms": 0.0}
    smoother = HandFilter(offset, settings)
    shape, before, after = np.zeros(10), np.zeros(48), np.zeros(48)
    after[:3] = [0.0, np.radians(30), 0.0]
    at, moved = np.array([0.0, 0.0, 0.5]), np.array([0.05, 0.0, 0.5])
    for i in range(30):
        smoother(before, shape, at, i / FPS)
    lag = {}
    for i in range(30, 120):
        pose, _, translation = smoother(after, shape, moved, i / FPS)
        cosine = abs(axis_angle_to_quaternion(pose[:3]) @ axis_angle_to_quaternion(before[:3]))
        turned = 2 * np.arccos(np.clip(cosine, 0, 1))
        if "rotation_frames" not in lag and turned >= 0.9 * np.radians(30):
            lag["rotation_frames"] = i - 30
        if "translation_frames" not in lag and translation[0] >= 0.9 * 0.05:
            lag["translation_frames"] = i - 30
    for name in ("rotation", "translation"):
        lag[f"{name}_ms"] = lag[f"{name}_frames"] * 1e3 / FPS
    return lag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="an exported .onnx (default: the shipped checkpoint, exported; needs [train])")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/temporal_coherence"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            print("exporting the shipped checkpoint to ONNX (about 30 s) ...", flush=True)
            from handssca.demo import SHIPPED_CHECKPOINT
            from handssca.export import export_onnx
            from handssca.training.checkpoint import load_network

            model = str(Path(tmp) / "shipped.onnx")
            export_onnx(load_network(SHIPPED_CHECKPOINT)[0], model, validate=False)
        predictor = open_predictor(PredictorOptions(model=model))
        inputs = {}
        for name, (scene, options) in {"photographs": photographs(), "rendered": rendered()}.items():
            print(f"{name}: the webcam's step over {args.frames} frames held still ...", flush=True)
            images, shifts = held_still(scene, args.frames)
            start = time.perf_counter()
            tracks = raw_tracks(predictor, images, options)
            inputs[name] = (tracks, shifts, (time.perf_counter() - start) * 1e3 / len(images))
    offsets = FrameStep.pose_offsets(predictor)
    report = {
        "environment": environment(),
        "model": str(args.model or "the shipped checkpoint"),
        "frames": args.frames,
        "fps": FPS,
        "inputs": {},
    }
    for input_name, (tracks, shifts, pipeline_ms) in inputs.items():
        results = {}
        for name, settings in SETTINGS.items():
            replayed, times = replay(predictor, offsets, tracks, settings)
            results[name] = {
                "settings": settings,
                **coherence(replayed, shifts),
                **step_lag(settings, offsets["right"]),
                "filter_ms_per_hand": stats(times)["median_ms"] if times else 0.0,
            }
        lengths = sorted(len(rows) for rows in tracks.values())
        report["inputs"][input_name] = {
            "tracks": len(tracks),
            "track_frames_median": lengths[len(lengths) // 2] if lengths else 0,
            "pipeline_ms_per_frame": pipeline_ms,
            "settings": results,
        }
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "temporal_coherence.json", report)
    env = report["environment"]
    print(f"{env['cpu']} ({', '.join(env['cpu_features'])}), {env['date']}")
    for input_name, result in report["inputs"].items():
        print(f"\n{input_name}: {result['tracks']} tracks, median {result['track_frames_median']} frames each")
        print(f"{'setting':<12} {'jitter px':>10} {'p90':>6} {'accel mm/f2':>12} {'p90':>6} "
              f"{'lag rot':>8} {'lag trans':>10} {'filter ms':>10}")  # fmt: skip
        for name, row in result["settings"].items():
            print(
                f"{name:<12} {row['jitter_px_mean']:>10.3f} {row['jitter_px_p90']:>6.2f} "
                f"{row['acceleration_mm_mean']:>12.3f} {row['acceleration_mm_p90']:>6.2f} "
                f"{row['rotation_frames']:>4d} fr {row['translation_frames']:>6d} fr "
                f"{row['filter_ms_per_hand']:>10.3f}"
            )
    plot(report["inputs"]["rendered"]["settings"], args.output / "temporal_coherence.png")
    print(f"wrote {args.output / 'temporal_coherence.json'} and temporal_coherence.png (the rendered hand)")


def plot(results: dict, path: Path) -> None:
    """Jitter against delay, one point per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, row in results.items():
        lag = row["translation_ms"]
        axes[0].scatter(lag, row["jitter_px_mean"])
        axes[0].annotate(name, (lag, row["jitter_px_mean"]))
        axes[1].scatter(lag, row["acceleration_mm_mean"])
        axes[1].annotate(name, (lag, row["acceleration_mm_mean"]))
    axes[0].set(xlabel="step lag (ms, 90%)", ylabel="keypoint jitter (px/frame)", title="2D keypoints")
    axes[1].set(xlabel="step lag (ms, 90%)", ylabel="joint acceleration (mm/frame²)", title="3D joints")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
