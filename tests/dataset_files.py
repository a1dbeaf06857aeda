"""Tiny data sets in the official raw layouts (HO3D, DexYCB), annotated with the built-in hand.

Annotations are made the way each data set stores them (HO3D: OpenGL camera, flat-hand-mean
pose, HO3D joint order, pickled meta; DexYCB: 45 PCA coefficients + translation in labels npz,
betas and intrinsics in YAML), from a known pose in the project's convention, so a loader is
right only if it undoes every one of those conventions.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import yaml

from handssca.runtime.mano.conventions import opengl_to_opencv_mano, rest_root_joint
from handssca.runtime.mano.model import mano_forward
from handssca.training.datasets import DEXYCB_SERIALS, DEXYCB_SUBJECTS
from handssca.training.submission import freihand_to_ho3d_order


def random_hand(rng, mano, fingertip_ids):
    """A mean-hand-relative pose in the OpenCV camera, shape, translation; joints and vertices."""
    pose = np.concatenate([rng.normal(0, 0.5, 3), rng.normal(0, 0.3, 45)])
    shape = rng.normal(0, 1, 10)
    trans = np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), rng.uniform(0.4, 0.6)])
    verts, joints = mano_forward(
        mano, pose[None], shape[None], flat_hand_mean=False, fingertip_ids=fingertip_ids, trans=trans[None]
    )
    return pose, shape, trans, joints[0], verts[0]


def _image(path: Path, rng, size=(96, 128)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def write_ho3d(root: Path, mano, fingertip_ids, rng, frames=3, version="v3") -> list[dict]:
    """train/<SEQ>/{rgb,meta} + train.txt (one unannotated frame last) and an evaluation split."""
    truth, names = [], []
    K = np.array([[300.0, 0, 64], [0, 300, 48], [0, 0, 1]])
    ext = ".jpg" if version == "v3" else ".png"
    for i in range(frames):
        pose, shape, trans, joints, verts = random_hand(rng, mano, fingertip_ids)
        root_joint = rest_root_joint(mano, shape[None])
        global_gl, trans_gl = opengl_to_opencv_mano(pose[None, :3], trans[None], root_joint)  # its own inverse
        meta = {
            "camMat": K,
            "handPose": np.concatenate([global_gl[0], pose[3:] + mano.hands_mean]),  # flat-hand relative
            "handBeta": shape,
            "handTrans": trans_gl[0],
            "handJoints3D": freihand_to_ho3d_order(joints) * np.array([1.0, -1.0, -1.0]),
            "objName": "003_cracker_box",
        }
        name = f"ABF1{i % 2}/{i:04d}"
        _image(root / "train" / name.split("/")[0] / "rgb" / f"{i:04d}{ext}", rng)
        meta_path = root / "train" / name.split("/")[0] / "meta" / f"{i:04d}.pkl"
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        meta_path.write_bytes(pickle.dumps(meta, protocol=2))
        names.append(name)
        truth.append({"pose": pose, "shape": shape, "joints": joints, "vertices": verts, "K": K})
    unannotated = f"ABF10/{frames:04d}"
    _image(root / "train" / "ABF10" / "rgb" / f"{frames:04d}{ext}", rng)
    (root / "train" / "ABF10" / "meta" / f"{frames:04d}.pkl").write_bytes(
        pickle.dumps({"camMat": K, "handPose": None, "handJoints3D": None}, protocol=2)
    )
    (root / "train.txt").write_text("\n".join([*names, unannotated]) + "\n")
    _image(root / "evaluation" / "MPM10" / "rgb" / f"0000{ext}", rng)
    (root / "evaluation" / "MPM10" / "meta").mkdir(parents=True, exist_ok=True)
    (root / "evaluation" / "MPM10" / "meta" / "0000.pkl").write_bytes(
        pickle.dumps({"camMat": K, "handBoundingBox": np.array([10.0, 12, 60, 70]), "handJoints3D": np.zeros(3)})
    )
    (root / "evaluation.txt").write_text("MPM10/0000\n")
    return truth


def write_dexycb(root: Path, mano, fingertip_ids, rng, frames=2) -> list[dict]:
    """Subject 1, sequence 0 (right hand, in s0 train) and sequence 1 (left hand); one frame
    without a hand annotation; calibration files."""
    for subject in DEXYCB_SUBJECTS:
        (root / subject).mkdir(parents=True, exist_ok=True)
    serial = DEXYCB_SERIALS[0]
    intrinsics = root / "calibration" / "intrinsics" / f"{serial}_640x480.yml"
    intrinsics.parent.mkdir(parents=True, exist_ok=True)
    intrinsics.write_text(yaml.safe_dump({"color": {"fx": 610.0, "fy": 612.0, "ppx": 320.0, "ppy": 240.0}}))
    betas = rng.normal(0, 1, 10)
    calib = root / "calibration" / "mano_20200709-subject-01_right" / "mano.yml"
    calib.parent.mkdir(parents=True, exist_ok=True)
    calib.write_text(yaml.safe_dump({"betas": betas.tolist()}))
    K = np.array([[610.0, 0, 320], [0, 612, 240], [0, 0, 1]])
    truth = []
    for seq, side in (("20200709_141754", "right"), ("20200709_141841", "left")):
        folder = root / DEXYCB_SUBJECTS[0] / seq
        (folder / serial).mkdir(parents=True, exist_ok=True)
        meta = {
            "serials": [serial],
            "num_frames": frames,
            "mano_sides": [side],
            "mano_calib": [f"20200709-subject-01_{side}"],
        }
        (folder / "meta.yml").write_text(yaml.safe_dump(meta))
        for f in range(frames):
            _image(folder / serial / f"color_{f:06d}.jpg", rng, (120, 160))
            coeffs = rng.normal(0, 0.5, 45)
            global_orient = rng.normal(0, 0.5, 3)
            trans = np.array([0.0, 0.0, 0.5]) + rng.normal(0, 0.02, 3)
            pose = np.concatenate([global_orient, coeffs @ mano.hands_components])
            verts, joints = mano_forward(
                mano, pose[None], betas[None], flat_hand_mean=False, fingertip_ids=fingertip_ids, trans=trans[None]
            )
            joint_3d = joints[0] if f < frames - 1 else np.full((21, 3), -1.0)  # the last frame: no hand
            np.savez(
                folder / serial / f"labels_{f:06d}.npz",
                seg=np.zeros((4, 4), np.uint8),
                pose_y=np.zeros((1, 3, 4)),
                pose_m=np.concatenate([global_orient, coeffs, trans])[None],
                joint_3d=joint_3d[None],
                joint_2d=np.zeros((1, 21, 2)),
            )
            if side == "right":
                truth.append({"pose": pose, "joints": joint_3d, "vertices": verts[0], "K": K, "betas": betas})
    return truth
