"""Real-time hand meshes from a camera, a video, an image folder or a stream URL.

Live sources (a camera index, an rtsp/http URL) are read by a capture thread that keeps only
the newest frame, so inference never waits on the camera and slow inference drops frames
instead of queueing them; a stream that stops is reopened with back-off. Files and folders are
read frame by frame (nothing is dropped). Up to ``max_hands`` hands are found by the hand finder
and followed by their keypoints (``hand_tracking.HandTracker``: MediaPipe's scheme); without the
finder one hand is followed from the user's box or the centred square. Each hand's parameters
(rotations, shape, translation) are smoothed by its track's One Euro filter on the source's clock,
and its mesh, joints and keypoints derived from them (``FrameStep``). Each frame gets the shaded meshes, the
skeletons and a HUD with FPS, per-stage latency and each hand's side and scores; with
``headless`` the annotated video and one JSON line per frame (and optionally .obj meshes) are
written instead of a window. ``view`` shows the hands in 3D in a browser and ``stream`` sends
each frame's hands to other programs over a WebSocket (``runtime/live``), with or without the
window; neither ever holds up the loop.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from handssca.errors import ModelFileError, OptionError, OutputError, RunError, UnreadableImage, counted, one_line
from handssca.runtime.camera import Camera, intrinsics_json
from handssca.runtime.files import (
    IMAGE_SUFFIXES,
    RunFolder,
    check_frame_size,
    is_image_file,
    list_images,
    playable,
    quiet_opencv,
    read_image,
)
from handssca.runtime.hands.filters import HandFilter
from handssca.runtime.hands.finder import MAX_HANDS
from handssca.runtime.hands.tracking import VERIFY_EVERY, HandTracker
from handssca.runtime.live import parse_address
from handssca.runtime.mano.conventions import pose_offset
from handssca.runtime.outputs.animation import RECORD_FORMATS, write_recording
from handssca.runtime.outputs.hands import hand_obj, hand_record
from handssca.runtime.outputs.recording import Recording
from handssca.runtime.overlay import draw_hand, draw_hud, draw_label
from handssca.runtime.predictor import SIDES, HandMeshPredictor


def is_live(source) -> bool:
    return isinstance(source, int) or (isinstance(source, str) and "://" in source)


class FolderSource:
    """Images of a folder in name order, as frames; unreadable ones are skipped and counted."""

    fps = 10.0  # the folder's nominal rate: its frames' clock is index / fps

    def __init__(self, folder: Path):
        self.paths = list_images([folder])
        if not self.paths:
            raise RunError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
        self.index, self.unreadable = 0, 0
        self.skipped: list[str] = []  # "path: reason" of each image left out

    def read(self):
        while self.index < len(self.paths):
            path = self.paths[self.index]
            self.index += 1
            try:
                return True, read_image(path)
            except UnreadableImage as exc:
                self.unreadable += 1
                self.skipped.append(str(exc))
        return False, None

    def release(self):
        pass


def open_capture(source):
    """A cv2.VideoCapture (or FolderSource) for a camera index, file, folder or URL."""
    import cv2

    quiet_opencv()
    what = f"camera {source}" if isinstance(source, int) else str(source)
    if isinstance(source, str) and not is_live(source):
        path = Path(source)
        # An image file, whatever its name, is a source of one frame read as a folder's are:
        # OpenCV's capture would decode it without the checks of read_image (a decompression
        # bomb: a 144-megapixel .tif is 1.8 GB decoded).
        if path.is_dir() or is_image_file(path):
            return FolderSource(path)
        if not path.is_file():
            raise RunError(f"{path}: no such video file or image folder")
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise RunError(f"{what}: OpenCV cannot open it (no device, unsupported format or unreachable stream)")
    try:  # the frame size a video's header declares, limited as images are, before a frame is decoded
        check_frame_size(capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT), what)
    except UnreadableImage as exc:
        capture.release()
        raise RunError(str(exc)) from exc
    return capture


class LatestFrameGrabber:
    """Reads a live source in a thread; ``latest()`` returns the newest frame not yet returned."""

    def __init__(self, source, opener=open_capture, retries: int = 5, backoff_s: float = 0.5):
        self.source, self.opener, self.retries, self.backoff_s = source, opener, retries, backoff_s
        self.capture = opener(source)
        self.frame, self.frame_id, self.taken_id = None, 0, 0
        self.grabbed_at = 0.0  # when the newest frame was grabbed (time.monotonic)
        self.dropped = self.reconnects = 0
        self.failed: str | None = None
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="capture", daemon=True)
        self._thread.start()

    def _loop(self):
        failures = 0
        while not self._stop:
            ok, frame = self.capture.read()
            grabbed_at = time.monotonic()  # the frame's capture time: its clock, whenever it is processed
            if not ok:
                failures += 1
                if failures > self.retries:
                    with self._lock:
                        self.failed = f"{self.source}: the stream stopped and {self.retries} reconnects failed"
                        self._lock.notify_all()
                    return
                time.sleep(self.backoff_s * 2 ** (failures - 1))
                try:
                    self.capture.release()
                    self.capture = self.opener(self.source)
                    self.reconnects += 1
                except RunError:
                    pass
                continue
            failures = 0
            with self._lock:
                if self.frame_id > self.taken_id:
                    self.dropped += 1
                self.frame, self.frame_id, self.grabbed_at = frame, self.frame_id + 1, grabbed_at
                self._lock.notify_all()

    def latest(self, timeout: float = 5.0):
        """(the newest unseen frame, when it was grabbed (time.monotonic)), or (None, None) when the
        source has ended or failed."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.frame_id > self.taken_id or self.failed, timeout):
                return None, None
            if self.frame_id <= self.taken_id:
                return None, None
            self.taken_id = self.frame_id
            return self.frame, self.grabbed_at

    def close(self):
        self._stop = True
        self._thread.join(timeout=2.0)
        self.capture.release()


