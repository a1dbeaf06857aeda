"""Writing files so that a crash or a full disk never leaves a half-written result behind."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import HandSSCAError


class OutputError(HandSSCAError, OSError):
    """A result that cannot be written (full disk, read-only folder, no permission); names the file."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomically(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``."""
    return write_together({Path(path): data})[0]


def write_together(files: dict[Path, bytes]) -> list[Path]:
    """Writes each file atomically, and all of them as one: every temporary file is complete
    before the first rename, so a full disk or a read-only folder replaces none of them. A model
    and its sidecar go this way: a sidecar describing another file is never left beside it."""
    temporary: dict[Path, str] = {}
    try:
        for path, data in files.items():
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temporary[path] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            # mkstemp makes the file 0600; a result gets the mode any new file gets (0644 usually).
            os.chmod(tmp, 0o666 & ~_UMASK)
        for path, tmp in temporary.items():
            current = path
            os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only or foreign folder: say which file, leave nothing
        for tmp in temporary.values():
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{current}: cannot write it ({exc.strerror or exc})") from exc
    except BaseException:
        for tmp in temporary.values():
            Path(tmp).unlink(missing_ok=True)
        raise
    return list(files)


def check_writable(path: str | Path) -> Path:
    """That ``path`` (a file to be written) can be written, found out before long work rather than
    after it: its folder is made if missing and a temporary file is created in it and removed.
    OutputError naming the path otherwise (read-only, full, not a folder, no permission)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write it ({exc.strerror or exc})") from exc
    return path


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(items) -> list[Path]:
    """The image files named by ``items`` (files, or folders whose images are taken in name order);
    a missing path is a one-line error."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            raise HandSSCAError(f"{path}: no such image or folder")
    return paths


def write_image(path: str | Path, image) -> Path:
    """Encodes ``image`` (H, W, 3 uint8 BGR) by the file's extension and writes it atomically."""
    import cv2

    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise HandSSCAError(f"{path}: OpenCV cannot encode an image with this extension")
    return write_atomically(path, encoded.tobytes())


class UnreadableImage(HandSSCAError, ValueError):
    """An image file that is missing, truncated or not decodable; the message names it and why.
    Loaders catch it to count the sample out and name it."""


def read_image(path: str | Path):
    """The image at ``path`` (H, W, 3 uint8, BGR); UnreadableImage saying why it is not usable.

    A truncated JPEG still decodes (libjpeg fills the rest with grey and only warns), so its end
    of image marker is checked; likewise a PNG's IEND chunk."""
    import cv2

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-1024:].rstrip(b"\x00\r\n "):
        raise UnreadableImage(f"{path}: truncated JPEG (no end-of-image marker)")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-16:]:
        raise UnreadableImage(f"{path}: truncated PNG (no IEND chunk)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if image is None:
        raise UnreadableImage(f"{path}: not a decodable image")
    return image


def playable(video: str | Path | None) -> bool:
    """Whether OpenCV opens ``video`` and reads its first frame: an mp4 whose writer could not
    finish (a full disk) has no index and fails here, though VideoWriter never said so."""
    import cv2

    if not video or not Path(video).is_file():
        return False
    capture = cv2.VideoCapture(str(video))
    try:
        return bool(capture.isOpened() and capture.read()[0])
    finally:
        capture.release()


def write_video(path: str | Path, frames, fps: float) -> Path:
    """``frames`` (BGR, one size) as an mp4 at ``path``, written under a temporary name and renamed
    only once it plays back: OpenCV's VideoWriter drops write errors, so this is how a full disk
    shows (OutputError naming the file, nothing left behind)."""
    import cv2

    path = Path(path)
    frames = list(frames)
    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
        for frame in frames:
            writer.write(frame)
        writer.release()
        if not playable(tmp):
            raise OSError("the video could not be finished (full disk?)")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write it ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
