// The selective scan forward on CUDA: one block per (channel, batch), the sequence in chunks.
//
// The recurrence h_l = a_l h_{l-1} + b_l is a composition of affine maps, which is associative:
// (a1, b1) o (a0, b0) = (a1 a0, a1 b0 + b1). Each thread composes the maps of its kItems
// consecutive steps, the block scans those per-thread maps (warp shuffles, then across warps
// through shared memory), and each thread replays its steps from the state its prefix gives.
// The state at the end of a chunk carries into the next, so any length works with a fixed block.
// One state index n at a time: N up to kMaxScanStates costs only the carry array in shared memory.
// Math in fp32 (exp2f with A scaled by log2 e), whatever the input dtype, as in mamba-ssm.
//
// Why it is laid out this way (mamba-ssm's selective_scan_fwd_kernel.cuh is the model):
// * Block shape by length (launchTyped below): up to 16 consecutive steps per thread, and only as
//   many threads as the sequence needs, so short scans do not pay for idle lanes in every shuffle
//   and barrier, and long scans take few chunks (the block scan is paid once per chunk and state).
// * One block barrier per state and chunk: warp totals and the carry are double-buffered in
//   shared memory, so a buffer is rewritten only after the next barrier, when every thread has
//   read it. The carry is the chunk's total map applied to the incoming state, which every
//   thread can form from the warp totals it reads anyway; thread 0 stores it.
// * Loads of u, delta, B, C and stores of y are 16-byte vectors when a thread's steps are
//   aligned and in range (scalar otherwise), and B/C of the next state are fetched before this
//   state's shuffles and barrier, so their latency hides behind the scan.
// * Enough blocks when batch x dim is small (the model's channel scan: 128 at batch 1, fewer than
//   an H100's 132 SMs): a long sequence is cut into segments, one block each (planSelectiveScan).
//   A first pass gives each segment's total map per state in closed form, with no scan: the
//   decays multiply to exp2(A' sum dt), and the offset is sum_l exp2(A' * (dt after l)) dt_l u_l B_l,
//   one reduction per state. The scan pass starts each segment from the totals before it.
#include "selectiveScanKernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstring>

namespace handssca
{
namespace
{

constexpr float kLog2e = 1.4426950408889634F;
constexpr unsigned kFullMask = 0xffffffffU;
constexpr int kWarpSize = 32;

template <typename T>
__device__ __forceinline__ float toFloat(T value);
template <>
__device__ __forceinline__ float toFloat<float>(float value)
{
    return value;
}
template <>
__device__ __forceinline__ float toFloat<__half>(__half value)
{
    return __half2float(value);
}
template <>
__device__ __forceinline__ float toFloat<__nv_bfloat16>(__nv_bfloat16 value)
{
    return __bfloat162float(value);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float value);
template <>
__device__ __forceinline__ float fromFloat<float>(float value)
{
    return value;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float value)
{
    return __float2half_rn(value);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float value)
{
    return __float2bfloat16_rn(value);
}

// The affine map h -> a h + b of one or more steps.
struct AffineMap
{
    float a;
    float b;
};

// ``later`` applied after ``earlier``.
__device__ __forceinline__ AffineMap compose(AffineMap later, AffineMap earlier)
{
    return {later.a * earlier.a, fmaf(later.a, earlier.b, later.b)};
}

// torch.nn.functional.softplus with its default threshold of 20.
__device__ __forceinline__ float softplus(float x)
{
    return x <= 20.F ? log1pf(expf(x)) : x;
}

// kItems consecutive values from row[first...] as floats; zeros past ``length``. A whole,
// 16-byte aligned run is read as 16-byte vectors (128-bit loads; the buffer is untyped device
// memory, read the way CUB's vectorised loads read it), and the vectors' bytes are moved into the
// typed array with memcpy: no object is read through a pointer of another type (type punning,
// which C++ leaves undefined; nvcc turns the memcpy into register moves).
template <int kItems, typename T>
__device__ __forceinline__ void loadItems(T const* row, int64_t first, int64_t length, float (&values)[kItems])
{
    constexpr int kBytes = kItems * static_cast<int>(sizeof(T));
    if constexpr (kBytes % 16 == 0)
    {
        T const* src = row + first;
        if (first + kItems <= length && (reinterpret_cast<uintptr_t>(src) & 15U) == 0)
        {
            uint4 const* vectors = reinterpret_cast<uint4 const*>(src);
            uint4 raw[kBytes / 16];
#pragma unroll
            for (int k = 0; k < kBytes / 16; ++k)
            {
                raw[k] = vectors[k];
            }
            T loaded[kItems];
            memcpy(loaded, raw, kBytes);
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                values[i] = toFloat(loaded[i]);
            }
            return;
        }
    }
#pragma unroll
    for (int i = 0; i < kItems; ++i)
    {
        values[i] = first + i < length ? toFloat(row[first + i]) : 0.F;
    }
}

template <int kItems, typename T>
__device__ __forceinline__ void storeItems(T* row, int64_t first, int64_t length, float const (&values)[kItems])
{
    constexpr int kBytes = kItems * static_cast<int>(sizeof(T));
    if constexpr (kBytes % 16 == 0)
    {
        T* dst = row + first;
        if (first + kItems <= length && (reinterpret_cast<uintptr_t>(dst) & 15U) == 0)
        {
            T packed[kItems];
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                packed[i] = fromFloat<T>(values[i]);
            }
            uint4 raw[kBytes / 16];  // the typed values' bytes, then 128-bit stores, as loadItems
            memcpy(raw, packed, kBytes);
            uint4* vectors = reinterpret_cast<uint4*>(dst);
#pragma unroll
            for (int k = 0; k < kBytes / 16; ++k)
            {
                vectors[k] = raw[k];
            }
            return;
        }
    }
#pragma unroll
    for (int i = 0; i < kItems; ++i)
    {
        if (first + i < length)
        {
            row[first + i] = fromFloat<T>(values[i]);
        }
    }
}

