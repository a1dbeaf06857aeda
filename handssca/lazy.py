"""Package attributes imported on first use (PEP 562).

``handssca.models``, ``handssca.export`` and ``handssca.runtime`` name their public objects in
their ``__init__`` without importing them, so that a light part (the network's config, the
export's options, the torch-free runtime) can be used without pulling in torch or onnx.
"""

from __future__ import annotations

from importlib import import_module


def lazy_attributes(package: str, homes: dict[str, str]):
    """A module ``__getattr__`` that imports ``name`` from ``homes[name]`` (a relative module)."""

    def __getattr__(name: str):
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(homes[name], package), name)

    return __getattr__
