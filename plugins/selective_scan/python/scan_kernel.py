"""ctypes binding of the CUDA selective-scan kernel library (libhandssca_selective_scan_kernel.so),
for tests and benchmarks on torch CUDA tensors. Not imported by the package."""

from __future__ import annotations

import ctypes
from pathlib import Path

DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}


class ScanKernel:
    def __init__(self, library: str | Path):
        self.library = ctypes.CDLL(str(library))
        fn = self.library.handsscaSelectiveScanForward
        fn.restype = ctypes.c_int32
        fn.argtypes = [ctypes.c_int32] * 7 + [ctypes.c_void_p] * 9
        self._fn = fn

    def __call__(self, u, delta, A, B, C, D, delta_bias, delta_softplus: bool = True):
        """torch CUDA tensors as handssca.ops.selective_scan_ref takes them (B, C grouped, no z)."""
        import torch

        batch, dim, length = u.shape
        groups, dstate = B.shape[1], A.shape[1]
        tensors = [t.contiguous() for t in (u, delta, B, C)]
        floats = [None if t is None else t.contiguous().float() for t in (A, D, delta_bias)]
        out = torch.empty_like(tensors[0])
        stream = torch.cuda.current_stream(u.device).cuda_stream
        status = self._fn(
            batch,
            dim,
            length,
            dstate,
            groups,
            int(delta_softplus),
            DTYPE_CODES[str(u.dtype).replace("torch.", "")],
            tensors[0].data_ptr(),
            tensors[1].data_ptr(),
            floats[0].data_ptr(),
            tensors[2].data_ptr(),
            tensors[3].data_ptr(),
            0 if floats[1] is None else floats[1].data_ptr(),
            0 if floats[2] is None else floats[2].data_ptr(),
            out.data_ptr(),
            stream,
        )
        if status != 0:
            raise RuntimeError(f"handsscaSelectiveScanForward failed with cudaError {status}")
        return out
