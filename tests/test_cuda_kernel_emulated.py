"""The CUDA scan kernel's real source, run on this CPU under the CUDA emulation (tests/cuda_emulation).

plugins/selective_scan/selectiveScanKernel.cu is compiled with g++, changed in nothing but its
``<<<>>>`` launch, and called through its own C entry point on guard-paged buffers, against the
float64 reference: odd lengths around the block shapes' edges, N in {1, 16, 256}, 1 or 4 groups
with several channels each, batch 1 and 2, fp32/fp16/bf16, softplus on and off, null D and
delta_bias, and thread schedules that include one warp held back a whole barrier phase.
Broken copies of the kernel (exp 1% off, the carry between chunks dropped, a barrier or a double
buffer removed) must fail, and the emulation itself is checked on small kernels with known
answers and known faults.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import torch

from handssca.scan_bench import make_scan_inputs

from emulated_cuda import KERNEL_SOURCE, build_library, reference, run_emulated

pytestmark = pytest.mark.slow  # the CUDA source compiled for the CPU emulation

TOLERANCE = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16


@pytest.fixture(scope="module")
def kernel_library(tmp_path_factory):
    return build_library(KERNEL_SOURCE.read_text(), tmp_path_factory.mktemp("emulated_kernel"))


def check_against_reference(result, inputs, dtype, softplus):
    assert result["status"] == 0, result["message"]
    expected = reference(inputs, dtype, softplus)
    scale = max(expected.abs().max().item(), 1.0)
    error = (result["out"].double() - expected).abs().max().item()
    assert error <= TOLERANCE[dtype] * scale, f"max error {error:.3g} vs scale {scale:.3g}"
    return error / scale


# batch, dim, length, N, groups, dtype, softplus, with D, with delta_bias, schedule, layout, segments
# (segments 0: the kernel's own plan, which splits long sequences of these few channels into
# segments; 1: no split, so long ones take several chunks; 3: an odd forced split).
CASES = [
    (1, 1, 1, 1, 1, F32, True, True, True, "in-order", "tail", 0),
    (2, 4, 5, 16, 4, F16, True, False, False, "reverse", "tail", 0),
    (1, 2, 511, 16, 1, BF16, False, True, True, "lagging-warp", "aligned", 0),
    (2, 8, 512, 1, 4, F32, True, True, True, "random", "aligned", 0),
    (1, 4, 513, 256, 4, F32, False, False, True, "lagging-warp", "tail", 0),
    (2, 2, 129, 1, 1, F16, False, True, True, "lagging-warp", "aligned", 0),
    (2, 4, 1500, 16, 2, F16, True, True, False, "lagging-warp", "tail", 0),
    (1, 8, 1500, 256, 4, BF16, True, True, True, "random", "aligned", 0),
    (1, 4, 2049, 16, 4, F32, True, True, True, "lagging-warp", "tail", 0),
    (1, 4, 4097, 4, 1, F16, True, True, True, "reverse", "aligned", 0),
    (1, 3, 5000, 16, 1, F32, True, False, True, "lagging-warp", "tail", 3),
    (1, 2, 5000, 4, 1, F16, False, True, True, "lagging-warp", "aligned", 1),
    (1, 2, 8192, 16, 1, F32, True, True, True, "lagging-warp", "aligned", 1),
    (2, 2, 8192, 16, 2, BF16, True, True, True, "random", "tail", 0),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-{str(c[5])[6:]}-{c[9]}-s{c[11]}")
def test_the_kernel_source_matches_the_reference_on_the_cpu(kernel_library, rng, tmp_path, case):
    batch, dim, length, dstate, groups, dtype, softplus, with_d, with_bias, schedule, layout, segments = case
    x = make_scan_inputs(
        rng, batch, dim, length, dstate, groups, with_D=with_d, with_z=False, with_bias=with_bias, softplus=softplus
    )
    if with_bias and softplus:
        x["delta_bias"][0] = 25.0  # past softplus's threshold of 20
    result = run_emulated(
        kernel_library, x, dtype, softplus, tmp_path, schedule=schedule, seed=7, layout=layout, segments=segments
    )
    check_against_reference(result, x, dtype, softplus)


def test_the_channel_scan_is_split_over_more_blocks_at_batch_1(kernel_library, rng, tmp_path):
    """L = 8192, N = 16 on 2 channels: the plan cuts the sequence into 8 segments of 1024 steps (one
    64 x 16 chunk each), a totals pass over the first 7 (one barrier per chunk and one at the end),
    and the scan pass with one barrier per state and chunk plus the one after setting the carry."""
    x = make_scan_inputs(rng, 1, 2, 8192, 16, 1, with_z=False)
    result = run_emulated(kernel_library, x, F32, True, tmp_path)
    check_against_reference(result, x, F32, True)
    launches, blocks, barriers, exchanges = result["counters"]
    assert (launches, blocks) == (2, 2 * 7 + 2 * 8)
    assert barriers == 2 * 7 * (1 + 1) + 2 * 8 * (1 + 16)
    # per thread: totals 6 shuffles per chunk + 5 per state; scan 12 per state and chunk
    assert exchanges == 2 * 7 * 64 * (6 + 5 * 16) + 2 * 8 * 64 * 16 * 12
    assert result["workspace_bytes"] == 2 * 8 * 16 * 8


def test_one_barrier_per_state_and_chunk(kernel_library, rng, tmp_path):
    """Unsplit (as at batch >= 4): 4096-step chunks (256 threads x 16 steps), one block barrier per
    state and chunk plus the one after setting the carry, 12 shuffles per state and chunk."""
    x = make_scan_inputs(rng, 1, 2, 8192, 16, 1, with_z=False)
    result = run_emulated(kernel_library, x, F32, True, tmp_path, segments=1)
    check_against_reference(result, x, F32, True)
    launches, blocks, barriers, exchanges = result["counters"]
    assert (launches, blocks) == (1, 2)
    assert barriers == blocks * (1 + 2 * 16)
    assert exchanges == blocks * 256 * 2 * 16 * 12
    assert result["workspace_bytes"] == 0


MUTATIONS = {
    "exp 1% off": ("exp2f(dt[i] * aScaled)", "1.01F * exp2f(dt[i] * aScaled)"),
    "carry dropped": ("float const entering = carryIn[n];", "float const entering = 0.F;"),
    "warp totals single-buffered": ("warpTotals[round & 1]", "warpTotals[0]"),
    "carry single-buffered": ("float* carryOut = carry[parity ^ 1];", "float* carryOut = carry[parity];"),
    "barrier removed": (
        "            __syncthreads();\n\n            AffineMap before",
        "\n            AffineMap before",
    ),
    "segment decay dropped": ("AffineMap{exp2f(later * row.A[n] * kLog2e), sum}", "AffineMap{1.F, sum}"),
    "dt suffix off by one step": ("suffix[i] = after;", "suffix[i] = after + dt[i];"),
    "dt sums single-buffered": ("warpDtSums[parity][at.warp] = inclusive;", "warpDtSums[0][at.warp] = inclusive;"),
}
# (length, segments): split by the plan (one chunk per segment), unsplit (two chunks), and two
# segments of two chunks each, so every buffer and carry of both passes is used.
MUTATION_RUNS = [(5000, 0), (5000, 1), (10000, 2)]


def slow_decay_inputs(rng, length, dim=2, dstate=4):
    """Long memory (|A| dt ~ 1e-3 per step): every step still counts thousands of steps later, so a
    wrong carry or segment total anywhere shows in the outputs (with the usual decays, a step's
    weight is ~0 after a hundred steps, and so would be a race on it)."""
    x = make_scan_inputs(rng, 1, dim, length, dstate, 1, with_z=False)
    x["A"] = x["A"] * 0.002
    return x


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_broken_kernel_fails(rng, tmp_path, mutation):
    original, broken = MUTATIONS[mutation]
    source = KERNEL_SOURCE.read_text()
    assert source.count(original) == 1, f"the kernel changed: update the '{mutation}' mutation"
    library = build_library(source.replace(original, broken), tmp_path / "build", "mutant")
    errors = []
    for length, segments in MUTATION_RUNS:
        x = slow_decay_inputs(rng, length)
        result = run_emulated(library, x, F32, True, tmp_path, schedule="lagging-warp", segments=segments)
        try:
            check_against_reference(result, x, F32, True)
        except AssertionError as exc:
            errors.append(str(exc))
    assert errors, f"the '{mutation}' mutant matches the reference on every run"


@pytest.mark.parametrize("length, segments", MUTATION_RUNS)
def test_long_memory_carries_across_chunks_and_segments(kernel_library, rng, tmp_path, length, segments):
    x = slow_decay_inputs(rng, length)
    result = run_emulated(kernel_library, x, F32, True, tmp_path, schedule="lagging-warp", segments=segments)
    check_against_reference(result, x, F32, True)


def test_the_kernels_own_checks_refuse_bad_sizes(kernel_library, rng, tmp_path):
    x = make_scan_inputs(rng, 1, 3, 8, 2, 2, with_z=False)  # 3 channels do not split into 2 groups
    result = run_emulated(kernel_library, x, F32, True, tmp_path)
    assert result["status"] == 1  # cudaErrorInvalidValue, before any launch
    assert result["counters"][0] == 0


# ------------------------------------------------------------------------------------------------
# The emulation itself

PROBES = r"""
#include <cstdint>

