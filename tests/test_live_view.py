"""``webcam --view``: the hands in 3D in a real browser (headless chromium through Playwright).

The page is viser's; what it shows is checked in its screenshot: each hand's side colour where
its mesh projects through the page's starting camera (``view.EYE``, ``TARGET``, the field of
view), the frame in the camera's frustum, the HUD, and that it follows the frames."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from browser import browser_page, screenshot, wait_for

from handssca.runtime.live import view as live_view
from handssca.runtime.live.view import LiveView
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.mano.conventions import posed_hand
from handssca.runtime.predictor import HandPrediction

pytest.importorskip("viser")
WIDTH, HEIGHT = 800, 600
K = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])


def hand(side: str, at, rng) -> HandPrediction:
    mano, tips = build_builtin_hand()
    pose = np.concatenate([np.zeros(3), rng.normal(scale=0.2, size=45)])
    vertices, joints = posed_hand(mano, side, pose, np.zeros(10), flat_hand_mean=True, fingertip_ids=tips)
    box, keypoints, at = np.array([0.0, 0, 100, 100]), np.zeros((21, 2)), np.asarray(at, float)
    return HandPrediction(box, side, keypoints, joints, vertices, pose, np.zeros(10), 0.9, at)


def page_pixels(points: np.ndarray) -> np.ndarray:
    """Where camera-space ``points`` land in the page: the starting camera's look-at and vertical
    field of view, as three.js projects (square pixels, the page's aspect)."""
    eye, target = np.asarray(live_view.EYE), np.asarray(live_view.TARGET)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0.0, -1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    d = points - eye
    x, y, z = d @ right, d @ up, d @ forward
    half = np.tan(np.radians(live_view.FIELD_OF_VIEW_DEG) / 2)
    return np.stack([WIDTH / 2 * (1 + x / z / (half * WIDTH / HEIGHT)), HEIGHT / 2 * (1 - y / z / half)], 1)


def side_pixels(image: np.ndarray, side: str) -> np.ndarray:
    """(H, W) bool: pixels of ``side``'s hue (the mesh is shaded and 70% opaque over white, so
    the test is the dominant channel, not the exact colour)."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    if side == "right":  # blue
        return (b > r + 60) & (b > g + 30)
    return (g > r + 50) & (g > b + 40)  # left: green


def coverage(image: np.ndarray, hand_: HandPrediction, side: str) -> float:
    """The share of the hand's projected box (shrunk to its middle) showing ``side``'s colour."""
    pixels = page_pixels(hand_.vertices_camera)
    (x0, y0), (x1, y1) = pixels.min(0), pixels.max(0)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
    region = side_pixels(image, side)[int(cy - hh) : int(cy + hh), int(cx - hw) : int(cx + hw)]
    return float(region.mean()) if region.size else 0.0


class Track:
    def __init__(self, id_):
        self.id = id_


@pytest.mark.xdist_group("browser")  # one software-WebGL chromium at a time on the CI's two cores
def test_the_page_shows_each_hand_in_its_colour_where_its_mesh_is_and_follows_the_frames(rng):
    mano, _ = build_builtin_hand()
    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:] = (255, 0, 255)  # magenta (BGR and RGB alike): the frame in the frustum
    right, left = hand("right", (0.07, 0.0, 0.45), rng), hand("left", (-0.09, 0.0, 0.45), rng)
    with LiveView("127.0.0.1", 0, mano.faces) as view, browser_page(WIDTH, HEIGHT) as page:
        assert view.lines[0] == f"live view on {view.url} (open it in a browser)"
        view.show(frame, K, [(Track(0), right), (Track(1), left)], ["12.5 FPS  hands 2/2", "engine 3.0 ms"])
        page.goto(view.url)

        def both_shown():
            image = screenshot(page)
            return image if coverage(image, right, "right") > 0.3 and coverage(image, left, "left") > 0.3 else None

        image = wait_for(both_shown)
        assert image is not None, "the page never showed both hands where their meshes are"
        assert side_pixels(image, "right").sum() > 500 and side_pixels(image, "left").sum() > 500
        assert (np.abs(image.astype(int) - [255, 0, 255]).sum(axis=2) < 60).sum() > 200  # the frame, in the frustum
        assert page.get_by_text("12.5 FPS").count() == 1  # the HUD

        # The hands swap places: the page follows (each colour where its hand now is), and a
        # track that ends leaves the page.
        moved = hand("right", (-0.09, 0.0, 0.45), rng)
        frame = np.full_like(frame, (255, 255, 0))  # cyan (BGR): the frustum's frame changes too
        view.show(frame, K, [(Track(0), moved)], ["13.0 FPS  hands 1/2"])
        image = wait_for(lambda: image if coverage(image := screenshot(page), moved, "right") > 0.3 else None)
        assert image is not None, "the page did not follow the frame"
        assert coverage(image, left, "left") < 0.02, "a hand no longer tracked is still shown"
        assert page.get_by_text("13.0 FPS").count() == 1
        assert (np.abs(image.astype(int) - [0, 255, 255]).sum(axis=2) < 60).sum() > 200  # the new frame
        assert view.shown >= 2


def test_a_busy_view_drops_frames_and_never_holds_up_the_loop(monkeypatch, rng):
    """The loop hands frames over and goes on; the view draws the newest, counting the rest dropped."""
    mano, _ = build_builtin_hand()
    drawn, release = [], threading.Event()

    def slow_draw(self, frame, K_, hands, hud):
        release.wait(10)  # a browser (or the view's thread) that cannot keep up
        drawn.append(hud[0])

    monkeypatch.setattr(LiveView, "_draw", slow_draw)
    frame = np.zeros((48, 64, 3), np.uint8)
    right = hand("right", (0.0, 0.0, 0.5), rng)
    with LiveView("127.0.0.1", 0, mano.faces) as view:
        start = time.perf_counter()
        for index in range(50):
            view.show(frame, K, [(Track(0), right)], [f"frame {index}"])
        handed_over = time.perf_counter() - start
        release.set()
        assert wait_for(lambda: view._mailbox is None and drawn and drawn[-1] == "frame 49", 10, 0.05)
    assert handed_over < 1.0  # 50 hand-overs while the view was stuck on its first frame
    assert drawn[-1] == "frame 49" and len(drawn) <= 3 and view.dropped == 50 - len(drawn)
    assert view.shown == len(drawn)


def test_view_addresses_and_a_missing_extra(monkeypatch):
    from handssca.errors import MissingBackend, OptionError
    from handssca.runtime.live import no_authentication_note, parse_address

    assert parse_address("8080", "--view") == ("127.0.0.1", 8080)
    assert parse_address("0.0.0.0:9000", "--view") == ("0.0.0.0", 9000)
    assert parse_address("[::1]:9000", "--view") == ("::1", 9000)
    for bad in ("http", "70000", ":80", "host:", "-1", "\u00b2", "8\u0660"):
        with pytest.raises(OptionError, match="--view"):
            parse_address(bad, "--view")
    assert no_authentication_note("127.0.0.1", "the live view") is None
    assert "no authentication" in no_authentication_note("0.0.0.0", "the live view")
    monkeypatch.setitem(__import__("sys").modules, "viser", None)
    with pytest.raises(MissingBackend, match=r"\[view\]"):
        LiveView("127.0.0.1", 0).start()


def test_a_frame_the_view_cannot_draw_is_counted_and_the_view_goes_on(monkeypatch, rng):
    mano, _ = build_builtin_hand()
    draw, calls = LiveView._draw, []

    def failing_once(self, *args):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("a bad frame\nof two lines")
        draw(self, *args)

    monkeypatch.setattr(LiveView, "_draw", failing_once)
    frame = np.zeros((48, 64, 3), np.uint8)
    with LiveView("127.0.0.1", 0, mano.faces) as view:
        for index in range(2):
            view.show(frame, K, [(Track(0), hand("right", (0.0, 0.0, 0.5), rng))], [f"frame {index}"])
            assert wait_for(lambda done=index + 1: len(calls) >= done and view._mailbox is None or None, 10, 0.02)
        assert wait_for(lambda: view.shown == 1 or None, 10, 0.02)
        port = view.address[1]
    assert view.failure == "ValueError: a bad frame\\nof two lines"
    assert view.url == f"http://127.0.0.1:{port}" and port != 0  # still the port it listened on


def test_an_address_the_view_cannot_take_is_one_option_error_at_once():
    """viser would try port after port, and wait for ever where none binds; the view says why."""
    import socket

    from handssca.errors import OptionError

    with pytest.raises(OptionError, match=r"^--view 192\.0\.2\.1:0: cannot listen there: "):
        LiveView("192.0.2.1", 0).start()  # TEST-NET-1: no machine's own address
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        with pytest.raises(OptionError, match="the port is in use"):
            LiveView("127.0.0.1", port).start()
