"""The real photographs shipped with the package, and a two-hand video made from them.

Two photographs of an open left hand from Debian's opencv-doc 4.6.0 package (OpenCV's
documentation images; Apache-2.0 AND BSD-3-Clause, see handssca/assets/photos/SOURCES.md).
The demo shows the hand finder on them, the tests check the finder against them, and the
benchmarks time the webcam pipeline on ``two_hands_sequence``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

PHOTOS = {"hand_src": "handSrc.jpg", "back_projection": "Back_Projection_Theory0.jpg"}
PHOTO_SIDE = "left"  # both show a left hand


def photo_path(name: str) -> Path:
    return Path(str(resources.files("handssca").joinpath("assets", "photos", PHOTOS[name])))


def load_photo(name: str) -> np.ndarray:
    """The photograph ``name`` (a key of PHOTOS) as (H, W, 3) uint8 BGR."""
    from handssca.runtime.files import read_image

    return read_image(photo_path(name))


@dataclass
class SequenceFrame:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    hands: list[tuple[str, np.ndarray]]  # (side, the pasted photograph's box) of each hand in view


def two_hands_sequence(frames: int = 96, size: tuple[int, int] = (640, 360), seed: int = 0) -> list[SequenceFrame]:
    """A video of a left hand (the back_projection photograph) and a right hand (its mirror image)
    that move, turn and change size, with four stretches: both hands, none, the left alone, both
    again. Each frame lists the hands in view (side and box), for checking a tracker's counts."""
    import cv2

    rng = np.random.default_rng(seed)
    left = load_photo("back_projection")
    hands = {"left": left, "right": np.ascontiguousarray(left[:, ::-1])}
    width, height = size
    background = np.full((height, width, 3), 0, np.uint8)
    background[:] = np.asarray(left[:8].reshape(-1, 3).mean(0), np.uint8)  # the photograph's wall
    background = np.clip(background.astype(np.int16) + rng.integers(-6, 7, background.shape), 0, 255).astype(np.uint8)
    quarter = frames // 4
    out = []
    for index in range(frames):
        phase = min(index // max(quarter, 1), 3)
        visible = {0: ("left", "right"), 1: (), 2: ("left",), 3: ("left", "right")}[phase]
        image = background.copy()
        in_view = []
        t = index / max(frames - 1, 1)
        for side in visible:
            centre_x = width * (0.27 if side == "left" else 0.73) + 30 * np.sin(2 * np.pi * 2 * t)
            centre_y = height * 0.5 + 20 * np.cos(2 * np.pi * 3 * t)
            scale = 1.0 + 0.15 * np.sin(2 * np.pi * t + (0 if side == "left" else 1.0))
            angle = 20 * np.sin(2 * np.pi * 1.5 * t) * (1 if side == "left" else -1)
            photo = hands[side]
            affine = cv2.getRotationMatrix2D((photo.shape[1] / 2, photo.shape[0] / 2), angle, scale)
            affine[:, 2] += [centre_x - photo.shape[1] / 2, centre_y - photo.shape[0] / 2]
            mask = cv2.warpAffine(np.full(photo.shape[:2], 255, np.uint8), affine, size)
            warped = cv2.warpAffine(photo, affine, size)
            image[mask > 0] = warped[mask > 0]
            corners = np.array([[0, 0], [photo.shape[1], 0], [photo.shape[1], photo.shape[0]], [0, photo.shape[0]]])
            placed = corners @ affine[:, :2].T + affine[:, 2]
            in_view.append((side, np.concatenate([placed.min(0), placed.max(0)])))
        out.append(SequenceFrame(image, in_view))
    return out
