"""A built-in STAND-IN hand with MANO's structure, generated deterministically in code.

It is NOT MANO: MANO is licensed and cannot ship with the project. This model has MANO's array
layout (778 vertices, 16 joints in MANO's kinematic tree, 10 shape and 135 pose blend shapes,
a 16 x 778 joint regressor, skinning weights, 45 x 45 PCA basis and a mean pose), so every loader,
both MANO implementations, the exporter and the synthetic data generator run on it unchanged.
Every command that uses it says so, and takes ``--mano PATH`` for the real model.

Geometry (metres, right hand, flat rest pose): wrist at the origin, fingers along +y, palm facing
+z (flexion turns a finger towards +z, a positive rotation about x), thumb on the -x side. The
palm is a closed ellipsoid, each finger a closed tube with rings at its joints and a tip vertex.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from handssca.runtime.mano.files import save_mano_npz
from handssca.runtime.mano.model import NUM_JOINTS, NUM_POSE_BLEND, ManoModel

STAND_IN_NOTE = "built-in stand-in hand with MANO's structure; NOT the MANO model"

RING = 8  # vertices per finger ring
PALM_LAT, PALM_LON = 11, 18  # 11 x 18 + 2 poles = 200 vertices

# Per finger in MANO order of joint triples: (name, joint ids, base, direction, segment lengths,
# radius, ring count). MANO joints: 0 wrist; index 1-3, middle 4-6, pinky 7-9, ring 10-12, thumb 13-15.
_FINGERS = (
    ("index", (1, 2, 3), (-0.024, 0.088), (-0.08, 1.0), (0.040, 0.025, 0.021), 0.0090, 15),
    ("middle", (4, 5, 6), (-0.002, 0.092), (0.0, 1.0), (0.044, 0.028, 0.022), 0.0092, 15),
    ("pinky", (7, 8, 9), (0.040, 0.078), (0.12, 1.0), (0.030, 0.020, 0.018), 0.0078, 14),
    ("ring", (10, 11, 12), (0.020, 0.088), (0.06, 1.0), (0.041, 0.027, 0.021), 0.0088, 14),
    ("thumb", (13, 14, 15), (-0.030, 0.022), (-0.75, 0.66), (0.040, 0.032, 0.028), 0.0105, 13),
)
# Tip vertex of each finger in (thumb, index, middle, ring, pinky) order is filled in by build.
_TIP_ORDER = ("thumb", "index", "middle", "ring", "pinky")


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _tube(joints: np.ndarray, tip: np.ndarray, radius: float, rings: int, first_vertex: int):
    """A closed tube along joints[0] -> joints[1] -> joints[2] -> tip, with a ring at every joint.

    Returns vertices, faces (outward), ring centres, the ring index at each joint, tip vertex id.
    """
    path = np.vstack([joints, tip])
    seg_len = np.linalg.norm(np.diff(path, axis=0), axis=1)
    # Rings: start a little inside the palm (behind joint 0), one at each joint, the rest spread
    # over the segments in proportion to their length, the last just before the tip.
    extra = rings - 5  # besides the inner start, the three joints and the last ring before the tip
    per_seg = np.maximum(0, np.round(extra * seg_len / seg_len.sum()).astype(int))
    per_seg[-1] += extra - per_seg.sum()
    axis0 = _unit(path[1] - path[0])
    stations = [path[0] - 0.012 * axis0]
    joint_rings = []
    for s in range(3):
        joint_rings.append(len(stations))
        stations.append(path[s])
        for k in range(1, per_seg[s] + 1):
            stations.append(path[s] + (path[s + 1] - path[s]) * k / (per_seg[s] + 1))
    stations.append(path[3] - 0.25 * radius * _unit(path[3] - path[2]))
    stations = np.array(stations)
    assert len(stations) == rings, (len(stations), rings)
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(stations, axis=0), axis=1))])
    taper = radius * (1.0 - 0.25 * along / along[-1])
    taper[-1] *= 0.6  # round the tip
    verts, normals = [], []
    side = np.array([1.0, 0.0, 0.0])
    for i, centre in enumerate(stations):
        forward = _unit(stations[min(i + 1, rings - 1)] - stations[max(i - 1, 0)])
        u = _unit(np.cross(forward, np.cross(side, forward)))  # in-plane direction closest to +x
        w = np.cross(forward, u)
        for k in range(RING):
            angle = 2 * np.pi * k / RING
            d = np.cos(angle) * u + np.sin(angle) * w
            verts.append(centre + taper[i] * d)
            normals.append(d)
    base_cap = stations[0] - 0.5 * radius * axis0
    tip_cap = path[3]
    verts += [base_cap, tip_cap]
    faces = []
    base_id, tip_id = first_vertex + rings * RING, first_vertex + rings * RING + 1
    for i in range(rings - 1):
        for k in range(RING):
            a = first_vertex + i * RING + k
            b = first_vertex + i * RING + (k + 1) % RING
            c, d = a + RING, b + RING
            faces += [(a, b, d), (a, d, c)]
    for k in range(RING):
        a = first_vertex + k
        b = first_vertex + (k + 1) % RING
        faces.append((base_id, b, a))
        a2 = first_vertex + (rings - 1) * RING + k
        b2 = first_vertex + (rings - 1) * RING + (k + 1) % RING
        faces.append((tip_id, a2, b2))
    return np.array(verts), np.array(faces), stations, joint_rings, tip_id


def _palm(first_vertex: int):
    centre = np.array([0.004, 0.048, 0.0])
    radii = np.array([0.046, 0.052, 0.016])
    verts = [centre - [0, radii[1], 0]]  # bottom pole (the wrist side)
    for i in range(1, PALM_LAT + 1):
        theta = np.pi * i / (PALM_LAT + 1)
        for k in range(PALM_LON):
            phi = 2 * np.pi * k / PALM_LON
            d = np.array([np.sin(theta) * np.cos(phi), -np.cos(theta), np.sin(theta) * np.sin(phi)])
            verts.append(centre + radii * d)
    verts.append(centre + [0, radii[1], 0])
    faces = []
    bottom, top = first_vertex, first_vertex + 1 + PALM_LAT * PALM_LON

    def ring(i, k):
        return first_vertex + 1 + i * PALM_LON + k % PALM_LON

    for k in range(PALM_LON):
        faces.append((bottom, ring(0, k), ring(0, k + 1)))
        faces.append((top, ring(PALM_LAT - 1, k + 1), ring(PALM_LAT - 1, k)))
    for i in range(PALM_LAT - 1):
        for k in range(PALM_LON):
            a, b = ring(i, k), ring(i, k + 1)
            c, d = ring(i + 1, k), ring(i + 1, k + 1)
            faces += [(a, c, d), (a, d, b)]
    return np.array(verts), np.array(faces), bottom


def _segment_distance(points, a, b):
    ab = b - a
    t = np.clip(((points - a) @ ab) / (ab @ ab), 0.0, 1.0)
    return np.linalg.norm(points - (a + t[:, None] * ab), axis=1)


def build_builtin_hand() -> tuple[ManoModel, tuple[int, ...]]:
    """The stand-in model and its fingertip vertex ids (thumb, index, middle, ring, pinky).

    The ids are also in ``model.fingertip_ids``, and ``save_mano_npz`` stores them with the note.
    """
    parents = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
    palm_v, palm_f, wrist_vertex = _palm(0)
    verts, faces = [palm_v], [palm_f]
    joints = np.zeros((NUM_JOINTS, 3))
    regressor = np.zeros((NUM_JOINTS, 0))
    owner = np.full(len(palm_v), -1)  # finger index per vertex, -1 for the palm
    finger_axes, fingertip_ids, finger_verts = {}, {}, {}
    regressor_rows: dict[int, list[int]] = {0: [wrist_vertex]}
    next_id = len(palm_v)
    for f_index, (name, ids, base, direction, lengths, radius, rings) in enumerate(_FINGERS):
        d = _unit([direction[0], direction[1], 0.0])
        points = [np.array([base[0], base[1], 0.0])]
        for length in lengths:
            points.append(points[-1] + length * d)
        joint_pos, tip = np.array(points[:3]), points[3]
        joints[list(ids)] = joint_pos
        v, fc, _, joint_rings, tip_id = _tube(joint_pos, tip, radius, rings, next_id)
        for j, r in zip(ids, joint_rings, strict=True):
            regressor_rows[j] = list(range(next_id + r * RING, next_id + (r + 1) * RING))
        verts.append(v)
        faces.append(fc)
        owner = np.concatenate([owner, np.full(len(v), f_index)])
        finger_axes[name], fingertip_ids[name], finger_verts[name] = d, tip_id, (next_id, next_id + len(v))
        next_id += len(v)
    v_template = np.vstack(verts)
    f = np.vstack(faces)
    joints[0] = v_template[wrist_vertex]
    num_vertices = len(v_template)
    regressor = np.zeros((NUM_JOINTS, num_vertices))
    for j, rows in regressor_rows.items():
        regressor[j, rows] = 1.0 / len(rows)

    # Skinning: Gaussian falloff from each bone (joint -> its child or the tip), a vertex feeling
    # only its own finger's bones and the wrist; palm vertices also feel the fingers' first bones.
    sigma = 0.010
    weights = np.zeros((num_vertices, NUM_JOINTS))
    bones = {0: (joints[0], joints[4])}
    for name, ids, *_rest in _FINGERS:
        ends = [joints[ids[1]], joints[ids[2]], v_template[fingertip_ids[name]]]
        for j, end in zip(ids, ends, strict=True):
            bones[j] = (joints[j], end)
    for j, (a, b) in bones.items():
        weights[:, j] = np.exp(-((_segment_distance(v_template, a, b) / sigma) ** 2))
    finger_of_joint = {j: fi for fi, (_, ids, *_r) in enumerate(_FINGERS) for j in ids}
    for j, fi in finger_of_joint.items():
        allowed = (owner == fi) | ((owner == -1) & (j == _FINGERS[fi][1][0]))
        weights[~allowed, j] = 0.0
    weights[:, 0] = np.maximum(weights[:, 0], 1e-3)
    weights[owner == -1, 0] += 1.0
    weights /= weights.sum(axis=1, keepdims=True)

    # Shape blend shapes, one plausible variation per unit beta.
    rel = v_template - joints[0]
    shapedirs = np.zeros((num_vertices, 3, 10))
    shapedirs[:, :, 0] = 0.06 * rel  # overall size
    shapedirs[:, 0, 1] = 0.10 * rel[:, 0]  # palm and hand width
    shapedirs[:, 1, 2] = 0.06 * np.clip(rel[:, 1], 0, 0.1)  # palm length, fingers carried along
    shapedirs[:, 2, 3] = 0.20 * rel[:, 2]  # thickness
    for b, name in enumerate(_TIP_ORDER):  # finger lengths, thumb .. pinky
        lo, hi = finger_verts[name]
        fi = next(i for i, spec in enumerate(_FINGERS) if spec[0] == name)
        base = joints[_FINGERS[fi][1][0]]
        along = np.clip((v_template[lo:hi] - base) @ finger_axes[name], 0, None)
        shapedirs[lo:hi, :, 4 + b] = 0.08 * along[:, None] * finger_axes[name]
    finger_mask = owner >= 0
    radial = np.zeros_like(v_template)
    for name, (lo, hi) in finger_verts.items():
        fi = next(i for i, spec in enumerate(_FINGERS) if spec[0] == name)
        ids = _FINGERS[fi][1]
        centre_dist = np.stack([_segment_distance(v_template[lo:hi], *bones[j]) for j in ids], 1)
        nearest = np.array([bones[j] for j in ids])[np.argmin(centre_dist, axis=1)]
        a, b = nearest[:, 0], nearest[:, 1]
        ab = b - a
        t = np.clip(np.einsum("ij,ij->i", v_template[lo:hi] - a, ab) / np.einsum("ij,ij->i", ab, ab), 0, 1)
        out = v_template[lo:hi] - (a + t[:, None] * ab)
        radial[lo:hi] = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    shapedirs[finger_mask, :, 9] = 0.0012 * radial[finger_mask]  # finger thickness

    # Pose blend shapes: a small bulge at each joint as it bends (the diagonal of R - I).
    posedirs = np.zeros((num_vertices, 3, NUM_POSE_BLEND))
    for j in range(1, NUM_JOINTS):
        for diag in (0, 4, 8):
            posedirs[:, :, 9 * (j - 1) + diag] = -0.002 * weights[:, j : j + 1] * radial

    hands_mean = np.zeros((15, 3))
    for _, ids, *_r in _FINGERS:
        for j in ids:
            hands_mean[j - 1, 0] = 0.15  # a slight natural curl (flexion about x)
    model = ManoModel(
        v_template=v_template,
        shapedirs=shapedirs,
        posedirs=posedirs,
        J_regressor=regressor,
        weights=weights,
        parents=parents,
        faces=f,
        hands_components=np.eye(45),
        hands_mean=hands_mean.reshape(-1),
        source="builtin",
        fingertip_ids=tuple(fingertip_ids[name] for name in _TIP_ORDER),
        note=STAND_IN_NOTE,
    )
    return model, model.fingertip_ids


def save_builtin_hand(path: str | Path = "builtin_hand.npz") -> Path:
    """Writes the stand-in hand as a MANO-format .npz (with its fingertip ids and the stand-in note)."""
    model, _ = build_builtin_hand()
    return save_mano_npz(model, path)
