"""glTF 2.0 output (runtime/outputs/gltf.py): every file passes Khronos' glTF-Validator, and a reader
we did not write (pygltflib's loader, with the accessors decoded and the animation evaluated and
skinned here) finds the recorded joints on the nodes, the hand model's mesh on the skin, each
track shown only while tracked, and meshes right side out in glTF's axes."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pytest
from gltf_reader import F, Reader, joint_positions, root_scale
from gltf_validator import find_validator

from handssca.errors import OutputError
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.outputs.gltf import write_animation, write_scene
from handssca.runtime.outputs.recording import Recording

START = 12.5  # the source's clock: the animation starts at the recording's first time
FPS = 30.0


@pytest.fixture(scope="session")
def validate():
    """.glb paths -> each file's validator issues; skips, or fails under HANDSSCA_REQUIRE_NODE=1, without it."""
    return find_validator()


@pytest.fixture(scope="module")
def hand_model():
    mano, tips = build_builtin_hand()
    return mano, tuple(tips)


def recorded_hand(rec: Recording, side: str, pose, shape, translation) -> types.SimpleNamespace:
    """A hand as the webcam reports it: its joints derived from its parameters."""
    vertices, joints = rec.pose_hand(side, pose, shape, translation)
    return types.SimpleNamespace(side=side, pose=pose, shape=shape, translation=translation,
                                 joints_camera=joints, vertices_camera=vertices)  # fmt: skip


def make_recording(rng, mano, tips, presence: dict[int, tuple[str, set[int]]], frames: int) -> Recording:
    """``presence``: track id -> (side, the frame indices it has); random moderate poses, each
    track's shape varying a little frame to frame, hands half a metre in front of the camera."""
    rec = Recording(mano, tips)
    shapes = {track: rng.normal(0, 0.7, 10) for track in presence}
    for i in range(frames):
        hands = []
        for track, (side, present) in presence.items():
            if i in present:
                pose = np.concatenate([rng.normal(0, 1.2, 3), rng.normal(0, 0.3, 45)])
                shape = shapes[track] + rng.normal(0, 0.05, 10)
                translation = rng.normal([0.1 * track - 0.15, 0.0, 0.5], 0.05)
                hands.append((track, recorded_hand(rec, side, pose, shape, translation)))
        rec.add(START + i / FPS, hands)
    return rec


# Right (track 1): frames 1, 2, then a gap, then 5, 6; left (track 2) every frame, alone in 0, 3, 4 and 7.
PRESENCE = {1: ("right", {1, 2, 5, 6}), 2: ("left", set(range(8)))}


# ------------------------------------------------------------------------------------------------
# An independent reader: the accessors decoded, the animation sampled, the nodes composed and the
# skin posed by glTF 2.0's definitions.


def check_track(reader: Reader, rec: Recording, track, report: dict, name: str = "") -> float:
    """Every frame of ``track`` (node ``name``, by default ``track_<id>_<side>``): the 21 nodes on
    the recorded joints, the skin on the hand model's mesh within the writer's figure; returns the
    worst vertex distance, mm."""
    name, worst = name or f"track_{track.id}_{track.side}", 0.0
    for frame in track.frames:
        t = np.float32(frame.time_s - rec.times[0])
        worlds = reader.worlds_at(t)
        assert root_scale(reader, t, name) == 1.0
        np.testing.assert_allclose(joint_positions(reader, worlds, name), frame.joints, rtol=0, atol=1e-5)
        vertices = reader.skinned(f"{name}_mesh", t) * F
        model = rec.pose_hand(track.side, frame.pose, frame.shape, frame.translation)[0]
        worst = max(worst, 1000 * float(np.linalg.norm(vertices - model, axis=1).max()))
    assert worst <= report["mesh_vs_model_mm"]["worst"] + 0.01
    return worst


# ------------------------------------------------------------------------------------------------


# The files the tests write; test_every_file_passes_the_khronos_validator validates each kind.


def animation_file(rng, hand_model, folder):
    """Two tracks (PRESENCE): a right hand that leaves and comes back, a left one alone in some frames."""
    mano, tips = hand_model
    # The built-in mean pose bends about x alone, which a mirror keeps: a mean with y and z parts
    # tells a left hand's offset from a right one's.
    mano = dataclasses.replace(mano, hands_mean=mano.hands_mean + rng.normal(0, 0.15, 45))
    rec = make_recording(rng, mano, tips, PRESENCE, 8)
    return folder / "hands.glb", rec, write_animation(folder / "hands.glb", rec)


