"""MediaPipe's rotated hand rectangles: from a palm, from landmarks, and the crop they define.

A hand rectangle is a square in image pixels, rotated so that the hand points up in the crop.
MediaPipe keeps rectangles normalised by the image's width and height; these functions do the
same arithmetic in pixels, which is what the normalised formulas amount to (each names its file).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The landmarks whose rotated bounding box gives the next frame's rectangle: the wrist, the
# thumb's first three joints and the two base joints of each finger
# (modules/hand_landmark/hand_landmark_landmarks_to_roi.pbtxt, SplitNormalizedLandmarkListCalculator).
TRACKING_LANDMARKS = (0, 1, 2, 3, 5, 6, 9, 10, 13, 14, 17, 18)


@dataclass(frozen=True)
class HandRect:
    """A rotated rectangle in image pixels: centre, size and rotation (radians, clockwise on screen)."""

    cx: float
    cy: float
    width: float
    height: float
    rotation: float

    def corners(self) -> np.ndarray:
        """(4, 2) corners in image pixels: top-left, top-right, bottom-right, bottom-left of the crop."""
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [self.width / 2, self.height / 2]
        return local @ rotation_matrix(self.rotation).T + [self.cx, self.cy]

    def to_json(self) -> dict:
        return {k: round(float(v), 3) for k, v in vars(self).items()}


def normalize_radians(angle: float) -> float:
    """``angle`` in [-pi, pi) (NormalizeRadius in MediaPipe's rect calculators)."""
    return angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))


def rotation_matrix(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def hand_rotation(start: np.ndarray, end: np.ndarray) -> float:
    """The rotation that makes start -> end point up: 90 degrees - atan2(-(y1 - y0), x1 - x0),
    normalised (calculators/util/detections_to_rects_calculator.cc, ComputeRotation)."""
    return normalize_radians(math.pi / 2 - math.atan2(-(end[1] - start[1]), end[0] - start[0]))


def transform_rect(rect: HandRect, scale: float, shift_y: float, shift_x: float = 0.0) -> HandRect:
    """calculators/util/rect_transformation_calculator.cc with square_long: shifted along the
    rotated axes by ``shift`` x its size, made square on its longer side, scaled."""
    c, s = math.cos(rect.rotation), math.sin(rect.rotation)
    dx = rect.width * shift_x * c - rect.height * shift_y * s
    dy = rect.width * shift_x * s + rect.height * shift_y * c
    side = max(rect.width, rect.height)
    return HandRect(rect.cx + dx, rect.cy + dy, side * scale, side * scale, rect.rotation)


def palm_rect(box: np.ndarray, keypoints: np.ndarray) -> HandRect:
    """The landmark model's rectangle for a palm (box (4,) and keypoints (7, 2) in image pixels).

    modules/palm_detection/palm_detection_detection_to_roi.pbtxt: DetectionsToRectsCalculator
    rotates by the wrist (keypoint 0) -> middle finger base (keypoint 2) vector towards 90 degrees,
    then RectTransformationCalculator scales by 2.6, shifts by -0.5 of the height, squares on the
    long side.
    """
    x0, y0, x1, y1 = box
    rect = HandRect((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, hand_rotation(keypoints[0], keypoints[2]))
    return transform_rect(rect, scale=2.6, shift_y=-0.5)


def landmarks_rect(landmarks: np.ndarray) -> HandRect:
    """The next frame's rectangle from this frame's 21 landmarks (image pixels).

    modules/hand_landmark/calculators/hand_landmarks_to_rect_calculator.cc: the rotation from the
    wrist towards the mean of the middle finger's base and of the index and ring bases' mean; the
    bounding box of the tracking landmarks in that rotated frame; then
    hand_landmark_landmarks_to_roi.pbtxt's RectTransformationCalculator: scale 2.0, shift -0.1.
    """
    points = np.asarray(landmarks, np.float64)[list(TRACKING_LANDMARKS)]
    towards = ((points[4] + points[8]) / 2 + points[6]) / 2  # subset 4, 6, 8: landmarks 5, 9, 13
    rotation = hand_rotation(points[0], towards)
    centre = (points.min(0) + points.max(0)) / 2
    projected = (points - centre) @ rotation_matrix(-rotation).T
    low, high = projected.min(0), projected.max(0)
    middle = rotation_matrix(rotation) @ ((low + high) / 2) + centre
    size = high - low
    return transform_rect(HandRect(middle[0], middle[1], size[0], size[1], rotation), scale=2.0, shift_y=-0.1)


def rect_affine(rect: HandRect, size: int) -> np.ndarray:
    """2 x 3 affine from image pixels to the size x size crop of ``rect``.

    calculators/tensor/image_to_tensor_converter_opencv.cc maps the rotated rectangle's corners
    (cv::RotatedRect, boxPoints) to the tensor's corners (0, 0) .. (size, size), not to the last
    pixel centre, and warps with INTER_LINEAR; so does this affine.
    """
    scale = np.array([size / rect.width, size / rect.height])
    inverse_rotation = rotation_matrix(-rect.rotation)
    linear = inverse_rotation * scale[:, None]
    offset = size / 2 - linear @ np.array([rect.cx, rect.cy])
    return np.hstack([linear, offset[:, None]])


def rect_iou(a: HandRect, b: HandRect) -> float:
    """IoU of two rectangles' unrotated boxes (calculators/util/association_norm_rect_calculator.cc
    ignores the rotation)."""
    from handssca.runtime.hands.boxes import box_iou

    return float(box_iou(rect_box(a), rect_box(b)[None])[0])


def rect_box(rect: HandRect) -> np.ndarray:
    """(xmin, ymin, xmax, ymax) of the rectangle without its rotation."""
    return np.array(
        [rect.cx - rect.width / 2, rect.cy - rect.height / 2, rect.cx + rect.width / 2, rect.cy + rect.height / 2]
    )
