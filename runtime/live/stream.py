"""The tracked hands as a WebSocket stream of JSON messages, for other programs (``handssca webcam
--stream [HOST:]PORT``; docs/stream.md has the schema and a client).

One message a processed frame (``stream_message``: the webcam's frame record, field for field, plus
``"schema"``), serialised once per variant (with and without the meshes' vertices) and handed to
every client. The server runs on an asyncio event loop in a daemon thread; ``publish`` builds the
message on the caller's thread and hands it to the loop without waiting, so the camera loop never
waits for a client:

- a client may send one opening message, a JSON object: ``{"vertices": true}`` asks for each hand's
  mesh vertices; without one it gets messages without them. Anything else (not JSON, not an object,
  an unknown key, a wrong type, a second message) closes that connection with 1008 and a reason;
- each client has a queue of at most ``backlog`` messages: a client that lets it fill (it stopped
  reading, or reads slower than the camera) is closed with 1008 ("fell N frames behind") and
  counted, and the others carry on;
- at most ``max_clients`` at once: beyond them the opening handshake is answered HTTP 503 with a
  body that says so;
- nothing is printed or logged per frame. ``lines`` are what to print when it listens (with the
  no-authentication note when it listens beyond loopback), ``counts`` what happened.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import threading
from dataclasses import asdict, dataclass
from http import HTTPStatus

import numpy as np

from handssca.errors import OptionError, RunError, counted, one_line
from handssca.runtime.live import LOOPBACK, listen_reason, no_authentication_note

SCHEMA = "handssca.hands/1"
FRAME_FIELDS = ("frame", "time_s", "intrinsics")  # then "hands"
HAND_FIELDS = (  # those a hand record has, in this order; side_score to palm_score, translation
    "track",  # and joints_camera are absent when the record has none
    "side",
    "side_score",
    "presence",
    "palm_score",
    "box",
    "confidence",
    "keypoints_2d",
    "joints_3d",
    "translation",
    "joints_camera",
    "pose",
    "shape",
)
OPENING_KEYS = {"vertices": bool}  # what an opening message may hold
OPENING_MAX_BYTES = 4096  # a larger message from a client closes it (1009)
CLOSE_TIMEOUT_S = 2.0  # a closing handshake that takes longer is cut (the TCP connection aborted)
# Each connection's kernel send buffer (Linux doubles it; left alone it grows to megabytes, seconds
# of frames a stalled client would get late): with ``backlog`` it bounds how stale a slow client's
# frames get before it is dropped, and it still carries the meshes at 30 frames a second to a
# client 100 ms away.
SEND_BUFFER_BYTES = 256 * 1024
STARTUP_TIMEOUT_S = 30.0

POLICY_VIOLATION, GOING_AWAY, TRY_AGAIN_LATER = 1008, 1001, 1013

log = logging.getLogger("handssca.live.stream")  # websockets' connection events; prints nothing unless
log.addHandler(logging.NullHandler())  # the program configures logging


def stream_message(record: dict, vertices: dict | None = None) -> dict:
    """The stream's message for one webcam frame ``record`` (``FrameStep``'s: frame, time_s,
    intrinsics, hands): its schema, frame, time_s, intrinsics and each hand's fields (``HAND_FIELDS``)
    under the record's own names. ``vertices`` ({track id: (778, 3) camera-space metres}): each
    hand whose track has them gets ``"vertices"`` (to 1e-6 m). ``stream_text`` is its JSON."""
    message = _message(record)
    for hand in message["hands"]:
        mesh = _mesh(vertices, hand)
        if mesh is not None:
            hand["vertices"] = mesh.tolist()
    return message


def stream_text(record: dict, vertices: dict | None = None) -> str:
    """``json.dumps(stream_message(record, vertices))``, compact, as the stream sends it; built
    without one Python list per vertex (which would wake the garbage collector in the camera's
    thread): each mesh's numbers are written flat and grouped in threes as text."""
    message = _message(record)
    hands = message.pop("hands")
    texts = []
    for hand in hands:
        text = json.dumps(hand, separators=SEPARATORS)
        mesh = _mesh(vertices, hand)
        if mesh is not None:
            numbers = json.dumps(mesh.ravel().tolist(), separators=SEPARATORS)[1:-1].split(",")
            rows = "],[".join([",".join(numbers[i : i + 3]) for i in range(0, len(numbers), 3)])
            text = f'{text[:-1]},"vertices":[[{rows}]]}}'
        texts.append(text)
    return f'{json.dumps(message, separators=SEPARATORS)[:-1]},"hands":[{",".join(texts)}]}}'


SEPARATORS = (",", ":")


def _message(record: dict) -> dict:
    hands = [{name: hand[name] for name in HAND_FIELDS if name in hand} for hand in record["hands"]]
    return {"schema": SCHEMA, **{name: record[name] for name in FRAME_FIELDS}, "hands": hands}


