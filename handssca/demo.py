"""``handssca demo``: the whole pipeline on a fresh machine, nothing downloaded.

Builds the built-in stand-in hand, renders test frames and a short video of it, loads the
shipped small checkpoint (or says plainly that the network is untrained), exports to ONNX,
compares PyTorch and ONNX Runtime (parity by polygraphy, latency side by side), runs the webcam
pipeline headless on the video, and writes a folder with overlays, the annotated video, a mesh
and report.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

SHIPPED_CHECKPOINT = Path(__file__).parent / "assets" / "demo_synthetic_tiny.pt"


def _model():
    from handssca.configs import config_path
    from handssca.training.checkpoint import load_network

    if SHIPPED_CHECKPOINT.is_file():
        return load_network(SHIPPED_CHECKPOINT)[0], (
            f"shipped checkpoint {SHIPPED_CHECKPOINT.name} (tiny network trained on synthetic images of the "
            "built-in stand-in hand: it knows that hand, not real hands)"
        )
    return load_network(config=config_path("model/tiny.yaml"))[0], (
        "UNTRAINED tiny network (no shipped checkpoint): the pipeline runs, the meshes are meaningless"
    )


def finder_line(photo: dict) -> str:
    hands = ", ".join(f"a {h['side']} hand (palm {h['palm_score']:.2f}, presence {h['presence']:.2f})" for h in photo)
    return f"found {hands}" if photo else "no hand found"


def show_finder(predictor, out: Path, frames: int) -> dict:
    """The demo's finder step: the hands of a real photograph and its mirror drawn with their
    sides (finder_photo.png), and the webcam with the finder on a video of the photograph."""
    from handssca.errors import HandSSCAError
    from handssca.runtime.camera import default_intrinsics
    from handssca.runtime.files import write_image, write_video
    from handssca.runtime.overlay import draw_hand, draw_label, draw_skeleton
    from handssca.runtime.photos import load_photo, two_hands_sequence
    from handssca.runtime.webcam import WebcamOptions, run_webcam

    photo = load_photo("hand_src")
    frame = np.concatenate([photo, photo[:, ::-1]], axis=1)
    K = default_intrinsics(frame.shape[1], frame.shape[0])
    drawn = frame.copy()
    hands = predictor.predict(frame, K=K)
    for hand in hands:
        draw_hand(drawn, hand, predictor.mano.faces, K, skeleton=False, opacity=0.5)
        draw_skeleton(drawn, hand.found.keypoints)
        draw_label(drawn, hand.box, f"{hand.side} {hand.found.side_score:.2f}")
    write_image(out / "finder_photo.png", drawn)
    video = write_video(out / "two_hands_input.mp4", [f.image for f in two_hands_sequence(frames)], 15.0)
    webcam = run_webcam(predictor, str(video), WebcamOptions(headless=True, output=out / "webcam_finder"))
    if webcam.interrupted:
        raise KeyboardInterrupt
    if webcam.error:
        raise HandSSCAError(f"demo, step 7: {webcam.error}")
    return {
        "photo": [h.found.to_json() | {"side": h.side} for h in hands],
        "video": {
            "frames": webcam.frames,
            "found": webcam.tracking["found"],
            "lost": webcam.tracking_lost,
            "frames_by_hands": dict(sorted(webcam.tracking["frames_by_hands"].items())),
            "finder_ms": webcam.stage_ms["finder"],
            "video": webcam.video,
        },
    }


def run_demo(out: str | Path = "handssca_demo", frames: int = 48, seed: int = 0, quick: bool = False) -> Path:
    import torch

    from handssca.errors import HandSSCAError
    from handssca.export import export_onnx
    from handssca.measure import cpu_info, time_runner
    from handssca.models import TorchRunner
    from handssca.runtime.backends.compare import compare_models
    from handssca.runtime.backends.onnx_runner import OnnxRunner
    from handssca.runtime.files import check_writable, write_atomically, write_image, write_video
    from handssca.runtime.mano.builtin import STAND_IN_NOTE, build_builtin_hand
    from handssca.runtime.outputs.hands import hand_obj
    from handssca.runtime.overlay import draw_hand
    from handssca.runtime.predictor import HandMeshPredictor
    from handssca.runtime.webcam import WebcamOptions, run_webcam
    from handssca.training.synthetic import render_sequence

    started = time.perf_counter()
    out = Path(out)
    check_writable(out / "report.md")  # a read-only folder or a file in the way: one line, before the work
    frames = 12 if quick else frames
    print(f"[1/7] hand model: {STAND_IN_NOTE}")
    mano, fingertip_ids = build_builtin_hand()

    print("[2/7] rendering a synthetic video of the hand")
    images, truth = render_sequence(mano, fingertip_ids, frames, seed=seed)
    video = write_video(out / "synthetic_input.mp4", images, 15.0)

    print("[3/7] the network")
    net, weights = _model()
    print(f"      {weights}")

    print("[4/7] export to ONNX (one custom node per scan), checked against PyTorch")
    onnx_path = out / "handssca.onnx"
    export = export_onnx(net, onnx_path, weights=weights.split(" (")[0])
    onnx_model = OnnxRunner(onnx_path)
    size = net.config.input_size
    image = np.random.default_rng(seed).standard_normal((1, 3, size, size)).astype(np.float32)
    comparison = compare_models(
        {"pytorch": TorchRunner(net), "onnxruntime": onnx_model}, image, reference="pytorch", atol=1e-4
    )

    print("[5/7] latency, PyTorch vs ONNX Runtime, batch 1")
    tensor = torch.from_numpy(image)
    runs = 5 if quick else 30

    def torch_call():
        with torch.inference_mode():
            net(tensor)

    latency = {
        "pytorch": time_runner(torch_call, 1, runs)["median_ms"],
        "onnxruntime": time_runner(lambda: onnx_model.run(image), 1, runs)["median_ms"],
    }

    print("[6/7] webcam pipeline, headless, on the synthetic video; overlays of test frames")
    predictor = HandMeshPredictor(onnx_model, mano, fingertip_ids)
    webcam = run_webcam(
        predictor,
        str(video),
        # The stand-in hand is no real hand: the finder would not see it, so the box is followed.
        WebcamOptions(
            box=tuple(truth[0]["box"] + [-8, -8, 8, 8]), headless=True, output=out / "webcam", find_hands=False
        ),
    )
    if webcam.interrupted:  # Ctrl-C in the webcam loop: its outputs are closed; the demo is not done
        raise KeyboardInterrupt
    if webcam.error:
        raise HandSSCAError(f"demo, step 6: {webcam.error}")
    torch_predictor = HandMeshPredictor(TorchRunner(net), mano, fingertip_ids)
    tiles, mesh_error = [], []
    for index in np.linspace(0, frames - 1, 4).astype(int):
        frame, gt = images[index], truth[index]
        box = gt["box"] + [-8, -8, 8, 8]
        (hand,) = predictor.predict(frame, [box], K=gt["K"])
        (reference,) = torch_predictor.predict(frame, [box], K=gt["K"])
        mesh_error.append(float(np.abs(hand.vertices - reference.vertices).max()))
        overlay = frame.copy()
        draw_hand(overlay, hand, mano.faces, gt["K"])
        tiles.append(np.concatenate([frame, overlay], axis=0))
    write_image(out / "overlays.png", np.concatenate(tiles, axis=1))
    write_atomically(out / "hand.obj", hand_obj(hand, mano.faces))

    print("[7/7] the hand finder on a real photograph, and the webcam on a video of photographs")
    finder = show_finder(predictor, out, frames=24 if quick else 64)

    diffs = comparison.diffs["onnxruntime"]
    cpu = cpu_info()  # the timings depend on it: the kernels and ONNX Runtime use AVX-512 where it is
    machine = f"{cpu['name']} ({', '.join(cpu['features']) or 'instruction sets unknown'}), {cpu['cores']} cores"
    report = {
        "machine": {**cpu, "line": machine},
        "duration_s": time.perf_counter() - started,
        "weights": weights,
        "hand_model": STAND_IN_NOTE,
        "onnx": str(onnx_path),
        "scan_nodes": export.scan_nodes,
        "parity_max_abs": {k: d.max_abs for k, d in diffs.items()},
        "predictor_vertex_diff_mm": 1e3 * max(mesh_error),
        "latency_ms_batch1": latency,
        "webcam": {
            "frames": webcam.frames,
            "fps": webcam.fps,
            "stage_ms": webcam.stage_ms,
            "video": webcam.video,
        },
        "finder": finder,
    }
    write_atomically(out / "report.json", json.dumps(report, indent=2).encode())
    ratio = latency["onnxruntime"] / latency["pytorch"]
    markdown = f"""# HandSSCA demo

