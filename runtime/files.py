"""Writing files so that a crash or a full disk never leaves a half-written result behind."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
import struct
import tempfile
from pathlib import Path

import numpy as np

from handssca.errors import HandSSCAError, OutputError, UnreadableImage


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
    if path.is_dir():  # os.replace onto it would fail only after the work
        raise OutputError(f"{path}: is a folder; give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write it ({exc.strerror or exc})") from exc
    return path


# The file names a folder's images are listed by: those of the formats read_image reads (it
# decides by content, so a file given by name is read whatever its suffix).
class RunFolder:
    """An output folder that one run owns (``infer -o``, ``webcam -o``).

    ``with RunFolder(path) as out:`` locks the folder (a second run into it is refused in one
    line while this one writes), then removes what the previous run wrote there, so that a
    report never sits beside another run's files; ``out.path(name)`` is where a result goes,
    recorded first in the folder's journal (``.handssca-run``, one JSON string a line, appended
    and flushed), so that even after a kill -9 the next run knows what to clear. Only files the
    journal names are removed, never the user's own; the lock is the OS's (flock), released by
    the kernel when the process dies however it dies.
    """

    LOCK, JOURNAL = ".handssca-lock", ".handssca-run"

    def __init__(self, path: str | Path):
        self.folder = Path(path)
        self._lock = self._journal = None

    def __enter__(self) -> RunFolder:
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"{self.folder}: is a file; give a folder for the outputs")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.folder / self.LOCK, "a+")
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot write it ({exc.strerror or exc})") from exc
        if not _try_lock(self._lock):
            self._lock.seek(0)
            holder = self._lock.read().strip() or "?"
            self._lock.close()
            raise OutputError(
                f"{self.folder}: another run (pid {holder}) is writing this folder; wait for it or give another -o"
            )
        try:
            self._lock.seek(0)
            self._lock.truncate()
            self._lock.write(f"{os.getpid()}\n")
            self._lock.flush()
            self._clear_previous()
            self._journal = open(self.folder / self.JOURNAL, "w", encoding="utf-8")
        except OSError as exc:
            self.__exit__(None, None, None)
            raise OutputError(f"{self.folder}: cannot write it ({exc.strerror or exc})") from exc
        return self

    def __exit__(self, *exc_info):
        for f in (self._journal, self._lock):  # closing the lock file releases the lock
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._journal = self._lock = None

    def path(self, name: str) -> Path:
        """Where the result ``name`` (a file name in the folder) goes, recorded in the journal."""
        if Path(name).name != name or name in (self.LOCK, self.JOURNAL):
            raise ValueError(f"{name!r}: a run's results are plain file names in its folder")
        try:
            self._journal.write(json.dumps(name) + "\n")
            self._journal.flush()
        except OSError as exc:
            raise OutputError(f"{self.folder / self.JOURNAL}: cannot write it ({exc.strerror or exc})") from exc
        return self.folder / name

    def write(self, name: str, data: bytes) -> Path:
        """``data`` written atomically as ``name``."""
        return write_atomically(self.path(name), data)

    def _clear_previous(self) -> None:
        """Removes the files the previous run's journal names, and their temporary files."""
        journal = self.folder / self.JOURNAL
        if not journal.is_file():
            return
        for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                name = json.loads(line)
            except ValueError:  # a line cut by a crash
                continue
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                continue
            for path in [self.folder / name, *self.folder.glob(f".{glob.escape(name)}.*.tmp")]:
                if path.is_file() and not path.is_symlink():
                    path.unlink()


def _try_lock(f) -> bool:
    """An exclusive lock on the open file ``f`` without waiting: False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def list_images(items) -> list[Path]:
    """The image files named by ``items`` (files, or folders whose images are taken in name order);
    a missing path is a one-line error."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():  # a file, or something that is not one: read_image says which
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


