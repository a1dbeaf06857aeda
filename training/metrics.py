"""The official hand-pose metrics, offline: FreiHAND's (also HO3D's) and DexYCB's definitions.

numpy only (no torch), so exported models are scored by the same code as PyTorch ones.

* Procrustes with scale, as FreiHAND's ``align_w_scale``: centre both point sets, divide each by
  its Frobenius norm, find the orthogonal rotation and the scale (sum of singular values) that
  best map the prediction onto the ground truth, then undo the ground truth's normalisation.
* PA-MPJPE / PA-MPVPE: mean Euclidean error after that alignment, per sample, then averaged.
* AUC: per joint, the PCK curve over thresholds linspace(0, 50 mm, 100), integrated with the
  trapezoid rule and divided by the threshold range, then averaged over joints (FreiHAND's
  EvalUtil; the aligned joints).
* F@5 mm / F@15 mm: on aligned vertices, precision = fraction of predicted vertices whose nearest
  ground-truth vertex is closer than the threshold (strictly), recall the other way round,
  F = 2PR / (P + R) (0 when both are 0), averaged over samples.
* MPJPE (DexYCB's hpe_eval): mean joint error after subtracting each set's root (wrist) joint.
"""

from __future__ import annotations

import numpy as np

MM = 1000.0


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` (N, 3) mapped onto ``gt`` (N, 3) by the best similarity transform."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mu_pred, mu_gt = pred.mean(axis=0), gt.mean(axis=0)
    p, g = pred - mu_pred, gt - mu_gt
    norm_p, norm_g = np.linalg.norm(p) + 1e-8, np.linalg.norm(g) + 1e-8
    p, g = p / norm_p, g / norm_g
    # Orthogonal Procrustes: R minimising |g R - p|, scale the sum of the singular values.
    u, sigma, vt = np.linalg.svd(g.T @ p)
    rotation = u @ vt
    aligned = (p @ rotation.T) * sigma.sum()
    return aligned * norm_g + mu_gt


def root_relative(points: np.ndarray, root_index: int = 0) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points - points[:, root_index : root_index + 1]


def _nearest_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each point of a (N, 3), the distance to its nearest point of b (M, 3)."""
    squared = (a * a).sum(1)[:, None] - 2 * a @ b.T + (b * b).sum(1)[None, :]
    return np.sqrt(np.maximum(squared.min(axis=1), 0.0))


def f_score(pred: np.ndarray, gt: np.ndarray, threshold: float) -> float:
    """F-score of two point sets at ``threshold`` (same units)."""
    precision = float((_nearest_distances(pred, gt) < threshold).mean())
    recall = float((_nearest_distances(gt, pred) < threshold).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def pck_auc(errors_mm: np.ndarray, max_mm: float = 50.0, steps: int = 100) -> tuple[float, np.ndarray, np.ndarray]:
    """(AUC, PCK curve, thresholds) of per-joint errors (S, K): FreiHAND's EvalUtil."""
    thresholds = np.linspace(0.0, max_mm, steps)
    per_joint = (errors_mm[:, :, None] <= thresholds[None, None, :]).mean(axis=0)  # (K, steps)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz
    auc = trapezoid(per_joint, thresholds, axis=1) / (max_mm - 0.0)
    return float(auc.mean()), per_joint.mean(axis=0), thresholds


class HandMetrics:
    """Accumulates predictions and ground truth (metres) and summarises them in mm."""

    def __init__(self, thresholds_mm=(5.0, 15.0), pck_max_mm: float = 50.0, pck_steps: int = 100):
        self.thresholds_mm = tuple(thresholds_mm)
        self.pck_max_mm, self.pck_steps = pck_max_mm, pck_steps
        self._pa_joint_errors: list[np.ndarray] = []  # (K,) per sample, mm
        self._joint_errors: list[np.ndarray] = []
        self._pa_vertex_errors: list[float] = []
        self._f: dict[float, list[float]] = {t: [] for t in self.thresholds_mm}
        self._pa_vertex_per_point: list[np.ndarray] = []

    def add(self, pred_joints, gt_joints, pred_vertices=None, gt_vertices=None, joint_valid=None) -> None:
        pred_joints = np.asarray(pred_joints, dtype=np.float64)
        gt_joints = np.asarray(gt_joints, dtype=np.float64)
        if pred_joints.shape != gt_joints.shape or pred_joints.ndim != 3:
            raise ValueError(f"joints must be (B, K, 3) alike, got {pred_joints.shape} and {gt_joints.shape}")
        valid = np.ones(gt_joints.shape[:2], bool) if joint_valid is None else np.asarray(joint_valid, bool)
        pred_rel, gt_rel = root_relative(pred_joints), root_relative(gt_joints)
        for i in range(len(gt_joints)):
            keep = valid[i]
            aligned = procrustes_align(pred_joints[i][keep], gt_joints[i][keep])
            pa = np.full(len(keep), np.nan)
            pa[keep] = MM * np.linalg.norm(aligned - gt_joints[i][keep], axis=1)
            plain = np.full(len(keep), np.nan)
            plain[keep] = MM * np.linalg.norm(pred_rel[i][keep] - gt_rel[i][keep], axis=1)
            self._pa_joint_errors.append(pa)
            self._joint_errors.append(plain)
        if pred_vertices is None or gt_vertices is None:
            return
        pred_vertices = np.asarray(pred_vertices, dtype=np.float64)
        gt_vertices = np.asarray(gt_vertices, dtype=np.float64)
        if pred_vertices.shape != gt_vertices.shape:
            raise ValueError(f"vertices must be alike, got {pred_vertices.shape} and {gt_vertices.shape}")
        for p, g in zip(pred_vertices, gt_vertices, strict=True):
            aligned = procrustes_align(p, g)
            per_point = MM * np.linalg.norm(aligned - g, axis=1)
            self._pa_vertex_per_point.append(per_point)
            self._pa_vertex_errors.append(float(per_point.mean()))
            for t in self.thresholds_mm:
                self._f[t].append(f_score(MM * aligned, MM * g, t))

    @property
    def count(self) -> int:
        return len(self._pa_joint_errors)

    def summary(self) -> dict:
        if not self.count:
            return {"count": 0}
        pa = np.stack(self._pa_joint_errors)
        plain = np.stack(self._joint_errors)
        auc_joints, curve, thresholds = pck_auc(np.nan_to_num(pa, nan=np.inf), self.pck_max_mm, self.pck_steps)
        result = {
            "count": self.count,
            "pa_mpjpe_mm": float(np.nanmean(np.nanmean(pa, axis=1))),
            "mpjpe_mm": float(np.nanmean(np.nanmean(plain, axis=1))),
            "auc_pa_joints": auc_joints,
            "pa_mpvpe_mm": None,
            "auc_pa_vertices": None,
            "pck_curve_pa_joints": curve.tolist(),
            "thresholds_mm": thresholds.tolist(),
        }
        for t in self.thresholds_mm:
            result[f"f{t:g}"] = None
        if self._pa_vertex_errors:
            result["pa_mpvpe_mm"] = float(np.mean(self._pa_vertex_errors))
            result["auc_pa_vertices"] = pck_auc(np.stack(self._pa_vertex_per_point), self.pck_max_mm, self.pck_steps)[0]
            for t in self.thresholds_mm:
                result[f"f{t:g}"] = float(np.mean(self._f[t]))
        return result

    def per_sample(self) -> dict[str, list[float]]:
        return {
            "pa_mpjpe_mm": [float(np.nanmean(e)) for e in self._pa_joint_errors],
            "mpjpe_mm": [float(np.nanmean(e)) for e in self._joint_errors],
            "pa_mpvpe_mm": list(self._pa_vertex_errors),
        }


def format_metrics_table(rows: dict[str, dict]) -> str:
    """One line per model/backend: PA-MPJPE, PA-MPVPE, MPJPE (mm), F@5, F@15, AUC."""

    def cell(value, scale=1.0, fmt="{:.2f}"):
        return "-" if value is None else fmt.format(value * scale)

    header = f"{'model':<36}{'PA-MPJPE':>10}{'PA-MPVPE':>10}{'MPJPE':>9}{'F@5':>8}{'F@15':>8}{'AUC':>8}{'n':>7}"
    lines = [header, "-" * len(header)]
    for name, r in rows.items():
        lines.append(
            f"{name:<36}{cell(r.get('pa_mpjpe_mm')):>10}{cell(r.get('pa_mpvpe_mm')):>10}{cell(r.get('mpjpe_mm')):>9}"
            f"{cell(r.get('f5'), 100, '{:.1f}%'):>8}{cell(r.get('f15'), 100, '{:.1f}%'):>8}"
            f"{cell(r.get('auc_pa_joints'), 1, '{:.3f}'):>8}{r.get('count', 0):>7}"
        )
    return "\n".join(lines)


def prediction_shift(reference: tuple, other: tuple) -> dict:
    """How far ``other``'s predictions (root-relative joints, vertices in metres) move from
    ``reference``'s on the same samples: per point distances in mm, median, p90 and max. The
    raw cost of a faster backend (int8, fp16) before any metric averages it away."""
    shift = {}
    for name, a, b in (("joints", reference[0], other[0]), ("vertices", reference[1], other[1])):
        distances = 1e3 * np.linalg.norm(np.asarray(b, np.float64) - np.asarray(a, np.float64), axis=-1).ravel()
        shift[f"{name}_mm"] = {
            "median": float(np.median(distances)),
            "p90": float(np.quantile(distances, 0.9)),
            "max": float(distances.max()),
        }
    return shift


def format_shift_lines(reference: str, results: dict, shifts: dict) -> list[str]:
    """One line per model against ``reference``: metric deltas and the raw shift."""
    lines = []
    base = results[reference]
    for name, shift in shifts.items():
        deltas = []
        for key, label, scale in (
            ("pa_mpjpe_mm", "PA-MPJPE", 1.0),
            ("pa_mpvpe_mm", "PA-MPVPE", 1.0),
            ("f5", "F@5", 100),
        ):
            if base.get(key) is not None and results[name].get(key) is not None:
                unit = " pt" if key == "f5" else " mm"
                deltas.append(f"{label} {scale * (results[name][key] - base[key]):+.3f}{unit}")
        j, v = shift["joints_mm"], shift["vertices_mm"]
        if base.get("ms_per_image") and results[name].get("ms_per_image"):
            ratio = results[name]["ms_per_image"] / base["ms_per_image"]
            deltas.append(f"{results[name]['ms_per_image']:.2f} ms/image ({ratio:.2f}x the time)")
        lines.append(
            f"{name} vs {reference}: {', '.join(deltas) or 'no metrics'}; joints move {j['median']:.2f} mm median, "
            f"{j['p90']:.2f} p90, {j['max']:.2f} max; vertices {v['median']:.2f} / {v['p90']:.2f} / {v['max']:.2f} mm"
        )
    return lines
