"""What leaves the program for other tools: right-side-out meshes in camera space, one record per
hand, the camera's own intrinsics (given, calibrated or guessed, and said which), and the
translation solver against renders with a known camera."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from handssca.cli import main
from handssca.runtime.camera import Camera, default_intrinsics, project, read_calibration, solve_translation
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.photos import load_photo


def read_obj(path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of an OBJ file, read by trimesh (a reader we did not write)."""
    import trimesh

    mesh = trimesh.load(path, process=False, force="mesh")
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """The volume the faces enclose, by their winding (m^3): positive when their normals point
    outwards, negative for a mesh inside out."""
    a, b, c = (vertices[faces[:, i]] - vertices.mean(0) for i in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6)


@pytest.fixture(scope="module")
def composite(tmp_path_factory):
    """The left-hand photograph beside its mirror image (a right hand): one image, two sides."""
    left = load_photo("back_projection")
    image = np.concatenate([left, np.ascontiguousarray(left[:, ::-1])], axis=1)
    path = tmp_path_factory.mktemp("composite") / "both.jpg"
    cv2.imwrite(str(path), image)
    return path


def test_infer_writes_both_hands_right_side_out_in_camera_space(demo_onnx, composite, tmp_path):
    out = tmp_path / "out"
    assert main(["infer", str(composite), "--model", str(demo_onnx), "-o", str(out)]) == 0
    records = json.loads((out / "predictions.json").read_text())
    assert sorted(r["side"] for r in records) == ["left", "right"]
    for record in records:
        vertices, faces = read_obj(out / record["mesh"])
        assert signed_volume(vertices, faces) > 1e-5, record["side"]  # a left hand too: a hand is ~1e-4 m^3
        joints = np.array(record["joints_camera"])
        np.testing.assert_allclose(joints, np.array(record["joints_3d"]) + record["translation"], atol=1e-7)
        # in camera space, where the records put the hand (in front of the camera)
        assert record["translation"][2] >= 0.05 and np.linalg.norm(vertices.mean(0) - joints.mean(0)) < 0.1
        assert record["intrinsics"]["guessed"] is True and record["scene"] == "both.glb"
    assert (out / "both.glb").is_file()


def write_calibration(path, K, distortion=None, size=None, suffix_format=None) -> None:
    """A calibration file as OpenCV's calibration sample writes it (cv2.FileStorage)."""
    storage = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    if size is not None:
        storage.write("image_width", size[0])
        storage.write("image_height", size[1])
    storage.write("camera_matrix", np.asarray(K, np.float64))
    if distortion is not None:
        storage.write("distortion_coefficients", np.asarray(distortion, np.float64).reshape(-1, 1))
    storage.release()


@pytest.mark.parametrize("name", ["camera.yaml", "camera.json"])
def test_the_records_carry_the_given_camera(demo_onnx, composite, tmp_path, name):
    K = np.array([[900.0, 0, 500], [0, 905, 210], [0, 0, 1]])
    calibration = tmp_path / name
    write_calibration(calibration, K, size=(cv2.imread(str(composite)).shape[1::-1]))
    runs = {
        "calibration": ["--calibration", str(calibration)],
        "intrinsics": ["--intrinsics", "900,905,500,210"],
    }
    for label, options in runs.items():
        out = tmp_path / label
        assert main(["infer", str(composite), "--model", str(demo_onnx), "-o", str(out), *options]) == 0
        for record in json.loads((out / "predictions.json").read_text()):
            assert record["intrinsics"]["guessed"] is False
            np.testing.assert_allclose(record["intrinsics"]["matrix"], K)
            camera = np.array(record["joints_camera"])
            assert np.isfinite(project(camera, K)).all()


def test_one_camera_option_at_a_time_and_each_checked(demo_onnx, composite, tmp_path, capsys):
    calibration = tmp_path / "c.yaml"
    write_calibration(calibration, np.eye(3))
    args = ["infer", str(composite), "--model", str(demo_onnx), "-o", str(tmp_path / "o")]
    assert main([*args, "--intrinsics", "1,1,0,0", "--calibration", str(calibration)]) == 2
    assert "give --intrinsics or --calibration, not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--intrinsics", "900,-1,5,5"])
    assert exit_.value.code == 2 and "fx,fy,cx,cy" in capsys.readouterr().err


