"""Crafted model files and output paths (issue 26): ONNX external data that points outside the
model's folder, checkpoints with NaN weights, outputs that are existing folders. Each is refused
in one line before any work, and nothing outside the model's folder is read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from handssca.cli import main
from handssca.errors import ModelFileError
from handssca.models import HandSSCA, HandSSCAConfig
from handssca.runtime.backends.onnx_file import read_onnx
from handssca.runtime.backends.onnx_runner import OnnxRunner
from handssca.training.checkpoint import save_checkpoint

from conftest import TINY


def model_with_external_weight(folder, location: str, write_data: bool = True):
    """y = x + w, w (4,) float32 stored as external data at ``location`` (relative to ``folder``)."""
    weight = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    if write_data:
        (folder / location).write_bytes(np.arange(4, dtype=np.float32).tobytes())
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [weight],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_the_model_folder_is_refused(tmp_path, location):
    folder = tmp_path / "model"
    folder.mkdir()
    path = model_with_external_weight(folder, location, write_data=False)
    with pytest.raises(ModelFileError, match="external data must be a file inside the model's folder; refused"):
        read_onnx(path)


def test_external_data_that_is_a_link_or_missing_is_refused(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "w.bin").symlink_to("/etc/hostname")
    with pytest.raises(ModelFileError, match="not a regular file"):
        read_onnx(model_with_external_weight(folder, "w.bin", write_data=False))
    (folder / "w.bin").unlink()
    with pytest.raises(ModelFileError, match="does not exist beside the model"):
        read_onnx(model_with_external_weight(folder, "w.bin", write_data=False))


def test_external_data_is_read_from_the_model_folder_not_the_current_one(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    path = model_with_external_weight(folder, "w.bin")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "w.bin").write_bytes(np.full(4, 100, np.float32).tobytes())  # must not be the one read
    monkeypatch.chdir(elsewhere)
    out = OnnxRunner(path).run(np.ones((2, 4), np.float32))["y"]
    np.testing.assert_array_equal(out, np.ones((2, 4)) + np.arange(4))


@pytest.mark.parametrize(
    "argv",
    [
        ["infer", "{image}", "--model", "{model}", "--box", "0,0,10,10"],
        ["webcam", "--source", "{image}", "--model", "{model}", "--headless", "-o", "{out}", "--no-finder"],
        ["eval", "--root", "{data}", "--onnx", "{model}", "-o", "{out}.json"],
        ["serve", "repository", "{model}", "-o", "{out}"],
    ],
    ids=["infer", "webcam", "eval", "serve repository"],
)
def test_every_command_refuses_crafted_external_data_in_one_line(tmp_path, capsys, argv, small_synthetic_set):
    import cv2

    folder = tmp_path / "model"
    folder.mkdir()
    model = model_with_external_weight(folder, "../../../../../../etc/passwd", write_data=False)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    values = {"model": model, "image": image, "out": tmp_path / "out", "data": small_synthetic_set}
    assert main([a.format(**values) for a in argv]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out" / "handssca_network").exists()


def test_a_checkpoint_with_nan_weights_is_refused_as_not_finite(tmp_path, capsys):
    model = HandSSCA(HandSSCAConfig(attention="ssa", **TINY))
    with torch.no_grad():
        next(model.parameters())[0].fill_(float("nan"))
    path = tmp_path / "diverged.pt"
    save_checkpoint(path, model, epoch=1, step=1, metrics={})
    assert main(["export", "--checkpoint", str(path), "-o", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert "weight tensors are not finite (NaN or inf" in err and "disagree" not in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_to_a_folder_is_refused_before_the_network_is_built(tmp_path, capsys, monkeypatch):
    import handssca.training.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "load_network", lambda *a, **k: pytest.fail("the work started"))
    assert main(["export", "-o", str(tmp_path)]) == 1
    assert f"{tmp_path}: is a folder; give a file name to write" in capsys.readouterr().err


def test_eval_submission_to_a_folder_is_refused_before_the_evaluation(tmp_path, capsys, monkeypatch):
    import handssca.runtime.backends.runner as runner

    monkeypatch.setattr(runner, "open_runner", lambda *a, **k: pytest.fail("the evaluation started"))
    folder = tmp_path / "submission"
    folder.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    code = main(
        ["eval", "--root", str(data), "--mean-hand", "--submission", str(folder), "-o", str(tmp_path / "e.json")]
    )
    assert code == 1 and f"{folder}: is a folder" in capsys.readouterr().err


def test_a_huge_batch_is_refused_with_what_it_would_need(tmp_path, capsys):
    assert main(["bench", "--batches", "1,100000", "-o", str(tmp_path / "bench")]) == 2  # an option out of its range: 2
    err = capsys.readouterr().err
    assert "--batches 100000: at most 256 (batch 100000 needs 73.2 GiB for its input images alone" in err
    assert not (tmp_path / "bench").exists()
