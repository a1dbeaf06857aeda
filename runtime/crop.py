"""Square hand crops: the one geometry that training, the predictor and the webcam share.

A hand box (x0, y0, x1, y1) becomes a square of side ``expand`` x its longer edge around its
centre, warped to size x size (optionally rotated about the centre, or mirrored for left
hands). The 2 x 3 affine maps image pixels to crop pixels; its inverse maps predictions back.
"""

from __future__ import annotations

import numpy as np

BOX_EXPAND = 1.5  # crop side / hand box's longer edge, as HandOccNet's training crops
IMAGE_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, RGB, on 0..1 pixel values
IMAGE_STD = (0.229, 0.224, 0.225)


def square_from_box(box, expand: float = BOX_EXPAND) -> tuple[float, float, float]:
    """(centre x, centre y, side) of the square crop around ``box``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"hand box {tuple(box)} is empty: expected x0 < x1 and y0 < y1")
    return (x0 + x1) / 2, (y0 + y1) / 2, expand * max(x1 - x0, y1 - y0)


def crop_affine(
    centre_x: float, centre_y: float, side: float, size: int, rotation_deg: float = 0.0, mirror: bool = False
) -> np.ndarray:
    """2 x 3 affine from image pixels to crop pixels (rotation counter-clockwise in the image)."""
    scale = size / side
    angle = np.deg2rad(rotation_deg)
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    # Rotate and scale about the box centre, then put the centre in the middle of the crop, which
    # is (size - 1) / 2 because pixel centres are at integer coordinates (OpenCV's convention).
    m = np.array([[c, s, 0.0], [-s, c, 0.0]])
    m[:, 2] = np.full(2, (size - 1) / 2) - m[:, :2] @ np.array([centre_x, centre_y])
    if mirror:  # pixel centres are integers: column j of the crop swaps with column size - 1 - j
        m = np.array([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


def hand_affine(box, side: str, size: int) -> np.ndarray:
    """The crop affine of one hand box: the square around it, mirrored for a left hand (the network
    sees right hands only). The predictor and the serving models compute it the same way."""
    return crop_affine(*square_from_box(box), size, mirror=side == "left")


def invert_affine(m: np.ndarray) -> np.ndarray:
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


def crop_image(image: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """The size x size crop (pixels outside the image are black)."""
    import cv2

    return cv2.warpAffine(image, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def normalise(crop_rgb: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (..., S, S, 3) RGB -> float32 (..., 3, S, S): pixels / 255, then (x - mean) / std per
    channel. One crop or a batch of them; the arithmetic per pixel is the same either way."""
    x = crop_rgb.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))
