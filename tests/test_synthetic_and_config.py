"""The synthetic data set (FreiHAND layout), the run config, and the loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from handssca.errors import OptionError
from handssca.runtime.camera import project
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.mano.model import mano_forward
from handssca.training.config import load_config
from handssca.training.losses import LossWeights, hand_loss, weak_perspective
from handssca.training.synthetic import SynthOptions, make_synthetic_dataset


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    model, fingertip_ids = build_builtin_hand()
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_dataset(root, model, fingertip_ids, SynthOptions(train=3, evaluation=2, seed=5), show_progress=False)
    return root, model, fingertip_ids


def test_synthetic_set_has_freihand_layout_and_consistent_annotations(synthetic):
    import cv2

    root, model, fingertip_ids = synthetic
    assert sorted(p.name for p in (root / "training" / "rgb").iterdir()) == [f"{i:08d}.jpg" for i in range(12)]
    assert len(list((root / "evaluation" / "rgb").iterdir())) == 2
    for split, count in (("training", 3), ("evaluation", 2)):
        data = {k: json.loads((root / f"{split}_{k}.json").read_text()) for k in ("K", "mano", "xyz", "verts", "scale")}
        assert all(len(v) == count for v in data.values())
        for i in range(count):
            K, xyz, verts = (np.array(data[k][i]) for k in ("K", "xyz", "verts"))
            theta = np.array(data["mano"][i][0])
            assert theta.shape == (61,) and xyz.shape == (21, 3) and verts.shape == (778, 3)
            # The 61 numbers are FreiHAND's: pose, shape, the root's pixel position, the bone length.
            np.testing.assert_allclose(theta[58:60], project(xyz[0], K), atol=1e-6)
            assert theta[60] == pytest.approx(np.linalg.norm(xyz[9] - xyz[10])) == pytest.approx(data["scale"][i])
            fk_verts, fk_joints = mano_forward(
                model, theta[None, :48], theta[None, 48:58], flat_hand_mean=False, fingertip_ids=fingertip_ids
            )
            trans = xyz[0] - fk_joints[0, 0]
            np.testing.assert_allclose(fk_verts[0] + trans, verts, atol=1e-9)
            uv = project(xyz, K)
            assert (uv > 0).all() and (uv < 224).all() and (xyz[:, 2] > 0).all()  # the hand is in view
        image = cv2.imread(str(root / split / "rgb" / "00000000.jpg"))
        assert image.shape == (224, 224, 3)
    info = json.loads((root / "synthetic.json").read_text())
    assert "NOT the MANO" in info["model"] and info["versions"] == 4


def test_synthetic_set_is_deterministic_by_seed(synthetic, tmp_path):
    root, model, fingertip_ids = synthetic
    same, other = tmp_path / "same", tmp_path / "other"  # a data set folder is never written twice
    make_synthetic_dataset(same, model, fingertip_ids, SynthOptions(train=3, evaluation=2, seed=5), show_progress=False)
    assert (same / "training_xyz.json").read_bytes() == (root / "training_xyz.json").read_bytes()
    assert (same / "training/rgb/00000005.jpg").read_bytes() == (root / "training/rgb/00000005.jpg").read_bytes()
    make_synthetic_dataset(
        other, model, fingertip_ids, SynthOptions(train=3, evaluation=2, seed=6), show_progress=False
    )
    assert (other / "training_xyz.json").read_bytes() != (root / "training_xyz.json").read_bytes()


def test_config_defaults_file_and_overrides(tmp_path):
    config = load_config()
    assert config["train"]["lr"] == 1e-4 and config["train"]["batch_size"] == 32
    assert config["loss"] == {
        "theta": 10.0,
        "beta": 0.1,
        "joints_2d": 1e2,
        "joints_3d": 1e4,
        "vertices": 1e4,
        "rotation": "axis_angle",
    }
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  input_size: 128\n  resnet_width: 8\ntrain:\n  epochs: 3\n")
    config = load_config(path, ["train.lr=0.001", "model.attention=ssa", "data.versions=[0, 2]"])
    assert config["model"] == {"input_size": 128, "resnet_width": 8, "attention": "ssa"}
    assert config["train"]["epochs"] == 3 and config["train"]["lr"] == 0.001 and config["data"]["versions"] == [0, 2]
    with pytest.raises(OptionError, match="unknown key 'epoch'"):
        load_config(None, ["train.epoch=3"])
    with pytest.raises(OptionError, match="expected section.key=value"):
        load_config(None, ["train.epochs"])
    path.write_text("train:\n  learning_rate: 1\n")
    with pytest.raises(OptionError, match="run.yaml.train: unknown key 'learning_rate'"):
        load_config(path)


def test_loss_terms_and_weights():
    torch.manual_seed(0)
    b = 3
    outputs = {
        "pose": torch.randn(b, 48),
        "shape": torch.randn(b, 10),
        "joints_2d": torch.rand(b, 21, 2),
        "camera": torch.zeros(b, 3),
    }
    joints, vertices = torch.randn(b, 21, 3) * 0.05, torch.randn(b, 778, 3) * 0.05
    batch = {
        "pose": torch.zeros(b, 48),
        "shape": torch.zeros(b, 10),
        "joints_2d": torch.full((b, 21, 2), 0.5),
        "joints_3d": torch.zeros(b, 21, 3),
        "vertices": torch.zeros(b, 778, 3),
        "has_2d": torch.ones(b),
        "has_3d": torch.tensor([1.0, 0.0, 0.0]),
        "has_mano": torch.zeros(b),
        "has_vertices": torch.ones(b),
    }
    total, terms = hand_loss(outputs, (vertices, joints), batch, LossWeights())
    assert terms["theta"] == terms["beta"] == 0.0  # no sample has MANO annotations
    assert terms["joints_3d"] == pytest.approx(float((joints[0] ** 2).mean()), rel=1e-5)  # only sample 0 counts
    expected = 1e2 * terms["joints_2d"] + 1e4 * terms["joints_3d"] + 1e4 * terms["vertices"]
    assert float(total) == pytest.approx(expected, rel=1e-5)
    # The camera's zero is the crop centre at the prior scale.
    points = torch.tensor([[[0.0, 0.0, 0.3], [0.1, -0.05, 0.3]]])
    np.testing.assert_allclose(weak_perspective(points, torch.zeros(1, 3))[0].numpy(), [[0.5, 0.5], [0.8, 0.35]])


def test_matrix_rotation_loss_sees_through_the_axis_angle_wrap():
    # A half turn about y written as +pi and as -(pi - 0.01): almost the same rotation.
    pred, target = torch.zeros(2, 48), torch.zeros(2, 48)
    pred[:, 1], target[:, 1] = np.pi, -(np.pi - 0.01)
    pred[1, 10] = 0.5  # a finger error, scored the same either way
    batch = {"pose": target, "has_mano": torch.ones(2)}
    from handssca.training.losses import _masked_mean, _pose_error

    axis_angle = _pose_error(pred, batch["pose"], "axis_angle")
    matrix = _pose_error(pred, batch["pose"], "matrix")
    assert float(axis_angle[0, :3].sum()) > 39.0  # (2 pi - 0.01)^2
    assert float(matrix[0, :3].sum()) < 1e-3  # ~ 2 * 0.01^2 * 2
    assert float(matrix[1, 10]) == float(axis_angle[1, 10]) == pytest.approx(0.25)
    assert float(_masked_mean(matrix, batch["has_mano"])) < float(_masked_mean(axis_angle, batch["has_mano"])) / 100
    with pytest.raises(ValueError, match="loss.rotation 'euler'"):
        LossWeights(rotation="euler")


def test_viewpoint_options_bound_the_hand_rotation():
    from handssca.training.synthetic import _random_rotation

    rng = np.random.default_rng(0)
    narrow = SynthOptions(roll_deg=10.0, tilt_std=0.0, back_probability=0.0)
    palm_normal_camera = []
    for _ in range(200):
        rotation = _random_rotation(rng, narrow)
        assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
        # The palm (+z in the model) is turned to face the camera (-z), rolled about the view axis only.
        palm_normal_camera.append(rotation @ np.array([0.0, 0.0, 1.0]))
        roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
        assert abs(abs(roll) - 180.0) <= 10.0 + 1e-4
    assert np.allclose(np.array(palm_normal_camera), [0.0, 0.0, -1.0], atol=1e-6)
    backs = [_random_rotation(rng, SynthOptions(back_probability=1.0, tilt_std=0.0))[2, 2] for _ in range(50)]
    assert np.allclose(backs, 1.0, atol=1e-6)  # back towards the camera: the model's +z stays +z
    broad = [_random_rotation(rng, SynthOptions())[2, 2] for _ in range(400)]
    assert min(broad) < -0.5 and max(broad) > 0.5  # both sides seen with the defaults


@pytest.mark.parametrize("name", ["freihand", "ho3d", "dexycb", "synthetic_small", "synthetic_demo"])
def test_shipped_training_configs_load_and_build_their_loss(name):
    from pathlib import Path

    config = load_config(Path(__file__).parent.parent / "configs" / "train" / f"{name}.yaml")
    weights = LossWeights(**config["loss"])
    assert weights.rotation in ("axis_angle", "matrix") and config["train"]["epochs"] >= 1
    if name in ("freihand", "ho3d", "dexycb"):  # the paper's loss, unchanged
        assert weights == LossWeights()


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=abc", "'epochs' must be a number"),
        ("data.versions=3", "'versions' must be list"),
        ("train.amp=maybe", "'amp' must be bool"),
    ],
)
def test_an_override_of_the_wrong_kind_is_one_line(override, message):
    from handssca.errors import OptionError
    from handssca.training.config import load_config

    with pytest.raises(OptionError, match=message):
        load_config(None, [override])


def test_results_get_the_usual_file_mode(tmp_path):
    import os

    from handssca.runtime.files import write_atomically

    mask = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "result.json", b"{}")
    finally:
        os.umask(mask)
    from handssca.runtime import files

    assert path.stat().st_mode & 0o777 == 0o666 & ~files._UMASK  # 0644 under the usual umask, not 0600


def full_disk(monkeypatch, module):
    """Writes through ``module``'s os.fdopen fail as on a full disk (ENOSPC)."""
    import errno
    import os

    real = os.fdopen

    class Full:
        def __init__(self, fd, mode):
            self.file = real(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(module.os, "fdopen", Full)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    from handssca.cli import main
    from handssca.runtime import files

    full_disk(monkeypatch, files)
    with pytest.raises(files.OutputError, match=r"out.json: cannot write it \(No space left on device\)"):
        files.write_atomically(tmp_path / "out.json", b"{}")
    assert not list(tmp_path.iterdir())  # no temporary file left behind
    assert main(["mano", "builtin", "-o", str(tmp_path / "hand.npz")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("handssca mano: ") and "hand.npz: cannot write it" in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_a_failed_synthetic_data_set_leaves_no_partial_folder(tmp_path, monkeypatch):
    from handssca.errors import HandSSCAError
    from handssca.runtime import files
    from handssca.runtime.mano.builtin import build_builtin_hand
    from handssca.training.synthetic import SynthOptions, make_synthetic_dataset

    mano, fingertip_ids = build_builtin_hand()
    full_disk(monkeypatch, files)
    with pytest.raises(HandSSCAError, match="cannot write"):
        make_synthetic_dataset(tmp_path / "synth", mano, fingertip_ids, SynthOptions(train=1, evaluation=1))
    assert not list(tmp_path.iterdir())  # neither the data set nor its partial build
    monkeypatch.undo()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(HandSSCAError, match="taken: exists and is not an empty folder"):
        make_synthetic_dataset(tmp_path / "taken", mano, fingertip_ids, SynthOptions(train=1, evaluation=1))
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
