"""Test helpers for the hand finder: MediaPipe's .tflite files, and a network that sees real hands.

``mediapipe_tflite()`` takes the four .tflite files from the mediapipe 0.10.21 wheel (pip
download from PyPI, once, into ~/.cache/handssca), checked against the hashes that
tools/convert_hand_models.py pins. ``LandmarkNetwork`` keeps the network runner contract
(``runtime/backends/runner.py``) with MediaPipe's landmark model inside: the shipped demo network knows only
the rendered stand-in hand, so on photographs its keypoints are noise, and tracking by keypoints
can only be tested with a network whose keypoints follow a real hand.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "handssca" / "mediapipe-0.10.21"


def load_converter():
    """tools/convert_hand_models.py as a module (a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("convert_hand_models", ROOT / "tools" / "convert_hand_models.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["convert_hand_models"] = module
    spec.loader.exec_module(module)
    return module


def mediapipe_tflite() -> dict[str, bytes]:
    """{name: .tflite bytes} of the four models, from the cached (or newly downloaded) wheel."""
    converter = load_converter()
    wheels = sorted(CACHE.glob("mediapipe-0.10.21-*.whl"))
    if not wheels:
        CACHE.mkdir(parents=True, exist_ok=True)
        wheels = [converter.download_wheel(CACHE, None)]
    models, _ = converter.extract_models(wheels[0])
    return models


class LandmarkNetwork:
    """The network contract with MediaPipe's landmark model for keypoints: each normalised crop
    is un-normalised, seen by the landmark model whole, and its 21 landmarks become joints_2d;
    the heatmap peak (the predictor's confidence) is the presence score; pose and shape are the
    mean hand's."""

    def __init__(self, finder, size: int = 128):
        from handssca.runtime.crop import IMAGE_MEAN, IMAGE_STD

        self.finder, self.size, self.name = finder, size, "landmark-network"
        self.metadata = {
            "input": {"shape": ["batch", 3, size, size], "colour_order": "RGB", "mean": IMAGE_MEAN, "std": IMAGE_STD},
            "mano": {"in_graph": False},
        }
        self.mean = np.asarray(IMAGE_MEAN, np.float32)[:, None, None]
        self.std = np.asarray(IMAGE_STD, np.float32)[:, None, None]

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        from handssca.runtime.hands.rects import HandRect

        joints, peaks = [], []
        whole = HandRect(self.size / 2, self.size / 2, self.size, self.size, 0.0)
        for image in images:
            rgb = np.clip(np.round((image * self.std + self.mean) * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0)
            hand = self.finder.landmarks(rgb, whole, colour="rgb")
            joints.append(hand.keypoints / self.size if hand is not None else np.full((21, 2), 0.5))
            peaks.append(hand.presence if hand is not None else 0.0)
        batch = len(images)
        heatmaps = np.zeros((batch, 21, 4, 4), np.float32)
        heatmaps[:, :, 0, 0] = np.asarray(peaks, np.float32)[:, None]
        return {
            "joints_2d": np.asarray(joints, np.float32),
            "heatmaps": heatmaps,
            "pose": np.zeros((batch, 48), np.float32),
            "shape": np.zeros((batch, 10), np.float32),
        }

    def warmup(self, runs: int = 2) -> None:
        pass
