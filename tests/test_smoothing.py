"""One hand per frame, smoothed once, on the source's clock: the One Euro filter, the hand's
parameter filter (quaternions without wrap-around), the source's clock, and the webcam's records
(each one hand, the same however fast the machine runs)."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import numpy as np
import pytest

from handssca.runtime.camera import project
from handssca.runtime.files import write_video
from handssca.runtime.hands.filters import MAX_GAP_S, HandFilter, OneEuroFilter
from handssca.runtime.hands.finder import FoundHand
from handssca.runtime.hands.tracking import Track
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.mano.conventions import (
    axis_angle_to_quaternion,
    mirror_points,
    mirror_pose,
    quaternion_to_axis_angle,
)
from handssca.runtime.mano.model import mano_forward
from handssca.runtime.photos import two_hands_sequence
from handssca.runtime.predictor import PredictorOptions, open_predictor
from handssca.runtime.webcam import FolderSource, FrameSource, LatestFrameGrabber, WebcamOptions, run_webcam


def test_one_euro_filter_smooths_noise_and_follows_motion():
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    noisy = [f(np.array([1.0 + rng.normal(0, 0.1)]), i / 30) for i in range(300)]
    assert np.std(noisy[50:]) < 0.5 * 0.1
    f = OneEuroFilter(min_cutoff=1.0, beta=1.0)
    track = [f(np.array([i / 30.0]), i / 30) for i in range(60)]  # a steady motion: small lag
    assert abs(track[-1][0] - 59 / 30) < 0.1


def random_rotations(rng, count: int) -> np.ndarray:
    """Axis-angle vectors with angles over [0, pi], including the ends where conversions break."""
    axes = rng.normal(size=(count, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([[0.0, 1e-9, 1e-5, np.pi - 1e-7, np.pi], rng.uniform(0, np.pi, count - 5)])
    return axes * angles[:, None]


def test_quaternions_agree_with_scipy_and_round_trip():
    from scipy.spatial.transform import Rotation  # an independent implementation

    rotvecs = random_rotations(np.random.default_rng(7), 301)
    ours = axis_angle_to_quaternion(rotvecs)
    theirs = Rotation.from_rotvec(rotvecs).as_quat()[:, [3, 0, 1, 2]]  # scipy: x, y, z, w
    theirs *= np.where(theirs[:, :1] < 0, -1.0, 1.0)
    np.testing.assert_allclose(ours, theirs, atol=1e-12)
    back = quaternion_to_axis_angle(-3.0 * ours)  # any length, either sign
    same = Rotation.from_rotvec(back).as_matrix()
    np.testing.assert_allclose(same, Rotation.from_rotvec(rotvecs).as_matrix(), atol=1e-9)


def angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles (rad) between rotations given as axis-angle (..., 3)."""
    qa, qb = axis_angle_to_quaternion(a), axis_angle_to_quaternion(b)
    return 2 * np.arccos(np.clip(np.abs((qa * qb).sum(-1)), 0, 1))


def test_the_filter_turns_through_half_a_turn_without_a_jump():
    """The hand's global rotation sweeps through 180 degrees, where its axis-angle wraps round
    (the axis flips, the angle drops back): the filtered rotation keeps turning smoothly."""
    axis = np.array([0.0, 0.6, 0.8])
    angles = np.linspace(np.pi - 0.5, np.pi + 0.5, 31)
    poses = np.zeros((len(angles), 48))
    poses[:, :3] = quaternion_to_axis_angle(axis_angle_to_quaternion(angles[:, None] * axis))  # wrapped
    assert np.abs(np.diff(poses[:, :3], axis=0)).max() > 3  # what an axis-angle filter would average
    smoother = HandFilter()
    out = [smoother(pose, np.zeros(10), np.array([0, 0, 0.5]), i / 30)[0] for i, pose in enumerate(poses)]
    steps = angle_between(np.array(out)[1:, :3], np.array(out)[:-1, :3])
    assert steps.max() < 2 * (angles[1] - angles[0])  # no step larger than the motion's own
    assert angle_between(out[-1][:3], poses[-1, :3]) < 0.1  # and it follows


def test_the_filter_passes_a_still_hand_and_smooths_a_noisy_one():
    rng = np.random.default_rng(3)
    pose, shape, translation = rng.normal(0, 0.3, 48), rng.normal(0, 1, 10), np.array([0.05, -0.02, 0.6])
    smoother = HandFilter(offset=np.concatenate([np.zeros(3), rng.normal(0, 0.2, 45)]))
    for i in range(30):
        got = smoother(pose, shape, translation, i / 30)
    for value, expected in zip(got, (pose, shape, translation), strict=True):
        np.testing.assert_allclose(value, expected, atol=1e-9)
    smoother = HandFilter()
    noisy = [translation + rng.normal(0, 0.01, 3) for _ in range(90)]
    out = np.array([smoother(pose, shape, t, i / 30)[2] for i, t in enumerate(noisy)])
    assert np.diff(out[30:], axis=0).std() < 0.5 * np.diff(np.array(noisy[30:]), axis=0).std()


