"""Model files that lie: hand finder models whose outputs are NaN, infinite or absurd, and model
paths that are no file at all (a folder, a device, a symbolic link loop). Each is refused in one
line naming the file and what is wrong, through the API and through ``handssca infer``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handssca.cli import main
from handssca.errors import ModelFileError
from handssca.runtime.backends.onnx_file import read_onnx
from handssca.runtime.backends.runner import open_runner
from handssca.runtime.files import read_image
from handssca.runtime.hands.finder import HandFinder, shipped_models

PHOTO = shipped_models().parent / "photos" / "handSrc.jpg"
PALM, LANDMARK = "palm_detection_full.onnx", "hand_landmark_full.onnx"


@pytest.fixture(scope="module")
def network(demo_onnx):
    return demo_onnx


@pytest.fixture(scope="module")
def photo():
    return read_image(PHOTO)


def damaged_models(folder, model: str, output: str, factor: float):
    """A copy of the shipped full models in ``folder`` whose ``model`` multiplies its ``output``
    by ``factor``: the same tensor names and shapes, so only the values give it away."""
    import onnx
    from onnx import helper, numpy_helper

    folder.mkdir()
    for name in (PALM, LANDMARK):
        shutil.copy(shipped_models() / name, folder / name)
    graph = onnx.load(folder / model)
    for node in graph.graph.node:
        node.output[:] = [f"{name}_raw" if name == output else name for name in node.output]
    graph.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "damage"))
    graph.graph.node.append(helper.make_node("Mul", [f"{output}_raw", "damage"], [output]))
    onnx.save(graph, folder / model)
    return folder


def infer_error(capsys, argv) -> str:
    """The one error line ``handssca infer argv`` ends with; it must exit 1 without a traceback."""
    assert main(["infer", *argv]) == 1
    return one_error_line(capsys.readouterr().err)


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("handssca infer:")]
    assert len(lines) == 1, err
    return lines[0]


# --- 1. every output the finder uses is checked ------------------------------------------------

DAMAGES = [
    (LANDMARK, "Identity", np.nan, "landmarks"),  # was a traceback (cannot convert float NaN to integer)
    (LANDMARK, "Identity", 1e30, "landmarks"),  # was a hand 1e32 pixels wide
    (LANDMARK, "Identity_1", np.nan, "presence"),  # was silently no hand
    (LANDMARK, "Identity_2", np.nan, "handedness"),  # was NaN in predictions.json
    (LANDMARK, "Identity_2", 10.0, "handedness"),  # a "probability" of 9.7
    (PALM, "Identity", np.nan, "palm boxes and keypoints"),  # was silently no hand
    (PALM, "Identity", 1e30, "palm boxes and keypoints"),
    (PALM, "Identity_1", np.nan, "palm score logits"),
]


@pytest.mark.parametrize(("model", "output", "factor", "what"), DAMAGES)
def test_a_model_with_bad_outputs_is_refused_naming_its_file(tmp_path, photo, model, output, factor, what):
    folder = damaged_models(tmp_path / "models", model, output, factor)
    finder = HandFinder(models=folder)  # names and shapes are right: opening it cannot tell
    with pytest.raises(ModelFileError) as error:
        finder.find(photo)
    message = str(error.value)
    assert message.startswith(f"{folder / model}: output '{output}' ({what}) has ") and "\n" not in message
    assert "a damaged model" in message


def test_the_shipped_models_pass_the_check_on_photographs_and_blank_frames(photo):
    finder = HandFinder()
    assert len(finder.find(photo)) == 1
    assert finder.find(np.zeros((240, 320, 3), np.uint8)) == []
    assert len(finder.find(np.ascontiguousarray(photo[:, ::-1]))) == 1


def test_infer_with_nan_handedness_exits_1_and_writes_no_predictions(tmp_path, network, capsys):
    folder = damaged_models(tmp_path / "models", LANDMARK, "Identity_2", np.nan)
    out = tmp_path / "out"
    line = infer_error(capsys, [str(PHOTO), "--model", str(network), "--hand-models", str(folder), "-o", str(out)])
    assert f"{folder / LANDMARK}: output 'Identity_2' (handedness)" in line
    assert not (out / "predictions.json").exists()


def test_infer_in_a_process_with_nan_landmarks_is_one_line_and_no_traceback(tmp_path, network):
    folder = damaged_models(tmp_path / "models", LANDMARK, "Identity", np.nan)
    argv = [str(PHOTO), "--model", str(network), "--hand-models", str(folder), "-o", str(tmp_path / "out")]
    done = subprocess.run([sys.executable, "-m", "handssca", "infer", *argv], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert f"{folder / LANDMARK}: output 'Identity' (landmarks)" in one_error_line(done.stderr)


def test_a_good_run_still_writes_valid_json(tmp_path, network):
    out = tmp_path / "out"
    assert main(["infer", str(PHOTO), "--model", str(network), "-o", str(out)]) == 0
    predictions = json.loads((out / "predictions.json").read_text(), parse_constant=pytest.fail)
    assert len(predictions) == 1 and 0.5 <= predictions[0]["finder"]["side_score"] <= 1.0


# --- 2. a model path that is no file is named as what it is ------------------------------------


def not_files(tmp_path) -> list[tuple[str, object]]:
    """(kind, path) for each thing a model path can be that is not a file."""
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    loop = tmp_path / "loop_a.onnx"
    loop.symlink_to(tmp_path / "loop_b.onnx")
    (tmp_path / "loop_b.onnx").symlink_to(loop)
    linked = tmp_path / "zero.onnx"
    linked.symlink_to("/dev/zero")
    plain = tmp_path / "folder"  # no .onnx suffix: named as a folder, not "not a model this can run"
    plain.mkdir()
    return [
        ("a folder", folder),
        ("a folder", plain),
        ("a character device", "/dev/null"),
        ("a character device", "/dev/zero"),
        ("a character device, linked to /dev/zero", linked),
        ("a symbolic link loop", loop),
    ]


def test_infer_names_what_a_model_path_is(tmp_path, capsys):
    for kind, path in not_files(tmp_path):
        line = infer_error(capsys, [str(PHOTO), "--model", str(path), "-o", str(tmp_path / "out")])
        assert line == f"handssca infer: {path}: not a model file ({kind})"


def test_infer_still_says_a_missing_model_is_not_found(tmp_path, capsys):
    line = infer_error(capsys, [str(PHOTO), "--model", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out")])
    assert line == f"handssca infer: {tmp_path / 'nope.onnx'}: model file not found"


def test_read_onnx_and_open_runner_name_what_a_path_is(tmp_path):
    for kind, path in not_files(tmp_path):
        with pytest.raises(ModelFileError) as error:
            open_runner(path)
        assert str(error.value) == f"{path}: not a model file ({kind})"
        with pytest.raises(ModelFileError) as error:
            read_onnx(path)
        assert str(error.value) == f"{path}: not a model file ({kind})"


@pytest.mark.parametrize(("broken", "what"), [(PALM, "palm detector"), (LANDMARK, "hand landmark")])
def test_infer_names_what_a_hand_model_path_is(tmp_path, network, capsys, broken, what):
    for i, (kind, path) in enumerate(not_files(tmp_path)):
        folder = tmp_path / f"models{i}"
        folder.mkdir()
        for name in (PALM, LANDMARK):
            (folder / name).symlink_to(path if name == broken else shipped_models() / name)
        argv = [str(PHOTO), "--model", str(network), "--hand-models", str(folder), "-o", str(tmp_path / "out")]
        line = infer_error(capsys, argv)
        # Through the folder's link: a folder or device is named with the link's target.
        kind = kind if kind == "a symbolic link loop" else f"{kind.split(',')[0]}, linked to {Path(path).resolve()}"
        assert line == f"handssca infer: {folder / broken}: not a {what} model file ({kind})"


def test_infer_names_what_the_hand_models_folder_is(tmp_path, network, capsys):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(loop)
    plain = tmp_path / "models.txt"
    plain.write_text("not a folder")
    for kind, path in [("a character device", "/dev/null"), ("a symbolic link loop", loop), ("a regular file", plain)]:
        argv = [str(PHOTO), "--model", str(network), "--hand-models", str(path), "-o", str(tmp_path / "out")]
        line = infer_error(capsys, argv)
        assert line == f"handssca infer: {path}: not a folder of hand models ({kind})"
