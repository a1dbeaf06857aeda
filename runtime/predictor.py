"""Frames and hand boxes in, hand meshes out, over any backend. No torch (unless the backend is).

``HandMeshPredictor(model)`` takes any runner of the one contract (``runtime.runner``: an
``OnnxRunner``, a ``TensorRTRunner`` or a ``TorchRunner``); ``HandMeshPredictor.open(path)`` opens
one with ``open_runner``. Pre-processing (crop size, colour
order, mean/std) comes from the model's metadata, not from constants here. All hands of a frame
go through the engine in one batch. Left hands are mirrored into right hands on the way in and
back on the way out. MANO runs in numpy unless the engine already contains it.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace

import numpy as np

from handssca.errors import InputError, ModelFileError, OptionError
from handssca.runtime.backends.runner import open_runner
from handssca.runtime.camera import project, solve_translation
from handssca.runtime.crop import apply_affine, crop_image, hand_affine, invert_affine, normalise
from handssca.runtime.hands.finder import MAX_HANDS, VARIANTS, FoundHand, HandFinder
from handssca.runtime.hands.finder import _describe as describe
from handssca.runtime.mano.builtin import STAND_IN_NOTE
from handssca.runtime.mano.conventions import mirror_points, mirror_pose, posed_hand
from handssca.runtime.mano.load import BUILTIN, load_hand_model
from handssca.runtime.mano.model import ManoModel, meshes_from_outputs

SIDES = ("right", "left")  # left hands are mirrored into right ones for the network
CHUNK = 16  # hands run through the network at once: a frame's hands are one batch, a crowd is several


@dataclass
class PredictorOptions:
    """What a predictor is opened from (``handssca infer`` and ``webcam``): exactly one of
    ``model`` (.onnx / .engine) and ``checkpoint`` (.pt, PyTorch), the hand model, and the hand
    finder's models, variant, hand count and mirroring."""

    model: str | None = None
    checkpoint: str | None = None
    mano: str = BUILTIN
    plugin: str | None = None  # the TensorRT plugin library, for engines
    max_hands: int = MAX_HANDS
    hand_models: str | None = None  # the finder's ONNX models' folder (None: the shipped ones)
    hand_variant: str = VARIANTS[0]
    mirror: bool = False  # mirrored frames (a selfie camera): sides swap


def open_predictor(options: PredictorOptions, find_hands: bool = True) -> HandMeshPredictor:
    """The predictor ``options`` describe, with the hand finder when ``find_hands``."""
    if bool(options.model) == bool(options.checkpoint):
        raise OptionError("give exactly one of --model (.onnx or .engine) and --checkpoint")
    finder = None
    if find_hands:
        finder = HandFinder(options.hand_models, options.hand_variant, options.max_hands, mirrored=options.mirror)
    mano, fingertip_ids, _ = load_hand_model(options.mano)
    return HandMeshPredictor.open(options.model or options.checkpoint, mano, fingertip_ids, options.plugin, finder)


@dataclass
class HandPrediction:
    box: np.ndarray  # (4,) the hand box used, image pixels
    side: str  # "right" or "left"
    keypoints_2d: np.ndarray  # (21, 2) image pixels, FreiHAND joint order
    joints_3d: np.ndarray  # (21, 3) metres, root-relative (wrist at 0), camera axes
    vertices: np.ndarray  # (778, 3) metres, root-relative
    pose: np.ndarray  # (48,) MANO axis-angle of this hand (mean-hand relative)
    shape: np.ndarray  # (10,)
    confidence: float  # mean heatmap peak of the 21 joints, 0..1
    translation: np.ndarray | None = None  # (3,) camera-frame wrist position, metres (given K)
    found: FoundHand | None = None  # what the hand finder saw, when it found this hand

    @property
    def joints_camera(self) -> np.ndarray | None:
        return None if self.translation is None else self.joints_3d + self.translation

    @property
    def vertices_camera(self) -> np.ndarray | None:
        return None if self.translation is None else self.vertices + self.translation

    def to_json(self) -> dict:
        """The hand as JSON; the parameters and joints to 1e-8 (radians, metres), pixels to 1e-4,
        so that a record's joints and keypoints can be re-derived from its pose, shape and
        translation to float precision."""
        out = {
            "box": self.box.tolist(),
            "side": self.side,
            "confidence": round(float(self.confidence), 4),
            "keypoints_2d": np.round(self.keypoints_2d, 4).tolist(),
            "joints_3d": np.round(self.joints_3d, 8).tolist(),
            "pose": np.round(self.pose, 8).tolist(),
            "shape": np.round(self.shape, 8).tolist(),
        }
        if self.translation is not None:  # camera space beside the root-relative joints
            out["translation"] = np.round(self.translation, 8).tolist()
            out["joints_camera"] = np.round(self.joints_camera, 8).tolist()
        if self.found is not None:
            out["finder"] = self.found.to_json()
        return out