@dataclass
class WebcamOptions:
    box: tuple | None = None  # a first hand's box, tracked from the first frame
    side: str = "right"  # that box's side
    max_hands: int = MAX_HANDS
    find_hands: bool = True  # the hand finder (predictor.hand_finder()); off: one hand from box
    verify_every: int = VERIFY_EVERY  # frames between the landmark model's checks of a tracked hand (0: never)
    intrinsics: tuple | None = None  # fx, fy, cx, cy (pixels) of the camera
    calibration: Path | None = None  # or the calibration file OpenCV wrote (its distortion undone)
    record: tuple = ()  # animation files to write at the end: .glb (glTF 2.0) and/or .bvh
    smooth: bool = True
    headless: bool = False
    output: Path | None = None
    save_meshes: bool = False
    max_frames: int = 0
    duration_s: float = 0.0  # stop after this many seconds (0: no limit)
    show_mesh: bool = True
    show_skeleton: bool = True
    min_confidence: float = 0.0
    view: str | None = None  # [HOST:]PORT: the hands in 3D in a browser (runtime/live/view.py)
    stream: str | None = None  # [HOST:]PORT: each frame's hands as JSON over a WebSocket (runtime/live/stream.py)

    def __post_init__(self):
        self.camera = Camera.from_options(self.intrinsics, self.calibration)
        self.view_address = None if self.view is None else parse_address(self.view, "--view")
        self.stream_address = None if self.stream is None else parse_address(self.stream, "--stream")
        self.record = tuple(Path(path) for path in self.record or ())
        for path in self.record:
            if path.suffix.lower() not in RECORD_FORMATS:
                raise OptionError(f"--record {path}: the extension says the format: {', '.join(RECORD_FORMATS)}")
        # Refused here, in the option's own words: a negative duration would otherwise end the run
        # before its first frame and be reported as a source that gave none.
        duration, confidence = self.duration_s, self.min_confidence
        if duration is not None and not _finite_at_least(duration, 0):
            message = "must be 0 (no limit) or a positive number of seconds"
            raise OptionError(f"--duration {_number(duration)}: {message}")
        if confidence is not None and not (_finite_at_least(confidence, 0) and confidence <= 1):
            raise OptionError(f"--min-confidence {_number(confidence)}: must be a number from 0 to 1")
        if self.max_frames is not None and not _finite_at_least(self.max_frames, 0):
            raise OptionError(f"--max-frames {_number(self.max_frames)}: must be 0 (to the source's end) or more")


