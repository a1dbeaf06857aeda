"""Drawing a hand: the overlay's mesh renderer before and after, side by side in one run.

- ``painter_render``: the renderer as it was (one ``cv2.fillConvexPoly`` a triangle from a Python
  loop, back to front, into the image with LINE_AA and again into the mask), copied here;
- ``render_perspective``: runtime/mesh_render.py's numpy z-buffer.

On a 640 x 480 frame (the webcam's default intrinsics), the built-in hand in random poses at a
typical size (about 200 px tall) and close up (about 400 px); old and new alternate call by call
so that the machine's noise falls on both alike: median and p90 ms a hand. A per-pixel difference
figure (old | new | |difference| x4) goes to ``--figure``. With the webcam part (on unless
``--no-webcam``): ``run_webcam`` headless on a generated 640 x 480 video with the tiny network (the
shipped checkpoint, exported), once with the old renderer and the old blend (``masked_blend``)
patched into the overlay and once with the new, twice each in turn: FPS and the median "render"
stage.

Writes ``render.json`` to ``-o``.

    python benchmarks/bench_render.py -o benchmarks/results/render
    python benchmarks/bench_render.py --no-webcam          # the renderers alone (no torch needed)
    python benchmarks/bench_render.py --model tiny.onnx    # the webcam part with this network
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from handssca.measure import environment, stats, write_json
from handssca.runtime.camera import default_intrinsics, project
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.mano.model import mano_forward
from handssca.runtime.mesh_render import render_perspective
from handssca.runtime.overlay import blend

WIDTH, HEIGHT = 640, 480
LIGHT = (0.3, 0.4, 1.0)  # the overlay's
SIZES = {"typical": 200, "close-up": 400}  # the hand's height on the screen, px


def painter_render(
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    color=(180, 200, 235),
    light=(0.0, 0.0, -1.0),
    ambient: float = 0.3,
) -> np.ndarray:
    """The renderer before the z-buffer (runtime/mesh_render.py's render_perspective, unchanged)."""
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    towards_camera = -(normals * tri.mean(axis=1)).sum(axis=1)  # > 0: the face sees the camera
    light = np.asarray(light, dtype=np.float64)
    light = light / max(np.linalg.norm(light), 1e-12)
    diffuse = np.clip(-(normals @ light), 0.0, 1.0)
    points = np.round(project(v, K) * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    order = np.argsort(-tri[:, :, 2].mean(axis=1))
    mask = np.zeros(image.shape[:2], np.uint8)
    base = np.asarray(color, dtype=np.float64)
    for fi in order:
        if towards_camera[fi] <= 0:
            continue
        shade = ambient + (1 - ambient) * diffuse[fi]
        c = tuple(int(x) for x in np.clip(base * shade, 0, 255))
        cv2.fillConvexPoly(image, points[faces[fi]], c, lineType=cv2.LINE_AA, shift=4)
        cv2.fillConvexPoly(mask, points[faces[fi]], 1, shift=4)
    return mask.astype(bool)


def masked_blend(image, layer, mask, opacity):
    """The overlay's blend as it was: the formula over the whole frame through a boolean index."""
    image[mask] = ((1 - opacity) * image[mask] + opacity * layer[mask]).astype(np.uint8)


RENDERERS = {"old": painter_render, "new": render_perspective}
BLENDS = {"old": masked_blend, "new": blend}  # the webcam's overlay before and after, with its renderer


def posed_hands(count: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """``count`` built-in hands in random poses, turned at random, centred on 0; and the faces."""
    mano, fingertip_ids = build_builtin_hand()
    rng = np.random.default_rng(seed)
    pose = np.zeros((count, 48))
    axis = rng.normal(size=(count, 3))
    pose[:, :3] = axis / np.linalg.norm(axis, axis=1, keepdims=True) * rng.uniform(0, np.pi, (count, 1))
    pose[:, 3:] = rng.normal(0, 0.3, (count, 45))
    vertices, _ = mano_forward(mano, pose, rng.normal(0, 0.8, (count, 10)), flat_hand_mean=False,
                               fingertip_ids=fingertip_ids)  # fmt: skip
    return [v - (v.max(0) + v.min(0)) / 2 for v in vertices], mano.faces


def placed(vertices: np.ndarray, K: np.ndarray, height_px: float) -> np.ndarray:
    """``vertices`` in front of the camera, in the middle of the frame, ``height_px`` tall."""
    return vertices + [0, 0, K[1, 1] * np.ptp(vertices[:, 1]) / height_px]


def background(seed: int = 0) -> np.ndarray:
    """A textured 640 x 480 frame to draw on (the blend reads it)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 120, (HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
    return cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)


def time_renderers(hands, faces, K, frame, rounds: int) -> dict:
    """{size: {renderer: stats}}: every hand at every size, old and new in turn, ``rounds`` times."""
    results = {}
    for size, height_px in SIZES.items():
        scenes = [placed(v, K, height_px) for v in hands]
        times = {name: [] for name in RENDERERS}
        for render in RENDERERS.values():  # warm up (imports, caches)
            render(frame.copy(), scenes[0], faces, K, light=LIGHT)
        for _ in range(rounds):
            for scene in scenes:
                for name, render in RENDERERS.items():
                    image = frame.copy()
                    start = time.perf_counter()
                    render(image, scene, faces, K, light=LIGHT)
                    times[name].append((time.perf_counter() - start) * 1e3)
        heights = [float(np.ptp(project(s, K)[:, 1])) for s in scenes]
        results[size] = {
            "hand_height_px": float(np.median(heights)),
            "hands": len(scenes),
            **{name: stats(samples) for name, samples in times.items()},
        }
    return results


def difference(hands, faces, K, frame, threshold: int, out: Path) -> dict:
    """The figure old | new | |difference| x4 of one hand at the typical size (cropped around it,
    shown at 2x), and the counts: pixels differing by more than ``threshold`` (any channel) over
    all hands and sizes."""
    counts = {}
    for size, height_px in SIZES.items():
        differ = drawn = 0
        for v in hands:
            scene = placed(v, K, height_px)
            old, new = frame.copy(), frame.copy()
            old_mask = painter_render(old, scene, faces, K, light=LIGHT)
            new_mask = render_perspective(new, scene, faces, K, light=LIGHT)
            gap = np.abs(old.astype(np.int16) - new).max(axis=2)
            differ += int((gap > threshold).sum())
            drawn += int((old_mask | new_mask).sum())
        counts[size] = {"pixels_differing": differ, "pixels_drawn": drawn, "share": differ / max(drawn, 1)}

    scene = placed(hands[0], K, SIZES["typical"])
    old, new = frame.copy(), frame.copy()
    painter_render(old, scene, faces, K, light=LIGHT)
    render_perspective(new, scene, faces, K, light=LIGHT)
    gap = np.abs(old.astype(np.int16) - new).astype(np.uint8)
    ys, xs = np.nonzero((old != frame).any(axis=2) | (new != frame).any(axis=2))
    y0, y1 = max(ys.min() - 12, 0), min(ys.max() + 13, HEIGHT)
    x0, x1 = max(xs.min() - 12, 0), min(xs.max() + 13, WIDTH)
    panels = [old, new, np.clip(gap.astype(np.int32) * 4, 0, 255).astype(np.uint8)]
    panels = [cv2.resize(p[y0:y1, x0:x1], None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST) for p in panels]
    gutter = np.full((panels[0].shape[0], 6, 3), 255, np.uint8)
    figure = np.concatenate([panels[0], gutter, panels[1], gutter, panels[2]], axis=1)
    one = int((gap.max(axis=2) > threshold).sum())
    caption = [
        "old (cv2.fillConvexPoly, painter's order, LINE_AA) | new (numpy z-buffer, blended outline) | |old - new| x4",
        f"this hand: {one} of {int(((old != frame) | (new != frame)).any(axis=2).sum())} drawn pixels differ by more "
        f"than {threshold} levels; all {len(hands)} hands, both sizes: "
        + ", ".join(f"{s} {c['share']:.1%}" for s, c in counts.items()),
    ]
    banner = np.full((20 * len(caption) + 8, figure.shape[1], 3), 255, np.uint8)
    for i, line in enumerate(caption):
        cv2.putText(banner, line, (8, 20 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate([figure, banner], axis=0))
    return {"threshold": threshold, "figure": str(out), "figure_hand_pixels_differing": one, **counts}


def webcam(model: str | None, frames: int, repeats: int) -> dict:
    """run_webcam headless on a generated 640 x 480 video, the old renderer and the new in turn."""
    import handssca.runtime.overlay as overlay
    from handssca.runtime.predictor import PredictorOptions, open_predictor
    from handssca.runtime.webcam import WebcamOptions, run_webcam
    from handssca.training.synthetic import render_sequence

    label = model or "the shipped checkpoint (the tiny network), exported"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if model is None:
            print("exporting the shipped checkpoint (the tiny network) to ONNX ...", flush=True)
            from handssca.demo import SHIPPED_CHECKPOINT
            from handssca.export import export_onnx
            from handssca.training.checkpoint import load_network

            model = str(tmp / "tiny.onnx")
            export_onnx(load_network(SHIPPED_CHECKPOINT)[0], model, validate=False)
        predictor = open_predictor(PredictorOptions(model=model), find_hands=False)
        images, truth = render_sequence(*build_builtin_hand(), frames, width=WIDTH, height=HEIGHT, seed=1)
        video = tmp / "hand.mp4"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (WIDTH, HEIGHT))
        for image in images:
            writer.write(image)
        writer.release()
        box = tuple(truth[0]["box"] + [-8, -8, 8, 8])
        runs = {name: [] for name in RENDERERS}
        try:
            for round_ in range(repeats):
                for name, render in RENDERERS.items():
                    overlay.render_perspective, overlay.blend = render, BLENDS[name]
                    options = WebcamOptions(box=box, headless=True, output=tmp / f"{name}{round_}", find_hands=False)
                    report = run_webcam(predictor, str(video), options)
                    runs[name].append({"fps": report.fps, "stage_ms": report.stage_ms, "frames": report.frames})
                    print(f"  webcam, {name} renderer: {report.fps:.1f} FPS, render {report.stage_ms['render']:.2f} ms")
        finally:
            overlay.render_perspective, overlay.blend = render_perspective, blend
    return {
        "model": label,
        "video": f"render_sequence, {frames} frames, {WIDTH} x {HEIGHT}",
        **{
            name: {
                "fps": float(np.median([r["fps"] for r in rows])),
                "render_ms": float(np.median([r["stage_ms"]["render"] for r in rows])),
                "runs": rows,
            }
            for name, rows in runs.items()
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hands", type=int, default=8, help="random poses (each timed at both sizes)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds over the hands")
    parser.add_argument("--threshold", type=int, default=32, help="the difference figure's threshold, levels")
    parser.add_argument("--no-webcam", dest="webcam", action="store_false", help="the renderers alone")
    parser.add_argument("--model", help="the webcam part's network, .onnx (default: the shipped checkpoint, exported)")
    parser.add_argument("--frames", type=int, default=90, help="the webcam part's video length")
    parser.add_argument("--webcam-repeats", type=int, default=2, help="webcam runs per renderer, alternating")
    parser.add_argument("--figure", type=Path, default=Path("docs/render_difference.png"))
    parser.add_argument("-o", "--output", type=Path, default=Path("benchmarks/results/render"))
    args = parser.parse_args(argv)

    env = environment(opencv=cv2.__version__)
    K = default_intrinsics(WIDTH, HEIGHT)
    hands, faces = posed_hands(args.hands)
    frame = background()
    print(f"{env['cpu']} ({', '.join(env['cpu_features'])}), {env['cpu_count']} cores, {env['date']}")
    print(f"timing {len(hands)} hands x {args.rounds} rounds at each size, old and new in turn ...", flush=True)
    report = {
        "environment": env,
        "frame": [WIDTH, HEIGHT],
        "faces": int(len(faces)),
        "renderers": time_renderers(hands, faces, K, frame, args.rounds),
        "difference": difference(hands, faces, K, frame, args.threshold, args.figure),
    }
    if args.webcam:
        report["webcam"] = webcam(args.model, args.frames, args.webcam_repeats)
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "render.json", report)

    header = f"{'hand':<10} {'height px':>9} {'old median':>11} {'p90':>7} {'new median':>11} {'p90':>7}"
    print(f"\n{header} {'speed-up':>9}")
    for size, row in report["renderers"].items():
        old, new = row["old"], row["new"]
        print(
            f"{size:<10} {row['hand_height_px']:>9.0f} {old['median_ms']:>8.2f} ms {old['p90_ms']:>7.2f} "
            f"{new['median_ms']:>8.2f} ms {new['p90_ms']:>7.2f} {old['median_ms'] / new['median_ms']:>8.1f}x"
        )
    for size, row in report["difference"].items():
        if isinstance(row, dict):
            print(f"{size}: {row['pixels_differing']} of {row['pixels_drawn']} drawn pixels differ by more than "
                  f"{args.threshold} levels ({row['share']:.1%})")  # fmt: skip
    if args.webcam:
        cam = report["webcam"]
        for name in RENDERERS:
            print(f"webcam, {name} renderer: {cam[name]['fps']:.1f} FPS, render stage {cam[name]['render_ms']:.2f} ms")
    print(f"wrote {args.output / 'render.json'} and {args.figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
