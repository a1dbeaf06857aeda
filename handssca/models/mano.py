"""The MANO layer for training: smplx's MANO with every convention an explicit argument.

The arrays come from ``handssca.runtime.mano.files.load_mano`` (restricted unpickling), never from
smplx's own loader, so the training side and the runtime read the same validated data.

``MANOGraph`` (MANO inside an exported ONNX graph) and the numpy ``handssca.runtime.mano.model.mano_forward``
mirror each other step by step, with the same function names in the same order, modelled on smplx's
``lbs.py``: blend_shapes, vertices2joints, batch_rodrigues, pose_feature (pose blend shapes),
batch_rigid_transform, skinning. Read them side by side; a change to one belongs in both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from handssca.runtime.mano.model import MANO_TO_FREIHAND, NUM_HAND_POSE, ManoModel

# ------------------------------------------------------------------------------------------------
# smplx's lbs.py step by step, as in handssca/runtime/mano/model.py (same names, same order), in ops the
# ONNX exporter traces: the kinematic chain is a Python list, never a tensor. B: batch,
# V: vertices (778), J: joints (16), S: shape coefficients (10), P: pose blend shapes (135).
# Unlike numpy's (V, 3, S), the blend shape directions here are flattened to (S, V * 3), as smplx
# keeps posedirs: one MatMul in the graph.


def blend_shapes(coefficients: Tensor, directions: Tensor) -> Tensor:
    """blend_shapes(betas (B, S), shapedirs (S, V * 3)) -> (B, V, 3) per-vertex offsets.

    The pose blend shapes use it too: (pose_feature (B, P), posedirs (P, V * 3)) -> (B, V, 3).
    """
    return (coefficients @ directions).reshape(coefficients.shape[0], -1, 3)


def vertices2joints(J_regressor: Tensor, vertices: Tensor) -> Tensor:
    """vertices2joints(J_regressor (J, V), vertices (B, V, 3)) -> joints (B, J, 3)."""
    return torch.einsum("jv,bvc->bjc", J_regressor, vertices)


def batch_rodrigues(axis_angle: Tensor) -> Tensor:
    """batch_rodrigues(axis_angle (..., 3)) -> rotation matrices (..., 3, 3), with smplx's 1e-8."""
    angle = torch.linalg.vector_norm(axis_angle + 1e-8, dim=-1, keepdim=True)
    axis = axis_angle / angle
    cos, sin = torch.cos(angle).unsqueeze(-1), torch.sin(angle).unsqueeze(-1)
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + sin * K + (1 - cos) * (K @ K)


def pose_feature(rot_mats: Tensor) -> Tensor:
    """pose_feature(rot_mats (B, J, 3, 3)) -> (B, 9 * (J - 1)): R - I of the non-root joints, flattened."""
    eye = torch.eye(3, dtype=rot_mats.dtype, device=rot_mats.device)
    return (rot_mats[:, 1:] - eye).reshape(rot_mats.shape[0], -1)


def transform_mat(R: Tensor, t: Tensor) -> Tensor:
    """transform_mat(R (..., 3, 3), t (..., 3)) -> (..., 4, 4) rigid transforms [[R, t], [0, 1]]."""
    extra_row = (0, 0, 0, 1)
    return torch.cat([F.pad(R, extra_row), F.pad(t.unsqueeze(-1), extra_row, value=1.0)], dim=-1)