def _finite_at_least(value, minimum) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= minimum


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else repr(value)[:80]


@dataclass
class WebcamReport:
    frames: int = 0
    dropped: int = 0
    unreadable: int = 0
    reconnects: int = 0
    tracking_lost: int = 0  # tracks dropped, for every reason in tracking["dropped"]
    tracking: dict = field(default_factory=dict)  # hand_tracking.TrackingCounts
    stage_ms: dict = field(default_factory=dict)  # median per stage
    fps: float = 0.0
    video: str | None = None
    json_lines: str | None = None
    error: str | None = None
    interrupted: bool = False  # Ctrl-C or SIGTERM ended the run (outputs closed and summarised)
    skipped: list = field(default_factory=list)  # "path: reason" of each image a folder source left out
    resized: int = 0  # frames of another size than the first, letterboxed into the video
    summary: str | None = None  # where this report went as JSON (with -o)
    recorded: list = field(default_factory=list)  # the --record files and their writers' reports
    live: dict = field(default_factory=dict)  # the view's and the stream's counts (--view, --stream)

    def summary_lines(self) -> list[str]:
        """What happened, for the terminal: frames and speed, what was left out or changed, files."""
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        lines = [f"{self.frames} frames at {self.fps:.1f} FPS (median ms: {stages}); dropped {self.dropped}"]
        if self.tracking:
            by_hands = sorted(self.tracking["frames_by_hands"].items())
            counts = ", ".join(f"{counted(f, 'frame')} with {counted(n, 'hand')}" for n, f in by_hands)
            lines.append(
                f"hands: {self.tracking['found']} found, {self.tracking_lost} lost; {counts}; "
                f"finder ran on {self.tracking['finder_runs']} frames"
            )
        lines += [f"skipped {skipped}" for skipped in self.skipped]
        if self.resized:
            lines.append(f"{self.resized} frames had another size than the first: letterboxed into the video")
        if self.video or self.json_lines:
            lines.append(f"wrote {self.video or 'no video'}, {self.json_lines} and {self.summary or 'no summary'}")
        for written in self.recorded:
            files, tracks = written.get("files") or [written["path"]], written.get("tracks", [])
            lines.append(f"recorded {', '.join(map(str, files))} ({counted(len(tracks), 'track')})")
        if "view" in self.live:
            view = self.live["view"]
            lines.append(f"live view: {counted(view['shown'], 'frame')} shown, {view['dropped']} dropped for the view")
            if view.get("failure"):
                lines.append(f"live view: some frames could not be drawn; the first: {view['failure']}")
        if "stream" in self.live:
            from handssca.runtime.live.stream import StreamCounts

            lines.append(StreamCounts(**self.live["stream"]).line())
        if self.interrupted:
            lines.append("interrupted: the outputs are closed and complete up to the last frame")
        return lines

    def exit_status(self, source) -> int:
        """0 for a complete run, 130 when interrupted; a RunError when nothing useful came of it."""
        if self.interrupted:
            return 130
        if self.error:
            raise RunError(self.error)
        if self.frames == 0:
            first = f"; {self.skipped[0]}" if self.skipped else ""  # a lone image: why, on the error line
            raise RunError(f"{source}: no frame could be read ({self.unreadable} unreadable{first})")
        return 0


