"""BVH (Biovision Hierarchy) animations of a ``Recording``: ``write_bvh``.

Files: ``path`` holds every hand in one skeleton (a root ``hands`` at the camera, its channels 0,
with each track's skeleton below it), and ``<stem>.track<ID>.bvh`` beside it one track each
(``hands.bvh`` -> ``hands.track1.bvh``, ``hands.track2.bvh``; a track whose side changed is a
further file ``hands.track<ID>-2.bvh``). BVH allows several ROOTs in one file, but the readers
checked (the ``bvh`` package, bvhio) read only the first, hence one root. All are written
together, atomically (``files.write_together``).

BVH files hold no comments, so the conventions are here:

- Axes and units: camera space, OpenCV's axes (x right, y down, z forward), metres. The root's
  OFFSET is 0 0 0, so its position channels are the wrist's camera-space position.
- Skeleton: 21 joints named ``track<ID>_<side>_<joint>`` (``JOINT_ORDER``'s names): the wrist is the
  ROOT, MANO's 16 joints follow its tree, and each fingertip is a JOINT below its finger's last
  joint, ending in an End Site 5 mm further along. OFFSETs: the rest skeleton of the track's
  median shape (J_regressor @ (v_template + shapedirs @ beta); the tips are mesh vertices),
  mirrored (x -> -x) for a left hand.
- Channels: every joint has the same six, ``Xposition Yposition Zposition Zrotation Xrotation
  Yrotation``. A joint's transform to its parent is T(position) Rz(z) Rx(x) Ry(y): the rotations
  compose in the order the channels list them (BVH's usual reading), angles in degrees.
- Position channels replace the OFFSET (Blender's and bvhio's reading), they are not added to it:
  a joint's translation from its parent in the parent's rotated frame. They equal the OFFSET in a
  frame with the median shape and carry each frame's own bone lengths and the fingertips (mesh
  vertices, which pose blend shapes move), so the 21 joints reproduce the recorded ones. A reader
  that ignores non-root position channels gets the median-shape skeleton, correctly rotated.
- Rotations: those MANO applies, rodrigues(pose + pose_offset(side)), each joint's about its rest
  position relative to its parent. A left hand's recorded pose is already its mirror image's
  (M R(mirror_pose(a)) M = R(a) with M = diag(-1, 1, 1)), so the same formula holds on the
  mirrored rest skeleton. Fingertips do not rotate (0 0 0). Each angle is unwrapped frame to frame.
- Frames: one per entry of ``recording.times``, in order; Frame Time is the median interval of the
  source's clock (1/30 s with one frame). Frames are not resampled: where the source is not evenly
  spaced (a live camera) frame i is shown at i * Frame Time, not at its own time (the report's
  ``evenly_spaced`` says which). BVH cannot hide a skeleton: before a track's first frame it holds
  its first pose, in gaps and after its last frame its last one, and the report lists the frames
  each track was tracked in.

Never imports torch.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from handssca.errors import OutputError
from handssca.runtime.files import write_together
from handssca.runtime.mano.model import JOINT_ORDER, MANO_TO_FREIHAND, NUM_JOINTS, batch_rodrigues
from handssca.runtime.outputs.recording import Recording, TrackRecording

CHANNELS = ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation")
EULER_ORDER = "ZXY"  # the rotation channels' order: R = Rz Rx Ry
AXES = "OpenCV camera axes (x right, y down, z forward), metres"
MIRROR = np.array([-1.0, 1.0, 1.0])  # a left hand is the right one's mirror image, x -> -x
END_SITE_M = 0.005  # each fingertip's End Site, along its last bone
DEFAULT_FRAME_TIME_S = 1 / 30  # a recording of one frame has no interval
# MANO's 16 joints then the 5 tips (thumb, index, middle, ring, pinky) -> FreiHAND's index.
FREIHAND_OF_NODE = tuple(MANO_TO_FREIHAND.index(k) for k in range(NUM_JOINTS + 5))
NODE_NAMES = tuple(JOINT_ORDER[i] for i in FREIHAND_OF_NODE)  # "wrist", "index_1", ..., "pinky_4"
# Each tip's parent: the joint before it in FreiHAND's order (thumb 15, index 3, middle 6, ring 12, pinky 9).
TIP_PARENTS = tuple(MANO_TO_FREIHAND[MANO_TO_FREIHAND.index(NUM_JOINTS + i) - 1] for i in range(5))


def write_bvh(path, recording: Recording) -> dict:
    """One .bvh per track of ``recording`` beside ``path`` (the module's docstring: names, axes,
    channels); returns a report: the files, the frame time and count, and per track its file and
    the frames it was tracked in (``tracked_frames``: [first, last] index ranges, inclusive)."""
    path = Path(path)
    tracks = [track for track in recording.tracks if track.frames]
    if not tracks:
        raise OutputError(f"{path}: no hand was tracked, nothing to write")
    times = np.array(recording.times or sorted({f.time_s for t in tracks for f in t.frames}), np.float64)
    intervals = np.diff(times)
    forward = intervals[intervals > 0]
    frame_time = float(np.median(forward)) if len(forward) else DEFAULT_FRAME_TIME_S
    even = bool(len(forward) == len(intervals) and np.all(np.abs(intervals - frame_time) <= 1e-3 * frame_time))

    files, report_tracks, labels, texts = {}, [], set(), []
    for track in tracks:
        label, n = f"track{track.id}", 1
        while label in labels:  # a track that came back with the other side
            label, n = f"track{track.id}-{n + 1}", n + 1
        labels.add(label)
        file = path.with_name(f"{path.stem}.{label}.bvh")
        indices = _time_indices(times, track)
        files[file] = _track_text(recording, track, indices, len(times), frame_time).encode("ascii")
        texts.append(files[file].decode("ascii"))
        report_tracks.append(
            {"id": int(track.id), "side": track.side, "file": str(file), "tracked_frames": _ranges(indices)}
        )
    files = {path: _all_tracks_text(texts, len(times), frame_time).encode("ascii"), **files}
    write_together(files)
    return {
        "format": "BVH",
        "files": [str(f) for f in files],
        "frames": len(times),
        "frame_time_s": frame_time,
        "evenly_spaced": even,
        "axes": AXES,
        "channels": " ".join(CHANNELS),
        "tracks": report_tracks,
        "omitted": "the mesh (BVH holds skeletons); each track's pose is held where it was not tracked "
        "(tracked_frames); frames are not resampled where the source's clock is uneven (evenly_spaced)",
    }


def _all_tracks_text(texts: list[str], count: int, frame_time: float) -> str:
    """Every track in one skeleton, for readers that take one file of one hierarchy: a root
    ``hands`` at the camera (its six channels 0) with each track's skeleton below it, the tracks'
    frames side by side. Its joints are the per-track files' joints, at the same places."""
    lines = ["HIERARCHY", "ROOT hands", "{", "  OFFSET 0.00000000 0.00000000 0.00000000",
             f"  CHANNELS {len(CHANNELS)} {' '.join(CHANNELS)}"]  # fmt: skip
    motions = [np.zeros((count, len(CHANNELS)))]
    for text in texts:
        hierarchy, motion = text.split("\nMOTION\n")
        for line in hierarchy.splitlines()[1:]:  # below HIERARCHY
            lines.append("  " + (line.replace("ROOT ", "JOINT ", 1) if line.startswith("ROOT ") else line))
        rows = motion.splitlines()[2:]  # below Frames and Frame Time
        motions.append(np.array([row.split() for row in rows], np.float64).reshape(count, -1))
    lines += ["}", "MOTION", f"Frames: {count}", f"Frame Time: {frame_time:.8f}"]
    buffer = io.StringIO()
    np.savetxt(buffer, np.concatenate(motions, axis=1), fmt="%.8f")
    return "\n".join(lines) + "\n" + buffer.getvalue()


