"""Every subcommand, given bad arguments or bad files, answers in one line and a non-zero exit
status: no traceback in any output, whatever the command."""

from __future__ import annotations

import os

import pytest
from test_cli_owners import leaf_commands

from handssca.cli import main


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Files that are not what their names say, an empty folder and a missing path."""
    root = tmp_path_factory.mktemp("bad")
    garbage = os.urandom(512)
    for name in ("model.onnx", "model.engine", "weights.pt", "MANO_RIGHT.pkl", "hand.npz", "photo.png", "clip.mp4"):
        (root / name).write_bytes(garbage)
    (root / "config.yaml").write_text("model: {attention: [unclosed\n")
    (root / "empty").mkdir()
    (root / "a_file").write_text("not a folder")
    return root


def cases(b):
    """(command line) per case; ``b`` is the folder of bad files."""
    missing, empty = str(b / "missing"), str(b / "empty")
    onnx, engine, pt, pkl, npz, png = (str(b / n) for n in ("model.onnx", "model.engine", "weights.pt",
                                                            "MANO_RIGHT.pkl", "hand.npz", "photo.png"))  # fmt: skip
    yaml, out = str(b / "config.yaml"), str(b / "out")
    return {
        "info": [["info", "--config", yaml], ["info", "--config", missing], ["info", "--input-size", "100"]],
        "doctor": [["doctor", "--no-such-option"]],
        "export": [
            ["export", "--checkpoint", pt, "-o", f"{out}.onnx"],
            ["export", "--config", yaml],
            ["export", "--precision", "int8", "-o", f"{out}.onnx"],
            ["export", "-o", empty],
            ["export", "--batch", "0"],
        ],
        "build-engine": [["build-engine", onnx], ["build-engine", missing], ["build-engine", onnx, "--max-batch", "x"]],
        "data synth": [
            ["data", "synth", "--mano", npz, "-o", out],
            ["data", "synth", "--mano", pkl, "-o", out],
            ["data", "synth", "-o", str(b / "a_file"), "--train", "1", "--evaluation", "0"],
        ],
        "train": [["train", "--config", yaml], ["train", "--config", missing], ["train", "--set", "nokey"]],
        "checkpoint slim": [["checkpoint", "slim", pt, "-o", f"{out}.pt"], ["checkpoint", "slim", missing, "-o", out]],
        "eval": [
            ["eval", "--root", missing, "--onnx", onnx],
            ["eval", "--root", empty, "--onnx", onnx],
            ["eval", "--root", empty],
        ],
        "webcam": [
            ["webcam", "--model", onnx, "--headless", "-o", out, "--no-finder"],
            ["webcam", "--model", onnx, "--box", "1,2"],
            ["webcam", "--checkpoint", pt, "--headless", "-o", out],
            ["webcam", "--model", onnx, "--mano", pkl, "--headless", "-o", out],
        ],
        "infer": [
            ["infer", png, "--model", onnx],
            ["infer", missing, "--model", engine],
            ["infer", png, "--checkpoint", pt],
            ["infer", png],
            ["infer", png, "--model", onnx, "--mano", npz],
        ],
        "demo": [["demo", "-o", str(b / "a_file")], ["demo", "--frames", "1"]],
        "bench": [["bench", "--config", yaml], ["bench", "--checkpoint", pt], ["bench", "--batches", "1,x"]],
        "mano convert": [
            ["mano", "convert", pkl],
            ["mano", "convert", missing],
            ["mano", "convert", npz, "-o", "x.txt"],
        ],
        "mano render": [["mano", "render", "--mano", npz], ["mano", "render", "--size", "3"]],
        "mano builtin": [["mano", "builtin", "-o", str(b / "a_file" / "hand.npz")]],
        "serve repository": [
            ["serve", "repository", onnx, "-o", out],
            ["serve", "repository", missing, "-o", out],
            ["serve", "repository", engine, "-o", out],
        ],
        "serve check": [["serve", "check", empty], ["serve", "check", missing]],
        "serve setup": [["serve", "setup", str(b / "a_file")]],
        "serve start": [["serve", "start", missing], ["serve", "start", empty, "--http-port", "0"]],
        "serve load-test": [["serve", "load-test", onnx, "-o", out], ["serve", "load-test", missing, "-o", out]],
    }


def test_every_subcommand_has_bad_cases(bad):
    assert sorted(cases(bad)) == sorted(command for command, _ in leaf_commands())


@pytest.mark.parametrize("command", sorted(command for command, _ in leaf_commands()))
def test_bad_arguments_and_files_give_one_line_and_no_traceback(command, bad, capsys, monkeypatch):
    monkeypatch.chdir(bad)
    for argv in cases(bad)[command]:
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse: usage and one error line, status 2
            status = exc.code
        out, err = capsys.readouterr()
        assert status not in (0, None), f"{argv}: exit status {status}\n{out}{err}"
        assert "Traceback" not in out + err, f"{argv}:\n{out}{err}"
        problem = [line for line in err.splitlines() if line.startswith(("handssca", "usage:")) or ": error:" in line]
        assert problem, f"{argv}: no one-line error on stderr:\n{err}"
        assert all(len(line) < 600 for line in err.splitlines()), (
            f"{argv}: an error line of {max(map(len, err.splitlines()))} characters"
        )
