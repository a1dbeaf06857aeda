"""Loaders of the official layouts and the crop pipeline, on tiny generated data sets."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from dataset_files import write_dexycb, write_ho3d

from handssca.errors import InputError
from handssca.runtime.camera import project
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.mano.model import mano_forward
from handssca.training.datasets import HO3D, DexYCB, FreiHAND, dexycb_s0_split
from handssca.training.samples import Augmentation, HandCrops
from handssca.training.submission import (
    freihand_to_ho3d_order,
    read_freihand_submission,
    write_freihand_submission,
    write_ho3d_submission,
)
from handssca.training.synthetic import SynthOptions, make_synthetic_dataset


@pytest.fixture(scope="module")
def hand():
    return build_builtin_hand()


@pytest.fixture(scope="module")
def freihand(tmp_path_factory, hand):
    root = tmp_path_factory.mktemp("freihand")
    make_synthetic_dataset(root, *hand, SynthOptions(train=3, evaluation=2, seed=2), show_progress=False)
    return root


def test_freihand_versions_and_splits(freihand):
    train = FreiHAND(freihand, "training")
    assert len(train) == 12
    first, last_version = train[1], train[1 + 3 * 3]
    assert first.image_path.name == "00000001.jpg" and last_version.image_path.name == "00000010.jpg"
    np.testing.assert_array_equal(first.joints_3d, last_version.joints_3d)  # the same hand, another background
    assert first.pose.shape == (48,) and first.shape.shape == (10,) and first.vertices.shape == (778, 3)
    assert len(FreiHAND(freihand, "training", versions=(0, 2))) == 6
    evaluation = FreiHAND(freihand, "evaluation")
    assert len(evaluation) == 2 and evaluation[0].joints_3d is not None


def test_freihand_errors_name_the_file(freihand, tmp_path):
    import shutil

    broken = tmp_path / "fh"
    shutil.copytree(freihand, broken)
    (broken / "training_xyz.json").write_text(json.dumps(json.loads((broken / "training_xyz.json").read_text())[:2]))
    with pytest.raises(InputError, match=r"training_xyz.json: 2 entries, but training_K.json has 3"):
        FreiHAND(broken, "training")
    (broken / "training_K.json").unlink()
    with pytest.raises(InputError, match="training_K.json: missing"):
        FreiHAND(broken, "training")
    shutil.rmtree(broken)
    shutil.copytree(freihand, broken)
    (broken / "training" / "rgb" / "00000011.jpg").unlink()
    with pytest.raises(InputError, match="images for 3 annotations x 4 versions"):
        FreiHAND(broken, "training")
    with pytest.raises(InputError, match="folder not found"):
        FreiHAND(tmp_path / "nothing", "training")


def test_ho3d_conventions_are_undone(tmp_path, hand, rng):
    mano, fingertip_ids = hand
    truth = write_ho3d(tmp_path, mano, fingertip_ids, rng)
    data = HO3D(tmp_path, "train", mano=mano, version="v3")
    assert len(data) == 3 and data.skipped == 1
    for record, gt in zip(data, truth, strict=False):
        np.testing.assert_allclose(record.joints_3d, gt["joints"], atol=1e-9)
        # The OpenGL round trip goes through rotation matrices: rodrigues' 1e-8 epsilon (smplx's) shows.
        np.testing.assert_allclose(record.pose, gt["pose"], atol=1e-7)
        np.testing.assert_allclose(record.vertices, gt["vertices"], atol=1e-7)
        verts, joints = mano_forward(
            mano, record.pose[None], record.shape[None], flat_hand_mean=False, fingertip_ids=fingertip_ids
        )
        np.testing.assert_allclose(joints[0] - joints[0, :1], gt["joints"] - gt["joints"][:1], atol=1e-7)
    evaluation = HO3D(tmp_path, "evaluation", mano=mano, version="v3")
    assert len(evaluation) == 1 and evaluation[0].joints_3d is None
    np.testing.assert_array_equal(evaluation[0].box, [10, 12, 60, 70])


class Boom:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_ho3d_refuses_an_unsafe_meta_file(tmp_path, hand, rng, capfd):
    mano, fingertip_ids = hand
    write_ho3d(tmp_path, mano, fingertip_ids, rng, frames=1)
    (tmp_path / "train" / "ABF10" / "meta" / "0000.pkl").write_bytes(pickle.dumps({"camMat": Boom()}))
    with pytest.raises(InputError, match="0000.pkl: unsafe pickle"):
        HO3D(tmp_path, "train", mano=mano)
    assert "must never run" not in capfd.readouterr().out
    (tmp_path / "train.txt").unlink()
    with pytest.raises(InputError, match="train.txt: missing"):
        HO3D(tmp_path, "train", mano=mano)


def test_dexycb_s0_right_hands_with_pca_converted(tmp_path, hand, rng):
    mano, fingertip_ids = hand
    truth = write_dexycb(tmp_path, mano, fingertip_ids, rng)
    data = DexYCB(tmp_path, "train", mano=mano)
    assert len(data) == 2 and data.skipped_left == 1
    record = data[0]
    np.testing.assert_allclose(record.pose, truth[0]["pose"], atol=1e-9)
    np.testing.assert_allclose(record.vertices, truth[0]["vertices"], atol=1e-9)
    np.testing.assert_allclose(record.K, truth[0]["K"])
    assert data[1].joints_3d is None  # the unannotated frame
    assert len(DexYCB(tmp_path, "val", mano=mano)) == 0  # sequence 0 is a training sequence
    subjects, sequences = dexycb_s0_split("test")
    assert subjects == list(range(2, 10)) and sequences[:3] == [4, 9, 14]
    import shutil

    shutil.rmtree(tmp_path / "20201022-subject-10")
    with pytest.raises(InputError, match="20201022-subject-10: subject folder missing"):
        DexYCB(tmp_path, "train", mano=mano)


def test_crops_are_consistent_with_their_intrinsics(freihand):
    from handssca.runtime.mano.model import rodrigues

    records = FreiHAND(freihand, "training")
    for augment in (None, Augmentation(occluders=1.0)):
        crops = HandCrops(records, size=128, augment=augment, seed=3)
        for index in range(4):
            s = crops[index]
            assert s["image"].shape == (3, 128, 128) and s["image"].dtype == np.float32
            assert s["joints_2d"].shape == (21, 2) and s["vertices"].shape == (778, 3)
            assert s["has_3d"] == 1 and s["has_mano"] == 1
            record = records[index]
            K = np.asarray(s["K"], np.float64)
            # The crop turns the camera about its z axis: the root keeps its depth and its distance
            # from the axis, and sits on the ray through its 2D label.
            ray = np.linalg.solve(K, np.append(s["joints_2d"][0].astype(np.float64) * 128, 1.0))
            root = ray * record.joints_3d[0, 2] / ray[2]
            assert np.linalg.norm(root[:2]) == pytest.approx(np.linalg.norm(record.joints_3d[0, :2]), rel=1e-4)
            # Then every joint projects onto its 2D label with the crop's intrinsics.
            np.testing.assert_allclose(project(s["joints_3d"] + root, K), s["joints_2d"] * 128, atol=2e-3)
            # The MANO global rotation turned by the same rotation as the 3D labels.
            turn = rodrigues(s["pose"][:3].astype(np.float64)) @ rodrigues(record.pose[:3]).T
            np.testing.assert_allclose(turn[2], [0, 0, 1], atol=1e-5)
            verts, _ = mano_forward(
                build_builtin_hand()[0],
                s["pose"][None].astype(np.float64),
                s["shape"][None].astype(np.float64),
                flat_hand_mean=False,
                fingertip_ids=build_builtin_hand()[1],
            )
            rel = verts[0] - verts[0].mean(0)
            gt = s["vertices"] - s["vertices"].mean(0)
            np.testing.assert_allclose(rel, gt, atol=1e-5)


def test_augmentation_is_a_function_of_seed_epoch_and_index(freihand):
    records = FreiHAND(freihand, "training")
    a = HandCrops(records, size=128, augment=Augmentation(), seed=1)
    b = HandCrops(records, size=128, augment=Augmentation(), seed=1)
    np.testing.assert_array_equal(a[2]["image"], b[2]["image"])
    b.set_epoch(1)
    assert not np.array_equal(a[2]["image"], b[2]["image"])
    plain = HandCrops(records, size=128)
    np.testing.assert_array_equal(plain[2]["image"], HandCrops(records, size=128)[2]["image"])


def test_corrupt_images_are_skipped_and_counted_then_refused(freihand, tmp_path):
    import shutil

    root = tmp_path / "fh"
    shutil.copytree(freihand, root)
    (root / "training" / "rgb" / "00000001.jpg").write_bytes(b"not a jpeg")
    crops = HandCrops(FreiHAND(root, "training"), size=64, max_bad_fraction=0.5)
    sample = crops[1]  # replaced by the next sample
    np.testing.assert_array_equal(sample["joints_3d"], crops[2]["joints_3d"])
    assert crops.bad_images == 1
    for name in ("00000002.jpg", "00000003.jpg", "00000004.jpg"):
        (root / "training" / "rgb" / name).write_bytes(b"")
    strict = HandCrops(FreiHAND(root, "training"), size=64, max_bad_fraction=0.01)
    with pytest.raises(InputError, match="unreadable image"):
        strict[1]


def test_submission_files(tmp_path, rng):
    joints, verts = rng.normal(size=(2, 21, 3)), rng.normal(size=(2, 778, 3))
    write_freihand_submission(tmp_path / "pred.json", joints, verts)
    xyz, vv = read_freihand_submission(tmp_path / "pred.json")
    np.testing.assert_allclose(xyz, joints) and np.testing.assert_allclose(vv, verts)
    write_ho3d_submission(tmp_path / "ho3d.json", joints, verts)
    ho3d_xyz, ho3d_verts = json.loads((tmp_path / "ho3d.json").read_text())
    # HO3D's order: MANO joint 1 is the index MCP (FreiHAND joint 5); the tips close the list.
    np.testing.assert_allclose(np.asarray(ho3d_xyz)[0, 1], joints[0, 5] * [1, -1, -1])
    np.testing.assert_allclose(np.asarray(ho3d_xyz)[0, 16], joints[0, 4] * [1, -1, -1])  # thumb tip
    np.testing.assert_allclose(np.asarray(ho3d_verts), verts * [1, -1, -1])
    assert freihand_to_ho3d_order(joints).shape == (2, 21, 3)
    with pytest.raises(ValueError, match=r"joints must be \(N, 21, 3\)"):
        write_freihand_submission(tmp_path / "bad.json", joints[:, :20], verts)
