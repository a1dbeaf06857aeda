"""MANO hand model without torch: the model's arrays and its forward kinematics (files.py reads
and writes MANO files safely).

Arrays (the official key names; shapes for MANO itself):
    v_template (778, 3)        shapedirs (778, 3, 10)     posedirs (778, 3, 135)
    J_regressor (16, 778)      weights (778, 16)          kintree_table (2, 16)
    f (1538, 3)                hands_components (45, 45)  hands_mean (45,)

``mano_forward`` is MANO's linear blend skinning in numpy, batched, with smplx's conventions:
pose = 3 global + 45 finger axis-angle values added to the hand mean (unless flat_hand_mean).
It and the torch ``MANOGraph`` in ``handssca/models/mano.py`` (MANO inside exported ONNX graphs)
mirror each other step by step, with the same function names in the same order, modelled on smplx's
``lbs.py``: blend_shapes, vertices2joints, batch_rodrigues, pose_feature (pose blend shapes),
batch_rigid_transform, skinning. Read them side by side; a change to one belongs in both.
``meshes_from_outputs`` turns a network's outputs into meshes with it. This module never imports
torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handssca.errors import InputError

NUM_VERTICES = 778
NUM_JOINTS = 16
NUM_BETAS = 10
NUM_POSE_BLEND = 9 * (NUM_JOINTS - 1)  # 135
NUM_HAND_POSE = 3 * (NUM_JOINTS - 1)  # 45

# Fingertip vertices (thumb, index, middle, ring, pinky); they differ by source.
FINGERTIP_IDS = {
    "smplx": (744, 320, 443, 554, 671),
    "manopth": (745, 317, 444, 556, 673),
}
# MANO's 16 joints + 5 tips (thumb, index, middle, ring, pinky) -> FreiHAND's 21-joint order:
# wrist, thumb 1-4, index 1-4, middle 1-4, ring 1-4, pinky 1-4 (each base to tip).
MANO_TO_FREIHAND = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)
# The 21 joints' names in that order (the exported files' metadata "joint_order").
JOINT_ORDER = ["wrist"] + [
    f"{finger}_{i}" for finger in ("thumb", "index", "middle", "ring", "pinky") for i in range(1, 5)
]

REQUIRED_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")


@dataclass(frozen=True)
class ManoModel:
    v_template: np.ndarray
    shapedirs: np.ndarray
    posedirs: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    parents: np.ndarray  # (16,), parents[0] == -1
    faces: np.ndarray
    hands_components: np.ndarray
    hands_mean: np.ndarray
    source: str = ""
    # Set for models that define their own tips (the built-in hand); MANO files do not.
    fingertip_ids: tuple[int, ...] | None = None
    note: str = ""

    @property
    def kintree_table(self) -> np.ndarray:
        return np.stack([self.parents, np.arange(len(self.parents))]).astype(np.int64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The official key names, as ``save_mano_npz`` writes and smplx reads."""
        return {
            "v_template": self.v_template,
            "shapedirs": self.shapedirs,
            "posedirs": self.posedirs,
            "J_regressor": self.J_regressor,
            "weights": self.weights,
            "kintree_table": self.kintree_table,
            "f": self.faces,
            "hands_components": self.hands_components,
            "hands_mean": self.hands_mean,
        }


# ------------------------------------------------------------------------------------------------
# Forward kinematics and skinning: smplx's lbs.py step by step (handssca/models/mano.py has the same
# steps in torch, with the same names). B: batch, V: vertices (778), J: joints (16), S: shape
# coefficients (10), P: pose blend shapes (9 * (J - 1) = 135).


