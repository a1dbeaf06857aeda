"""The hand finder's speed, one run, the parts side by side.

1. The four models on ONNX Runtime (the shipped, rewritten files, as the finder runs them) beside
   MediaPipe's own .tflite files on LiteRT (ai-edge-litert, XNNPACK), interleaved, on the real
   photographs; both with the machine's cores (2 here).
2. The webcam's steady state with two hands tracked, paper model (256 x 256, untrained weights:
   speed only), fp32 and int8: per frame the network on both hands' crops, MANO, and every
   ``verify_every`` frames the landmark model's check of each hand; the finder's share of the
   frame and the frames per second (drawing excluded, and included).
3. Finding a hand again after it is lost: the finder's time on a frame with two hands and
   nothing tracked (palm detector + one landmark run per hand), the extra time that frame takes.

    python benchmarks/bench_hand_finder.py -o benchmarks/results/hand_finder
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hand_photos import mediapipe_tflite  # noqa: E402

from handssca.measure import environment, stats, time_interleaved, write_json  # noqa: E402
from handssca.runtime.camera import default_intrinsics  # noqa: E402
from handssca.runtime.hands.finder import LANDMARK_SIZE, HandFinder, letterbox_affine  # noqa: E402
from handssca.runtime.hands.rects import landmarks_rect, rect_affine  # noqa: E402
from handssca.runtime.hands.tracking import VERIFY_EVERY  # noqa: E402
from handssca.runtime.mano.builtin import build_builtin_hand  # noqa: E402
from handssca.runtime.overlay import draw_hand  # noqa: E402
from handssca.runtime.photos import load_photo, two_hands_sequence  # noqa: E402
from handssca.runtime.predictor import HandMeshPredictor  # noqa: E402


def model_inputs(finder: HandFinder) -> dict[str, np.ndarray]:
    """A real input per model: the photograph's letterbox, and its hand's landmark crop."""
    photo = load_photo("hand_src")
    rgb = np.ascontiguousarray(photo[..., ::-1])
    palm = cv2.warpAffine(rgb, letterbox_affine(*rgb.shape[:2], 192), (192, 192))[None].astype(np.float32) / 255
    (hand,) = finder.find(photo)
    affine = rect_affine(hand.rect, LANDMARK_SIZE)
    crop = cv2.warpAffine(rgb, affine, (224, 224), borderMode=cv2.BORDER_REPLICATE)[None].astype(np.float32) / 255
    return {"palm_detection": palm, "hand_landmark": crop}


def model_speed(rounds: int, threads: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    tflite = mediapipe_tflite()
    calls, results = {}, {}
    for variant in ("full", "lite"):
        finder = HandFinder(variant=variant)
        inputs = model_inputs(finder)
        for kind, session in (("palm_detection", finder._palm), ("hand_landmark", finder._landmark)):
            name, x = f"{kind}_{variant}", inputs[kind]
            interpreter = Interpreter(model_content=tflite[name], num_threads=threads)
            interpreter.allocate_tensors()
            index = interpreter.get_input_details()[0]["index"]

            def litert(interpreter=interpreter, index=index, x=x):
                interpreter.set_tensor(index, x)
                interpreter.invoke()

            calls[f"{name} onnxruntime"] = lambda session=session, x=x: session.run(None, {"input_1": x})
            calls[f"{name} litert"] = litert
    timed = time_interleaved(calls, warmup=5, rounds=rounds)
    for name in tflite:
        ours, theirs = timed[f"{name} onnxruntime"]["median_ms"], timed[f"{name} litert"]["median_ms"]
        results[name] = {"onnxruntime_ms": ours, "litert_ms": theirs, "ratio": ours / theirs}
    return results


def op_profile(model: str, runs: int = 50) -> dict[str, dict]:
    """ONNX Runtime's own profile of ``model`` (as the finder opens it): time per op type, ms per
    run and share, the largest first; what limits the model on this provider."""
    import collections
    import json

    import onnxruntime as ort

    from handssca.runtime.hands.finder import shipped_models

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "hand_finder_profile")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(shipped_models() / f"{model}.onnx"), options, providers=["CPUExecutionProvider"])
    x = model_inputs(HandFinder())["palm_detection" if model.startswith("palm") else "hand_landmark"]
    for _ in range(runs):
        session.run(None, {"input_1": x})
    path = Path(session.end_profiling())
    events = json.loads(path.read_text())
    path.unlink()
    by_op: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    return {op: {"ms": us / runs / 1e3, "share": us / total} for op, us in by_op.most_common()}


def export_paper_models(folder: Path, calibration_images: int) -> dict[str, Path]:
    from handssca.export import export_onnx
    from handssca.export.quantize import export_int8
    from handssca.training.checkpoint import load_network

    model, weights = load_network(None, None, {}, 0)
    paths = {"fp32": folder / "paper_fp32.onnx", "int8": folder / "paper_int8.onnx"}
    export_onnx(model, paths["fp32"], weights=weights, validate=False)
    export_int8(model, paths["int8"], calibration="synth", images=calibration_images, validate=False, weights=weights)
    return paths


def steady_state(paths: dict[str, Path], frames: int, verify_every: int) -> dict:
    """Two tracked hands per frame, their boxes and sides those the finder gives (as a trained
    network's keypoints would keep them), the landmark checks every ``verify_every`` frames; the
    models take each frame in turn, so that noise hits both alike."""
    import time

    mano, fingertip_ids = build_builtin_hand()
    finder = HandFinder()
    sequence = [f.image for f in two_hands_sequence(4 * frames) if len(f.hands) == 2][:frames]
    found = [finder.find(image) for image in sequence]
    assert all(len(hands) == 2 for hands in found), "the finder must see both hands in every frame"
    predictors = {kind: HandMeshPredictor.open(p, mano, fingertip_ids, finder=finder) for kind, p in paths.items()}
    rows = {kind: {"network": [], "finder": [], "render": []} for kind in predictors}
    for index, (image, hands) in enumerate(zip(sequence, found, strict=True)):
        K = default_intrinsics(image.shape[1], image.shape[0])
        for kind, predictor in predictors.items():
            start = time.perf_counter()
            if index % verify_every == verify_every - 1:
                for hand in found[index - 1]:
                    finder.landmarks(image, landmarks_rect(hand.keypoints))
            checked = time.perf_counter()
            predictions = predictor.predict(image, [h.box for h in hands], sides=[h.side for h in hands], K=K)
            predicted = time.perf_counter()
            drawn = image.copy()
            for prediction in predictions:
                draw_hand(drawn, prediction, mano.faces, K, opacity=0.65)
            if index:  # the first frame warms the sessions up
                rows[kind]["finder"].append((checked - start) * 1e3)
                rows[kind]["network"].append((predicted - checked) * 1e3)
                rows[kind]["render"].append((time.perf_counter() - predicted) * 1e3)
    results = {}
    for kind, row in rows.items():
        finder_ms, network_ms, render_ms = (stats(row[k])["mean_ms"] for k in ("finder", "network", "render"))
        results[kind] = {
            "frames": len(row["network"]),
            "network_ms_mean": network_ms,  # crops, the network on both hands, MANO
            "finder_ms_mean": finder_ms,
            "render_ms_mean": render_ms,
            "finder_share": finder_ms / (finder_ms + network_ms),
            "fps_without_drawing": 1e3 / (finder_ms + network_ms),
            "fps_with_drawing": 1e3 / (finder_ms + network_ms + render_ms),
        }
    return results


def lose_and_refind(frames: int = 96) -> dict:
    """The webcam loop on the two-hand video with a network whose keypoints follow real hands
    (tests/hand_photos.LandmarkNetwork): for each hand leaving or coming back into view, how many
    frames late it was dropped or found again."""
    import json

    from hand_photos import LandmarkNetwork

    from handssca.runtime.files import write_video
    from handssca.runtime.webcam import WebcamOptions, run_webcam

    finder = HandFinder()
    sequence = two_hands_sequence(frames)
    mano, fingertip_ids = build_builtin_hand()
    predictor = HandMeshPredictor(LandmarkNetwork(finder), mano, fingertip_ids, finder=finder)
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "two_hands.mp4", [f.image for f in sequence], 15.0)
        report = run_webcam(predictor, str(video), WebcamOptions(headless=True, output=Path(tmp), min_confidence=0.5))
        seen = [json.loads(line) for line in (Path(tmp) / "frames.jsonl").read_text().splitlines()]
    events = []
    for side in ("left", "right"):
        truth = [any(s == side for s, _ in f.hands) for f in sequence]
        tracked = [any(h["side"] == side for h in f["hands"]) for f in seen]
        for i in range(1, len(sequence)):
            if truth[i] != truth[i - 1]:
                late = next((k - i for k in range(i, len(sequence)) if tracked[k] == truth[i]), None)
                events.append({"side": side, "frame": i, "event": "back" if truth[i] else "gone", "frames_late": late})
    return {"events": events, "tracking": report.tracking}


def refind(rounds: int) -> dict:
    """The finder on a frame with both hands and none tracked, against a frame's network run."""
    finder = HandFinder()
    frame = next(f for f in two_hands_sequence(48) if len(f.hands) == 2).image
    found = finder.find(frame)
    timed = time_interleaved({"find": lambda: finder.find(frame)}, warmup=3, rounds=rounds)
    return {"hands_found": len(found), "find_ms": timed["find"]["median_ms"], "p90_ms": timed["find"]["p90_ms"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="benchmarks/results/hand_finder")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--frames", type=int, default=40, help="steady-state frames per model")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT threads (ONNX Runtime uses all cores)")
    parser.add_argument("--calibration-images", type=int, default=16)
    args = parser.parse_args()
    try:  # LiteRT runs MediaPipe's own models beside ours; the paper model's export needs torch
        import ai_edge_litert.interpreter  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        needs = f"bench_hand_finder.py needs {exc.name.split('.')[0]}: pip install -e '.[dev]' (ai-edge-litert, torch); "
        print(needs + "MediaPipe's .tflite files come from its wheel, cached in ~/.cache/handssca", file=sys.stderr)
        return 1
    report = {"environment": environment(), "verify_every": VERIFY_EVERY}
    print("models: ONNX Runtime vs LiteRT, interleaved")
    report["models"] = model_speed(args.rounds, args.threads)
    for name, row in report["models"].items():
        ours, theirs = row["onnxruntime_ms"], row["litert_ms"]
        print(f"  {name:22s} ORT {ours:6.2f} ms  LiteRT {theirs:6.2f} ms  {row['ratio']:.2f}x")
    report["palm_detection_full_profile"] = op_profile("palm_detection_full")
    top = list(report["palm_detection_full_profile"].items())[:6]
    print("  palm_detection_full on ONNX Runtime, by op: " + ", ".join(f"{k} {100 * v['share']:.0f}%" for k, v in top))
    report["refind"] = refind(args.rounds)
    report["lose_and_refind"] = lose_and_refind()
    for event in report["lose_and_refind"]["events"]:
        print(f"  {event['side']} hand {event['event']} at frame {event['frame']}: {event['frames_late']} frames late")
    print(f"refinding two hands: {report['refind']['find_ms']:.1f} ms (palm detector + 2 landmark runs)")
    with tempfile.TemporaryDirectory() as tmp:
        print("exporting the paper model, fp32 and int8")
        paths = export_paper_models(Path(tmp), args.calibration_images)
        report["steady_state"] = steady_state(paths, args.frames, VERIFY_EVERY)
    for kind, row in report["steady_state"].items():
        print(
            f"  {kind}: network {row['network_ms_mean']:.1f} ms, finder {row['finder_ms_mean']:.2f} ms "
            f"({100 * row['finder_share']:.1f}% of the frame), {row['fps_without_drawing']:.1f} FPS "
            f"({row['fps_with_drawing']:.1f} with drawing)"
        )
    output = Path(args.output)
    write_json(output / "hand_finder.json", report)
    print(f"wrote {output / 'hand_finder.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
