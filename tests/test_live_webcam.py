"""``handssca webcam ... --view PORT --stream PORT``: the live view and the stream while the webcam
runs, with a real browser on the one and a real websocket client on the other."""

from __future__ import annotations

import json
import re
import threading

import numpy as np
import pytest
from browser import browser_page, screenshot, wait_for
from paced_camera import PacedCamera
from websockets.sync.client import connect

from handssca import progress
from handssca.cli import main
from handssca.runtime.files import write_video
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.photos import two_hands_sequence
from handssca.runtime.predictor import HandMeshPredictor
from handssca.runtime.webcam import WebcamOptions, run_webcam

pytest.importorskip("viser")


def said_port(lines: list[str], what: str) -> int:
    line = next(line for line in lines if line.startswith(what))
    return int(re.search(r":(\d+)", line.split("//", 1)[1]).group(1))


@pytest.mark.xdist_group("browser")  # one software-WebGL chromium at a time on the CI's two cores
def test_a_browser_and_a_stream_client_follow_the_webcam_as_it_runs(tiny_onnx, monkeypatch, no_proxy):
    """The tiny network on a hand from --box, paced like a camera: the page shows the hand and the
    HUD as they change, the client gets every frame from the one it joined at, and the run's summary
    counts both."""
    said = []
    monkeypatch.setattr(progress, "say", said.append)
    mano, tips = build_builtin_hand()
    predictor = HandMeshPredictor.open(str(tiny_onnx), mano, tips)
    frames = [f.image for f in two_hands_sequence(8)]
    height, width = frames[0].shape[:2]
    box = (width * 0.3, height * 0.2, width * 0.7, height * 0.8)
    options = WebcamOptions(box=box, find_hands=False, headless=True, view="127.0.0.1:0", stream="0")
    stop = threading.Event()
    reports = []
    camera = PacedCamera(frames, 15, stop)
    run = threading.Thread(target=lambda: reports.append(run_webcam(predictor, "camera", options, lambda _: camera)))
    run.start()
    try:
        assert wait_for(lambda: len(said) >= 2, 30), said
        view_port, stream_port = said_port(said, "live view on"), said_port(said, "streaming hands on")
        with connect(f"ws://127.0.0.1:{stream_port}") as client, browser_page() as page:
            client.send(json.dumps({"vertices": True}))
            messages = []  # read as they come, on a thread of the client's own (as docs/stream.md advises)
            reader = threading.Thread(target=lambda: messages.extend(json.loads(m) for m in client), daemon=True)
            reader.start()
            page.goto(f"http://127.0.0.1:{view_port}")

            def hud_says_fps():
                text = page.inner_text("body")
                return text if "FPS" in text and "hands found" in text else None

            first = wait_for(hud_says_fps)
            assert first is not None, "the page never showed the HUD"

            def right_hand_shown():
                r, g, b = (channel.astype(int) for channel in np.moveaxis(screenshot(page), 2, 0))
                return ((b > r + 60) & (b > g + 30)).sum() > 300 or None

            assert wait_for(right_hand_shown), "no right hand's colour in the page"
            assert wait_for(lambda: (text := hud_says_fps()) is not None and text != first), "the HUD did not follow"
            assert wait_for(lambda: len(messages) >= 10, 10)
    finally:
        stop.set()
        run.join(60)
    report = reports[0]
    reader.join(10)
    indices = [m["frame"] for m in messages]
    assert indices == list(range(indices[0], indices[0] + len(indices))), "the client missed or reordered frames"
    hand = messages[-1]["hands"][0]
    assert messages[-1]["schema"] == "handssca.hands/1" and messages[-1]["intrinsics"]["guessed"] is True
    assert np.asarray(hand["vertices"]).shape == (778, 3) and np.asarray(hand["joints_camera"]).shape == (21, 3)
    assert report.error is None and report.live["view"]["shown"] > 0 and report.live["stream"]["served"] == 1
    assert report.live["view"]["url"] == f"http://127.0.0.1:{view_port}" and report.live["view"]["failure"] is None
    lines = report.summary_lines()
    assert any(line.startswith("live view:") for line in lines) and any(line.startswith("stream:") for line in lines)


def test_the_command_runs_with_view_and_stream_headless(tiny_onnx, tmp_path, capsys):
    """The issue's command, on a short video: it listens, says where, runs to the end and says
    what the view and the stream did; view-only needs no -o."""
    video = tmp_path / "hands.mp4"
    write_video(video, [f.image for f in two_hands_sequence(6)], 15.0)
    args = ["webcam", "--source", str(video), "--model", str(tiny_onnx), "--headless", "--no-finder"]
    assert main(args + ["--view", "0", "--stream", "127.0.0.1:0"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"live view on http://127\.0\.0\.1:\d+ \(open it in a browser\)", captured.err)
    assert re.search(r"streaming hands on ws://127\.0\.0\.1:\d+", captured.err)
    assert "no authentication" not in captured.err
    assert "6 frames" in captured.out and "live view: " in captured.out and "stream: 0 clients served" in captured.out
    assert main(args + ["--stream", "0.0.0.0:0", "--max-frames", "1"]) == 0
    assert "no authentication" in capsys.readouterr().err
    assert main(args + ["--view", "nowhere"]) == 2
    assert "--view nowhere: give [HOST:]PORT" in capsys.readouterr().err


def test_a_live_address_in_use_leaves_the_previous_run_in_its_folder(tiny_onnx, tmp_path, capsys):
    """The view and the stream listen before the run takes its folder: one that cannot is one line,
    and the last run's files stay."""
    import socket

    video = tmp_path / "hands.mp4"
    write_video(video, [f.image for f in two_hands_sequence(4)], 15.0)
    out = tmp_path / "out"
    args = ["webcam", "--source", str(video), "--model", str(tiny_onnx), "--headless", "--no-finder", "-o", str(out)]
    assert main(args) == 0
    before = sorted(p.name for p in out.iterdir())
    assert {"annotated.mp4", "frames.jsonl", "summary.json"} <= set(before)
    capsys.readouterr()
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        for option in ("--stream", "--view"):
            assert main([*args, option, str(port)]) == 2
            assert f"{option} 127.0.0.1:{port}: cannot listen there: the port is in use" in capsys.readouterr().err
            assert sorted(p.name for p in out.iterdir()) == before