def run_webcam(
    predictor: HandMeshPredictor, source="0", options: WebcamOptions | None = None, opener=open_capture
) -> WebcamReport:
    """Runs until ``source`` (a camera index, video, image folder or URL) ends, ``max_frames``,
    or 'q' in the window; returns what happened. The source (``FrameSource``), one step per frame
    (``FrameStep``: tracking, the network, smoothing, drawing) and the headless sink
    (``HeadlessOutputs``: the video, the JSON lines, the summary) are apart; this is the loop."""
    options = options or WebcamOptions()
    source = int(source) if isinstance(source, str) and source.isdigit() else source
    if options.headless and not (options.output or options.view or options.stream):
        raise RunError("--headless needs -o/--output for the annotated video and JSON (or --view, --stream)")
    if not options.headless and not has_display():
        raise RunError(
            "no display here for the live window: run with --headless -o DIR (video and JSON) or --headless --view PORT"
        )
    report = WebcamReport()
    frames = FrameSource(source, opener)
    step = FrameStep(predictor, options)
    window = None if options.headless else Window(step)
    recording = Recording(predictor.mano, predictor.fingertip_ids, predictor.flat_hand_mean) if options.record else None
    outputs = stack = view = stream = None
    stop = threading.Event()
    restore = _stop_on_signals(stop)
    try:
        # The view and the stream listen first: an address they cannot take leaves the previous
        # run's files in -o alone, as a source that fails does.
        view, stream = open_live(options, step.faces)
        if options.output:  # once the source opened: a source that fails takes no earlier run's files
            stack = contextlib.ExitStack()  # a read-only folder, a file in the way, another run in it: one line
            folder = stack.enter_context(RunFolder(options.output))
            outputs = HeadlessOutputs(folder, frames.fps, step.faces, options.save_meshes)
        while not options.max_frames or report.frames < options.max_frames:
            if stop.is_set():
                report.interrupted = True
                break
            if options.duration_s and step.elapsed() >= options.duration_s:
                break
            start = time.perf_counter()
            frame, stamp = frames.read(report)
            if frame is None:
                break
            done = step(frame, report.frames, stamp, (time.perf_counter() - start) * 1e3)
            annotated, record, hands = done.annotated, done.record, done.pairs
            if view is not None:
                view.show(done.frame, done.K, hands, done.hud + [step.tracking_line()])
            if stream is not None:
                meshes = {track.id: hand.vertices_camera for track, hand in hands} if stream.wants_vertices else None
                stream.publish(record, meshes)
            if outputs is not None:
                try:
                    report.resized += outputs.add(annotated, record, hands)
                except OutputError as exc:
                    report.error = str(exc)
                    break
            report.frames += 1  # counted once its outputs are written: an interrupt keeps them in step
            if recording is not None:
                recording.add(stamp, [(track.id, hand) for track, hand in hands])
            if window is not None and not window.show(annotated):
                break
    except KeyboardInterrupt:  # off the main thread, Ctrl-C still arrives as an exception
        report.interrupted = True
    finally:
        try:
            frames.close(report)
            if outputs is not None:
                outputs.finish(report)
            if window is not None:
                window.close()
        finally:  # the outputs first: closing a stream's stuck client can take seconds
            try:
                close_live(view, stream, report)
            finally:
                restore()  # a second Ctrl-C meanwhile only asks again for the stop under way
        if stack is not None and sys.exc_info()[1] is not None:  # a failure on its way out: release the folder
            stack.close()
    with stack or contextlib.nullcontext():  # the folder is released once the summary is written
        step.summarise(report)
        if recording is not None:  # what was recorded is written, however the run ended
            write_records(recording, options.record, report)
        if outputs is not None:
            outputs.write_summary(report)
        return report


def open_live(options: WebcamOptions, faces):
    """The live view and the stream the options ask for, listening, their lines said."""
    from handssca.progress import say

    view = stream = None
    if options.view_address is not None:
        from handssca.runtime.live.view import LiveView

        view = LiveView(*options.view_address, faces=faces).start()
        for line in view.lines:
            say(line)
    if options.stream_address is not None:
        from handssca.runtime.live.stream import HandStream

        try:
            stream = HandStream(*options.stream_address).start()
        except BaseException:
            if view is not None:
                view.close()
            raise
        for line in stream.lines:
            say(line)
    return view, stream


def close_live(view, stream, report: WebcamReport) -> None:
    """Closes the view and the stream; their counts join ``report.live``."""
    if view is not None:
        view.close()
        report.live["view"] = {"url": view.url, "shown": view.shown, "dropped": view.dropped, "failure": view.failure}
    if stream is not None:
        stream.close()
        report.live["stream"] = asdict(stream.counts)


