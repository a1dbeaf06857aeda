"""Which extra of the distribution brings a missing module, read from the installed metadata.

The base install (numpy, ONNX Runtime, OpenCV headless, ...) runs the runtime; training, export,
serving and TensorRT need an extra (pyproject.toml's optional-dependencies). When a command
imports a module that is not installed, the ``handssca`` command says which extra to install in
one line instead of a traceback. The extras are read from the installed package's metadata, so
pyproject.toml stays the one place they are written.
"""

from __future__ import annotations

import re
from importlib import metadata

from handssca.errors import MissingBackend

# Import names that differ from the distribution that provides them.
DISTRIBUTIONS = {
    "yaml": "pyyaml",
    "cv2": "opencv-python-headless",
    "mamba_ssm": "mamba-ssm",
    "ai_edge_litert": "ai-edge-litert",
    "skimage": "scikit-image",
    "google": "tritonclient",  # google.protobuf comes with tritonclient[grpc]
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def extras_of(distribution: str) -> list[str]:
    """The extras of handssca that require ``distribution`` (those made of other extras last)."""
    try:
        requirements = metadata.requires("handssca") or []
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return []
    found, wanted = [], _normalise(distribution)
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement)
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", requirement)
        if name and extra and _normalise(name.group()) == wanted and extra.group(1) not in found:
            found.append(extra.group(1))
    return sorted(found, key=lambda extra: extra == "dev")


def missing_extra(exc: ImportError) -> MissingBackend | None:
    """The one-line error for ``exc`` (a module that is not installed), naming the extra to install,
    or None when no extra provides it (then the import error is a bug, and keeps its traceback)."""
    module = (getattr(exc, "name", None) or "").split(".")[0]
    if not module or module == "handssca":
        return None
    distribution = DISTRIBUTIONS.get(module, module)
    extras = extras_of(distribution)
    if not extras:
        return None
    hint = " (torch==2.13.0 first for the CPU build)" if module == "torch" else ""
    return MissingBackend(f"needs {distribution}, which is not installed: pip install 'handssca[{extras[0]}]'{hint}")
