"""glTF 2.0 (binary, .glb) files of hands, written with pygltflib: ``write_scene`` (the hands of
one image, as meshes) and ``write_animation`` (a ``Recording``: one skinned, animated hand per
track).

Axes: the hands are in camera space, metres, OpenCV's axes (x right, y down, z forward); glTF's
are +Y up, +Z towards the viewer (-Z forward), so every position, normal and joint in the files
is the camera-space one turned by diag(1, -1, -1) (``OPENCV_TO_GLTF``). That map is a rotation
(half a turn about x), so triangles keep their winding and a rotation R becomes F R F: the
quaternion (x, y, z, w) becomes (x, -y, -z, w).

Right side out: the hand model is a right hand; a left hand is its mirror image, whose faces are
flipped (``hand_faces``) so that normals point outwards.

An animation's 21 joint nodes (MANO's 16 joints and the 5 fingertips, named by
``JOINT_ORDER``) reproduce each frame's recorded joints (to float32): each joint's rotation is
the one MANO applies, and per-frame translations on every node carry that frame's bone lengths
(its own shape; the fingertips are mesh vertices, not rigid children). The skinned mesh is made
with the track's median shape and without MANO's pose-corrective blend shapes (no morph
targets): how far it is from the hand model's own mesh is measured for every frame and reported
(``mesh_vs_model_mm``). Never imports torch.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pygltflib import (
    ANIM_LINEAR,
    ANIM_STEP,
    ARRAY_BUFFER,
    ELEMENT_ARRAY_BUFFER,
    FLOAT,
    GLTF2,
    MAT4,
    SCALAR,
    UNSIGNED_BYTE,
    UNSIGNED_INT,
    UNSIGNED_SHORT,
    VEC3,
    VEC4,
    Accessor,
    Animation,
    AnimationChannel,
    AnimationChannelTarget,
    AnimationSampler,
    Asset,
    Attributes,
    Buffer,
    BufferView,
    Material,
    Mesh,
    Node,
    PbrMetallicRoughness,
    Primitive,
    Scene,
    Skin,
)

from handssca.errors import OutputError
from handssca.runtime.files import write_atomically
from handssca.runtime.mano.conventions import axis_angle_to_quaternion
from handssca.runtime.mano.model import JOINT_ORDER, MANO_TO_FREIHAND, NUM_JOINTS, ManoModel
from handssca.runtime.outputs.hands import hand_faces
from handssca.runtime.outputs.recording import Recording, TrackRecording

OPENCV_TO_GLTF = np.array([1.0, -1.0, -1.0])  # diag(1, -1, -1); its own inverse
MIRROR = np.array([-1.0, 1.0, 1.0])  # a left hand is the right one's mirror image, x -> -x
MAX_INFLUENCES = 8  # skinning weights kept per vertex (JOINTS_0/1, WEIGHTS_0/1), renormalised
# MANO's 16 joints then the 5 tips (thumb, index, middle, ring, pinky) -> FreiHAND's index.
FREIHAND_OF_NODE = tuple(MANO_TO_FREIHAND.index(k) for k in range(NUM_JOINTS + 5))
NODE_NAMES = tuple(JOINT_ORDER[i] for i in FREIHAND_OF_NODE)  # "wrist", "index_1", ..., "pinky_4"
# Each tip's parent: the joint before it in FreiHAND's order (thumb 15, index 3, middle 6, ring 12, pinky 9).
TIP_PARENTS = tuple(MANO_TO_FREIHAND[MANO_TO_FREIHAND.index(NUM_JOINTS + i) - 1] for i in range(5))
SKIN_COLOUR = [0.80, 0.62, 0.52, 1.0]


class _Glb:
    """A glTF document and its one binary buffer, built accessor by accessor."""

    def __init__(self):
        self.gltf = GLTF2(asset=Asset(generator="handssca", version="2.0"), scene=0, scenes=[Scene(nodes=[])])
        self.blob = bytearray()

    def accessor(self, data: np.ndarray, kind: str, *, target: int | None = None, bounds: bool = False) -> int:
        """``data`` (count, components) or (count,) as an accessor in a buffer view of its own;
        ``bounds``: with min/max (POSITION and animation inputs require them)."""
        data = np.ascontiguousarray(data)
        component = {np.float32: FLOAT, np.uint8: UNSIGNED_BYTE, np.uint16: UNSIGNED_SHORT, np.uint32: UNSIGNED_INT}
        self.blob.extend(b"\0" * (-len(self.blob) % 4))
        self.gltf.bufferViews.append(
            BufferView(buffer=0, byteOffset=len(self.blob), byteLength=data.nbytes, target=target)
        )
        self.blob.extend(data.tobytes())
        flat = data.reshape(len(data), -1)
        accessor = Accessor(
            bufferView=len(self.gltf.bufferViews) - 1,
            componentType=component[data.dtype.type],
            count=len(data),
            type=kind,
        )
        if bounds:
            accessor.min, accessor.max = flat.min(0).tolist(), flat.max(0).tolist()
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    def node(self, node: Node, *, root: bool = False) -> int:
        self.gltf.nodes.append(node)
        if root:
            self.gltf.scenes[0].nodes.append(len(self.gltf.nodes) - 1)
        return len(self.gltf.nodes) - 1

    def mesh(self, name: str, vertices: np.ndarray, faces: np.ndarray, extras: dict, **attributes: int) -> int:
        """A mesh of glTF-space ``vertices`` with per-vertex normals from ``faces`` (and any
        further ``attributes``: accessor ids)."""
        if not self.gltf.materials:
            pbr = PbrMetallicRoughness(baseColorFactor=SKIN_COLOUR, metallicFactor=0.0, roughnessFactor=0.8)
            self.gltf.materials.append(Material(name="hand", pbrMetallicRoughness=pbr))
        position = self.accessor(vertices.astype(np.float32), VEC3, target=ARRAY_BUFFER, bounds=True)
        normal = self.accessor(vertex_normals(vertices, faces).astype(np.float32), VEC3, target=ARRAY_BUFFER)
        index_type = np.uint16 if len(vertices) < 2**16 - 1 else np.uint32
        indices = self.accessor(faces.reshape(-1).astype(index_type), SCALAR, target=ELEMENT_ARRAY_BUFFER)
        primitive = Primitive(
            attributes=Attributes(POSITION=position, NORMAL=normal, **attributes), indices=indices, material=0
        )
        self.gltf.meshes.append(Mesh(name=name, primitives=[primitive], extras=extras))
        return len(self.gltf.meshes) - 1

    def write(self, path: Path) -> Path:
        """The .glb, written atomically (a crash never leaves half a file)."""
        self.gltf.buffers = [Buffer(byteLength=len(self.blob))]
        self.gltf.set_binary_blob(bytes(self.blob))
        return write_atomically(path, b"".join(self.gltf.save_to_bytes()))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit per-vertex normals: the area-weighted sum of the faces' normals by their
    winding; +z for a vertex no face uses (glTF requires unit normals)."""
    a, b, c = (vertices[faces[:, i]] for i in range(3))
    face_normals = np.cross(b - a, c - a)
    normals = np.zeros_like(vertices, dtype=np.float64)
    for i in range(3):
        np.add.at(normals, faces[:, i], face_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 0, normals / np.maximum(length, 1e-300), [0.0, 0.0, 1.0])


