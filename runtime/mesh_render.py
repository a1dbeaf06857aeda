"""A small software mesh renderer: flat-shaded triangles, no GPU, no OpenGL context.

``render_perspective`` (overlays, synthetic images) rasterises with a z-buffer in numpy;
``render_orthographic`` (looking at a hand model) draws with OpenCV back to front.
"""

from __future__ import annotations

import functools
from pathlib import Path

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


# Faces with a vertex nearer the camera than this (metres, along z) are not drawn: a vertex at or
# behind the camera has no finite projection. A hand so near the lens is not a hand one can see.
NEAR = 1e-3
# Faces are rasterised in chunks of about this many pixels of their boxes (a larger face alone): a
# few MB of temporaries however large the faces are on the screen (a hand at the lens covers the
# frame many faces deep), and few enough chunks to keep numpy's calls long.
_CHUNK_PAIRS = 1 << 16
# Faces with a vertex that projects farther than this from the image's origin (pixels) are dropped
# too: no hand in a sane picture is so large, and the arithmetic stays far from overflow.
_FAR = 1e12
# The least share of a pixel outside the outline that the mesh must cover to be drawn there.
_FAINTEST = 1 / 32


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
    ``light`` (a direction the light travels along, camera frame), one colour a face: ``color``
    times ``ambient + (1 - ambient) * clip(-(normal . light), 0, 1)``. A pixel takes the nearest
    face whose triangle holds its centre (a z-buffer; pixel centres at integer coordinates, as
    ``camera.project`` has them). The outline is anti-aliased: the pixels along it, on both sides,
    are blended with what was there by the share of the pixel the mesh covers (the mask holds them
    too: every pixel written). Edges where one face hides another are not blended.

    Faces with a vertex at ``z <= NEAR`` (behind, at or too near the camera), not finite, or
    projected absurdly far off (``_FAR`` pixels) are dropped whole, not clipped. Faces are
    rasterised only within the image, in chunks, so the time and memory a mesh takes are bounded
    by how much of the image its faces cover, wherever its vertices are.
    """
    height, width = image.shape[:2]
    mask = np.zeros((height, width), bool)
    faces = np.asarray(faces)
    mesh = _screen_faces(vertices, faces, K, height, width)
    if mesh is None:
        return mask
    light = np.asarray(light, dtype=np.float64)
    light = light / max(np.linalg.norm(light), 1e-12)
    diffuse = np.clip(-(mesh.normals @ light), 0.0, 1.0)
    shade = ambient + (1 - ambient) * diffuse
    colours = np.clip(np.asarray(color, dtype=np.float64)[None] * shade[mesh.kept, None], 0, 255).astype(np.uint8)

    grid = _zbuffer(mesh, height, width)
    outline, alpha, edge_face = _outline(grid, mesh, _silhouette(faces, mesh))
    ys, xs = grid.image_rows_cols(outline)
    under = image[ys, xs].astype(np.float32)  # what the outline is blended with
    (y0, y1), (x0, x1) = grid.in_image()
    ids = grid.ids[y0 - grid.top : y1 - grid.top, x0 - grid.left : x1 - grid.left]
    inside = ids >= 0
    _paint(image[y0:y1, x0:x1], ids, inside, colours)
    over = colours[edge_face].astype(np.float32)
    image[ys, xs] = np.rint(alpha[:, None] * over + (1 - alpha[:, None]) * under).astype(np.uint8)
    mask[y0:y1, x0:x1] = inside
    mask[ys, xs] = True
    return mask


def _paint(window: np.ndarray, ids: np.ndarray, inside: np.ndarray, colours: np.ndarray) -> None:
    """``window[inside] = colours[ids[inside]]``, through OpenCV where it can write into
    ``window`` in place (numpy's scatter of 3-byte pixels is several times slower)."""
    import cv2

    if window.dtype != np.uint8 or window.strides[1:] != (3, 1) or window.strides[0] <= 0:  # not a cv::Mat
        window[inside] = colours[ids[inside]]
        return
    table = np.zeros((len(colours) + 1, 4), np.uint8)  # BGRA; the last for ids of -1
    table[:-1, :3] = colours
    bgra = table.view(np.uint32).reshape(-1).take(ids).view(np.uint8).reshape(ids.shape + (4,))
    cv2.copyTo(cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR), inside.view(np.uint8), window)