# What read_image takes, checked before anything is decoded or read whole: a few hundred bytes can
# declare an image of gigabytes (a decompression bomb), and a folder entry can be a device or a fifo.
MAX_IMAGE_PIXELS = 64_000_000  # 64 megapixels (8000 x 8000): 192 MB decoded as BGR
MAX_IMAGE_BYTES = 256 << 20  # 256 MiB of file: a 64-megapixel uncompressed BMP with alpha fits
IMAGE_FORMATS = "PNG, JPEG, BMP, WebP, TIFF or GIF"  # the formats whose declared size image_size reads

FILE_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a fifo",
    stat.S_IFSOCK: "a socket",
}


def _regular_file_bytes(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file (after following links) of at most
    MAX_IMAGE_BYTES; UnreadableImage naming it otherwise. A fifo is never opened (that blocks), a
    device never read (/dev/zero has no end)."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            kind = FILE_KINDS.get(stat.S_IFMT(info.st_mode), "not a file")
            if path.is_symlink():
                kind += f", linked to {os.path.realpath(path)}"
            raise UnreadableImage(f"{path}: not a regular file ({kind}), not read")
        if info.st_size > MAX_IMAGE_BYTES:
            limit = f"the {MAX_IMAGE_BYTES >> 20} MiB an image file may have"
            raise UnreadableImage(f"{path}: {info.st_size} bytes, more than {limit}; not read")
        # O_NONBLOCK: should it have become a fifo since the stat, opening it does not wait for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UnreadableImage(f"{path}: not a regular file (it changed while being opened), not read")
            data = f.read(MAX_IMAGE_BYTES + 1)
    except OSError as exc:
        raise UnreadableImage(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if len(data) > MAX_IMAGE_BYTES:  # grew since the stat
        raise UnreadableImage(f"{path}: more than the {MAX_IMAGE_BYTES >> 20} MiB an image file may have; not read")
    return data


def image_format(head: bytes) -> str | None:
    """The image format whose signature ``head`` (a file's first 12 bytes or more) starts with:
    "PNG", "JPEG", "BMP", "WebP", "TIFF" or "GIF"; None for anything else (a video, say)."""
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:2] == b"\xff\xd8":
        return "JPEG"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) an image file's header declares, read without decoding anything; None
    for a format other than PNG, JPEG, BMP, WebP, TIFF or GIF, or a header too short to say."""
    kind = image_format(data)
    try:
        if kind == "PNG":
            return struct.unpack(">II", data[16:24]) if data[12:16] == b"IHDR" else None
        if kind == "JPEG":
            return _jpeg_size(data)
        if kind == "BMP":
            if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                return struct.unpack("<HH", data[18:22])
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)  # a negative height: stored top-down
        if kind == "WebP":
            return _webp_size(data)
        if kind == "TIFF":
            return _tiff_size(data)
        if kind == "GIF":
            return struct.unpack("<HH", data[6:10])
    except struct.error:  # cut off inside the header
        return None
    return None


def is_image_file(path: str | Path) -> bool:
    """Whether ``path`` is a regular file that starts like an image (whatever its name says):
    such a file is read by read_image and its checks, never by a video reader."""
    try:
        with open(path, "rb") as f:
            return os.path.isfile(path) and image_format(f.read(16)) is not None
    except OSError:
        return False


def check_frame_size(width: float, height: float, what: str) -> None:
    """Refuses frames over MAX_IMAGE_PIXELS before one is decoded: the limit read_image puts on
    images, here for a video's frame size as its header declares it."""
    if width * height > MAX_IMAGE_PIXELS:
        raise UnreadableImage(
            f"{what}: declares {width:.0f} x {height:.0f} pixel frames ({width * height / 1e6:.0f} megapixels), more "
            f"than the {MAX_IMAGE_PIXELS // 1_000_000} megapixel limit; not decoded"
        )


def quiet_opencv() -> None:
    """OpenCV and its FFmpeg print their own lines on stderr (``moov atom not found``, ``[ERROR:0]
    ... Failed to initialize VideoWriter``) before this program's one-line error says the same
    thing: silenced, unless the user set OPENCV_LOG_LEVEL / OPENCV_FFMPEG_LOGLEVEL. FFmpeg reads
    its level when the first capture or writer opens, so this is called before that."""
    import cv2

    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


