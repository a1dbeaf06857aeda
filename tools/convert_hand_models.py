#!/usr/bin/env python3
"""Rebuilds the hand finder's ONNX models (handssca/assets/hand_models/) from MediaPipe's wheel.

    python tools/convert_hand_models.py                 # writes handssca/assets/hand_models/
    python tools/convert_hand_models.py --check         # reruns and compares with what is shipped

Steps, each recorded in provenance.json:
1. ``pip download --no-deps mediapipe==0.10.21`` (cp311 manylinux wheel, Apache-2.0) and take its
   four .tflite files, each checked against the SHA-256 pinned below.
2. Convert each with tf2onnx (``--tflite X --opset 17``) in a throwaway virtual environment:
   tf2onnx needs tensorflow, which never becomes a dependency of this project.
3. Exact rewrites, each proven equal to the converted file on random inputs and on the real
   photographs in handssca/assets/photos (ONNX Runtime, max |diff| recorded):
   - PRelu(x, a) -> Relu(x) + a * Min(x, 0): the same value for every x (x > 0: x + a*0;
     x <= 0: 0 + a*x), and ONNX Runtime fuses the Relu into the convolution before it while its
     PRelu runs as a separate pass (palm full: 31 PRelu nodes, ~18% of its time);
   - weights stored as float16 with a Cast: every weight of these models is a float16 value
     (the .tflite files store them so), so the file halves and ONNX Runtime folds the Cast at load;
   - names made from positions: tf2onnx numbers the constants and nodes it makes from counters
     whose order differs between runs; renamed, a rerun gives the same bytes.
4. Where ai-edge-litert is installed (``pip install ai-edge-litert``), the ONNX outputs are
   compared with the original .tflite run by LiteRT on the photographs.
5. Write the four .onnx files, provenance.json and LICENSE (the wheel's own Apache-2.0 text).

Run it from the project's development environment (numpy, onnx, onnxruntime, opencv).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "handssca" / "assets" / "hand_models"
PHOTOS = ROOT / "handssca" / "assets" / "photos"

MEDIAPIPE = "mediapipe==0.10.21"
WHEEL_PLATFORM = ["--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--only-binary=:all:"]
# The converter's environment, pinned: another tf2onnx or tensorflow may convert differently.
CONVERTER = ["tf2onnx==1.17.0", "tensorflow-cpu==2.21.0", "onnx==1.23.2"]
OPSET = 17
TFLITE = {  # name: (path in the wheel, SHA-256 of the file)
    "palm_detection_full": (
        "mediapipe/modules/palm_detection/palm_detection_full.tflite",
        "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54",
    ),
    "palm_detection_lite": (
        "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
        "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18",
    ),
    "hand_landmark_full": (
        "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
        "11c272b891e1a99ab034208e23937a8008388cf11ed2a9d776ed3d01d0ba00e3",
    ),
    "hand_landmark_lite": (
        "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
        "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6",
    ),
}
LICENSE_IN_WHEEL = "mediapipe-0.10.21.dist-info/LICENSE"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fail(message: str) -> None:
    print(f"convert_hand_models: {message}", file=sys.stderr)
    sys.exit(1)


def download_wheel(folder: Path, wheel: str | None) -> Path:
    if wheel:
        return Path(wheel)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), *WHEEL_PLATFORM, MEDIAPIPE]
    subprocess.run(cmd, check=True)
    (path,) = folder.glob("mediapipe-*.whl")
    return path


def extract_models(wheel: Path) -> tuple[dict[str, bytes], bytes]:
    """The four .tflite files (checked against their pinned SHA-256) and the licence text."""
    with zipfile.ZipFile(wheel) as archive:
        models = {}
        for name, (member, expected) in TFLITE.items():
            data = archive.read(member)
            if sha256(data) != expected:
                fail(f"{wheel.name}:{member}: SHA-256 {sha256(data)} is not the pinned {expected}")
            models[name] = data
        return models, archive.read(LICENSE_IN_WHEEL)


def converter_environment(folder: Path) -> tuple[Path, dict]:
    """A virtual environment with the pinned converter; its python and the installed versions."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", *CONVERTER], check=True)
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True).stdout
    wanted = ("tf2onnx", "tensorflow-cpu", "tensorflow_cpu", "onnx", "numpy", "protobuf", "flatbuffers")
    versions = dict(line.split("==", 1) for line in freeze.splitlines() if "==" in line)
    return python, {k: v for k, v in sorted(versions.items()) if k.lower() in wanted}


def convert(python: Path, tflite: Path, onnx_path: Path) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [str(python), "-m", "tf2onnx.convert", "--tflite", str(tflite), "--opset", str(OPSET), "--output"]
    result = subprocess.run([*cmd, str(onnx_path)], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"tf2onnx failed on {tflite.name}:\n{result.stderr[-2000:]}")


