"""A live camera's pace over recorded frames, for the live view's and stream's tests and pictures:
``run_webcam(predictor, "camera", options, lambda _: PacedCamera(frames, 15, stop))``."""

from __future__ import annotations

import threading
import time


class PacedCamera:
    """``frames``, looped, one every ``1 / fps`` seconds until ``stop`` is set (then the source ends)."""

    def __init__(self, frames, fps: float, stop: threading.Event):
        self.frames, self.fps, self.stop, self.index = frames, fps, stop, 0
        self.next_at = time.monotonic()

    def read(self):
        if self.stop.is_set():
            return False, None
        time.sleep(max(0.0, self.next_at - time.monotonic()))
        self.next_at += 1 / self.fps
        frame = self.frames[self.index % len(self.frames)]
        self.index += 1
        return True, frame.copy()

    def release(self):
        pass
