"""Prediction files in the official submission formats, so users can still submit.

FreiHAND (``pred.json``, read by lmb-freiburg/freihand's eval.py): a JSON list
``[xyz_list, verts_list]``, one (21, 3) and one (778, 3) list per evaluation sample in order,
metres, OpenCV camera frame, FreiHAND's joint order.

HO3D (``pred.json`` for the HO3D challenge): the same two lists, with the joints in HO3D's order
(MANO's 16 joints, then the thumb, index, middle, ring and pinky tips) and both joints and
vertices in HO3D's OpenGL camera frame (y and z negated), as HandOccNet and the HO3D tools
write them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from handssca.runtime.files import write_atomically
from handssca.runtime.mano.model import MANO_TO_FREIHAND

OPENGL = np.array([1.0, -1.0, -1.0])


def _check(joints, vertices) -> tuple[np.ndarray, np.ndarray]:
    joints, vertices = np.asarray(joints, dtype=np.float64), np.asarray(vertices, dtype=np.float64)
    if joints.ndim != 3 or joints.shape[1:] != (21, 3):
        raise ValueError(f"joints must be (N, 21, 3), got {joints.shape}")
    if vertices.ndim != 3 or vertices.shape[1:] != (778, 3) or len(vertices) != len(joints):
        raise ValueError(f"vertices must be (N, 778, 3) with N = {len(joints)}, got {vertices.shape}")
    return joints, vertices


def write_freihand_submission(path: str | Path, joints, vertices) -> Path:
    joints, vertices = _check(joints, vertices)
    return write_atomically(Path(path), json.dumps([joints.tolist(), vertices.tolist()]).encode())


def read_freihand_submission(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    xyz, verts = json.loads(Path(path).read_text())
    return np.asarray(xyz, dtype=np.float64), np.asarray(verts, dtype=np.float64)


def freihand_to_ho3d_order(joints: np.ndarray) -> np.ndarray:
    """Joints (..., 21, 3) in FreiHAND's order -> HO3D's (MANO 16 joints, then the 5 tips)."""
    inverse = np.argsort(np.asarray(MANO_TO_FREIHAND))
    return np.asarray(joints)[..., inverse, :]


def write_ho3d_submission(path: str | Path, joints, vertices) -> Path:
    joints, vertices = _check(joints, vertices)
    ho3d = freihand_to_ho3d_order(joints) * OPENGL
    return write_atomically(Path(path), json.dumps([ho3d.tolist(), (vertices * OPENGL).tolist()]).encode())
