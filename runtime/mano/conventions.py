"""Conversions between the hand data sets' conventions, in numpy (MANO pose = 16 x axis-angle).

* HO3D stores MANO parameters and 3D points in an OpenGL camera (y up, z towards the viewer);
  OpenCV's camera has y down and z forward: the two differ by diag(1, -1, -1).
* DexYCB stores the finger pose as 45 PCA coefficients (``pose_m``: 3 global + 45 PCA + 3
  translation) with flat_hand_mean=False.
* A left hand is the mirror image (x -> -x) of a right one; its axis-angle pose mirrors as
  (x, y, z) -> (x, -y, -z) per joint.
"""

from __future__ import annotations

import numpy as np

from handssca.runtime.mano.model import NUM_HAND_POSE, ManoModel, mano_forward, rodrigues

OPENGL_TO_OPENCV = np.diag([1.0, -1.0, -1.0])


def rotation_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) axis-angle with angle in [0, pi].

    Through a unit quaternion (Shepperd's method: built from the largest of w, x, y, z), which
    stays accurate near 0 and pi where the trace formula loses the axis.
    """
    r = np.asarray(rot, dtype=np.float64)
    m = r.reshape(-1, 3, 3)
    t = np.trace(m, axis1=1, axis2=2)
    candidates = np.stack([t, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], axis=1)
    best = np.argmax(candidates, axis=1)
    q = np.empty((len(m), 4))  # w, x, y, z
    for case in range(4):
        sel = best == case
        if not sel.any():
            continue
        a = m[sel]
        if case == 0:
            s4 = 2 * np.sqrt(1 + t[sel])
            q[sel] = np.stack(
                [
                    s4 / 4,
                    (a[:, 2, 1] - a[:, 1, 2]) / s4,
                    (a[:, 0, 2] - a[:, 2, 0]) / s4,
                    (a[:, 1, 0] - a[:, 0, 1]) / s4,
                ],
                axis=1,
            )
        else:
            i, j, k = case - 1, case % 3, (case + 1) % 3
            s4 = 2 * np.sqrt(np.maximum(1 + a[:, i, i] - a[:, j, j] - a[:, k, k], 0))
            qv = np.empty((len(a), 3))
            qv[:, i] = s4 / 4
            qv[:, j] = (a[:, j, i] + a[:, i, j]) / s4
            qv[:, k] = (a[:, k, i] + a[:, i, k]) / s4
            w = (a[:, k, j] - a[:, j, k]) / s4
            q[sel] = np.concatenate([w[:, None], qv], axis=1)
    return quaternion_to_axis_angle(q).reshape(r.shape[:-2] + (3,))


def axis_angle_to_quaternion(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 4) unit quaternions (w, x, y, z), w >= 0 for angles up to pi."""
    v = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(v, axis=-1, keepdims=True)
    # sin(angle / 2) / angle, by its series near 0 where the quotient loses its digits
    scale = np.where(angle > 1e-6, np.sin(angle / 2) / np.maximum(angle, 1e-300), 0.5 - angle**2 / 48)
    return np.concatenate([np.cos(angle / 2), v * scale], axis=-1)


def quaternion_to_axis_angle(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions (w, x, y, z), any length and sign -> (..., 3) axis-angle, angle in [0, pi]."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = q * np.where(q[..., :1] < 0, -1.0, 1.0)  # q and -q are one rotation: w >= 0 gives angle <= pi
    norm_v = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2 * np.arctan2(norm_v, q[..., :1])
    scale = np.where(norm_v > 1e-12, angle / np.maximum(norm_v, 1e-300), 2.0)
    return q[..., 1:] * scale


def opengl_to_opencv_points(points: np.ndarray) -> np.ndarray:
    """3D points (..., 3) from an OpenGL camera to OpenCV (the map is its own inverse)."""
    return np.asarray(points, dtype=np.float64) * np.array([1.0, -1.0, -1.0])


def opengl_to_opencv_mano(global_orient: np.ndarray, trans: np.ndarray, root_joint: np.ndarray):
    """MANO global rotation (B, 3) and translation (B, 3) from an OpenGL camera to OpenCV.

    MANO rotates about its rest-pose root joint (``root_joint`` (B, 3): J_regressor[0] applied to
    the shaped template), so the translation changes too: t' = F (j0 + t) - j0.
    """
    rot = OPENGL_TO_OPENCV @ rodrigues(np.asarray(global_orient, dtype=np.float64))
    root = np.asarray(root_joint, dtype=np.float64)
    new_trans = opengl_to_opencv_points(root + np.asarray(trans, dtype=np.float64)) - root
    return rotation_to_axis_angle(rot), new_trans


def rest_root_joint(model: ManoModel, shape: np.ndarray) -> np.ndarray:
    """The rest-pose root joint (B, 3) for betas (B, 10)."""
    v_shaped = model.v_template + np.einsum("bl,vcl->bvc", np.asarray(shape, dtype=np.float64), model.shapedirs)
    return v_shaped.transpose(0, 2, 1) @ model.J_regressor[0]


def dexycb_pose_to_axis_angle(pose_m: np.ndarray, model: ManoModel, flat_hand_mean: bool = False):
    """DexYCB ``pose_m`` (B, 51) -> axis-angle pose (B, 48) and translation (B, 3).

    The result is relative to the mean hand (flat_hand_mean=False, as DexYCB's) unless
    ``flat_hand_mean`` is True, where the file's hands_mean is folded into the pose.
    """
    pose_m = np.asarray(pose_m, dtype=np.float64).reshape(-1, 51)
    fingers = pose_m[:, 3 : 3 + NUM_HAND_POSE] @ model.hands_components
    if flat_hand_mean:
        fingers = fingers + model.hands_mean
    return np.concatenate([pose_m[:, :3], fingers], axis=1), pose_m[:, 48:51]


def mirror_pose(pose: np.ndarray) -> np.ndarray:
    """Axis-angle pose (B, 3k) of one hand -> the mirrored (other) hand's pose."""
    pose = np.asarray(pose, dtype=np.float64)
    return (pose.reshape(*pose.shape[:-1], -1, 3) * np.array([1.0, -1.0, -1.0])).reshape(pose.shape)


def mirror_points(points: np.ndarray) -> np.ndarray:
    """3D points (..., 3) mirrored across the camera's y-z plane (x -> -x)."""
    return np.asarray(points, dtype=np.float64) * np.array([-1.0, 1.0, 1.0])


def mirror_image_points(points_2d: np.ndarray, width: int) -> np.ndarray:
    """Pixel coordinates (..., 2) in an image flipped left-right of ``width`` pixels."""
    out = np.array(points_2d, dtype=np.float64)
    out[..., 0] = width - out[..., 0]
    return out


def posed_hand(
    model: ManoModel, side: str, pose, shape, *, flat_hand_mean: bool, fingertip_ids
) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (778, 3), joints (21, 3)), root-relative (the wrist at 0), of one ``side`` hand
    with ``pose`` (48,) as reported for that side and ``shape`` (10,). The model is a right hand:
    a left hand is the mirror image of the right hand of its mirrored pose."""
    pose = np.asarray(pose, np.float64)
    right = pose if side == "right" else mirror_pose(pose)
    fk = dict(flat_hand_mean=flat_hand_mean, fingertip_ids=fingertip_ids)
    vertices, joints = mano_forward(model, right[None], np.asarray(shape, np.float64)[None], **fk)
    vertices, joints = vertices[0] - joints[0, :1], joints[0] - joints[0, :1]
    if side == "left":
        vertices, joints = mirror_points(vertices), mirror_points(joints)
    return vertices, joints


def pose_offset(model: ManoModel, side: str, *, flat_hand_mean: bool) -> np.ndarray:
    """(48,) what a ``side`` hand's reported pose is relative to: the rotations MANO applies are
    pose + offset, the model's mean finger pose (mirrored for a left hand), or zeros with
    flat_hand_mean."""
    offset = np.zeros(3 + NUM_HAND_POSE)
    if not flat_hand_mean:
        offset[3:] = np.asarray(model.hands_mean, np.float64).reshape(-1)
    return offset if side == "right" else mirror_pose(offset)
