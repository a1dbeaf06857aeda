"""Writing files so that a crash or a full disk never leaves a half-written result behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def write_atomically(path: str | Path, data: bytes) -> Path:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes the file 0600; a result should have the mode any new file gets (0644 usually).
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(items) -> list[Path]:
    """The image files named by ``items`` (files, or folders whose images are taken in name order);
    a missing path is a one-line error."""
    from ..errors import HandSSCAError

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

    from ..errors import HandSSCAError

    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise HandSSCAError(f"{path}: OpenCV cannot encode an image with this extension")
    return write_atomically(path, encoded.tobytes())
