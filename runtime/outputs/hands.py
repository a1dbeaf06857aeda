"""One way out for a hand: its mesh and its record, the same for every writer (``infer``, the
webcam's outputs, the demo, the serving client, the overlay).

The convention of every output (docs/outputs.md):
- camera space, metres, OpenCV's axes: x right, y down, z forward, the camera at the origin;
- a record's ``joints_camera`` (21, 3) and ``translation`` (the wrist, 3) are in camera space,
  ``joints_3d`` are the same joints root-relative (the wrist at 0), kept beside them;
- every mesh is right side out: the hand model is a right hand, and a left hand is its mirror
  image, whose triangles wind the other way, so a left hand's faces are flipped (``hand_faces``)
  and its normals point outwards as a right hand's do;
- a mesh is in camera space where the hand has a translation (``predict`` was given intrinsics),
  else root-relative.
"""

from __future__ import annotations

import numpy as np

from handssca.runtime.mesh_render import mesh_to_obj


def hand_faces(faces: np.ndarray, side: str) -> np.ndarray:
    """(F, 3) triangles of a ``side`` hand, wound so that its normals point outwards: the model's
    own for a right hand, flipped for a left one (a mirror image turns every triangle over)."""
    faces = np.asarray(faces)
    return faces if side == "right" else np.ascontiguousarray(faces[:, ::-1])


def hand_mesh(hand, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (778, 3), faces (F, 3)) of a HandPrediction, right side out: camera space when
    it has a translation, else root-relative."""
    vertices = hand.vertices_camera if hand.translation is not None else hand.vertices
    return vertices, hand_faces(faces, hand.side)


def hand_obj(hand, faces: np.ndarray) -> bytes:
    """A HandPrediction's mesh as Wavefront OBJ (``hand_mesh``)."""
    return mesh_to_obj(*hand_mesh(hand, faces)).encode()


def hand_record(prediction, **extra) -> dict:
    """A HandPrediction as JSON, with ``extra`` fields first (image, hand, track, mesh file, ...)."""
    return {**extra, **prediction.to_json()}
