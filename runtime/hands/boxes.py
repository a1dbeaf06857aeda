"""Box geometry in image pixels: boxes are (x0, y0, x1, y1) arrays, x0 < x1 and y0 < y1.

The hand finder, the tracker and the crop share these: a hand's tight box from its points, the
square box a track crops, and the overlaps (IoU, containment) that say whether two boxes are one
hand. Rotated rectangles (MediaPipe's hand rects) are in rects.py.
"""

from __future__ import annotations

import numpy as np


def box_from_points(points_2d: np.ndarray) -> np.ndarray:
    """The tight box (x0, y0, x1, y1) of 2D points (K, 2)."""
    p = np.asarray(points_2d, dtype=np.float64)
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def square_box(keypoints: np.ndarray, minimum: float = 8.0) -> np.ndarray:
    """The square box around the keypoints' tight box (its longer side, at least ``minimum``)."""
    box = box_from_points(keypoints)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1], minimum) / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def centred_box(frame_shape) -> np.ndarray:
    """The centred square of 0.6 x the shorter side: a hand held up to the camera."""
    h, w = frame_shape[:2]
    side = 0.6 * min(h, w)
    return np.array([(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2])


def _overlaps(box: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersections (K,), the area of ``box``, the areas (K,) of ``boxes``)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    intersection = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return intersection, area, areas


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with each of (K, 4) boxes (xmin, ymin, xmax, ymax); 0 where disjoint.

    calculators/util/non_max_suppression_calculator.cc (OverlapSimilarity, INTERSECTION_OVER_UNION).
    """
    intersection, area, areas = _overlaps(box, boxes)
    union = area + areas - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((intersection > 0) & (union > 0), intersection / union, 0.0)


def box_containment(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """How much of the smaller box lies inside the larger, for one (4,) box and each of (K, 4):
    intersection over the smaller area; 1 for a box inside another, 0 where disjoint. IoU cannot
    see a small box inside a large one (a square of 0.3 x the side inside another: IoU 0.09)."""
    intersection, area, areas = _overlaps(box, boxes)
    smaller = np.minimum(area, areas)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((intersection > 0) & (smaller > 0), intersection / smaller, 0.0)
