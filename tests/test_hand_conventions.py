"""Convention helpers, each checked through MANO itself."""

from __future__ import annotations

import numpy as np
from mano_files import random_mano_arrays

from handssca.runtime.mano.conventions import (
    dexycb_pose_to_axis_angle,
    mirror_image_points,
    mirror_points,
    mirror_pose,
    opengl_to_opencv_mano,
    opengl_to_opencv_points,
    rest_root_joint,
    rotation_to_axis_angle,
)
from handssca.runtime.mano.files import mano_from_arrays
from handssca.runtime.mano.model import FINGERTIP_IDS, mano_forward, rodrigues

TIPS = FINGERTIP_IDS["smplx"]


def test_axis_angle_round_trip(rng):
    aa = rng.normal(size=(200, 3))
    aa *= (rng.uniform(0, np.pi - 1e-3, 200) / np.linalg.norm(aa, axis=1))[:, None]
    aa[:3] = [[0, 0, 0], [1e-9, 0, 0], [0, np.pi - 1e-7, 0]]
    np.testing.assert_allclose(rodrigues(rotation_to_axis_angle(rodrigues(aa))), rodrigues(aa), atol=1e-6)


def test_ho3d_opengl_to_opencv_moves_the_whole_hand(rng):
    model = mano_from_arrays(random_mano_arrays(rng))
    pose, shape, trans = rng.normal(scale=0.5, size=(4, 48)), rng.normal(size=(4, 10)), rng.normal(size=(4, 3))
    verts_gl, joints_gl = mano_forward(model, pose, shape, trans=trans, flat_hand_mean=True, fingertip_ids=TIPS)
    orient_cv, trans_cv = opengl_to_opencv_mano(pose[:, :3], trans, rest_root_joint(model, shape))
    pose_cv = np.concatenate([orient_cv, pose[:, 3:]], axis=1)
    verts_cv, joints_cv = mano_forward(model, pose_cv, shape, trans=trans_cv, flat_hand_mean=True, fingertip_ids=TIPS)
    np.testing.assert_allclose(verts_cv, opengl_to_opencv_points(verts_gl), atol=1e-7)
    np.testing.assert_allclose(joints_cv, opengl_to_opencv_points(joints_gl), atol=1e-7)


def test_dexycb_pca_pose_equals_its_axis_angle(rng):
    model = mano_from_arrays(random_mano_arrays(rng))
    pose_m = rng.normal(scale=0.5, size=(3, 51))
    shape = rng.normal(size=(3, 10))
    expected, _ = mano_forward(model, pose_m[:, :48], shape, flat_hand_mean=False, fingertip_ids=TIPS, pca=True)
    for flat in (False, True):
        pose, trans = dexycb_pose_to_axis_angle(pose_m, model, flat_hand_mean=flat)
        got, _ = mano_forward(model, pose, shape, flat_hand_mean=flat, fingertip_ids=TIPS)
        np.testing.assert_allclose(got, expected, atol=1e-12)
        np.testing.assert_array_equal(trans, pose_m[:, 48:])


def test_mirroring_a_pose_mirrors_the_mesh(rng):
    right = random_mano_arrays(rng)
    right["posedirs"] = np.zeros_like(right["posedirs"])  # corrective shapes mirror with their own signs
    left = dict(right)
    for key in ("v_template", "shapedirs"):
        left[key] = right[key] * np.array([-1.0, 1.0, 1.0]).reshape((1, 3) + (1,) * (right[key].ndim - 2))
    left["hands_mean"] = mirror_pose(right["hands_mean"])
    r, m = mano_from_arrays(right), mano_from_arrays(left)
    pose, shape = rng.normal(scale=0.5, size=(2, 48)), rng.normal(size=(2, 10))
    v_right, j_right = mano_forward(r, pose, shape, flat_hand_mean=False, fingertip_ids=TIPS)
    v_left, j_left = mano_forward(m, mirror_pose(pose), shape, flat_hand_mean=False, fingertip_ids=TIPS)
    np.testing.assert_allclose(v_left, mirror_points(v_right), atol=1e-7)
    np.testing.assert_allclose(j_left, mirror_points(j_right), atol=1e-7)
    np.testing.assert_allclose(mirror_image_points(mirror_image_points([[3.0, 4.0]], 640), 640), [[3.0, 4.0]])