def write_scene(path, hands, mano: ManoModel, fingertip_ids=None) -> Path:
    """One .glb of every hand of one image: per hand a node ``hand_<i>_<side>`` (side in its
    extras) with its mesh (positions, normals, right side out) and its 21 joints as child nodes,
    in glTF's axes. ``hands``: objects with ``side``, ``vertices_camera`` (778, 3) and
    ``joints_camera`` (21, 3) (root-relative ``vertices``/``joints_3d`` where those are None);
    ``fingertip_ids``: the mesh's tip vertices (the model's own by default), kept in the extras."""
    path = Path(path)
    hands = list(hands)
    if not hands:
        raise OutputError(f"{path}: no hand to write")
    tips = fingertip_ids if fingertip_ids is not None else mano.fingertip_ids
    glb = _Glb()
    for i, hand in enumerate(hands):
        name = f"hand_{i}_{hand.side}"
        vertices = _camera_or_root_relative(hand, "vertices_camera", "vertices")
        joints = _camera_or_root_relative(hand, "joints_camera", "joints_3d")
        extras = {"side": hand.side} | ({"fingertip_vertices": [int(t) for t in tips]} if tips is not None else {})
        mesh = glb.mesh(name, vertices * OPENCV_TO_GLTF, hand_faces(mano.faces, hand.side), {"side": hand.side})
        children = []
        if joints is not None:
            for joint_name, joint in zip(JOINT_ORDER, joints * OPENCV_TO_GLTF, strict=True):
                children.append(glb.node(Node(name=f"{name}_{joint_name}", translation=joint.tolist())))
        glb.node(Node(name=name, mesh=mesh, children=children, extras=extras), root=True)
    return glb.write(path)