@pytest.mark.parametrize(
    "content, message",
    [
        ("%YAML:1.0\n---\nimage_width: 640\n", "no 3 x 3 camera_matrix"),
        ("this is not yaml: [", "cannot read it as a calibration"),
        (
            "%YAML:1.0\n---\ncamera_matrix: !!opencv-matrix\n   rows: 2\n   cols: 2\n   dt: d\n   data: [1, 0, 0, 1]\n",
            "no 3 x 3 camera_matrix",
        ),  # fmt: skip
        (None, "is not a camera calibration"),
    ],
)
def test_a_bad_calibration_is_one_line_naming_the_file(demo_onnx, composite, tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    if content is None:
        path.write_bytes(b"%YAML:1.0\n" + b"#" * (2 << 20))  # a huge file is refused unread
    else:
        path.write_text(content)
    assert main(["infer", str(composite), "--model", str(demo_onnx), "--calibration", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and message in err, err


def test_a_calibration_is_scaled_to_the_frames_of_its_aspect_and_refuses_another(tmp_path):
    K = np.array([[800.0, 0, 320], [0, 800, 240], [0, 0, 1]])
    write_calibration(tmp_path / "c.yaml", K, size=(640, 480))
    camera = read_calibration(tmp_path / "c.yaml")
    np.testing.assert_allclose(camera.intrinsics(1280, 960)[0], [[1600, 0, 640], [0, 1600, 480], [0, 0, 1]])
    assert camera.intrinsics(640, 480) == (pytest.approx(K), False)
    from handssca.errors import InputError

    with pytest.raises(InputError, match=r"c.yaml: calibrated for 640 x 480 frames, not 640 x 360"):
        camera.intrinsics(640, 360)


def test_undistortion_puts_points_where_the_pinhole_camera_sees_them(tmp_path):
    """Dots drawn where a distorting lens puts them (cv2.projectPoints with the coefficients) land,
    once the frame is undistorted, where the calibration's pinhole camera projects them."""
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    distortion = np.array([-0.25, 0.08, 0.001, -0.001, 0.0])
    write_calibration(tmp_path / "lens.yaml", K, distortion, size=(640, 480))
    camera = Camera.from_options(calibration=tmp_path / "lens.yaml")
    grid = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 5), np.linspace(-0.35, 0.35, 4)), -1).reshape(-1, 2)
    points = np.concatenate([grid, np.ones((len(grid), 1))], axis=1)  # a plane 1 m ahead
    distorted, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, distortion)
    frame = np.zeros((480, 640, 3), np.uint8)
    for u, v in distorted.reshape(-1, 2):
        cv2.circle(frame, (round(u * 16), round(v * 16)), 3 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    undistorted = camera.undistort(frame)
    expected = project(points, K)
    for u, v in expected:
        window = undistorted[int(v) - 8 : int(v) + 9, int(u) - 8 : int(u) + 9, 0].astype(np.float64)
        ys, xs = np.mgrid[int(v) - 8 : int(v) + 9, int(u) - 8 : int(u) + 9]
        centre = np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum()
        assert np.linalg.norm(centre - [u, v]) < 0.5
    assert np.abs(distorted.reshape(-1, 2) - expected).max() > 10  # the lens moved them


def test_the_translation_solver_on_renders_with_a_known_camera():
    """Joints of rendered hands (known K and translation), their projections with half a pixel of
    noise: the solved wrist position's error, with the true K and with the guess."""
    from handssca.training.synthetic import render_sequence

    mano, tips = build_builtin_hand()
    _, truth = render_sequence(mano, tips, 12, seed=3)
    rng = np.random.default_rng(4)
    errors = {"true K": [], "guessed K": []}
    for sample in truth:
        joints, K = np.asarray(sample["joints"]), np.asarray(sample["K"])
        keypoints = project(joints, K) + rng.normal(0, 0.5, (21, 2))
        relative = joints - joints[0]
        for name, camera in (("true K", K), ("guessed K", default_intrinsics(320, 240))):
            errors[name].append(np.linalg.norm(solve_translation(relative, keypoints, camera) - joints[0]) * 1e3)
    true, guessed = np.median(errors["true K"]), np.median(errors["guessed K"])
    print(f"translation error (median of 12 renders): {true:.1f} mm with the true K, {guessed:.1f} mm guessed")
    assert true < 10 and guessed > 3 * true  # a guessed focal length costs depth; the calibration does not


@pytest.mark.parametrize("draw", ["hud", "label"])
def test_on_screen_text_sits_inside_its_outline(draw):
    """On the installed OpenCV (5.x draws a thicker text wider, which pulled the old shadow off its
    text): on a green background, no pixel next to a bright text pixel shows the background."""
    from handssca.runtime.overlay import draw_hud, draw_label

    image = np.zeros((120, 420, 3), np.uint8)
    image[:] = (0, 255, 0)
    if draw == "hud":
        draw_hud(image, ["12.3 FPS  hands 2/2", "capture 0.1  finder 2.7  engine 8.7 ms", "#0 left  conf 0.93"])
    else:
        draw_label(image, np.array([40.0, 60, 200, 110]), "#12 right")
    b, g, r = (image[..., i].astype(int) for i in range(3))
    bright = r > 200 if draw == "hud" else (r > 200) & (g > 200)
    background_like = (g > 150) & (g - np.maximum(r, b) > 40)  # the green, or text blended into it
    assert bright.sum() > 100
    near = cv2.dilate(bright.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not (near & background_like & ~bright).any(), f"OpenCV {cv2.__version__}: text outside its outline"


@pytest.fixture(scope="module")
def recorded(demo_onnx, tmp_path_factory):
    """``webcam --headless --record hands.glb --record hands.bvh`` on a video of the photographs
    moving (both hands, then none, then the left alone, then both)."""
    from handssca.runtime.files import write_video
    from handssca.runtime.photos import two_hands_sequence

    folder = tmp_path_factory.mktemp("recorded")
    video = write_video(folder / "hands.mp4", [f.image for f in two_hands_sequence(40)], 15.0)
    glb, bvh = folder / "hands.glb", folder / "hands.bvh"
    args = ["webcam", "--source", str(video), "--model", str(demo_onnx), "--headless", "-o", str(folder / "out")]
    assert main([*args, "--record", str(glb), "--record", str(bvh)]) == 0
    lines = (folder / "out" / "frames.jsonl").read_text().splitlines()
    summary = json.loads((folder / "out" / "summary.json").read_text())
    return glb, bvh, [json.loads(line) for line in lines], summary


def recorded_hands(records: list[dict]):
    """(time from the first frame, track, side, joints_camera) of every hand recorded. The time is
    a microsecond past the record's: time_s is written to 1e-6 s, and a track's first keyframe
    (its step into view) must not be read just before it."""
    start = records[0]["time_s"]
    for record in records:
        for hand in record["hands"]:
            yield record["time_s"] - start + 1e-6, hand["track"], hand["side"], np.array(hand["joints_camera"])


def test_the_recorded_bvh_reproduces_the_joints(recorded):
    """Each track's .bvh, parsed by the bvh package (a reader we did not write): forward
    kinematics from its offsets and channels gives frames.jsonl's joints."""
    from test_bvh import parsed_joints, read

    _, bvh, records, summary = recorded
    (report,) = [r for r in summary["recorded"] if r["path"] == str(bvh)]
    frame_of = {round(r["time_s"] - records[0]["time_s"], 6): i for i, r in enumerate(records)}
    every_hand = read(bvh)  # one skeleton with every track below its root
    assert every_hand.nframes == len(records)
    checked = 0
    for track in report["tracks"]:
        mocap, prefix = read(track["file"]), f"track{track['id']}_{track['side']}"
        for t, track_id, side, expected in recorded_hands(records):
            if track_id == track["id"] and side == track["side"]:
                frame = frame_of[round(t - 1e-6, 6)]
                np.testing.assert_allclose(parsed_joints(mocap, frame, prefix), expected, rtol=0, atol=1e-4)
                if not track["file"].endswith("-2.bvh"):  # a second stretch's joints share the first's names
                    np.testing.assert_allclose(parsed_joints(every_hand, frame, prefix), expected, rtol=0, atol=1e-4)
                checked += 1
    assert checked > 40


def test_the_recorded_gltf_passes_the_validator_and_reproduces_the_joints(recorded):
    from gltf_reader import Reader, joint_positions, root_scale
    from gltf_validator import find_validator

    glb, _, records, summary = recorded
    (issues,) = find_validator()(glb)
    assert issues["numErrors"] == 0, issues["messages"][:5]
    assert [r["path"] for r in summary["recorded"]] == [str(glb), str(recorded[1])]
    reader, checked, hidden = Reader(glb), 0, 0
    tracked = {}
    for t, track, side, joints in recorded_hands(records):
        # the track's node; a track whose side changed has one node per stretch (..._2)
        names = [f"track_{track}_{side}{suffix}" for suffix in ("", "_2", "_3", "_4")]
        name = next(n for n in names if n in reader.names and root_scale(reader, np.float32(t), n) == 1.0)
        worlds = reader.worlds_at(np.float32(t))
        np.testing.assert_allclose(joint_positions(reader, worlds, name), joints, rtol=0, atol=1e-4)
        tracked.setdefault(name, set()).add(round(t - 1e-6, 6))
        checked += 1
    for name, times in tracked.items():  # each hand is shown only while it is tracked
        for record in records:
            t = round(record["time_s"] - records[0]["time_s"], 6)
            if t not in times and min(times) < t < max(times) or t > max(times):
                hidden += 1
                assert root_scale(reader, np.float32(t + 1e-6), name) == 0.0, (name, t)
    assert checked > 40 and hidden > 0
