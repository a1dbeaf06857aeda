"""The hand stream (runtime/live/stream.py) against real WebSocket clients on port 0: websockets'
own sync client, and raw sockets doing the handshake by hand for the clients that misbehave (one
that never reads, one that leaves in the middle of a message). Each test takes a second or two.

Frames are published a few milliseconds apart (a camera's are tens): a burst faster than the
server's loop takes them would fill a reading client's backlog too."""

from __future__ import annotations

import base64
import gc
import json
import logging
import os
import re
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.sync.client import connect

from handssca.errors import OptionError
from handssca.runtime.camera import intrinsics_json
from handssca.runtime.hands.tracking import Track
from handssca.runtime.live.stream import HAND_FIELDS, SCHEMA, HandStream, stream_message, stream_text
from handssca.runtime.outputs.hands import hand_record
from handssca.runtime.predictor import HandPrediction

DOCS = Path(__file__).resolve().parent.parent / "docs" / "stream.md"
PACE_S = 0.01  # between published frames (a reader has backlog x this of slack for a stall)
WAIT_S = 10.0  # the most any test waits for something that takes milliseconds


def frame_record(index: int, hands: int = 2, guessed: bool = True) -> dict:
    """A webcam frame record as FrameStep builds it (hand_record of a HandPrediction with its
    track's fields, intrinsics_json), and the hands' camera-space vertices by track."""
    rng = np.random.default_rng(index)
    K = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    records, vertices = [], {}
    for track_id in range(1, hands + 1):
        side = "right" if track_id == 1 else "left"
        hand = HandPrediction(
            box=np.array([10.0, 20, 110, 120]),
            side=side,
            keypoints_2d=rng.random((21, 2)) * 100,
            joints_3d=rng.random((21, 3)) * 0.1,
            vertices=rng.random((778, 3)) * 0.1,
            pose=rng.random(48),
            shape=rng.random(10),
            confidence=0.9,
            translation=np.array([0.01, -0.02, 0.5]),
        )
        track = Track(id=track_id, box=hand.box, side=side, started=0, side_score=0.97, presence=0.99, palm_score=0.8)
        records.append(hand_record(hand, **track.to_json()))
        vertices[track_id] = hand.vertices_camera
    record = {
        "frame": index,
        "time_s": round(index / 30, 6),
        "intrinsics": intrinsics_json(K, guessed),
        "hands": records,
        "stage_ms": {"capture": 1.0},
    }
    return record, vertices


def publish(stream: HandStream, frames: int, with_vertices: bool = True) -> list[float]:
    """Publishes frames 0..frames-1 a few milliseconds apart; each call's seconds. The garbage
    collector waits meanwhile: a full collection of the test process (tens of milliseconds, in
    whichever thread allocates) is not the stream's time."""
    took = []
    collecting = gc.isenabled()
    gc.disable()
    try:
        for index in range(frames):
            record, vertices = frame_record(index)
            start = time.perf_counter()
            stream.publish(record, vertices if with_vertices else None)
            took.append(time.perf_counter() - start)
            time.sleep(PACE_S)
    finally:
        if collecting:
            gc.enable()
    return took


def assert_never_waited(took: list[float]) -> None:
    """``publish`` handed its frames over without waiting for a client: a few milliseconds as a
    rule; the bound on the slowest is loose, for a loaded CI worker that deschedules the thread,
    yet far below what waiting on a stuck client would take (until it is dropped, seconds)."""
    assert np.median(took) < 0.1 and max(took) < 2.0, f"publish: median {np.median(took) * 1e3:.1f} ms, " \
        f"max {max(took) * 1e3:.1f} ms"  # fmt: skip


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT_S} s for {what}"
        time.sleep(0.005)


class Reader:
    """A websockets sync client reading every message on its own thread until the server closes
    it; ``opening`` is sent first when given."""

    def __init__(self, stream: HandStream, opening: dict | None = None):
        self.websocket = connect(stream.url, open_timeout=WAIT_S)
        if opening is not None:
            self.websocket.send(json.dumps(opening))
        self.messages: list[dict] = []
        self.closed: ConnectionClosed | None = None
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self) -> None:
        try:
            for text in self.websocket:
                self.messages.append(json.loads(text))
        except ConnectionClosed as exc:
            self.closed = exc

    def frames(self) -> list[int]:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the reader was not closed"
        return [message["frame"] for message in self.messages]


