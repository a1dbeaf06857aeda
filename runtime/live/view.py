"""``handssca webcam --view [HOST:]PORT``: the tracked hands in 3D in the browser, as the camera runs.

Served by viser (a web 3D viewer driven from Python: three.js in the page, a WebSocket to the
server), in the webcam's own frame: camera space, metres, OpenCV axes (x right, y down, z
forward), with the camera at the origin. The page shows each tracked hand's mesh in its side's
colour and its skeleton, the camera's frustum holding the current frame, and the HUD figures;
the user orbits, pans and zooms with the mouse.

The camera loop only hands a frame over (``LiveView.show``: a one-slot mailbox, the newest frame
replacing one not yet taken) and a thread of the view's own puts it into the scene; viser then
sends each browser the newest state of every node. A slow browser or a busy view costs the loop
nothing: frames are dropped for the view, never queued, and counted.
"""

from __future__ import annotations

import contextlib
import io
import math
import threading

import numpy as np

from handssca.errors import MissingBackend, one_line
from handssca.runtime.live import LOOPBACK, check_listen, no_authentication_note
from handssca.runtime.outputs.hands import hand_faces
from handssca.runtime.overlay import BONES, FINGER_COLOURS

# Each side's colour (RGB), far from skin tones so that a hand's mesh stands out from the frame.
SIDE_COLOURS = {"right": (40, 110, 255), "left": (40, 200, 90)}
FRUSTUM_DEPTH_M = 0.03  # how far in front of the camera the frustum (and the frame in it) is drawn
IMAGE_WIDTH = 480  # the frame in the frustum is sent at most this wide (JPEG)
# Where the page looks from at first (camera space): above and behind the camera, at the hands.
EYE, TARGET = (0.0, -0.3, -0.3), (0.0, 0.0, 0.45)
FIELD_OF_VIEW_DEG = 50.0
MESH_OPACITY = 0.7  # the skeleton shows through the mesh


