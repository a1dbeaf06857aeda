"""What the runtime reads, at its boundary: phone photographs with data after the image, one pixel
limit on every path that decodes pixels, folders listed by the formats read_image reads, frames
that are empty or not arrays, and a bounded memory whatever the number of boxes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from handssca.cli import main
from handssca.errors import HandSSCAError, UnreadableImage
from handssca.runtime.files import jpeg_is_complete, list_images, read_image

PHOTOS = Path(__file__).resolve().parent.parent / "handssca" / "assets" / "photos"
PHOTO = PHOTOS / "handSrc.jpg"
MOTION_VIDEO = b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64 + b"\xff\xd9" * 8 + b"x" * 4000


@pytest.fixture(scope="module")
def predictor(demo_onnx):
    from handssca.runtime.mano.load import load_hand_model
    from handssca.runtime.predictor import HandMeshPredictor

    mano, tips, _ = load_hand_model("builtin")
    return HandMeshPredictor.open(demo_onnx, mano, tips)


# ---- phone photographs -------------------------------------------------------------------------


def test_a_motion_photo_is_a_photograph(tmp_path):
    """A JPEG with a video after its end (Google's Motion Photos, Samsung's trailers) is read as
    the image it holds; the check looked for the end marker in the last bytes and refused it."""
    data = PHOTO.read_bytes()
    motion = tmp_path / "PXL_motion.jpg"
    motion.write_bytes(data + MOTION_VIDEO)
    assert np.array_equal(read_image(motion), read_image(PHOTO))
    png = cv2.imencode(".png", np.full((20, 30, 3), 90, np.uint8))[1].tobytes()
    (tmp_path / "trailer.png").write_bytes(png + b"camera trailer" * 50)
    assert read_image(tmp_path / "trailer.png").shape == (20, 30, 3)


def test_a_cut_photograph_is_still_refused_with_or_without_a_thumbnail(tmp_path):
    data = PHOTO.read_bytes()
    for cut in (len(data) // 2, len(data) - 2):
        (tmp_path / "cut.jpg").write_bytes(data[:cut])
        with pytest.raises(UnreadableImage, match="cut.jpg: truncated JPEG"):
            read_image(tmp_path / "cut.jpg")
    # A thumbnail (a whole JPEG with its own end marker) inside an APP1 segment before the scan
    # does not make a cut main image whole.
    thumbnail = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    app1 = b"Exif\x00\x00" + thumbnail
    with_thumbnail = data[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + data[2:]
    assert jpeg_is_complete(with_thumbnail) and not jpeg_is_complete(with_thumbnail[: len(with_thumbnail) // 2])
    png = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8))[1].tobytes()
    (tmp_path / "cut.png").write_bytes(png[:-20])
    with pytest.raises(UnreadableImage, match="cut.png: truncated or damaged PNG"):
        read_image(tmp_path / "cut.png")


def test_infer_reads_a_motion_photo(demo_onnx, tmp_path, capsys):
    (tmp_path / "motion.jpg").write_bytes(PHOTO.read_bytes() + MOTION_VIDEO)
    assert main(["infer", str(tmp_path / "motion.jpg"), "--model", str(demo_onnx), "-o", str(tmp_path / "o")]) == 0
    assert "skipped" not in capsys.readouterr().out and (tmp_path / "o" / "predictions.json").is_file()


# ---- one pixel limit ----------------------------------------------------------------------------


def _run(command: list[str]) -> tuple[int, str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stderr


@pytest.mark.parametrize("name", ["big.tif", "big.gif", "big.dat", "big"])
def test_the_webcam_refuses_a_huge_image_whatever_its_name(demo_onnx, tmp_path, name):
    """An image file given as the webcam's source is read by read_image, by its content, with its
    pixel limit: a .tif, .gif or a file with no known suffix went to OpenCV's video reader, which
    decoded 144 megapixels (1.8 GB)."""
    suffix = ".gif" if "gif" in name else ".tif"
    ok, encoded = cv2.imencode(suffix, np.zeros((12000, 12000, 3), np.uint8))
    assert ok
    (tmp_path / name).write_bytes(encoded.tobytes())
    del encoded
    command = [sys.executable, "-m", "handssca", "webcam", "--source", str(tmp_path / name)]
    status, err = _run([*command, "--model", str(demo_onnx), "--headless", "-o", str(tmp_path / "w")])
    assert status == 1 and "Traceback" not in err
    assert "declares 12000 x 12000 pixels" in err and "not decoded" in err


def test_the_webcam_refuses_a_video_whose_frames_are_over_the_limit(demo_onnx, tmp_path):
    """A video's frame size comes from its header and meets the same limit before a frame is decoded."""
    video = tmp_path / "huge.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (10000, 8000))
    writer.write(np.zeros((8000, 10000, 3), np.uint8))
    writer.release()
    command = [sys.executable, "-m", "handssca", "webcam", "--source", str(video), "--model", str(demo_onnx)]
    status, err = _run([*command, "--headless", "-o", str(tmp_path / "w")])
    assert status == 1 and "Traceback" not in err and err.count("\n") == 1
    assert "declares 10000 x 8000 pixel frames (80 megapixels)" in err


