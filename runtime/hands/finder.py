"""Finding hands in a frame: MediaPipe's palm detector and hand landmark model on ONNX Runtime.

``HandFinder().find(frame)`` -> up to ``max_hands`` ``FoundHand``s: the box this project crops
(the tight box of the 21 landmarks), the side (right/left) and its score, the landmark model's
presence score, the 21 landmarks in image pixels and the hand's rotation. The steps are
MediaPipe's hand graph (modules/hand_landmark/hand_landmark_tracking_cpu.pbtxt): the palm
detector on a letterbox of the whole frame, weighted NMS, the palm's rotated rectangle, the
landmark model on that rectangle's crop, the landmarks projected back. The models are the ones
in handssca/assets/hand_models (converted from MediaPipe 0.10.21 by tools/convert_hand_models.py,
Apache-2.0), or a user's folder with the same four file names. No torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from handssca.errors import InputError, ModelFileError
from handssca.runtime.backends.onnx_file import NOTHING, not_a_file, path_kind
from handssca.runtime.crop import apply_affine, invert_affine
from handssca.runtime.hands.boxes import box_from_points
from handssca.runtime.hands.palms import INPUT_SIZE as PALM_SIZE
from handssca.runtime.hands.palms import decode_palms, weighted_nms
from handssca.runtime.hands.rects import HandRect, landmarks_rect, palm_rect, rect_affine, rect_iou

LANDMARK_SIZE = 224
VARIANTS = ("full", "lite")
MAX_HANDS = 2  # MediaPipe's max_num_hands
MIN_DETECTION = 0.5  # MediaPipe's min_detection_confidence
MIN_PRESENCE = 0.5  # min_hand_presence_confidence
TRACKING_IOU = 0.5  # AssociationNormRectCalculator's min_similarity_threshold
# The tensors each model must have (name: shape), as MediaPipe's .tflite files define them.
PALM_TENSORS = {"input_1": [1, PALM_SIZE, PALM_SIZE, 3], "Identity": [1, 2016, 18], "Identity_1": [1, 2016, 1]}
LANDMARK_TENSORS = {
    "input_1": [1, LANDMARK_SIZE, LANDMARK_SIZE, 3],
    "Identity": [1, 63],  # 21 x (x, y, z) in crop pixels
    "Identity_1": [1, 1],  # presence (a sigmoid already)
    "Identity_2": [1, 1],  # handedness: > 0.5 is a right hand on an unmirrored image
    "Identity_3": [1, 63],  # world landmarks, metres
}
# What each output the finder uses may hold (name: what it is, low, high), checked on every run
# before use: a damaged or foreign model's NaN, inf or absurd values are refused in one line
# naming its file. Unchecked, NaN landmarks end in a traceback, a NaN side score puts NaN in
# predictions.json (not JSON) and landmarks of 1e30 pixels make a "hand" that takes a minute.
# The bounds are generous: on photographs, blank frames and noise the shipped models' regressors
# stay within +-170 (of +-576) and their landmarks within -63..217 (of -448..672).
PALM_RANGES = {
    "Identity": ("palm boxes and keypoints", -3 * PALM_SIZE, 3 * PALM_SIZE),  # 192-pixel units from an anchor
    "Identity_1": ("palm score logits", -np.inf, np.inf),  # clipped to +-100 when decoded; finite
}
LANDMARK_RANGES = {
    "Identity": ("landmarks", -2 * LANDMARK_SIZE, 3 * LANDMARK_SIZE),  # crop pixels: within two crops of it
    "Identity_1": ("presence", 0.0, 1.0),
    "Identity_2": ("handedness", 0.0, 1.0),
}


def shipped_models() -> Path:
    """The folder of the four ONNX models installed with the package."""
    return Path(str(resources.files("handssca").joinpath("assets", "hand_models")))


def model_files(variant: str, folder: str | Path | None = None) -> tuple[Path, Path]:
    """(palm detector, landmark model) paths of ``variant`` ("full" or "lite") in ``folder``."""
    if variant not in VARIANTS:
        raise ModelFileError(f"hand model variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    folder = Path(folder) if folder is not None else shipped_models()
    if not folder.is_dir() and path_kind(folder) != NOTHING:  # nothing there: each file is "not found"
        raise ModelFileError(f"{folder}: not a folder of hand models ({path_kind(folder)})")
    return folder / f"palm_detection_{variant}.onnx", folder / f"hand_landmark_{variant}.onnx"


def open_session(path: Path, tensors: dict[str, list[int]], what: str, threads: int = 0):
    """An ONNX Runtime session of ``path``, refused in one line when it is missing, not a file (a
    folder, a device, a link loop: named), unreadable, or has other tensors than ``tensors``."""
    import onnxruntime as ort

    problem = not_a_file(path, f"{what} model")
    if problem:
        raise ModelFileError(problem)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Idle threads must not spin between the finder's small models and the network's sessions.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT's InvalidProtobuf, Fail, ...: its text is long and multi-line
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: not a readable ONNX model, truncated or damaged? ({first})") from exc
    found = {t.name: list(t.shape) for t in session.get_inputs() + session.get_outputs()}
    if found != tensors:
        raise ModelFileError(f"{path}: not MediaPipe's {what} (expected tensors {tensors}, found {found})")
    return session


def checked_run(session, path: Path, ranges: dict[str, tuple[str, float, float]], feeds: dict) -> list[np.ndarray]:
    """``session``'s outputs named in ``ranges`` (in its order), each finite and within its range;
    ModelFileError naming ``path`` otherwise. Two reductions per output, no temporaries: NaN
    makes min/max NaN, so one comparison catches it with inf and the out of range."""
    outputs = session.run(list(ranges), feeds)
    for (name, (what, low, high)), values in zip(ranges.items(), outputs, strict=True):
        least, most = values.min(), values.max()
        if np.isfinite(least) and np.isfinite(most) and low <= least and most <= high:
            continue
        flat = values.ravel()
        bad = ~(np.isfinite(flat) & (flat >= low) & (flat <= high))
        allowed = "NaN or infinite" if np.isinf(high) else f"NaN, infinite or outside [{low:g}, {high:g}]"
        raise ModelFileError(
            f"{path}: output '{name}' ({what}) has {int(bad.sum())} of {flat.size} values {allowed} (e.g. "
            f"{flat[bad][0]:g}): a damaged model, or not MediaPipe's; refused"
        )
    return outputs


def as_rgb(frame, colour: str = "bgr") -> np.ndarray:
    """``frame`` as (H, W, 3) uint8 RGB: colour images in ``colour`` order ("bgr" or "rgb"),
    greyscale (H, W) or (H, W, 1), and RGBA/BGRA (the alpha dropped) are taken."""
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise InputError(f"a frame must be an (H, W[, C]) uint8 image, got {_describe(frame)}")
    if frame.ndim == 2 or frame.shape[2] == 1:
        return np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2)
    if frame.shape[2] not in (3, 4):
        raise InputError(f"a frame must have 1, 3 or 4 channels, got {frame.shape[2]}")
    if colour not in ("bgr", "rgb"):
        raise InputError(f"colour {colour!r}: expected 'bgr' or 'rgb'")
    rgb = frame[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if colour == "bgr" else rgb)


def _describe(frame) -> str:
    if isinstance(frame, np.ndarray):
        return f"an array of shape {frame.shape} and dtype {frame.dtype}"
    return type(frame).__name__


def swap_side(side: str) -> str:
    return "left" if side == "right" else "right"


@dataclass
class FoundHand:
    box: np.ndarray  # (4,) x0, y0, x1, y1: the tight box of the landmarks, the box this project crops
    side: str  # "right" or "left", as seen (swapped for a mirrored selfie image when asked)
    side_score: float  # the landmark model's probability of that side
    presence: float  # the landmark model's hand presence score
    keypoints: np.ndarray  # (21, 2) landmarks in image pixels, MediaPipe's (= FreiHAND's) joint order
    rotation: float  # radians: the hand's in-plane rotation (0: fingers up), clockwise on screen
    rect: HandRect  # the rotated crop the landmark model saw
    palm_score: float | None = None  # the palm detector's score (None when the rect came from tracking)

    def to_json(self) -> dict:
        out = {
            "box": np.round(self.box, 2).tolist(),
            "side": self.side,
            "side_score": round(float(self.side_score), 4),
            "presence": round(float(self.presence), 4),
            "rotation_deg": round(float(np.degrees(self.rotation)), 2),
            "keypoints_2d": np.round(self.keypoints, 2).tolist(),
        }
        if self.palm_score is not None:
            out["palm_score"] = round(float(self.palm_score), 4)
        return out


@dataclass
class HandFinder:
    """MediaPipe's palm detector and landmark model. ``models``: a folder with the four ONNX
    files (default: the shipped ones); ``variant``: "full" or "lite"; ``mirrored``: the frames
    are mirror images (a selfie camera), so every side is swapped."""

    models: str | Path | None = None
    variant: str = "full"
    max_hands: int = MAX_HANDS
    min_detection: float = MIN_DETECTION
    min_presence: float = MIN_PRESENCE
    mirrored: bool = False
    threads: int = 0
    timings: dict = field(default_factory=dict, init=False)

    def __post_init__(self):
        palm, landmark = model_files(self.variant, self.models)
        self._palm = open_session(palm, PALM_TENSORS, "palm detector", self.threads)
        self._landmark = open_session(landmark, LANDMARK_TENSORS, "hand landmark", self.threads)
        self.files = (palm, landmark)

    def find(self, frame: np.ndarray, colour: str = "bgr", max_hands: int | None = None) -> list[FoundHand]:
        """The hands in ``frame``, strongest palm first; none is an empty list."""
        image = as_rgb(frame, colour)
        limit = self.max_hands if max_hands is None else max_hands
        start = time.perf_counter()
        palms = self.detect_palms(image, limit)
        palm_done = time.perf_counter()
        hands: list[FoundHand] = []
        for box, keypoints, score in palms:
            hand = self.landmarks(image, palm_rect(box, keypoints), colour="rgb")
            if hand is None:
                continue
            hand.palm_score = float(score)
            # Two palms of one hand give one hand, the stronger palm's (MediaPipe Tasks'
            # HandLandmarksDeduplicationCalculator; the legacy graph's association keeps the later).
            if all(
                rect_iou(landmarks_rect(hand.keypoints), landmarks_rect(h.keypoints)) <= TRACKING_IOU for h in hands
            ):
                hands.append(hand)
        self.timings = {"palm_ms": (palm_done - start) * 1e3, "landmark_ms": (time.perf_counter() - palm_done) * 1e3}
        return hands

    def detect_palms(self, image_rgb: np.ndarray, max_palms: int = 0) -> list[tuple[np.ndarray, np.ndarray, float]]:
        """[(box (4,), keypoints (7, 2), score)] in image pixels, best first (at most ``max_palms``
        when > 0, as ClipDetectionVectorSizeCalculator does after the detector)."""
        import cv2

        affine = letterbox_affine(*image_rgb.shape[:2], PALM_SIZE)
        tensor = cv2.warpAffine(
            image_rgb, affine, (PALM_SIZE, PALM_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
        feeds = {"input_1": (tensor[None] / np.float32(255.0)).astype(np.float32)}
        regressors, logits = checked_run(self._palm, self.files[0], PALM_RANGES, feeds)
        palms = weighted_nms(decode_palms(regressors[0], logits[0], min_score=self.min_detection))
        if max_palms > 0:
            palms = palms.take(slice(0, max_palms))
        # detection_letterbox_removal_calculator.cc: tensor coordinates back to the frame's.
        back = invert_affine(affine)
        corners = palms.boxes.reshape(-1, 2) * PALM_SIZE
        boxes = apply_affine(back, corners).reshape(-1, 4)
        keypoints = apply_affine(back, palms.keypoints.reshape(-1, 2) * PALM_SIZE).reshape(-1, 7, 2)
        return [(boxes[i], keypoints[i], float(palms.scores[i])) for i in range(len(palms))]

    def landmarks(self, frame: np.ndarray, rect: HandRect, colour: str = "bgr") -> FoundHand | None:
        """The landmark model on ``rect``'s crop; None unless its presence score is above
        ``min_presence`` (modules/hand_landmark/hand_landmark_cpu.pbtxt's ThresholdingCalculator)."""
        import cv2

        image = as_rgb(frame, colour)
        affine = rect_affine(rect, LANDMARK_SIZE)
        crop = cv2.warpAffine(
            image, affine, (LANDMARK_SIZE, LANDMARK_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        feeds = {"input_1": (crop[None] / np.float32(255.0)).astype(np.float32)}
        outputs = checked_run(self._landmark, self.files[1], LANDMARK_RANGES, feeds)
        raw, presence, handedness = outputs[0].reshape(21, 3), float(outputs[1].item()), float(outputs[2].item())
        if not presence > self.min_presence:
            return None
        # landmark_projection_calculator.cc: crop pixels back through the rect's rotation and size.
        keypoints = apply_affine(invert_affine(affine), raw[:, :2].astype(np.float64))
        right = handedness > 0.5
        side = "right" if right else "left"
        return FoundHand(
            box=box_from_points(keypoints),
            side=swap_side(side) if self.mirrored else side,
            side_score=handedness if right else 1.0 - handedness,
            presence=presence,
            keypoints=keypoints,
            rotation=landmarks_rect(keypoints).rotation,
            rect=rect,
        )


def letterbox_affine(height: int, width: int, size: int) -> np.ndarray:
    """2 x 3 affine from frame pixels to the size x size letterbox of the whole frame, aspect
    kept, padding split evenly (calculators/tensor/image_to_tensor_utils.cc, PadRoi: the region
    becomes the square of the longer side around the frame's centre, its corners the tensor's)."""
    side = max(height, width)
    scale = size / side
    return np.array([[scale, 0.0, (side - width) / 2 * scale], [0.0, scale, (side - height) / 2 * scale]])
