"""render_perspective (runtime/mesh_render.py) against a slow reference that is plainly right.

The reference casts a ray through every pixel centre and takes the nearest triangle it hits from
the front (Möller-Trumbore, in 3D, all pixels against all triangles), with nothing shared with
the renderer's screen-space scan but the rule of which faces are dropped (a vertex at z <= NEAR).

Tolerance: the face at a pixel must match the reference's at every pixel but the ambiguous ones,
those whose centre lies within EDGE_BAND_PX of a front-facing triangle's edge (on the screen) or
whose two nearest hits are within DEPTH_TIE of each other (relative depth); with these bands at
1e-6 px and 1e-9 next to no pixel is left out. The colours must match exactly away from the
outline (more than a pixel from the reference's silhouette), where the renderer blends.
"""

from __future__ import annotations

import time
import tracemalloc
import warnings

import numpy as np
import pytest

from handssca.runtime.camera import default_intrinsics
from handssca.runtime.mano.builtin import build_builtin_hand
from handssca.runtime.mano.model import mano_forward
from handssca.runtime.mesh_render import NEAR, face_ids, render_perspective
from handssca.runtime.outputs.hands import hand_faces

EDGE_BAND_PX = 1e-6
DEPTH_TIE = 1e-9
LIGHT = (0.3, 0.4, 1.0)


