"""A small software mesh renderer (OpenCV): flat-shaded triangles drawn back to front.

Enough for overlays and for looking at a hand model; no GPU, no OpenGL context.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from handssca.runtime.camera import project


def look_at_rotation(yaw: float, pitch: float) -> np.ndarray:
    """A camera rotation: ``yaw`` about the vertical axis, then ``pitch`` about the horizontal (radians)."""
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_pitch @ r_yaw


def draw_mesh(
    image: np.ndarray,
    points_2d: np.ndarray,
    depth: np.ndarray,
    faces: np.ndarray,
    normals_z: np.ndarray,
    color=(180, 200, 235),
) -> np.ndarray:
    """Draws faces into ``image`` (H, W, 3 uint8, BGR) in place, farthest first.

    points_2d (V, 2) pixels, depth (V,) larger = farther, normals_z (F,) the face normals' component
    towards the camera (for shading; faces turned away are skipped).
    """
    import cv2

    order = np.argsort(-depth[faces].mean(axis=1))
    base = np.asarray(color, dtype=np.float64)
    pts = np.round(points_2d * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    for fi in order:
        shade = normals_z[fi]
        if shade <= 0:
            continue
        c = tuple(int(x) for x in np.clip(base * (0.25 + 0.75 * shade), 0, 255))
        cv2.fillConvexPoly(image, pts[faces[fi]], c, lineType=cv2.LINE_AA, shift=4)
    return image


def render_orthographic(
    vertices: np.ndarray,
    faces: np.ndarray,
    rotation: np.ndarray,
    size: int = 320,
    background=(255, 255, 255),
    scale: float | None = None,
    centre=None,
) -> np.ndarray:
    """The mesh seen along the camera's +z after ``rotation``, fitted into a size x size image."""
    cam = vertices @ rotation.T
    centre = cam.mean(axis=0) if centre is None else centre
    cam = cam - centre
    scale = scale or 0.8 * size / max(2 * np.abs(cam[:, :2]).max(), 1e-9)
    pts = np.stack([size / 2 + scale * cam[:, 0], size / 2 - scale * cam[:, 1]], axis=1)
    tri = cam[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    image = np.full((size, size, 3), background, dtype=np.uint8)
    # The camera looks along -z in these coordinates: towards-camera normals have +z; depth = -z.
    return draw_mesh(image, pts, -cam[:, 2], faces, normals[:, 2])


def render_perspective(
    image: np.ndarray,
    vertices: np.ndarray,
    faces: np.ndarray,
    K: np.ndarray,
    color=(180, 200, 235),
    light=(0.0, 0.0, -1.0),
    ambient: float = 0.3,
) -> np.ndarray:
    """Draws the mesh (camera frame, OpenCV: x right, y down, z forward, metres) into ``image``
    (H, W, 3 uint8, BGR) in place; returns the mask of drawn pixels (H, W) bool.

    Faces whose outward normal points away from the camera are culled; the rest are shaded by
    ``light`` (a direction the light travels along, camera frame) and drawn back to front.
    """
    import cv2

    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    towards_camera = -(normals * tri.mean(axis=1)).sum(axis=1)  # > 0: the face sees the camera
    light = np.asarray(light, dtype=np.float64)
    light = light / max(np.linalg.norm(light), 1e-12)
    diffuse = np.clip(-(normals @ light), 0.0, 1.0)
    points = np.round(project(v, K) * 16).astype(np.int32)  # 4 bits of sub-pixel precision
    order = np.argsort(-tri[:, :, 2].mean(axis=1))
    mask = np.zeros(image.shape[:2], np.uint8)
    base = np.asarray(color, dtype=np.float64)
    for fi in order:
        if towards_camera[fi] <= 0:
            continue
        shade = ambient + (1 - ambient) * diffuse[fi]
        c = tuple(int(x) for x in np.clip(base * shade, 0, 255))
        cv2.fillConvexPoly(image, points[faces[fi]], c, lineType=cv2.LINE_AA, shift=4)
        cv2.fillConvexPoly(mask, points[faces[fi]], 1, shift=4)
    return mask.astype(bool)


def mesh_to_obj(vertices: np.ndarray, faces: np.ndarray) -> str:
    """Wavefront OBJ text of a triangle mesh (1-based face indices)."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(vertices, dtype=np.float64)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces)]
    return "\n".join(lines) + "\n"


def pose_sheet(model, fingertip_ids, label: str, size: int = 320, seed: int = 0) -> np.ndarray:
    """``handssca mano render``: the hand model in four poses (flat, a fist, two random, the last
    with shape +2), side by side under a banner naming the model (H, W, 3 uint8 BGR)."""
    import cv2

    from handssca.runtime.mano.model import mano_forward

    rng = np.random.default_rng(seed)
    fist = np.zeros(48)
    fist[3:] = np.tile([1.1, 0.0, 0.0], 15)
    fist[3 + 3 * 12 : 3 + 3 * 15] = [0.3, 0.4, 0.6, 0.2, 0.1, 0.5, 0.1, 0.0, 0.5]  # thumb joints 13-15
    poses = {
        "rest (flat)": np.zeros(48),
        "fist": fist,
        "random": np.concatenate([np.zeros(3), rng.normal(scale=0.35, size=45)]),
        "random, shape +2": np.concatenate([np.zeros(3), rng.normal(scale=0.35, size=45)]),
    }
    shapes = np.zeros((len(poses), 10))
    shapes[3] = 2.0
    verts, _ = mano_forward(
        model, np.stack(list(poses.values())), shapes, flat_hand_mean=True, fingertip_ids=fingertip_ids
    )
    rotation = look_at_rotation(0.5, -0.6)
    tiles = []
    for name, v in zip(poses, verts, strict=True):
        tile = render_orthographic(v, model.faces, rotation, size=size, scale=size * 3.2)
        cv2.putText(tile, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (40, 40, 40), 1, cv2.LINE_AA)
        tiles.append(tile)
    sheet = np.concatenate(tiles, axis=1)
    banner = np.full((28, sheet.shape[1], 3), 255, np.uint8)
    cv2.putText(banner, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 160), 1, cv2.LINE_AA)
    return np.concatenate([banner, sheet], axis=0)


def render_hand_model(
    output: str | Path = "mano_poses.png", mano: str | None = None, fingertips: str = "smplx", size: int = 320,
    seed: int = 0,
) -> str:  # fmt: skip
    """``handssca mano render``: ``pose_sheet`` of the hand model ``mano`` names, written to
    ``output``; the line that reports it."""
    from handssca.runtime.files import write_image
    from handssca.runtime.mano.load import load_hand_model

    model, fingertip_ids, label = load_hand_model(mano, fingertips)
    write_image(output, pose_sheet(model, fingertip_ids, label, size=size, seed=seed))
    return f"wrote {output} ({label})"