__global__ void shuffles(int* out)
{
    int const lane = threadIdx.x & 31;
    int* mine = out + 4 * (blockIdx.x * blockDim.x + threadIdx.x);
    mine[0] = __shfl_up_sync(0xffffffffU, lane, 3);
    mine[1] = __shfl_down_sync(0xffffffffU, lane, 5);
    mine[2] = __shfl_xor_sync(0xffffffffU, lane, 7);
    mine[3] = __shfl_sync(0xffffffffU, lane, 9, 16);
}

__global__ void reverseInShared(int* out, int withBarrier)
{
    __shared__ int values[64];
    values[threadIdx.x] = static_cast<int>(threadIdx.x + 100 * blockIdx.x);
    if (withBarrier)
    {
        __syncthreads();
    }
    out[blockIdx.x * 64 + threadIdx.x] = values[63 - threadIdx.x];
}

__global__ void divergentBarrier(int* out)
{
    if (threadIdx.x < 16)
    {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

__global__ void mismatchedShuffles(int* out)
{
    int value = threadIdx.x;
    value = threadIdx.x % 2 ? __shfl_up_sync(0xffffffffU, value, 1) : __shfl_down_sync(0xffffffffU, value, 1);
    out[threadIdx.x] = value;
}

extern "C" int probe(int which, int* out, int threads, int blocksY)
{
    dim3 const grid(2, blocksY);
    switch (which)
    {
    case 0: shuffles<<<grid, threads>>>(out); break;
    case 1: reverseInShared<<<grid, threads>>>(out, 1); break;
    case 2: reverseInShared<<<grid, threads>>>(out, 0); break;
    case 3: divergentBarrier<<<grid, threads>>>(out); break;
    default: mismatchedShuffles<<<grid, threads>>>(out); break;
    }
    return static_cast<int>(cudaGetLastError());
}
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    library = ctypes.CDLL(str(build_library(PROBES, tmp_path_factory.mktemp("probes"), "probes")))
    library.probe.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    library.cuda_emu_last_message.restype = ctypes.c_char_p
    library.cuda_emu_configure.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_ulonglong]

    def run(which, threads=64, blocks_y=1, schedule=0):
        library.cuda_emu_configure(schedule, -1, 1)
        out = np.zeros(2 * 64 * 4, np.int32)
        status = library.probe(which, out.ctypes.data, threads, blocks_y)
        return status, library.cuda_emu_last_message().decode(), out

    return run


def test_warp_shuffles_follow_cuda(probes):
    status, message, out = probes(0)
    assert status == 0, message
    lane = np.arange(64) % 32
    got = out[: 64 * 4].reshape(64, 4)
    np.testing.assert_array_equal(got[:, 0], np.where(lane >= 3, lane - 3, lane))
    np.testing.assert_array_equal(got[:, 1], np.where(lane + 5 < 32, lane + 5, lane))
    np.testing.assert_array_equal(got[:, 2], lane ^ 7)
    np.testing.assert_array_equal(got[:, 3], (lane & ~15) + 9)


def test_shared_memory_is_per_block_and_a_missing_barrier_shows(probes):
    status, message, out = probes(1)
    assert status == 0, message
    expected = (63 - np.arange(64))[None, :] + 100 * np.arange(2)[:, None]
    np.testing.assert_array_equal(out[:128].reshape(2, 64), expected)
    _, _, racy = probes(2, schedule=3)  # warp 1 held back: warp 0 reads what it has not written
    assert not np.array_equal(racy[:128].reshape(2, 64), expected)


def test_broken_synchronisation_and_launch_limits_fail_the_launch(probes):
    status, message, _ = probes(3)
    assert status == 719 and "exited while" in message  # cudaErrorLaunchFailure
    status, message, _ = probes(4)
    assert status == 719 and "different warp-synchronous call" in message
    status, message, _ = probes(0, threads=1025)
    assert status == 9 and "at most 1024" in message  # cudaErrorInvalidConfiguration
    status, message, _ = probes(0, blocks_y=65536)
    assert status == 9 and "65535" in message
    assert probes(0)[0] == 0  # and the next launch is clean


def test_the_vector_path_keeps_its_128_bit_global_accesses(tmp_path):
    """loadItems/storeItems move bytes between the 16-byte vectors and the typed arrays with
    memcpy (no type punning); the PTX nvcc makes of them must still hold 128-bit global loads and
    stores, for float32 and for the 16-bit types (.u32 lanes), next to the scalar tails."""
    import re
    import shutil
    import subprocess

    if shutil.which("nvcc") is None:
        pytest.skip("nvcc is not installed")
    ptx = tmp_path / "kernel.ptx"
    command = ["nvcc", "-std=c++17", "-O3", "-arch=sm_90", "-ptx", "-Xcompiler=-Wall,-Wextra,-Wstrict-aliasing",
               "-I", str(KERNEL_SOURCE.parent), str(KERNEL_SOURCE), "-o", str(ptx)]  # fmt: skip
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "strict-aliasing" not in built.stderr, built.stderr[-3000:]
    text = ptx.read_text()
    for pattern in (r"ld\.global(\.nc)?\.v4\.f32", r"ld\.global(\.nc)?\.v4\.u32", r"st\.global\.v4\.f32",
                    r"st\.global\.v4\.u32"):  # fmt: skip
        assert re.search(pattern, text), pattern
    assert not re.search(r"ld\.global(\.nc)?\.u8", text)  # no byte-wise copies of the vectors
