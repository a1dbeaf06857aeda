#!/usr/bin/env python3
"""The pictures of docs/outputs.md, from the outputs themselves.

    python tools/draw_output_figures.py            # writes docs/outputs_convention.png and docs/outputs_viewer.png

1. ``outputs_convention.png``: the coordinate convention every output uses, drawn from the
   records of ``handssca infer`` on the shipped photograph beside its mirror image (a left and a
   right hand): camera space, metres, OpenCV's axes, with both meshes as the .obj files hold them.
2. ``outputs_viewer.png``: ``handssca webcam --headless --record hands.glb`` on a video of the
   photographs moving, the .glb opened in three.js (its GLTFLoader, skinning and animation mixer)
   in headless Chromium, half-way through the animation: what another program sees of the file.
   Needs Debian's ``chromium`` and npm (three.js is installed into ~/.cache/handssca/node).
Uses the shipped checkpoint (exported first; needs ``[train]``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def export_shipped(folder: Path) -> Path:
    from handssca.demo import SHIPPED_CHECKPOINT
    from handssca.export import export_onnx
    from handssca.training.checkpoint import load_network

    path = folder / "shipped.onnx"
    export_onnx(load_network(SHIPPED_CHECKPOINT)[0], path, validate=False)
    return path


def convention(model: Path, folder: Path) -> Path:
    """The convention figure from ``infer``'s outputs on the two-sided composite."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import trimesh

    from handssca.cli import main
    from handssca.runtime.photos import load_photo

    left = load_photo("back_projection")
    image = folder / "both.jpg"
    cv2.imwrite(str(image), np.concatenate([left, np.ascontiguousarray(left[:, ::-1])], axis=1))
    out = folder / "infer"
    if main(["infer", str(image), "--model", str(model), "-o", str(out)]) != 0:
        raise SystemExit("infer failed")
    records = json.loads((out / "predictions.json").read_text())
    figure = plt.figure(figsize=(7, 5))
    axes = figure.add_subplot(projection="3d")
    for record in records:
        mesh = trimesh.load(out / record["mesh"], process=False, force="mesh")
        v = np.asarray(mesh.vertices)
        colour = "tab:orange" if record["side"] == "left" else "tab:blue"
        axes.plot_trisurf(v[:, 0], v[:, 2], -v[:, 1], triangles=np.asarray(mesh.faces), color=colour, alpha=0.8)
        wrist = np.array(record["joints_camera"][0])
        axes.text(wrist[0], wrist[2], -wrist[1], f"  {record['side']} wrist", fontsize=8)
    reach = max(abs(np.array(r["translation"])).max() for r in records)
    for direction, label in ((np.array([1, 0, 0]), "x right"), (np.array([0, 1, 0]), "y down"),
                             (np.array([0, 0, 1]), "z forward")):  # fmt: skip
        end = direction * reach * 0.4
        axes.quiver(0, 0, 0, end[0], end[2], -end[1], color="black", arrow_length_ratio=0.15)
        axes.text(end[0], end[2], -end[1], label, fontsize=9)
    axes.scatter([0], [0], [0], color="black", marker="s")
    axes.text(0, 0, 0, "  camera", fontsize=8)
    axes.set(xlabel="x (m)", ylabel="z (m)", zlabel="-y (m)", title="camera space: metres, OpenCV axes")
    axes.view_init(elev=18, azim=-70)
    path = DOCS / "outputs_convention.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


VIEWER_PAGE = """<!doctype html><html><body style="margin:0;background:#f4f4f4">
<script type="importmap">{"imports": {"three": "./node_modules/three/build/three.module.js",
"three/addons/": "./node_modules/three/examples/jsm/"}}</script>
<script type="module">
import * as THREE from 'three';
import { GLTFLoader } from 'three/addons/loaders/GLTFLoader.js';
const renderer = new THREE.WebGLRenderer({antialias: true, preserveDrawingBuffer: true});
renderer.setSize(800, 500); document.body.appendChild(renderer.domElement);
const scene = new THREE.Scene(); scene.background = new THREE.Color(0xf4f4f4);
scene.add(new THREE.HemisphereLight(0xffffff, 0x444444, 2.5));
const light = new THREE.DirectionalLight(0xffffff, 2.0); light.position.set(1, 2, 3); scene.add(light);
const camera = new THREE.PerspectiveCamera(40, 800 / 500, 0.01, 10);
new GLTFLoader().load('hands.glb', (gltf) => {
  scene.add(gltf.scene);
  const mixer = new THREE.AnimationMixer(gltf.scene);
  gltf.animations.forEach((clip) => mixer.clipAction(clip).play());
  const duration = Math.max(...gltf.animations.map((c) => c.duration));
  mixer.setTime(duration * 0.5);
  const box = new THREE.Box3().setFromObject(gltf.scene); const centre = box.getCenter(new THREE.Vector3());
  camera.position.set(centre.x + 0.25, centre.y + 0.15, centre.z + 0.45); camera.lookAt(centre);
  renderer.render(scene, camera);
  document.title = 'rendered ' + gltf.animations.length + ' animations';
}, undefined, (error) => { document.title = 'error ' + error; });
</script></body></html>"""


def viewer(model: Path, folder: Path) -> Path:
    """The recorded animation, rendered by three.js in headless Chromium."""
    from handssca.cli import main
    from handssca.runtime.files import write_video
    from handssca.runtime.photos import two_hands_sequence

    video = write_video(folder / "hands.mp4", [f.image for f in two_hands_sequence(48)[:24]], 15.0)
    page = Path.home() / ".cache" / "handssca" / "node"
    if not (page / "node_modules" / "three").is_dir():
        subprocess.run(["npm", "install", "--silent", "--prefix", str(page), "three"], check=True)
    record = page / "hands.glb"
    args = ["webcam", "--source", str(video), "--model", str(model), "--headless", "-o", str(folder / "webcam")]
    if main([*args, "--record", str(record)]) != 0:
        raise SystemExit("webcam failed")
    (page / "viewer.html").write_text(VIEWER_PAGE)
    path = DOCS / "outputs_viewer.png"
    server = subprocess.Popen([sys.executable, "-m", "http.server", "8123", "--bind", "127.0.0.1"], cwd=page,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
             "--window-size=800,500", "--virtual-time-budget=8000", f"--screenshot={path}",
             "http://127.0.0.1:8123/viewer.html"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    finally:
        server.terminate()
    return path


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = export_shipped(folder)
        print(f"wrote {convention(model, folder)}")
        print(f"wrote {viewer(model, folder)}")


if __name__ == "__main__":
    main()