def ray_cast(vertices, faces, K, height, width):
    """(face id (H, W), -1 where none; ambiguous (H, W) bool) by casting a ray from the camera
    through each pixel centre."""
    v = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces).reshape(-1, 3)
    tri = v[faces]
    usable = np.isfinite(tri).all(axis=(1, 2)) & (np.nan_to_num(tri[..., 2], nan=-1.0) > NEAR).all(axis=1)
    index = np.flatnonzero(usable)
    tri = tri[index]
    ids = np.full(height * width, -1)
    ambiguous = np.zeros(height * width, bool)
    if not len(index):
        return ids.reshape(height, width), ambiguous.reshape(height, width)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    # The triangles on the screen, for the edge band.
    uvw = tri @ np.asarray(K, dtype=np.float64).T
    screen = uvw[..., :2] / uvw[..., 2:]
    ys, xs = np.mgrid[0:height, 0:width]
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    rays = np.concatenate([centres, np.ones((len(centres), 1))], axis=1) @ np.linalg.inv(K).T
    for chunk in np.array_split(np.arange(len(rays)), max(1, len(rays) * len(tri) // 400_000)):
        d = rays[chunk][:, None, :]  # (P, 1, 3); the rays start at the camera, the origin
        p = np.cross(d, e2)  # (P, T, 3)
        det = np.einsum("tk,ptk->pt", e1, p)
        front = det > 1e-300  # the ray meets the triangle's front (its normal e1 x e2 faces the camera)
        s = -tri[:, 0]  # origin - vertex 0
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.einsum("tk,ptk->pt", s, p) / det
            q = np.cross(s, e1)  # (T, 3)
            w = np.einsum("pk,tk->pt", d[:, 0], q) / det
            t = np.einsum("tk,tk->t", e2, q) / det
        hit = front & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
        t = np.where(hit, t, np.inf)
        order = np.argsort(t, axis=1)[:, :2]
        first = np.take_along_axis(t, order, axis=1)
        nearest = np.where(np.isfinite(first[:, 0]), index[order[:, 0]], -1)
        ids[chunk] = nearest
        with np.errstate(invalid="ignore"):  # inf - inf where a ray hits nothing
            tie = np.isfinite(first[:, 1]) & (first[:, 1] - first[:, 0] <= DEPTH_TIE * first[:, 0])
        # Within the band of a front-facing triangle's edge: inside or just outside it, near a side.
        a, b = screen[:, [1, 2, 0]], screen[:, [2, 0, 1]]  # (T, 3, 2) the edges' ends
        along = b - a
        c = centres[chunk][:, None, None, :] - a[None]
        cross = along[None, ..., 0] * c[..., 1] - along[None, ..., 1] * c[..., 0]
        distance = cross / np.linalg.norm(along, axis=-1)[None]
        (x1, y1), (x2, y2) = (screen[:, 1] - screen[:, 0]).T, (screen[:, 2] - screen[:, 0]).T
        distance *= np.sign(x1 * y2 - x2 * y1)[None, :, None]
        near_edge = (distance.min(axis=2) > -EDGE_BAND_PX) & (np.abs(distance).min(axis=2) < EDGE_BAND_PX)
        ambiguous[chunk] = tie | (near_edge & (det > 0)).any(axis=1)
    return ids.reshape(height, width), ambiguous.reshape(height, width)


def face_colours(vertices, faces, colour, light, ambient):
    """Each face's colour by the contract: colour * (ambient + (1 - ambient) * clip(-n.light))."""
    tri = np.nan_to_num(np.asarray(vertices, dtype=np.float64)[faces], posinf=0.0, neginf=0.0)  # (unused faces)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    light = np.asarray(light, dtype=np.float64) / np.linalg.norm(light)
    shade = ambient + (1 - ambient) * np.clip(-(n @ light), 0, 1)
    return np.clip(np.asarray(colour, dtype=np.float64) * shade[:, None], 0, 255).astype(np.uint8)


def grow(mask, steps=1):
    out = mask.copy()
    for _ in range(steps):
        padded = np.pad(out, 1)
        out = np.zeros_like(mask)
        for dy in range(3):
            for dx in range(3):
                out |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return out


def check_against_reference(vertices, faces, K, height, width, rng, colour=(180, 200, 235), ambient=0.3):
    """The renderer's faces and picture against the ray caster's; returns the reference's ids."""
    expected, ambiguous = ray_cast(vertices, faces, K, height, width)
    got = face_ids(vertices, faces, K, height, width)
    wrong = (got != expected) & ~ambiguous
    assert not wrong.any(), f"{wrong.sum()} pixels show another face, at {np.argwhere(wrong)[:5].tolist()}"
    assert ambiguous.mean() < 0.01

    # Darker than any face by more than 32 levels: the faintest blend (1/32) still changes a pixel.
    background = rng.integers(0, 10, (height, width, 3), dtype=np.uint8)
    image = background.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = render_perspective(image, vertices, faces, K, colour, light=LIGHT, ambient=ambient)
    assert mask.shape == (height, width) and mask.dtype == bool
    covered = expected >= 0
    # The mask: the covered pixels and, along the outline, the pixels the blend reached.
    assert not (covered & ~mask & ~ambiguous).any()
    assert not (mask & ~grow(covered)).any()
    # Drawn pixels are in the mask, and nothing else changed.
    changed = (image != background).any(axis=2)
    np.testing.assert_array_equal(changed, mask)
    # Away from the outline (and from the image's border, where it may run just outside), each
    # pixel has its face's colour by the contract, or is untouched.
    colours = face_colours(vertices, faces, colour, LIGHT, ambient)
    interior = covered & ~grow(~covered) & ~ambiguous
    interior[[0, -1]] = interior[:, [0, -1]] = False
    np.testing.assert_array_equal(image[interior], colours[expected[interior]])
    return expected


def random_soup(rng, count, height, width, K):
    """``count`` unrelated triangles, 1 to 40 px across, at 0.3 to 3 m, over and around the image
    (some crossing each other, some turned away)."""
    centres = rng.uniform([-0.2 * width, -0.2 * height], [1.2 * width, 1.2 * height], (count, 1, 2))
    size = np.exp(rng.uniform(0, np.log(40), (count, 1, 1)))
    pixels = centres + size * rng.normal(size=(count, 3, 2))
    depth = rng.uniform(0.3, 3.0, (count, 1)) + rng.normal(0, 0.05, (count, 3))
    rays = np.concatenate([pixels, np.ones((count, 3, 1))], axis=2) @ np.linalg.inv(K).T
    vertices = (rays * depth[..., None]).reshape(-1, 3)
    return vertices, np.arange(3 * count).reshape(count, 3)


def random_sheet(rng, height, width, K, n=9):
    """A crumpled sheet of shared vertices (a grid, two triangles a cell, facing the camera), some
    of it folded over itself and away from the camera."""
    gy, gx = np.mgrid[0:n, 0:n] / (n - 1)
    pixels = np.stack([gx * width * 1.1 - 0.05 * width, gy * height * 1.1 - 0.05 * height], axis=-1).reshape(-1, 2)
    pixels += rng.normal(0, 0.12 * min(width, height), pixels.shape)
    depth = 1.0 + rng.normal(0, 0.1, len(pixels))
    rays = np.concatenate([pixels, np.ones((len(pixels), 1))], axis=1) @ np.linalg.inv(K).T
    corner = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None]).ravel()
    faces = np.concatenate(
        [np.stack([corner, corner + n, corner + 1], 1), np.stack([corner + 1, corner + n, corner + n + 1], 1)]
    )
    return rays * depth[:, None], faces


def random_intrinsics(rng, height, width):
    f = rng.uniform(0.8, 1.5) * max(width, height)
    return np.array(
        [
            [f, 0, width / 2 + rng.normal(0, 2)],
            [0, f * rng.uniform(0.95, 1.05), height / 2 + rng.normal(0, 2)],
            [0, 0, 1],
        ]
    )


