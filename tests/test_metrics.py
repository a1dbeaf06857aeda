"""The official metrics against hand-computed cases and a literal re-implementation."""

from __future__ import annotations

import numpy as np
import pytest

from handssca.runtime.mano.conventions import rotation_to_axis_angle  # noqa: F401 (rotation helpers)
from handssca.runtime.mano.model import rodrigues
from handssca.training.metrics import HandMetrics, f_score, format_metrics_table, pck_auc, procrustes_align


def random_similarity(rng):
    rotation = rodrigues(rng.normal(size=3))
    return rotation, rng.uniform(0.5, 2.0), rng.normal(size=3)


def test_procrustes_recovers_a_similarity_transform(rng):
    gt = rng.normal(size=(21, 3))
    rotation, scale, shift = random_similarity(rng)
    pred = scale * gt @ rotation.T + shift
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-7)


def test_procrustes_of_a_non_rigid_case_by_hand():
    # Two points each: gt at x = -1 and 1, prediction at x = -1 and 3 (centred: -2, 2; scale free):
    # after alignment the prediction lies exactly on the gt (a scaled, shifted copy).
    gt = np.array([[-1.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    pred = np.array([[-1.0, 0, 0], [3.0, 0, 0], [1.0, 2.0, 0]])  # = 2 * gt + (1, 0, 0)
    np.testing.assert_allclose(procrustes_align(pred, gt), gt, atol=1e-7)
    # A shape that no similarity reaches: a square against a rectangle; the error is by hand.
    square = np.array([[1.0, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]])
    rect = np.array([[2.0, 1, 0], [-2, 1, 0], [-2, -1, 0], [2, -1, 0]])
    aligned = procrustes_align(square, rect)
    # Best scale s = trace / |square|^2 = (2+1)*4/8 = 1.5: corners at (+-1.5, +-1.5).
    np.testing.assert_allclose(np.abs(aligned[:, :2]), 1.5, atol=1e-7)


def test_joint_metrics_by_hand():
    gt = np.zeros((2, 21, 3))
    gt[:, :, 0] = np.arange(21) * 0.01
    gt[:, :, 1] = (np.arange(21) % 3) * 0.01
    pred = gt + np.array([0.003, -0.004, 0.0])  # a rigid 5 mm offset
    metrics = HandMetrics()
    metrics.add(pred, gt)
    summary = metrics.summary()
    assert summary["pa_mpjpe_mm"] == pytest.approx(0, abs=1e-4)  # the official +1e-8 in the norms
    assert summary["mpjpe_mm"] == pytest.approx(0, abs=1e-9)  # root-relative removes the offset
    # Errors are tiny but not 0, so PCK is 0 only at the 0 mm threshold: AUC = 1 - 0.5 / 99.
    assert summary["auc_pa_joints"] == pytest.approx(1 - 0.5 / 99, abs=1e-12)
    assert summary["pa_mpvpe_mm"] is None and summary["f5"] is None
    wrist_off = pred.copy()
    wrist_off[:, 0] += [0.0, 0.0, 0.01]  # moving the root moves every root-relative joint by 1 cm
    metrics = HandMetrics()
    metrics.add(wrist_off, gt)
    assert metrics.summary()["mpjpe_mm"] == pytest.approx(20 / 21 * 10, rel=1e-6)
    valid = np.ones((2, 21), bool)
    valid[:, 5] = False
    shifted = pred.copy()
    shifted[:, 5] += 1.0  # a wild joint that is masked out
    masked = HandMetrics()
    masked.add(shifted, gt, joint_valid=valid)
    assert masked.summary()["pa_mpjpe_mm"] == pytest.approx(0, abs=1e-4)


def test_auc_at_a_constant_error_by_hand():
    # Every error 25 mm: PCK is 0 below 25 mm and 1 from 25 mm on. thresholds = linspace(0, 50, 100):
    # the first threshold >= 25 is index 50 (25.25 mm), so the trapezoid area is
    # (50 - 25.25) + 0.5 * (25.25 - 24.75) = 24.75 + 0.25 = 25.0, divided by 50 -> 0.5.
    auc, curve, thresholds = pck_auc(np.full((3, 21), 25.0))
    assert auc == pytest.approx(0.5, abs=1e-12)
    assert curve[49] == 0 and curve[50] == 1 and thresholds[-1] == 50


def test_f_score_by_counting():
    gt = np.array([[0.0, 0, 0], [10, 0, 0], [20, 0, 0], [30, 0, 0]])
    pred = np.array([[1.0, 0, 0], [10, 6, 0], [50, 0, 0]])
    # Precision at 5: pred 0 (1 from gt 0) in, pred 1 (6 away) out, pred 2 (20 away) out -> 1/3.
    # Recall at 5: gt 0 in (1), gt 1 out (6), gt 2 out (10 from pred 1... 11.7), gt 3 out -> 1/4.
    p, r = 1 / 3, 1 / 4
    assert f_score(pred, gt, 5.0) == pytest.approx(2 * p * r / (p + r))
    assert f_score(pred + 1000, gt, 5.0) == 0.0


def literal_freihand(pred_joints, gt_joints, pred_verts, gt_verts):
    """The official per-sample loop, written plainly (slow) to check the vectorised code."""
    pa_joint, pa_vert, f5, f15 = [], [], [], []
    for pj, gj, pv, gv in zip(pred_joints, gt_joints, pred_verts, gt_verts, strict=True):
        aj = procrustes_align(pj, gj)
        pa_joint.append(np.mean([np.linalg.norm(aj[k] - gj[k]) for k in range(len(gj))]) * 1000)
        av = procrustes_align(pv, gv)
        pa_vert.append(np.mean([np.linalg.norm(av[k] - gv[k]) for k in range(len(gv))]) * 1000)
        for threshold, out in ((0.005, f5), (0.015, f15)):
            d_pred = [min(np.linalg.norm(a - b) for b in gv) for a in av]
            d_gt = [min(np.linalg.norm(b - a) for a in av) for b in gv]
            precision = np.mean([d < threshold for d in d_pred])
            recall = np.mean([d < threshold for d in d_gt])
            out.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return np.mean(pa_joint), np.mean(pa_vert), np.mean(f5), np.mean(f15)


def test_vectorised_metrics_match_the_literal_definition(rng):
    gt_joints = rng.normal(0, 0.05, (3, 21, 3))
    gt_verts = rng.normal(0, 0.05, (3, 60, 3))
    pred_joints = gt_joints + rng.normal(0, 0.008, gt_joints.shape)
    pred_verts = gt_verts + rng.normal(0, 0.006, gt_verts.shape)
    metrics = HandMetrics()
    metrics.add(pred_joints, gt_joints, pred_verts, gt_verts)
    summary = metrics.summary()
    expected = literal_freihand(pred_joints, gt_joints, pred_verts, gt_verts)
    got = (summary["pa_mpjpe_mm"], summary["pa_mpvpe_mm"], summary["f5"], summary["f15"])
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert 0 < summary["auc_pa_vertices"] < 1
    table = format_metrics_table({"pytorch": summary})
    assert "PA-MPJPE" in table and f"{summary['pa_mpjpe_mm']:.2f}" in table