def batch_rigid_transform(rot_mats: Tensor, joints: Tensor, parents: Sequence[int]) -> tuple[Tensor, Tensor]:
    """batch_rigid_transform(rot_mats (B, J, 3, 3), joints (B, J, 3), parents (J,), parents[0] == -1)
    -> posed_joints (B, J, 3), rel_transforms (B, J, 4, 4).

    Chains each joint's local transform (its rotation about its rest position, relative to its
    parent) from the root outwards. rel_transforms act on rest-pose points: x -> R (x - j_rest) + j_posed.
    parents is a Python sequence, so the exporter unrolls the chain at build time.
    """
    parents = [int(p) for p in parents]
    rel_joints = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, parents[1:]]], dim=1)
    local = transform_mat(rot_mats, rel_joints)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for j in range(1, len(parents)):
        chain.append(chain[parents[j]] @ local[:, j])
    transforms = torch.stack(chain, dim=1)  # (B, J, 4, 4), world from joint
    posed_joints = transforms[:, :, :3, 3]
    # Remove the rest-pose joint location, so the transforms act on rest-pose vertices.
    rest = transforms[:, :, :3, :3] @ joints.unsqueeze(-1)  # (B, J, 3, 1)
    rel_transforms = transforms - F.pad(rest, (3, 0, 0, 1))  # only the translation column changes
    return posed_joints, rel_transforms


def skinning(v_posed: Tensor, weights: Tensor, rel_transforms: Tensor) -> Tensor:
    """skinning(v_posed (B, V, 3), weights W (V, J), rel_transforms A (B, J, 4, 4)) -> vertices (B, V, 3).

    Linear blend skinning: each vertex's transform T = W @ A, applied to the homogeneous vertex.
    """
    batch, num_joints = rel_transforms.shape[:2]
    T = (weights @ rel_transforms.reshape(batch, num_joints, 16)).reshape(batch, -1, 4, 4)  # (B, V, 4, 4)
    v_homo = F.pad(v_posed, (0, 1), value=1.0)  # (B, V, 4)
    return (T @ v_homo.unsqueeze(-1))[:, :, :3, 0]