class HandMeshPredictor:
    """``finder``: the HandFinder that finds hands when ``predict`` is given no boxes (default:
    one over the shipped models, made on first use)."""

    def __init__(self, model, mano: ManoModel | None = None, fingertip_ids=None, finder: HandFinder | None = None):
        self.model = model
        meta = getattr(model, "metadata", None) or {}
        if "input" not in meta:
            name = getattr(model, "name", model)
            raise ModelFileError(f"{name}: no HandSSCA metadata (export it with handssca export)")
        self.size = int(meta["input"]["shape"][2])
        self.rgb = meta["input"].get("colour_order", "RGB") == "RGB"
        self.mean, self.std = meta["input"]["mean"], meta["input"]["std"]
        fixed = meta["input"]["shape"][0]
        self.max_batch = fixed if isinstance(fixed, int) else None
        self.mano_in_graph = bool(meta.get("mano", {}).get("in_graph"))
        # The pose is relative to the mean hand unless an export put MANO in the graph without it.
        self.flat_hand_mean = bool(meta.get("mano", {}).get("flat_hand_mean")) if self.mano_in_graph else False
        if fingertip_ids is None and mano is not None:
            fingertip_ids = mano.fingertip_ids  # a model that names its own tips (the built-in hand)
        if mano is None and (not self.mano_in_graph or meta["mano"].get("model") == STAND_IN_NOTE):
            # As the CLI does: the built-in hand, or the export's own where it is the built-in one.
            mano, fingertip_ids, note = load_hand_model(BUILTIN)
            name = getattr(model, "name", None) or "the model"
            warnings.warn(f"{name}: no MANO model given: using the {note} (give mano= for MANO's)", stacklevel=3)
        elif not self.mano_in_graph and fingertip_ids is None:
            raise ModelFileError("this model outputs MANO parameters only: give the fingertip ids with the MANO model")
        self.mano, self.fingertip_ids = mano, tuple(fingertip_ids) if fingertip_ids is not None else None
        self.finder = finder
        self.timings: dict[str, float] = {}

    @classmethod
    def open(cls, source, mano: ManoModel | None = None, fingertip_ids=None, plugin=None, finder=None):
        """A predictor over ``open_runner(source)``: an .onnx, .engine or .pt file, or a torch network."""
        return cls(open_runner(source, plugin=plugin), mano, fingertip_ids, finder)

    def hand_from_parameters(self, hand: HandPrediction, pose, shape, translation, K) -> HandPrediction:
        """``hand`` with the parameters ``pose`` (48,), ``shape`` (10,) and camera ``translation``
        (3,), and everything else it reports derived from them through this predictor's hand model:
        vertices and joints (root-relative), and the 2D keypoints as the projection of the
        camera-space joints through ``K``. What the webcam reports of each (smoothed) hand, so the
        mesh, the skeleton and the parameters of a record are one hand."""
        if self.mano is None or self.fingertip_ids is None:
            raise ModelFileError("deriving a hand from its parameters needs the hand model: give --mano")
        pose, shape = np.asarray(pose, np.float64), np.asarray(shape, np.float64)
        translation = np.asarray(translation, np.float64)
        fk = dict(flat_hand_mean=self.flat_hand_mean, fingertip_ids=self.fingertip_ids)
        vertices, joints = posed_hand(self.mano, hand.side, pose, shape, **fk)
        return replace(
            hand,
            pose=pose,
            shape=shape,
            translation=translation,
            joints_3d=joints,
            vertices=vertices,
            keypoints_2d=project(joints + translation, K),
        )

    def hand_finder(self) -> HandFinder:
        if self.finder is None:
            self.finder = HandFinder()
        return self.finder

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        if self.max_batch is None or len(images) == self.max_batch:
            return self.model.run(images)
        parts = [self.model.run(images[i : i + 1]) for i in range(len(images))]  # a fixed batch-1 engine
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def _hands(self, image: np.ndarray, boxes, sides: list[str]) -> dict[str, np.ndarray]:
        """``hand_arrays`` of the boxes, run CHUNK hands at a time so that memory is bounded
        whatever the count (a network's activations grow with the batch: 600 boxes at once took
        gigabytes); the stages' times add up over the chunks."""
        parts, times = [], dict.fromkeys(("crop_ms", "engine_ms", "mano_ms"), 0.0)
        for first in range(0, len(boxes), CHUNK):
            chunk, chunk_sides = boxes[first : first + CHUNK], sides[first : first + CHUNK]
            start = time.perf_counter()
            crops, affines = hand_crops(image, chunk, chunk_sides, self.size)
            batch = normalise(crops, self.mean, self.std)
            crop_done = time.perf_counter()
            outputs = self._run(batch)
            engine_done = time.perf_counter()
            parts.append(hand_arrays(outputs, affines, chunk_sides, self.size, self.mano, self.fingertip_ids))
            for name, since, until in (("crop_ms", start, crop_done), ("engine_ms", crop_done, engine_done),
                                       ("mano_ms", engine_done, time.perf_counter())):  # fmt: skip
                times[name] += (until - since) * 1e3
        self.timings.update(times)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def predict(
        self, frame: np.ndarray, boxes=None, *, colour: str = "bgr", sides=None, K=None
    ) -> list[HandPrediction]:
        """``frame`` (H, W, 3) uint8 in ``colour`` order; ``boxes`` [(x0, y0, x1, y1), ...], or None
        to find the hands (the finder's boxes and sides, up to its max_hands); ``sides``
        "right"/"left" per box (default right); ``K`` (3, 3) intrinsics for camera-space results."""
        start = time.perf_counter()
        boxes, sides, found = boxes_to_run(frame, boxes, sides, colour, self.hand_finder)
        finder_ms = (time.perf_counter() - start) * 1e3
        self.timings = {"finder_ms": finder_ms} if found is not None else {}
        if not boxes:
            return []
        hands = self._hands(in_network_colour(frame, colour, self.rgb), boxes, sides)
        results = hand_predictions(boxes, sides, hands, K)
        if found is not None:
            attach_found(results, found)
        return results


