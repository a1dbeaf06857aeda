"""What the runtime writes: one run owns its output folder (a lock, and only its own files
beside its report), the webcam's files under temporary names until they are whole, frames.jsonl
and summary.json in agreement, and errors that say what failed in one line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from handssca.cli import main
from handssca.errors import OutputError
from handssca.runtime.files import RunFolder

PHOTOS = Path(__file__).resolve().parent.parent / "handssca" / "assets" / "photos"
PHOTO = PHOTOS / "handSrc.jpg"
FINAL = ("annotated.mp4", "frames.jsonl", "summary.json")


def frames_folder(folder: Path, count: int, size=(96, 128)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((*size, 3), 30 + 20 * i % 200, np.uint8))
    return folder


def webcam(demo_onnx, source, out, *extra) -> list[str]:
    return [
        "webcam",
        "--source",
        str(source),
        "--model",
        str(demo_onnx),
        "--no-finder",
        "--headless",
        "-o",
        str(out),
    ] + [*extra]


# ---- one run owns a folder ----------------------------------------------------------------------


def test_a_folder_another_run_is_writing_is_refused(tmp_path):
    with RunFolder(tmp_path / "out"):
        with pytest.raises(OutputError, match=r"out: another run \(pid \d+\) is writing this folder"):
            RunFolder(tmp_path / "out").__enter__()
    with RunFolder(tmp_path / "out") as again:  # released with the run
        assert again.path("x.txt") == tmp_path / "out" / "x.txt"


def test_infer_into_a_folder_a_running_infer_holds_is_refused(demo_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import time; from handssca.runtime.files import RunFolder\n"
         f"with RunFolder({str(out)!r}): print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["infer", str(PHOTO), "--model", str(demo_onnx), "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert f"another run (pid {holder.pid}) is writing this folder" in err and err.count("\n") == 1
        assert not (out / "predictions.json").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["infer", str(PHOTO), "--model", str(demo_onnx), "-o", str(out)]) == 0  # a killed holder frees it


def test_a_later_infer_leaves_only_its_own_files(demo_onnx, tmp_path):
    """Two runs into one folder mixed: the first run's meshes stayed beside the second's report."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a.jpg").write_bytes(PHOTO.read_bytes())
    (first / "b.jpg").write_bytes(PHOTO.read_bytes())
    (second / "c.jpg").write_bytes(PHOTO.read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own")
    assert main(["infer", str(first), "--model", str(demo_onnx), "-o", str(out), "--box", "100,100,400,400"]) == 0
    assert {"a.obj", "b.obj", "a_overlay.png", "b_overlay.png"} <= {p.name for p in out.iterdir()}
    assert main(["infer", str(second), "--model", str(demo_onnx), "-o", str(out), "--box", "100,100,400,400"]) == 0
    listed = {entry["mesh"] for entry in json.loads((out / "predictions.json").read_text())}
    visible = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    assert listed == {"c.obj"} and visible == {"c.obj", "c.glb", "c_overlay.png", "predictions.json", "notes.txt"}


def test_a_file_name_with_a_newline_stays_on_its_line(demo_onnx, tmp_path, capsys):
    name = tmp_path / "hand\nphoto.jpg"
    name.write_bytes(PHOTO.read_bytes())
    (tmp_path / "cut\n.jpg").write_bytes(PHOTO.read_bytes()[:5000])
    assert (
        main(["infer", str(name), str(tmp_path / "cut\n.jpg"), "--model", str(demo_onnx), "-o", str(tmp_path / "o")])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(str(tmp_path) + "/hand\\nphoto.jpg: ") for line in out)
    assert any(line.startswith(f"skipped {tmp_path}/cut\\n.jpg: truncated JPEG") for line in out)


# ---- the webcam's files -------------------------------------------------------------------------


def test_a_webcam_run_killed_with_sigkill_leaves_no_file_under_a_final_name(demo_onnx, tmp_path):
    """After kill -9 the folder held an unplayable annotated.mp4, new frames.jsonl and the previous
    run's summary.json; now the video and lines are hidden until whole, and the previous run's
    files are gone when a run starts. The next run into the folder is whole."""
    source = frames_folder(tmp_path / "frames", 400)
    out = tmp_path / "w"
    assert main(webcam(demo_onnx, frames_folder(tmp_path / "few", 3), out)) == 0
    assert all((out / name).is_file() for name in FINAL)
    process = subprocess.Popen([sys.executable, "-m", "handssca", *webcam(demo_onnx, source, out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    partial = out / ".frames.partial.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (partial.is_file() and partial.read_text().count("\n") >= 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not any((out / name).exists() for name in FINAL)  # nothing unfinished, nothing stale
    assert main(webcam(demo_onnx, frames_folder(tmp_path / "five", 5), out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 5 == len((out / "frames.jsonl").read_text().splitlines())
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".") and "partial" in p.name) == []
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert video.read()[0] and int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_on_a_full_disk_the_summary_and_the_lines_agree(demo_onnx, tmp_path, monkeypatch, capsys):
    """A frame whose mesh could not be written had its line written already: 80 frames in the
    summary against 81 lines. A frame counts once its meshes and line are written."""
    import handssca.runtime.files as files

    real, calls = files.write_atomically, []

    def fills_up(path, data):
        calls.append(path)
        if len(calls) == 3:
            raise OutputError(f"{path}: cannot write it ({os.strerror(errno.ENOSPC)})")
        return real(path, data)

    monkeypatch.setattr(files, "write_atomically", fills_up)
    out = tmp_path / "w"
    assert main(webcam(demo_onnx, frames_folder(tmp_path / "frames", 5), out, "--save-meshes")) == 1
    assert "mesh_000002_0.obj: cannot write it (No space left on device)" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    lines = (out / "frames.jsonl").read_text().splitlines()
    assert summary["frames"] == len(lines) == 2 and sorted(p.name for p in out.glob("*.obj")) == [
        "mesh_000000_0.obj",
        "mesh_000001_0.obj",
    ]


def test_a_frame_too_wide_for_the_codec_says_so(demo_onnx, tmp_path, capsys):
    """Not "(full disk?)": the encoder's limit, before any frame is written."""
    folder = tmp_path / "wide"
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.zeros((64, 9000, 3), np.uint8))
    assert main(webcam(demo_onnx, folder, tmp_path / "w")) == 1
    err = capsys.readouterr().err
    assert "annotated.mp4: OpenCV's mp4v encoder cannot take 9000 x 64 frames" in err and "full disk" not in err
    assert err.count("\n") == 1


def test_a_broken_video_is_one_line_without_ffmpegs_own(demo_onnx, tmp_path):
    """FFmpeg's "moov atom not found" and OpenCV's log lines came before our one-line error."""
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x20ftypisom" + b"garbage" * 500)
    command = [sys.executable, "-m", "handssca", *webcam(demo_onnx, tmp_path / "broken.mp4", tmp_path / "w")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "broken.mp4: OpenCV cannot open it" in done.stderr