def _time_indices(times: np.ndarray, track: TrackRecording) -> np.ndarray:
    """Each of the track's frames' index in ``times``: the next one with its time (the nearest time
    for a frame added without one)."""
    indices, start = [], 0
    for frame in track.frames:
        hits = np.flatnonzero(times[start:] == frame.time_s)
        i = start + int(hits[0]) if len(hits) else int(np.argmin(np.abs(times - frame.time_s)))
        indices.append(i)
        start = i + 1
    return np.array(indices, np.int64)


def _ranges(indices: np.ndarray) -> list[list[int]]:
    """Sorted frame indices as [first, last] runs of consecutive frames."""
    unique = np.unique(indices)
    breaks = np.flatnonzero(np.diff(unique) > 1)
    starts, ends = np.concatenate([[0], breaks + 1]), np.concatenate([breaks, [len(unique) - 1]])
    return [[int(unique[s]), int(unique[e])] for s, e in zip(starts, ends, strict=True)]


def _track_text(recording: Recording, track: TrackRecording, indices: np.ndarray, count: int,
                frame_time: float) -> str:  # fmt: skip
    """One track's BVH: the hierarchy and ``count`` frames, each tracked frame's values at its
    index and the nearest earlier one's (the first one's before it starts) elsewhere."""
    mano, side = recording.mano, track.side
    node_parents = [int(p) for p in mano.parents] + list(TIP_PARENTS)
    tips = [int(t) for t in recording.fingertip_ids]
    mirror = MIRROR if side == "left" else np.ones(3)
    shaped = mano.v_template + np.einsum("vcl,l->vc", mano.shapedirs, track.median_shape)
    rest = np.concatenate([mano.J_regressor @ shaped, shaped[tips]]) * mirror  # (21, 3) MANO joints, tips
    offsets = np.array([rest[k] - rest[p] if p >= 0 else np.zeros(3) for k, p in enumerate(node_parents)])

    values = _channel_values(recording, track, node_parents)  # (n, 21, 6)
    order = np.argsort(indices, kind="stable")
    held = np.clip(np.searchsorted(indices[order], np.arange(count), side="right") - 1, 0, None)
    children = {k: [c for c, p in enumerate(node_parents) if p == k] for k in range(len(node_parents))}
    sequence: list[int] = []  # the nodes depth first: the order of the hierarchy and of each frame's values
    lines = ["HIERARCHY"]
    prefix = f"track{track.id}_{side}"

    def joint(k: int, depth: int) -> None:
        pad = "  " * depth
        sequence.append(k)
        lines.append(f"{pad}{'ROOT' if k == 0 else 'JOINT'} {prefix}_{NODE_NAMES[k]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  OFFSET {' '.join(f'{v:.8f}' for v in offsets[k])}")
        lines.append(f"{pad}  CHANNELS {len(CHANNELS)} {' '.join(CHANNELS)}")
        for child in children[k]:
            joint(child, depth + 1)
        if not children[k]:  # a fingertip
            bone = offsets[k] / max(np.linalg.norm(offsets[k]), 1e-12)
            end = " ".join(f"{v:.8f}" for v in END_SITE_M * bone)
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    OFFSET {end}", f"{pad}  }}"])
        lines.append(f"{pad}}}")

    joint(0, 0)
    lines.extend(["MOTION", f"Frames: {count}", f"Frame Time: {frame_time:.8f}"])
    motion = values[order][held][:, sequence].reshape(count, -1)
    buffer = io.StringIO()
    fmt = " ".join(["%.8f %.8f %.8f %.6f %.6f %.6f"] * len(sequence))
    np.savetxt(buffer, motion, fmt=fmt)
    return "\n".join(lines) + "\n" + buffer.getvalue()