def boxes_to_run(frame, boxes, sides, colour: str, hand_finder) -> tuple[list, list[str], list[FoundHand] | None]:
    """A predict call's boxes and sides, checked: the given ones, or, when ``boxes`` is None,
    those of the hands ``hand_finder()`` finds (and the FoundHands, else None). What
    HandMeshPredictor and the serving client take."""
    if boxes is not None:
        return (*check_request(frame, boxes, sides), None)
    if sides is not None:
        raise InputError("sides are given with boxes only: found hands come with their own")
    check_request(frame, [], None)
    found = hand_finder().find(frame, colour=colour)
    return [hand.box for hand in found], [hand.side for hand in found], found


def attach_found(results: list[HandPrediction], found: list[FoundHand] | None) -> None:
    for result, hand in zip(results, found or [None] * len(results), strict=True):
        result.found = hand


def check_request(frame, boxes, sides) -> tuple[list[np.ndarray], list[str]]:
    """A predict call's frame checked, and its boxes (float64) and sides ("right"/"left", one per
    box; all right when None) as lists: what HandMeshPredictor and the serving client take."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"frame must be an (H, W, 3) uint8 image, got {describe(frame)}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputError(f"frame is empty ({frame.shape[0]} x {frame.shape[1]} pixels)")
    boxes = [np.asarray(b, dtype=np.float64) for b in boxes]
    sides = list(sides) if sides is not None else ["right"] * len(boxes)
    if len(sides) != len(boxes) or any(s not in SIDES for s in sides):
        raise InputError("sides must give 'right' or 'left' for every box")
    for box in boxes:
        if box.shape != (4,) or not np.isfinite(box).all() or not (box[2] > box[0] and box[3] > box[1]):
            raise InputError(f"box {box.tolist()}: expected four finite pixels x0,y0,x1,y1 with x0 < x1 and y0 < y1")
    return boxes, sides


def in_network_colour(frame: np.ndarray, colour: str, rgb: bool) -> np.ndarray:
    """``frame`` (in ``colour`` order, "bgr" or "rgb") in the network's order (RGB when ``rgb``)."""
    return frame[..., ::-1] if (colour == "bgr") == rgb else frame


