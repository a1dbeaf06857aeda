"""The paper's training loss (eq. 4): L2 terms on MANO pose and shape, 2D joints, 3D joints, vertices.

    L = w_theta |theta - theta*|^2 + w_beta |beta - beta*|^2 + w_2d L_2d + w_3d |J - J*|^2 + w_v |V - V*|^2

with the paper's weights 10, 0.1, 1e2, 1e4, 1e4. 3D joints and vertices come from the MANO
layer applied to the predicted pose and shape, root-relative (wrist), in metres. The 2D term
compares, in crop coordinates [0, 1], both the heatmaps' soft-argmax joints and the predicted 3D
joints projected with the weak-perspective camera (HandOccNet's reason for regressing one).
Each term is averaged over the samples that have that annotation.

``rotation="matrix"`` (not the paper's) scores the global rotation in theta by the distance of
rotation matrices instead of axis-angle values: a hand whose palm faces the camera is a half
turn from MANO's frame, where axis-angle jumps between +pi and -pi for nearly equal rotations,
so an L2 on it asks the network for a discontinuous answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from handssca.errors import OptionError

# A hand about 0.2 m across fills about 60% of the crop: the camera's scale starts there.
CAMERA_SCALE_PRIOR = 3.0


@dataclass(frozen=True)
class LossWeights:
    theta: float = 10.0
    beta: float = 0.1
    joints_2d: float = 1e2
    joints_3d: float = 1e4
    vertices: float = 1e4
    rotation: str = "axis_angle"  # how theta's global rotation is compared: axis_angle | matrix

    def __post_init__(self):
        if self.rotation not in ("axis_angle", "matrix"):
            raise OptionError(f"loss.rotation {self.rotation!r}: expected 'axis_angle' or 'matrix'")


def weak_perspective(points: Tensor, camera: Tensor) -> Tensor:
    """Root-relative points (B, K, 3) metres -> crop coordinates (B, K, 2) in [0, 1].

    camera (B, 3): log-scale offset and translation (tx, ty), zero at the crop centre.
    """
    scale = CAMERA_SCALE_PRIOR * torch.exp(camera[:, :1]).unsqueeze(-1)
    return scale * points[..., :2] + 0.5 + camera[:, None, 1:]


def _masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean squared error over the samples where mask == 1 (0 when none has it)."""
    per_sample = ((pred - target) ** 2).flatten(1).mean(dim=1)
    return (per_sample * mask).sum() / mask.sum().clamp(min=1.0)


def _pose_error(pred: Tensor, target: Tensor, rotation: str) -> Tensor:
    """(B, 48) axis-angle poses -> (B, 48) squared errors (global rotation first)."""
    if rotation == "axis_angle":
        return (pred - target) ** 2
    from smplx.lbs import batch_rodrigues

    batch = pred.shape[0]
    matrices = batch_rodrigues(torch.cat([pred[:, :3], target[:, :3]]))
    global_error = ((matrices[:batch] - matrices[batch:]) ** 2).flatten(1).sum(dim=1, keepdim=True)
    # Spread over the three global components so the mean over 48 keeps the paper's scale.
    return torch.cat([global_error.expand(-1, 3) / 3, (pred[:, 3:] - target[:, 3:]) ** 2], dim=1)


def _masked_mean(per_sample: Tensor, mask: Tensor) -> Tensor:
    return (per_sample.flatten(1).mean(dim=1) * mask).sum() / mask.sum().clamp(min=1.0)


def hand_loss(outputs: dict[str, Tensor], mesh: tuple[Tensor, Tensor], batch: dict[str, Tensor], weights: LossWeights):
    """(total, {term: value}) for network ``outputs``, MANO ``mesh`` = (vertices, joints) of the
    predicted pose/shape (root-relative), and a training ``batch`` from HandCrops."""
    vertices, joints = mesh
    has_2d, has_3d = batch["has_2d"].float(), batch["has_3d"].float()
    has_mano, has_vertices = batch["has_mano"].float(), batch["has_vertices"].float()
    projected = weak_perspective(joints, outputs["camera"].float())
    terms = {
        "theta": _masked_mean(_pose_error(outputs["pose"].float(), batch["pose"], weights.rotation), has_mano),
        "beta": _masked_mse(outputs["shape"].float(), batch["shape"], has_mano),
        "joints_2d": _masked_mse(outputs["joints_2d"].float(), batch["joints_2d"], has_2d)
        + _masked_mse(projected, batch["joints_2d"], has_2d),
        "joints_3d": _masked_mse(joints, batch["joints_3d"], has_3d),
        "vertices": _masked_mse(vertices, batch["vertices"], has_vertices),
    }
    total = sum(getattr(weights, name) * value for name, value in terms.items())
    return total, {name: float(value.detach()) for name, value in terms.items()}