def write_records(recording: Recording, paths, report: WebcamReport) -> None:
    """The animation files of ``--record``; each writer's report joins ``report.recorded``, and
    a file that cannot be written joins ``report.error``."""
    for path in paths:
        try:
            written = write_recording(path, recording)
        except OutputError as exc:
            report.error = f"{report.error}; {exc}" if report.error else str(exc)
            continue
        report.recorded.append(json.loads(json.dumps({"path": str(path), **written}, default=str)))


class FrameSource:
    """The webcam's frames, each with its time on the source's clock: a live source through
    ``LatestFrameGrabber`` (the newest frame, never a queue), a file or folder frame by frame;
    ``read`` says why it ended in the report.

    The clock (seconds from the first frame) is what the filters run on, so a recording is the
    same however fast the machine processes it:
    - a video file: the container's timestamp of each frame, where it gives one that moves
      forward, else the previous frame's time plus 1 / the container's frame rate;
    - an image folder: frame index / its nominal rate, FolderSource.fps (10 frames a second);
    - a live source: the time each frame was grabbed, not the time it is processed."""

    def __init__(self, source, opener=open_capture):
        import cv2

        self.source, self.live = source, is_live(source)
        self.grabber = LatestFrameGrabber(source, opener) if self.live else None
        self.capture = None if self.live else opener(source)
        fps = 30.0 if self.live else getattr(self.capture, "fps", 0) or self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 30.0
        self.first = self.last = None  # the first frame's clock reading, the latest frame's time

    def read(self, report: WebcamReport) -> tuple[np.ndarray | None, float | None]:
        """(the next frame, its time in seconds on the source's clock), or (None, None) with
        ``report.error`` saying why the source ended early (None for a file read to its end)."""
        if self.live:
            frame, grabbed_at = self.grabber.latest()
            if frame is None:
                report.error = self.grabber.failed
                return None, None
            self.first = grabbed_at if self.first is None else self.first
            return frame, grabbed_at - self.first
        ok, frame = self.capture.read()
        if not ok:
            report.error = _ended_early(self.capture, self.source, report.frames)
            return None, None
        stamp = self._container_time()
        if stamp is None or (self.last is not None and stamp <= self.last):
            stamp = 0.0 if self.last is None else self.last + 1.0 / self.fps
        self.last = stamp
        return frame, stamp

    def _container_time(self) -> float | None:
        """The frame just read's timestamp in the video's container, seconds (None for a folder,
        or where the container gives none)."""
        import cv2

        if isinstance(self.capture, FolderSource) or not hasattr(self.capture, "get"):
            return None
        stamp = self.capture.get(cv2.CAP_PROP_POS_MSEC)
        return stamp / 1e3 if isinstance(stamp, (int, float)) and math.isfinite(stamp) and stamp >= 0 else None

    def close(self, report: WebcamReport) -> None:
        if self.grabber is not None:
            self.grabber.close()
            report.dropped, report.reconnects = self.grabber.dropped, self.grabber.reconnects
        if self.capture is not None:
            report.unreadable = getattr(self.capture, "unreadable", 0)
            report.skipped = [one_line(skipped) for skipped in getattr(self.capture, "skipped", [])]
            self.capture.release()


@dataclass
class StepResult:
    """One frame's work: the frame as the network saw it (undistorted), its intrinsics, the
    annotated copy, its JSON record, [(track, hand)] and the HUD's lines."""

    frame: np.ndarray
    K: np.ndarray
    annotated: np.ndarray
    record: dict
    pairs: list
    hud: list


