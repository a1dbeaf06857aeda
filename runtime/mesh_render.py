"""A small software mesh renderer (OpenCV): flat-shaded triangles drawn back to front.

Enough for overlays and for looking at a hand model; no GPU, no OpenGL context.
"""

from __future__ import annotations

import numpy as np


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
