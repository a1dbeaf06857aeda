"""Following up to N hands through a video: MediaPipe's tracking scheme around our own network.

Per frame (modules/hand_landmark/hand_landmark_tracking_cpu.pbtxt, and MediaPipe Tasks'
hand_landmarker_graph.cc for the order of association):
- the hand finder (palm detector + landmark model) runs only while fewer hands are tracked than
  wanted; a found hand on a tracked one is that track's re-find (it takes the finder's box and
  side, keeping its id), and no more than ``max_hands`` are kept;
- a tracked hand's box for the next frame comes from this frame's keypoints of our network;
- a track is dropped when the network's confidence falls below ``min_confidence``, when its box
  leaves the frame, or when two tracks come onto one hand (the older kept, with its id and
  side); a dropped hand is found again by the finder.
"On one hand" (``same_hand``) is MediaPipe's IoU > 0.5, or one box lying more than 80% inside the
other (intersection over the smaller box's area): a network whose keypoints draw together (the
shipped demo network on a real hand) leaves a track's box small inside the hand's, where IoU
falls below 0.5 and the hand was counted twice, as two tracks, each with its own side.
The network's heatmap confidence was never trained to say "no hand here", so every
``verify_every`` frames each track is also checked by the landmark model, as MediaPipe checks
every frame: its presence score (> 0.5) keeps the track and its landmarks re-anchor the box and
renew the side; otherwise the track is dropped. A tracked hand the finder did not see is checked
in the same way before a hand the finder found beside it starts a new track: the network may
have let the track wander off that very hand. A track's side is only ever the landmark model's
(``Track.take``, from a check or the finder's re-find); our network never changes it, and no new
track is started on a tracked hand. Each track keeps its own filter of the hand's parameters, made
afresh when the track starts or its side changes, so a hand lost and found again (a new track)
carries no state across the gap.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from handssca.runtime.hands.boxes import box_containment, box_iou, centred_box, square_box
from handssca.runtime.hands.filters import HandFilter
from handssca.runtime.hands.finder import TRACKING_IOU, FoundHand, HandFinder
from handssca.runtime.hands.rects import landmarks_rect

DROP_REASONS = ("confidence", "left_frame", "merged", "not_present")
VERIFY_EVERY = 5  # frames between the landmark model's checks of a tracked hand
# Two boxes are one hand when one lies this much inside the other (intersection over the smaller
# box's area), whatever their IoU: a network whose keypoints draw together leaves a track's box
# small inside the hand's, and distinct hands rarely hide 80% of one's box in the other's.
SAME_HAND_CONTAINMENT = 0.8


@dataclass
class Track:
    id: int
    box: np.ndarray  # the box to crop in the coming frame, image pixels
    side: str
    started: int  # the frame it was found in
    keypoints: np.ndarray | None = None  # the latest (21, 2) keypoints, ours or the finder's
    found: FoundHand | None = None  # the landmark model's view of it in this frame (a check or the finder's)
    side_score: float | None = None
    presence: float | None = None
    palm_score: float | None = None
    since_check: int = 0  # frames since the landmark model last saw it
    smoother: HandFilter | None = None  # its parameters' filter (the webcam's; new with each track and side)

    def take(self, hand: FoundHand) -> None:
        """The landmark model's view of this hand (a check, or the finder's re-find): its box,
        keypoints, side and scores become the track's together, so they always describe one view.
        The only place a track's side changes: our network never says which hand it sees."""
        self.found, self.box, self.keypoints = hand, hand.box, hand.keypoints
        if hand.side != self.side:  # a left hand's parameters are not a right one's: sides never mix
            self.smoother = None
        self.side, self.side_score, self.presence = hand.side, hand.side_score, hand.presence
        self.palm_score = hand.palm_score if hand.palm_score is not None else self.palm_score
        self.since_check = 0

    def to_json(self) -> dict:
        out = {"track": self.id, "side": self.side}
        for name in ("side_score", "presence", "palm_score"):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(float(value), 4)
        return out


@dataclass
class TrackingCounts:
    found: int = 0  # tracks started by the finder (or by --box)
    dropped: dict = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    finder_runs: int = 0
    checks: int = 0  # landmark-model checks of tracked hands
    frames_by_hands: dict = field(default_factory=dict)  # hands tracked -> frames


