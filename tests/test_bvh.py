"""BVH output (runtime/outputs/bvh.py): a parser we did not write (the ``bvh`` package) reads each
file, and forward kinematics done here from what it parsed alone (OFFSETs, channels, the declared
channel order) puts the 21 joints on the recorded ones in every tracked frame; the rotations are
MANO's (each frame's own rest skeleton, turned by the file's angles, lands on the recorded joints);
the motion section has the frames, frame time and held poses it should."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from bvh import Bvh

from handssca.errors import OutputError
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.mano.model import JOINT_ORDER, MANO_TO_FREIHAND
from handssca.runtime.outputs.bvh import euler_zxy, write_bvh
from handssca.runtime.outputs.recording import Recording

START = 12.5  # the source's clock
FPS = 30.0
# Right (track 1): frames 1, 2, then a gap, then 5, 6; left (track 2) every frame.
PRESENCE = {1: ("right", {1, 2, 5, 6}), 2: ("left", set(range(8)))}


@pytest.fixture(scope="module")
def hand_model():
    mano, tips = build_builtin_hand()
    return mano, tuple(tips)


def global_rotation(rng, frame: int, track: int) -> np.ndarray:
    """Hard cases for Euler angles: near half a turn, a quarter turn about x (Z-X-Y's gimbal lock:
    x = 90 degrees), or a large random one."""
    if frame == 5:
        return np.array([np.pi / 2, 0.0, 0.0]) * (1 if track == 1 else -1)
    if (frame + track) % 3 == 0:
        axis = rng.normal(size=3)
        return axis / np.linalg.norm(axis) * (np.pi - rng.uniform(0, 0.02))
    return rng.normal(0, 1.2, 3)


def recorded_hand(rec: Recording, side: str, pose, shape, translation) -> types.SimpleNamespace:
    """A hand as the webcam reports it: its joints derived from its parameters."""
    joints = rec.pose_hand(side, pose, shape, translation)[1]
    return types.SimpleNamespace(side=side, pose=pose, shape=shape, translation=translation, joints_camera=joints)


def make_recording(rng, mano, tips, presence: dict, frames: int, times=None) -> Recording:
    """``presence``: track id -> (side, the frame indices it has); moderate finger poses, each
    track's shape varying frame to frame, hands half a metre in front of the camera."""
    rec = Recording(mano, tips)
    shapes = {track: rng.normal(0, 0.7, 10) for track in presence}
    times = [START + i / FPS for i in range(frames)] if times is None else times
    for i in range(frames):
        hands = []
        for track, (side, present) in presence.items():
            if i in present:
                pose = np.concatenate([global_rotation(rng, i, track), rng.normal(0, 0.3, 45)])
                shape = shapes[track] + rng.normal(0, 0.1, 10)
                translation = rng.normal([0.1 * track - 0.15, 0.0, 0.5], 0.05)
                hands.append((track, recorded_hand(rec, side, pose, shape, translation)))
        rec.add(times[i], hands)
    return rec


def recording_file(rng, hand_model, folder):
    mano, tips = hand_model
    # The built-in mean pose bends about x alone, which a mirror keeps: a mean with y and z parts
    # tells a left hand's offset from a right one's.
    mano = dataclasses.replace(mano, hands_mean=mano.hands_mean + rng.normal(0, 0.15, 45))
    rec = make_recording(rng, mano, tips, PRESENCE, 8)
    return rec, write_bvh(folder / "hands.bvh", rec)


# ------------------------------------------------------------------------------------------------
# Forward kinematics from the parsed file: a joint's transform to its parent is T(p) R1 R2 R3 with
# the rotations in the order its CHANNELS list them (degrees) and p its position channels, which
# take the OFFSET's place (the module's convention); a joint without them sits at its OFFSET.


