"""Torch-free selective scan (Mamba S6) on the CPU: numpy in, numpy out.

Shapes follow mamba-ssm's ``selective_scan_fn``:

    u, delta, z : (batch, dim, L)       A : (dim, N)
    B, C        : (batch, G, N, L)      D, delta_bias : (dim,)

Channel ``d`` reads B and C of group ``d // (dim // G)``. The math runs in float32 for
float16/bfloat16/float32 inputs and in float64 for float64 inputs; the output has u's dtype.
The compiled kernel (``_selective_scan_cpu``) is the fast path used by training on the CPU
(through ``handssca.ops``) and by the ONNX Runtime custom node.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from handssca.errors import OptionError
from handssca.runtime.scan import _selective_scan_cpu as _kernel
from handssca.runtime.scan.node import scan_shapes

__all__ = ["ScanGrads", "arithmetic_floor", "kernel_info", "selective_scan_backward", "selective_scan_forward"]


@dataclass
class ScanGrads:
    """Gradients of a selective scan; None where the input was not given."""

    du: np.ndarray
    ddelta: np.ndarray
    dA: np.ndarray
    dB: np.ndarray
    dC: np.ndarray
    dD: np.ndarray | None
    dz: np.ndarray | None
    ddelta_bias: np.ndarray | None


def kernel_info() -> dict:
    """Instruction set the kernel's vector loops use on this CPU, and its thread count."""
    return dict(_kernel.build_info())


def arithmetic_floor(channels: int, length: int, num_threads: int = 0) -> None:
    """Runs the forward's exp + recurrence arithmetic for ``channels`` x ``length`` steps (N = 16)
    on buffers that stay in L1: no memory traffic, transposes or softplus. Timing it beside
    ``selective_scan_forward`` on the same machine shows how far the kernel is from its floor."""
    _kernel.floor(int(channels), int(length), int(num_threads))


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _check(name: str, x, shape: tuple[int, ...]) -> None:
    if not isinstance(x, np.ndarray):
        raise OptionError(f"selective_scan: {name} must be a numpy array, got {type(x).__name__}")
    if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
        raise OptionError(f"selective_scan: {name} must be a floating-point array, got {x.dtype}")
    if tuple(x.shape) != shape:
        raise OptionError(f"selective_scan: {name} has shape {tuple(x.shape)}, expected {shape}")


def _validate(u, delta, A, B, C, D, z, delta_bias) -> tuple[int, int, int, int, int]:
    for name, x in {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}.items():
        if x is None and name in ("D", "z", "delta_bias"):
            continue
        if not isinstance(x, np.ndarray):
            raise OptionError(f"selective_scan: {name} must be a numpy array, got {type(x).__name__}")
        if x.dtype.kind != "f" and x.dtype.name != "bfloat16":
            raise OptionError(f"selective_scan: {name} must be a floating-point array, got {x.dtype}")
    return scan_shapes(u, delta, A, B, C, D, z, delta_bias)


def _prepared(x, dtype):
    return None if x is None else np.ascontiguousarray(x, dtype=dtype)


def selective_scan_forward(
    u: np.ndarray,
    delta: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    C: np.ndarray,
    D: np.ndarray | None = None,
    z: np.ndarray | None = None,
    delta_bias: np.ndarray | None = None,
    delta_softplus: bool = False,
    num_threads: int = 0,
) -> np.ndarray:
    """Selective scan output, shape (batch, dim, L), in u's dtype.

    ``num_threads=0`` uses the OpenMP default (all cores, or OMP_NUM_THREADS).
    """
    batch, dim, L, N, G = _validate(u, delta, A, B, C, D, z, delta_bias)
    ct = _compute_dtype(u.dtype)
    args = [_prepared(x, ct) for x in (u, delta, A, B, C, D, z, delta_bias)]
    out = np.empty((batch, dim, L), dtype=ct)
    _kernel.forward(*args, out, batch, dim, L, N, G, bool(delta_softplus), int(num_threads))
    return out if out.dtype == u.dtype else out.astype(u.dtype)


def selective_scan_backward(
    dout: np.ndarray,
    u: np.ndarray,
    delta: np.ndarray,
    A: np.ndarray,
    B: np.ndarray,
    C: np.ndarray,
    D: np.ndarray | None = None,
    z: np.ndarray | None = None,
    delta_bias: np.ndarray | None = None,
    delta_softplus: bool = False,
    num_threads: int = 0,
) -> ScanGrads:
    """Gradients of sum(dout * selective_scan_forward(...)) w.r.t. every input.

    Each gradient has its input's shape and the compute dtype (float32, or float64 for
    float64 inputs). Nothing is saved between forward and backward: the states are recomputed.
    """
    batch, dim, L, N, G = _validate(u, delta, A, B, C, D, z, delta_bias)
    _check("dout", dout, (batch, dim, L))
    ct = _compute_dtype(u.dtype)
    args = [_prepared(x, ct) for x in (u, delta, A, B, C, D, z, delta_bias, dout)]
    grads = ScanGrads(
        du=np.empty((batch, dim, L), ct),
        ddelta=np.empty((batch, dim, L), ct),
        dA=np.empty((dim, N), ct),
        dB=np.empty((batch, G, N, L), ct),
        dC=np.empty((batch, G, N, L), ct),
        dD=None if D is None else np.empty((dim,), ct),
        dz=None if z is None else np.empty((batch, dim, L), ct),
        ddelta_bias=None if delta_bias is None else np.empty((dim,), ct),
    )
    _kernel.backward(
        *args,
        grads.du,
        grads.ddelta,
        grads.dA,
        grads.dB,
        grads.dC,
        grads.dD,
        grads.ddelta_bias,
        grads.dz,
        batch,
        dim,
        L,
        N,
        G,
        bool(delta_softplus),
        int(num_threads),
    )
    return grads
