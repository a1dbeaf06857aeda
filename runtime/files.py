"""Writing files so that a crash or a full disk never leaves a half-written result behind."""

from __future__ import annotations

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
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file 0600; a result should have the mode any new file gets (0644 usually).
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a read-only or foreign folder: say which file, leave nothing
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write it ({exc.strerror or exc})") from exc
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
