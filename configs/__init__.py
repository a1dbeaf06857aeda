"""The shipped YAML configs, installed with the package (``handssca.configs``).

``configs/model/`` holds network configurations (the paper model, the ablations, a tiny model),
``configs/train/`` training runs. ``config_path("model/tiny.yaml")`` is the file on disk, from a
source checkout or an installed wheel alike.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def config_path(name: str) -> Path:
    """The shipped config ``name`` (e.g. "model/tiny.yaml"); FileNotFoundError naming it otherwise."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such shipped config (see configs/model and configs/train)")
    return path