class LiveView:
    """``view = LiveView(host, port, faces).start()``; ``view.show(...)`` once a frame from the
    camera loop; ``view.close()``. ``faces``: the hand model's (F, 3) triangles (a right hand's)."""

    def __init__(self, host: str = LOOPBACK, port: int = 8080, faces: np.ndarray | None = None):
        self.host, self.port, self.faces = host, port, faces
        self.server = None
        self.bound_port = port  # the port it listens on, once started
        self.shown = self.dropped = 0  # frames put into the scene; frames replaced before the view took them
        self.failure: str | None = None  # the first error drawing a frame (the view carries on)
        self._mailbox = None
        self._ready = threading.Condition()
        self._closed = False
        self._thread = None
        self._hands: dict[int, tuple] = {}  # track id -> (side, mesh handle, skeleton handle)
        self._frustum = self._hud = None
        self._frustum_shape = None  # (vertical fov, aspect) the frustum was made with

    def start(self) -> LiveView:
        try:
            import viser
        except ImportError as exc:
            raise MissingBackend("--view needs the [view] extra: pip install 'handssca[view]'") from exc
        # viser tries the next port while binding fails and, where none binds (an address not of
        # this machine), waits for ever: the address is tried here first, as --stream's is.
        check_listen(self.host, self.port, "--view")
        # The command prints its own line (``lines``), so viser's banner is kept off stdout; should
        # the port be taken in the meantime, viser takes the next one and the line says which.
        with contextlib.redirect_stdout(io.StringIO()):
            self.server = viser.ViserServer(host=self.host, port=self.port, verbose=False)
        self.bound_port = self.server.get_port()
        scene = self.server.scene
        scene.set_up_direction("-y")  # camera space: y points down
        camera = self.server.initial_camera
        camera.position, camera.look_at, camera.up = EYE, TARGET, (0.0, -1.0, 0.0)
        camera.fov = math.radians(FIELD_OF_VIEW_DEG)
        self._hud = self.server.gui.add_markdown("waiting for the first frame")
        self._thread = threading.Thread(target=self._loop, name="handssca-view", daemon=True)
        self._thread.start()
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.bound_port

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @property
    def lines(self) -> list[str]:
        """What the command prints once the view listens."""
        host, port = self.address
        lines = [f"live view on {self.url} (open it in a browser)"]
        if port != self.port and self.port:
            lines[0] += f"; port {self.port} was taken"
        note = no_authentication_note(host, "the live view")
        return lines + ([note] if note else [])

    def show(self, frame: np.ndarray, K: np.ndarray, pairs: list, hud: list[str]) -> None:
        """Hands the view this frame (BGR), its intrinsics, its [(track, hand)] and HUD lines;
        returns at once. A frame the view has not taken yet is replaced (and counted dropped)."""
        item = (frame, np.asarray(K, np.float64), [(t.id, h) for t, h in pairs], list(hud))
        with self._ready:
            if self._mailbox is not None:
                self.dropped += 1
            self._mailbox = item
            self._ready.notify()

    def _loop(self) -> None:
        while True:
            with self._ready:
                while self._mailbox is None and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                item, self._mailbox = self._mailbox, None
            try:
                self._draw(*item)
            except Exception as exc:  # noqa: BLE001 (a frame the view could not draw must not end the loop)
                self.failure = self.failure or one_line(f"{type(exc).__name__}: {exc}")
                continue
            self.shown += 1

    def _draw(self, frame: np.ndarray, K: np.ndarray, hands: list, hud: list[str]) -> None:
        import cv2

        height, width = frame.shape[:2]
        small = frame if width <= IMAGE_WIDTH else cv2.resize(frame, (IMAGE_WIDTH, round(height * IMAGE_WIDTH / width)))
        scene = self.server.scene
        with self.server.atomic():
            fov = 2 * math.atan2(height / 2, K[1, 1])  # vertical, as three.js counts it
            if self._frustum is not None and self._frustum_shape == (fov, width / height):
                self._frustum.image = small[:, :, ::-1]  # the same camera: only its frame changes
            else:
                # The frustum's principal point is the image centre: an off-centre cx, cy is not drawn.
                self._frustum = scene.add_camera_frustum(
                    "/camera", fov=fov, aspect=width / height, scale=FRUSTUM_DEPTH_M, image=small[:, :, ::-1],
                    format="jpeg", jpeg_quality=70, color=(60, 60, 60), thickness=2.0, thickness_units="screen",
                )  # fmt: skip
                self._frustum_shape = (fov, width / height)
            seen = set()
            for track_id, hand in hands:
                if hand.translation is None:
                    continue
                seen.add(track_id)
                self._draw_hand(track_id, hand)
            for track_id in set(self._hands) - seen:
                for handle in self._hands.pop(track_id)[1:]:
                    handle.remove()
            self._hud.content = "  \n".join(hud)

    def _draw_hand(self, track_id: int, hand) -> None:
        scene = self.server.scene
        vertices = hand.vertices_camera.astype(np.float32)
        joints = hand.joints_camera.astype(np.float32)
        bones = joints[np.asarray(BONES)]  # (20, 2, 3)
        known = self._hands.get(track_id)
        if known is not None and known[0] == hand.side:
            known[1].vertices = vertices
            known[2].points = bones
            return
        if known is not None:  # the landmark model changed the track's side: new faces, new colour
            for handle in known[1:]:
                handle.remove()
        faces = hand_faces(self.faces, hand.side).astype(np.uint32)
        mesh = scene.add_mesh_simple(
            f"/hands/{track_id}/mesh", vertices, faces, color=SIDE_COLOURS.get(hand.side, (200, 200, 200)),
            opacity=MESH_OPACITY, side="front",
        )  # fmt: skip
        finger = [0 if b <= 4 else (b - 5) // 4 + 1 for _, b in BONES]
        colours = np.repeat(np.array([FINGER_COLOURS[f][::-1] for f in finger], np.uint8)[:, None], 2, axis=1)
        skeleton = scene.add_line_segments(
            f"/hands/{track_id}/skeleton", bones, colours, thickness=3.0, thickness_units="screen"
        )
        self._hands[track_id] = (hand.side, mesh, skeleton)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self.server is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # viser's "Server stopped"
                self.server.stop()
            self.server = None

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
