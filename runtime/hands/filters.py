"""Temporal smoothing: the One Euro filter (Casiez et al., CHI 2012), and a hand's parameters through it.

A low-pass filter whose cut-off rises with speed: still hands stop jittering, fast hands do not
lag. Works on arrays of any shape (each element filtered independently), with explicit
timestamps so dropped frames are handled.
"""

from __future__ import annotations

import math

import numpy as np

from handssca.runtime.mano.conventions import axis_angle_to_quaternion, quaternion_to_axis_angle


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """``filter(x, t)`` -> smoothed x. min_cutoff (Hz) sets smoothing at rest, beta how fast the
    cut-off grows with speed, d_cutoff the cut-off of the speed estimate itself."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0):
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self._x = self._dx = self._t = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._x.shape != x.shape or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        dx = (x - self._x) / dt
        a_d = _alpha(self.d_cutoff, dt)
        self._dx = a_d * dx + (1 - a_d) * self._dx
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        tau = 1.0 / (2 * np.pi * cutoff)
        a = 1.0 / (1.0 + tau / dt)
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


# One Euro settings (min_cutoff Hz, beta, d_cutoff Hz) for a hand's parameters, chosen from
# benchmarks/bench_temporal_coherence.py (docs/benchmarks.md#temporal-coherence): the joint
# rotations as unit quaternions (beta per unit of quaternion a second), the shape, which a hand
# keeps, nearly held, and the camera translation in metres (beta per m/s).
# On the shipped network's rendered hand held still they cut keypoint jitter by 69% and joint
# acceleration by 88%, for a lag of 2 frames (67 ms at 30 FPS) behind a 30-degree, 5 cm step.
HAND_SMOOTHING = {"rotation": (0.5, 4.0, 1.0), "shape": (0.2, 0.0, 1.0), "translation": (0.5, 16.0, 1.0)}
# A gap this long in the source's clock (a live camera that stalled) starts the filters afresh:
# the hand on either side of it is not one motion.
MAX_GAP_S = 0.5


class HandFilter:
    """One tracked hand's parameters smoothed on the source's clock: ``filter(pose, shape,
    translation, t)`` -> the smoothed (pose (48,), shape (10,), translation (3,)).

    The 16 joint rotations are filtered as unit quaternions, each kept on the hemisphere of its
    previous value, so a rotation through 180 degrees has no jump (axis-angle wraps there). They
    are the full rotations MANO applies: the pose plus ``offset`` (48,), the hand model's mean
    finger pose (mirrored for a left hand) where the pose is relative to it; the result is
    relative again. One filter follows one hand on one side: a track makes a new one when it
    starts or its side changes, and a gap longer than MAX_GAP_S starts it afresh."""

    def __init__(self, offset: np.ndarray | None = None, settings: dict = HAND_SMOOTHING):
        self.offset = np.zeros(48) if offset is None else np.asarray(offset, np.float64)
        self.filters = {name: OneEuroFilter(*settings[name]) for name in ("rotation", "shape", "translation")}
        self._quaternions = self._t = None

    def __call__(self, pose, shape, translation, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._t is not None and not (0 < t - self._t <= MAX_GAP_S):
            self.reset()
        quaternions = axis_angle_to_quaternion((np.asarray(pose, np.float64) + self.offset).reshape(-1, 3))
        if self._quaternions is not None:  # the same rotation, on the previous one's side
            quaternions *= np.where((quaternions * self._quaternions).sum(-1, keepdims=True) < 0, -1.0, 1.0)
        quaternions = self.filters["rotation"](quaternions, t)
        quaternions /= np.linalg.norm(quaternions, axis=-1, keepdims=True)
        self._quaternions, self._t = quaternions, t
        smoothed_pose = quaternion_to_axis_angle(quaternions).reshape(-1) - self.offset
        return smoothed_pose, self.filters["shape"](shape, t), self.filters["translation"](translation, t)

    def reset(self) -> None:
        for one in self.filters.values():
            one.reset()
        self._quaternions = self._t = None