def _camera_or_root_relative(hand, camera: str, relative: str) -> np.ndarray | None:
    value = getattr(hand, camera, None)
    value = getattr(hand, relative, None) if value is None else value
    return None if value is None else np.asarray(value, np.float64)


def write_animation(path, recording: Recording) -> dict:
    """One .glb of ``recording``: per track a skinned mesh and its 21 joint nodes, animated on
    the source's timestamps (the animation starts at the recording's first time), visible only
    while tracked. Returns a report: what was written and what the format does not hold
    (``dropped_weight_max``: the largest skinning weight left out of a vertex's 8 influences;
    ``mesh_vs_model_mm``: the skinned median-shape mesh against the hand model's mesh, the
    median and the worst frame of each frame's largest vertex distance)."""
    path = Path(path)
    tracks = [track for track in recording.tracks if track.frames]
    if not tracks:
        raise OutputError(f"{path}: the recording has no tracked hand; nothing to write")
    mano = recording.mano
    every = np.array([*recording.times, *(f.time_s for t in tracks for f in t.frames)])
    start = float(every.min())
    clock = np.unique((every - start).astype(np.float32))  # every time of the recording, from its first
    joints, weights, dropped = skin_influences(mano.weights)
    glb = _Glb()
    animation = Animation(name="recording")
    frame_errors, names, frames, report_tracks = [], set(), 0, []
    for track in tracks:
        name, n = f"track_{track.id}_{track.side}", 1
        while name in names:  # a track that came back as the same side after the other one
            name, n = f"track_{track.id}_{track.side}_{n + 1}", n + 1
        names.add(name)
        errors, count = _add_track(glb, animation, recording, track, name, start, clock, joints, weights)
        frame_errors.extend(errors)
        frames += count
        report_tracks.append({"id": int(track.id), "side": track.side, "node": name})
    glb.gltf.animations.append(animation)
    glb.write(path)
    return {
        "format": "glTF 2.0 (binary)",
        "tracks": report_tracks,  # as the BVH writer's: one entry a track
        "frames": frames,
        "duration_s": round(float(clock[-1]), 6),
        "skin_influences": int((weights > 0).sum(1).max()),  # the most any vertex has
        "dropped_weight_max": float(dropped),
        "mesh_vs_model_mm": {"median": float(np.median(frame_errors)), "worst": float(np.max(frame_errors))},
        "omitted": "each frame's own shape on the mesh (it has the track's median shape; the joints are exact) "
        "and MANO's pose-corrective blend shapes (no morph targets): mesh_vs_model_mm measures both",
    }


def skin_influences(weights: np.ndarray, most: int = MAX_INFLUENCES) -> tuple[np.ndarray, np.ndarray, float]:
    """(joints (V, 4k) uint8, weights (V, 4k) float32 summing to 1, the largest weight a vertex
    lost): each vertex's ``most`` largest weights, in as few sets of 4 as its busiest vertex
    needs, renormalised; unused slots are joint 0 with weight 0."""
    weights = np.clip(np.asarray(weights, np.float64), 0.0, None)
    order = np.argsort(-weights, axis=1, kind="stable")[:, :most]
    kept = np.take_along_axis(weights, order, axis=1)
    dropped = float(np.sort(weights, axis=1)[:, : max(0, weights.shape[1] - most)].sum(1).max(initial=0.0))
    width = 4 * math.ceil(max(1, int((kept > 0).sum(1).max())) / 4)
    order, kept = order[:, :width], kept[:, :width]
    order = np.where(kept > 0, order, 0)
    kept32 = (kept / kept.sum(1, keepdims=True)).astype(np.float32)
    kept32[:, 0] += np.float32(1.0) - kept32.sum(1, dtype=np.float32)  # the float32 rounding, on the largest
    return order.astype(np.uint8), kept32, dropped