def _mesh(vertices: dict | None, hand: dict) -> np.ndarray | None:
    """The hand's vertices from ``vertices`` by its track, rounded to 1e-6 m; None without."""
    mesh = None if vertices is None else vertices.get(hand.get("track"))
    if mesh is None:
        return None
    mesh = np.asarray(mesh, np.float64)
    if mesh.ndim != 2 or mesh.shape[1] != 3 or len(mesh) == 0:
        raise ValueError(f"track {hand.get('track')}: vertices of shape {mesh.shape}, not (N, 3)")
    return np.round(mesh, 6)


@dataclass
class StreamCounts:
    clients: int = 0  # connected now
    served: int = 0  # clients accepted, in all
    frames: int = 0  # frames published
    sent: int = 0  # messages sent, all clients together
    dropped: int = 0  # clients closed for falling ``backlog`` frames behind
    refused: int = 0  # clients refused: ``max_clients`` already connected
    bad_openings: int = 0  # clients closed for a bad opening message

    def line(self) -> str:
        """One line for the end of a run."""
        return (
            f"stream: {counted(self.served, 'client')} served, {counted(self.frames, 'frame')} published, "
            f"{self.dropped} dropped for falling behind, {self.refused} refused (full), "
            f"{counted(self.bad_openings, 'bad opening message')}"
        )


class _Client:
    def __init__(self, websocket):
        self.websocket = websocket
        self.queue: collections.deque = collections.deque()
        self.ready = asyncio.Event()
        self.vertices = False
        self.sender: asyncio.Task | None = None
        self.gone = False