// One (batch item, channel) row of every operand.
template <typename T>
struct ScanRow
{
    T const* u;
    T const* delta;
    T* out;
    T const* B; // state n's steps at B + n * length
    T const* C;
    float const* A;
    float skip;
    float bias;

    __device__ ScanRow(SelectiveScanParams const& p, int b, int d)
    {
        int64_t const row = (static_cast<int64_t>(b) * p.dim + d) * p.length;
        int const g = d / (p.dim / p.groups);
        int64_t const group = (static_cast<int64_t>(b) * p.groups + g) * p.dstate * p.length;
        u = static_cast<T const*>(p.u) + row;
        delta = static_cast<T const*>(p.delta) + row;
        out = static_cast<T*>(p.out) + row;
        B = static_cast<T const*>(p.B) + group;
        C = static_cast<T const*>(p.C) + group;
        A = p.A + static_cast<int64_t>(d) * p.dstate;
        skip = p.D != nullptr ? p.D[d] : 0.F;
        bias = p.deltaBias != nullptr ? p.deltaBias[d] : 0.F;
    }

    // Step sizes dt (softplus'd, biased) and dt * u of kItems steps from ``first``; 0 from ``end``
    // on, which makes those steps the identity map (a = 1, b = 0). ``uOut`` gets u itself.
    template <int kItems>
    __device__ __forceinline__ void steps(int64_t first, int64_t end, bool softplusDelta, float (&dt)[kItems],
        float (&dtu)[kItems], float (&uOut)[kItems]) const
    {
        loadItems<kItems>(u, first, end, uOut);
        loadItems<kItems>(delta, first, end, dt);
#pragma unroll
        for (int i = 0; i < kItems; ++i)
        {
            float const raw = dt[i] + bias;
            dt[i] = first + i < end ? (softplusDelta ? softplus(raw) : raw) : 0.F;
            dtu[i] = dt[i] * uOut[i];
        }
    }
};

// Where this block and thread are: channel d, batch item b, segment, lane and warp, and the
// block's steps [start, end) of the sequence.
struct BlockPlace
{
    int d;
    int b;
    int segment;
    int tid;
    int lane;
    int warp;
    int64_t start;
    int64_t end;