def random_placed_hand(rng, side="right"):
    """The built-in hand in a random pose, turned at random: (vertices centred on 0, faces right
    side out for ``side``)."""
    mano, fingertip_ids = build_builtin_hand()
    pose = np.zeros(48)
    axis = rng.normal(size=3)
    pose[:3] = axis / np.linalg.norm(axis) * rng.uniform(0, np.pi)
    pose[3:] = rng.normal(0, 0.35, 45)
    vertices, _ = mano_forward(
        mano, pose[None], rng.normal(0, 0.8, (1, 10)), flat_hand_mean=False, fingertip_ids=fingertip_ids
    )
    vertices = vertices[0] - vertices[0].mean(axis=0)
    if side == "left":
        vertices = vertices * [-1, 1, 1]
    return vertices, hand_faces(mano.faces, side)


def place(vertices, K, height_px, at=(0.0, 0.0)):
    """``vertices`` moved in front of the camera so that they span about ``height_px`` pixels,
    their middle ``at`` pixels off the principal point."""
    extent = np.ptp(vertices, axis=0).max()
    z = K[1, 1] * extent / height_px
    return vertices + [at[0] * z / K[0, 0], at[1] * z / K[1, 1], z]


@pytest.mark.parametrize(("height", "width"), [(37, 53), (48, 64), (53, 37)])
def test_random_triangles_match_the_ray_caster(rng, height, width):
    for _ in range(3):
        K = random_intrinsics(rng, height, width)
        vertices, faces = random_soup(rng, int(rng.integers(5, 60)), height, width, K)
        check_against_reference(vertices, faces, K, height, width, rng)


def test_shared_vertex_sheets_match_the_ray_caster(rng):
    for height, width in [(37, 53), (41, 29)]:
        K = random_intrinsics(rng, height, width)
        vertices, faces = random_sheet(rng, height, width, K)
        ids = check_against_reference(vertices, faces, K, height, width, rng, colour=(90, 250, 160), ambient=0.5)
        assert (ids >= 0).mean() > 0.3


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_posed_hand_matches_the_ray_caster(rng, side):
    height, width = 47, 61
    for size in (20, 45):
        K = random_intrinsics(rng, height, width)
        vertices, faces = random_placed_hand(rng, side)
        vertices = place(vertices, K, size, at=rng.uniform(-8, 8, 2))
        ids = check_against_reference(vertices, faces, K, height, width, rng)
        assert (ids >= 0).sum() > 0.1 * size**2  # the hand is there, right side out