def test_a_gap_in_the_clock_starts_the_filter_afresh():
    smoother = HandFilter()
    pose, shape = np.zeros(48), np.zeros(10)
    for i in range(10):
        smoother(pose, shape, np.array([0.0, 0.0, 0.5]), i / 30)
    far = np.array([0.3, 0.0, 0.9])
    after_gap = smoother(pose, shape, far, 9 / 30 + MAX_GAP_S + 0.01)[2]
    np.testing.assert_array_equal(after_gap, far)  # no state dragged across the gap
    assert not np.allclose(smoother(pose, shape, far + 0.1, 9 / 30 + MAX_GAP_S + 0.05)[2], far + 0.1)


def test_a_track_whose_side_changes_gets_a_new_filter():
    track = Track(0, np.array([0, 0, 10, 10.0]), "right", 0)
    track.smoother = HandFilter()
    hand = FoundHand(np.array([0, 0, 10, 10.0]), "right", 0.9, 0.9, np.zeros((21, 2)), 0.0, None)
    track.take(hand)
    assert track.smoother is not None
    track.take(replace(hand, side="left"))
    assert track.smoother is None and track.side == "left"


# ------------------------------------------------------------------------------------------------
# The source's clock


def test_a_video_runs_on_its_container_timestamps_and_a_folder_on_its_nominal_rate(tmp_path):
    frames = [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(6)]
    video = write_video(tmp_path / "v.mp4", frames, 8.0)
    source = FrameSource(str(video))
    stamps = [source.read(None)[1] for _ in range(6)]
    np.testing.assert_allclose(stamps, np.arange(6) / 8.0, atol=1e-6)
    folder = tmp_path / "f"
    folder.mkdir()
    import cv2

    for i, frame in enumerate(frames[:3]):
        cv2.imwrite(str(folder / f"{i}.png"), frame)
    source = FrameSource(str(folder))
    assert [source.read(None)[1] for _ in range(3)] == pytest.approx([0.0, 1 / FolderSource.fps, 2 / FolderSource.fps])


def test_a_container_without_timestamps_falls_back_to_its_rate():
    class NoStamps:
        fps = 25.0

        def __init__(self):
            self.left = 4

        def read(self):
            self.left -= 1
            return self.left >= 0, np.zeros((8, 8, 3), np.uint8)

        def get(self, prop):
            return 0.0  # what some backends give for every frame

        def release(self):
            pass

    source = FrameSource("clip.mp4", opener=lambda _: NoStamps())
    assert [source.read(None)[1] for _ in range(4)] == pytest.approx([0.0, 0.04, 0.08, 0.12])


def test_a_live_frame_carries_the_time_it_was_grabbed():
    class Camera:
        def read(self):
            time.sleep(0.01)
            return True, np.zeros((8, 8, 3), np.uint8)

        def release(self):
            pass

    grabber = LatestFrameGrabber(0, opener=lambda _: Camera())
    try:
        frame, grabbed = grabber.latest()
        time.sleep(0.2)  # processing: the frame's time stays when it was grabbed
        taken = time.monotonic()
        assert frame is not None and grabbed <= taken - 0.2
        later, grabbed_later = grabber.latest()
        assert grabbed < grabbed_later <= time.monotonic()
    finally:
        grabber.close()


# ------------------------------------------------------------------------------------------------
# The webcam's records


@pytest.fixture(scope="module")
def moving_hands(tmp_path_factory):
    """The photographs moving (a left and a right hand), as a video at 15 frames a second."""
    sequence = two_hands_sequence(40)
    path = tmp_path_factory.mktemp("moving") / "hands.mp4"
    write_video(path, [f.image for f in sequence], 15.0)
    return path


