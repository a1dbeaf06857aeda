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


# The outline's offsets: the text drawn in black one pixel around, at the text's own thickness.
# A black copy drawn thicker lines up only where getTextSize's width does not depend on the
# thickness, which OpenCV 5 changed (the HUD's shadow drifted off its text).
_OUTLINE = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]


def outlined_text(image: np.ndarray, text: str, origin: tuple[int, int], colour) -> None:
    """``text`` at ``origin`` (its baseline's left end) in ``colour``, outlined in black: readable
    on any background, with every glyph drawn at one thickness whatever the OpenCV version."""
    import cv2

    x, y = origin
    for dx, dy in _OUTLINE:
        cv2.putText(image, text, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)


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