def test_near_plane_and_non_finite_vertices_drop_their_faces_quietly(rng):
    height, width = 37, 53
    K = random_intrinsics(rng, height, width)
    vertices, faces = random_soup(rng, 40, height, width, K)
    vertices[::7, 2] = 0.0  # at the camera
    vertices[1::7, 2] = -0.5  # behind it
    vertices[2::11, 2] = NEAR  # on the near plane
    vertices[3::11, 2] = NEAR / 3
    vertices[4::13] = np.nan
    vertices[5::13, 0] = np.inf
    assert np.isfinite(vertices).all(axis=1).sum() < len(vertices)
    check_against_reference(vertices, faces, K, height, width, rng)  # warnings are errors in there
    # A mesh that straddles the camera: a hand pushed through the lens.
    hand, hand_faces_ = random_placed_hand(rng)
    hand = place(hand, K, 40)
    hand[:, 2] -= np.median(hand[:, 2])
    image = np.zeros((height, width, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mask = render_perspective(image, hand, hand_faces_, K, light=LIGHT)
    np.testing.assert_array_equal((image != 0).any(axis=2), mask)
    assert (face_ids(hand, hand_faces_, K, height, width) >= 0).sum() <= mask.sum()


def test_nothing_to_draw_draws_nothing():
    height, width = 37, 53
    K = default_intrinsics(width, height)
    background = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    hand, faces = random_placed_hand(np.random.default_rng(1))
    cases = {
        "empty": (np.zeros((0, 3)), np.zeros((0, 3), int)),
        "no faces": (hand + [0, 0, 0.5], np.zeros((0, 3), int)),
        "off to the side": (hand + [50.0, 0, 0.5], faces),
        "far off": (hand + [1e9, -1e9, 1.0], faces),
        "behind the camera": (hand + [0, 0, -0.5], faces),
    }
    for name, (vertices, f) in cases.items():
        image = background.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mask = render_perspective(image, vertices, f, K)
        assert not mask.any(), name
        np.testing.assert_array_equal(image, background, err_msg=name)


def test_a_hand_at_the_lens_costs_bounded_time_and_memory(rng):
    """A hand 2 cm from the camera covers a 640 x 480 frame many faces deep."""
    height, width = 480, 640
    K = default_intrinsics(width, height)
    hand, faces = random_placed_hand(rng)
    hand = hand + [0, 0, 0.02 - hand[:, 2].min() + NEAR]
    image = np.zeros((height, width, 3), np.uint8)
    tracemalloc.start()
    try:
        start = time.perf_counter()
        mask = render_perspective(image, hand, faces, K, light=LIGHT)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert mask.mean() > 0.1  # (a quarter to most of the frame, by the pose)
    assert elapsed < 5.0 and peak < 200e6, (elapsed, peak)


def test_drawing_into_a_view_and_into_an_array_agree(rng):
    height, width = 37, 53
    K = random_intrinsics(rng, height, width)
    vertices, faces = random_placed_hand(rng)
    vertices = place(vertices, K, 30)
    big = rng.integers(0, 256, (2 * height, 2 * width + 5, 3), dtype=np.uint8)
    # Rows apart (OpenCV can write into it), pixels apart, upside down (it cannot).
    for view in (big[::2, 3 : 3 + width], big[1::2, 1 : 1 + 2 * width : 2], big[::-2, 3 : 3 + width]):
        copy = view.copy()
        mask_view = render_perspective(view, vertices, faces, K, light=LIGHT)
        mask_copy = render_perspective(copy, vertices, faces, K, light=LIGHT)
        np.testing.assert_array_equal(mask_view, mask_copy)
        np.testing.assert_array_equal(view, copy)
        assert mask_view.any()


def test_the_outline_is_blended_by_the_share_of_each_pixel_covered(rng):
    """A square of two triangles, turned at random, in white on black: each pixel's level is the
    share of it the square covers (found by 32 x 32 samples a pixel) within 0.17 away from the
    corners (the blend takes the nearest edge as straight across the pixel: off by up to 1/8 at
    45 degrees); the two triangles' shared edge leaves no seam; the levels add up to the area."""
    size = 41
    for _ in range(4):
        K = np.array([[100.0, 0, size / 2], [0, 100.0, size / 2], [0, 0, 1]])
        angle, half = rng.uniform(0, np.pi / 2), rng.uniform(6, 14)
        centre = size / 2 + rng.uniform(-2, 2, 2)
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        corners = centre + np.array([[-half, -half], [half, -half], [half, half], [-half, half]]) @ turn.T
        vertices = np.concatenate([(corners - size / 2) / 100.0, np.ones((4, 1))], axis=1)  # at z = 1 m
        faces = np.array([[0, 2, 1], [0, 3, 2]])  # facing the camera (y points down)
        image = np.zeros((size, size, 3), np.uint8)
        mask = render_perspective(image, vertices, faces, K, (255, 255, 255), ambient=1.0)
        level = image[..., 0] / 255.0
        assert (image == image[..., :1]).all() and (mask == (level > 0)).all()

        samples = (np.arange(32) + 0.5) / 32 - 0.5
        sy, sx = np.meshgrid(samples, samples, indexing="ij")
        ys, xs = np.mgrid[0:size, 0:size]
        local = np.stack([xs[..., None, None] + sx, ys[..., None, None] + sy], axis=-1) - centre
        along = local @ turn  # the square's own axes
        coverage = (np.abs(along) <= half).all(axis=-1).mean(axis=(2, 3))

        near_corner = np.min(np.linalg.norm(np.stack([xs, ys], -1)[:, :, None] - corners, axis=-1), axis=2) < 1.5
        gap = np.abs(level - coverage)
        assert gap[~near_corner].max() <= 0.17, gap[~near_corner].max()
        depth = half - np.abs((np.stack([xs, ys], axis=-1) - centre) @ turn).max(axis=-1)  # inside the square, px
        assert (level[depth > 0.75] == 1).all()  # no seam along the diagonal, nothing dimmed inside
        assert abs(level.sum() - (2 * half) ** 2) < 0.01 * (2 * half) ** 2 + 1.0


@pytest.mark.parametrize("shape", [(37, 53), (48, 64), (1, 1)])
def test_the_overlay_blends_only_inside_the_mask(rng, shape):
    """``overlay.blend`` (addWeighted on the mask's box) against the per-pixel formula."""
    from handssca.runtime.overlay import blend

    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    layer = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    mask = rng.random(shape) < 0.3
    expected = image.astype(float)
    expected[mask] = 0.35 * image[mask] + 0.65 * layer[mask]
    blended = image.copy()
    blend(blended, layer, mask, 0.65)
    assert np.abs(blended - expected).max() <= 0.5 + 1e-9  # rounded, not truncated
    assert np.array_equal(blended[~mask], image[~mask])
    untouched = image.copy()
    blend(untouched, layer, np.zeros(shape, bool), 0.65)
    assert np.array_equal(untouched, image)
