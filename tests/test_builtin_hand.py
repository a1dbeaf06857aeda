"""The built-in stand-in hand: MANO's structure, a sound surface, plausible posing."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from handssca.cli import main
from handssca.runtime.mano.builtin import STAND_IN_NOTE, build_builtin_hand, save_builtin_hand
from handssca.runtime.mano.files import load_mano
from handssca.runtime.mano.model import mano_forward


@pytest.fixture(scope="module")
def hand():
    return build_builtin_hand()


def components(faces):
    """Connected components of the surface (as vertex-index sets)."""
    parent = list(range(faces.max() + 1))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b, c in faces:
        for x, y in ((a, b), (b, c)):
            parent[find(x)] = find(y)
    groups = {}
    for f in faces:
        groups.setdefault(find(f[0]), []).append(f)
    return [np.array(g) for g in groups.values()]


def signed_volume(verts, faces):
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6


def test_structure_matches_mano(hand):
    model, fingertip_ids = hand
    assert model.v_template.shape == (778, 3) and model.shapedirs.shape == (778, 3, 10)
    assert model.posedirs.shape == (778, 3, 135) and model.J_regressor.shape == (16, 778)
    assert list(model.parents) == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
    np.testing.assert_allclose(model.weights.sum(axis=1), 1.0)
    assert (model.weights >= 0).all() and (model.J_regressor >= 0).all()
    assert len(set(fingertip_ids)) == 5 and model.note == STAND_IN_NOTE
    assert np.abs(model.posedirs).max() > 0 and np.abs(model.shapedirs).max() > 0


def test_deterministic(hand):
    again, _ = build_builtin_hand()
    for key, value in hand[0].to_arrays().items():
        np.testing.assert_array_equal(value, again.to_arrays()[key], err_msg=key)


def test_surface_is_closed_and_outward(hand):
    model, _ = hand
    directed = Counter()
    for a, b, c in model.faces:
        directed.update([(a, b), (b, c), (c, a)])
    assert max(directed.values()) == 1  # consistent orientation: no edge used twice the same way
    assert all((b, a) in directed for a, b in directed)  # closed: every edge has its twin
    parts = components(model.faces)
    assert len(parts) == 6  # palm + five fingers
    assert all(signed_volume(model.v_template, p) > 0 for p in parts)  # normals point outwards


def test_fingertips_are_the_extremes_of_their_fingers(hand):
    model, fingertip_ids = hand
    rest, joints = mano_forward(
        model, np.zeros((1, 48)), np.zeros((1, 10)), flat_hand_mean=True, fingertip_ids=fingertip_ids
    )
    wrist = joints[0, 0]
    reach = np.linalg.norm(rest[0] - wrist, axis=1)
    assert reach[fingertip_ids[2]] == pytest.approx(reach.max(), rel=0.02)  # the middle finger reaches farthest
    assert 0.15 < reach.max() < 0.22  # an adult hand's length, in metres


def test_random_poses_stay_bounded(hand, rng):
    model, fingertip_ids = hand
    pose = rng.normal(scale=0.6, size=(64, 48))
    pose[:, :3] = 0
    shape = rng.normal(size=(64, 10))
    verts, joints = mano_forward(model, pose, shape, flat_hand_mean=False, fingertip_ids=fingertip_ids)
    assert np.isfinite(verts).all()
    assert np.linalg.norm(verts - joints[:, :1], axis=2).max() < 0.3
    # Bones keep their length: posing is rigid along the kinematic chain.
    rest_v, rest_j = mano_forward(model, np.zeros((64, 48)), shape, flat_hand_mean=True, fingertip_ids=fingertip_ids)
    np.testing.assert_allclose(
        np.linalg.norm(joints[:, 2] - joints[:, 1], axis=1),
        np.linalg.norm(rest_j[:, 2] - rest_j[:, 1], axis=1),
        rtol=1e-6,  # rodrigues carries smplx's 1e-8 epsilon
    )


def test_npz_loads_in_runtime_and_smplx_alike(tmp_path, rng):
    pytest.importorskip("smplx")
    from handssca.models.mano import MANOLayer

    path = save_builtin_hand(tmp_path / "builtin_hand.npz")
    model = load_mano(path)
    assert model.fingertip_ids is not None and model.note == STAND_IN_NOTE
    layer = MANOLayer(
        model,
        side="right",
        pose_space="axis_angle",
        flat_hand_mean=False,
        fingertip_ids=model.fingertip_ids,
        units="m",
        dtype=torch.float64,
    )
    pose, shape = rng.normal(scale=0.5, size=(4, 48)), rng.normal(size=(4, 10))
    verts, joints = mano_forward(model, pose, shape, flat_hand_mean=False, fingertip_ids=model.fingertip_ids)
    with torch.no_grad():
        v_ref, j_ref = layer(torch.from_numpy(pose), torch.from_numpy(shape))
    np.testing.assert_allclose(verts, v_ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(joints, j_ref.numpy(), atol=1e-6)


def test_cli_writes_the_model_and_a_picture(tmp_path, capsys):
    npz = tmp_path / "hand.npz"
    assert main(["mano", "builtin", "-o", str(npz)]) == 0
    assert "NOT the MANO model" in capsys.readouterr().out
    png = tmp_path / "poses.png"
    assert main(["mano", "render", "--mano", str(npz), "-o", str(png), "--size", "160"]) == 0
    import cv2

    image = cv2.imread(str(png))
    assert image.shape == (160 + 28, 4 * 160, 3)
    assert (image < 250).any(axis=2).mean() > 0.05  # something was drawn
