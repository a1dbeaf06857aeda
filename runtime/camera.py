"""The camera: intrinsics, projection, and a hand's camera translation from its joints and keypoints.

Camera space is OpenCV's: x right, y down, z forward, in metres; K is the (3, 3) intrinsic matrix.
"""

from __future__ import annotations

from pathlib import Path

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


def intrinsics_json(K: np.ndarray, guessed: bool) -> dict:
    """How an output states its intrinsics: fx, fy, cx, cy in pixels, the (3, 3) matrix they make
    (row by row, as OpenCV takes it), and whether they were guessed (``default_intrinsics``)."""
    K = np.asarray(K, np.float64)
    values = {name: round(float(K[i, j]), 6) for name, (i, j) in _INTRINSICS.items()}
    return values | {"matrix": np.round(K, 6).tolist(), "guessed": guessed}


_INTRINSICS = {"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2)}
CALIBRATION_MAX_BYTES = 1 << 20  # a calibration file is a few hundred bytes; refuse a huge one unread
DISTORTION_SIZES = (4, 5, 8, 12, 14)  # the lengths OpenCV's distortion models have


class Camera:
    """The camera a run's frames come from: given intrinsics (``--intrinsics``), a calibration
    OpenCV wrote (``--calibration``: its camera matrix, distortion and image size), or neither,
    when each frame's intrinsics are guessed (``default_intrinsics``) and every output says so.

    ``intrinsics(width, height)`` -> (K, guessed); ``undistort(frame)`` removes the lens
    distortion a calibration gives (the frame keeps its K), else returns the frame."""

    def __init__(self, K=None, distortion=None, size: tuple[int, int] | None = None, source: str = "guessed"):
        self.K = None if K is None else np.asarray(K, np.float64)
        self.distortion = None if distortion is None else np.asarray(distortion, np.float64).reshape(-1)
        if self.distortion is not None and not np.any(self.distortion):
            self.distortion = None  # all zero: nothing to undo
        self.size, self.source = size, source
        self._maps: dict[tuple[int, int], tuple] = {}

    @classmethod
    def from_options(cls, intrinsics=None, calibration=None) -> Camera:
        """``--intrinsics fx,fy,cx,cy`` or ``--calibration FILE`` (not both), or the guess."""
        from handssca.errors import OptionError

        if intrinsics is not None and calibration is not None:
            raise OptionError("give --intrinsics or --calibration, not both")
        if calibration is not None:
            return read_calibration(calibration)
        if intrinsics is not None:
            fx, fy, cx, cy = check_intrinsics(intrinsics)
            return cls(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), source="--intrinsics")
        return cls()

    @property
    def guessed(self) -> bool:
        return self.K is None

    def intrinsics(self, width: int, height: int) -> tuple[np.ndarray, bool]:
        """(K (3, 3) for ``width`` x ``height`` frames, whether it is a guess). A calibration made
        at another resolution of the same aspect is scaled to it; another aspect is refused."""
        if self.K is None:
            return default_intrinsics(width, height), True
        if self.size is None or self.size == (width, height):
            return self.K, False
        scale_x, scale_y = width / self.size[0], height / self.size[1]
        if abs(scale_x / scale_y - 1) > 0.01:
            from handssca.errors import InputError

            raise InputError(
                f"{self.source}: calibrated for {self.size[0]} x {self.size[1]} frames, "
                f"not {width} x {height} (another aspect ratio: calibrate at this resolution)"
            )
        return np.diag([scale_x, scale_y, 1.0]) @ self.K, False

    def undistort(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` without the calibration's lens distortion, keeping its intrinsics (maps made
        once per frame size, so a video pays one remap a frame)."""
        if self.distortion is None:
            return frame
        import cv2

        height, width = frame.shape[:2]
        if (width, height) not in self._maps:
            K, _ = self.intrinsics(width, height)
            self._maps[(width, height)] = cv2.initUndistortRectifyMap(
                K, self.distortion, None, K, (width, height), cv2.CV_16SC2
            )
        return cv2.remap(frame, *self._maps[(width, height)], cv2.INTER_LINEAR)


def parse_intrinsics(text: str) -> tuple[float, float, float, float]:
    """``--intrinsics fx,fy,cx,cy`` (pixels) -> four floats (an argparse type)."""
    import argparse

    try:
        values = tuple(float(v) for v in text.split(","))
        return check_intrinsics(values)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected fx,fy,cx,cy in pixels ({exc})") from None


def check_intrinsics(values) -> tuple[float, float, float, float]:
    """fx, fy, cx, cy checked: four finite numbers, the focal lengths positive."""
    values = tuple(float(v) for v in values)
    if len(values) != 4 or not all(np.isfinite(values)) or values[0] <= 0 or values[1] <= 0:
        raise ValueError("four finite numbers, fx and fy positive")
    return values


def read_calibration(path) -> Camera:
    """The camera of a calibration file OpenCV wrote (cv2.FileStorage, YAML or JSON, as its
    calibration sample writes): ``camera_matrix`` (3 x 3), ``distortion_coefficients`` (4, 5, 8,
    12 or 14 values; optional) and ``image_width``/``image_height`` (optional). A missing or bad
    entry is one line naming the file."""
    import cv2

    from handssca.errors import InputError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such calibration file")
    size = path.stat().st_size
    if size > CALIBRATION_MAX_BYTES:
        raise InputError(f"{path}: {size} bytes is not a camera calibration (at most {CALIBRATION_MAX_BYTES})")
    try:
        storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    except (cv2.error, SystemError) as exc:  # a parse error arrives as either, by OpenCV's version
        why = _first_line(exc.__cause__ or exc)
        raise InputError(f"{path}: OpenCV cannot read it as a calibration (YAML or JSON): {why}") from None
    try:
        if not storage.isOpened():
            raise InputError(f"{path}: OpenCV cannot read it as a calibration (YAML or JSON)")
        K = storage.getNode("camera_matrix").mat()
        distortion = storage.getNode("distortion_coefficients").mat()
        width, height = storage.getNode("image_width").real(), storage.getNode("image_height").real()
    finally:
        storage.release()
    if K is None or K.shape != (3, 3) or not np.isfinite(K).all():
        raise InputError(f"{path}: no 3 x 3 camera_matrix (an opencv-matrix of finite numbers)")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
        raise InputError(f"{path}: camera_matrix is not a camera's (fx, fy > 0, last row 0 0 1)")
    if distortion is not None and (distortion.size not in DISTORTION_SIZES or not np.isfinite(distortion).all()):
        raise InputError(f"{path}: distortion_coefficients must be 4, 5, 8, 12 or 14 finite numbers")
    image_size = (int(width), int(height)) if width > 0 and height > 0 else None
    return Camera(K, distortion, image_size, source=str(path))


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[-1][:200]
