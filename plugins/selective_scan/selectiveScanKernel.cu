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
// * Block shape by length (ScanShape below): up to 16 consecutive steps per thread, and only as
//   many threads as the sequence needs, so short scans do not pay for idle lanes in every shuffle
//   and barrier, and long scans take few chunks (the block scan is paid once per chunk and state).
// * One block barrier per state and chunk: warp totals and the carry are double-buffered in
//   shared memory, so a buffer is rewritten only after the next barrier, when every thread has
//   read it. The carry is the chunk's total map applied to the incoming state, which every
//   thread can form from the warp totals it reads anyway; thread 0 stores it.
// * Loads of u, delta, B, C and stores of y are 16-byte vectors when a thread's steps are
//   aligned and in range (scalar otherwise), and B/C of the next state are fetched before this
//   state's shuffles and barrier, so their latency hides behind the scan.
#include "selectiveScanKernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

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

// kItems consecutive values from row[first...] as floats; zeros past ``length``.
template <int kItems, typename T>
__device__ __forceinline__ void loadItems(T const* row, int64_t first, int64_t length, float (&values)[kItems])
{
    constexpr int kBytes = kItems * static_cast<int>(sizeof(T));
    if constexpr (kBytes % 16 == 0)
    {
        T const* src = row + first;
        if (first + kItems <= length && (reinterpret_cast<uintptr_t>(src) & 15U) == 0)
        {
            uint4 raw[kBytes / 16];
#pragma unroll
            for (int k = 0; k < kBytes / 16; ++k)
            {
                raw[k] = reinterpret_cast<uint4 const*>(src)[k];
            }
            T const* loaded = reinterpret_cast<T const*>(raw);
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
            uint4 raw[kBytes / 16];
            T* packed = reinterpret_cast<T*>(raw);
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                packed[i] = fromFloat<T>(values[i]);
            }
#pragma unroll
            for (int k = 0; k < kBytes / 16; ++k)
            {
                reinterpret_cast<uint4*>(dst)[k] = raw[k];
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

template <typename T, int kThreads, int kItems>
__global__ void __launch_bounds__(kThreads) selectiveScanKernel(SelectiveScanParams p)
{
    constexpr int kWarps = kThreads / kWarpSize;
    constexpr int kChunk = kThreads * kItems;
    static_assert(kThreads % kWarpSize == 0, "whole warps only");

    int const d = blockIdx.x;
    int const b = blockIdx.y;
    int const g = d / (p.dim / p.groups);
    int const tid = threadIdx.x;
    int const lane = tid & (kWarpSize - 1);
    int const warp = tid / kWarpSize;
    int64_t const length = p.length;
    int const dstate = p.dstate;

    int64_t const row = (static_cast<int64_t>(b) * p.dim + d) * length;
    T const* u = static_cast<T const*>(p.u) + row;
    T const* delta = static_cast<T const*>(p.delta) + row;
    T* out = static_cast<T*>(p.out) + row;
    int64_t const groupOffset = (static_cast<int64_t>(b) * p.groups + g) * dstate * length;
    T const* bBase = static_cast<T const*>(p.B) + groupOffset;
    T const* cBase = static_cast<T const*>(p.C) + groupOffset;
    float const* aRow = p.A + static_cast<int64_t>(d) * dstate;
    float const skip = p.D != nullptr ? p.D[d] : 0.F;
    float const bias = p.deltaBias != nullptr ? p.deltaBias[d] : 0.F;

    // [parity][...]: written in one round, read after its barrier, rewritten two rounds later.
    __shared__ AffineMap warpTotals[2][kWarps];
    __shared__ float carry[2][kMaxScanStates];
    for (int n = tid; n < dstate; n += kThreads)
    {
        carry[0][n] = 0.F;
    }
    __syncthreads();

    int round = 0;
    int parity = 0;
    for (int64_t start = 0; start < length; start += kChunk, parity ^= 1)
    {
        float const* carryIn = carry[parity];
        float* carryOut = carry[parity ^ 1];
        int64_t const first = start + static_cast<int64_t>(tid) * kItems;

        float dt[kItems];
        float dtu[kItems];
        float y[kItems];
        loadItems<kItems>(u, first, length, dtu);
        loadItems<kItems>(delta, first, length, dt);
#pragma unroll
        for (int i = 0; i < kItems; ++i)
        {
            bool const valid = first + i < length;
            float const raw = dt[i] + bias;
            // Steps past the end get dt = 0: the identity map (a = 1, b = 0), which changes
            // neither the prefixes nor the carry.
            dt[i] = valid ? (p.deltaSoftplus ? softplus(raw) : raw) : 0.F;
            y[i] = skip * dtu[i]; // the skip term D u first, so u need not stay in registers
            dtu[i] *= dt[i];
        }

        float bNext[kItems];
        loadItems<kItems>(bBase, first, length, bNext);
        for (int n = 0; n < dstate; ++n, ++round)
        {
            float bNow[kItems];
            float cNow[kItems];
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                bNow[i] = bNext[i];
            }
            loadItems<kItems>(cBase + static_cast<int64_t>(n) * length, first, length, cNow);
            if (n + 1 < dstate)
            {
                loadItems<kItems>(bBase + static_cast<int64_t>(n + 1) * length, first, length, bNext);
            }

            float const aScaled = aRow[n] * kLog2e;
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
                if (lane >= offset)
                {
                    inclusive = compose(inclusive, AffineMap{a, bb});
                }
            }
            float const ea = __shfl_up_sync(kFullMask, inclusive.a, 1);
            float const eb = __shfl_up_sync(kFullMask, inclusive.b, 1);
            AffineMap const exclusive = lane == 0 ? AffineMap{1.F, 0.F} : AffineMap{ea, eb};

            AffineMap* totals = warpTotals[round & 1];
            if (lane == kWarpSize - 1)
            {
                totals[warp] = inclusive;
            }
            __syncthreads();

            AffineMap before{1.F, 0.F};
            AffineMap chunkTotal{1.F, 0.F};
#pragma unroll
            for (int w = 0; w < kWarps; ++w)
            {
                if (w == warp)
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
            if (tid == 0)
            {
                carryOut[n] = fmaf(chunkTotal.a, entering, chunkTotal.b);
            }
        }

        storeItems<kItems>(out, first, length, y);
    }
}

template <typename T, int kThreads, int kItems>
cudaError_t launchShaped(SelectiveScanParams const& params, cudaStream_t stream)
{
    dim3 const grid(static_cast<unsigned>(params.dim), static_cast<unsigned>(params.batch));
    selectiveScanKernel<T, kThreads, kItems><<<grid, kThreads, 0, stream>>>(params);
    return cudaGetLastError();
}

// Threads x steps per thread by length, as mamba-ssm chooses them: a short scan gets one warp
// (no idle lanes in the shuffles), a long one 16 steps per thread so that it takes few chunks.
// Past 2048 steps, 256 threads: the model's channel scan (L = 8192) then takes 2 chunks instead
// of 4, and each SM gets 8 warps from the few blocks (D x batch = 128 at batch 1) it has.
template <typename T>
cudaError_t launchTyped(SelectiveScanParams const& params, cudaStream_t stream)
{
    int32_t const length = params.length;
    if (length <= 128)
    {
        return launchShaped<T, 32, 4>(params, stream);
    }
    if (length <= 256)
    {
        return launchShaped<T, 32, 8>(params, stream);
    }
    if (length <= 512)
    {
        return launchShaped<T, 32, 16>(params, stream);
    }
    if (length <= 1024)
    {
        return launchShaped<T, 64, 16>(params, stream);
    }
    if (length <= 2048)
    {
        return launchShaped<T, 128, 16>(params, stream);
    }
    return launchShaped<T, 256, 16>(params, stream);
}

} // namespace

cudaError_t launchSelectiveScan(SelectiveScanParams const& params, cudaStream_t stream)
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
    switch (params.dtype)
    {
    case ScanDataType::kFLOAT32: return launchTyped<float>(params, stream);
    case ScanDataType::kFLOAT16: return launchTyped<__half>(params, stream);
    case ScanDataType::kBFLOAT16: return launchTyped<__nv_bfloat16>(params, stream);
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
    void const* B, void const* C, float const* D, float const* deltaBias, void* out, void* stream)
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
    return static_cast<int32_t>(handssca::launchSelectiveScan(params, stream == nullptr ? nullptr : static_cast<cudaStream_t>(stream)));
}
