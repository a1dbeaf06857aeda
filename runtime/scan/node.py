"""The selective scan's contract: one custom ONNX node, its shapes, and where each implementation lives.

The scan (Mamba's S6, mamba-ssm's ``selective_scan_ref`` semantics without the z gate):
  inputs u, delta (B, D, L); A (D, N); B, C (B, G, N, L) with D % G == 0; D, delta_bias (D,)
  delta' = softplus(delta + delta_bias) (threshold 20) when delta_softplus, else delta + delta_bias
  h_l = exp(delta'_l A) h_{l-1} + delta'_l B_l u_l,  y_l = <h_l, C_l> + D u_l   (state in fp32)
``scan_shapes`` is the one check of those shapes (random arguments in the network's ranges, for
tests and benchmarks, are ``handssca.scan_bench.make_scan_inputs``).

The node: ``HandSSCASelectiveScan`` in domain ``ai.onnx.contrib``, version 1; inputs as above,
output y (u's shape and type); attributes delta_softplus (INT), plugin_version and
plugin_namespace (STRING), which TensorRT's ONNX parser uses to find our plugin.

Every implementation, and where it lives:
  reference          handssca/ops/selective_scan.py  ``selective_scan_ref`` (torch; every fast path
                     is tested against it) and the registered op ``torch.ops.handssca.selective_scan``
                     that dispatches to the others
  CPU kernel         runtime/scan/csrc/selective_scan_cpu.cpp via runtime/scan/kernel.py (torch-free,
                     forward and backward; the ``cpu-kernel`` scan backend and ONNX Runtime's node)
  CUDA kernel        plugins/selective_scan/selectiveScanKernel.cu, called from torch through
                     handssca/ops/cuda_kernel.py (ctypes; the ``cuda-kernel`` scan backend)
  mamba-ssm          its CUDA kernel, the ``mamba-ssm`` scan backend when installed
  ONNX node          written by export/scan_translation.py; run by runtime/backends/onnx_runner.py (which
                     cuts the graph at the nodes), or by any ONNX Runtime session through
                     runtime/scan/ort_bridge.py (onnxruntime-extensions)
  portable ONNX      export/portable.py: the node rewritten as a standard ONNX ``Scan``
  TensorRT plugin    plugins/selective_scan/selectiveScanPlugin.cpp (IPluginV3) on the CUDA kernel
"""

from __future__ import annotations

from handssca.errors import OptionError

OP_TYPE = "HandSSCASelectiveScan"  # not "SelectiveScan": TensorRT-LLM registers that name
DOMAIN = "ai.onnx.contrib"  # the domain onnxruntime-extensions runs Python ops in
OP_VERSION = 1
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = ""
INPUTS = ("u", "delta", "A", "B", "C", "D", "delta_bias")

_ACTIVATIONS = ("u", "delta", "B", "C")


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


def scan_shapes(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> tuple[int, int, int, int, int]:
    """The one shape check of the scan's arguments (numpy arrays or torch tensors alike):
    OptionError naming the first one that disagrees; else (batch, dim, L, N, G)."""

    def shape(x):
        return tuple(getattr(x, "shape", ()))

    if len(shape(u)) != 3:
        raise OptionError(f"selective_scan: u must be a (batch, dim, L) array, got shape {getattr(u, 'shape', None)}")
    batch, dim, L = shape(u)
    if len(shape(A)) != 2 or shape(A)[0] != dim:
        raise OptionError(f"selective_scan: A must have shape ({dim}, N), got {getattr(A, 'shape', None)}")
    N = shape(A)[1]
    if len(shape(B)) != 4:
        raise OptionError(f"selective_scan: B must be a (batch, G, N, L) array, got shape {getattr(B, 'shape', None)}")
    G = shape(B)[1]
    if G < 1 or dim % G != 0:
        raise OptionError(f"selective_scan: dim {dim} is not divisible by the {G} groups of B")
    expected = {
        "delta": (delta, (batch, dim, L)),
        "B": (B, (batch, G, N, L)),
        "C": (C, (batch, G, N, L)),
        "D": (D, (dim,)),
        "z": (z, (batch, dim, L)),
        "delta_bias": (delta_bias, (dim,)),
    }
    for name, (x, want) in expected.items():
        if x is not None and shape(x) != want:
            raise OptionError(f"selective_scan: {name} has shape {shape(x)}, expected {want}")
    return batch, dim, L, N, G