# --- the exact rewrites -------------------------------------------------------------------------


def rewrite_prelu(model) -> int:
    """PRelu(x, a) -> Relu(x) + a * Min(x, 0), node for node; returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph, nodes, count = model.graph, [], 0
    zero = "prelu_rewrite/zero"
    for node in graph.node:
        if node.op_type != "PRelu":
            nodes.append(node)
            continue
        count += 1
        x, slope = node.input
        base = node.name or node.output[0]
        nodes += [
            helper.make_node("Relu", [x], [f"{base}/positive"], name=f"{base}/relu"),
            helper.make_node("Min", [x, zero], [f"{base}/negative"], name=f"{base}/min"),
            helper.make_node("Mul", [f"{base}/negative", slope], [f"{base}/scaled"], name=f"{base}/mul"),
            helper.make_node("Add", [f"{base}/positive", f"{base}/scaled"], [node.output[0]], name=f"{base}/add"),
        ]
    if count:
        graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def store_weights_as_float16(model) -> int:
    """Each float32 initializer whose every value is a float16 becomes a float16 initializer
    and a Cast to float32; returns how many."""
    from onnx import TensorProto, helper, numpy_helper

    graph, casts, count = model.graph, [], 0
    for tensor in list(graph.initializer):
        if tensor.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(tensor)
        half = values.astype(np.float16)
        if values.size < 2 or not np.array_equal(half.astype(np.float32), values):
            continue
        count += 1
        stored = f"{tensor.name}/float16"
        graph.initializer.remove(tensor)
        graph.initializer.append(numpy_helper.from_array(half, stored))
        casts.append(
            helper.make_node("Cast", [stored], [tensor.name], name=f"{tensor.name}/cast", to=TensorProto.FLOAT)
        )
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def canonical_names(model) -> None:
    """Every name but the graph's inputs and outputs made from positions: node k is OP_k, its
    outputs OP_k:j, initializers const_NNN in order of first use (and stored in that order).
    tf2onnx numbers the names it makes from counters whose order varies between runs."""
    graph = model.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    initializers = {t.name for t in graph.initializer}
    renamed: dict[str, str] = {}
    for node in graph.node:
        for name in node.input:
            if name in initializers and name not in renamed:
                renamed[name] = f"const_{len(renamed):03d}"
    renamed.update(
        {name: f"const_{len(renamed) + i:03d}" for i, name in enumerate(sorted(initializers - set(renamed)))}
    )
    for k, node in enumerate(graph.node):
        node.name = f"{node.op_type}_{k:03d}"
        for j, name in enumerate(node.output):
            if name not in keep:
                renamed[name] = f"{node.name}:{j}"
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for tensor in graph.initializer:
        tensor.name = renamed[tensor.name]
    del graph.value_info[:]  # shapes of intermediate tensors under their old names
    tensors = sorted(graph.initializer, key=lambda t: t.name)
    del graph.initializer[:]
    graph.initializer.extend(tensors)


# --- the proofs ----------------------------------------------------------------------------------


def session(model_bytes: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def real_inputs(size: int) -> np.ndarray:
    """The photographs (and their mirror images), letterboxed to size x size RGB in [0, 1]."""
    import cv2

    batch = []
    for path in sorted(PHOTOS.glob("*.jpg")):
        image = cv2.imread(str(path))[..., ::-1]
        for view in (image, image[:, ::-1]):
            h, w = view.shape[:2]
            scale = size / max(h, w)
            resized = cv2.resize(np.ascontiguousarray(view), (round(w * scale), round(h * scale)))
            canvas = np.zeros((size, size, 3), np.float32)
            y, x = (size - resized.shape[0]) // 2, (size - resized.shape[1]) // 2
            canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized / 255.0
            batch.append(canvas)
    return np.stack(batch)[:, None]


def test_inputs(size: int, seed: int = 0) -> np.ndarray:
    random = np.random.default_rng(seed).random((6, 1, size, size, 3), dtype=np.float32)
    return np.concatenate([real_inputs(size), random])


def max_differences(reference: bytes, candidate: bytes, inputs: np.ndarray) -> dict[str, float]:
    a, b = session(reference), session(candidate)
    name = a.get_inputs()[0].name
    worst: dict[str, float] = {}
    for x in inputs:
        for output, u, v in zip(a.get_outputs(), a.run(None, {name: x}), b.run(None, {name: x}), strict=True):
            worst[output.name] = max(worst.get(output.name, 0.0), float(np.abs(u - v).max()))
    return worst


def litert_differences(tflite: bytes, candidate: bytes, inputs: np.ndarray) -> dict[str, float] | None:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    interpreter = Interpreter(model_content=tflite)
    interpreter.allocate_tensors()
    details = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    onnx_session = session(candidate)
    worst: dict[str, float] = {}
    for x in inputs[: len(inputs) - 6]:  # the photographs only
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        for output, value in zip(onnx_session.get_outputs(), onnx_session.run(None, {"input_1": x}), strict=True):
            diff = float(np.abs(interpreter.get_tensor(details[output.name]) - value).max())
            worst[output.name] = max(worst.get(output.name, 0.0), diff)
    return worst


def build(python: Path, name: str, tflite: bytes, work: Path) -> tuple[bytes, dict]:
    import onnx

    source = work / f"{name}.tflite"
    source.write_bytes(tflite)
    converted_path = work / f"{name}.converted.onnx"
    convert(python, source, converted_path)
    converted = converted_path.read_bytes()
    model = onnx.load_from_string(converted)
    prelu = rewrite_prelu(model)
    canonical_names(model)  # first: the float16 pass then meets the initializers in a fixed order
    half = store_weights_as_float16(model)
    model.graph.doc_string = f"MediaPipe {Path(TFLITE[name][0]).name} ({MEDIAPIPE}), converted by tf2onnx"
    onnx.checker.check_model(model)
    rewritten = model.SerializeToString()
    size = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    inputs = test_inputs(size)
    record = {
        "tflite": TFLITE[name][0],
        "tflite_sha256": TFLITE[name][1],
        "onnx_sha256": sha256(rewritten),
        "bytes": len(rewritten),
        "input": {"name": model.graph.input[0].name, "shape": [1, size, size, 3]},
        "outputs": [o.name for o in model.graph.output],
        "rewrites": {"prelu_as_relu_min": prelu, "float16_weights": half, "canonical_names": True},
        "rewritten_vs_converted_max_abs": max_differences(converted, rewritten, inputs),
        "proof_inputs": f"{len(inputs) - 6} photographs (and mirrors) from handssca/assets/photos, 6 uniform random",
    }
    litert = litert_differences(tflite, rewritten, inputs)
    if litert is not None:
        record["onnx_vs_litert_max_abs_on_photographs"] = litert
    return rewritten, record


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", help="a mediapipe 0.10.21 wheel already on disk (default: pip download it)")
    parser.add_argument("-o", "--output", default=str(OUTPUT), help="folder for the .onnx files and provenance.json")
    parser.add_argument("--check", action="store_true", help="rerun and compare with the files in --output")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest rewrite difference accepted (0)")
    args = parser.parse_args()
    output = Path(args.output)
    with tempfile.TemporaryDirectory(prefix="hand-models-") as tmp:
        work = Path(tmp)
        wheel = download_wheel(work, args.wheel)
        models, license_text = extract_models(wheel)
        print(f"{wheel.name}: SHA-256 {sha256(wheel.read_bytes())}; the four .tflite files match their pins")
        print("making the converter's environment (tf2onnx, tensorflow-cpu): a few minutes the first time")
        python, versions = converter_environment(work / "venv")
        files, records = {}, {}
        for name, tflite in models.items():
            files[name], records[name] = build(python, name, tflite, work)
            worst = max(records[name]["rewritten_vs_converted_max_abs"].values())
            litert = records[name].get("onnx_vs_litert_max_abs_on_photographs", "not run (no ai-edge-litert)")
            print(f"{name}: {records[name]['bytes'] / 1e6:.1f} MB, rewrites {records[name]['rewrites']}, "
                  f"max |rewritten - converted| {worst:.3g}, vs LiteRT {litert}")  # fmt: skip
            if worst > args.tolerance:
                fail(f"{name}: the rewrites changed the outputs by {worst:.3g} (> {args.tolerance})")
        provenance = {
            "source": {"package": MEDIAPIPE, "wheel": wheel.name, "wheel_sha256": sha256(wheel.read_bytes())},
            "license": "Apache-2.0 (LICENSE: the text shipped in the wheel)",
            "converter": {"command": f"python -m tf2onnx.convert --tflite FILE --opset {OPSET}", **versions},
            "rewritten_with": {
                "python": platform.python_version(),
                "onnx": __import__("onnx").__version__,
                "onnxruntime": __import__("onnxruntime").__version__,
            },  # fmt: skip
            "models": records,
        }
        if args.check:
            shipped = json.loads((output / "provenance.json").read_text())
            different = [
                n for n in files if shipped["models"].get(n, {}).get("onnx_sha256") != records[n]["onnx_sha256"]
            ]
            different += [n for n in files if sha256((output / f"{n}.onnx").read_bytes()) != records[n]["onnx_sha256"]]
            if different:
                fail(f"the rerun differs from the shipped files: {', '.join(sorted(set(different)))}")
            print(f"the rerun gives the shipped bytes for all {len(files)} models")
            return 0
        output.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (output / f"{name}.onnx").write_bytes(data)
        (output / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
        (output / "LICENSE").write_bytes(license_text)
        shutil.rmtree(work / "venv", ignore_errors=True)
        print(f"wrote {len(files)} models, provenance.json and LICENSE to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
