"""The selective scan (Mamba S6) as one torch op with several implementations.

``selective_scan_ref`` is the reference: mamba-ssm's ``selective_scan_ref`` semantics, written
here so the project owns it. Every fast implementation is tested against it.

``selective_scan`` calls the registered op ``torch.ops.handssca.selective_scan``, which
torch.export and the ONNX exporter see as a single node. Its implementation is picked per call:

* ``cpu-kernel``: the compiled, torch-free kernel of ``handssca.runtime`` (forward and backward);
* ``mamba-ssm``: mamba-ssm's CUDA kernel, for CUDA tensors when mamba-ssm is installed;
* ``cuda-kernel``: our TensorRT plugin's CUDA kernel (``cuda_kernel.py``, forward only), for
  CUDA tensors when ``$HANDSSCA_CUDA_KERNEL`` names its library;
* ``reference``: ``selective_scan_ref`` (any device; the CUDA fallback).

``scan_backend(device)`` says which one runs; ``use_scan_backend(name)`` or the environment
variable ``HANDSSCA_SCAN_BACKEND`` forces one.

Precision: the math runs in float32 for float16/bfloat16/float32 inputs and the output is cast
back to u's dtype, as in mamba-ssm. Unlike mamba-ssm's reference, float64 inputs are computed in
float64 (so gradcheck is meaningful); compare against mamba-ssm in float32.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from handssca.errors import MissingBackend, OptionError
from handssca.runtime.scan.node import scan_shapes

BACKENDS = ("cpu-kernel", "mamba-ssm", "cuda-kernel", "reference")
_ENV_VAR = "HANDSSCA_SCAN_BACKEND"
_forced_backend: str | None = None


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Reference selective scan, differentiable by autograd.

    u, delta, z: (batch, dim, L); A: (dim, N); B, C: (batch, G, N, L) or (batch, N, L);
    D, delta_bias: (dim,). Returns out (batch, dim, L) in u's dtype, and the last state
    (batch, dim, N) when ``return_last_state``.
    """
    dtype_in = u.dtype
    ct = torch.float64 if dtype_in == torch.float64 else torch.float32
    u = u.to(ct)
    delta = delta.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].to(ct)
    if delta_softplus:
        delta = F.softplus(delta)  # threshold 20: x > 20 stays x
    batch, dim, L = u.shape
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    groups = B.shape[1]
    # Channel d reads group d // (dim // G).
    B = B.to(ct).repeat_interleave(dim // groups, dim=1)  # (batch, dim, N, L)
    C = C.to(ct).repeat_interleave(dim // C.shape[1], dim=1)
    A = A.to(ct)
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    x = u.new_zeros((batch, dim, A.shape[1]))
    ys = []
    for i in range(L):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bdn->bd", x, C[:, :, :, i]))
    out = torch.stack(ys, dim=2)
    if D is not None:
        out = out + u * D.to(ct)[:, None]
    if z is not None:
        out = out * F.silu(z.to(ct))
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


# ----------------------------------------------------------------------------------------------
# Backend selection


def _cpu_kernel_available() -> bool:
    try:
        from handssca.runtime.scan import kernel as _  # noqa: F401
    except ImportError:
        return False
    return True


def _mamba_available() -> bool:
    if importlib.util.find_spec("mamba_ssm") is None:
        return False
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn  # noqa: F401
    except Exception:  # mamba-ssm without its compiled extension fails in many ways
        return False
    return True


def _cuda_kernel_available() -> bool:
    """Our CUDA kernel library, when $HANDSSCA_CUDA_KERNEL names one that loads."""
    from handssca.errors import MissingBackend

    from .cuda_kernel import cuda_kernel_from_env

    try:
        return cuda_kernel_from_env() is not None
    except MissingBackend:
        return False


def available_backends(device: torch.device | str) -> list[str]:
    """Implementations that can run on ``device``, fastest first (mamba-ssm's kernel before ours,
    whose speed is measured by the benchmarks, not assumed)."""
    device = torch.device(device)
    names = []
    if device.type == "cpu" and _cpu_kernel_available():
        names.append("cpu-kernel")
    if device.type == "cuda" and _mamba_available():
        names.append("mamba-ssm")
    if device.type == "cuda" and _cuda_kernel_available():
        names.append("cuda-kernel")
    names.append("reference")
    return names


def scan_backend(device: torch.device | str) -> str:
    """The implementation a scan on ``device`` runs with now."""
    forced = _forced_backend or os.environ.get(_ENV_VAR, "auto").strip() or "auto"
    available = available_backends(device)
    if forced == "auto":
        return available[0]
    if forced not in BACKENDS:
        raise OptionError(f"{_ENV_VAR}={forced!r}: expected 'auto' or one of {', '.join(BACKENDS)}")
    if forced == "cuda-kernel" and torch.device(device).type == "cuda" and forced not in available:
        from .cuda_kernel import require_cuda_kernel

        require_cuda_kernel()  # raises the precise reason (unset, missing or unloadable library)
    if forced not in available:
        raise MissingBackend(
            f"selective-scan backend {forced!r} is not available on {torch.device(device)} "
            f"(available: {', '.join(available)})"
        )
    return forced


def describe_scan_backend(device: torch.device | str) -> str:
    """A one-line description of the implementation picked for ``device``."""
    name = scan_backend(device)
    if name == "cpu-kernel":
        from handssca.runtime import kernel_info

        info = kernel_info()
        threads = torch.get_num_threads()
        omp = "OpenMP" if info["openmp"] else "single-threaded"
        return f"cpu-kernel (handssca.runtime, {info['isa']}, {omp}, {threads} threads)"
    if name == "mamba-ssm":
        import mamba_ssm

        return f"mamba-ssm {getattr(mamba_ssm, '__version__', '?')} CUDA kernel"
    if name == "cuda-kernel":
        from .cuda_kernel import require_cuda_kernel

        return f"cuda-kernel (our plugin's kernel, {require_cuda_kernel().path})"
    return "reference (handssca.ops.selective_scan_ref)"


@contextlib.contextmanager
def use_scan_backend(name: str) -> Iterator[None]:
    """Force one implementation inside the block ('auto' restores the automatic choice)."""
    global _forced_backend
    if name != "auto" and name not in BACKENDS:
        raise OptionError(f"unknown selective-scan backend {name!r}; expected 'auto' or {BACKENDS}")
    previous = _forced_backend
    _forced_backend = None if name == "auto" else name
    try:
        yield
    finally:
        _forced_backend = previous


# ----------------------------------------------------------------------------------------------
# The registered op


def _to_numpy(t: Tensor | None, dtype: torch.dtype):
    return None if t is None else t.detach().to(dtype).contiguous().numpy()


def _compute_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _mamba_fn():
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn


@torch.library.custom_op("handssca::selective_scan", mutates_args=())
def _selective_scan_op(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> Tensor:
    backend = scan_backend(u.device)
    if backend == "cpu-kernel":
        from handssca.runtime import selective_scan_forward

        ct = _compute_dtype(u)
        arrays = [_to_numpy(t, ct) for t in (u, delta, A, B, C, D, z, delta_bias)]
        out = selective_scan_forward(*arrays, delta_softplus=delta_softplus, num_threads=torch.get_num_threads())
        return torch.from_numpy(out).to(u.dtype)
    if backend == "mamba-ssm":
        return _mamba_fn()(u, delta, A, B, C, D, z, delta_bias, delta_softplus).to(u.dtype)
    if backend == "cuda-kernel":
        from .cuda_kernel import cuda_kernel_forward, kernel_supports

        if kernel_supports(u, A, B, C):
            return cuda_kernel_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus)


@_selective_scan_op.register_fake
def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return torch.empty_like(u)


@torch.library.custom_op("handssca::selective_scan_backward", mutates_args=())
def _selective_scan_backward_op(
    dout: Tensor,
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> list[Tensor]:
    """Returns [du, ddelta, dA, dB, dC, dD, dz, ddelta_bias]; an empty tensor for a missing input."""
    backend = scan_backend(u.device)
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if backend == "cpu-kernel":
        from handssca.runtime import selective_scan_backward

        ct = _compute_dtype(u)
        arrays = [_to_numpy(t, ct) for t in inputs]
        g = selective_scan_backward(
            _to_numpy(dout, ct),
            *arrays,
            delta_softplus=delta_softplus,
            num_threads=torch.get_num_threads(),
        )
        grads = [g.du, g.ddelta, g.dA, g.dB, g.dC, g.dD, g.dz, g.ddelta_bias]
        grads = [None if a is None else torch.from_numpy(a) for a in grads]
    else:
        # Recompute the forward with autograd: the reference has no hand-written backward, and
        # mamba-ssm's interface changes between releases while its autograd function does not.
        fn = _mamba_fn() if backend == "mamba-ssm" else selective_scan_ref
        with torch.enable_grad():
            leaves = [None if t is None else t.detach().requires_grad_(True) for t in inputs]
            out = fn(*leaves, delta_softplus=delta_softplus)
            wanted = [t for t in leaves if t is not None]
            found = iter(torch.autograd.grad(out, wanted, dout, allow_unused=True))
            grads = [None if t is None else next(found) for t in leaves]
    result = []
    for grad, t in zip(grads, inputs, strict=True):
        if t is None:
            result.append(u.new_empty(0))
        elif grad is None:
            result.append(torch.zeros_like(t))
        else:
            result.append(grad.to(device=t.device, dtype=t.dtype).reshape(t.shape))
    return result


@_selective_scan_backward_op.register_fake
def _(dout, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return [torch.empty_like(t) if t is not None else u.new_empty(0) for t in (u, delta, A, B, C, D, z, delta_bias)]


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
    ctx.delta_softplus = delta_softplus


def _backward(ctx, dout):
    u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
    grads = _selective_scan_backward_op(dout.contiguous(), u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus)
    present = (u, delta, A, B, C, D, z, delta_bias)
    return (*[g if t is not None else None for g, t in zip(grads, present, strict=True)], None)


_selective_scan_op.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
) -> Tensor:
    """Selective scan through the registered op; same arguments as ``selective_scan_ref``."""
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    scan_shapes(u, delta, A, B, C, D, z, delta_bias)
    return torch.ops.handssca.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