    __device__ BlockPlace(SelectiveScanParams const& p, ScanPlan plan)
        : d(static_cast<int>(blockIdx.x))
        , b(static_cast<int>(blockIdx.y))
        , segment(static_cast<int>(blockIdx.z))
        , tid(static_cast<int>(threadIdx.x))
        , lane(tid & (kWarpSize - 1))
        , warp(tid / kWarpSize)
        , start(segment * plan.segmentLength)
        , end(start + plan.segmentLength < p.length ? start + plan.segmentLength : p.length)
    {
    }
};

__device__ __forceinline__ int64_t totalIndex(SelectiveScanParams const& p, ScanPlan plan, int b, int d, int segment)
{
    return ((static_cast<int64_t>(b) * p.dim + d) * plan.segments + segment) * p.dstate;
}

// Pass 1 when the sequence is split: each segment's total map per state (all but the last segment).
// Chunks are taken from the segment's end backwards, so the dt still to come after each step is a
// running sum plus a suffix scan within the chunk (one barrier per chunk, not per state).
template <typename T, int kThreads, int kItems>
__global__ void __launch_bounds__(kThreads)
    segmentTotalsKernel(SelectiveScanParams p, ScanPlan plan, AffineMap* totals)
{
    constexpr int kWarps = kThreads / kWarpSize;
    constexpr int kChunk = kThreads * kItems;
    BlockPlace const at(p, plan);
    int const dstate = p.dstate;
    ScanRow<T> const row(p, at.b, at.d);

    // Each at.warp sums its own row (at.lane 0 only): no atomics, and a fixed order of additions.
    __shared__ float warpPartials[kWarps][kMaxScanStates];
    __shared__ float warpDtSums[2][kWarps];
    for (int n = at.lane; n < dstate; n += kWarpSize)
    {
        warpPartials[at.warp][n] = 0.F;
    }

    float later = 0.F; // dt of the at.segment after the current chunk
    int parity = 0;
    int64_t const chunks = (at.end - at.start + kChunk - 1) / kChunk;
    for (int64_t k = chunks - 1; k >= 0; --k, parity ^= 1)
    {
        int64_t const first = at.start + k * kChunk + static_cast<int64_t>(at.tid) * kItems;
        float dt[kItems];
        float dtu[kItems];
        float uu[kItems];
        row.steps(first, at.end, p.deltaSoftplus, dt, dtu, uu);
        float mine = 0.F;
#pragma unroll
        for (int i = 0; i < kItems; ++i)
        {
            mine += dt[i];
        }
        float inclusive = mine; // dt of this at.lane and the lanes after it
#pragma unroll
        for (int offset = 1; offset < kWarpSize; offset <<= 1)
        {
            float const next = __shfl_down_sync(kFullMask, inclusive, offset);
            if (at.lane + offset < kWarpSize)
            {
                inclusive += next;
            }
        }
        float const laterLanes = __shfl_down_sync(kFullMask, inclusive, 1);
        if (at.lane == 0)
        {
            warpDtSums[parity][at.warp] = inclusive;
        }
        __syncthreads();
        float after = later + (at.lane == kWarpSize - 1 ? 0.F : laterLanes);
        float chunkSum = 0.F;
#pragma unroll
        for (int w = 0; w < kWarps; ++w)
        {
            float const sum = warpDtSums[parity][w];
            chunkSum += sum;
            after += w > at.warp ? sum : 0.F;
        }
        later += chunkSum;
        float suffix[kItems]; // dt after each step, to the at.segment's end
#pragma unroll
        for (int i = kItems - 1; i >= 0; --i)
        {
            suffix[i] = after;
            after += dt[i];
        }

        for (int n = 0; n < dstate; ++n)
        {
            float bNow[kItems];
            loadItems<kItems>(row.B + static_cast<int64_t>(n) * p.length, first, at.end, bNow);
            float const aScaled = row.A[n] * kLog2e;
            float part = 0.F;
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                part = fmaf(exp2f(suffix[i] * aScaled), dtu[i] * bNow[i], part);
            }
#pragma unroll
            for (int offset = kWarpSize / 2; offset > 0; offset >>= 1)
            {
                part += __shfl_xor_sync(kFullMask, part, offset);
            }
            if (at.lane == 0)
            {
                warpPartials[at.warp][n] += part;
            }
        }
    }
    __syncthreads();
    AffineMap* mineOut = totals + totalIndex(p, plan, at.b, at.d, at.segment);
    for (int n = at.tid; n < dstate; n += kThreads)
    {
        float sum = 0.F;
        for (int w = 0; w < kWarps; ++w)
        {
            sum += warpPartials[w][n];
        }
        mineOut[n] = AffineMap{exp2f(later * row.A[n] * kLog2e), sum};
    }
}

