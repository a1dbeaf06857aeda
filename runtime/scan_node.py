"""The selective scan as one custom ONNX node: its name, and its CPU kernel for ONNX Runtime.

The exporter (handssca.export) writes every scan as one node of these constants; TensorRT runs
it through our plugin (same op_type, version and namespace), ONNX Runtime through
onnxruntime-extensions, which calls the compiled CPU kernel of handssca.runtime.

Node: inputs (u, delta, A, B, C, D, delta_bias), output y; attributes delta_softplus (INT),
plugin_version, plugin_namespace (STRING). Shapes as handssca.runtime.selective_scan.
"""

from __future__ import annotations

OP_TYPE = "HandSSCASelectiveScan"  # not "SelectiveScan": TensorRT-LLM registers that name
DOMAIN = "ai.onnx.contrib"  # the domain onnxruntime-extensions runs Python ops in
OP_VERSION = 1
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
INPUTS = ("u", "delta", "A", "B", "C", "D", "delta_bias")

_registered = False


def register_ort_scan_op() -> str:
    """Registers the node's CPU implementation with onnxruntime-extensions (once per process).

    Returns the path of the extensions library to pass to SessionOptions.register_custom_ops_library.
    """
    global _registered
    try:
        from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    except ImportError as exc:
        raise RuntimeError(
            "running the selective-scan node in ONNX Runtime needs onnxruntime-extensions "
            "(pip install onnxruntime-extensions)"
        ) from exc
    if not _registered:
        from .selective_scan import selective_scan_forward

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
