"""The MANO layer for training: smplx's MANO with every convention an explicit argument.

The arrays come from ``handssca.runtime.mano.load_mano`` (restricted unpickling), never from
smplx's own loader, so the training side and the runtime read the same validated data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from handssca.runtime.mano import MANO_TO_FREIHAND, NUM_HAND_POSE, ManoModel


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

    The same math as ``handssca.runtime.mano.mano_forward`` (and smplx), written so torch.export
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

    @staticmethod
    def _rodrigues(aa: Tensor) -> Tensor:
        angle = torch.linalg.vector_norm(aa + 1e-8, dim=-1, keepdim=True)
        axis = aa / angle
        cos, sin = torch.cos(angle).unsqueeze(-1), torch.sin(angle).unsqueeze(-1)
        x, y, z = axis.unbind(-1)
        zero = torch.zeros_like(x)
        K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*aa.shape[:-1], 3, 3)
        eye = torch.eye(3, dtype=aa.dtype, device=aa.device)
        return eye + sin * K + (1 - cos) * (K @ K)

    def forward(self, pose: Tensor, shape: Tensor) -> tuple[Tensor, Tensor]:
        batch = pose.shape[0]
        vertices = self.v_template.shape[0]
        full = torch.cat([pose[:, :3], pose[:, 3:] + self.hands_mean], dim=1).reshape(batch, -1, 3)
        v_shaped = self.v_template + (shape @ self.shapedirs).reshape(batch, vertices, 3)
        joints = torch.einsum("jv,bvc->bjc", self.J_regressor, v_shaped)
        rot = self._rodrigues(full)  # (B, 16, 3, 3)
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        pose_feature = (rot[:, 1:] - eye).reshape(batch, -1)
        v_posed = v_shaped + (pose_feature @ self.posedirs).reshape(batch, vertices, 3)
        rotations, translations = [rot[:, 0]], [joints[:, 0]]
        for j in range(1, len(self.parents)):
            p = self.parents[j]
            rotations.append(rotations[p] @ rot[:, j])
            translations.append(
                translations[p] + (rotations[p] @ (joints[:, j] - joints[:, p]).unsqueeze(-1)).squeeze(-1)
            )
        world_rot = torch.stack(rotations, dim=1)  # (B, 16, 3, 3)
        posed_joints = torch.stack(translations, dim=1)  # (B, 16, 3)
        # Transforms that act on rest-pose points: x -> R (x - j_rest) + j_posed.
        offset = posed_joints - (world_rot @ joints.unsqueeze(-1)).squeeze(-1)
        blend_rot = torch.einsum("vj,bjik->bvik", self.weights, world_rot)
        blend_off = torch.einsum("vj,bji->bvi", self.weights, offset)
        verts = (blend_rot @ v_posed.unsqueeze(-1)).squeeze(-1) + blend_off
        joints21 = torch.cat([posed_joints, verts[:, self.fingertip_ids]], dim=1)[:, self.freihand_order]
        return verts, joints21
