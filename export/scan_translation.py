"""How the registered torch op becomes one ``HandSSCASelectiveScan`` node (runtime/scan/node.py
holds the node's contract and schema)."""

from __future__ import annotations

import onnxscript

from handssca.runtime.scan.node import DOMAIN, OP_TYPE, OP_VERSION, PLUGIN_NAMESPACE, PLUGIN_VERSION

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