class FrameStep:
    """One frame's work: the tracker's hands, the network on them, each track's filter, the
    meshes, skeletons and HUD drawn; returns a ``StepResult`` and keeps each stage's times for
    the summary.

    Each hand is settled once: its parameters (the joint rotations, the shape and the camera
    translation), smoothed by its track's HandFilter on the source's clock unless smoothing is
    off, and everything reported of it derived from them (``hand_from_parameters``): the mesh,
    the joints, and the keypoints as their projection. The tracker follows the network's own
    keypoints, before smoothing."""

    STAGES = ("capture", "finder", "crop", "engine", "mano", "smooth", "render")

    def __init__(self, predictor: HandMeshPredictor, options: WebcamOptions):
        self.predictor, self.options = predictor, options
        self.tracker = HandTracker(
            predictor.hand_finder() if options.find_hands else None,
            max_hands=options.max_hands if options.find_hands else 1,
            min_confidence=options.min_confidence,
            verify_every=options.verify_every,
            start_box=options.box,
            start_side=options.side,
        )
        if predictor.mano is None:
            raise ModelFileError("the webcam derives each hand from its parameters with the hand model: give --mano")
        self.faces = predictor.mano.faces
        self.pose_offset = self.pose_offsets(predictor)
        self.show_mesh, self.show_skeleton = options.show_mesh, options.show_skeleton
        self.stages: dict[str, list[float]] = {k: [] for k in self.STAGES}
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def __call__(self, frame: np.ndarray, index: int, stamp: float, capture_ms: float):
        """``frame`` number ``index``, at ``stamp`` seconds on the source's clock."""
        frame = self.options.camera.undistort(frame)
        K, guessed = self.options.camera.intrinsics(frame.shape[1], frame.shape[0])
        tracks = self.tracker.prepare(frame, index)
        sides = [t.side for t in tracks]
        hands = self.predictor.predict(frame, [t.box for t in tracks], colour="bgr", sides=sides, K=K)
        self.tracker.update(tracks, hands, frame.shape)
        settling = time.perf_counter()
        pairs = [(track, self.settle(track, hand, stamp, K)) for track, hand in zip(tracks, hands, strict=True)]
        settle_ms = (time.perf_counter() - settling) * 1e3
        drawing = time.perf_counter()
        annotated = frame.copy()
        for track, hand in pairs:
            draw_hand(annotated, hand, self.faces, K, mesh=self.show_mesh, skeleton=self.show_skeleton, opacity=0.65)
            draw_label(annotated, hand.box, f"#{track.id} {track.side}")
        timings = self.predictor.timings if hands else {}
        frame_ms = {
            "capture": capture_ms,
            "finder": self.tracker.finder_ms,
            **{name: timings.get(f"{name}_ms", 0.0) for name in ("crop", "engine", "mano")},
            "smooth": settle_ms,
            "render": (time.perf_counter() - drawing) * 1e3,
        }
        for name, value in frame_ms.items():
            self.stages[name].append(value)
        fps = (index + 1) / max(self.elapsed(), 1e-9)
        hud = [f"{fps:.1f} FPS  hands {len(hands)}/{self.tracker.max_hands}"]
        hud.append("  ".join(f"{k} {v:.1f}" for k, v in frame_ms.items()) + " ms")
        hud += [hand_line(track, hand) for track, hand in pairs]
        draw_hud(annotated, hud)
        record = {
            "frame": index,
            "time_s": round(stamp, 6),  # the source's clock
            "intrinsics": intrinsics_json(K, guessed),
            "hands": [hand_record(hand, **track.to_json()) for track, hand in pairs],
            "stage_ms": {k: round(v, 2) for k, v in frame_ms.items()},
        }
        return StepResult(frame, K, annotated, record, pairs, hud)

    def tracking_line(self) -> str:
        """Hands found and lost so far, for the live view's HUD."""
        counts = self.tracker.counts
        return f"hands found {counts.found}, lost {sum(counts.dropped.values())}"

    @staticmethod
    def pose_offsets(predictor: HandMeshPredictor) -> dict[str, np.ndarray]:
        """What a hand's pose (48,) is relative to, per side: the hand model's mean finger pose
        (mirrored for a left hand) unless the export made the pose absolute. The filters smooth
        the rotations MANO applies: the pose plus this."""
        return {side: pose_offset(predictor.mano, side, flat_hand_mean=predictor.flat_hand_mean) for side in SIDES}

    def settle(self, track, hand, stamp: float, K: np.ndarray):
        """``hand`` as reported: its parameters through the track's filter (made when the track
        starts or changes side) unless smoothing is off, and the rest derived from them."""
        pose, shape, translation = hand.pose, hand.shape, hand.translation
        if self.options.smooth:
            if track.smoother is None:
                track.smoother = HandFilter(self.pose_offset[hand.side])
            pose, shape, translation = track.smoother(pose, shape, translation, stamp)
        return self.predictor.hand_from_parameters(hand, pose, shape, translation, K)

    def summarise(self, report: WebcamReport) -> None:
        """The tracking counts, the speed and each stage's median into ``report``."""
        report.tracking = vars(self.tracker.counts)
        report.tracking_lost = sum(self.tracker.counts.dropped.values())
        report.fps = report.frames / max(self.elapsed(), 1e-9)
        report.stage_ms = {k: float(np.median(v)) if v else 0.0 for k, v in self.stages.items()}


