"""Custom ops: the selective scan and how it is dispatched."""

from .selective_scan import (
    BACKENDS,
    available_backends,
    describe_scan_backend,
    scan_backend,
    selective_scan,
    selective_scan_ref,
    use_scan_backend,
)

__all__ = [
    "BACKENDS",
    "available_backends",
    "describe_scan_backend",
    "scan_backend",
    "selective_scan",
    "selective_scan_ref",
    "use_scan_backend",
]