def test_infer_lists_a_folder_by_the_formats_it_reads(demo_onnx, tmp_path, capsys):
    """A folder of .tif and .gif files was 'no images to run on' although each file alone is read."""
    folder = tmp_path / "images"
    folder.mkdir()
    image = cv2.imread(str(PHOTO))
    for suffix in (".tif", ".tiff", ".gif", ".jpg", ".png", ".webp", ".bmp"):
        assert cv2.imwrite(str(folder / f"photo{suffix}"), image)
    listed = {p.suffix for p in list_images([folder])}
    assert listed == {".tif", ".tiff", ".gif", ".jpg", ".png", ".webp", ".bmp"}
    assert main(["infer", str(folder), "--model", str(demo_onnx), "-o", str(tmp_path / "o")]) == 0
    assert "in 7 images" in capsys.readouterr().out


# ---- frames -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0, 0, 3), (0, 10, 3), (10, 0, 3)])
def test_an_empty_frame_is_one_error_of_the_family(predictor, shape):
    frame = np.zeros(shape, np.uint8)
    for boxes in (None, [(0, 0, 5, 5)]):
        with pytest.raises(HandSSCAError, match=r"frame is empty") as caught:
            predictor.predict(frame, boxes)
        assert "\n" not in str(caught.value)


def test_the_serving_client_refuses_an_empty_frame_before_sending_it():
    from handssca.runtime.predictor import boxes_to_run

    with pytest.raises(HandSSCAError, match="frame is empty"):
        boxes_to_run(np.zeros((0, 0, 3), np.uint8), None, None, "bgr", lambda: pytest.fail("the finder ran"))


def test_a_frame_given_as_a_list_gets_a_short_message(predictor):
    frame = np.zeros((480, 640, 3), np.uint8).tolist()
    with pytest.raises(HandSSCAError, match=r"got list$") as caught:
        predictor.predict(frame, [(0, 0, 10, 10)])
    assert len(str(caught.value)) < 200


def test_many_boxes_run_in_bounded_batches(predictor):
    """600 boxes took 3 GB in one batch; they run CHUNK at a time, every hand answered in order."""
    from handssca.runtime.predictor import CHUNK

    seen, run = [], predictor.model.run
    predictor.model.run = lambda images: seen.append(len(images)) or run(images)
    try:
        frame = np.random.default_rng(1).integers(0, 255, (240, 320, 3), np.uint8)
        boxes = [(i % 200, i % 100, i % 200 + 60, i % 100 + 60) for i in range(3 * CHUNK + 5)]
        hands = predictor.predict(frame, boxes)
    finally:
        predictor.model.run = run
    assert max(seen) <= CHUNK and sum(seen) == len(boxes) == len(hands)
    assert [h.box.tolist() for h in hands] == [list(map(float, b)) for b in boxes]
    one = predictor.predict(frame, [boxes[-1]])[0]  # a hand's answer does not depend on its batch
    np.testing.assert_allclose(one.vertices, hands[-1].vertices, atol=1e-6)
    assert set(predictor.timings) >= {"crop_ms", "engine_ms", "mano_ms"}


def test_six_hundred_boxes_stay_under_a_gigabyte_and_a_half(demo_onnx, tmp_path):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forked copy of pytest.
    script = f"""
import re, numpy as np
from handssca.runtime.mano.load import load_hand_model
from handssca.runtime.predictor import HandMeshPredictor
mano, tips, _ = load_hand_model("builtin")
p = HandMeshPredictor.open({str(demo_onnx)!r}, mano, tips)
hands = p.predict(np.zeros((480, 640, 3), np.uint8), [(0, 0, 100, 100)] * 600)
peak = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)
print(len(hands), int(peak) // 1024)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    count, peak_mb = map(int, done.stdout.split())
    assert count == 600 and peak_mb < 1536, done.stderr[-2000:]
