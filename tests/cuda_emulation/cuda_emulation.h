// A small CUDA emulation for running a kernel's real .cu source on the CPU in tests.
//
// Compile a .cu with g++ -include cuda_emulation.h (after rewriting each `k<<<g, b, s, st>>>(a)`
// into `::cuda_emu::launcher(k, g, b, s, st)(a)`, the only change to the source), link
// cuda_emulation.cpp, and the kernel runs here with CUDA's execution model kept where it matters
// for correctness:
//   * one fiber per CUDA thread, all threads of a block interleaved on one OS thread; a fiber
//     runs until it reaches a synchronisation point, then a schedule picks who runs next;
//   * __syncthreads() is a block barrier (every thread of the block must reach the same one:
//     a thread that exits while others wait, or a deadlock, fails the launch);
//   * warp shuffles are exchanged under a warp barrier over the lanes of their mask (all lanes in
//     the mask must call the same shuffle: a mismatch fails the launch);
//   * __shared__ variables are per block (thread_local on the OS thread that runs the block; a
//     block sees whatever the previous block on that OS thread left there, as on a GPU, where
//     shared memory is not cleared between blocks);
//   * threadIdx/blockIdx/blockDim/gridDim are the running fiber's;
//   * half and bfloat16 are the CUDA toolkit's own types and host-side conversions;
//   * launch limits are enforced (1024 threads per block, grid and block dimensions).
// Schedules (cuda_emu_configure): threads in order, in reverse order, at random, or with one
// warp held back as long as anything else can run, which lets it fall a whole barrier phase
// behind the others: only such a schedule catches a missing barrier.
#pragma once

#define __host__
#define __device__
#define __global__
#define __shared__ static thread_local
#define __launch_bounds__(...)
#define __CUDA_EMULATION__ 1

#include <cuda_runtime_api.h>

#include <math.h> // nvcc makes the C math functions (exp2f, fmaf, ...) visible everywhere

#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>

#ifndef __forceinline__
#define __forceinline__ inline __attribute__((always_inline))
#endif

namespace cuda_emu
{

enum Schedule : int
{
    kInOrder = 0,
    kReverse = 1,
    kRandom = 2,
    kLaggingWarp = 3,
};

uint3 const& threadIndex();
uint3 const& blockIndex();
dim3 const& blockDimension();
dim3 const& gridDimension();

void syncThreads();
void syncWarp(unsigned mask);
// Exchanges one 32- or 64-bit value within the warp: kind 0 up, 1 down, 2 xor, 3 indexed.
uint64_t shuffle(int kind, unsigned mask, uint64_t bits, int argument, int width);

cudaError_t launchBlocks(dim3 grid, dim3 block, size_t dynamicShared, std::function<void()> const& body);

template <typename T>
T shuffleValue(int kind, unsigned mask, T value, int argument, int width)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffles move 32- or 64-bit values");
    uint64_t bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    bits = shuffle(kind, mask, bits, argument, width);
    T result;
    std::memcpy(&result, &bits, sizeof(T));
    return result;
}

// `kernel<<<grid, block[, shared[, stream]]>>>(args)` becomes `launcher(kernel, grid, block[, ...])(args)`.
template <typename... Params>
struct Launcher
{
    void (*kernel)(Params...);
    dim3 grid;
    dim3 block;
    size_t dynamicShared;

    template <typename... Args>
    void operator()(Args&&... args) const
    {
        // Arguments are copied once, as the driver copies them into the kernel's parameter space.
        auto run = kernel;
        std::function<void()> body = [run, params = std::make_tuple(Params(args)...)]() { std::apply(run, params); };
        launchBlocks(grid, block, dynamicShared, body);
    }
};

template <typename... Params>
Launcher<Params...> launcher(void (*kernel)(Params...), dim3 grid, dim3 block, size_t dynamicShared = 0,
    cudaStream_t /*stream: launches run to completion in order*/ = nullptr)
{
    return Launcher<Params...>{kernel, grid, block, dynamicShared};
}

} // namespace cuda_emu

#define threadIdx (::cuda_emu::threadIndex())
#define blockIdx (::cuda_emu::blockIndex())
#define blockDim (::cuda_emu::blockDimension())
#define gridDim (::cuda_emu::gridDimension())
#define warpSize 32

inline void __syncthreads()
{
    ::cuda_emu::syncThreads();
}
inline void __syncwarp(unsigned mask = 0xffffffffU)
{
    ::cuda_emu::syncWarp(mask);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T value, unsigned delta, int width = 32)
{
    return ::cuda_emu::shuffleValue(0, mask, value, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T value, unsigned delta, int width = 32)
{
    return ::cuda_emu::shuffleValue(1, mask, value, static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int laneMask, int width = 32)
{
    return ::cuda_emu::shuffleValue(2, mask, value, laneMask, width);
}
template <typename T>
T __shfl_sync(unsigned mask, T value, int srcLane, int width = 32)
{
    return ::cuda_emu::shuffleValue(3, mask, value, srcLane, width);
}
template <typename T>
T __ldg(T const* pointer)
{
    return *pointer;
}

extern "C"
{
    // schedule: cuda_emu::Schedule; laggingWarp: the warp held back (-1: the block's last warp).
    void cuda_emu_configure(int schedule, int laggingWarp, unsigned long long seed);
    // The last launch failure in words ("" when none).
    char const* cuda_emu_last_message();
    // Counters since the last reset: launches, blocks, block barriers, warp exchanges.
    void cuda_emu_counters(unsigned long long* values);
    void cuda_emu_reset_counters();
}