template <typename T, int kThreads, int kItems>
__global__ void __launch_bounds__(kThreads)
    selectiveScanKernel(SelectiveScanParams p, ScanPlan plan, AffineMap const* totals)
{
    constexpr int kWarps = kThreads / kWarpSize;
    constexpr int kChunk = kThreads * kItems;
    static_assert(kThreads % kWarpSize == 0, "whole warps only");

    BlockPlace const at(p, plan);
    int const dstate = p.dstate;
    ScanRow<T> const row(p, at.b, at.d);

    // [parity][...]: written in one round, read after its barrier, rewritten two rounds later.
    __shared__ AffineMap warpTotals[2][kWarps];
    __shared__ float carry[2][kMaxScanStates];
    for (int n = at.tid; n < dstate; n += kThreads)
    {
        // The state entering the at.segment: the totals of the segments before it, applied in order.
        float h = 0.F;
        for (int s = 0; s < at.segment; ++s)
        {
            AffineMap const total = totals[totalIndex(p, plan, at.b, at.d, s) + n];
            h = fmaf(total.a, h, total.b);
        }
        carry[0][n] = h;
    }
    __syncthreads();

    int round = 0;
    int parity = 0;
    for (int64_t start = at.start; start < at.end; start += kChunk, parity ^= 1)
    {
        float const* carryIn = carry[parity];
        float* carryOut = carry[parity ^ 1];
        int64_t const first = start + static_cast<int64_t>(at.tid) * kItems;

        float dt[kItems];
        float dtu[kItems];
        float y[kItems];
        row.steps(first, at.end, p.deltaSoftplus, dt, dtu, y);
#pragma unroll
        for (int i = 0; i < kItems; ++i)
        {
            y[i] *= row.skip; // the skip term D u first, so u need not stay in registers
        }

        float bNext[kItems];
        loadItems<kItems>(row.B, first, at.end, bNext);
        for (int n = 0; n < dstate; ++n, ++round)
        {
            float bNow[kItems];
            float cNow[kItems];
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                bNow[i] = bNext[i];
            }
            loadItems<kItems>(row.C + static_cast<int64_t>(n) * p.length, first, at.end, cNow);
            if (n + 1 < dstate)
            {
                loadItems<kItems>(row.B + static_cast<int64_t>(n + 1) * p.length, first, at.end, bNext);
            }

            float const aScaled = row.A[n] * kLog2e;
            AffineMap step[kItems];
            AffineMap mine{1.F, 0.F};
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                step[i] = AffineMap{exp2f(dt[i] * aScaled), dtu[i] * bNow[i]};
                mine = compose(step[i], mine);
            }

            AffineMap inclusive = mine;
#pragma unroll
            for (int offset = 1; offset < kWarpSize; offset <<= 1)
            {
                float const a = __shfl_up_sync(kFullMask, inclusive.a, offset);
                float const bb = __shfl_up_sync(kFullMask, inclusive.b, offset);
                if (at.lane >= offset)
                {
                    inclusive = compose(inclusive, AffineMap{a, bb});
                }
            }
            float const ea = __shfl_up_sync(kFullMask, inclusive.a, 1);
            float const eb = __shfl_up_sync(kFullMask, inclusive.b, 1);
            AffineMap const exclusive = at.lane == 0 ? AffineMap{1.F, 0.F} : AffineMap{ea, eb};

            AffineMap* totals = warpTotals[round & 1];
            if (at.lane == kWarpSize - 1)
            {
                totals[at.warp] = inclusive;
            }
            __syncthreads();

            AffineMap before{1.F, 0.F};
            AffineMap chunkTotal{1.F, 0.F};
#pragma unroll
            for (int w = 0; w < kWarps; ++w)
            {
                if (w == at.warp)
                {
                    before = chunkTotal;
                }
                chunkTotal = compose(totals[w], chunkTotal);
            }
            float const entering = carryIn[n];
            AffineMap const prefix = compose(exclusive, before);
            float h = fmaf(prefix.a, entering, prefix.b);
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                h = fmaf(step[i].a, h, step[i].b);
                y[i] = fmaf(h, cNow[i], y[i]);
            }
            if (at.tid == 0)
            {
                carryOut[n] = fmaf(chunkTotal.a, entering, chunkTotal.b);
            }
        }

        storeItems<kItems>(row.out, first, at.end, y);
    }
}

