"""``handssca infer``: hand meshes for images or folders, as overlays, meshes and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .files import UnreadableImage, list_images, read_image, write_atomically, write_image
from .mesh_render import mesh_to_obj
from .overlay import default_intrinsics, draw_hand
from .predictor import HandMeshPredictor


@dataclass
class InferReport:
    written: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: reason" for each image left out


def infer_images(
    predictor: HandMeshPredictor, items, out: str | Path, box=None, side: str = "right", progress: bool = True
) -> InferReport:
    """For each image (files, or folders' images): ``<stem>_overlay.png`` (input | mesh and
    skeleton), ``<stem>.obj``, and one ``predictions.json`` for all. ``box`` (x0, y0, x1, y1) is the
    hand in every image (default: the whole image). Unreadable images are named and counted out."""
    from tqdm import tqdm

    from ..errors import HandSSCAError

    paths = list_images(items)
    if not paths:
        raise HandSSCAError("no images to run on")
    out = Path(out)
    names = output_names(paths)
    report, results = InferReport(), []
    for path in tqdm(paths, desc="inferring", unit="img", disable=not progress):
        try:
            frame = read_image(path)
        except UnreadableImage as exc:
            report.skipped.append(str(exc))
            continue
        h, w = frame.shape[:2]
        K = default_intrinsics(w, h)
        (hand,) = predictor.predict(frame, [box or (0, 0, w, h)], sides=[side], K=K)
        overlay = frame.copy()
        draw_hand(overlay, hand, predictor.mano.faces, K)
        write_image(out / f"{names[path]}_overlay.png", np.concatenate([frame, overlay], axis=1))
        write_atomically(out / f"{names[path]}.obj", mesh_to_obj(hand.vertices, predictor.mano.faces).encode())
        results.append({"image": str(path), **hand.to_json()})
    if not results:
        raise HandSSCAError(f"none of the {len(paths)} images could be read ({report.skipped[0]})")
    write_atomically(out / "predictions.json", json.dumps(results, indent=1).encode())
    report.written = len(results)
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
