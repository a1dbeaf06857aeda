"""Hostile inputs: image bombs, folder entries that are not regular files,
.npz files declaring huge or object arrays, YAML alias bombs, a negative webcam duration and
Triton's harmless first error line.

The bombs run the command in a child process under an address-space limit (RLIMIT_AS) and check
its peak resident memory: a bomb that is decoded, read or expanded fails there with a
MemoryError traceback instead of taking the machine; the fifo runs with a timeout, so a read
that blocks fails the test instead of hanging the suite.
"""

from __future__ import annotations

import io
import json
import math
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from handssca.cli import main
from handssca.errors import UnreadableImage
from handssca.progress import without_progress
from handssca.runtime import files
from handssca.runtime.files import read_image

MAX_IMAGE_BYTES = getattr(files, "MAX_IMAGE_BYTES", 256 << 20)  # the limits (named here before the fix)

MEMORY_LIMIT = 2 << 30  # RLIMIT_AS of the child: a normal infer runs in 1.25 GiB, a 30000^2 bomb needs 2.7 GB
PEAK_RSS = 1 << 30  # the most resident memory a child may reach (a normal infer: about 130 MB)
REPO = Path(__file__).resolve().parent.parent


def run_bounded(args: list[str], *, timeout: float = 60.0, limit: int = MEMORY_LIMIT):
    """``python -m handssca.cli ARGS`` under RLIMIT_AS = ``limit``: (exit status, stdout, stderr,
    peak resident bytes). A child still running after ``timeout`` is killed and the test fails."""

    def bound():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "TQDM_DISABLE": "1"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "handssca.cli", *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=err, preexec_fn=bound, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                os.wait4(child.pid, 0)
                child.returncode = -9
                pytest.fail(f"handssca {' '.join(args)}: still running after {timeout:.0f} s (blocked?)")
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        return child.returncode, stdout, stderr, usage.ru_maxrss * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose IHDR declares width x height RGB pixels
    (its IDAT holds a few rows of zeros, compressed)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_declaring(width: int, height: int) -> bytes:
    """A JPEG of a few hundred bytes: an 8x8 baseline image whose SOF0 says width x height."""
    ok, data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(data.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return header + info + b"\x00" * 64


def tiff_declaring(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, width * height)]  # fmt: skip
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64


