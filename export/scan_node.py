"""How the registered torch op becomes one custom ONNX node: schema and translation."""

from __future__ import annotations

import onnx
import onnxscript
from onnx import defs

from handssca.runtime.scan_node import DOMAIN, INPUTS, OP_TYPE, OP_VERSION, PLUGIN_NAMESPACE, PLUGIN_VERSION

_ACTIVATIONS = ("u", "delta", "B", "C")


def _infer_shape(ctx) -> None:
    """The output has u's type and shape."""
    ctx.set_output_type(0, ctx.get_input_type(0))


def register_scan_schema() -> None:
    """Registers the node's schema with onnx (once), so the checker and shape inference accept it."""
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


_contrib = onnxscript.values.Opset(DOMAIN, OP_VERSION)


def scan_translation(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """custom_translation_table entry for torch.ops.handssca.selective_scan."""
    if D is None or delta_bias is None or z is not None:
        raise ValueError(
            f"the {OP_TYPE} node needs D and delta_bias and no z gate (as SS2D calls it); "
            "this model calls the scan differently"
        )
    return _contrib.HandSSCASelectiveScan(
        u,
        delta,
        A,
        B,
        C,
        D,
        delta_bias,
        delta_softplus=int(bool(delta_softplus)),
        plugin_version=PLUGIN_VERSION,
        plugin_namespace=PLUGIN_NAMESPACE,
    )


def count_scan_nodes(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == OP_TYPE and n.domain == DOMAIN)
