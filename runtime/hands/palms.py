"""MediaPipe's palm detector, the numbers around its model: SSD anchors, decoding, weighted NMS.

The model (palm_detection_{full,lite}.onnx, converted from MediaPipe's .tflite) maps a 192 x 192
RGB letterbox of the frame to 2016 regressors (box centre and size, then 7 keypoints x/y, in
192-pixel units relative to an anchor centre) and 2016 score logits. The options below are those
of mediapipe/modules/palm_detection/palm_detection_cpu.pbtxt; each function names the MediaPipe
file whose arithmetic it follows. Coordinates here are normalised to the 192 x 192 tensor
(0..1); the hand finder undoes the letterbox.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handssca.runtime.hands.boxes import box_iou

INPUT_SIZE = 192
STRIDES = (8, 16, 16, 16)  # four SSD layers; the three of stride 16 share one 12 x 12 grid
ANCHOR_OFFSET = 0.5
KEYPOINTS = 7  # wrist, index/middle/ring/pinky bases, thumb CMC and thumb base
SCORE_CLIP = 100.0
MIN_SCORE = 0.5
NMS_IOU = 0.3


@dataclass
class PalmDetections:
    """Palms of one image: boxes (K, 4) xmin, ymin, xmax, ymax; keypoints (K, 7, 2) x, y; scores (K,)."""

    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index) -> PalmDetections:
        return PalmDetections(self.boxes[index], self.keypoints[index], self.scores[index])


def ssd_anchors(input_size: int = INPUT_SIZE, strides=STRIDES, offset: float = ANCHOR_OFFSET) -> np.ndarray:
    """(2016, 2) anchor centres (x, y), normalised, in the model's output order.

    calculators/tflite/ssd_anchors_calculator.cc: consecutive layers of one stride share a grid;
    each layer puts two anchors at every cell (aspect ratio 1 and the interpolated scale), so the
    stride-8 layer gives 24 x 24 x 2 and the three stride-16 layers 12 x 12 x 6. Rows outer,
    columns inner, the cell's anchors innermost. With fixed_anchor_size every anchor's width and
    height are 1, so only the centres matter.
    """
    centres = []
    layer = 0
    while layer < len(strides):
        same = 1
        while layer + same < len(strides) and strides[layer + same] == strides[layer]:
            same += 1
        cells = int(np.ceil(input_size / strides[layer]))
        per_cell = 2 * same
        y, x = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(x + offset) / cells, (y + offset) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
        layer += same
    return np.concatenate(centres)


ANCHORS = ssd_anchors()


def decode_palms(
    regressors: np.ndarray, logits: np.ndarray, anchors: np.ndarray = ANCHORS, min_score: float = MIN_SCORE
) -> PalmDetections:
    """The palms scoring at least ``min_score``, decoded (not yet suppressed).

    calculators/tensor/tensors_to_detections_calculator.cc (DecodeBoxes, with reverse_output_order
    and x/y/w/h scales of 192): centre = raw / 192 * anchor size + anchor centre, size = raw / 192
    * anchor size, keypoints like the centre; scores are the logits clipped to +-100, then the
    sigmoid; a palm is kept when its score is >= min_score_thresh.
    """
    raw = np.asarray(regressors, np.float64).reshape(-1, 4 + 2 * KEYPOINTS)
    scores = 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, np.float64).reshape(-1), -SCORE_CLIP, SCORE_CLIP)))
    keep = scores >= min_score
    raw, scores, anchor = raw[keep], scores[keep], anchors[keep]
    centre = raw[:, :2] / INPUT_SIZE + anchor
    half = raw[:, 2:4] / INPUT_SIZE / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = raw[:, 4:].reshape(-1, KEYPOINTS, 2) / INPUT_SIZE + anchor[:, None, :]
    # A box of negative size is invalid in MediaPipe (IsValid) and skipped.
    valid = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
    return PalmDetections(boxes[valid], keypoints[valid], scores[valid])


def weighted_nms(palms: PalmDetections, iou_threshold: float = NMS_IOU, max_palms: int = -1) -> PalmDetections:
    """Weighted non-max suppression, strongest palm first.

    calculators/util/non_max_suppression_calculator.cc (WeightedNonMaxSuppression): the best
    remaining palm and every remaining palm overlapping it by IoU > threshold (itself included)
    form a group; the group becomes one palm whose box and keypoints are the score-weighted mean
    of the group's, with the best score; the rest go round again. ``max_palms`` > 0 stops after
    that many (MediaPipe's max_num_detections; the hand graph clips to num_hands afterwards).
    """
    order = np.argsort(-palms.scores, kind="stable")
    boxes, keypoints, scores = [], [], []
    while order.size and (max_palms <= 0 or len(scores) < max_palms):
        best = order[0]
        group = order[box_iou(palms.boxes[best], palms.boxes[order]) > iou_threshold]
        if group.size == 0:  # a degenerate best box overlaps nothing, not even itself
            group = order[:1]
        weights = palms.scores[group]
        total = weights.sum()
        boxes.append((palms.boxes[group] * weights[:, None]).sum(0) / total)
        keypoints.append((palms.keypoints[group] * weights[:, None, None]).sum(0) / total)
        scores.append(palms.scores[best])
        order = np.setdiff1d(order, group, assume_unique=True) if group.size > 1 else order[1:]
        order = order[np.argsort(-palms.scores[order], kind="stable")]
    if not scores:
        return PalmDetections(np.zeros((0, 4)), np.zeros((0, KEYPOINTS, 2)), np.zeros(0))
    return PalmDetections(np.array(boxes), np.array(keypoints), np.array(scores))
