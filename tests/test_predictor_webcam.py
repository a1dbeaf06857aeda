"""The predictor over ONNX Runtime and PyTorch, the webcam pipeline headless, and the demo."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from handssca.cli import main
from handssca.errors import RunError
from handssca.models import TorchRunner
from handssca.runtime.backends.onnx_runner import OnnxRunner
from handssca.runtime.camera import solve_translation
from handssca.runtime.crop import apply_affine, crop_affine, invert_affine, square_from_box
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.predictor import HandMeshPredictor
from handssca.runtime.webcam import WebcamOptions, open_capture, run_webcam
from handssca.training.synthetic import render_sequence


@pytest.fixture(scope="module")
def setup(tiny_network, tiny_onnx, tmp_path_factory):
    net = tiny_network
    folder = tmp_path_factory.mktemp("predictor")
    mano, fingertip_ids = build_builtin_hand()
    images, truth = render_sequence(mano, fingertip_ids, 10, seed=1)
    video = folder / "hand.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, images[0].shape[1::-1])
    for image in images:
        writer.write(image)
    writer.release()
    return net, tiny_onnx, mano, fingertip_ids, images, truth, video


def test_onnx_and_pytorch_predictors_agree(setup):
    net, onnx_path, mano, fingertip_ids, images, truth, _ = setup
    onnx_predictor = HandMeshPredictor(OnnxRunner(onnx_path), mano, fingertip_ids)
    torch_predictor = HandMeshPredictor(TorchRunner(net), mano, fingertip_ids)
    boxes = [truth[0]["box"], truth[3]["box"] + [5, -3, 9, 4]]
    a = onnx_predictor.predict(images[0], boxes, K=truth[0]["K"])
    b = torch_predictor.predict(images[0], boxes, K=truth[0]["K"])
    assert len(a) == 2 and set(onnx_predictor.timings) == {"crop_ms", "engine_ms", "mano_ms"}
    for x, y in zip(a, b, strict=True):
        assert x.keypoints_2d.shape == (21, 2) and x.vertices.shape == (778, 3)
        np.testing.assert_allclose(x.keypoints_2d, y.keypoints_2d, atol=1e-3)
        assert 1e3 * np.abs(x.vertices - y.vertices).max() < 1e-3  # mm
        np.testing.assert_allclose(x.joints_3d[0], 0, atol=1e-12)  # root-relative
        assert 0 < x.confidence <= 1 and x.translation.shape == (3,)


def test_left_hands_are_mirrored_in_and_out(setup):
    net, _, mano, fingertip_ids, images, truth, _ = setup
    predictor = HandMeshPredictor(TorchRunner(net), mano, fingertip_ids)
    frame, box = images[2], truth[2]["box"]
    width = frame.shape[1]
    (right,) = predictor.predict(frame, [box])
    mirrored_box = np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]])
    (left,) = predictor.predict(np.ascontiguousarray(frame[:, ::-1]), [mirrored_box], sides=["left"])
    np.testing.assert_allclose(left.keypoints_2d[:, 0], width - 1 - right.keypoints_2d[:, 0], atol=0.05)
    # The two crops match up to warpAffine's fixed-point rounding.
    np.testing.assert_allclose(left.vertices * [-1, 1, 1], right.vertices, atol=1e-5)
    np.testing.assert_allclose(left.pose.reshape(16, 3) * [1, -1, -1], right.pose.reshape(16, 3), atol=1e-4)


def test_predictor_rejects_bad_input(setup):
    net, _, mano, fingertip_ids, images, _, _ = setup
    predictor = HandMeshPredictor(TorchRunner(net), mano, fingertip_ids)
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(images[0].astype(np.float32), [(0, 0, 10, 10)])
    with pytest.raises(ValueError, match="expected four finite pixels"):
        predictor.predict(images[0], [(10, 10, 5, 20)])
    with pytest.raises(ValueError, match="fingertip ids"):  # a MANO model that does not name its tips
        HandMeshPredictor(TorchRunner(net), dataclasses.replace(mano, fingertip_ids=None))


def test_translation_and_crop_geometry():
    rng = np.random.default_rng(0)
    joints = rng.normal(0, 0.04, (21, 3))
    K = np.array([[500.0, 0, 160], [0, 510, 120], [0, 0, 1]])
    t = np.array([0.03, -0.02, 0.5])
    uvw = (joints + t) @ K.T
    np.testing.assert_allclose(solve_translation(joints, uvw[:, :2] / uvw[:, 2:], K), t, atol=1e-9)
    cx, cy, side = square_from_box((10, 20, 50, 100))
    assert (cx, cy, side) == (30, 60, 120)
    for mirror in (False, True):
        m = crop_affine(cx, cy, side, 128, rotation_deg=17, mirror=mirror)
        np.testing.assert_allclose(apply_affine(m, [[cx, cy]]), [[63.5, 63.5]], atol=1e-9)
        points = rng.uniform(0, 100, (5, 2))
        np.testing.assert_allclose(apply_affine(invert_affine(m), apply_affine(m, points)), points, atol=1e-9)


def test_webcam_headless_on_a_video(setup, tmp_path):
    net, onnx_path, mano, fingertip_ids, images, truth, video = setup
    predictor = HandMeshPredictor(OnnxRunner(onnx_path), mano, fingertip_ids)
    report = run_webcam(
        predictor,
        str(video),
        # The stand-in hand is no real hand: the finder would not see it, so the box is followed.
        WebcamOptions(box=tuple(truth[0]["box"]), headless=True, output=tmp_path, save_meshes=True, find_hands=False),
    )
    assert report.frames == len(images) and report.error is None
    lines = [json.loads(x) for x in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(len(images)))
    assert set(lines[0]["stage_ms"]) == {"capture", "finder", "crop", "engine", "mano", "smooth", "render"}
    assert all(len(x["hands"]) == 1 and x["hands"][0]["track"] == 0 for x in lines)
    assert len(lines[0]["hands"][0]["keypoints_2d"]) == 21
    written = cv2.VideoCapture(str(tmp_path / "annotated.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == len(images)
    assert len(list(tmp_path.glob("mesh_*.obj"))) == len(images)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == len(images) and summary["stage_ms"]["engine"] > 0


class FailingStream:
    """A live source that delivers some frames and then stops for good."""

    def __init__(self, frames, fail_after):
        self.frames, self.fail_after, self.reads = frames, fail_after, 0

    def read(self):
        self.reads += 1
        if self.reads > self.fail_after:
            return False, None
        return True, self.frames[(self.reads - 1) % len(self.frames)]

    def release(self):
        pass


def test_a_stream_that_fails_mid_way_ends_cleanly(setup, tmp_path):
    net, onnx_path, mano, fingertip_ids, images, truth, _ = setup
    predictor = HandMeshPredictor(OnnxRunner(onnx_path), mano, fingertip_ids)
    opened = []

    def opener(source):
        if opened:
            raise RunError("reconnect refused")
        opened.append(FailingStream(images, fail_after=4))
        return opened[-1]

    import handssca.runtime.webcam as webcam

    grabber_backoff = webcam.LatestFrameGrabber.__init__.__defaults__
    webcam.LatestFrameGrabber.__init__.__defaults__ = (grabber_backoff[0], 2, 0.01)
    try:
        report = run_webcam(
            predictor, "rtsp://camera.invalid/stream", WebcamOptions(headless=True, output=tmp_path), opener=opener
        )
    finally:
        webcam.LatestFrameGrabber.__init__.__defaults__ = grabber_backoff
    assert 1 <= report.frames <= 4 and "reconnects failed" in report.error
    assert len((tmp_path / "frames.jsonl").read_text().splitlines()) == report.frames  # closed, not truncated


def test_sources_that_cannot_be_read(tmp_path, setup):
    with pytest.raises(RunError, match="no such video file or image folder"):
        open_capture(str(tmp_path / "missing.mp4"))
    folder = tmp_path / "frames"
    folder.mkdir()
    with pytest.raises(RunError, match="no images"):
        open_capture(str(folder))
    images = setup[4]
    cv2.imwrite(str(folder / "a.png"), images[0])
    (folder / "b.png").write_bytes(b"not an image")
    cv2.imwrite(str(folder / "c.png"), images[1])
    source = open_capture(str(folder))
    assert source.read()[0] and source.read()[0] and not source.read()[0] and source.unreadable == 1


def test_infer_and_webcam_commands(setup, tmp_path, capsys):
    _, onnx_path, _, _, images, truth, video = setup
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.jpg"), images[i])
    whole = f"0,0,{images[0].shape[1]},{images[0].shape[0]}"
    assert main(["infer", str(folder), "--model", str(onnx_path), "-o", str(tmp_path / "out"), "--box", whole]) == 0
    predictions = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(predictions) == 2 and (tmp_path / "out" / "0_overlay.png").is_file()
    assert (tmp_path / "out" / "0.obj").is_file()
    box = ",".join(str(v) for v in truth[0]["box"])
    args = ["webcam", "--source", str(video), "--model", str(onnx_path), "--no-finder", "--headless", "-o"]
    args.append(str(tmp_path / "w"))
    assert main([*args, "--box", box, "--max-frames", "3"]) == 0
    assert "3 frames" in capsys.readouterr().out
    assert main([*args[:-2], "--box", box]) == 1
    assert "--headless needs -o" in capsys.readouterr().err
    assert (
        main(["webcam", "--source", str(tmp_path / "nope.mp4"), "--model", str(onnx_path), "--headless", "-o", "x"])
        == 1
    )
    assert "no such video file" in capsys.readouterr().err


@pytest.mark.slow  # a whole command end to end (training, bench, int8, the demo)
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--quick"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "PyTorch vs ONNX Runtime" in report and "overlays.png" in report
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["scan_nodes"] == 2 and max(data["parity_max_abs"].values()) < 1e-4
    assert data["webcam"]["frames"] == 12 and data["predictor_vertex_diff_mm"] < 1e-3
    for name in ("overlays.png", "hand.obj", "webcam/annotated.mp4", "synthetic_input.mp4", "finder_photo.png"):
        assert (tmp_path / name).is_file(), name
    assert sorted(h["side"] for h in data["finder"]["photo"]) == ["left", "right"]
    assert data["finder"]["video"]["found"] >= 4 and "hand finder on real photographs" in report


def test_infer_keeps_every_image_and_says_what_it_skipped(setup, tmp_path, capsys):
    _, onnx_path, _, _, images, _, _ = setup
    folder = tmp_path / "images"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), images[0])
    cv2.imwrite(str(folder / "a.png"), images[1])  # the same stem: neither may overwrite the other
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    assert main(["infer", str(folder), "--model", str(onnx_path), "-o", str(out), "--box", "0,0,64,64"]) == 0
    text = capsys.readouterr().out
    assert "skipped" in text and "broken.jpg: truncated JPEG" in text and "(1 skipped" in text
    assert (out / "a_jpg_overlay.png").is_file() and (out / "a_png_overlay.png").is_file()
    assert len(json.loads((out / "predictions.json").read_text())) == 2

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"nope")
    assert main(["infer", str(only_bad), "--model", str(onnx_path), "-o", str(tmp_path / "none")]) == 1
    assert "none of the 1 images could be read" in capsys.readouterr().err
    assert not (tmp_path / "none" / "predictions.json").exists()


def test_a_bad_box_leaves_no_output_folder(setup, tmp_path, capsys):
    _, onnx_path, _, _, images, _, _ = setup
    cv2.imwrite(str(tmp_path / "a.jpg"), images[0])
    out = tmp_path / "out"
    for box in ("1,2", "0,0,inf,10", "0,0,nan,10", "5,5,5,9"):  # too few, not finite, degenerate
        with pytest.raises(SystemExit) as exit_status:
            main(["infer", str(tmp_path / "a.jpg"), "--model", str(onnx_path), "-o", str(out), "--box", box])
        err = capsys.readouterr().err
        assert exit_status.value.code == 2 and f"argument --box: '{box}': expected finite x0,y0,x1,y1" in err
        assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_an_interrupted_headless_run_finishes_its_outputs(setup, tmp_path, signal_name):
    """Ctrl-C (or a service manager's SIGTERM) mid-run: exit 130, no traceback, every output
    closed and complete, and the summary written."""
    import signal
    import subprocess
    import sys
    import time

    import handssca.runtime.webcam as webcam

    _, onnx_path, _, _, images, truth, _ = setup
    long_video = tmp_path / "long.mp4"
    writer = cv2.VideoWriter(str(long_video), cv2.VideoWriter_fourcc(*"mp4v"), 15.0, images[0].shape[1::-1])
    for _ in range(40):
        for image in images:
            writer.write(image)
    writer.release()
    out = tmp_path / "w"
    box = ",".join(str(v) for v in truth[0]["box"])
    command = [sys.executable, "-m", "handssca.cli", "webcam", "--source", str(long_video), "--model", str(onnx_path)]
    command.append("--no-finder")
    process = subprocess.Popen(
        [*command, "--box", box, "--headless", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
        lines = out / webcam.HeadlessOutputs.PARTIAL_LINES  # moved into place when the run ends
        if lines.is_file() and lines.read_text().count("\n") >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(getattr(signal, signal_name))
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "interrupted" in stdout
    summary = json.loads((out / "summary.json").read_text())
    frames = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]  # no line cut short
    assert summary["interrupted"] and summary["frames"] == len(frames) >= 3
    video = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert video.isOpened() and video.read()[0]  # finalised: playable


def test_a_source_with_no_readable_frame_fails(setup, tmp_path, capsys):
    _, onnx_path, _, _, _, _, _ = setup
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"\xff\xd8 cut")
    args = ["webcam", "--source", str(folder), "--model", str(onnx_path), "--headless", "-o", str(tmp_path / "w")]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert "a.jpg: truncated JPEG" in captured.out and "no frame could be read (1 unreadable; " in captured.err


def test_frames_of_another_size_are_letterboxed_not_dropped(setup, tmp_path, capsys):
    _, onnx_path, _, _, images, _, _ = setup
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), images[0])
    cv2.imwrite(str(folder / "b.png"), cv2.resize(images[1], (200, 100)))
    cv2.imwrite(str(folder / "c.png"), images[2])
    out = tmp_path / "w"
    assert main(["webcam", "--source", str(folder), "--model", str(onnx_path), "--headless", "-o", str(out)]) == 0
    assert "1 frames had another size than the first: letterboxed" in capsys.readouterr().out
    video, frames = cv2.VideoCapture(str(out / "annotated.mp4")), 0
    while video.read()[0]:
        frames += 1
    assert frames == 3


def test_the_live_window_without_a_display_is_refused(setup, tmp_path, monkeypatch, capsys):
    _, onnx_path, _, _, _, _, video = setup
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["webcam", "--source", str(video), "--model", str(onnx_path)]) == 1
    assert "no display here for the live window: run with --headless -o DIR" in capsys.readouterr().err


def test_a_full_disk_mid_run_is_one_line_and_leaves_whole_lines(setup, tmp_path, monkeypatch, capsys):
    """The disk fills on the third frame's JSON line: one line naming the file, exit 1, the JSONL
    cut back to its complete lines, the video finalised, the summary written."""
    import builtins
    import errno
    import os

    import handssca.runtime.webcam as webcam

    _, onnx_path, _, _, _, truth, video = setup

    class FillsUp:
        def __init__(self, path, mode):
            self.path, self.file, self.writes = path, builtins.open(path, mode), 0

        def write(self, text):
            self.writes += 1
            if self.writes == 3:
                self.file.write(text[: len(text) // 2])
                self.file.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            return self.file.write(text)

        def flush(self):
            self.file.flush()

        def close(self):
            self.file.close()

    monkeypatch.setattr(webcam, "open", FillsUp, raising=False)
    out = tmp_path / "w"
    box = ",".join(str(v) for v in truth[0]["box"])
    args = ["webcam", "--source", str(video), "--model", str(onnx_path), "--box", box, "--headless", "-o", str(out)]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith("frames.jsonl: cannot write it (No space left on device)") and "\n" not in err
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]  # all complete
    assert len(records) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 2 and "No space left on device" in summary["error"]
    playable = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert playable.read()[0]


def test_a_video_cut_short_is_reported_not_passed_as_complete(setup, tmp_path, capsys):
    """An AVI copied only half way still opens and reads up to the cut, then looks like a normal
    end of stream; its header's frame count shows the rest is missing."""
    _, onnx_path, _, _, images, _, _ = setup
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, images[0].shape[1::-1])
    for image in images:
        writer.write(image)
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    command = ["webcam", "--model", str(onnx_path), "--headless", "--no-smooth"]
    assert main([*command, "--source", str(whole), "-o", str(tmp_path / "whole")]) == 0
    capsys.readouterr()
    assert main([*command, "--source", str(cut), "-o", str(tmp_path / "cut")]) == 1
    error = capsys.readouterr().err.strip()
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    read = summary["frames"]
    assert 0 < read < len(images) and len(error.splitlines()) == 1
    assert f"cut.avi: ended after {read} of the {len(images)} frames its header declares (truncated" in error
    assert len((tmp_path / "cut" / "frames.jsonl").read_text().splitlines()) == read  # what was read is kept
    assert "truncated" in summary["error"]


@pytest.mark.parametrize("box", [(0, 0, np.inf, 10), (0, np.nan, 5, 10), (5, 5, 5, 9), (0, 0, 1)])
def test_non_finite_or_degenerate_boxes_are_refused_in_one_line(box):
    from handssca.errors import InputError
    from handssca.runtime.predictor import check_request

    with pytest.raises(InputError, match="expected four finite pixels"):
        check_request(np.zeros((8, 8, 3), np.uint8), [box], None)


def test_a_predictor_opened_without_a_hand_model_uses_the_built_in_one_and_says_so(tiny_onnx):
    """As the CLI does: an export without MANO in its graph and no model given runs with the
    built-in hand, with a warning naming it (it is not MANO)."""
    with pytest.warns(UserWarning, match="no MANO model given: using the built-in stand-in hand"):
        predictor = HandMeshPredictor.open(tiny_onnx)
    (hand,) = predictor.predict(np.zeros((120, 160, 3), np.uint8), [(20, 20, 100, 100)])
    assert hand.vertices.shape == (778, 3) and predictor.mano.note.startswith("built-in")
