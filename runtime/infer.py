"""``handssca infer``: hand meshes for images or folders, as overlays, meshes and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handssca.errors import HandSSCAError, UnreadableImage, one_line
from handssca.runtime.camera import default_intrinsics
from handssca.runtime.files import RunFolder, list_images, read_image, write_image
from handssca.runtime.mesh_render import mesh_to_obj
from handssca.runtime.overlay import draw_hand, draw_label
from handssca.runtime.predictor import HandMeshPredictor


@dataclass
class InferReport:
    written: int = 0  # images with results
    skipped: list[str] = field(default_factory=list)  # "path: reason" for each image left out
    hands: dict[str, list[str]] = field(default_factory=dict)  # image -> the sides of its hands found
    folder: Path | None = None  # where the overlays, meshes and predictions.json went

    def summary_lines(self) -> list[str]:
        """Per image, the hands found ("no hand found" is an outcome, counted); then the totals."""
        lines = [f"{image}: {describe_hands(sides)}" for image, sides in self.hands.items()]
        lines += [f"skipped {skipped}" for skipped in self.skipped]
        lines = [one_line(line) for line in lines]  # a file name may hold a newline
        empty = sum(1 for sides in self.hands.values() if not sides)
        found = f"; no hand found in {empty}" if empty else ""
        left_out = f" ({len(self.skipped)} skipped, named above)" if self.skipped else ""
        total = sum(len(s) for s in self.hands.values())
        lines.append(f"{total} hands in {self.written} images{found}{left_out}")
        if self.folder is not None:
            lines.append(f"wrote overlays, meshes and predictions.json to {self.folder}")
        return lines


def describe_hands(sides: list[str]) -> str:
    if not sides:
        return "no hand found"
    return f"{len(sides)} hand{'s' if len(sides) > 1 else ''} ({', '.join(sides)})"


def infer_images(
    predictor: HandMeshPredictor,
    items,
    out: str | Path = "handssca_infer",
    box=None,
    side: str = "right",
    progress: bool = True,
) -> InferReport:
    """For each image (files, or folders' images): ``<stem>_overlay.png`` (input | meshes and
    skeletons), a mesh per hand, and one ``predictions.json`` for all hands. ``box`` (x0, y0, x1,
    y1) is the one hand in every image (its mesh ``<stem>.obj``); without it the hand finder finds
    each image's hands (``<stem>_hand<i>_<side>.obj``), and an image without one is counted as
    such. Unreadable images are named and counted out."""
    from tqdm import tqdm

    paths = list_images(items)
    if not paths:
        raise HandSSCAError("no images to run on")
    names = output_names(paths)
    report, results = InferReport(folder=Path(out)), []
    with RunFolder(out) as folder:  # this run's files only, and no other run writing beside it
        for path in tqdm(paths, desc="inferring", unit="img", disable=not progress):
            try:
                frame = read_image(path)
            except UnreadableImage as exc:
                report.skipped.append(str(exc))
                continue
            h, w = frame.shape[:2]
            K = default_intrinsics(w, h)
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
                folder.write(meshes[i], mesh_to_obj(hand.vertices, predictor.mano.faces).encode())
                results.append({"image": str(path), "hand": i, "mesh": meshes[i], **hand.to_json()})
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
