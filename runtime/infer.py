"""``handssca infer``: hand meshes for images or folders, as overlays, meshes and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handssca.errors import HandSSCAError, UnreadableImage, counted, one_line
from handssca.runtime.camera import Camera, intrinsics_json
from handssca.runtime.files import RunFolder, list_images, read_image, write_image
from handssca.runtime.outputs.hands import hand_obj, hand_record
from handssca.runtime.overlay import draw_hand, draw_label
from handssca.runtime.predictor import HandMeshPredictor


@dataclass
class InferReport:
    written: int = 0  # images with results
    skipped: list[str] = field(default_factory=list)  # "path: reason" for each image left out
    hands: dict[str, list[str]] = field(default_factory=dict)  # image -> the sides of its hands found
    folder: Path | None = None  # where the overlays, meshes and predictions.json went
    box_side: str | None = None  # the side every --box hand was taken as

    def summary_lines(self) -> list[str]:
        """Per image, the hands found ("no hand found" is an outcome, counted); then the totals."""
        lines = [f"{image}: {describe_hands(sides)}" for image, sides in self.hands.items()]
        lines += [f"skipped {skipped}" for skipped in self.skipped]
        lines = [one_line(line) for line in lines]  # a file name may hold a newline
        empty = sum(1 for sides in self.hands.values() if not sides)
        found = f"; no hand found in {empty}" if empty else ""
        left_out = f" ({len(self.skipped)} skipped, named above)" if self.skipped else ""
        total = sum(len(s) for s in self.hands.values())
        lines.append(f"{counted(total, 'hand')} in {counted(self.written, 'image')}{found}{left_out}")
        if self.box_side is not None:  # the network cannot tell; a wrong side mirrors the hand
            lines.append(f"each --box hand was taken as a {self.box_side} hand (--side left or right to say otherwise)")
        if self.folder is not None:
            lines.append(f"wrote overlays, meshes (.obj, .glb) and predictions.json to {self.folder}")
        return lines


def describe_hands(sides: list[str]) -> str:
    if not sides:
        return "no hand found"
    return f"{counted(len(sides), 'hand')} ({', '.join(sides)})"


def infer_images(
    predictor: HandMeshPredictor,
    items,
    out: str | Path = "handssca_infer",
    box=None,
    side: str = "right",
    progress: bool = True,
    intrinsics=None,
    calibration=None,
) -> InferReport:
    """For each image (files, or folders' images): ``<stem>_overlay.png`` (input | meshes and
    skeletons), a mesh per hand, ``<stem>.glb`` with every hand found (glTF 2.0), and one
    ``predictions.json`` for all hands. ``box`` (x0, y0, x1, y1) is the one hand in every image
    (its mesh ``<stem>.obj``); without it the hand finder finds each image's hands
    (``<stem>_hand<i>_<side>.obj``), and an image without one is counted as such. Unreadable
    images are named and counted out. ``intrinsics`` (fx, fy, cx, cy) or ``calibration`` (an
    OpenCV calibration file, its distortion undone) are the camera's; without them each image's
    are guessed and every record says so. Meshes and records are in camera space
    (``outputs.hands``)."""
    from tqdm import tqdm

    camera = Camera.from_options(intrinsics, calibration)  # a bad option or file: one line, before the work
    from handssca.runtime.outputs.gltf import write_scene

    paths = list_images(items)
    if not paths:
        raise HandSSCAError("no images to run on")
    names = output_names(paths)
    report, results = InferReport(folder=Path(out), box_side=side if box is not None else None), []
    with RunFolder(out) as folder:  # this run's files only, and no other run writing beside it
        for path in tqdm(paths, desc="inferring", unit="img", disable=not progress):
            try:
                frame = read_image(path)
            except UnreadableImage as exc:
                report.skipped.append(str(exc))
                continue
            frame = camera.undistort(frame)
            K, guessed = camera.intrinsics(frame.shape[1], frame.shape[0])
            if box is not None:
                hands = predictor.predict(frame, [box], sides=[side], K=K)
                meshes = [f"{names[path]}.obj"]
            else:
                hands = predictor.predict(frame, K=K)
                meshes = [f"{names[path]}_hand{i}_{hand.side}.obj" for i, hand in enumerate(hands)]
            overlay = frame.copy()
            for i, hand in enumerate(hands):
                draw_hand(overlay, hand, predictor.mano.faces, K)
                draw_label(overlay, hand.box, f"{i} {hand.side}")
                folder.write(meshes[i], hand_obj(hand, predictor.mano.faces))
                scene = f"{names[path]}.glb"
                results.append(hand_record(hand, image=str(path), hand=i, mesh=meshes[i], scene=scene,
                                           intrinsics=intrinsics_json(K, guessed)))  # fmt: skip
            if hands:
                write_scene(folder.path(f"{names[path]}.glb"), hands, predictor.mano)
            write_image(folder.path(f"{names[path]}_overlay.png"), np.concatenate([frame, overlay], axis=1))
            report.hands[str(path)] = [hand.side for hand in hands]
        if not report.hands:
            raise HandSSCAError(f"none of the {len(paths)} images could be read ({report.skipped[0]})")
        folder.write("predictions.json", json.dumps(results, indent=1).encode())
    report.written = len(report.hands)
    return report


def output_names(paths: list[Path]) -> dict[Path, str]:
    """The base name of each image's outputs: its stem, or stem_extension where stems collide
    (a.jpg and a.png), so that no image's results overwrite another's."""
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    names, taken = {}, set()
    for path in paths:
        name = path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower()}"
        base, k = name, 1
        while name in taken:  # the same name in two folders
            k += 1
            name = f"{base}_{k}"
        names[path] = name
        taken.add(name)
    return names