def _channel_values(recording: Recording, track: TrackRecording, node_parents: list[int]) -> np.ndarray:
    """(frames, 21, 6) each node's channels in each of the track's frames: the translation from
    its parent in the parent's rotated frame (metres) and its rotation as Z, X, Y angles (degrees)."""
    frames = track.frames
    poses = np.stack([f.pose for f in frames]) + recording.pose_offset(track.side)
    local = np.tile(np.eye(3), (len(frames), len(node_parents), 1, 1))  # the tips do not rotate
    local[:, :NUM_JOINTS] = batch_rodrigues(poses.reshape(len(frames), NUM_JOINTS, 3))
    world = [local[:, 0]]
    for k in range(1, len(node_parents)):
        world.append(world[node_parents[k]] @ local[:, k])
    world = np.stack(world, axis=1)  # (n, 21, 3, 3)
    targets = np.stack([f.joints for f in frames])[:, list(FREIHAND_OF_NODE)]  # (n, 21, 3) MANO's order
    translations = targets.copy()
    for k in range(1, len(node_parents)):
        p = node_parents[k]
        translations[:, k] = np.einsum("nji,nj->ni", world[:, p], targets[:, k] - targets[:, p])
    angles = np.unwrap(euler_zxy(local), axis=0, period=360.0)
    return np.concatenate([translations, angles], axis=-1)


def euler_zxy(rotations: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) angles (z, x, y) in degrees with R = Rz(z) Rx(x) Ry(y),
    x in [-90, 90]; at x = +-90 (gimbal lock) y is 0 and z takes the whole turn about the vertical."""
    r = np.asarray(rotations, np.float64)
    cos_x = np.hypot(r[..., 2, 0], r[..., 2, 2])
    x = np.arctan2(r[..., 2, 1], cos_x)
    locked = cos_x < 1e-9
    z = np.where(locked, np.arctan2(r[..., 1, 0], r[..., 0, 0]), np.arctan2(-r[..., 0, 1], r[..., 1, 1]))
    y = np.where(locked, 0.0, np.arctan2(-r[..., 2, 0], r[..., 2, 2]))
    return np.degrees(np.stack([z, x, y], axis=-1))
