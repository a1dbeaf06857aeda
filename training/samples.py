"""HandRecords -> training samples: a square crop around the hand, augmented, with labels in it.

The crop geometry is the runtime's (``handssca.runtime.crop``), so the predictor sees what
training saw. Augmentation follows HandOccNet's: scale x(1 + 0.25 clip(N, -1, 1)), rotation
30 clip(N, -2, 2) degrees with probability 0.6, per-channel colour x U(0.8, 1.2); plus a
translation jitter of up to 5% of the crop and, optionally, synthetic occluders. Rotating the
crop by theta is rotating the camera about its optical axis, so 3D labels and the MANO global
rotation turn with it, and the crop's intrinsics are built so the 3D joints project exactly
onto the 2D labels. Randomness is a function of (seed, epoch, index): the same whatever the
worker or the resume point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handssca.errors import InputError, UnreadableImage, UnusableSample
from handssca.runtime.camera import project
from handssca.runtime.crop import (
    IMAGE_MEAN,
    IMAGE_STD,
    apply_affine,
    crop_affine,
    crop_image,
    normalise,
    square_from_box,
)
from handssca.runtime.files import read_image
from handssca.runtime.hands.boxes import box_from_points
from handssca.runtime.mano.conventions import rotation_to_axis_angle
from handssca.runtime.mano.model import rodrigues

from .datasets import HandRecord


@dataclass(frozen=True)
class Augmentation:
    scale: float = 0.25
    rotation_deg: float = 30.0
    rotation_probability: float = 0.6
    translation: float = 0.05  # of the crop side
    colour: float = 0.2
    occluders: float = 0.0  # probability of pasting 1-3 random shapes over the hand


def _occlude(image: np.ndarray, rng, keypoints: np.ndarray) -> None:
    import cv2

    centre = keypoints.mean(axis=0)
    radius = max(float(np.linalg.norm(keypoints.max(0) - keypoints.min(0))) / 2, 4.0)
    for _ in range(rng.integers(1, 4)):
        c = centre + rng.normal(0, radius * 0.5, 2)
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = radius * rng.uniform(0.15, 0.5) * rng.uniform(0.6, 1.0, n)
        polygon = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], 1)
        colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
        cv2.fillPoly(image, [np.round(polygon * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)


class HandCrops:
    """``HandCrops(records, size, augment, seed)[i]`` -> dict of numpy arrays (see the keys below)."""

    def __init__(
        self,
        records,
        size: int = 256,
        augment: Augmentation | None = None,
        seed: int = 0,
        max_bad_fraction=0.01,
        substitute: bool = True,
    ):
        """``substitute``: for training, a sample whose image is unusable is replaced by the next
        one (up to ``max_bad_fraction`` of those seen); evaluation passes False and gets
        UnusableSample, to count the sample out and name it instead."""
        self.records, self.size, self.augment, self.seed = records, size, augment, seed
        self.max_bad_fraction, self.substitute = max_bad_fraction, substitute
        self.epoch = 0
        self.bad_images = self.unannotated = self.seen = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not self.substitute:
            return self.load(index)
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            self.seen += 1
            try:
                return self.load(i)
            except UnusableSample as exc:
                if exc.unannotated:
                    self.unannotated += 1
                    continue
                self.bad_images += 1
                if self.bad_images > max(1, self.max_bad_fraction * self.seen):
                    raise InputError(
                        f"{exc}; {self.bad_images} of {self.seen} images so far are unreadable images (corrupt, "
                        "truncated or missing), more than the allowed fraction"
                    ) from exc
        raise InputError(f"{getattr(self.records, 'name', 'data set')}: no usable sample (all unannotated or corrupt)")

    def load(self, index: int) -> dict[str, np.ndarray]:
        """Sample ``index`` itself; UnusableSample (naming the file) when it has no annotation to
        crop by or its image is missing, truncated or corrupt."""
        record: HandRecord = self.records[index]
        if record.box is None and record.joints_3d is None:
            raise UnusableSample(f"{record.image_path}: no box or joints to crop the hand by", unannotated=True)
        try:
            image = read_image(record.image_path)
        except UnreadableImage as exc:
            raise UnusableSample(str(exc)) from exc
        return self._sample(record, image[..., ::-1], index)

    def _sample(self, record: HandRecord, rgb: np.ndarray, index: int) -> dict[str, np.ndarray]:
        size = self.size
        K = np.asarray(record.K, dtype=np.float64)
        has_3d = record.joints_3d is not None
        uv = project(record.joints_3d, K) if has_3d else None
        cx, cy, side = square_from_box(record.box if record.box is not None else box_from_points(uv))
        rotation, rng = 0.0, None
        if self.augment is not None:
            a = self.augment
            rng = np.random.default_rng([self.seed, self.epoch, index])
            side *= 1 + a.scale * np.clip(rng.standard_normal(), -1, 1)
            if rng.random() < a.rotation_probability:
                rotation = a.rotation_deg * float(np.clip(rng.standard_normal(), -2, 2))
            cx += a.translation * side * rng.uniform(-1, 1)
            cy += a.translation * side * rng.uniform(-1, 1)
        affine = crop_affine(cx, cy, side, size, rotation_deg=rotation)
        crop = crop_image(np.ascontiguousarray(rgb), affine, size)
        # The crop's rotation as a camera rotation about z, in the same sense as the 2D map.
        angle = np.deg2rad(rotation)
        R = np.array([[np.cos(angle), np.sin(angle), 0.0], [-np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
        A = np.vstack([affine, [0.0, 0.0, 1.0]])
        sample = {
            "joints_2d": np.zeros((21, 2), np.float32),
            "joints_3d": np.zeros((21, 3), np.float32),
            "vertices": np.zeros((778, 3), np.float32),
            "pose": np.zeros(48, np.float32),
            "shape": np.zeros(10, np.float32),
            "K": (A @ K @ R.T).astype(np.float32),
        }
        if has_3d:
            keypoints = apply_affine(affine, uv)
            sample["joints_2d"] = (keypoints / size).astype(np.float32)
            joints = record.joints_3d @ R.T
            root = joints[:1]
            sample["joints_3d"] = (joints - root).astype(np.float32)
            if record.vertices is not None:
                sample["vertices"] = (record.vertices @ R.T - root).astype(np.float32)
        if record.pose is not None:
            pose = np.asarray(record.pose, dtype=np.float64).copy()
            pose[:3] = rotation_to_axis_angle(R @ rodrigues(pose[:3]))
            sample["pose"] = pose.astype(np.float32)
            sample["shape"] = np.asarray(record.shape, dtype=np.float32)
        if rng is not None:
            if self.augment.occluders and has_3d and rng.random() < self.augment.occluders:
                _occlude(crop, rng, sample["joints_2d"] * size)
            gains = rng.uniform(1 - self.augment.colour, 1 + self.augment.colour, 3)
            crop = np.clip(crop.astype(np.float32) * gains, 0, 255).astype(np.uint8)
        sample["image"] = normalise(crop, IMAGE_MEAN, IMAGE_STD)
        flag = np.float32
        sample["has_2d"] = flag(has_3d)
        sample["has_3d"] = flag(has_3d)
        sample["has_vertices"] = flag(has_3d and record.vertices is not None)
        sample["has_mano"] = flag(record.pose is not None)
        return sample


def calibration_crops(source: str, count: int, size: int, mano: str = "builtin", seed: int = 0):
    """(crops (n, 3, size, size), skipped): ``count`` hand crops, preprocessed as at inference, for
    calibrating an int8 export. ``source``: a data set folder in any supported layout (its
    training split, never the evaluation one, spread evenly over it), or "synth" for hands
    rendered here (a temporary FreiHAND-layout set, the same renderer as ``handssca data
    synth``). Unusable images are counted out and named in ``skipped``, not replaced."""
    import tempfile

    from .config import load_config
    from .datasets import DEFAULT_SPLITS, detect_layout, load_mano_model, open_dataset

    if count < 1:
        raise InputError(f"calibration: {count} images asked for; give at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        if source == "synth":
            from .synthetic import SynthOptions, make_synthetic_dataset

            root, layout, split = Path(tmp) / "synth", "freihand", "evaluation"
            model, fingertip_ids, _ = load_mano_model(load_config(None, ["mano.model=builtin"]))
            options = SynthOptions(train=0, evaluation=count, image_size=max(size, 128), seed=seed)
            make_synthetic_dataset(root, model, fingertip_ids, options, show_progress=False)
        else:
            root, layout = Path(source), detect_layout(source)
            split = DEFAULT_SPLITS[layout][0]
        config = load_config(None, [f"data.dataset={layout}", f"data.root={root}", f"mano.model={mano}"])
        mano_model = load_mano_model(config)[0] if layout != "freihand" else None
        crops = HandCrops(open_dataset(config, split, mano_model), size=size, augment=None, substitute=False)
        if len(crops) == 0:
            raise InputError(f"{source}: the {split} split has no samples to calibrate on")
        picks = np.unique(np.linspace(0, len(crops) - 1, min(count, len(crops))).round().astype(int))
        images, skipped = [], []
        for index in picks:
            try:
                images.append(crops[int(index)]["image"])
            except UnusableSample as exc:
                skipped.append(str(exc))
    if not images:
        raise InputError(f"{source}: none of the {len(picks)} calibration images could be used ({skipped[0]})")
    return np.stack(images).astype(np.float32), skipped
