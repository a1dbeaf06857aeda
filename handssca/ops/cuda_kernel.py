"""Our CUDA selective-scan kernel (plugins/selective_scan) on torch CUDA tensors, through ctypes.

The kernel library is the one the TensorRT plugin is built from, without TensorRT:
``build/plugins/selective_scan/libhandssca_selective_scan_kernel.so`` after
``cmake -S plugins -B build/plugins && cmake --build build/plugins``. Point
``$HANDSSCA_CUDA_KERNEL`` at it and the op dispatcher offers the ``cuda-kernel`` backend, so
PyTorch runs the model with the very kernel TensorRT runs (forward only; gradients come from
the reference). A ctypes call rather than a torch extension: nothing to compile against torch,
and the launcher's C entry point is the only interface.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from handssca.errors import MissingBackend
from handssca.runtime.scan.node import scan_shapes

LIBRARY_ENV = "HANDSSCA_CUDA_KERNEL"
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
MAX_STATE = 256  # the kernel's limit on N (selectiveScanKernel.h)


class CudaScanKernel:
    """``CudaScanKernel(path)(u, delta, A, B, C, D, delta_bias, delta_softplus)`` -> y.

    Arguments as ``selective_scan_ref`` takes them with grouped B/C (B, G, N, L) and no z:
    u, delta (B, D, L) in fp32/fp16/bf16 (one type), A (D, N), D and delta_bias (D,) in fp32.
    Runs on torch's current stream; y has u's shape and type.
    """

    def __init__(self, library: str | Path):
        self.path = Path(library)
        if not self.path.is_file():
            raise MissingBackend(f"{self.path}: CUDA kernel library not found (build plugins/ with CMake)")
        try:
            self.library = ctypes.CDLL(str(self.path))
            fn = self.library.handsscaSelectiveScanForward
            workspace = self.library.handsscaSelectiveScanWorkspaceSize
            architectures = self.library.handsscaSelectiveScanArchitectures
        except (OSError, AttributeError) as exc:
            raise MissingBackend(
                f"{self.path}: not a loadable HandSSCA kernel library of this version ({exc}): rebuild plugins/"
            ) from exc
        fn.restype = ctypes.c_int32
        fn.argtypes = [ctypes.c_int32] * 7 + [ctypes.c_void_p] * 10 + [ctypes.c_int32, ctypes.c_void_p]
        workspace.restype = ctypes.c_uint64
        workspace.argtypes = [ctypes.c_int32] * 5
        architectures.restype = ctypes.c_char_p
        self._fn, self._workspace_size = fn, workspace
        self.architectures = architectures().decode()  # as CMake built it, e.g. "75-real,80-real,...,120"

    def __call__(
        self,
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D=None,
        delta_bias=None,
        delta_softplus: bool = True,
        segments: int = 0,
    ) -> Tensor:
        """``segments``: 0 lets the kernel decide whether to split the sequence over more blocks
        (small batch x channels); a positive count forces that many (tests, benchmarks)."""
        # Shapes and devices are checked before anything reaches the kernel: it trusts its sizes, so
        # a mismatched tensor would be read out of bounds.
        try:
            batch, dim, length, dstate, groups = scan_shapes(u, delta, A, B, C, D, None, delta_bias)
        except ValueError as exc:
            raise MissingBackend(f"{self.path}: {exc}") from exc
        named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "delta_bias": delta_bias}
        for name, tensor in named.items():
            if tensor is not None and tensor.device != u.device:
                raise MissingBackend(f"{self.path}: {name} is on {tensor.device}, u on {u.device}: one device for all")
        if u.device.type != "cuda":
            raise MissingBackend(f"{self.path}: the CUDA kernel needs CUDA tensors, got {u.device}")
        if u.dtype not in DTYPE_CODES:
            raise MissingBackend(f"{self.path}: u must be float32, float16 or bfloat16, got {u.dtype}")
        if dstate > MAX_STATE:
            raise MissingBackend(f"{self.path}: d_state {dstate} exceeds the kernel's {MAX_STATE}")
        # The launch goes to the current device: make it the tensors' (else "invalid resource handle").
        with torch.cuda.device(u.device):
            u, delta, B, C = (t.to(u.dtype).contiguous() for t in (u, delta, B, C))
            A, D, delta_bias = (None if t is None else t.float().contiguous() for t in (A, D, delta_bias))
            out = torch.empty_like(u)
            workspace_bytes = self._workspace_size(batch, dim, length, dstate, segments)
            workspace = torch.empty(workspace_bytes, dtype=torch.uint8, device=u.device) if workspace_bytes else None
            stream = torch.cuda.current_stream(u.device).cuda_stream
            status = self._fn(
                batch, dim, length, dstate, groups, int(delta_softplus), DTYPE_CODES[u.dtype],
                u.data_ptr(), delta.data_ptr(), A.data_ptr(), B.data_ptr(), C.data_ptr(),
                0 if D is None else D.data_ptr(), 0 if delta_bias is None else delta_bias.data_ptr(),
                out.data_ptr(), None if workspace is None else workspace.data_ptr(), segments, stream,
            )  # fmt: skip
        if status != 0:
            raise MissingBackend(f"{self.path}: handsscaSelectiveScanForward failed (cudaError {status})")
        return out


@functools.lru_cache(maxsize=4)
def _load(path: str) -> CudaScanKernel:
    return CudaScanKernel(path)


def cuda_kernel_from_env() -> CudaScanKernel | None:
    """The kernel named by $HANDSSCA_CUDA_KERNEL (None when unset); MissingBackend when unusable."""
    path = os.environ.get(LIBRARY_ENV, "").strip()
    return _load(path) if path else None


def require_cuda_kernel() -> CudaScanKernel:
    """The kernel named by $HANDSSCA_CUDA_KERNEL; MissingBackend saying why when there is none."""
    kernel = cuda_kernel_from_env()
    if kernel is None:
        raise MissingBackend(f"${LIBRARY_ENV} is not set: point it at libhandssca_selective_scan_kernel.so")
    return kernel


def kernel_supports(u: Tensor, A: Tensor, B: Tensor, C: Tensor) -> bool:
    """Whether the kernel takes these inputs (else the dispatcher runs the reference): CUDA,
    fp32/fp16/bf16, real A, B and C varying along the sequence, N up to 256."""
    return (
        u.device.type == "cuda"
        and u.dtype in DTYPE_CODES
        and not A.is_complex()
        and B.dim() in (3, 4)
        and C.dim() in (3, 4)
        and A.shape[1] <= MAX_STATE
    )


def cuda_kernel_forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool) -> Tensor:
    """The registered op's semantics on our kernel: mamba-ssm's z gate (y * silu(z)) applied after."""
    kernel = require_cuda_kernel()
    if B.dim() == 3:  # ungrouped (B, N, L): one group
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    y = kernel(u, delta, A, B, C, D, delta_bias, delta_softplus)
    if z is not None:
        y = (y.float() * F.silu(z.float())).to(u.dtype)
    return y
