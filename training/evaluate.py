"""Evaluation of any backend with the same code: PyTorch, an exported ONNX file, a TensorRT engine.

A backend is a function from normalised crops (B, 3, S, S) float32 to root-relative joints
(B, 21, 3) and vertices (B, 778, 3) in metres; ``evaluate`` runs each over the same crops and
scores them with the official metrics (training.metrics), so deployment accuracy is measured
exactly as training accuracy is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from handssca.runtime.mano import ManoModel, mano_forward

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def mesh_from_outputs(outputs: dict[str, np.ndarray], mano: ManoModel, tips) -> tuple[np.ndarray, np.ndarray]:
    """Root-relative joints and vertices from a model's outputs: taken from the graph when MANO
    is inside it, else from the runtime's numpy MANO (pose relative to the mean hand)."""
    if "vertices" in outputs and "joints_3d" in outputs:
        joints, vertices = outputs["joints_3d"].astype(np.float64), outputs["vertices"].astype(np.float64)
    else:
        vertices, joints = mano_forward(
            mano, outputs["pose"], outputs["shape"], flat_hand_mean=False, fingertip_ids=tuple(tips)
        )
    root = joints[:, :1]
    return joints - root, vertices - root


def model_backend(model, mano: ManoModel, tips) -> Predict:
    """Any runner with ``run(images) -> outputs`` (OnnxModel, TensorRTModel, TorchModel) as a
    Predict: root-relative joints and vertices."""
    return lambda images: mesh_from_outputs(model.run(images), mano, tips)


def mean_hand_backend(records) -> Predict:
    """The training split's mean root-relative hand for every input: the floor a trained model
    must beat (after Procrustes alignment it scores the pose and shape alone)."""
    joints = [r.joints_3d - r.joints_3d[:1] for r in records if r.joints_3d is not None and r.vertices is not None]
    vertices = [r.vertices - r.joints_3d[:1] for r in records if r.joints_3d is not None and r.vertices is not None]
    if not joints:
        raise ValueError("the mean-hand baseline needs training records with 3D joints and vertices")
    mean_joints, mean_vertices = np.mean(joints, axis=0), np.mean(vertices, axis=0)

    def predict(images: np.ndarray):
        count = len(images)
        return np.repeat(mean_joints[None], count, axis=0), np.repeat(mean_vertices[None], count, axis=0)

    return predict


def evaluate(backends: dict[str, Predict], crops, batch_size: int = 16, limit: int = 0, progress=True) -> dict:
    """{backend: metrics summary} over the first ``limit`` crops (all when 0); also returns the
    predictions of each backend under "_predictions" for submission files."""
    from tqdm import tqdm

    from .metrics import HandMetrics

    count = len(crops) if not limit else min(limit, len(crops))
    metrics = {name: HandMetrics() for name in backends}
    predictions: dict[str, list] = {name: [] for name in backends}
    with tqdm(total=count, desc="evaluating", unit="img", disable=not progress) as bar:
        for start in range(0, count, batch_size):
            samples = [crops[i] for i in range(start, min(start + batch_size, count))]
            images = np.stack([s["image"] for s in samples]).astype(np.float32)
            gt_joints = np.stack([s["joints_3d"] for s in samples])
            gt_vertices = np.stack([s["vertices"] for s in samples])
            has_vertices = all(s["has_vertices"] > 0 for s in samples)
            for name, predict in backends.items():
                joints, vertices = predict(images)
                metrics[name].add(
                    joints, gt_joints, vertices if has_vertices else None, gt_vertices if has_vertices else None
                )
                predictions[name].append((joints, vertices))
            bar.update(len(samples))
    results = {name: m.summary() for name, m in metrics.items()}
    results["_predictions"] = {
        name: (np.concatenate([p[0] for p in preds]), np.concatenate([p[1] for p in preds]))
        for name, preds in predictions.items()
        if preds
    }
    return results