def hand_affines(boxes, sides: list[str], size: int) -> np.ndarray:
    """(B, 2, 3) image -> crop pixel affines of the hands, left hands mirrored."""
    return np.stack([hand_affine(box, side, size) for box, side in zip(boxes, sides, strict=True)])


def hand_crops(image_rgb: np.ndarray, boxes, sides: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(crops (B, S, S, 3) uint8 in the image's colour order, affines (B, 2, 3) image -> crop
    pixels): the network's view of each hand, left hands mirrored."""
    image = np.ascontiguousarray(image_rgb)
    affines = hand_affines(boxes, sides, size)
    return np.stack([crop_image(image, affine, size) for affine in affines]), affines


def hand_predictions(boxes, sides: list[str], hands: dict[str, np.ndarray], K=None) -> list[HandPrediction]:
    """``hand_arrays``' batch as one HandPrediction per box, with the camera-frame translation
    when the intrinsics ``K`` are given."""
    K = None if K is None else np.asarray(K, np.float64)
    return [
        HandPrediction(
            box=box,
            side=side,
            keypoints_2d=hands["keypoints_2d"][i],
            joints_3d=hands["joints_3d"][i],
            vertices=hands["vertices"][i],
            pose=hands["pose"][i],
            shape=hands["shape"][i],
            confidence=float(np.ravel(hands["confidence"][i])[0]),
            translation=None if K is None else solve_translation(hands["joints_3d"][i], hands["keypoints_2d"][i], K),
        )
        for i, (box, side) in enumerate(zip(boxes, sides, strict=True))
    ]


def hand_arrays(outputs: dict[str, np.ndarray], affines: np.ndarray, sides: list[str], size: int, mano, fingertip_ids):
    """A batch of network outputs -> the hands, as arrays (float64) with a leading batch axis:
    keypoints_2d (B, 21, 2) image pixels; joints_3d (B, 21, 3) and vertices (B, 778, 3) metres,
    root-relative, camera axes; pose (B, 48) of each hand as it is (left hands mirrored back);
    shape (B, 10); confidence (B,), the mean heatmap peak of the 21 joints."""
    vertices, joints = meshes_from_outputs(outputs, mano, fingertip_ids)
    root = joints[:, :1]
    joints, vertices = joints - root, vertices - root
    pose = outputs["pose"].astype(np.float64)
    left = np.array([side == "left" for side in sides])
    if left.any():  # the network saw the mirror image: mirror its answer back
        joints[left], vertices[left], pose[left] = (
            mirror_points(joints[left]),
            mirror_points(vertices[left]),
            mirror_pose(pose[left]),
        )
    uv = outputs["joints_2d"].astype(np.float64) * size
    keypoints = np.stack([apply_affine(invert_affine(a), p) for a, p in zip(affines, uv, strict=True)])
    heatmaps = outputs["heatmaps"]
    confidence = heatmaps.reshape(len(heatmaps), heatmaps.shape[1], -1).max(-1).mean(-1).astype(np.float64)
    return {
        "keypoints_2d": keypoints,
        "joints_3d": joints,
        "vertices": vertices,
        "pose": pose,
        "shape": outputs["shape"].astype(np.float64),
        "confidence": confidence,
    }