def face_ids(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) int: the face ``render_perspective`` shows at each pixel centre (its
    z-buffer, before the outline is blended in), -1 where none."""
    out = np.full((height, width), -1, np.intp)
    mesh = _screen_faces(vertices, np.asarray(faces), K, height, width)
    if mesh is not None:
        grid = _zbuffer(mesh, height, width)
        ids = grid.ids.reshape(-1)
        drawn = np.flatnonzero(ids >= 0)
        out.reshape(-1)[grid.to_image(drawn)] = mesh.kept[ids[drawn]]
    return out


class _Mesh:
    """The faces that can be drawn (``kept``, indices into the faces) and, for them, in pixels:
    each edge k (the one facing vertex k) as a line a x + b y + c, positive inside, unit normal
    (``edges`` (3, 3, n): a, b, c by edge); the plane of 1/depth on the screen (``depth_plane``
    (3, n): 1/depth = p0 x + p1 y + p2); the box of pixel centres it may cover, within the image
    (``rows``, ``cols``: (2, n) first and last); every face's unit normal (``normals`` (F, 3)) and
    whether it faces the camera beyond NEAR, on the screen or not (``front`` (F,))."""

    __slots__ = ("kept", "edges", "depth_plane", "rows", "cols", "normals", "front")


def _screen_faces(vertices, faces, K, height, width) -> _Mesh | None:
    """The faces that face the camera, lie beyond NEAR and reach into the image, on the screen;
    None where there are none."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = faces.astype(np.intp, copy=False).reshape(-1, 3)
    if not len(faces) or not len(v):
        return None
    finite = np.isfinite(v).all(axis=1)
    v = np.where(finite[:, None], v, 0.0)
    uvw = v @ np.asarray(K, dtype=np.float64).T
    usable = finite & (v[:, 2] > NEAR) & (uvw[:, 2] > NEAR)
    inv_depth = 1.0 / np.where(usable, uvw[:, 2], 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        u, w = uvw[:, 0] * inv_depth, uvw[:, 1] * inv_depth
    usable &= (np.abs(u) < _FAR) & (np.abs(w) < _FAR)

    f0, f1, f2 = faces.T
    p0, p1, p2 = v[f0], v[f1], v[f2]
    normals = np.cross(p1 - p0, p2 - p0)
    normals /= np.maximum(np.sqrt(np.einsum("ij,ij->i", normals, normals)), 1e-12)[:, None]
    # > 0: the face sees the camera (its normal against the ray to its centre).
    towards_camera = -np.einsum("ij,ij->i", normals, p0 + p1 + p2)
    front = (towards_camera > 0) & usable[f0] & usable[f1] & usable[f2]
    x = np.stack([u[f0], u[f1], u[f2]])  # (3, F)
    y = np.stack([w[f0], w[f1], w[f2]])
    on_screen = (x.max(0) >= 0) & (x.min(0) <= width - 1) & (y.max(0) >= 0) & (y.min(0) <= height - 1)
    kept = np.flatnonzero(front & on_screen)
    x, y = x[:, kept], y[:, kept]
    twice_area = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
    flat = np.abs(twice_area) <= 1e-12  # no area: covers no pixel centre but by rounding
    if flat.any():
        kept, x, y, twice_area = kept[~flat], x[:, ~flat], y[:, ~flat], twice_area[~flat]
    if not len(kept):
        return None
    # Edge k runs from vertex k+1 to vertex k+2.
    sign = np.sign(twice_area)
    (x1, x2), (y1, y2) = x[[[1, 2, 0], [2, 0, 1]]], y[[[1, 2, 0], [2, 0, 1]]]  # each edge's ends
    a = (y1 - y2) * sign
    b = (x2 - x1) * sign
    c = -(a * x1 + b * y1)
    # 1/depth is affine on the screen: the vertices' 1/depth by the barycentric weights (edge k's
    # value over twice the area, for vertex k).
    weights = np.stack([inv_depth[f0[kept]], inv_depth[f1[kept]], inv_depth[f2[kept]]]) / np.abs(twice_area)
    mesh = _Mesh()
    mesh.kept = kept
    mesh.depth_plane = np.stack([(a * weights).sum(0), (b * weights).sum(0), (c * weights).sum(0)])
    length = np.hypot(a, b)
    mesh.edges = np.stack([a / length, b / length, c / length])
    mesh.rows = np.stack([np.ceil(np.clip(y.min(0), 0, height - 1)), np.floor(np.clip(y.max(0), 0, height - 1))])
    mesh.cols = np.stack([np.ceil(np.clip(x.min(0), 0, width - 1)), np.floor(np.clip(x.max(0), 0, width - 1))])
    mesh.rows, mesh.cols = mesh.rows.astype(np.intp), mesh.cols.astype(np.intp)
    mesh.normals, mesh.front = normals, front
    return mesh


class _Grid:
    """The face (index into ``_Mesh.kept``, -1: none) nearest the camera at each pixel centre of
    the faces' box with a margin of two pixels (``ids``, (rows, cols) int32; its pixel (i, j) is
    the image's (top + i, left + j), which may be outside the image in the margin)."""

    __slots__ = ("ids", "top", "left", "image_shape")

    def to_image(self, index: np.ndarray) -> np.ndarray:
        """Flat indices into ``ids`` -> flat indices into the image."""
        width, grid_w = self.image_shape[1], self.ids.shape[1]
        return index + (index // grid_w) * (width - grid_w) + (self.top * width + self.left)

    def image_rows_cols(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flat indices into ``ids`` -> the image's rows and columns."""
        row = index // self.ids.shape[1]  # (np.divmod is many times slower)
        return row + self.top, index - row * self.ids.shape[1] + self.left

    def in_image(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The image's rows and columns (first, past the last) that the grid covers."""
        (rows, cols), (height, width) = self.ids.shape, self.image_shape
        return (max(self.top, 0), min(self.top + rows, height)), (max(self.left, 0), min(self.left + cols, width))


_MARGIN = 2


def _zbuffer(mesh: _Mesh, height: int, width: int) -> _Grid:
    (row0, row1), (col0, col1) = mesh.rows, mesh.cols
    grid = _Grid()
    grid.top, grid.left = int(row0.min()) - _MARGIN, int(col0.min()) - _MARGIN
    grid.image_shape = (height, width)
    shape = (int(row1.max()) + _MARGIN + 1 - grid.top, int(col1.max()) + _MARGIN + 1 - grid.left)
    depth = np.zeros(shape[0] * shape[1])  # 1/depth: 0 is infinitely far
    grid.ids = np.full(shape, -1, np.int32)
    ids = grid.ids.reshape(-1)
    rows = np.maximum(row1 - row0 + 1, 0)
    # Spans: on each row, a face holds the pixel centres from the largest of its left bounds to
    # the smallest of its right bounds. Edge k bounds it on the left where a_k > 0 (x >= -(b_k y +
    # c_k) / a_k), on the right where a_k < 0; a level edge (a_k = 0) bounds only the rows, which
    # are the box's. A triangle has one or two edges of each kind (the a_k sum to 0): the extremes
    # of a are one of each, the middle one is a second left or right bound (or repeats one).
    a, b, c = mesh.edges
    order = np.argsort(a, axis=0)
    sa, sb, sc = (np.take_along_axis(e, order, 0) for e in (a, b, c))
    with np.errstate(divide="ignore", invalid="ignore"):
        slope, offset = -sb / sa, -sc / sa  # x = slope y + offset along each edge

    def second(middle_bounds, other):  # the middle edge where it bounds this side, else ``other`` again
        return np.where(middle_bounds, slope[1], slope[other]), np.where(middle_bounds, offset[1], offset[other])

    left = [(slope[2], offset[2]), second(sa[1] > 0, 2)]
    right = [(slope[0], offset[0]), second(sa[1] < 0, 0)]
    ends = np.cumsum(rows * np.maximum(col1 - col0 + 1, 0))
    cuts = np.unique(np.searchsorted(ends, np.arange(_CHUNK_PAIRS, ends[-1], _CHUNK_PAIRS), side="right"))
    for part in np.split(np.arange(len(rows)), cuts):
        if len(part):
            _scan(part, row0, rows, left, right, mesh.depth_plane, grid, depth, ids)
    return grid


def _scan(part, row0, rows, left, right, plane, grid, depth, ids):
    """Rasterises the faces ``part`` into the z-buffer ``depth`` (1/depth, the larger nearer) and
    ``ids`` (flat): row by row, the span of pixel centres inside all three edges."""
    width = grid.image_shape[1]
    n = rows[part]
    face = np.repeat(part, n)
    y = np.arange(len(face)) + np.repeat(row0[part] - (np.cumsum(n) - n), n)
    fy = y.astype(np.float64)
    (s0, o0), (s1, o1) = left
    start = np.maximum(s0[face] * fy + o0[face], s1[face] * fy + o1[face])
    (s0, o0), (s1, o1) = right
    stop = np.minimum(s0[face] * fy + o0[face], s1[face] * fy + o1[face])
    start = np.ceil(np.clip(start, 0, width)).astype(np.intp)
    stop = np.floor(np.clip(stop, -1, width - 1)).astype(np.intp)
    count = np.maximum(stop - start + 1, 0)
    total = int(count.sum())
    if not total:
        return
    # Pixel i of the chunk lies at its span's first pixel plus (i - the span's first i).
    # (In place where it can be: this is the renderer's bulk.)
    first = np.cumsum(count) - count
    step = np.arange(total)
    pixel = np.repeat((y - grid.top) * grid.ids.shape[1] + (start - grid.left) - first, count)
    pixel += step
    p0, p1, p2 = plane[:, face]
    nearness = np.repeat(p0, count)
    nearness *= step
    nearness += np.repeat(p0 * (start - first) + p1 * fy + p2, count)
    np.maximum.at(depth, pixel, nearness)
    nearest = nearness >= depth[pixel]
    ids[pixel[nearest]] = np.repeat(face.astype(np.int32), count)[nearest]


def _silhouette(faces: np.ndarray, mesh: _Mesh) -> np.ndarray:
    """(3, len(mesh.kept)): whether each edge of the drawn faces is on the mesh's outline: no other
    face that faces the camera (on the screen or just off it) has it."""
    group, groups = _edge_groups(np.ascontiguousarray(faces, dtype=np.int64).tobytes(), len(faces))
    count = np.bincount(group.ravel(), weights=np.broadcast_to(mesh.front, group.shape).ravel(), minlength=groups)
    return count[group[:, mesh.kept]] == 1


@functools.lru_cache(maxsize=8)
def _edge_groups(faces_bytes: bytes, count: int) -> tuple[np.ndarray, int]:
    """Per face edge (3, F) (edge k the one facing vertex k), a number shared by the edges that
    join the same two vertices; and how many numbers."""
    faces = np.frombuffer(faces_bytes, dtype=np.int64).reshape(count, 3)
    ends = np.stack([np.roll(faces.T, -1, 0), np.roll(faces.T, -2, 0)])  # (2, 3, F)
    low, high = ends.min(0), ends.max(0)
    keys = low * (int(faces.max()) + 1) + high
    _, group = np.unique(keys.ravel(), return_inverse=True)
    return group.reshape(3, count), int(group.max()) + 1


def _outline(grid: _Grid, mesh: _Mesh, silhouette):
    """The pixels along the outline (flat indices into ``grid.ids``, those in the image), the
    share of each the mesh covers and the face whose colour is blended in. The share is a box
    filter of the nearest edge: 1/2 plus the pixel centre's signed distance to it, clipped to [0,
    1]. Inside the outline a pixel's own face, by its outline edges; outside, the best of the faces
    of its eight neighbours, each by the farthest of its edges."""
    import cv2

    ids = grid.ids
    held = (ids >= 0).view(np.uint8)
    points = cv2.findNonZero(cv2.morphologyEx(held, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)))  # (x, y)
    grid_w = ids.shape[1]
    # (np.flatnonzero is ten times slower here, np.divmod many times slower than // below.)
    points = np.zeros((0, 2), np.intp) if points is None else points.reshape(-1, 2).astype(np.intp)
    edge = points[:, 1] * grid_w + points[:, 0]
    flat = ids.reshape(-1)
    own = flat[edge]
    inner, outer = edge[own >= 0], edge[own < 0]
    a, b, c = mesh.edges

    face = own[own >= 0]
    gy = inner // grid_w
    gx = inner - gy * grid_w
    gx, gy = (gx + grid.left).astype(np.float64), (gy + grid.top).astype(np.float64)
    distance = np.full(len(face), np.inf)
    for k in range(3):
        on = np.flatnonzero(silhouette[k, face])
        f = face[on]
        distance[on] = np.minimum(distance[on], a[k, f] * gx[on] + b[k, f] * gy[on] + c[k, f])
    inner_alpha = np.clip(0.5 + distance, 0.0, 1.0)

    # Outside: (pixel, a neighbour's face) pairs; the margin keeps the neighbours in the grid.
    gy = outer // grid_w
    gx = outer - gy * grid_w
    gx, gy = gx + grid.left, gy + grid.top
    height, width = grid.image_shape
    in_image = (gx >= 0) & (gx < width) & (gy >= 0) & (gy < height)
    outer, gx, gy = outer[in_image], gx[in_image].astype(np.float64), gy[in_image].astype(np.float64)
    around = flat[outer[:, None] + np.array([-grid_w - 1, -grid_w, -grid_w + 1, -1, 1, grid_w - 1, grid_w, grid_w + 1])]
    pixel_of, which = np.nonzero(around >= 0)
    face_of = around[pixel_of, which]
    gx, gy = gx[pixel_of], gy[pixel_of]
    distance = np.minimum.reduce([a[k, face_of] * gx + b[k, face_of] * gy + c[k, face_of] for k in range(3)])
    cover = np.clip(0.5 + distance, 0.0, 1.0)
    outer_alpha = np.zeros(len(outer))
    np.maximum.at(outer_alpha, pixel_of, cover)
    outer_face = np.zeros(len(outer), np.int32)
    best = cover >= outer_alpha[pixel_of]
    outer_face[pixel_of[best]] = face_of[best]
    seen = outer_alpha >= _FAINTEST  # fainter than this, a pixel outside is left alone

    pixels = np.concatenate([inner, outer[seen]])
    alpha = np.concatenate([inner_alpha, outer_alpha[seen]]).astype(np.float32)
    return pixels, alpha, np.concatenate([face, outer_face[seen]])


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