def blend_shapes(coefficients: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """blend_shapes(betas (B, S), shapedirs (V, 3, S)) -> (B, V, 3) per-vertex offsets.

    The pose blend shapes use it too: (pose_feature (B, P), posedirs (V, 3, P)) -> (B, V, 3).
    """
    return np.einsum("bl,vcl->bvc", coefficients, directions)


def vertices2joints(J_regressor: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """vertices2joints(J_regressor (J, V), vertices (B, V, 3)) -> joints (B, J, 3)."""
    return np.einsum("jv,bvc->bjc", J_regressor, vertices)


def batch_rodrigues(axis_angle: np.ndarray) -> np.ndarray:
    """batch_rodrigues(axis_angle (..., 3)) -> rotation matrices (..., 3, 3).

    Adds smplx's 1e-8 to every component before taking the angle (so a zero rotation is finite
    and both implementations agree to rounding); results are accurate to about 1e-8 rad.
    """
    angle = np.linalg.norm(axis_angle + 1e-8, axis=-1, keepdims=True)
    axis = axis_angle / angle
    cos, sin = np.cos(angle)[..., None], np.sin(angle)[..., None]
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    K = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(*axis.shape[:-1], 3, 3)
    eye = np.eye(3, dtype=axis_angle.dtype)
    return eye + sin * K + (1 - cos) * (K @ K)


# The name the rest of the code base imports.
rodrigues = batch_rodrigues


def pose_feature(rot_mats: np.ndarray) -> np.ndarray:
    """pose_feature(rot_mats (B, J, 3, 3)) -> (B, 9 * (J - 1)): R - I of the non-root joints, flattened."""
    return (rot_mats[:, 1:] - np.eye(3)).reshape(len(rot_mats), -1)


def transform_mat(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """transform_mat(R (..., 3, 3), t (..., 3)) -> (..., 4, 4) rigid transforms [[R, t], [0, 1]]."""
    extra_row = [(0, 0)] * (R.ndim - 2) + [(0, 1), (0, 0)]
    return np.concatenate([np.pad(R, extra_row), np.pad(t[..., None], extra_row, constant_values=1.0)], axis=-1)


def batch_rigid_transform(
    rot_mats: np.ndarray, joints: np.ndarray, parents: np.ndarray | list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """batch_rigid_transform(rot_mats (B, J, 3, 3), joints (B, J, 3), parents (J,), parents[0] == -1)
    -> posed_joints (B, J, 3), rel_transforms (B, J, 4, 4).

    Chains each joint's local transform (its rotation about its rest position, relative to its
    parent) from the root outwards. rel_transforms act on rest-pose points: x -> R (x - j_rest) + j_posed.
    """
    parents = [int(p) for p in parents]
    rel_joints = np.concatenate([joints[:, :1], joints[:, 1:] - joints[:, parents[1:]]], axis=1)
    local = transform_mat(rot_mats, rel_joints)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for j in range(1, len(parents)):
        chain.append(chain[parents[j]] @ local[:, j])
    transforms = np.stack(chain, axis=1)  # (B, J, 4, 4), world from joint
    posed_joints = transforms[:, :, :3, 3].copy()
    # Remove the rest-pose joint location, so the transforms act on rest-pose vertices.
    rest = (transforms[:, :, :3, :3] @ joints[..., None])[..., 0]  # (B, J, 3)
    rel_transforms = transforms.copy()
    rel_transforms[:, :, :3, 3] -= rest
    return posed_joints, rel_transforms


def skinning(v_posed: np.ndarray, weights: np.ndarray, rel_transforms: np.ndarray) -> np.ndarray:
    """skinning(v_posed (B, V, 3), weights W (V, J), rel_transforms A (B, J, 4, 4)) -> vertices (B, V, 3).

    Linear blend skinning: each vertex's transform T = W @ A, applied to the homogeneous vertex.
    """
    batch, num_joints = rel_transforms.shape[:2]
    T = (weights @ rel_transforms.reshape(batch, num_joints, 16)).reshape(batch, -1, 4, 4)  # (B, V, 4, 4)
    v_homo = np.concatenate([v_posed, np.ones_like(v_posed[..., :1])], axis=-1)  # (B, V, 4)
    return (T @ v_homo[..., None])[:, :, :3, 0]


def full_pose(model: ManoModel, pose: np.ndarray, *, flat_hand_mean: bool, pca: bool) -> np.ndarray:
    """full_pose(pose (B, 48) or with ``pca`` (B, 3 + k)) -> axis-angle of all joints (B, J, 3).

    MANO-specific, before lbs: PCA coefficients become axis-angle, and the file's mean hand is
    added to the fingers unless flat_hand_mean.
    """
    batch = pose.shape[0]
    if pca:
        k = pose.shape[1] - 3
        if not 1 <= k <= NUM_HAND_POSE:
            raise ValueError(f"mano_forward: PCA pose needs 3 + 1..45 values, got {pose.shape[1]}")
        fingers = pose[:, 3:] @ model.hands_components[:k]
    else:
        if pose.shape[1] != 3 + NUM_HAND_POSE:
            raise ValueError(f"mano_forward: axis-angle pose must have 48 values, got {pose.shape[1]}")
        fingers = pose[:, 3:]
    if not flat_hand_mean:
        fingers = fingers + model.hands_mean
    return np.concatenate([pose[:, :3], fingers], axis=1).reshape(batch, NUM_JOINTS, 3)


def mano_forward(
    model: ManoModel,
    pose: np.ndarray,
    shape: np.ndarray,
    *,
    flat_hand_mean: bool,
    fingertip_ids: tuple[int, ...],
    trans: np.ndarray | None = None,
    pca: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (B, 778, 3) and 21 joints in FreiHAND order (B, 21, 3), in the model's units (metres).

    pose: (B, 48) axis-angle (3 global + 45 fingers), or with ``pca`` (B, 3 + k) with k PCA
    coefficients of the finger pose. shape: (B, 10). trans: optional (B, 3).
    """
    pose = np.asarray(pose, dtype=np.float64)
    shape = np.asarray(shape, dtype=np.float64)
    if pose.ndim != 2 or shape.ndim != 2 or shape.shape != (pose.shape[0], NUM_BETAS):
        raise ValueError(f"mano_forward: pose (B, 48) and shape (B, 10) expected, got {pose.shape} and {shape.shape}")
    full = full_pose(model, pose, flat_hand_mean=flat_hand_mean, pca=pca)  # (B, 16, 3)

    # smplx's lbs
    v_shaped = model.v_template + blend_shapes(shape, model.shapedirs)  # (B, 778, 3)
    joints = vertices2joints(model.J_regressor, v_shaped)  # (B, 16, 3)
    rot_mats = batch_rodrigues(full)  # (B, 16, 3, 3)
    v_posed = v_shaped + blend_shapes(pose_feature(rot_mats), model.posedirs)  # (B, 778, 3)
    posed_joints, rel_transforms = batch_rigid_transform(rot_mats, joints, model.parents)
    verts = skinning(v_posed, model.weights, rel_transforms)  # (B, 778, 3)

    # MANO's outputs: fingertips, FreiHAND joint order, translation
    joints21 = np.concatenate([posed_joints, verts[:, list(fingertip_ids)]], axis=1)[:, list(MANO_TO_FREIHAND)]
    if trans is not None:
        trans = np.asarray(trans, dtype=np.float64).reshape(len(pose), 1, 3)
        verts = verts + trans
        joints21 = joints21 + trans
    return verts, joints21


def meshes_from_outputs(outputs: dict[str, np.ndarray], mano: ManoModel | None, fingertip_ids) -> tuple:
    """(vertices (B, 778, 3), joints (B, 21, 3)) in metres, float64, as MANO gives them (not root
    relative): from the graph when the export put MANO in it, else the runtime's numpy MANO on the
    predicted pose (relative to the mean hand) and shape."""
    if "vertices" in outputs and "joints_3d" in outputs:
        return outputs["vertices"].astype(np.float64), outputs["joints_3d"].astype(np.float64)
    if mano is None:
        raise InputError("the model's outputs have no MANO in the graph: give a MANO model (--mano)")
    fingertip_ids = None if fingertip_ids is None else tuple(fingertip_ids)
    return mano_forward(mano, outputs["pose"], outputs["shape"], flat_hand_mean=False, fingertip_ids=fingertip_ids)