def dense_file(rng, hand_model, folder):
    """A model whose every vertex has all 16 joints (as MANO's weights nearly do)."""
    mano, tips = hand_model
    dense = dataclasses.replace(mano, weights=mano.weights * 0.84 + np.full(mano.weights.shape, 0.01))
    rec = make_recording(rng, dense, tips, {3: ("right", {0, 1, 2})}, 3)
    return folder / "dense.glb", rec, write_animation(folder / "dense.glb", rec)


def one_frame_file(rng, hand_model, folder):
    """A track of one frame, between two frames without hands."""
    rec = make_recording(rng, *hand_model, {7: ("left", {1})}, 3)
    return folder / "one.glb", rec, write_animation(folder / "one.glb", rec)


def side_change_file(rng, hand_model, folder):
    """Track 4 seen as a right hand, then a left one, then a right one again: three tracks."""
    rec = Recording(*hand_model)
    for i, side in enumerate(("right", "left", "right")):
        pose = np.concatenate([rng.normal(0, 1, 3), rng.normal(0, 0.3, 45)])
        rec.add(START + i / FPS, [(4, recorded_hand(rec, side, pose, rng.normal(0, 0.7, 10), np.array([0, 0, 0.4])))])
    return folder / "sides.glb", rec, write_animation(folder / "sides.glb", rec)


def scene_file(rng, hand_model, folder):
    """The two hands of one photograph, a right and a left."""
    mano, tips = hand_model
    rec = Recording(mano, tips)
    hands = [
        recorded_hand(rec, side, np.concatenate([rng.normal(0, 1, 3), rng.normal(0, 0.3, 45)]), rng.normal(0, 0.7, 10),
                      np.array([x, 0.02, 0.45]))
        for side, x in (("right", -0.1), ("left", 0.1))
    ]  # fmt: skip
    return write_scene(folder / "photo.glb", hands, mano), hands


def test_every_file_passes_the_khronos_validator(hand_model, rng, tmp_path, validate):
    makers = (animation_file, dense_file, one_frame_file, side_change_file, scene_file)
    paths = [make(rng, hand_model, tmp_path)[0] for make in makers]
    for path, issues in zip(paths, validate(*paths), strict=True):
        errors = [m for m in issues["messages"] if m["severity"] == 0]
        assert issues["numErrors"] == 0, (path.name, errors[:5])
        warnings = sorted({m["code"] for m in issues["messages"] if m["severity"] == 1})
        print(f"{path.name}: glTF-Validator: 0 errors, {issues['numWarnings']} warnings {warnings}")


def test_animation_reproduces_the_recording(hand_model, rng, tmp_path):
    path, rec, report = animation_file(rng, hand_model, tmp_path)
    print(report)
    mano = rec.mano
    assert [t["side"] for t in report["tracks"]] == ["left", "right"] and report["frames"] == 12
    assert report["duration_s"] == pytest.approx(7 / FPS, abs=1e-6)
    assert report["dropped_weight_max"] == 0.0  # the built-in hand has at most 6 influences a vertex
    errors = report["mesh_vs_model_mm"]
    # the median shape and no pose-corrective blend shapes: a few millimetres (measured over 60
    # seeds: median 1.7 mm, the worst frame at most 4.2 mm)
    assert 0 < errors["median"] <= errors["worst"] < 10

    reader = Reader(path)
    for track in rec.tracks:
        node = reader.gltf.nodes[reader.names[f"track_{track.id}_{track.side}"]]
        assert node.extras["side"] == track.side
        assert next(m for m in reader.gltf.meshes if m.name == node.name).extras["side"] == track.side
        check_track(reader, rec, track, report)
        # the rest mesh: the median shape, a left hand mirrored and its faces flipped
        primitive = reader.primitive(node.name)
        shaped = mano.v_template + np.einsum("vcl,l->vc", mano.shapedirs, track.median_shape)
        mirror = np.array([-1.0, 1, 1]) if track.side == "left" else np.ones(3)
        np.testing.assert_allclose(reader.array(primitive.attributes.POSITION), shaped * mirror * F, atol=1e-6)
        faces = mano.faces if track.side == "right" else mano.faces[:, ::-1]
        np.testing.assert_array_equal(reader.array(primitive.indices).reshape(-1, 3), faces)

    # rotations keyed on one hemisphere, so that interpolating between two frames takes the short way
    for channel in reader.gltf.animations[0].channels:
        if channel.target.path == "rotation":
            q = reader.array(reader.gltf.animations[0].samplers[channel.sampler].output).astype(np.float64)
            assert np.all(np.einsum("ij,ij->i", q[1:], q[:-1]) >= 0)

    # visibility: the right hand only in its frames; before its first, in its gap and after its last, scale 0
    for i, t in enumerate(rec.times):
        t = np.float32(t - rec.times[0])
        assert root_scale(reader, t, "track_1_right") == (1.0 if i in PRESENCE[1][1] else 0.0), i
        assert root_scale(reader, t, "track_2_left") == 1.0
    assert root_scale(reader, np.float32(3.5 / FPS), "track_1_right") == 0.0  # between two frames of the gap


