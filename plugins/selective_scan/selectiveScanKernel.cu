// The selective scan forward on CUDA: one block per (channel, batch), the sequence in chunks.
//
// The recurrence h_l = a_l h_{l-1} + b_l is a composition of affine maps, which is associative:
// (a1, b1) o (a0, b0) = (a1 a0, a1 b0 + b1). Each thread composes the maps of its kItems
// consecutive steps, the block scans those per-thread maps (warp shuffles, then across warps
// through shared memory), and each thread replays its steps from the state its prefix gives.
// The state at the end of a chunk carries into the next, so any length works with a fixed block.
// One state index n at a time: N up to kMaxScanStates costs only the carry array in shared memory.
// Math in fp32 (exp2f with A scaled by log2 e), whatever the input dtype, as in mamba-ssm.
#include "selectiveScanKernel.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace handssca
{
namespace
{

constexpr int kThreads = 128;
constexpr int kItems = 4;
constexpr int kChunk = kThreads * kItems;
constexpr int kWarps = kThreads / 32;
constexpr float kLog2e = 1.4426950408889634F;
constexpr unsigned kFullMask = 0xffffffffU;

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

template <typename T>
__global__ void __launch_bounds__(kThreads) selectiveScanKernel(SelectiveScanParams p)
{
    int const d = blockIdx.x;
    int const b = blockIdx.y;
    int const g = d / (p.dim / p.groups);
    int const tid = threadIdx.x;
    int const lane = tid & 31;
    int const warp = tid >> 5;
    int64_t const length = p.length;

    int64_t const row = (static_cast<int64_t>(b) * p.dim + d) * length;
    T const* u = static_cast<T const*>(p.u) + row;
    T const* delta = static_cast<T const*>(p.delta) + row;
    T* out = static_cast<T*>(p.out) + row;
    int64_t const groupOffset = (static_cast<int64_t>(b) * p.groups + g) * p.dstate * length;
    T const* bBase = static_cast<T const*>(p.B) + groupOffset;
    T const* cBase = static_cast<T const*>(p.C) + groupOffset;
    float const* aRow = p.A + static_cast<int64_t>(d) * p.dstate;
    float const skip = p.D != nullptr ? p.D[d] : 0.F;
    float const bias = p.deltaBias != nullptr ? p.deltaBias[d] : 0.F;

    __shared__ float carry[kMaxScanStates];
    __shared__ AffineMap warpTotals[kWarps];
    for (int n = tid; n < p.dstate; n += kThreads)
    {
        carry[n] = 0.F;
    }
    __syncthreads();

    for (int64_t start = 0; start < length; start += kChunk)
    {
        int64_t const first = start + static_cast<int64_t>(tid) * kItems;
        float dt[kItems];
        float uu[kItems];
        float y[kItems];
#pragma unroll
        for (int i = 0; i < kItems; ++i)
        {
            int64_t const l = first + i;
            bool const valid = l < length;
            uu[i] = valid ? toFloat(u[l]) : 0.F;
            float const raw = valid ? toFloat(delta[l]) + bias : 0.F;
            dt[i] = valid ? (p.deltaSoftplus ? softplus(raw) : raw) : 0.F;
            y[i] = 0.F;
        }

        for (int n = 0; n < p.dstate; ++n)
        {
            float const aScaled = aRow[n] * kLog2e;
            T const* bRow = bBase + static_cast<int64_t>(n) * length;
            T const* cRow = cBase + static_cast<int64_t>(n) * length;
            AffineMap step[kItems];
            AffineMap mine{1.F, 0.F};
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                int64_t const l = first + i;
                // Steps past the end are the identity, so they change neither prefixes nor the carry.
                step[i] = l < length ? AffineMap{exp2f(dt[i] * aScaled), dt[i] * uu[i] * toFloat(bRow[l])}
                                     : AffineMap{1.F, 0.F};
                mine = compose(step[i], mine);
            }

            AffineMap inclusive = mine;
#pragma unroll
            for (int offset = 1; offset < 32; offset <<= 1)
            {
                float const a = __shfl_up_sync(kFullMask, inclusive.a, offset);
                float const bb = __shfl_up_sync(kFullMask, inclusive.b, offset);
                if (lane >= offset)
                {
                    inclusive = compose(inclusive, AffineMap{a, bb});
                }
            }
            if (lane == 31)
            {
                warpTotals[warp] = inclusive;
            }
            float const ea = __shfl_up_sync(kFullMask, inclusive.a, 1);
            float const eb = __shfl_up_sync(kFullMask, inclusive.b, 1);
            AffineMap const exclusive = lane == 0 ? AffineMap{1.F, 0.F} : AffineMap{ea, eb};
            __syncthreads();

            AffineMap before{1.F, 0.F};
            for (int w = 0; w < warp; ++w)
            {
                before = compose(warpTotals[w], before);
            }
            AffineMap const prefix = compose(exclusive, before);
            float h = fmaf(prefix.a, carry[n], prefix.b);
#pragma unroll
            for (int i = 0; i < kItems; ++i)
            {
                h = fmaf(step[i].a, h, step[i].b);
                int64_t const l = first + i;
                if (l < length)
                {
                    y[i] = fmaf(h, toFloat(cRow[l]), y[i]);
                }
            }
            // Every thread has read carry[n] and warpTotals before they change.
            __syncthreads();
            if (tid == kThreads - 1)
            {
                carry[n] = h; // the state after the chunk's last step
            }
        }

#pragma unroll
        for (int i = 0; i < kItems; ++i)
        {
            int64_t const l = first + i;
            if (l < length)
            {
                out[l] = fromFloat<T>(fmaf(skip, uu[i], y[i]));
            }
        }
        __syncthreads();
    }
}

template <typename T>
cudaError_t launchTyped(SelectiveScanParams const& params, cudaStream_t stream)
{
    dim3 const grid(static_cast<unsigned>(params.dim), static_cast<unsigned>(params.batch));
    selectiveScanKernel<T><<<grid, kThreads, 0, stream>>>(params);
    return cudaGetLastError();
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
    return static_cast<int32_t>(handssca::launchSelectiveScan(params, static_cast<cudaStream_t>(stream)));
}