template <typename T, int kThreads, int kItems>
cudaError_t launchShaped(SelectiveScanParams const& params, ScanPlan plan, AffineMap* totals, cudaStream_t stream)
{
    auto const batch = static_cast<unsigned>(params.batch);
    auto const dim = static_cast<unsigned>(params.dim);
    auto const segments = static_cast<unsigned>(plan.segments);
    if (segments > 1)
    {
        segmentTotalsKernel<T, kThreads, kItems><<<dim3(dim, batch, segments - 1), kThreads, 0, stream>>>(
            params, plan, totals);
    }
    selectiveScanKernel<T, kThreads, kItems><<<dim3(dim, batch, segments), kThreads, 0, stream>>>(params, plan, totals);
    return cudaGetLastError();
}

// Threads x steps per thread by the length a block scans, as mamba-ssm chooses them: a short scan
// gets one warp (no idle lanes in the shuffles), a long one 16 steps per thread so that it takes
// few chunks. Past 2048 steps, 256 threads: a 4096-step chunk, and 8 warps per block for the SMs.
template <typename T>
cudaError_t launchTyped(SelectiveScanParams const& params, ScanPlan plan, AffineMap* totals, cudaStream_t stream)
{
    int64_t const length = plan.segmentLength;
    if (length <= 128)
    {
        return launchShaped<T, 32, 4>(params, plan, totals, stream);
    }
    if (length <= 256)
    {
        return launchShaped<T, 32, 8>(params, plan, totals, stream);
    }
    if (length <= 512)
    {
        return launchShaped<T, 32, 16>(params, plan, totals, stream);
    }
    if (length <= 1024)
    {
        return launchShaped<T, 64, 16>(params, plan, totals, stream);
    }
    if (length <= 2048)
    {
        return launchShaped<T, 128, 16>(params, plan, totals, stream);
    }
    return launchShaped<T, 256, 16>(params, plan, totals, stream);
}

// Blocks wanted in flight: about 4 per SM on the largest GPUs (132 SMs on an H100), a constant so
// that the plan, and the workspace TensorRT reserves for it, do not depend on the GPU.
constexpr int64_t kTargetBlocks = 512;
// A segment is at least this long, so the totals pass stays small next to the scan itself.
constexpr int64_t kMinSegmentSteps = 1024;

} // namespace

ScanPlan planSelectiveScan(int32_t batch, int32_t dim, int32_t length, int32_t segments)
{
    ScanPlan plan;
    plan.segmentLength = length;
    int64_t const rows = static_cast<int64_t>(batch) * dim;
    if (rows <= 0 || length <= 0)
    {
        return plan;
    }
    int64_t wanted = segments;
    if (wanted <= 0)
    {
        wanted = rows >= kTargetBlocks ? 1 : std::min<int64_t>((kTargetBlocks + rows - 1) / rows, length / kMinSegmentSteps);
    }
    if (wanted < 2)
    {
        return plan;
    }
    // Whole 256-step pieces, so that a segment's chunks stay aligned for vector loads.
    int64_t const piece = 256;
    plan.segmentLength = ((length + wanted - 1) / wanted + piece - 1) / piece * piece;
    plan.segments = static_cast<int32_t>((length + plan.segmentLength - 1) / plan.segmentLength);
    return plan;
}

