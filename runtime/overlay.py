"""Drawing predicted hands on images: the one overlay of ``handssca infer``, the demo and the webcam."""

from __future__ import annotations

import numpy as np

from handssca.runtime.mesh_render import render_perspective
from handssca.runtime.outputs.hands import hand_faces

# FreiHAND's 21 joints: wrist, then four per finger from the palm out (thumb .. pinky).
BONES = [(0, 1), (1, 2), (2, 3), (3, 4)] + [(0, 5 + 4 * f) for f in range(4)]
BONES += [(5 + 4 * f + i, 6 + 4 * f + i) for f in range(4) for i in range(3)]
FINGER_COLOURS = [(0, 0, 255), (0, 165, 255), (0, 200, 0), (255, 128, 0), (200, 0, 200)]  # BGR, thumb..pinky


def draw_skeleton(image: np.ndarray, keypoints: np.ndarray) -> None:
    import cv2

    pts = np.round(keypoints * 16).astype(np.int32)
    for a, b in BONES:
        finger = 0 if b <= 4 else (b - 5) // 4 + 1
        cv2.line(image, tuple(pts[a]), tuple(pts[b]), FINGER_COLOURS[finger], 2, cv2.LINE_AA, shift=4)
    for p in pts:
        cv2.circle(image, tuple(p), 3 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)


def draw_hud(image: np.ndarray, lines: list[str]) -> None:
    """``lines`` in the top-left corner, white on a black outline."""
    for i, text in enumerate(lines):
        outlined_text(image, text, (8, 18 + 18 * i), (255, 255, 255))


def draw_label(image: np.ndarray, box, text: str) -> None:
    """``text`` above the top-left corner of ``box`` (inside the image)."""
    x = int(np.clip(box[0], 0, image.shape[1] - 1))
    y = int(np.clip(box[1] - 6, 14, image.shape[0] - 1))
    outlined_text(image, text, (x, y), (0, 255, 255))


# Text is drawn once, at one thickness, into a small mask; its outline is that mask dilated by a
# pixel. Drawing a black copy thicker lined up only where getTextSize's width did not depend on the
# thickness, which OpenCV 5 changed (the HUD's shadow drifted off its text); and one drawing with a
# dilation costs a ninth of drawing the text at eight offsets and once more on top.
_FONT, _SCALE = 0, 0.5  # cv2.FONT_HERSHEY_SIMPLEX
_MARGIN = 3  # pixels around the text's box: the anti-aliased edge and the outline


def outlined_text(image: np.ndarray, text: str, origin: tuple[int, int], colour) -> None:
    """``text`` at ``origin`` (its baseline's left end) in ``colour``, outlined in black: readable
    on any background, with every glyph drawn at one thickness whatever the OpenCV version."""
    import cv2

    (width, height), baseline = cv2.getTextSize(text, _FONT, _SCALE, 1)
    x, y = origin
    left, top = x - _MARGIN, y - height - _MARGIN  # the text's box with its margin, in the image
    ink = np.zeros((height + baseline + 2 * _MARGIN, width + 2 * _MARGIN), np.uint8)
    cv2.putText(ink, text, (_MARGIN, height + _MARGIN), _FONT, _SCALE, 255, 1, cv2.LINE_AA)
    outline = cv2.dilate(ink, np.ones((3, 3), np.uint8))
    # The part of the box inside the image.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ink.shape[0], image.shape[0]), min(left + ink.shape[1], image.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    box = (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))
    cover = cv2.cvtColor(ink[box], cv2.COLOR_GRAY2BGR)
    keep = cv2.cvtColor(255 - outline[box], cv2.COLOR_GRAY2BGR)  # what of the picture the outline leaves
    region = image[y0:y1, x0:x1]
    # The picture darkened by the outline and by the text, then the text's colour by its cover
    # (uint8 arithmetic in OpenCV, rounded: numpy's float version took longer than the drawing).
    kept = cv2.multiply(cv2.multiply(region, keep, scale=1 / 255), 255 - cover, scale=1 / 255)
    paint = cv2.multiply(np.full(cover.shape, colour, np.uint8), cover, scale=1 / 255)
    np.copyto(region, cv2.add(kept, paint))


def draw_hand(image: np.ndarray, hand, faces, K, *, mesh=True, skeleton=True, opacity: float = 1.0) -> None:
    """``hand`` (a HandPrediction with a camera translation) drawn into ``image`` in place: the
    shaded mesh, blended at ``opacity``, then the skeleton. The mesh is drawn right side out
    (``outputs.hands.hand_faces``: a left hand's faces flipped), or back-face culling would drop
    every triangle of a left hand."""
    if mesh and faces is not None and hand.translation is not None and hand.translation[2] > 0:
        layer = image.copy() if opacity < 1.0 else image
        mesh_faces = hand_faces(faces, hand.side)
        mask = render_perspective(layer, hand.vertices_camera, mesh_faces, K, light=(0.3, 0.4, 1.0))
        if opacity < 1.0:
            blend(image, layer, mask, opacity)
    if skeleton:
        draw_skeleton(image, hand.keypoints_2d)


def blend(image: np.ndarray, layer: np.ndarray, mask: np.ndarray, opacity: float) -> None:
    """``layer`` over ``image`` at ``opacity`` where ``mask``, in place. Only the mask's bounding box
    is blended (OpenCV's addWeighted, rounded): a hand is a small part of the frame, and blending
    by a boolean index over the whole frame took as long as drawing the hand."""
    import cv2

    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    if w == 0 or h == 0:
        return
    box = (slice(y, y + h), slice(x, x + w))
    mixed = cv2.addWeighted(image[box], 1 - opacity, layer[box], opacity, 0)
    np.copyto(image[box], mixed, where=mask[box][..., None])
