"""A recording's animation files, by the extension the user gives (``webcam --record FILE``)."""

from __future__ import annotations

from pathlib import Path

from handssca.errors import OptionError
from handssca.runtime.outputs.recording import Recording

RECORD_FORMATS = {".glb": "glTF 2.0, binary", ".bvh": "BVH"}  # what `webcam --record FILE` writes, by extension


def write_recording(path, recording: Recording) -> dict:
    """``recording`` as the file ``path`` names by its extension (RECORD_FORMATS): the writer's
    report (what it wrote, and what the format could not hold)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".glb":
        from handssca.runtime.outputs.gltf import write_animation

        return write_animation(path, recording)
    if suffix == ".bvh":
        from handssca.runtime.outputs.bvh import write_bvh

        return write_bvh(path, recording)
    raise OptionError(f"--record {path}: the extension says the format: {', '.join(RECORD_FORMATS)}")
