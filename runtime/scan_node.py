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

_ACTIVATIONS = ("u", "delta", "B", "C")
_registered = False


def count_scan_nodes(model) -> int:
    """Scan nodes in an onnx.ModelProto."""
    return sum(1 for n in model.graph.node if n.op_type == OP_TYPE and n.domain == DOMAIN)


def _infer_shape(ctx) -> None:
    """The output has u's type and shape."""
    ctx.set_output_type(0, ctx.get_input_type(0))


def register_scan_schema() -> None:
    """Registers the node's schema with onnx (once), so the checker and shape inference accept it."""
    from onnx import defs

    try:
        defs.get_schema(OP_TYPE, OP_VERSION, DOMAIN)
        return
    except defs.SchemaError:
        pass
    P = defs.OpSchema.FormalParameter
    schema = defs.OpSchema(
        OP_TYPE,
        DOMAIN,
        OP_VERSION,
        doc="Mamba S6 selective scan (mamba-ssm selective_scan_fn semantics), grouped B/C, no z gate.",
        inputs=[P(name, "T" if name in _ACTIVATIONS else "tensor(float)") for name in INPUTS],
        outputs=[P("y", "T")],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "activations")],
        attributes=[
            defs.OpSchema.Attribute("delta_softplus", defs.OpSchema.AttrType.INT, "apply softplus to delta + bias"),
            defs.OpSchema.Attribute("plugin_version", defs.OpSchema.AttrType.STRING, "TensorRT plugin version"),
            defs.OpSchema.Attribute("plugin_namespace", defs.OpSchema.AttrType.STRING, "TensorRT plugin namespace"),
        ],
    )
    schema.set_type_and_shape_inference_function(_infer_shape)
    defs.register_schema(schema)


def register_ort_scan_op() -> str:
    """Registers the node's CPU implementation with onnxruntime-extensions (once per process).

    Returns the path of the extensions library to pass to SessionOptions.register_custom_ops_library.
    This lets any ONNX Runtime session (or tool) run the single exported file as it is; the
    bridge copies every tensor through Python (about 60 ns per element), so OnnxModel instead
    runs the graph in pieces around the scan nodes and calls the kernel directly.
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