def webp_declaring(width: int, height: int) -> bytes:
    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_declaring(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


@pytest.fixture(scope="module")
def tiny_model(tiny_onnx):
    return tiny_onnx


def good_image(path: Path) -> Path:
    cv2.imwrite(str(path), np.full((96, 128, 3), 120, np.uint8))
    return path


# ---------------------------------------------------------------- 1. decompression bombs


@pytest.mark.parametrize(
    "make, suffix",
    [(png_declaring, ".png"), (jpeg_declaring, ".jpg"), (bmp_declaring, ".bmp"), (tiff_declaring, ".tif"),
     (webp_declaring, ".webp"), (gif_declaring, ".gif")],
)  # fmt: skip
def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(tmp_path, make, suffix):
    # 40000 x 40000 is past OpenCV's own limit too, so the unfixed code raised cv2.error here
    # rather than allocating; the size is read from the header, whatever the format.
    bomb = tmp_path / f"bomb{suffix}"
    bomb.write_bytes(make(40000, 40000))
    with pytest.raises(UnreadableImage) as caught:
        read_image(bomb)
    message = str(caught.value)
    assert message.startswith(f"{bomb}: declares 40000 x 40000 pixels") and "64 megapixel" in message, message
    assert "\n" not in message and len(message) < 200


@pytest.mark.parametrize("suffix, params", [(".png", []), (".jpg", []), (".bmp", []), (".tiff", []),
                                            (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                                            (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101])])  # fmt: skip
def test_the_header_reader_agrees_with_opencvs_encoders(suffix, params):
    from handssca.runtime.files import image_size

    ok, data = cv2.imencode(suffix, np.zeros((23, 37, 3), np.uint8), params)
    assert ok and image_size(data.tobytes()) == (37, 23)


def test_a_cv2_error_while_decoding_is_one_line(tmp_path, monkeypatch):
    path = good_image(tmp_path / "a.png")

    def broken(*args, **kwargs):
        raise cv2.error("OpenCV(5.1.0) loadsave.cpp:77: error: (-215:Assertion failed) in 'validateInputImageSize'")

    monkeypatch.setattr(cv2, "imdecode", broken)
    with pytest.raises(UnreadableImage, match=r"a.png: OpenCV cannot decode it \(.*Assertion failed"):
        read_image(path)


def test_infer_skips_image_bombs_and_names_them_within_a_memory_bound(tiny_model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    good_image(folder / "a.png")
    (folder / "b_bomb.png").write_bytes(png_declaring(40000, 40000))  # the unfixed infer: cv2.error traceback
    (folder / "c_bomb.png").write_bytes(png_declaring(30000, 30000))  # under OpenCV's limit: 2.7 GB allocated
    out = tmp_path / "out"
    code, stdout, stderr, peak = run_bounded(["infer", str(folder), "--model", str(tiny_model), "-o", str(out),
                                              "--box", "0,0,64,64"])  # fmt: skip
    assert "Traceback" not in stderr and code == 0, stderr
    assert "b_bomb.png: declares 40000 x 40000 pixels" in stdout and "c_bomb.png: declares 30000 x 30000" in stdout
    assert "(2 skipped" in stdout and "1 hand in 1 image" in stdout
    assert len(json.loads((out / "predictions.json").read_text())) == 1
    assert peak < PEAK_RSS, f"peak resident memory {peak / 2**20:.0f} MiB"


def test_the_webcam_folder_source_counts_bombs_and_odd_entries_unreadable(tiny_model, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    good_image(folder / "a.png")
    (folder / "b.png").write_bytes(png_declaring(30000, 30000))
    (folder / "c.jpg").symlink_to("/dev/zero")
    os.mkfifo(folder / "d.jpg")
    out = tmp_path / "w"
    args = ["webcam", "--source", str(folder), "--model", str(tiny_model), "--no-finder", "--box", "0,0,64,64",
            "--headless", "-o", str(out)]  # fmt: skip
    code, stdout, stderr, peak = run_bounded(args, timeout=60)
    assert "Traceback" not in stderr and code == 0, stderr
    assert "1 frames" in stdout and "b.png: declares 30000 x 30000 pixels" in stdout
    assert "c.jpg: not a regular file" in stdout and "d.jpg: not a regular file" in stdout
    assert json.loads((out / "summary.json").read_text())["unreadable"] == 3
    assert peak < PEAK_RSS, f"peak resident memory {peak / 2**20:.0f} MiB"


def test_an_image_file_as_the_webcam_source_is_checked_too(tiny_model, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(30000, 30000))
    args = ["webcam", "--source", str(bomb), "--model", str(tiny_model), "--no-finder", "--box", "0,0,64,64",
            "--headless", "-o", str(tmp_path / "w")]  # fmt: skip
    code, stdout, stderr, peak = run_bounded(args)
    assert "Traceback" not in stderr and code == 1, stderr
    assert "bomb.png: declares 30000 x 30000 pixels" in stdout and "no frame could be read (1 unreadable; " in stderr
    assert len(stderr.strip().splitlines()) == 1 and peak < PEAK_RSS


# ---------------------------------------------------------------- 2. entries that are not regular files


def test_infer_reads_only_regular_files_of_a_bounded_size(tiny_model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    good_image(folder / "a.png")
    (folder / "b.jpg").symlink_to("/dev/zero")  # unfixed: read until memory runs out
    os.mkfifo(folder / "c.jpg")  # unfixed: open() blocks for ever
    (folder / "d.png").mkdir()
    with open(folder / "e.png", "wb") as f:  # sparse: no disk used
        f.truncate(MAX_IMAGE_BYTES + 1)
    out = tmp_path / "out"
    code, stdout, stderr, peak = run_bounded(
        ["infer", str(folder), "--model", str(tiny_model), "-o", str(out), "--box", "0,0,64,64"], timeout=60
    )
    assert "Traceback" not in stderr and code == 0, stderr
    assert "b.jpg: not a regular file (a character device" in stdout and "/dev/zero" in stdout
    assert "c.jpg: not a regular file (a fifo" in stdout and "d.png: not a regular file (a folder" in stdout
    assert f"e.png: {MAX_IMAGE_BYTES + 1} bytes, more than the {MAX_IMAGE_BYTES // 2**20} MiB" in stdout
    assert "(4 skipped" in stdout and "1 hand in 1 image" in stdout
    assert peak < PEAK_RSS


def test_read_image_never_opens_a_fifo(tmp_path):
    fifo = tmp_path / "a.jpg"
    os.mkfifo(fifo)
    code = (
        "import sys; from handssca.runtime.files import read_image, UnreadableImage\n"
        "try:\n    read_image(sys.argv[1])\nexcept UnreadableImage as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(fifo)], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == f"{fifo}: not a regular file (a fifo), not read", done.stderr


# ---------------------------------------------------------------- 5. .npz declaring huge or object arrays


def npy_header(shape, descr="<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()  # the magic string, the header and no data


def npz_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "crafted.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


@pytest.mark.parametrize(
    "shape, key, message",
    [
        ((2**40,), "v_template", r"'v_template' declares shape \(1099511627776,\) float64 \(8796093022208 bytes"),
        ((10**6, 3), "v_template", r"'v_template' declares shape \(1000000, 3\), expected \(778, 3\)"),
        ((778, 3, 2**30), "shapedirs", r"'shapedirs' declares shape \(778, 3, 1073741824\)"),
    ],
)
def test_mano_convert_checks_declared_shapes_before_loading(tmp_path, shape, key, message):
    import re

    crafted = npz_with(tmp_path, {key: npy_header(shape)})
    assert crafted.stat().st_size < 400
    code, stdout, stderr, peak = run_bounded(["mano", "convert", str(crafted), "-o", str(tmp_path / "x.npz")])
    assert "Traceback" not in stderr and code == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "crafted.npz" in lines[0] and re.search(message, lines[0]), lines
    assert not (tmp_path / "x.npz").exists() and peak < PEAK_RSS


def test_an_npz_of_object_arrays_is_called_what_it_is(tmp_path, capsys):
    path = tmp_path / "objects.npz"
    np.savez(path, v_template=np.array([{"a": 1}, None], dtype=object))
    assert main(["mano", "convert", str(path), "-o", str(tmp_path / "x.npz")]) == 1
    err = capsys.readouterr().err.strip()
    assert "objects.npz: 'v_template' holds object arrays (pickles), which are refused" in err, err
    assert "not a zip archive" not in err and len(err.splitlines()) == 1


def test_a_real_npz_still_converts(tmp_path, capsys):
    hand = tmp_path / "hand.npz"
    assert main(["mano", "builtin", "-o", str(hand)]) == 0
    assert main(["mano", "convert", str(hand), "-o", str(tmp_path / "again.npz")]) == 0
    assert "778 vertices" in capsys.readouterr().out


# ---------------------------------------------------------------- 6. YAML bombs and long values


def billion_laughs(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghijklmnop"
    for i in range(1, levels):
        lines.append(f"{names[i]}: &{names[i]} [" + ",".join([f"*{names[i - 1]}"] * 9) + "]")
    lines.append(f"model: *{names[levels - 1]}")
    return "\n".join(lines) + "\n"


def test_bench_refuses_a_yaml_alias_bomb_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert bomb.stat().st_size < 1024
    # unfixed: 30 s and a MemoryError traceback at this limit (past 3 GB without one)
    code, stdout, stderr, peak = run_bounded(["bench", "--config", str(bomb), "-o", str(tmp_path / "b")], timeout=120)
    assert "Traceback" not in stderr and code == 2, stderr[-2000:]
    lines = without_progress(stderr)  # the line saying what it is loading, then the error alone
    assert len(lines) == 1 and f"{bomb}: line 2: YAML aliases" in lines[0] and len(lines[0]) < 300, lines
    assert peak < PEAK_RSS


def test_aliases_are_refused_in_every_yaml_read(tmp_path):
    from handssca.errors import InputError, OptionError
    from handssca.training.config import load_config
    from handssca.training.datasets import _read_yaml

    config = tmp_path / "train.yaml"
    config.write_text("train: &t\n  epochs: 2\nloss: *t\n")
    with pytest.raises(OptionError, match=r"train.yaml: line 3: YAML aliases \(\*t\) are refused"):
        load_config(config)
    with pytest.raises(OptionError, match=r"--set model.x=\[\*a\]: YAML aliases"):
        load_config(None, ["model.x=[*a]"])
    meta = tmp_path / "meta.yml"
    meta.write_text("serials: &s [1, 2]\nmore: [*s, *s]\n")
    with pytest.raises(InputError, match=r"meta.yml: line 2: YAML aliases \(\*s\) are refused"):
        _read_yaml(meta)


def test_refusals_quote_at_most_a_short_piece_of_a_value(tmp_path):
    from handssca.errors import OptionError
    from handssca.training.config import load_config, load_model_config

    long = "x" * 100_000
    with pytest.raises(OptionError) as caught:
        load_config(None, [f"train.device={long}"])
    assert "train.device" in str(caught.value) and len(str(caught.value)) < 300
    with pytest.raises(OptionError) as caught:
        load_config(None, [f"train.epochs={long}"])
    assert "'epochs' must be a number" in str(caught.value) and len(str(caught.value)) < 300
    model = tmp_path / "model.yaml"
    model.write_text("model: [" + ", ".join(["1"] * 5_000) + "]\n")
    with pytest.raises(OptionError) as caught:
        load_model_config(model, {})
    assert "'model' must be a mapping" in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_shipped_configs_still_load(path):
    from handssca.training.config import load_config, load_model_config

    if path.parent.name == "train":
        load_config(path)
    else:
        load_model_config(path, {})


# ---------------------------------------------------------------- 9. webcam options


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_webcam_refuses_a_negative_or_non_finite_duration(tiny_model, tmp_path, capsys, value):
    folder = tmp_path / "frames"
    folder.mkdir()
    good_image(folder / "a.png")
    args = ["webcam", "--source", str(folder), "--model", str(tiny_model), "--headless", "-o", str(tmp_path / "w")]
    assert main([*args, "--duration", value]) == 2  # an option out of its range: 2, as --max-frames -1
    err = capsys.readouterr().err.strip()
    assert f"--duration {value}: must be 0 (no limit) or a positive number of seconds" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "w").exists()


@pytest.mark.parametrize("value", [math.nan, -0.1, 1.5])
def test_webcam_refuses_a_min_confidence_outside_0_to_1(value):
    from handssca.runtime.webcam import WebcamOptions

    with pytest.raises(ValueError, match=r"--min-confidence .*: must be a number from 0 to 1"):
        WebcamOptions(min_confidence=value)


# ---------------------------------------------------------------- 10. Triton's first error


TRITON_LOG = """\
W1203 15:25:19.307421 18008 pinned_memory_manager.cc:273] "Unable to allocate pinned system memory, pinned memory \
pool will not be available: CUDA driver version is insufficient for CUDA runtime version"
I1203 15:25:19.307489 18008 cuda_memory_manager.cc:117] "CUDA memory pool disabled"
E1203 15:25:19.307555 18008 server.cc:241] "CudaDriverHelper has not been initialized."
I1203 15:25:19.308959 18008 model_lifecycle.cc:472] "loading: handssca_network:1"
I1203 15:25:19.434098 18022 pb_stub.cc:298]  Failed to initialize Python stub for auto-complete: \
ModuleNotFoundError: No module named 'handssca.serving'

At:

E1203 15:25:19.435545 18008 model_lifecycle.cc:642] "failed to load 'handssca_preprocess' version 1: Internal: \
ModuleNotFoundError: No module named 'handssca.serving'\\n\\nAt:\\n  /tmp/repo/handssca_preprocess/1/model.py(2): \
<module>\\n  <frozen importlib._bootstrap>(241): _call_with_frames_removed\\n"
I1203 15:25:19.435576 18008 model_lifecycle.cc:777] "failed to load 'handssca_preprocess'"
E1203 15:25:19.436727 18008 model_repository_manager.cc:703] "Invalid argument: ensemble 'handssca' depends on \
'handssca_mesh' which has no loaded version."
I1203 15:25:19.437100 18008 server.cc:305] "Waiting for in-flight requests to complete."
error: creating server: Internal - failed to load all models
"""


def _server_with_log(tmp_path, text):
    from handssca.serving.server import TritonServer

    server = TritonServer.__new__(TritonServer)  # no repository or environment needed to read a log
    server.log_path = tmp_path / "tritonserver.log"
    server.log_path.write_text(text)
    return server


def test_the_first_error_quoted_is_the_reason_not_the_cuda_notice(tmp_path):
    line = _server_with_log(tmp_path, TRITON_LOG).first_error()
    assert "CudaDriverHelper" not in line, line
    assert line == "failed to load 'handssca_preprocess' version 1: Internal: ModuleNotFoundError: "\
        "No module named 'handssca.serving'", line  # fmt: skip


def test_the_first_error_of_other_logs(tmp_path):
    cuda_only = 'E1203 15:25:19.307555 18008 server.cc:241] "CudaDriverHelper has not been initialized."\n'
    assert _server_with_log(tmp_path, cuda_only + "error: creating server: Internal - bad\n").first_error() == (
        "error: creating server: Internal - bad"
    )
    unload = cuda_only + "E1203 15:26:00.1 1 model.cc:1] \"Invalid argument: unexpected shape for input 'x'\"\n"
    assert _server_with_log(tmp_path, unload).first_error() == "Invalid argument: unexpected shape for input 'x'"
    long = cuda_only + "E1203 15:26:00.1 1 model.cc:1] \"failed to load 'm': " + "y" * 5000 + '"\n'
    assert len(_server_with_log(tmp_path, long).first_error()) <= 300
    assert _server_with_log(tmp_path, "").first_error() == "no output"