def test_animation_keeps_at_most_eight_influences(hand_model, rng, tmp_path):
    """The 8 largest weights kept in two sets, renormalised, and the weight left out reported."""
    path, rec, report = dense_file(rng, hand_model, tmp_path)
    assert report["dropped_weight_max"] == pytest.approx(0.08)  # 8 joints of 0.01 each
    reader = Reader(path)
    attributes = reader.primitive("track_3_right").attributes
    weights = np.concatenate([reader.array(attributes.WEIGHTS_0), reader.array(attributes.WEIGHTS_1)], axis=1)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
    assert (weights > 0).sum(1).max() == 8
    check_track(reader, rec, rec.tracks[0], report)


def test_animation_of_one_frame_and_of_nothing(hand_model, rng, tmp_path):
    path, rec, report = one_frame_file(rng, hand_model, tmp_path)
    assert report["frames"] == 1
    reader = Reader(path)
    check_track(reader, rec, rec.tracks[0], report)
    assert [root_scale(reader, np.float32(t - START), "track_7_left") for t in rec.times] == [0, 1, 0]

    empty = make_recording(rng, *hand_model, {}, 4)
    with pytest.raises(OutputError, match="empty.glb: the recording has no tracked hand"):
        write_animation(tmp_path / "empty.glb", empty)
    assert not list(tmp_path.glob("*empty.glb*"))  # nothing left behind


def outward_share(vertices: np.ndarray, faces: np.ndarray, part: np.ndarray) -> float:
    """The share of faces whose normal (by their winding) points away from the centre of their part
    of the hand (the vertices of the joint that moves them most: the palm, each finger segment)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    centres = np.stack([vertices[part == k].mean(0) for k in range(part.max() + 1)])
    normals = np.cross(b - a, c - a)
    return float(np.mean(np.einsum("ij,ij->i", normals, (a + b + c) / 3 - centres[part[faces[:, 0]]]) > 0))


def test_a_track_that_changes_side_is_one_track_per_side(hand_model, rng, tmp_path):
    path, rec, report = side_change_file(rng, hand_model, tmp_path)
    assert len(report["tracks"]) == 3
    reader = Reader(path)
    names = ("track_4_right", "track_4_left", "track_4_right_2")
    for t, (track, name) in enumerate(zip(rec.tracks, names, strict=True)):
        check_track(reader, rec, track, report, name)
        assert [root_scale(reader, np.float32(s - START), name) for s in rec.times] == [float(i == t) for i in range(3)]


def test_scene_is_right_side_out_in_gltf_axes(hand_model, rng, tmp_path):
    mano = hand_model[0]
    path, hands = scene_file(rng, hand_model, tmp_path)
    reader = Reader(path)
    part = mano.weights.argmax(1)
    for i, hand in enumerate(hands):
        name = f"hand_{i}_{hand.side}"
        node = reader.gltf.nodes[reader.names[name]]
        assert node.extras["side"] == hand.side and reader.gltf.meshes[node.mesh].name == name
        primitive = reader.gltf.meshes[node.mesh].primitives[0]
        positions = reader.array(primitive.attributes.POSITION).astype(np.float64)
        faces = reader.array(primitive.indices).reshape(-1, 3).astype(np.int64)
        np.testing.assert_allclose(positions * F, hand.vertices_camera, atol=1e-6)  # y up, z towards the viewer
        assert positions[:, 2].max() < 0  # in front of the camera: glTF's -z
        worlds = reader.worlds_at(0.0)
        np.testing.assert_allclose(joint_positions(reader, worlds, name, "_wrist"), hand.joints_camera, atol=1e-6)

        assert outward_share(positions, faces, part) > 0.95, hand.side  # a left hand too
        a, b, c = (positions[faces[:, k]] for k in range(3))
        assert np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6 > 0  # a closed mesh with positive volume
        # NORMAL: unit, and the faces' (area-weighted) normals around each vertex
        normals = reader.array(primitive.attributes.NORMAL).astype(np.float64)
        np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
        around = np.zeros_like(positions)
        for k in range(3):
            np.add.at(around, faces[:, k], np.cross(b - a, c - a))
        around /= np.linalg.norm(around, axis=1, keepdims=True)
        assert np.einsum("ij,ij->i", normals, around).min() > 0.999

    with pytest.raises(OutputError, match="none.glb: no hand to write"):
        write_scene(tmp_path / "none.glb", [], mano)