def raw_client(stream: HandStream, opening: dict | None = None, receive_buffer: int | None = None) -> socket.socket:
    """A TCP socket that does the WebSocket handshake by hand (and sends ``opening`` as a masked
    text frame); what it reads after that is up to the test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:  # before connecting, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(WAIT_S)
    sock.connect(stream.address)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: {stream.host}:{stream.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    response = b""
    while not response.endswith(b"\r\n\r\n"):  # byte by byte: not a byte of the first frame
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    if opening is not None:
        payload, mask = json.dumps(opening).encode(), os.urandom(4)
        assert len(payload) < 126
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
    return sock


@pytest.fixture(autouse=True)
def _straight_to_the_stream(no_proxy):
    """The clients connect straight to the stream (conftest's no_proxy)."""


@pytest.fixture
def no_errors_logged(caplog):
    """Nothing the server does may log an error (websockets' 'connection handler failed', an
    asyncio task's unretrieved exception)."""
    caplog.set_level(logging.WARNING)
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


def test_the_message_is_the_records_fields_and_the_schema():
    record, vertices = frame_record(3, guessed=False)
    message = stream_message(record)
    assert message["schema"] == SCHEMA and message["frame"] == 3 and message["time_s"] == 0.1
    assert message["intrinsics"] == record["intrinsics"] and message["intrinsics"]["guessed"] is False
    assert "stage_ms" not in message
    for hand, source in zip(message["hands"], record["hands"], strict=True):
        assert list(hand) == list(HAND_FIELDS)  # every field, in the documented order
        assert all(hand[name] == source[name] for name in HAND_FIELDS)
        assert "vertices" not in hand
    with_mesh = stream_message(record, vertices)
    for hand in with_mesh["hands"]:
        assert np.allclose(hand["vertices"], vertices[hand["track"]], atol=1e-6)
    json.dumps(with_mesh, allow_nan=False)  # plain JSON
    for mesh in (None, vertices, {2: vertices[2]}):  # what is sent: the same, as text
        assert stream_text(record, mesh) == json.dumps(stream_message(record, mesh), separators=(",", ":"))
    assert stream_text({**record, "hands": []}).endswith('"hands":[]}')
    with pytest.raises(ValueError, match="not \\(N, 3\\)"):
        stream_message(record, {1: np.zeros(778)})


def test_a_client_gets_every_frame_in_order_and_vertices_only_when_it_asks(no_errors_logged):
    with HandStream(port=0) as stream:
        assert stream.port != 0 and stream.lines == [
            f"streaming hands on ws://127.0.0.1:{stream.port} (schema {SCHEMA})"
        ]
        plain, meshes = Reader(stream), Reader(stream, {"vertices": True})
        wait_until(lambda: stream.counts.clients == 2 and stream.wants_vertices, "both clients")
        took = publish(stream, 20)
    assert plain.frames() == list(range(20)) and meshes.frames() == list(range(20))
    assert plain.closed is None and plain.websocket.close_code == 1001  # going away: a normal end
    first = plain.messages[0]
    assert first["schema"] == SCHEMA and first["intrinsics"]["guessed"] is True
    assert first["time_s"] == 0.0 and {hand["track"] for hand in first["hands"]} == {1, 2}
    hand = first["hands"][0]
    assert set(hand) == set(HAND_FIELDS)
    assert np.shape(hand["joints_camera"]) == (21, 3) and np.shape(hand["joints_3d"]) == (21, 3)
    assert np.shape(hand["keypoints_2d"]) == (21, 2) and len(hand["pose"]) == 48 and len(hand["shape"]) == 10
    assert all("vertices" not in hand for message in plain.messages for hand in message["hands"])
    for message in meshes.messages:
        record, vertices = frame_record(message["frame"])
        for hand in message["hands"]:
            assert np.shape(hand["vertices"]) == (778, 3)
            assert np.allclose(hand["vertices"], vertices[hand["track"]], atol=1e-6)
    assert_never_waited(took)
    counts = stream.counts
    assert (counts.clients, counts.served, counts.frames, counts.sent) == (0, 2, 20, 40)
    assert (counts.dropped, counts.refused, counts.bad_openings) == (0, 0, 0)


def test_ten_clients_at_once_all_get_every_frame(no_errors_logged):
    with HandStream(port=0, max_clients=10) as stream:
        readers = [Reader(stream, {"vertices": i % 2 == 0}) for i in range(10)]
        wait_until(lambda: stream.counts.clients == 10, "ten clients")
        publish(stream, 30)
    assert [reader.frames() for reader in readers] == [list(range(30))] * 10
    assert stream.counts.sent == 300 and stream.counts.dropped == 0


def test_a_client_that_never_reads_is_dropped_and_holds_up_nobody(no_errors_logged):
    with HandStream(port=0, backlog=64) as stream:  # the stuck one overflows any backlog; the reader has slack
        stuck = raw_client(stream, {"vertices": True}, receive_buffer=4096)  # never reads again
        reader = Reader(stream, {"vertices": True})
        wait_until(lambda: stream.counts.clients == 2 and stream._vertex_clients == 2, "both clients")
        took = publish(stream, 150)
        wait_until(lambda: stream.counts.dropped == 1, "the stuck client to be dropped")
        assert stream.counts.clients == 1
    assert reader.frames() == list(range(150))
    assert_never_waited(took)
    stuck.close()


def test_a_client_that_leaves_in_the_middle_of_a_message_disturbs_nothing(no_errors_logged):
    with HandStream(port=0) as stream:
        reader = Reader(stream)
        leaving = raw_client(stream, {"vertices": True})
        wait_until(lambda: stream.counts.clients == 2 and stream.wants_vertices, "both clients")
        publish(stream, 5)
        assert len(leaving.recv(1000)) > 0  # part of the first message (some 50 kB)
        leaving.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        leaving.close()  # a reset, the rest unread
        wait_until(lambda: stream.counts.clients == 1, "the server to notice")
        took = publish(stream, 20)
        assert stream.counts.dropped == 0 and not stream.wants_vertices
    assert reader.frames() == list(range(5)) + list(range(20))
    assert_never_waited(took)


@pytest.mark.parametrize(
    ("opening", "reason"),
    [
        ("hello", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"vertices": true, "mesh": true}', "unknown key 'mesh' (known: vertices)"),
        ('{"vertices": 1}', "'vertices' must be true or false"),
        (b"\x00\x01", "binary"),
    ],
)
def test_a_bad_opening_message_closes_that_client_with_1008_and_a_reason(opening, reason, no_errors_logged):
    with HandStream(port=0) as stream:
        good = Reader(stream)
        with connect(stream.url) as bad:
            bad.send(opening)
            with pytest.raises(ConnectionClosedError) as closed:
                while True:
                    bad.recv(timeout=WAIT_S)
        assert closed.value.rcvd.code == 1008
        assert reason in closed.value.rcvd.reason and "\n" not in closed.value.rcvd.reason
        wait_until(lambda: stream.counts.clients == 1, "the bad client to be gone")
        publish(stream, 5)
        assert stream.counts.bad_openings == 1
    assert good.frames() == list(range(5))


def test_a_second_message_is_not_an_opening_one(no_errors_logged):
    with HandStream(port=0) as stream, connect(stream.url) as client:
        client.send('{"vertices": false}')
        client.send('{"vertices": true}')
        with pytest.raises(ConnectionClosedError) as closed:
            while True:
                client.recv(timeout=WAIT_S)
    assert closed.value.rcvd.code == 1008 and "one opening message only" in closed.value.rcvd.reason


def test_beyond_max_clients_the_handshake_is_refused_saying_why(no_errors_logged):
    with HandStream(port=0, max_clients=2) as stream:
        first, second = Reader(stream), Reader(stream)
        wait_until(lambda: stream.counts.clients == 2, "two clients")
        with pytest.raises(InvalidStatus) as refused:
            connect(stream.url)
        assert refused.value.response.status_code == 503
        assert b"full: 2 clients at most" in refused.value.response.body
        assert stream.counts.refused == 1
        first.websocket.close()
        wait_until(lambda: stream.counts.clients == 1, "one to leave")
        third = Reader(stream)  # room again
        wait_until(lambda: stream.counts.clients == 2, "the third")
        publish(stream, 3)
    assert second.frames() == third.frames() == [0, 1, 2]


def test_beyond_loopback_it_says_there_is_no_authentication():
    with HandStream("0.0.0.0", 0) as stream:
        assert stream.lines[0] == f"streaming hands on ws://0.0.0.0:{stream.port} (schema {SCHEMA})"
        assert stream.lines[1].startswith("the hand stream on 0.0.0.0 has no authentication")
        with connect(f"ws://127.0.0.1:{stream.port}") as client:  # reachable on loopback too
            wait_until(lambda: stream.counts.clients == 1, "the client")
            stream.publish(frame_record(0)[0])
            assert json.loads(client.recv(timeout=WAIT_S))["frame"] == 0


def test_a_port_in_use_is_a_one_line_option_error():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(OptionError) as error:
            HandStream(port=port).start()
    finally:
        holder.close()
    message = str(error.value)
    assert (
        message
        == f"--stream 127.0.0.1:{port}: cannot listen there: the port is in use (give another, or 0 for a free one)"
    )


def test_close_is_idempotent_and_publish_after_it_does_nothing():
    stream = HandStream(port=0).start()
    stream.close()
    stream.close()
    stream.publish(frame_record(0)[0])
    with pytest.raises(RuntimeError, match="closed"):
        stream.start()
    HandStream(port=0).close()  # never started
    with pytest.raises(RuntimeError, match="before start"):
        HandStream(port=0).publish(frame_record(0)[0])


def test_the_docs_client_runs_against_a_stream(capsys):
    """docs/stream.md's client, as printed (only its URL changed), against a live stream."""
    text = DOCS.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    client = next(block for block in blocks if "websockets.sync.client" in block)
    assert 'URL = "ws://127.0.0.1:8765"' in client and len(client.splitlines()) <= 25
    with HandStream(port=0) as stream:
        code = client.replace('"ws://127.0.0.1:8765"', repr(stream.url))
        runner = threading.Thread(target=exec, args=(compile(code, "docs/stream.md client", "exec"), {}))
        runner.start()
        wait_until(lambda: stream.counts.clients == 1 and stream.wants_vertices, "the client")
        publish(stream, 3)
        wait_until(lambda: stream.counts.sent == 3, "the frames to go out")
    runner.join(WAIT_S)
    assert not runner.is_alive()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and lines[0].startswith("0 1 right ") and lines[-1].startswith("2 2 left ")


def test_a_client_behind_is_dropped_and_counted_once_however_many_frames_wait(no_errors_logged):
    """Frames queued on the server's loop while it was busy (a stall) all find the stuck client's
    queue full: it is dropped once, not once a frame."""
    with HandStream(port=0, backlog=2) as stream:
        stuck = raw_client(stream, {"vertices": True}, receive_buffer=4096)
        wait_until(lambda: stream.counts.clients == 1 and stream.wants_vertices, "the client")
        stream._loop.call_soon_threadsafe(time.sleep, 0.3)  # the loop stalls; frames pile up behind it
        publish(stream, 20)
        wait_until(lambda: stream.counts.clients == 0, "the client to be dropped")
        assert stream.counts.dropped == 1 and stream.counts.served == 1
    stuck.close()


def test_with_no_client_a_frame_is_counted_not_built(monkeypatch):
    import handssca.runtime.live.stream as module

    built = []
    monkeypatch.setattr(module, "stream_text", lambda *args: built.append(args) or "{}")
    with HandStream(port=0) as stream:
        publish(stream, 3)
        wait_until(lambda: stream.counts.frames == 3, "the frames to be counted")
    assert built == []
