"""The scan node for any ONNX Runtime session, through onnxruntime-extensions' Python custom ops:
a plain ``InferenceSession`` (or a tool such as polygraphy) then runs the single exported file as
it is. ``OnnxRunner`` does not use it (see ``register_ort_scan_op``)."""

from __future__ import annotations

from handssca.errors import MissingBackend
from handssca.runtime.scan.kernel import selective_scan_forward
from handssca.runtime.scan.node import INPUTS, OP_TYPE

_registered = False


def register_ort_scan_op() -> str:
    """Registers the node's CPU implementation with onnxruntime-extensions (once per process).

    Returns the path of the extensions library to pass to SessionOptions.register_custom_ops_library.
    This lets any ONNX Runtime session (or tool) run the single exported file as it is; the
    bridge copies every tensor through Python (about 60 ns per element), so OnnxRunner instead
    runs the graph in pieces around the scan nodes and calls the kernel directly.
    """
    global _registered
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as exc:
        raise MissingBackend(
            "running the selective-scan node in ONNX Runtime needs onnxruntime-extensions "
            "(pip install onnxruntime-extensions)"
        ) from exc
    if not _registered:

        @onnx_op(
            op_type=OP_TYPE,
            inputs=[PyCustomOpDef.dt_float] * len(INPUTS),
            outputs=[PyCustomOpDef.dt_float],
            attrs={
                "delta_softplus": PyCustomOpDef.dt_int64,
                "plugin_version": PyCustomOpDef.dt_string,
                "plugin_namespace": PyCustomOpDef.dt_string,
            },
        )
        def _scan(u, delta, A, B, C, D, delta_bias, **attrs):
            return selective_scan_forward(u, delta, A, B, C, D, None, delta_bias, bool(attrs.get("delta_softplus", 1)))

        _registered = True
    return get_library_path()
