"""Runs the emulated CUDA scan kernel once, in its own process, on guard-paged buffers.

    python run_scan.py LIBRARY CASE.npz RESULT.npz

CASE.npz holds the kernel's arguments (u, delta, B, C as raw fp32 or 16-bit words; A, D,
delta_bias as fp32, D and delta_bias optional), the sizes, dtype code, softplus flag, segment
count (0: the kernel's own plan), the emulation's schedule and the buffer layout. The workspace
is the size the library asks for, poisoned. Every buffer sits between two PROT_NONE pages:
"tail" puts its last byte against the page after it (a read past the end faults), "aligned"
starts it on a 16-byte boundary (the kernel's vector path). A fault kills this process only,
and the test says so. numpy only: it starts fast.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np

PAGE = mmap.PAGESIZE
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
KEEP = []  # mappings stay alive until the process ends


def guarded(array: np.ndarray, layout: str) -> tuple[int, np.ndarray]:
    """A copy of ``array`` between two inaccessible pages: (address, view)."""
    raw = np.ascontiguousarray(array).view(np.uint8).ravel()
    pages = max(1, -(-raw.size // PAGE))
    region = mmap.mmap(-1, (pages + 2) * PAGE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    offset = PAGE + (pages * PAGE - raw.size if layout == "tail" else 0)
    view = np.frombuffer(region, np.uint8, raw.size, offset)
    view[:] = raw
    for page in (base, base + (pages + 1) * PAGE):
        if libc.mprotect(page, PAGE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    KEEP.append(region)
    return base + offset, view


def main(library: str, case_path: str, result_path: str) -> int:
    case = dict(np.load(case_path))
    lib = ctypes.CDLL(library)
    lib.cuda_emu_configure.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_ulonglong]
    lib.cuda_emu_last_message.restype = ctypes.c_char_p
    lib.cuda_emu_counters.argtypes = [ctypes.POINTER(ctypes.c_ulonglong)]
    forward = lib.handsscaSelectiveScanForward
    forward.restype = ctypes.c_int32
    forward.argtypes = [ctypes.c_int32] * 7 + [ctypes.c_void_p] * 9 + [ctypes.c_int32, ctypes.c_void_p]
    workspace_size = lib.handsscaSelectiveScanWorkspaceSize
    workspace_size.restype = ctypes.c_uint64
    workspace_size.argtypes = [ctypes.c_int32] * 5

    layout = str(case["layout"])
    pointers = {}
    for name in ("u", "delta", "A", "B", "C", "D", "delta_bias"):
        pointers[name] = guarded(case[name], layout)[0] if name in case else None
    out_address, out_view = guarded(np.full(case["u"].nbytes, 0xAB, np.uint8), layout)  # poisoned

    batch, dim, length = case["u"].shape
    segments = int(case["segments"])
    workspace_bytes = workspace_size(batch, dim, length, case["A"].shape[1], segments)
    workspace = guarded(np.full(workspace_bytes, 0xAB, np.uint8), "aligned")[0] if workspace_bytes else None

    lib.cuda_emu_configure(int(case["schedule"]), int(case["lagging_warp"]), int(case["seed"]))
    lib.cuda_emu_reset_counters()
    status = forward(
        batch, dim, length, case["A"].shape[1], case["B"].shape[1], int(case["softplus"]), int(case["dtype"]),
        pointers["u"], pointers["delta"], pointers["A"], pointers["B"], pointers["C"], pointers["D"],
        pointers["delta_bias"], out_address, workspace, segments, None,
    )  # fmt: skip
    counters = (ctypes.c_ulonglong * 4)()
    lib.cuda_emu_counters(counters)
    np.savez(
        result_path,
        status=status,
        message=lib.cuda_emu_last_message().decode(),
        out=out_view.view(case["u"].dtype).reshape(case["u"].shape),
        counters=np.array(list(counters), np.int64),
        workspace_bytes=workspace_bytes,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