- Weights: {weights}.
- Hand model: {STAND_IN_NOTE}.
- Exported `{onnx_path.name}` with {export.scan_nodes} `HandSSCASelectiveScan` nodes (one per selective scan).
- This machine: {machine}; the demo took {report["duration_s"]:.0f} s. Timings differ by instruction set (a CPU
  without AVX-512 runs the scan kernel's AVX2 build and ONNX Runtime's AVX2 kernels): compare figures of one class.

## PyTorch vs ONNX Runtime (this machine, batch 1)

| backend | median latency | vs PyTorch | max abs difference (polygraphy) |
| --- | --- | --- | --- |
| PyTorch eager | {latency["pytorch"]:.1f} ms | 1.00x | reference |
| ONNX Runtime (custom scan node on the CPU kernel) | {latency["onnxruntime"]:.1f} ms | {ratio:.2f}x | \
{max(d.max_abs for d in diffs.values()):.2g} |

Through the predictor (crop, engine, numpy MANO) the two backends' vertices differ by at most
{1e3 * max(mesh_error):.2g} mm.

## Webcam pipeline (headless, on the synthetic video)

{webcam.frames} frames at {webcam.fps:.1f} FPS; median per stage:
{", ".join(f"{k} {v:.1f} ms" for k, v in webcam.stage_ms.items())}.
Annotated video: `webcam/annotated.mp4`; per-frame JSON: `webcam/frames.jsonl`.

## Overlays (top: input, bottom: mesh and skeleton from ONNX Runtime)

![overlays](overlays.png)

A mesh of the last frame: `hand.obj`.

## The hand finder on real photographs

MediaPipe's palm detector and hand landmark model (shipped as ONNX, run by ONNX Runtime) on a
photograph of a left hand beside its mirror image: {finder_line(finder["photo"])}. The boxes
and skeletons are the finder's; the meshes are the demo network's, which has only ever seen the
stand-in hand, so on a real hand they mean nothing.

![finder](finder_photo.png)

The webcam pipeline with the finder on a {finder["video"]["frames"]}-frame video made from the
photograph (both hands, none, the left alone, both again): {finder["video"]["found"]} hands found,
{finder["video"]["lost"]} lost; frames with 0/1/2 hands: {finder["video"]["frames_by_hands"]}; the finder
took {finder["video"]["finder_ms"]:.1f} ms a frame at the median. Video: `webcam_finder/annotated.mp4`.
"""
    write_atomically(out / "report.md", markdown.encode())
    print(f"      parity {max(d.max_abs for d in diffs.values()):.2g}, ONNX Runtime {ratio:.2f}x PyTorch's latency")
    return out / "report.md"