size_t selectiveScanWorkspaceSize(int32_t batch, int32_t dim, int32_t length, int32_t dstate, int32_t segments)
{
    ScanPlan const plan = planSelectiveScan(batch, dim, length, segments);
    if (plan.segments <= 1 || batch <= 0 || dim <= 0 || dstate <= 0)
    {
        return 0;
    }
    return static_cast<size_t>(batch) * dim * plan.segments * dstate * sizeof(AffineMap);
}

size_t selectiveScanMaxWorkspaceSize(int32_t dstate)
{
    // Splitting needs batch x dim = rows < kTargetBlocks, and then rows x segments
    // <= rows x ceil(kTargetBlocks / rows) < kTargetBlocks + rows < 2 kTargetBlocks.
    return dstate > 0 ? static_cast<size_t>(2 * kTargetBlocks) * dstate * sizeof(AffineMap) : 0;
}

cudaError_t launchSelectiveScan(
    SelectiveScanParams const& params, void* workspace, cudaStream_t stream, int32_t segments)
{
    bool const sizesOk = params.batch > 0 && params.batch <= 65535 && params.dim > 0 && params.length > 0
        && params.dstate > 0 && params.dstate <= kMaxScanStates && params.groups > 0
        && params.dim % params.groups == 0;
    bool const pointersOk = params.u != nullptr && params.delta != nullptr && params.A != nullptr
        && params.B != nullptr && params.C != nullptr && params.out != nullptr;
    if (!sizesOk || !pointersOk)
    {
        return cudaErrorInvalidValue;
    }
    ScanPlan const plan = planSelectiveScan(params.batch, params.dim, params.length, segments);
    auto* totals = static_cast<AffineMap*>(workspace);
    if (plan.segments > 1 && (totals == nullptr || reinterpret_cast<uintptr_t>(totals) % alignof(AffineMap) != 0))
    {
        return cudaErrorInvalidValue;
    }
    switch (params.dtype)
    {
    case ScanDataType::kFLOAT32: return launchTyped<float>(params, plan, totals, stream);
    case ScanDataType::kFLOAT16: return launchTyped<__half>(params, plan, totals, stream);
    case ScanDataType::kBFLOAT16: return launchTyped<__nv_bfloat16>(params, plan, totals, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace handssca

#ifndef HANDSSCA_CUDA_ARCHITECTURES
#define HANDSSCA_CUDA_ARCHITECTURES "unknown"
#endif

extern "C" char const* handsscaSelectiveScanArchitectures()
{
    return HANDSSCA_CUDA_ARCHITECTURES;
}

extern "C" int32_t handsscaSelectiveScanForward(int32_t batch, int32_t dim, int32_t length, int32_t dstate,
    int32_t groups, int32_t deltaSoftplus, int32_t dtype, void const* u, void const* delta, float const* A,
    void const* B, void const* C, float const* D, float const* deltaBias, void* out, void* workspace, int32_t segments, void* stream)
{
    if (dtype < 0 || dtype > 2)
    {
        return static_cast<int32_t>(cudaErrorInvalidValue);
    }
    handssca::SelectiveScanParams params;
    params.batch = batch;
    params.dim = dim;
    params.length = length;
    params.dstate = dstate;
    params.groups = groups;
    params.deltaSoftplus = deltaSoftplus != 0;
    params.dtype = static_cast<handssca::ScanDataType>(dtype);
    params.u = u;
    params.delta = delta;
    params.A = A;
    params.B = B;
    params.C = C;
    params.D = D;
    params.deltaBias = deltaBias;
    params.out = out;
    return static_cast<int32_t>(handssca::launchSelectiveScan(params, workspace, static_cast<cudaStream_t>(stream), segments));
}

extern "C" uint64_t handsscaSelectiveScanWorkspaceSize(
    int32_t batch, int32_t dim, int32_t length, int32_t dstate, int32_t segments)
{
    return handssca::selectiveScanWorkspaceSize(batch, dim, length, dstate, segments);
}
