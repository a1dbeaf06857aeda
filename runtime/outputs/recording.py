"""A recording: each tracked hand's parameters, frame by frame, on the source's clock.

What the animation writers (``gltf.write_animation``, ``bvh.write_bvh``) take. Each webcam frame
adds its settled hands (``add``): the parameters the frame reported (pose, shape, camera
translation, after the track's filter) and the 21 joints derived from them, which is what a
written animation must reproduce. The conventions (the same as ``HandMeshPredictor``'s):

- ``pose`` (48,): 16 joints' axis-angle, the global rotation first, MANO's joint order; relative
  to the hand model's mean finger pose unless ``flat_hand_mean``; a left hand's pose is the
  mirror (``mirror_pose``: (x, y, z) -> (x, -y, -z) per joint) of the right hand it is drawn as.
- the hand model is a right hand; a left hand is its mirror image (x -> -x) of the right hand
  of the mirrored pose, with its faces' winding flipped.
- ``translation`` (3,): the wrist's camera-space position, metres; ``joints`` (21, 3): camera
  space, metres, FreiHAND's joint order (``mano.model.JOINT_ORDER``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from handssca.runtime.mano.conventions import pose_offset, posed_hand
from handssca.runtime.mano.model import ManoModel


@dataclass
class TrackFrame:
    time_s: float  # the source's clock
    pose: np.ndarray  # (48,) as reported (a left hand's in its mirrored convention)
    shape: np.ndarray  # (10,)
    translation: np.ndarray  # (3,) the wrist in camera space, metres
    joints: np.ndarray  # (21, 3) camera space, metres: what the animation must reproduce


@dataclass
class TrackRecording:
    id: int
    side: str  # "right" or "left"; a track whose side changes is recorded as a new TrackRecording
    frames: list[TrackFrame] = field(default_factory=list)

    @property
    def median_shape(self) -> np.ndarray:
        """(10,) the shape an animation's rest mesh is made with."""
        return np.median(np.stack([f.shape for f in self.frames]), axis=0)


@dataclass
class Recording:
    """The hands of a run. ``times`` holds every frame's time, hands or not, so a writer knows
    when each track is out of view."""

    mano: ManoModel
    fingertip_ids: tuple[int, ...]
    flat_hand_mean: bool = False
    times: list[float] = field(default_factory=list)
    tracks: list[TrackRecording] = field(default_factory=list)
    _open: dict = field(default_factory=dict)  # track id -> its TrackRecording being added to

    def add(self, time_s: float, hands) -> None:
        """One frame: ``hands`` [(track id, HandPrediction with its translation)] as reported."""
        self.times.append(float(time_s))
        for track_id, hand in hands:
            current = self._open.get(track_id)
            if current is None or current.side != hand.side:
                current = TrackRecording(track_id, hand.side)
                self._open[track_id] = current
                self.tracks.append(current)
            current.frames.append(
                TrackFrame(float(time_s), np.array(hand.pose, np.float64), np.array(hand.shape, np.float64),
                           np.array(hand.translation, np.float64), np.array(hand.joints_camera, np.float64))
            )  # fmt: skip

    def pose_offset(self, side: str) -> np.ndarray:
        """(48,) what a ``side`` hand's pose is relative to (``conventions.pose_offset``)."""
        return pose_offset(self.mano, side, flat_hand_mean=self.flat_hand_mean)

    def pose_hand(self, side: str, pose, shape, translation) -> tuple[np.ndarray, np.ndarray]:
        """(vertices (778, 3), joints (21, 3)) in camera space of one hand: the reference every
        writer's file is checked against."""
        fk = dict(flat_hand_mean=self.flat_hand_mean, fingertip_ids=self.fingertip_ids)
        vertices, joints = posed_hand(self.mano, side, pose, shape, **fk)
        return vertices + translation, joints + translation
