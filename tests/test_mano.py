"""MANO: safe loading of the official formats, and the numpy runtime against smplx."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from mano_files import random_mano_arrays, write_official_pickle

from handssca.errors import InputError
from handssca.runtime.mano.files import load_mano, mano_from_arrays, save_mano_npz
from handssca.runtime.mano.model import FINGERTIP_IDS, mano_forward


@pytest.fixture
def arrays(rng):
    return random_mano_arrays(rng)


def test_official_pickle_loads_without_chumpy_or_scipy(tmp_path, arrays):
    path = tmp_path / "MANO_RIGHT.pkl"
    write_official_pickle(arrays, path)
    model = load_mano(path)
    np.testing.assert_array_equal(model.v_template, arrays["v_template"])
    np.testing.assert_array_equal(model.J_regressor, arrays["J_regressor"])
    assert model.parents[0] == -1 and list(model.parents[1:4]) == [0, 1, 2]


def test_npz_round_trip_records_the_source_hash(tmp_path, arrays):
    import hashlib

    pkl = tmp_path / "MANO_LEFT.pkl"
    write_official_pickle(arrays, pkl)
    out = save_mano_npz(load_mano(pkl), tmp_path / "mano_left.npz", source_file=pkl)
    with np.load(out) as npz:
        assert str(npz["source_sha256"]) == hashlib.sha256(pkl.read_bytes()).hexdigest()
    again = load_mano(out)
    np.testing.assert_array_equal(again.posedirs, arrays["posedirs"])
    assert not list(tmp_path.glob("*.tmp"))


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": Exploit()}, protocol=2))
    with pytest.raises(InputError, match=r"refusing to load global '(posix|os|nt)\.system'"):
        load_mano(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_and_wrong_files(tmp_path, arrays):
    good = tmp_path / "MANO_RIGHT.pkl"
    write_official_pickle(arrays, good)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(InputError, match="cut.pkl: truncated or corrupt"):
        load_mano(cut)
    with pytest.raises(InputError, match="not found"):
        load_mano(tmp_path / "nope.pkl")
    with pytest.raises(InputError, match=r"'v_template' has shape \(777, 3\)"):
        mano_from_arrays({**arrays, "v_template": arrays["v_template"][:777]}, "x.npz")
    with pytest.raises(InputError, match="missing key 'weights'"):
        mano_from_arrays({k: v for k, v in arrays.items() if k != "weights"}, "x.npz")
    bad_tree = arrays["kintree_table"].copy()
    bad_tree[0, 5] = 9
    with pytest.raises(InputError, match="kintree_table"):
        mano_from_arrays({**arrays, "kintree_table": bad_tree}, "x.npz")
    not_npz = tmp_path / "junk.npz"
    not_npz.write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.npz: truncated or not an .npz archive"):
        load_mano(not_npz)


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("flat_hand_mean", [True, False])
@pytest.mark.parametrize("pose_space, num_pca", [("axis_angle", None), ("pca", 6), ("pca", 45)])
def test_runtime_matches_smplx(rng, arrays, side, flat_hand_mean, pose_space, num_pca):
    pytest.importorskip("smplx")
    from handssca.models.mano import MANOLayer

    if side == "left":  # a left file is the mirror image of a right one
        arrays = {**arrays, "v_template": arrays["v_template"] * [-1, 1, 1]}
    model = mano_from_arrays(arrays)
    fingertip_ids = FINGERTIP_IDS["smplx"]
    layer = MANOLayer(
        model,
        side=side,
        pose_space=pose_space,
        num_pca=num_pca,
        flat_hand_mean=flat_hand_mean,
        fingertip_ids=fingertip_ids,
        units="m",
        dtype=torch.float64,
    )
    batch = 5
    width = 48 if pose_space == "axis_angle" else 3 + num_pca
    pose = rng.normal(scale=0.6, size=(batch, width))
    shape = rng.normal(size=(batch, 10))
    trans = rng.normal(scale=0.1, size=(batch, 3))
    verts, joints = mano_forward(
        model,
        pose,
        shape,
        trans=trans,
        flat_hand_mean=flat_hand_mean,
        fingertip_ids=fingertip_ids,
        pca=pose_space == "pca",
    )
    with torch.no_grad():
        v_ref, j_ref = layer(torch.from_numpy(pose), torch.from_numpy(shape), torch.from_numpy(trans))
    assert verts.shape == (batch, 778, 3) and joints.shape == (batch, 21, 3)
    np.testing.assert_allclose(verts, v_ref.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(joints, j_ref.numpy(), atol=1e-6, rtol=0)


def test_rest_pose_joints_follow_the_regressor(arrays):
    model = mano_from_arrays(arrays)
    verts, joints = mano_forward(
        model, np.zeros((1, 48)), np.zeros((1, 10)), flat_hand_mean=True, fingertip_ids=FINGERTIP_IDS["manopth"]
    )
    np.testing.assert_allclose(verts[0], arrays["v_template"], atol=1e-12)
    np.testing.assert_allclose(joints[0, 0], arrays["J_regressor"][0] @ arrays["v_template"], atol=1e-12)
    np.testing.assert_allclose(joints[0, 4], arrays["v_template"][745], atol=1e-12)  # thumb tip, manopth id


def test_cli_mano_convert(tmp_path, arrays, capsys):
    from handssca.cli import main

    src = tmp_path / "MANO_RIGHT.pkl"
    write_official_pickle(arrays, src)
    out = tmp_path / "out" / "mano_right.npz"
    assert main(["mano", "convert", str(src), "-o", str(out)]) == 0
    assert "778 vertices, 16 joints, 10 shape and 135 pose blend shapes" in capsys.readouterr().out
    np.testing.assert_array_equal(load_mano(out).weights, arrays["weights"])

    bad = tmp_path / "MANO_LEFT.pkl"
    write_official_pickle({**arrays, "posedirs": arrays["posedirs"][:, :, :100]}, bad)
    assert main(["mano", "convert", str(bad), "-o", str(tmp_path / "left.npz")]) == 1
    err = capsys.readouterr().err.strip()
    assert "MANO_LEFT.pkl: 'posedirs' has shape (778, 3, 100)" in err and "\n" not in err
    assert not (tmp_path / "left.npz").exists()


def test_layer_units_and_argument_checks(rng, arrays):
    pytest.importorskip("smplx")
    from handssca.models.mano import MANOLayer

    model = mano_from_arrays(arrays)
    common = dict(side="right", pose_space="axis_angle", flat_hand_mean=True, fingertip_ids=FINGERTIP_IDS["smplx"])
    metres = MANOLayer(model, units="m", dtype=torch.float64, **common)
    millimetres = MANOLayer(model, units="mm", dtype=torch.float64, **common)
    pose, shape = torch.from_numpy(rng.normal(size=(2, 48))), torch.from_numpy(rng.normal(size=(2, 10)))
    torch.testing.assert_close(
        millimetres(pose, shape, 1000 * torch.ones(2, 3, dtype=torch.float64))[0],
        1000 * metres(pose, shape, torch.ones(2, 3, dtype=torch.float64))[0],
    )
    with pytest.raises(ValueError, match="units"):
        MANOLayer(model, units="cm", **common)
    with pytest.raises(ValueError, match="num_pca"):
        MANOLayer(model, units="m", **{**common, "pose_space": "pca"})
    with pytest.raises(ValueError, match="side"):
        MANOLayer(model, units="m", **{**common, "side": "both"})


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("flat_hand_mean", [True, False])
def test_graph_layer_matches_runtime(rng, arrays, flat_hand_mean, side):
    """The export's torch MANO (MANOGraph) and the runtime's numpy MANO, step for step the same."""
    from handssca.models.mano import MANOGraph

    if side == "left":  # a left file is the mirror image of a right one
        arrays = {**arrays, "v_template": arrays["v_template"] * [-1, 1, 1]}
    model = mano_from_arrays(arrays)
    fingertip_ids = FINGERTIP_IDS["manopth"]
    layer = MANOGraph(model, flat_hand_mean=flat_hand_mean, fingertip_ids=fingertip_ids).double()
    pose, shape = rng.normal(scale=0.6, size=(3, 48)), rng.normal(size=(3, 10))
    verts, joints = mano_forward(model, pose, shape, flat_hand_mean=flat_hand_mean, fingertip_ids=fingertip_ids)
    with torch.no_grad():
        v, j = layer(torch.from_numpy(pose), torch.from_numpy(shape))
    # The layer keeps float32 buffers; 1e-6 m is a thousandth of a millimetre.
    np.testing.assert_allclose(v.numpy(), verts, atol=1e-6)
    np.testing.assert_allclose(j.numpy(), joints, atol=1e-6)


def test_a_sparse_matrix_claiming_a_huge_shape_is_refused_before_allocating(tmp_path, arrays):
    """A crafted J_regressor claiming 10^6 x 10^6 (8 TB dense) is a one-line error, not a MemoryError."""
    path = tmp_path / "MANO_RIGHT.pkl"
    write_official_pickle(arrays, path, sparse_shape=(1_000_000, 1_000_000))
    with pytest.raises(InputError, match="claims 1000000 x 1000000"):
        load_mano(path)