class MANOLayer(nn.Module):
    """pose, shape[, trans] -> vertices (B, 778, 3) and 21 joints in FreiHAND order (B, 21, 3).

    units: "m" (MANO's own, and the data sets') or "mm" (manopth's); trans is in the same units.
    side: "right" or "left" (must match the file). pose_space: "axis_angle" (pose is (B, 48)) or
    "pca" (pose is (B, 3 + num_pca)). flat_hand_mean: whether pose is relative to the flat hand
    (True) or to the file's mean hand (False). fingertip_ids: the five tip vertices (thumb ..
    pinky), e.g. ``FINGERTIP_IDS["smplx"]``.
    """

    def __init__(
        self,
        model: ManoModel,
        *,
        side: str,
        pose_space: str,
        flat_hand_mean: bool,
        fingertip_ids: tuple[int, ...],
        units: str,
        num_pca: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        import smplx
        from smplx.utils import Struct

        if side not in ("right", "left"):
            raise ValueError(f"side must be 'right' or 'left', got {side!r}")
        if pose_space not in ("axis_angle", "pca"):
            raise ValueError(f"pose_space must be 'axis_angle' or 'pca', got {pose_space!r}")
        if pose_space == "pca" and not (num_pca and 1 <= num_pca <= NUM_HAND_POSE):
            raise ValueError(f"pose_space 'pca' needs num_pca in 1..45, got {num_pca}")
        if units not in ("m", "mm"):
            raise ValueError(f"units must be 'm' or 'mm', got {units!r}")
        self.units, self.scale = units, 1.0 if units == "m" else 1000.0
        if len(fingertip_ids) != 5:
            raise ValueError(f"fingertip_ids must name 5 vertices (thumb..pinky), got {fingertip_ids}")
        self.side, self.pose_space, self.flat_hand_mean = side, pose_space, flat_hand_mean
        self.num_pca = num_pca if pose_space == "pca" else None
        # smplx treats num_pca_comps == 45 as axis-angle input; that case is converted here instead.
        smplx_pca = pose_space == "pca" and num_pca < NUM_HAND_POSE
        self.register_buffer(
            "pca_to_axis_angle",
            torch.tensor(model.hands_components[: num_pca or 0], dtype=dtype),
            persistent=False,
        )
        self.mano = smplx.MANO(
            model_path="",
            data_struct=Struct(**model.to_arrays()),
            is_rhand=side == "right",
            use_pca=smplx_pca,
            num_pca_comps=num_pca if smplx_pca else 6,
            flat_hand_mean=flat_hand_mean,
            create_global_orient=False,
            create_hand_pose=False,
            create_betas=False,
            create_transl=False,
            dtype=dtype,
        )
        self.register_buffer("fingertip_ids", torch.tensor(fingertip_ids, dtype=torch.long), persistent=False)
        self.register_buffer("freihand_order", torch.tensor(MANO_TO_FREIHAND, dtype=torch.long), persistent=False)
        self.smplx_pca = smplx_pca
        self.faces = np.asarray(model.faces)

    def forward(self, pose: Tensor, shape: Tensor, trans: Tensor | None = None) -> tuple[Tensor, Tensor]:
        hand = pose[:, 3:]
        if self.pose_space == "pca" and not self.smplx_pca:
            hand = hand @ self.pca_to_axis_angle
        if trans is not None:
            trans = trans / self.scale
        out = self.mano(betas=shape, global_orient=pose[:, :3], hand_pose=hand, transl=trans)
        verts = out.vertices
        joints = torch.cat([out.joints, verts[:, self.fingertip_ids]], dim=1)[:, self.freihand_order]
        return verts * self.scale, joints * self.scale


class MANOGraph(nn.Module):
    """MANO forward kinematics in plain torch ops with the kinematic tree unrolled at build time.

    The same math as ``handssca.runtime.mano.model.mano_forward`` (and smplx), written so torch.export
    and the ONNX exporter can trace it: smplx indexes its chain with a parents tensor, which is
    data-dependent for the exporter. Axis-angle pose (B, 48), shape (B, 10) -> vertices (B, 778, 3)
    and 21 joints in FreiHAND order, metres.
    """

    def __init__(self, model: ManoModel, *, flat_hand_mean: bool, fingertip_ids: tuple[int, ...]):
        super().__init__()
        if len(fingertip_ids) != 5:
            raise ValueError(f"fingertip_ids must name 5 vertices (thumb..pinky), got {fingertip_ids}")
        self.flat_hand_mean = flat_hand_mean
        self.parents = tuple(int(p) for p in model.parents)

        def buffer(name, value):
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=torch.float32), persistent=False)

        buffer("v_template", model.v_template)
        buffer("shapedirs", model.shapedirs.reshape(-1, model.shapedirs.shape[-1]).T)  # (10, V*3)
        buffer("posedirs", model.posedirs.reshape(-1, model.posedirs.shape[-1]).T)  # (135, V*3)
        buffer("J_regressor", model.J_regressor)
        buffer("weights", model.weights)
        buffer("hands_mean", np.zeros(NUM_HAND_POSE) if flat_hand_mean else model.hands_mean)
        self.register_buffer("fingertip_ids", torch.tensor(fingertip_ids, dtype=torch.long), persistent=False)
        self.register_buffer("freihand_order", torch.tensor(MANO_TO_FREIHAND, dtype=torch.long), persistent=False)

    def forward(self, pose: Tensor, shape: Tensor) -> tuple[Tensor, Tensor]:
        batch = pose.shape[0]
        full = torch.cat([pose[:, :3], pose[:, 3:] + self.hands_mean], dim=1).reshape(batch, -1, 3)  # (B, 16, 3)

        # smplx's lbs
        v_shaped = self.v_template + blend_shapes(shape, self.shapedirs)  # (B, 778, 3)
        joints = vertices2joints(self.J_regressor, v_shaped)  # (B, 16, 3)
        rot_mats = batch_rodrigues(full)  # (B, 16, 3, 3)
        v_posed = v_shaped + blend_shapes(pose_feature(rot_mats), self.posedirs)  # (B, 778, 3)
        posed_joints, rel_transforms = batch_rigid_transform(rot_mats, joints, self.parents)
        verts = skinning(v_posed, self.weights, rel_transforms)  # (B, 778, 3)

        # MANO's outputs: fingertips, FreiHAND joint order
        joints21 = torch.cat([posed_joints, verts[:, self.fingertip_ids]], dim=1)[:, self.freihand_order]
        return verts, joints21