def _quaternion_matrices(q: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (x, y, z, w), glTF's order -> (..., 3, 3) rotation matrices."""
    x, y, z, w = np.moveaxis(np.asarray(q, np.float64), -1, 0)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return np.stack(rows, axis=-1).reshape(*x.shape, 3, 3)


def _frames_on_clock(track: TrackRecording, start: float) -> tuple[list, np.ndarray]:
    """The track's frames in time order, one per float32 time (the first where two round to one:
    an animation's input must increase strictly), and their times on the animation's clock."""
    frames, times = [], []
    for frame in sorted(track.frames, key=lambda f: f.time_s):
        t = np.float32(frame.time_s - start)
        if not times or t > times[-1]:
            frames.append(frame)
            times.append(t)
    return frames, np.array(times, np.float32)


def _add_track(glb: _Glb, animation: Animation, recording: Recording, track: TrackRecording, name: str,
               start: float, clock: np.ndarray, skin_joints: np.ndarray, skin_weights: np.ndarray):  # fmt: skip
    """One track's skinned mesh, nodes and channels; returns each frame's largest vertex
    distance to the hand model's mesh (mm) and the number of frames."""
    mano, side = recording.mano, track.side
    parents = [int(p) for p in mano.parents]
    frames, times = _frames_on_clock(track, start)
    tips = tuple(int(t) for t in recording.fingertip_ids)

    # The rest mesh and skeleton: the median shape, mirrored for a left hand, in glTF's axes.
    shaped = mano.v_template + np.einsum("vcl,l->vc", mano.shapedirs, track.median_shape)
    rest_joints = mano.J_regressor @ shaped
    mirror = MIRROR if side == "left" else np.ones(3)
    rest_vertices = shaped * mirror * OPENCV_TO_GLTF
    rest_nodes = np.concatenate([rest_joints, shaped[list(tips)]]) * mirror * OPENCV_TO_GLTF  # (21, 3)
    node_parents = parents + list(TIP_PARENTS)

    # The nodes: the wrist (the track's root: its translation places the hand, its scale shows it)
    # and below it the joints and the tips, in MANO's tree; rest translations from the parent.
    first = len(glb.gltf.nodes)
    for k in range(NUM_JOINTS + 5):
        parent = node_parents[k]
        offset = rest_nodes[k] - (rest_nodes[parent] if parent >= 0 else 0.0)
        node_name = name if k == 0 else f"{name}_{NODE_NAMES[k]}"
        extras = {"side": side, "track": int(track.id)} if k == 0 else {}
        glb.node(Node(name=node_name, translation=offset.tolist(), extras=extras), root=k == 0)
    for k in range(1, NUM_JOINTS + 5):
        glb.gltf.nodes[first + node_parents[k]].children.append(first + k)

    inverse_bind = np.tile(np.eye(4), (NUM_JOINTS, 1, 1))
    inverse_bind[:, :3, 3] = -rest_nodes[:NUM_JOINTS]
    skin = Skin(
        name=name,
        joints=list(range(first, first + NUM_JOINTS)),
        skeleton=first,
        # column-major, as glTF stores matrices
        inverseBindMatrices=glb.accessor(inverse_bind.transpose(0, 2, 1).reshape(-1, 16).astype(np.float32), MAT4),
    )
    glb.gltf.skins.append(skin)
    attributes = {}
    for s in range(skin_joints.shape[1] // 4):
        cols = slice(4 * s, 4 * s + 4)
        attributes[f"JOINTS_{s}"] = glb.accessor(skin_joints[:, cols], VEC4, target=ARRAY_BUFFER)
        attributes[f"WEIGHTS_{s}"] = glb.accessor(skin_weights[:, cols], VEC4, target=ARRAY_BUFFER)
    mesh = glb.mesh(name, rest_vertices, hand_faces(mano.faces, side), {"side": side, "track": int(track.id)},
                    **attributes)  # fmt: skip
    glb.node(Node(name=f"{name}_mesh", mesh=mesh, skin=len(glb.gltf.skins) - 1), root=True)

    # Each frame's local rotations (those MANO applies: pose + the side's offset; a left hand's
    # are already the mirror image's), in glTF's axes, on one hemisphere frame to frame.
    poses = np.stack([f.pose for f in frames]) + recording.pose_offset(side)
    q = axis_angle_to_quaternion(poses.reshape(len(frames), NUM_JOINTS, 3))  # (n, 16, 4) w, x, y, z
    q = np.concatenate([q[..., 1:] * OPENCV_TO_GLTF, q[..., :1]], axis=-1)  # F R F, as x, y, z, w
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    signs = np.where(np.einsum("njc,njc->nj", q[1:], q[:-1]) < 0, -1.0, 1.0)
    q[1:] *= np.cumprod(signs, axis=0)[..., None]
    rotations = q.astype(np.float32)

    # Each frame's local translations, such that the nodes land on the recorded joints: the
    # offset from the parent's recorded position, in the parent's rotated frame.
    targets = np.stack([f.joints for f in frames])[:, list(FREIHAND_OF_NODE)] * OPENCV_TO_GLTF  # (n, 21, 3)
    local_r = _quaternion_matrices(rotations)
    world_r = [local_r[:, 0]]
    for k in range(1, NUM_JOINTS):
        world_r.append(world_r[parents[k]] @ local_r[:, k])
    world_r = np.stack(world_r, axis=1)  # (n, 16, 3, 3)
    translations = np.empty_like(targets)
    translations[:, 0] = targets[:, 0]
    for k in range(1, NUM_JOINTS + 5):
        p = node_parents[k]
        translations[:, k] = np.einsum("nji,nj->ni", world_r[:, p], targets[:, k] - targets[:, p])
    translations = translations.astype(np.float32)

    # The channels: every frame a key (LINEAR); the root's scale 1 while tracked, 0 otherwise (STEP).
    frame_input = glb.accessor(times, SCALAR, bounds=True)
    for k in range(NUM_JOINTS + 5):
        if k < NUM_JOINTS:
            _channel(glb, animation, frame_input, rotations[:, k], VEC4, first + k, "rotation", ANIM_LINEAR)
        _channel(glb, animation, frame_input, translations[:, k], VEC3, first + k, "translation", ANIM_LINEAR)
    shown = np.isin(clock, times)
    changes = np.concatenate([[0], np.flatnonzero(shown[1:] != shown[:-1]) + 1])
    scale_input = glb.accessor(clock[changes], SCALAR, bounds=True)
    scales = np.repeat(shown[changes, None].astype(np.float32), 3, axis=1)
    _channel(glb, animation, scale_input, scales, VEC3, first, "scale", ANIM_STEP)

    return _mesh_errors(recording, track.side, frames, rest_vertices, inverse_bind, local_r, translations,
                        node_parents, skin_joints, skin_weights), len(frames)  # fmt: skip


def _channel(glb: _Glb, animation: Animation, input_: int, values: np.ndarray, kind: str, node: int, target: str,
             interpolation: str) -> None:  # fmt: skip
    animation.samplers.append(
        AnimationSampler(input=input_, output=glb.accessor(values, kind), interpolation=interpolation)
    )
    channel_target = AnimationChannelTarget(node=node, path=target)
    animation.channels.append(AnimationChannel(sampler=len(animation.samplers) - 1, target=channel_target))


def _mesh_errors(recording: Recording, side: str, frames: list, rest_vertices: np.ndarray, inverse_bind: np.ndarray,
                 local_r: np.ndarray, translations: np.ndarray, node_parents: list, skin_joints: np.ndarray,
                 skin_weights: np.ndarray) -> list[float]:  # fmt: skip
    """Each frame's largest distance (mm) between the skinned mesh as a glTF viewer poses it
    (glTF's skinning, from the values written) and ``recording.pose_hand``'s vertices."""
    weights = np.zeros((len(rest_vertices), NUM_JOINTS))
    np.add.at(weights, (np.arange(len(rest_vertices))[:, None], skin_joints), skin_weights.astype(np.float64))
    rest = np.concatenate([rest_vertices, np.ones((len(rest_vertices), 1))], axis=1)
    errors = []
    for n, frame in enumerate(frames):
        world = []
        for k in range(NUM_JOINTS):
            local = np.eye(4)
            local[:3, :3], local[:3, 3] = local_r[n, k], translations[n, k]
            world.append(local if k == 0 else world[node_parents[k]] @ local)
        skinning = (np.stack(world) @ inverse_bind).reshape(NUM_JOINTS, 16)
        posed = ((weights @ skinning).reshape(-1, 4, 4) @ rest[..., None])[:, :3, 0] * OPENCV_TO_GLTF
        model = recording.pose_hand(side, frame.pose, frame.shape, frame.translation)[0]
        errors.append(1000.0 * float(np.linalg.norm(posed - model, axis=1).max()))
    return errors
