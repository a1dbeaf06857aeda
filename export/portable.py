"""The portable variant: every selective-scan node rewritten in standard ONNX ops.

Runtimes that cannot load our custom op (or our plugin) run this file instead. It is built from
the exported ONNX, not from torch, so it is also an independent check of the custom node: the
same graph with the scan computed another way.

Each scan node becomes (shapes for u (B, D, L), B/C (B, G, N, L), Dg = D / G):

    dt  = softplus(delta + delta_bias)                  (B, D, L)      threshold 20, as torch
    Scan over L: x = exp(dt_t * A) * x + dt_t * u_t * B_t;  y_t = sum_N(x * C_t)
    y   = y + D * u, cast back to u's type

The recurrence is an ONNX ``Scan`` (one small body per step), so the file runs anywhere ONNX
Runtime does; it is slower than the custom node, which does all of this in one fused kernel.
The math is float32 whatever u's type, like the kernel's.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

from handssca.errors import RunError
from handssca.runtime.scan.node import DOMAIN, OP_TYPE

MIN_OPSET = 15  # CastLike; Unsqueeze and ReduceSum with axes as inputs
SOFTPLUS_THRESHOLD = 20.0


def _const(name: str, values, dtype=None):
    import numpy as np

    return numpy_helper.from_array(np.asarray(values, dtype=dtype or np.int64), name)


def _scan_body(p: str) -> onnx.GraphProto:
    """One step: x (B,G,Dg,N); dt_t, du_t (B,G,Dg,1); B_t (B,G,1,N); C_t (B,G,N) -> x', y_t (B,G,Dg).

    exp(dt_t * A) and dt_t * u_t * B_t are formed inside the step: as whole (L, ..., N) tensors
    before the Scan they cost several times more in ONNX Runtime's broadcasting kernels.
    A (G, Dg, N) is read from the enclosing graph.
    """
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Mul", [f"{p}b_dt", f"{p}A3"], [f"{p}b_dtA"]),
        helper.make_node("Exp", [f"{p}b_dtA"], [f"{p}b_a"]),
        helper.make_node("Mul", [f"{p}b_a", f"{p}b_x"], [f"{p}b_ax"]),
        helper.make_node("Mul", [f"{p}b_du", f"{p}b_B"], [f"{p}b_bu"]),
        helper.make_node("Add", [f"{p}b_ax", f"{p}b_bu"], [f"{p}b_x_next"]),
        helper.make_node("Unsqueeze", [f"{p}b_C", f"{p}b_axis2"], [f"{p}b_c4"]),
        helper.make_node("Mul", [f"{p}b_x_next", f"{p}b_c4"], [f"{p}b_xc"]),
        helper.make_node("ReduceSum", [f"{p}b_xc", f"{p}b_axis3"], [f"{p}b_y"], keepdims=0),
        helper.make_node("Identity", [f"{p}b_x_next"], [f"{p}b_x_out"]),
    ]
    return helper.make_graph(
        nodes,
        f"{p}scan_step",
        [helper.make_tensor_value_info(f"{p}b_{n}", f, None) for n in ("x", "dt", "du", "B", "C")],
        [helper.make_tensor_value_info(f"{p}b_x_out", f, None), helper.make_tensor_value_info(f"{p}b_y", f, None)],
        initializer=[_const(f"{p}b_axis2", [2]), _const(f"{p}b_axis3", [3])],
    )


def _lower(node: onnx.NodeProto, p: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Standard-op nodes (and their constants) computing ``node``'s output; names prefixed ``p``."""
    u, delta, A, B, C, D, delta_bias = node.input
    (y,) = node.output
    softplus = next((a.i for a in node.attribute if a.name == "delta_softplus"), 1)
    F = TensorProto.FLOAT
    n = helper.make_node
    consts = [
        _const(f"{p}zero", [0]),
        _const(f"{p}minus1", [-1]),
        _const(f"{p}one", [1]),
        _const(f"{p}axis_last", [-1]),
        _const(f"{p}i0", [0]),
        _const(f"{p}i1", [1]),
        _const(f"{p}i2", [2]),
        _const(f"{p}i3", [3]),
    ]
    nodes = [n("Cast", [t], [f"{p}{name}32"], to=F) for t, name in ((u, "u"), (delta, "delta"), (B, "B"), (C, "C"))]
    nodes += [
        n("Unsqueeze", [delta_bias, f"{p}axis_last"], [f"{p}bias2"]),
        n("Add", [f"{p}delta32", f"{p}bias2"], [f"{p}dt_raw"]),
    ]
    if softplus:
        consts.append(_const(f"{p}threshold", SOFTPLUS_THRESHOLD, "float32"))
        consts.append(_const(f"{p}fone", 1.0, "float32"))
        # torch's softplus: x above the threshold passes through; Min keeps Exp finite.
        nodes += [
            n("Min", [f"{p}dt_raw", f"{p}threshold"], [f"{p}dt_low"]),
            n("Exp", [f"{p}dt_low"], [f"{p}dt_exp"]),
            n("Add", [f"{p}dt_exp", f"{p}fone"], [f"{p}dt_exp1"]),
            n("Log", [f"{p}dt_exp1"], [f"{p}dt_soft"]),
            n("Greater", [f"{p}dt_raw", f"{p}threshold"], [f"{p}dt_big"]),
            n("Where", [f"{p}dt_big", f"{p}dt_raw", f"{p}dt_soft"], [f"{p}dt"]),
        ]
    else:
        nodes.append(n("Identity", [f"{p}dt_raw"], [f"{p}dt"]))
    # Everything below is laid out length-first, so each Scan step reads one contiguous slice.
    # Shapes come from the tensors: batch and length may be dynamic; G, N, Dg follow from B and A.
    nodes += [
        n("Shape", [B], [f"{p}shape_B"]),
        n("Shape", [A], [f"{p}shape_A"]),
        n("Slice", [f"{p}shape_B", f"{p}i1", f"{p}i2"], [f"{p}G"]),
        n("Slice", [f"{p}shape_A", f"{p}i1", f"{p}i2"], [f"{p}N"]),
        n("Slice", [f"{p}shape_A", f"{p}i0", f"{p}i1"], [f"{p}D"]),
        n("Div", [f"{p}D", f"{p}G"], [f"{p}Dg"]),
        # (B, D, L) -> (L, B, G, Dg, 1)
        n("Concat", [f"{p}zero", f"{p}zero", f"{p}G", f"{p}minus1", f"{p}one"], [f"{p}shape5"], axis=0),
        # (D, N) -> (G, Dg, N)
        n("Concat", [f"{p}G", f"{p}minus1", f"{p}N"], [f"{p}shape_A3"], axis=0),
        n("Transpose", [f"{p}dt"], [f"{p}dt_t"], perm=[2, 0, 1]),
        n("Reshape", [f"{p}dt_t", f"{p}shape5"], [f"{p}dt5"]),
        n("Reshape", [A, f"{p}shape_A3"], [f"{p}A3"]),
        n("Transpose", [f"{p}u32"], [f"{p}u_t"], perm=[2, 0, 1]),
        n("Reshape", [f"{p}u_t", f"{p}shape5"], [f"{p}u5"]),
        n("Mul", [f"{p}dt5", f"{p}u5"], [f"{p}du5"]),
        n("Transpose", [f"{p}B32"], [f"{p}B_t"], perm=[3, 0, 1, 2]),  # (L, B, G, N)
        n("Unsqueeze", [f"{p}B_t", f"{p}i3"], [f"{p}B5"]),  # (L, B, G, 1, N)
        n("Transpose", [f"{p}C32"], [f"{p}C_t"], perm=[3, 0, 1, 2]),
        # The state: zeros of shape (B, G, Dg, N).
        n("Shape", [f"{p}dt_t"], [f"{p}shape_dt_t"]),  # (L, B, D)
        n("Slice", [f"{p}shape_dt_t", f"{p}i1", f"{p}i2"], [f"{p}batch"]),
        n("Concat", [f"{p}batch", f"{p}G", f"{p}Dg", f"{p}N"], [f"{p}shape_state"], axis=0),
        n(
            "ConstantOfShape",
            [f"{p}shape_state"],
            [f"{p}state0"],
            value=helper.make_tensor(f"{p}zero_f", F, [1], [0.0]),
        ),
        n(
            "Scan",
            [f"{p}state0", f"{p}dt5", f"{p}du5", f"{p}B5", f"{p}C_t"],
            [f"{p}state_last", f"{p}ys"],
            body=_scan_body(p),
            num_scan_inputs=4,
        ),
        n("Transpose", [f"{p}ys"], [f"{p}ys_t"], perm=[1, 2, 3, 0]),  # (B, G, Dg, L)
        n("Shape", [u], [f"{p}shape_u"]),
        n("Reshape", [f"{p}ys_t", f"{p}shape_u"], [f"{p}y_scan"]),
        n("Unsqueeze", [D, f"{p}axis_last"], [f"{p}D2"]),
        n("Mul", [f"{p}u32", f"{p}D2"], [f"{p}Du"]),
        n("Add", [f"{p}y_scan", f"{p}Du"], [f"{p}y32"]),
        n("CastLike", [f"{p}y32", u], [y]),
    ]
    return nodes, consts


def lower_scan_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every scan node replaced by standard ONNX ops (see the module doc)."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise RunError(f"the portable scan needs opset {MIN_OPSET} or newer; this model has opset {opset}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    nodes, constants = [], []
    for index, node in enumerate(graph.node):
        if node.op_type == OP_TYPE and node.domain == DOMAIN:
            lowered, consts = _lower(node, f"_portable_scan{index}_")
            nodes += lowered
            constants += consts
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(constants)
    if not any(n.domain == DOMAIN for n in graph.node):
        kept = [o for o in out.opset_import if o.domain != DOMAIN]
        del out.opset_import[:]
        out.opset_import.extend(kept)
    return out
