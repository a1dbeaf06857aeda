"""The camera: intrinsics, projection, and a hand's camera translation from its joints and keypoints.

Camera space is OpenCV's: x right, y down, z forward, in metres; K is the (3, 3) intrinsic matrix.
"""

from __future__ import annotations

import numpy as np


def default_intrinsics(width: int, height: int) -> np.ndarray:
    """A plausible webcam: focal length about the image's longer side, centred principal point."""
    f = float(max(width, height))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points (..., 3), z forward, through intrinsics K -> pixels (..., 2)."""
    uvw = points @ np.asarray(K, dtype=np.float64).T
    return uvw[..., :2] / np.maximum(uvw[..., 2:3], 1e-9)


# The nearest a hand's wrist can be to the camera, metres: a solved translation nearer (or behind
# the camera, which joints that disagree with their keypoints can give) is held at this depth, so
# that the hand's projection stays finite.
MIN_DEPTH = 0.05


def solve_translation(joints_3d: np.ndarray, keypoints_2d: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The camera-frame translation t with project(joints_3d + t) closest to keypoints_2d
    (linear least squares in t: each keypoint gives two equations), its depth at least
    MIN_DEPTH (then the least-squares x and y at that depth)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = joints_3d.T
    du, dv = keypoints_2d[:, 0] - cx, keypoints_2d[:, 1] - cy
    n = len(x)
    A = np.zeros((2 * n, 3))
    b = np.zeros(2 * n)
    A[:n, 0], A[:n, 2], b[:n] = fx, -du, du * z - fx * x
    A[n:, 1], A[n:, 2], b[n:] = fy, -dv, dv * z - fy * y
    t = np.linalg.lstsq(A, b, rcond=None)[0]
    if not t[2] >= MIN_DEPTH:  # the quadratic's minimum under z >= MIN_DEPTH lies on that bound
        xy = np.linalg.lstsq(A[:, :2], b - A[:, 2] * MIN_DEPTH, rcond=None)[0]
        t = np.array([xy[0], xy[1], MIN_DEPTH])
    return t