def records(predictor, video, folder, **options) -> list[dict]:
    report = run_webcam(predictor, str(video), WebcamOptions(headless=True, output=folder, **options))
    assert report.error is None
    return [json.loads(line) for line in (folder / "frames.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def predictor(tiny_onnx):
    return open_predictor(PredictorOptions(model=str(tiny_onnx)))


@pytest.fixture(scope="module")
def smoothed(predictor, moving_hands, tmp_path_factory):
    return records(predictor, moving_hands, tmp_path_factory.mktemp("smoothed"))


def test_every_record_is_one_hand(smoothed):
    """The joints are the hand model's joints of the reported pose and shape (a left hand the
    mirror image of the right hand of the mirrored pose), and the keypoints their projection."""
    mano, fingertip_ids = build_builtin_hand()
    hands = [(record, hand) for record in smoothed for hand in record["hands"]]
    assert {hand["side"] for _, hand in hands} == {"left", "right"} and len(hands) > 40
    for record, hand in hands:
        pose = np.array(hand["pose"])
        pose = pose if hand["side"] == "right" else mirror_pose(pose)
        _, joints = mano_forward(
            mano, pose[None], np.array([hand["shape"]]), flat_hand_mean=False, fingertip_ids=fingertip_ids
        )
        joints = joints[0] - joints[0, 0]
        joints = joints if hand["side"] == "right" else mirror_points(joints)
        np.testing.assert_allclose(hand["joints_3d"], joints, atol=1e-7)
        k = record["intrinsics"]
        assert k["guessed"] is True
        K = np.array([[k["fx"], 0, k["cx"]], [0, k["fy"], k["cy"]], [0, 0, 1]])
        np.testing.assert_array_equal(k["matrix"], K)
        camera = np.array(hand["joints_3d"]) + np.array(hand["translation"])
        np.testing.assert_allclose(hand["keypoints_2d"], project(camera, K), atol=1e-3)


def test_the_same_video_gives_the_same_records_however_fast_it_runs(predictor, moving_hands, smoothed, tmp_path):
    """A test hook slows the loop (a busy machine): the filters run on the video's clock, so the
    hand records do not change."""
    network = predictor.predict

    def slow(*args, **kwargs):
        time.sleep(0.03)
        return network(*args, **kwargs)

    predictor.predict = slow
    try:
        delayed = records(predictor, moving_hands, tmp_path)
    finally:
        del predictor.predict
    assert [(r["frame"], r["time_s"], r["hands"]) for r in delayed] == [
        (r["frame"], r["time_s"], r["hands"]) for r in smoothed
    ]
    assert [r["time_s"] for r in smoothed[:3]] == pytest.approx([0, 1 / 15, 2 / 15], abs=1e-6)


def test_each_track_starts_its_filter_afresh(predictor, moving_hands, smoothed, tmp_path):
    """Unsmoothed, the same run tracks the same hands (the tracker follows the network's own
    keypoints); each track's first frame is the network's hand as it is, the later ones are not."""
    raw = records(predictor, moving_hands, tmp_path, smooth=False)
    seen, firsts, later_differ = set(), 0, 0
    for smooth_record, raw_record in zip(smoothed, raw, strict=True):
        by_track = {hand["track"]: hand for hand in raw_record["hands"]}
        assert by_track.keys() == {hand["track"] for hand in smooth_record["hands"]}
        for hand in smooth_record["hands"]:
            if hand["track"] not in seen:
                seen.add(hand["track"])
                firsts += 1
                same_hand(hand, by_track[hand["track"]])
            else:
                later_differ += not np.allclose(hand["pose"], by_track[hand["track"]]["pose"], atol=1e-6)
    assert firsts >= 4 and later_differ > 20  # the video loses and finds both hands


def same_hand(a: dict, b: dict) -> None:
    """Two hand records alike: the same fields, numbers to float precision (the filter's first
    value goes through quaternions and back)."""
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, list):
            np.testing.assert_allclose(value, b[key], atol=1e-3 if key == "keypoints_2d" else 1e-6, err_msg=key)
        else:
            assert value == b[key], key


def test_a_translation_behind_the_camera_is_held_at_the_least_depth():
    """Joints that disagree with their keypoints (an untrained network) can solve to a hand at or
    behind the camera, whose projection is infinite: the depth is held at MIN_DEPTH instead, with
    the least-squares x and y there."""
    from handssca.runtime.camera import MIN_DEPTH, solve_translation

    rng = np.random.default_rng(5)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    joints = rng.normal(0, 0.03, (21, 3))
    mirrored = 2 * np.array([320, 240]) - project(joints + [0, 0, 0.5], K)  # the hand seen point-reversed
    t = solve_translation(joints, mirrored, K)
    assert t[2] == MIN_DEPTH and np.isfinite(project(joints + t, K)).all()
    # the bounded least squares of the projection's linear equations, f (X + t) = (u - c) (Z + t_z)
    # for each keypoint and axis, by scipy's solver
    from scipy.optimize import lsq_linear

    du, dv = (mirrored - [320, 240]).T
    rows = [np.stack([np.full(21, 500.0), np.zeros(21), -du], 1), np.stack([np.zeros(21), np.full(21, 500.0), -dv], 1)]
    rhs = [du * joints[:, 2] - 500 * joints[:, 0], dv * joints[:, 2] - 500 * joints[:, 1]]
    bounded = lsq_linear(np.concatenate(rows), np.concatenate(rhs), bounds=([-np.inf, -np.inf, MIN_DEPTH], np.inf))
    np.testing.assert_allclose(t, bounded.x, atol=1e-9)