class Window:
    """The live window and its keys: q quits, space pauses, m and s turn the mesh and skeleton
    on and off (``step`` draws them). Without a display it carries on headless."""

    def __init__(self, step: FrameStep):
        self.step, self.paused, self.open = step, False, True

    def show(self, annotated: np.ndarray) -> bool:
        """Shows a frame; False when the user quits."""
        import cv2

        if not self.open:
            return True
        try:
            cv2.imshow("handssca", annotated)
            key = cv2.waitKey(0 if self.paused else 1) & 0xFF
        except cv2.error:  # no display: carry on headless
            self.open = False
            return True
        self.paused = (not self.paused) if key == ord(" ") else self.paused
        self.step.show_mesh = (not self.step.show_mesh) if key == ord("m") else self.step.show_mesh
        self.step.show_skeleton = (not self.step.show_skeleton) if key == ord("s") else self.step.show_skeleton
        return key != ord("q")

    def close(self) -> None:
        try:
            import cv2

            cv2.destroyAllWindows()
        except Exception:
            pass


class HeadlessOutputs:
    """What a run with ``-o`` leaves in its folder (a RunFolder): ``annotated.mp4``, ``frames.jsonl``
    (one record a frame), ``.obj`` meshes when asked, and ``summary.json``.

    The video and the JSON lines are written under hidden temporary names and moved into place by
    ``finish``, so a run killed with -9 leaves no unplayable video or unfinished lines under the
    final names (and the RunFolder has removed the previous run's summary). A frame counts once
    its meshes and its line are written, in that order; ``finish`` cuts the lines back to the
    frames counted, so the summary and the lines always agree, full disk or not."""

    VIDEO, LINES, SUMMARY = "annotated.mp4", "frames.jsonl", "summary.json"
    PARTIAL_VIDEO, PARTIAL_LINES = ".annotated.partial.mp4", ".frames.partial.jsonl"

    def __init__(self, folder: RunFolder, fps: float, faces, save_meshes: bool):
        self.folder, self.fps, self.faces, self.save_meshes = folder, fps, faces, save_meshes
        for name in (self.VIDEO, self.LINES, self.SUMMARY):
            folder.path(name)  # journalled now: a later run clears them even if this one is killed
        self._video, self._lines = folder.path(self.PARTIAL_VIDEO), folder.path(self.PARTIAL_LINES)
        try:
            self.lines = open(self._lines, "w")
        except OSError as exc:
            raise OutputError(f"{folder.folder / self.LINES}: cannot write it ({exc.strerror or exc})") from exc
        self.writer = self.size = None
        self.video = self.json_lines = None

    def add(self, annotated: np.ndarray, record: dict, hands: list) -> int:
        """One frame's outputs; returns 1 when the frame was letterboxed to the video's size."""
        if self.writer is None:
            self._open_video(annotated.shape[1], annotated.shape[0])
        written = []
        try:
            for track, hand in hands if self.save_meshes else ():
                name = f"mesh_{record['frame']:06d}_{track.id}.obj"
                written.append(self.folder.write(name, hand_obj(hand, self.faces)))
            self.lines.write(json.dumps(record) + "\n")
            self.lines.flush()  # a full disk shows at this frame, not at close
        except (OSError, OutputError) as exc:
            for path in written:  # a frame not counted leaves no mesh
                path.unlink(missing_ok=True)
            if isinstance(exc, OutputError):
                raise
            raise OutputError(f"{self.folder.folder / self.LINES}: cannot write it ({exc.strerror or exc})") from exc
        resized = annotated.shape[:2] != self.size[::-1]
        self.writer.write(letterbox(annotated, self.size) if resized else annotated)
        return int(resized)

    def _open_video(self, width: int, height: int) -> None:
        import cv2

        quiet_opencv()
        self.size = (width, height)  # the first frame's; later ones are letterboxed to it
        self.writer = cv2.VideoWriter(str(self._video), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        if not self.writer.isOpened():
            raise OutputError(
                f"{self.folder.folder / self.VIDEO}: OpenCV's mp4v encoder cannot take {width} x {height} frames "
                "(MPEG-4 allows at most 8191 pixels a side)"
            )

    def finish(self, report: WebcamReport) -> None:
        """Closes the outputs and moves them into place, the lines cut to the frames counted;
        what went wrong joins ``report.error``."""
        frames = report.frames
        problem = None
        try:
            self.lines.close()
        except OSError:
            pass  # the error is already in the report; the lines are cut back below
        _keep_lines(self._lines, frames)
        os.replace(self._lines, self.folder.folder / self.LINES)
        self.json_lines = str(self.folder.folder / self.LINES)
        if self.writer is not None:
            self.writer.release()
            final = self.folder.folder / self.VIDEO
            if playable(self._video):
                os.replace(self._video, final)
                self.video = str(final)
            else:  # VideoWriter drops write errors: a full disk or a failing encoder shows here
                self._video.unlink(missing_ok=True)  # no unplayable file left behind
                free = shutil.disk_usage(self.folder.folder).free
                why = "the disk is full" if free < (16 << 20) else "the encoder did not finish it"
                problem = f"{final} could not be written ({why}) and was removed"
        report.video, report.json_lines = self.video, self.json_lines
        if problem:
            report.error = f"{report.error}; {problem}" if report.error else problem

    def write_summary(self, report: WebcamReport) -> None:
        """``summary.json``, written last: whatever the run left, it describes."""
        report.summary = str(self.folder.folder / self.SUMMARY)
        self.folder.write(self.SUMMARY, json.dumps(vars(report), indent=2).encode())


def hand_line(track, hand) -> str:
    """A hand's HUD line: its track, side and scores."""
    scores = f"conf {hand.confidence:.2f}"
    if track.side_score is not None:
        scores += f"  side {track.side_score:.2f}  presence {track.presence:.2f}"
    return f"#{track.id} {track.side}  {scores}"


def _ended_early(capture, source, frames_read: int) -> str | None:
    """Why a video file ended before the frame count its container declares, or None.

    OpenCV reads a video cut short (a copy stopped part way, a damaged file) up to the cut and
    then reports a plain end of stream; the container's header still holds the whole count.
    A shortfall of one frame is tolerated: some containers estimate the count from the duration.
    """
    import cv2

    if isinstance(capture, FolderSource) or not hasattr(capture, "get"):
        return None
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if declared - frames_read <= 1:
        return None
    return (
        f"{source}: ended after {frames_read} of the {declared} frames its header declares "
        f"(truncated or damaged); the outputs cover those {frames_read}"
    )


def _keep_lines(path: Path, count: int) -> None:
    """Cuts a JSON-lines file back to its first ``count`` complete lines (a write that failed
    halfway, or a line whose frame was not counted)."""
    data = path.read_bytes()
    end = 0
    for _ in range(count):
        end = data.index(b"\n", end) + 1
    if end != len(data):
        os.truncate(path, end)


def has_display() -> bool:
    """Whether a window can open (X11 or Wayland on Linux; other systems are assumed to have one)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` scaled to fit ``size`` (width, height) with its aspect kept, centred on black."""
    import cv2

    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    w, h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    canvas = np.zeros((height, width, 3), np.uint8)
    x, y = (width - w) // 2, (height - h) // 2
    canvas[y : y + h, x : x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return canvas


def _stop_on_signals(stop):
    """Ctrl-C (SIGINT) and SIGTERM set ``stop``, which the loop checks between frames, so a run
    ends with every frame's outputs whole; returns the function that puts the previous handlers
    back. Only the main thread can install handlers (elsewhere Ctrl-C stays an exception)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore
