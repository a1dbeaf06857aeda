"""A synthetic hand data set anyone can make, written in FreiHAND's layout.

The MANO model (the built-in stand-in hand, or the user's MANO file) is posed with random
pose, shape, viewpoint and distance, rendered with random skin colour and lighting, and
composited onto four random backgrounds, as FreiHAND's four background versions of each
sample (image i + N*k). Occluding shapes are drawn over the hand with probability
``occluder_probability``. Annotations go into the same JSON files FreiHAND ships, so the one
FreiHAND loader reads real and synthetic data alike:

    <root>/training/rgb/%08d.jpg     training_{K,mano,xyz,verts,scale}.json
    <root>/evaluation/rgb/%08d.jpg   evaluation_{K,mano,xyz,verts,scale}.json

``mano`` entries are 61 numbers as FreiHAND's: 48 pose (axis-angle, relative to the mean hand:
flat_hand_mean=False), 10 shape, the root joint's pixel position (2) and the reference bone
length (1); xyz and verts are metres in the OpenCV camera frame; scale is the length of the
middle finger's first bone (FreiHAND's normalisation length). Deterministic by seed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handssca.errors import HandSSCAError
from handssca.runtime.camera import project
from handssca.runtime.files import write_atomically
from handssca.runtime.mano.model import ManoModel, mano_forward
from handssca.runtime.mesh_render import render_perspective

IMAGE_SIZE = 224  # FreiHAND's images
VERSIONS = 4  # FreiHAND's background versions per sample
SCALE_BONE = (9, 10)  # middle MCP -> PIP in FreiHAND order


@dataclass
class SynthOptions:
    train: int = 256  # training hands, each in 4 backgrounds
    evaluation: int = 64
    image_size: int = IMAGE_SIZE
    occluder_probability: float = 0.3
    finger_pose_std: float = 0.35  # radians, per axis-angle component
    roll_deg: float = 180.0  # in-plane rotation drawn from +-roll_deg
    tilt_std: float = 0.6  # radians, out-of-plane tilt
    back_probability: float = 0.5  # chance the back of the hand faces the camera instead of the palm
    seed: int = 0
    jpeg_quality: int = 92


def _random_rotation(rng, options: SynthOptions) -> np.ndarray:
    """Global hand rotation: palm or back towards the camera, a roll, some tilt."""
    from handssca.runtime.mano.model import rodrigues

    roll = rodrigues(np.array([0.0, 0.0, np.deg2rad(rng.uniform(-options.roll_deg, options.roll_deg))]))
    tilt = rodrigues(rng.normal(0.0, options.tilt_std, 3))
    # The stand-in's and MANO's palms face +z in the model frame; the camera looks along +z, so
    # a half turn about y shows the palm.
    face = rodrigues(np.array([0.0, 0.0 if rng.random() < options.back_probability else np.pi, 0.0]))
    return roll @ tilt @ face


def _background(rng, size: int) -> np.ndarray:
    import cv2

    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    image = (top * (1 - t) + bottom * t) * np.ones((1, size, 1))
    image = image + rng.normal(0, rng.uniform(2, 20), (size, size, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(2, 9)):  # clutter: lines, discs, boxes
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        a, b = (tuple(int(x) for x in rng.uniform(0, size, 2)) for _ in range(2))
        kind = rng.integers(3)
        if kind == 0:
            cv2.line(image, a, b, colour, int(rng.integers(1, 6)), cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(image, a, int(rng.uniform(4, size / 5)), colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(image, a, b, colour, -1)
    return image


def _occlude(image: np.ndarray, rng, centre: np.ndarray, radius: float) -> None:
    import cv2

    for _ in range(rng.integers(1, 3)):
        colour = tuple(int(c) for c in rng.uniform(0, 255, 3))
        c = centre + rng.normal(0, radius * 0.6, 2)
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(0.2, 0.6) * radius * rng.uniform(0.6, 1.0, n)
        polygon = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], 1)
        cv2.fillPoly(image, [np.round(polygon * 16).astype(np.int32)], colour, cv2.LINE_AA, shift=4)


def render_sample(model: ManoModel, fingertip_ids, rng, options: SynthOptions):
    """One posed hand: (hand layer BGR, mask, annotations dict)."""
    size = options.image_size
    pose = np.zeros(48)
    from handssca.runtime.mano.conventions import rotation_to_axis_angle

    pose[:3] = rotation_to_axis_angle(_random_rotation(rng, options))
    pose[3:] = rng.normal(0.0, options.finger_pose_std, 45)
    shape = np.clip(rng.normal(0.0, 1.0, 10), -2.5, 2.5)
    verts, joints = mano_forward(model, pose[None], shape[None], flat_hand_mean=False, fingertip_ids=fingertip_ids)
    verts, joints = verts[0], joints[0]
    focal = rng.uniform(1.6, 2.6) * size
    K = np.array([[focal, 0, size / 2 + rng.normal(0, 3)], [0, focal, size / 2 + rng.normal(0, 3)], [0, 0, 1]])
    # Distance such that the hand spans about 40-80% of the image, then a sideways shift.
    extent = np.linalg.norm(verts.max(0) - verts.min(0))
    depth = focal * extent / (rng.uniform(0.4, 0.8) * size)
    centre = (verts.max(0) + verts.min(0)) / 2
    shift = rng.uniform(-0.12, 0.12, 2) * size * depth / focal
    trans = np.array([shift[0], shift[1], depth]) - centre
    verts, joints = verts + trans, joints + trans
    layer = np.zeros((size, size, 3), np.uint8)
    skin = np.array([rng.uniform(90, 200), rng.uniform(110, 210), rng.uniform(150, 240)])  # BGR
    light = np.array([rng.normal(0, 0.6), rng.normal(0, 0.6), 1.0])
    mask = render_perspective(layer, verts, model.faces, K, skin, light=light, ambient=rng.uniform(0.2, 0.5))
    root_uv = project(joints[0], K)
    bone = float(np.linalg.norm(joints[SCALE_BONE[0]] - joints[SCALE_BONE[1]]))
    annotation = {
        "K": K.tolist(),
        "mano": [np.concatenate([pose, shape, root_uv, [bone]]).tolist()],
        "xyz": joints.tolist(),
        "verts": verts.tolist(),
        "scale": bone,
    }
    return layer, mask, annotation


def _composite(layer, mask, rng, size, occluder_probability, joints_uv):
    background = _background(rng, size)
    image = np.where(mask[..., None], layer, background)
    if rng.random() < occluder_probability:
        centre = joints_uv.mean(axis=0)
        radius = float(np.linalg.norm(joints_uv.max(0) - joints_uv.min(0))) / 2
        _occlude(image, rng, centre, radius)
    return image


def write_split(
    root: Path, split: str, count: int, model: ManoModel, fingertip_ids, options: SynthOptions, progress=None
) -> None:
    import cv2

    folder = root / split / "rgb"
    folder.mkdir(parents=True, exist_ok=True)
    versions = VERSIONS if split == "training" else 1
    split_id = 0 if split == "training" else 1
    annotations = {key: [] for key in ("K", "mano", "xyz", "verts", "scale")}
    for i in range(count):
        rng = np.random.default_rng([options.seed, split_id, i])
        layer, mask, annotation = render_sample(model, fingertip_ids, rng, options)
        joints_uv = project(np.asarray(annotation["xyz"]), np.asarray(annotation["K"]))
        for k in range(versions):
            image = _composite(layer, mask, rng, options.image_size, options.occluder_probability, joints_uv)
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, options.jpeg_quality])
            if not ok:
                raise RuntimeError("OpenCV could not encode a JPEG")
            write_atomically(folder / f"{i + count * k:08d}.jpg", encoded.tobytes())
        for key in annotations:
            annotations[key].append(annotation[key])
        if progress is not None:
            progress.update(1)
    for key, values in annotations.items():
        write_atomically(root / f"{split}_{key}.json", json.dumps(values).encode())


def make_synthetic_dataset(
    root: str | Path, model: ManoModel, fingertip_ids, options: SynthOptions | None = None, show_progress=True
) -> Path:
    """Writes a FreiHAND-layout data set under ``root`` (training and evaluation splits)."""
    from tqdm import tqdm

    options = options or SynthOptions()
    final = Path(root)
    if final.exists() and (not final.is_dir() or any(final.iterdir())):
        raise HandSSCAError(f"{final}: exists and is not an empty folder: write the data set to a new one")
    # Built beside the final name and renamed when complete: an interrupted or failed run (Ctrl-C,
    # a full disk) leaves no partial data set under the name a loader would trust.
    root = final.with_name(f".{final.name}.partial")
    shutil.rmtree(root, ignore_errors=True)
    try:
        root.mkdir(parents=True)
        total = options.train + options.evaluation
        with tqdm(total=total, desc="rendering hands", unit="hand", disable=not show_progress) as bar:
            write_split(root, "training", options.train, model, tuple(fingertip_ids), options, bar)
            write_split(root, "evaluation", options.evaluation, model, tuple(fingertip_ids), options, bar)
        _write_info(root, model, options)
        os.replace(root, final)
    except OSError as exc:
        shutil.rmtree(root, ignore_errors=True)
        if isinstance(exc, HandSSCAError):
            raise
        raise HandSSCAError(f"{final}: cannot write the data set ({exc.strerror or exc})") from exc
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return final


def _write_info(root: Path, model: ManoModel, options: SynthOptions) -> None:
    info = {
        "generator": "handssca data synth",
        "model": model.note or Path(model.source).name,
        "seed": options.seed,
        "training": options.train,
        "evaluation": options.evaluation,
        "versions": VERSIONS,
        "image_size": options.image_size,
        "occluder_probability": options.occluder_probability,
        "finger_pose_std": options.finger_pose_std,
        "roll_deg": options.roll_deg,
        "tilt_std": options.tilt_std,
        "back_probability": options.back_probability,
        "mano_convention": "axis-angle, flat_hand_mean=False, OpenCV camera, metres",
    }
    write_atomically(root / "synthetic.json", json.dumps(info, indent=2).encode())


def render_sequence(model: ManoModel, fingertip_ids, frames: int, width: int = 320, height: int = 240, seed: int = 0):
    """A hand turning and closing in front of a fixed background: (frames BGR list, per-frame
    annotations with K, box, joints and vertices). For the demo's video and webcam tests."""
    from handssca.runtime.hands.boxes import box_from_points
    from handssca.runtime.mano.conventions import rotation_to_axis_angle
    from handssca.runtime.mano.model import rodrigues

    rng = np.random.default_rng(seed)
    fingertip_ids = tuple(fingertip_ids)
    background = _background(rng, max(width, height))[:height, :width]
    focal = 1.1 * max(width, height)
    K = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]])
    start_fingers, end_fingers = rng.normal(0, 0.15, 45), rng.normal(0, 0.15, 45) + np.tile([0.9, 0, 0], 15)
    shape = np.clip(rng.normal(0, 0.8, 10), -2, 2)
    images, annotations = [], []
    for i in range(frames):
        t = 0.5 - 0.5 * np.cos(2 * np.pi * i / max(frames, 2))  # there and back
        pose = np.zeros(48)
        turn = rodrigues(np.array([0.0, 0.0, 0.6 * (t - 0.5)])) @ rodrigues(np.array([0.0, np.pi, 0.0]))
        pose[:3] = rotation_to_axis_angle(turn)
        pose[3:] = (1 - t) * start_fingers + t * end_fingers
        verts, joints = mano_forward(model, pose[None], shape[None], flat_hand_mean=False, fingertip_ids=fingertip_ids)
        trans = np.array([0.04 * np.sin(2 * np.pi * i / max(frames, 2)), 0.0, 0.45]) - joints[0, 9]
        verts, joints = verts[0] + trans, joints[0] + trans
        image = background.copy()
        layer = image.copy()
        mask = render_perspective(layer, verts, model.faces, K, (150, 170, 215), light=(0.3, 0.4, 1.0))
        image[mask] = layer[mask]
        images.append(image)
        annotations.append(
            {"K": K, "box": box_from_points(project(joints, K)), "joints": joints, "vertices": verts, "pose": pose}
        )
    return images, annotations


def synthesize(
    options: SynthOptions, output: str | Path = "data/synthetic", mano: str | None = None, fingertips: str = "smplx"
) -> str:
    """``handssca data synth``: the data set written with the hand model ``mano`` names, and the
    line that reports it."""
    from handssca.runtime.mano.load import load_hand_model

    model, fingertip_ids, label = load_hand_model(mano, fingertips)
    root = make_synthetic_dataset(output, model, fingertip_ids, options)
    return f"wrote {root}: {options.train} training hands x 4 backgrounds, {options.evaluation} evaluation ({label})"