class HandStream:
    """``with HandStream(host, port) as stream: ... stream.publish(record, vertices)``: the WebSocket
    server of ``handssca webcam --stream``. ``start`` binds and returns once it listens (port 0: a
    free port; ``address`` is then the real one); ``lines`` are what to print; ``publish`` hands a
    frame to every client without waiting for any; ``close`` closes the clients (1001) and the
    server, and may be called more than once. Thread-safe: publish and close from any thread."""

    def __init__(self, host: str = LOOPBACK, port: int = 8765, *, max_clients: int = 8, backlog: int = 16):
        if int(max_clients) < 1 or int(backlog) < 1:
            raise OptionError(f"the stream: max_clients ({max_clients}) and backlog ({backlog}) must be at least 1")
        self.host, self.port = host, int(port)
        self.max_clients, self.backlog = int(max_clients), int(backlog)
        self._counts = StreamCounts()
        self._clients: set[_Client] = set()
        self._vertex_clients = 0  # clients that asked for vertices (read from the publishing thread)
        self._tasks: set[asyncio.Task] = set()
        self._closing: set = set()  # connections being closed (cut off at shutdown)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self._lock = threading.Lock()
        self._closed = False

    # -- the caller's side -------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) it listens on: the port bound once started (port 0 gives a free one)."""
        return self.host, self.port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}"

    @property
    def lines(self) -> list[str]:
        """What to print once it listens: where, the schema, and the no-authentication note when it
        listens beyond loopback."""
        note = no_authentication_note(self.host, "the hand stream")
        return [f"streaming hands on {self.url} (schema {SCHEMA})"] + ([note] if note else [])

    @property
    def counts(self) -> StreamCounts:
        """What has happened so far (a copy)."""
        return StreamCounts(**{**asdict(self._counts), "clients": len(self._clients)})

    @property
    def wants_vertices(self) -> bool:
        """Whether a client asked for vertices (else ``publish`` need not be given them)."""
        return self._vertex_clients > 0

    def start(self) -> HandStream:
        """Binds and returns once listening. A port in use, or a host it cannot listen on, is an
        OptionError naming ``--stream HOST:PORT`` and the reason."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the hand stream is closed: make another")
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name="handssca-stream", daemon=True)
            self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT_S):
            raise RunError(f"--stream {self.url[5:]}: the stream's server did not start in {STARTUP_TIMEOUT_S:g} s")
        if self._failure is not None:
            self._thread.join()
            self._closed = True
            if isinstance(self._failure, OSError):
                raise OptionError(
                    one_line(f"--stream {self.url[5:]}: cannot listen there: {listen_reason(self._failure)}")
                )
            raise self._failure
        return self

    def publish(self, record: dict, vertices: dict | None = None) -> None:
        """Sends the frame ``record`` (the webcam's) to every client, with the hands' ``vertices``
        ({track id: (778, 3) camera-space array}) to those that asked for them. Builds the message
        (``stream_text``, once per variant) and hands it to the server's loop: it never waits for a
        client. After ``close``, does nothing."""
        if self._closed:
            return
        if self._loop is None:
            raise RuntimeError("HandStream.publish before start")
        plain = full = None  # nobody to send it to: the frame is only counted
        if self._clients:
            plain = stream_text(record)
            full = stream_text(record, vertices) if vertices and self._vertex_clients > 0 else None
        try:
            self._loop.call_soon_threadsafe(self._deliver, plain, full)
        except RuntimeError:  # the loop closed meanwhile
            pass

    def close(self) -> None:
        """Closes every client (1001, going away) and the server, and waits for the thread.
        Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._thread is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:  # the loop already ended
            pass
        self._thread.join(CLOSE_TIMEOUT_S + 5.0)

    def __enter__(self) -> HandStream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the server's loop (its own thread) --------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
        except BaseException as exc:  # anything before it listens is start's to raise
            if not self._ready.is_set():
                self._failure = exc
        finally:
            self._ready.set()
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        server = await serve(
            self._serve_client,
            self.host,
            self.port,
            process_request=self._admit,
            compression=None,  # each frame goes out as serialised, not compressed once per client
            max_size=OPENING_MAX_BYTES,
            close_timeout=CLOSE_TIMEOUT_S,
            logger=log,
        )
        self.port = int(next(iter(server.sockets)).getsockname()[1])
        self._loop = loop
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await asyncio.gather(
                *(self._close(client, GOING_AWAY, "the stream closed") for client in list(self._clients))
            )
            for websocket in list(self._closing):  # dropped ones still closing: no more waiting
                websocket.transport.abort()
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S + 1.0)
            except asyncio.TimeoutError:
                pass

    def _admit(self, connection, request):
        """Refuses an opening handshake beyond ``max_clients`` (HTTP 503, saying why); sizes the
        send buffer of one it takes."""
        if len(self._clients) >= self.max_clients:
            self._counts.refused += 1
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, self._full_reason() + "\n")
        sock = connection.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
            except OSError:  # not settable here: the kernel's own sizing
                pass
        return None

    def _full_reason(self) -> str:
        return f"the hand stream is full: {counted(self.max_clients, 'client')} at most; try again later"

    async def _serve_client(self, websocket) -> None:
        from websockets.exceptions import ConnectionClosed

        if len(self._clients) >= self.max_clients:  # handshakes that crossed
            self._counts.refused += 1
            await self._close(_Client(websocket), TRY_AGAIN_LATER, self._full_reason())
            return
        client = _Client(websocket)
        self._clients.add(client)
        self._counts.served += 1
        client.sender = asyncio.create_task(self._send(client))
        try:
            problem = None
            try:
                problem = self._opening(client, await websocket.recv())
                if problem is None:
                    await websocket.recv()
                    problem = "send one opening message only"
            except ConnectionClosed:
                pass
            if problem is not None and not client.gone:
                self._counts.bad_openings += 1
                await self._close(client, POLICY_VIOLATION, problem)
            await websocket.wait_closed()
        finally:
            self._forget(client)

    def _opening(self, client: _Client, message) -> str | None:
        """Applies a client's opening message; the reason to close it if the message is bad."""
        example = 'send a JSON object such as {"vertices": true}'
        if not isinstance(message, str):
            return f"opening message: binary; {example}"
        try:
            options = json.loads(message)
        except ValueError:
            return f"opening message: not JSON; {example}"
        if not isinstance(options, dict):
            return f"opening message: not a JSON object; {example}"
        for key, value in options.items():
            if key not in OPENING_KEYS:
                return f"opening message: unknown key {key[:40]!r} (known: {', '.join(OPENING_KEYS)})"
            if type(value) is not OPENING_KEYS[key]:
                return f"opening message: {key!r} must be true or false"
        if options.get("vertices") and not client.vertices:
            client.vertices = True
            self._vertex_clients += 1
        return None

    async def _send(self, client: _Client) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                while not client.queue:
                    client.ready.clear()
                    await client.ready.wait()
                await client.websocket.send(client.queue.popleft())
                self._counts.sent += 1
        except ConnectionClosed:  # the client went away: the handler forgets it
            pass

    def _deliver(self, plain: str | None, full: str | None) -> None:
        """One frame to every client's queue; a client whose queue is full is dropped (forgotten
        at once: counted once, whatever is queued behind this frame). ``plain`` None: there was no
        client when it was published, and the frame is only counted."""
        self._counts.frames += 1
        if plain is None:
            return
        for client in list(self._clients):
            if len(client.queue) >= self.backlog:
                self._counts.dropped += 1
                self._forget(client)
                self._spawn(self._close(client, POLICY_VIOLATION, f"fell {self.backlog} frames behind; reconnect"))
                continue
            client.queue.append(full if client.vertices and full is not None else plain)
            client.ready.set()

    def _forget(self, client: _Client) -> None:
        if client.gone:
            return
        client.gone = True
        self._clients.discard(client)
        client.queue.clear()
        if client.vertices:
            self._vertex_clients -= 1
        if client.sender is not None:
            client.sender.cancel()

    async def _close(self, client: _Client, code: int, why: str) -> None:
        """Closes a client with ``code`` and ``why``; one that does not complete the closing
        handshake in CLOSE_TIMEOUT_S (it stopped reading) is cut off."""
        self._forget(client)
        websocket = client.websocket
        self._closing.add(websocket)
        try:
            await asyncio.wait_for(websocket.close(code, why.encode()[:123].decode(errors="ignore")), CLOSE_TIMEOUT_S)
        except Exception:  # timed out, or the connection failed on the way
            websocket.transport.abort()
        finally:
            self._closing.discard(websocket)

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