def axis_rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {
        "X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def parsed_local(mocap: Bvh, frame: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(rotation, translation) of joint ``name`` relative to its parent in ``frame``."""
    translation, rotation = np.array(mocap.joint_offset(name)), np.eye(3)
    channels = mocap.joint_channels(name)
    for channel, value in zip(channels, mocap.frame_joint_channels(frame, name, channels), strict=True):
        if channel.endswith("position"):
            translation["XYZ".index(channel[0])] = value
        else:
            rotation = rotation @ axis_rotation(channel[0], value)
    return rotation, translation


def parsed_joints(mocap: Bvh, frame: int, prefix: str) -> np.ndarray:
    """(21, 3) the joints ``<prefix>_<joint>`` in FreiHAND's order (JOINT_ORDER)."""
    world = {}
    for joint in mocap.get_joints():  # parents before children
        rotation, translation = parsed_local(mocap, frame, joint.name)
        parent = mocap.joint_parent(joint.name)
        if parent is None:
            world[joint.name] = (rotation, translation)
        else:
            parent_rotation, parent_position = world[parent.name]
            world[joint.name] = (parent_rotation @ rotation, parent_position + parent_rotation @ translation)
    return np.stack([world[f"{prefix}_{name}"][1] for name in JOINT_ORDER])


def read(path) -> Bvh:
    with open(path) as f:
        return Bvh(f.read())


# ------------------------------------------------------------------------------------------------


def test_the_parsed_skeletons_reproduce_every_tracked_frame(rng, hand_model, tmp_path):
    rec, report = recording_file(rng, hand_model, tmp_path)
    # In the recording's order: track 2 (left) was seen first.
    every_hand = str(tmp_path / "hands.bvh")  # both tracks in one skeleton, then one file a track
    assert report["files"] == [every_hand, str(tmp_path / "hands.track2.bvh"), str(tmp_path / "hands.track1.bvh")]
    worst = 0.0
    for track, entry in zip(rec.tracks, report["tracks"], strict=True):
        for frame in track.frames:  # the one skeleton holds each track's joints at the same places
            index = int(np.flatnonzero(np.array(rec.times) == frame.time_s)[0])
            joints = parsed_joints(read(every_hand), index, f"track{track.id}_{track.side}")
            np.testing.assert_allclose(joints, frame.joints, rtol=0, atol=1e-4)
        mocap, prefix = read(entry["file"]), f"track{track.id}_{track.side}"
        index = {t: i for i, t in enumerate(rec.times)}
        for frame in track.frames:
            joints = parsed_joints(mocap, index[frame.time_s], prefix)
            worst = max(worst, float(np.abs(joints - frame.joints).max()))
            np.testing.assert_allclose(joints, frame.joints, rtol=0, atol=1e-4)
    print(f"worst joint error {worst:.2e} m")
    assert worst < 1e-6


def test_the_rotations_are_mano_s_and_the_positions_its_bone_lengths(rng, hand_model, tmp_path):
    """The joints land by rotation, not by position channels making up for a wrong one: in every
    frame each MANO joint's position channels are that frame's own rest bone (its shape's,
    mirrored for a left hand), which the file's rotations turn onto the recorded joints; the
    fingertips do not rotate."""
    rec, report = recording_file(rng, hand_model, tmp_path)
    mano = rec.mano
    index = {t: i for i, t in enumerate(rec.times)}
    for track, entry in zip(rec.tracks, report["tracks"], strict=True):
        mocap, prefix = read(entry["file"]), f"track{track.id}_{track.side}"
        mirror = np.array([-1.0, 1.0, 1.0]) if track.side == "left" else np.ones(3)
        names = [f"{prefix}_{JOINT_ORDER[MANO_TO_FREIHAND.index(k)]}" for k in range(16)]
        for frame in track.frames:
            shaped = mano.v_template + np.einsum("vcl,l->vc", mano.shapedirs, frame.shape)
            rest = mano.J_regressor @ shaped * mirror  # (16, 3) MANO's order
            for k in range(1, 16):
                bone = rest[k] - rest[mano.parents[k]]
                _, translation = parsed_local(mocap, index[frame.time_s], names[k])
                np.testing.assert_allclose(translation, bone, rtol=0, atol=1e-7)
            for tip in ("thumb_4", "index_4", "middle_4", "ring_4", "pinky_4"):
                angles = mocap.frame_joint_channels(index[frame.time_s], f"{prefix}_{tip}", ["Zrotation", "Xrotation",
                                                                                              "Yrotation"])  # fmt: skip
                assert angles == [0.0, 0.0, 0.0]


def test_the_file_structure_frames_and_untracked_frames(rng, hand_model, tmp_path):
    rec, report = recording_file(rng, hand_model, tmp_path)
    assert report["frames"] == 8 and report["evenly_spaced"]
    assert report["frame_time_s"] == pytest.approx(1 / FPS, abs=1e-9)
    assert [(t["id"], t["side"], t["tracked_frames"]) for t in report["tracks"]] == [
        (2, "left", [[0, 7]]),
        (1, "right", [[1, 2], [5, 6]]),
    ]
    for track, entry in zip(rec.tracks, report["tracks"], strict=True):
        mocap, prefix = read(entry["file"]), f"track{track.id}_{track.side}"
        assert mocap.nframes == len(mocap.frames) == 8
        assert mocap.frame_time == pytest.approx(1 / FPS, abs=1e-8)
        names = mocap.get_joints_names()
        assert sorted(names) == sorted(f"{prefix}_{name}" for name in JOINT_ORDER)
        assert len(mocap.search("ROOT")) == 1 and len(mocap.search("End", "Site")) == 5
        width = sum(len(mocap.joint_channels(name)) for name in names)
        assert width == 21 * 6
        assert all(len(line) == width for line in mocap.frames)
        # OFFSETs: the median shape's rest skeleton (the wrist at the origin).
        mirror = np.array([-1.0, 1.0, 1.0]) if track.side == "left" else np.ones(3)
        shaped = rec.mano.v_template + np.einsum("vcl,l->vc", rec.mano.shapedirs, track.median_shape)
        rest = rec.mano.J_regressor @ shaped * mirror
        assert mocap.joint_offset(f"{prefix}_wrist") == (0.0, 0.0, 0.0)
        np.testing.assert_allclose(mocap.joint_offset(f"{prefix}_index_2"), rest[2] - rest[1], rtol=0, atol=1e-8)
    # Track 1 holds its first pose before it starts and its last one in the gap and after it.
    mocap = read(report["tracks"][1]["file"])
    assert mocap.frames[0] == mocap.frames[1] and mocap.frames[3] == mocap.frames[4] == mocap.frames[2]
    assert mocap.frames[7] == mocap.frames[6] != mocap.frames[5]


def test_uneven_times_are_written_as_they_are(rng, hand_model, tmp_path):
    """A live camera's clock: no resampling, Frame Time the median interval."""
    times = [0.0, 0.03, 0.07, 0.1, 0.2]
    rec = make_recording(rng, *hand_model, {3: ("left", {0, 2, 4})}, 5, times=times)
    report = write_bvh(tmp_path / "live.bvh", rec)
    mocap = read(tmp_path / "live.track3.bvh")
    assert mocap.nframes == 5 and not report["evenly_spaced"]
    assert mocap.frame_time == pytest.approx(np.median(np.diff(times)), abs=1e-8)
    for frame, i in zip(rec.tracks[0].frames, (0, 2, 4), strict=True):
        np.testing.assert_allclose(parsed_joints(mocap, i, "track3_left"), frame.joints, rtol=0, atol=1e-4)


def test_angles_turn_continuously(hand_model, tmp_path):
    """A hand turning one and a half times about the camera's axis: its wrist's Z angle moves on
    by the same step every frame, never jumping by a whole turn."""
    rec = Recording(*hand_model)
    turns = np.linspace(0, 3 * np.pi, 19)
    for i, turn in enumerate(turns):
        pose = np.concatenate([[0.0, 0.0, turn], np.zeros(45)])
        rec.add(i / FPS, [(5, recorded_hand(rec, "right", pose, np.zeros(10), [0.0, 0.0, 0.5]))])
    write_bvh(tmp_path / "turn.bvh", rec)
    mocap = read(tmp_path / "turn.track5.bvh")
    z = np.array(mocap.frames_joint_channels("track5_right_wrist", ["Zrotation"]))[:, 0]
    np.testing.assert_allclose(np.diff(z), np.degrees(turns[1]), rtol=0, atol=1e-4)


def test_a_track_changing_side_is_a_second_file(rng, hand_model, tmp_path):
    """Track 4 seen as a right hand, then a left one: two skeletons, two files."""
    rec = Recording(*hand_model)
    for i, side in enumerate(("right", "left")):
        pose = np.concatenate([rng.normal(0, 1.0, 3), rng.normal(0, 0.3, 45)])
        rec.add(START + i / FPS, [(4, recorded_hand(rec, side, pose, rng.normal(0, 0.7, 10), [0.0, 0.0, 0.5]))])
    report = write_bvh(tmp_path / "hands.bvh", rec)
    assert report["files"][1:] == [str(tmp_path / "hands.track4.bvh"), str(tmp_path / "hands.track4-2.bvh")]
    assert [t["tracked_frames"] for t in report["tracks"]] == [[[0, 0]], [[1, 1]]]
    for i, (track, entry) in enumerate(zip(rec.tracks, report["tracks"], strict=True)):
        joints = parsed_joints(read(entry["file"]), i, f"track4_{track.side}")
        np.testing.assert_allclose(joints, track.frames[0].joints, rtol=0, atol=1e-4)


def test_euler_angles_rebuild_the_rotation_even_at_gimbal_lock(rng):
    """Z-X-Y angles composed as the channels declare them give the rotation back: random ones,
    half turns, and exact locks (x = +-90 degrees, where z and y turn about one axis)."""
    rotations = []
    for angle in np.concatenate([rng.uniform(0, np.pi, 100), np.pi - rng.uniform(0, 1e-6, 99), [np.pi]]):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        k = np.cross(np.eye(3), axis)  # the cross-product matrix of the unit axis
        rotations.append(np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k)
    for z, y in rng.uniform(-180, 180, (20, 2)):
        for lock in (1.0, -1.0):  # exactly: cos(90 degrees) in floating point is not 0
            x = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -lock], [0.0, lock, 0.0]])
            rotations.append(axis_rotation("Z", z) @ x @ axis_rotation("Y", y))
    for rotation, (z, x, y) in zip(rotations, euler_zxy(np.stack(rotations)), strict=True):
        rebuilt = axis_rotation("Z", z) @ axis_rotation("X", x) @ axis_rotation("Y", y)
        np.testing.assert_allclose(rebuilt, rotation, rtol=0, atol=1e-9)


def test_an_empty_recording_is_refused(hand_model, tmp_path):
    rec = Recording(*hand_model)
    with pytest.raises(OutputError, match="no hand was tracked, nothing to write"):
        write_bvh(tmp_path / "none.bvh", rec)
    rec.add(0.0, [])
    rec.add(0.1, [])
    with pytest.raises(OutputError, match="none.bvh: no hand was tracked"):
        write_bvh(tmp_path / "none.bvh", rec)
    assert list(tmp_path.iterdir()) == []
