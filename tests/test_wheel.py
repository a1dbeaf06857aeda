"""The deployment box, as a user makes it: the wheel built from this checkout, installed into a
fresh virtual environment with its declared dependencies alone (no extras, no torch). There the
runtime's commands and its Python API work; the commands that need an extra name it; and the
[serve] extra, installed on top, unlocks the Triton client's command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "handssca" / "assets" / "photos" / "handSrc.jpg"

pytestmark = pytest.mark.slow


def run(command: list, cwd=None, **kwargs) -> subprocess.CompletedProcess:
    """``command`` run outside the checkout (whose handssca/ folder would shadow the installed package)."""
    cwd = cwd or ROOT.parent
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=900, cwd=cwd, **kwargs)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    """(the box's bin folder, the wheel): the wheel installed with its declared dependencies only."""
    folder = tmp_path_factory.mktemp("box")
    # Built from a copy: setuptools builds in the source's build/ folder, which is not the test's to leave.
    source = folder / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", "data", "runs"),
    )
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", source, "-w", folder / "wheel"])
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (folder / "wheel").glob("handssca-*.whl")
    made = run([sys.executable, "-m", "venv", folder / "venv"])
    assert made.returncode == 0, made.stderr
    bin_ = folder / "venv" / "bin"
    installed = run([bin_ / "pip", "install", "-q", wheel])
    assert installed.returncode == 0, installed.stderr[-3000:]
    return bin_, wheel


def short_video(path: Path) -> Path:
    photo = cv2.imread(str(PHOTO))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, photo.shape[1::-1])
    for shift in range(0, 40, 5):
        writer.write(np.roll(photo, shift, axis=1))
    writer.release()
    return path


def test_the_box_has_no_torch_and_its_help_runs(box):
    bin_, _ = box
    found = run([bin_ / "python", "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"])
    assert found.stdout.strip() == "True"
    assert run([bin_ / "handssca", "--help"]).returncode == 0
    assert run([bin_ / "handssca", "webcam", "--help"]).returncode == 0


def test_the_box_finds_a_hand_in_a_photograph_and_writes_its_mesh(box, demo_onnx, tmp_path):
    bin_, _ = box
    result = run([bin_ / "handssca", "infer", PHOTO, "--model", demo_onnx, "-o", tmp_path / "out"])
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert predictions and all((tmp_path / "out" / p["mesh"]).is_file() for p in predictions)


def test_the_box_runs_the_headless_webcam_on_a_video(box, demo_onnx, tmp_path):
    bin_, _ = box
    video = short_video(tmp_path / "hands.mp4")
    out = tmp_path / "w"
    command = [bin_ / "handssca", "webcam", "--source", video, "--model", demo_onnx, "--headless"]
    result = run([*command, "-o", out, "--stream", "0"])  # the stream is the base install's (websockets)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "streaming hands on ws://127.0.0.1:" in result.stderr and "stream: 0 clients served" in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 8 == len((out / "frames.jsonl").read_text().splitlines())
    assert summary["tracking"]["found"] >= 1
    view = run([*command, "--view", "0"])  # the live view is the [view] extra's
    assert view.returncode == 1 and view.stderr.count("\n") == 1, view.stderr
    assert "pip install 'handssca[view]'" in view.stderr


def test_the_box_runs_the_predictor_from_python(box, demo_onnx):
    bin_, _ = box
    script = f"""
import sys
from handssca.runtime import HandMeshPredictor
from handssca.runtime.files import read_image
from handssca.runtime.mano.load import load_hand_model
mano, tips, _ = load_hand_model("builtin")
hands = HandMeshPredictor.open({str(demo_onnx)!r}, mano, tips).predict(read_image({str(PHOTO)!r}))
assert hands and hands[0].vertices.shape == (778, 3), hands
assert not any(m.split(".")[0] in ("torch", "yaml") for m in sys.modules), "torch or yaml was imported"
print(len(hands), hands[0].side)
"""
    result = run([bin_ / "python", "-c", script])
    assert result.returncode == 0 and result.stdout.split()[0] == "1", result.stderr[-2000:]


@pytest.mark.parametrize("args", [["export", "-o", "x.onnx"], ["train"], ["info"], ["serve", "check", "."]])
def test_the_box_names_the_extra_a_command_needs(box, tmp_path, args):
    bin_, _ = box
    result = run([bin_ / "handssca", *args], cwd=tmp_path)
    extra = "serve" if args[0] == "serve" else "train"
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert f"pip install 'handssca[{extra}]'" in result.stderr


def test_the_serve_extra_unlocks_the_triton_client_command(box, demo_onnx, tmp_path):
    """[serve] installed on top of the box: `serve check` reads a repository written here."""
    from handssca.cli import main

    bin_, wheel = box
    repository = tmp_path / "repo"
    assert main(["serve", "repository", str(demo_onnx), "-o", str(repository)]) == 0
    before = run([bin_ / "handssca", "serve", "check", repository])
    assert before.returncode == 1 and "handssca[serve]" in before.stderr
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    extra = run([bin_ / "pip", "install", "-q", f"handssca[serve] @ {wheel.as_uri()}"], env=env)
    assert extra.returncode == 0, extra.stderr[-3000:]
    after = run([bin_ / "handssca", "serve", "check", repository])
    assert after.returncode == 0 and "every config.pbtxt parses" in after.stdout, after.stderr[-2000:]
    torch = run([bin_ / "python", "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"])
    assert torch.stdout.strip() == "True"  # the client's extra brings no torch
