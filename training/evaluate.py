"""Evaluation of any model with the same code: PyTorch, an exported ONNX file, a TensorRT engine.

A predictor is a function from normalised crops (B, 3, S, S) float32 to root-relative joints
(B, 21, 3) and vertices (B, 778, 3) in metres; ``evaluate`` runs each over the same crops and
scores them with the official metrics (training.metrics), so deployment accuracy is measured
exactly as training accuracy is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from handssca.errors import RunError
from handssca.runtime.mano.model import ManoModel, meshes_from_outputs

Predict = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def root_relative_meshes(outputs: dict[str, np.ndarray], mano: ManoModel, fingertip_ids) -> tuple:
    """Root-relative joints and vertices (metres) from any runner's outputs (the one conversion,
    ``runtime.runner.meshes_from_outputs``), as the metrics compare them."""
    vertices, joints = meshes_from_outputs(outputs, mano, fingertip_ids)
    root = joints[:, :1]
    return joints - root, vertices - root


def model_predictor(model, mano: ManoModel, fingertip_ids) -> Predict:
    """Any runner (OnnxRunner, TensorRTRunner, TorchRunner) as a Predict: root-relative joints and vertices."""
    return lambda images: root_relative_meshes(model.run(images), mano, fingertip_ids)


def mean_hand_predictor(records) -> Predict:
    """The training split's mean root-relative hand for every input: the floor a trained model
    must beat (after Procrustes alignment it scores the pose and shape alone)."""
    joints = [r.joints_3d - r.joints_3d[:1] for r in records if r.joints_3d is not None and r.vertices is not None]
    vertices = [r.vertices - r.joints_3d[:1] for r in records if r.joints_3d is not None and r.vertices is not None]
    if not joints:
        raise RunError("the mean-hand baseline needs training records with 3D joints and vertices")
    mean_joints, mean_vertices = np.mean(joints, axis=0), np.mean(vertices, axis=0)

    def predict(images: np.ndarray):
        count = len(images)
        return np.repeat(mean_joints[None], count, axis=0), np.repeat(mean_vertices[None], count, axis=0)

    return predict


def evaluate(
    predictors: dict[str, Predict], crops, batch_size: int = 16, limit: int = 0, progress=True, max_bad_fraction=0.01
) -> dict:
    """{predictor: metrics summary} over the first ``limit`` crops (all when 0), plus
    "_predictions" (each predictor's, for submission files), "_skipped" (each sample counted out,
    by file and reason) and "_scored" (samples with ground truth).

    A sample whose image is missing, truncated or corrupt is counted out and named, never replaced
    by another; more than ``max_bad_fraction`` of them stops the run in one line. Samples without
    ground truth (a public evaluation split) are predicted but not scored."""
    from tqdm import tqdm

    from handssca.errors import InputError, UnusableSample

    from .metrics import HandMetrics

    load = getattr(crops, "load", crops.__getitem__)  # HandCrops.load never substitutes a sample
    count = len(crops) if not limit else min(limit, len(crops))
    metrics = {name: HandMetrics() for name in predictors}
    predictions: dict[str, list] = {name: [] for name in predictors}
    skipped: list[str] = []  # every sample counted out, by file and reason
    bad: list[str] = []  # those whose image is unusable (not the data set's unannotated frames)
    scored = predicted = 0
    seconds = dict.fromkeys(predictors, 0.0)
    with tqdm(total=count, desc="evaluating", unit="img", disable=not progress) as bar:
        for start in range(0, count, batch_size):
            samples = []
            for i in range(start, min(start + batch_size, count)):
                try:
                    samples.append(load(i))
                except UnusableSample as exc:
                    skipped.append(str(exc))
                    if exc.unannotated:  # the data set's own unlabelled frames (DexYCB marks them)
                        continue
                    bad.append(str(exc))
                    if len(bad) > max(1, max_bad_fraction * count):
                        raise InputError(
                            f"{len(bad)} of the first {i + 1} samples are unusable, more than "
                            f"{max_bad_fraction:.0%}: {bad[0]} (and {len(bad) - 1} more)"
                        ) from exc
            bar.update(min(start + batch_size, count) - start)
            if not samples:
                continue
            images = np.stack([s["image"] for s in samples]).astype(np.float32)
            predicted += len(images)
            truth = [k for k, s in enumerate(samples) if s["has_3d"] > 0]
            scored += len(truth)
            gt_joints = np.stack([samples[k]["joints_3d"] for k in truth]) if truth else None
            with_vertices = bool(truth) and all(samples[k]["has_vertices"] > 0 for k in truth)
            gt_vertices = np.stack([samples[k]["vertices"] for k in truth]) if with_vertices else None
            for name, predict in predictors.items():  # in turn on each batch: their times compare
                start_time = time.perf_counter()
                joints, vertices = predict(images)
                seconds[name] += time.perf_counter() - start_time
                if truth:
                    metrics[name].add(joints[truth], gt_joints, vertices[truth] if with_vertices else None, gt_vertices)
                predictions[name].append((joints, vertices))
    results = {name: m.summary() for name, m in metrics.items()}
    for name in predictors:
        results[name]["ms_per_image"] = 1e3 * seconds[name] / predicted if predicted else None
    results["_predictions"] = {
        name: (np.concatenate([p[0] for p in preds]), np.concatenate([p[1] for p in preds]))
        for name, preds in predictions.items()
        if preds
    }
    results["_skipped"], results["_scored"] = skipped, scored
    return results


def run_evaluation(
    *,
    dataset: str = "freihand",
    root: str,
    mano: str = "builtin",
    split: str | None = None,
    checkpoint: str | None = None,
    onnx=(),
    engines=(),
    plugin: str | None = None,
    mean_hand: bool = False,
    batch_size: int = 16,
    samples: int = 0,
    output: str | Path = "eval.json",
    submission: str | Path | None = None,
) -> list[str]:
    """``handssca eval``: every model given (a checkpoint, ONNX files, TensorRT engines, the mean
    hand) scored on one split with the official metrics; writes the JSON report (and the official
    submission file of the first model) atomically, and returns the lines to show."""
    from handssca.errors import InputError, OptionError
    from handssca.runtime.backends.runner import open_runner
    from handssca.runtime.files import check_writable, write_atomically

    from .config import load_config
    from .datasets import DEFAULT_SPLITS, load_mano_model, open_dataset
    from .metrics import format_metrics_table, format_shift_lines, prediction_shift
    from .samples import HandCrops

    if not (checkpoint or onnx or engines or mean_hand):
        raise OptionError("give at least one model: a checkpoint, an ONNX file, an engine or the mean hand")
    for target in (output, submission):  # before the evaluation, not after it
        if target:
            check_writable(target)
    config = load_config(None, [f"data.dataset={dataset}", f"data.root={root}", f"mano.model={mano}"])
    mano_model, fingertip_ids, note = load_mano_model(config)
    split = split or DEFAULT_SPLITS[dataset][1] or "evaluation"
    records = open_dataset(config, split, mano_model)
    sources = [("pytorch", checkpoint)] if checkpoint else []
    for kind, paths in (("onnxruntime", onnx or ()), ("tensorrt", engines or ())):
        sources += [(f"{kind}:{Path(path).name}", path) for path in paths]
    predictors, size = {}, None
    for label, path in sources:
        model = open_runner(path, plugin=plugin)
        predictors[label] = model_predictor(model, mano_model, fingertip_ids)
        size = size or (model.metadata.get("input", {}).get("shape") or [None] * 3)[2]
    if mean_hand:
        predictors["mean hand (baseline)"] = mean_hand_predictor(
            open_dataset(config, DEFAULT_SPLITS[dataset][0] or "training", mano_model)
        )
    crops = HandCrops(records, size=size or 256, augment=None, substitute=False)
    results = evaluate(predictors, crops, batch_size=batch_size, limit=samples)
    predictions, skipped, scored = results.pop("_predictions"), results.pop("_skipped"), results.pop("_scored")
    total = min(len(crops), samples or len(crops))
    if total - len(skipped) <= 0:  # nothing predicted: no report, no submission, exit 1
        why = f": {skipped[0]}" + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else "") if skipped else ""
        raise InputError(f"{root}: no sample of the {dataset} {split} split could be evaluated ({total} listed){why}")
    lines = [f"{dataset} {split}, {total - len(skipped)} of {total} samples, MANO: {note}"]
    lines += [f"counted out: {reason}" for reason in skipped]
    lines.append(format_metrics_table(results))
    models = [name for name in predictions if name != "mean hand (baseline)"]
    shifts = {name: prediction_shift(predictions[models[0]], predictions[name]) for name in models[1:]}
    if shifts:
        lines += format_shift_lines(models[0], results, shifts)
    if not scored:
        lines.append("no ground truth in this split: metrics unavailable (predictions and --submission still written)")
    report = {
        "dataset": dataset, "split": split, "mano": note, "samples": total - len(skipped), "skipped": skipped,
        "scored": scored, "results": results,
        "shift_vs_first_model": {"reference": models[0], **shifts} if shifts else None,
    }  # fmt: skip
    write_atomically(Path(output), json.dumps(report, indent=2).encode())
    lines.append(f"wrote {output}")
    if submission:
        from .submission import write_freihand_submission, write_ho3d_submission

        first = next(iter(predictions))
        joints, vertices = predictions[first]
        writer = write_ho3d_submission if dataset == "ho3d" else write_freihand_submission
        writer(submission, np.asarray(joints), np.asarray(vertices))
        lines.append(f"wrote {submission} (root-relative predictions of {first})")
    return lines