class HandTracker:
    """``tracks = tracker.prepare(frame, index)`` gives the hands to run the network on this
    frame; ``tracker.update(tracks, predictions, frame.shape)`` follows them to the next.

    ``finder`` None: no finding; one hand is followed from ``start_box`` (or the centred square)
    and started there again when lost (the behaviour for footage the finder cannot see, such as
    the stand-in hand). ``start_box``/``start_side`` pin a first track."""

    def __init__(
        self,
        finder: HandFinder | None,
        max_hands: int = 2,
        min_confidence: float = 0.0,
        verify_every: int = VERIFY_EVERY,
        start_box=None,
        start_side: str = "right",
        colour: str = "bgr",
    ):
        self.finder, self.max_hands, self.min_confidence = finder, max_hands, min_confidence
        self.verify_every, self.colour = verify_every, colour
        self.start_box = None if start_box is None else np.asarray(start_box, np.float64)
        self.start_side = start_side
        self.tracks: list[Track] = []
        self.counts = TrackingCounts()
        self.finder_ms = 0.0  # the finder's time in the latest frame (palm detector and landmark checks)
        self._next_id = 0
        self._pinned = False

    def _new_track(self, box, side: str, index: int) -> Track:
        track = Track(self._next_id, np.asarray(box, np.float64), side, index)
        self._next_id += 1
        self.counts.found += 1
        return track

    def prepare(self, frame: np.ndarray, index: int) -> list[Track]:
        """The tracks to run on ``frame``: checked by the landmark model where due, re-found or
        started by the finder while fewer than ``max_hands`` are tracked; one per hand."""
        start = time.perf_counter()
        for track in self.tracks:
            track.found = None
        if self.finder is None:
            if not self.tracks:
                box = self.start_box if self.start_box is not None else centred_box(frame.shape)
                self.tracks = [self._new_track(box, self.start_side, index)]
        else:
            if self.start_box is not None and not self._pinned:
                self._pinned = True
                self.tracks.append(self._new_track(self.start_box, self.start_side, index))
            self._check(frame, [t for t in self.tracks if t.since_check + 1 >= self.verify_every])
            if len(self.tracks) < self.max_hands:
                self._find(frame, index)
        self.finder_ms = (time.perf_counter() - start) * 1e3
        hands = len(self.tracks)
        self.counts.frames_by_hands[hands] = self.counts.frames_by_hands.get(hands, 0) + 1
        return list(self.tracks)

    def _check(self, frame: np.ndarray, due: list[Track]) -> None:
        """The landmark model on each track in ``due`` (those with keypoints to place its
        rectangle): the track takes the hand it sees there, or is dropped when it sees none."""
        if self.verify_every <= 0:
            return
        for track in [t for t in due if t.keypoints is not None]:
            self.counts.checks += 1
            hand = self.finder.landmarks(frame, landmarks_rect(track.keypoints), colour=self.colour)
            if hand is None:
                self.counts.dropped["not_present"] += 1
                self.tracks.remove(track)
            else:
                track.take(hand)
        self._merge()  # a check can bring a track that had wandered back onto a tracked hand

    def _find(self, frame: np.ndarray, index: int) -> None:
        """The finder's hands: each on a tracked hand is that track's view of this frame; before a
        hand on none starts a track, the tracks the finder did not see are checked, because our
        network may have let them wander off the very hand it sees (a hand at the frame's edge)."""
        self.counts.finder_runs += 1
        alone = self._associate(self.finder.find(frame, colour=self.colour, max_hands=self.max_hands))
        if alone:
            self._check(frame, [t for t in self.tracks if t.found is None])
            self._associate(alone, index)
        self._merge()

    def _associate(self, hands: list[FoundHand], index: int | None = None) -> list[FoundHand]:
        """Each hand on a tracked one (``same_hand``; the oldest such track) is taken by that track
        unless it already has a view of this frame; with ``index``, a hand on none starts a track
        while there is room. Returns the hands on no track."""
        alone = []
        for hand in hands:
            track = next((t for t in self.tracks if same_hand(hand.box, t.box)), None)
            if track is None and index is not None and len(self.tracks) < self.max_hands:
                track = self._new_track(hand.box, hand.side, index)
                self.tracks.append(track)
            if track is None:
                alone.append(hand)
            elif track.found is None:
                track.take(hand)
        return alone

    def _merge(self) -> None:
        """Tracks that came to cover one hand become the oldest of them (its id and side); the
        others are dropped as merged, so no hand is followed twice."""
        kept: list[Track] = []
        for track in self.tracks:
            if any(same_hand(track.box, older.box) for older in kept):
                self.counts.dropped["merged"] += 1
                continue
            kept.append(track)
        self.tracks = kept

    def update(self, tracks: list[Track], predictions, frame_shape) -> None:
        """Each track's next box from its prediction's keypoints; tracks that fell below the
        confidence, left the frame or came onto an older track's hand are dropped; the network
        moves a track's box, never its side."""
        height, width = frame_shape[:2]
        kept: list[Track] = []
        for track, hand in zip(tracks, predictions, strict=True):
            track.since_check += 1
            if hand.confidence < self.min_confidence:
                self.counts.dropped["confidence"] += 1
                continue
            box = square_box(hand.keypoints_2d)
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            if not (0 <= cx < width and 0 <= cy < height):
                self.counts.dropped["left_frame"] += 1
                continue
            track.box, track.keypoints = box, hand.keypoints_2d
            kept.append(track)
        self.tracks = kept
        self._merge()


def same_hand(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether boxes ``a`` and ``b`` (4,) hold one hand: IoU > TRACKING_IOU (MediaPipe's
    association), or the smaller lies inside the larger by more than SAME_HAND_CONTAINMENT."""
    return bool(box_iou(a, b[None])[0] > TRACKING_IOU or box_containment(a, b[None])[0] > SAME_HAND_CONTAINMENT)