# Start of frame markers (baseline, progressive, lossless, arithmetic): all but DHT, JPG and DAC.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    return _jpeg_walk(data, until_scan=False)


def _jpeg_walk(data: bytes, until_scan: bool):
    """Walks a JPEG's marker segments from the start: the (width, height) of its frame header, or
    with ``until_scan`` the offset where its first scan's entropy-coded data starts; None when
    the data ends or breaks first."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker == 0xD9:  # the end before any scan
            return None
        elif marker == 0xDA:
            return i + 2 + struct.unpack(">H", data[i + 2 : i + 4])[0] if until_scan else None
        elif marker in _JPEG_SOF and not until_scan:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        else:
            i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        bits = struct.unpack("<I", data[21:25])[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of a TIFF's (or BigTIFF's) first directory: the page OpenCV reads."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    if big:
        offset = struct.unpack(order + "Q", data[8:16])[0]
        count, first, size = struct.unpack(order + "Q", data[offset : offset + 8])[0], offset + 8, 20
    else:
        offset = struct.unpack(order + "I", data[4:8])[0]
        count, first, size = struct.unpack(order + "H", data[offset : offset + 2])[0], offset + 2, 12
    found = {}
    formats = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
    for k in range(min(count, 4096)):
        entry = first + k * size
        tag, kind = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257) and kind in formats:
            value = entry + (12 if big else 8)
            found[tag] = struct.unpack(order + formats[kind], data[value : value + struct.calcsize(formats[kind])])[0]
    return (found[256], found[257]) if len(found) == 2 else None


def read_image(path: str | Path):
    """The image at ``path`` (H, W, 3 uint8, BGR); UnreadableImage saying why it is not usable.

    Only a regular file of at most MAX_IMAGE_BYTES is read, and only an image whose header
    declares at most MAX_IMAGE_PIXELS is decoded (``image_size``). Whether it is whole is decided
    by decoding it, as OpenCV does (5.x refuses a cut JPEG or PNG); data after the image's end
    (the video of a Motion Photo, a camera's trailer) is not the image's and is ignored. OpenCV 4.x
    fills a cut JPEG with grey and only warns, so a JPEG's end of image marker is also looked for
    after its first scan (``jpeg_is_complete``)."""
    import cv2

    path = Path(path)
    data = _regular_file_bytes(path)
    if data[:2] == b"\xff\xd8" and not jpeg_is_complete(data):
        raise UnreadableImage(f"{path}: truncated JPEG (no end-of-image marker after its image data)")
    size = image_size(data)
    if size is None:
        raise UnreadableImage(f"{path}: not a decodable image (not a {IMAGE_FORMATS} file, or its header is cut)")
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise UnreadableImage(
            f"{path}: declares {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), more than "
            f"the {MAX_IMAGE_PIXELS // 1_000_000} megapixel limit; not decoded"
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own checks, out of memory ...: one line, never a traceback
        detail = " ".join(str(exc).split())[-160:]
        raise UnreadableImage(f"{path}: OpenCV cannot decode it ({detail})") from exc
    if image is None or image.size == 0:
        raise UnreadableImage(f"{path}: truncated or damaged {image_format(data)} (OpenCV cannot decode it)")
    return image


def jpeg_is_complete(data: bytes) -> bool:
    """Whether a JPEG's first scan is followed by an end of image marker. Inside entropy-coded
    data a 0xFF byte is always followed by 0x00 or a restart marker, so the first FF D9 after the
    scan starts is the image's end; a thumbnail's FF D9 sits inside an APP segment before it, and
    whatever follows the end (a Motion Photo's video) is not looked at."""
    scan = _jpeg_walk(data, until_scan=True)
    return scan is not None and data.find(b"\xff\xd9", scan) >= 0


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
