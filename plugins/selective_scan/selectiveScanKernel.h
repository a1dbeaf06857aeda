// The selective scan (Mamba S6) forward on CUDA, with no TensorRT types, so that it can be
// built, called and tested on its own (through ctypes) and by the TensorRT plugin alike.
//
// Semantics are mamba-ssm's selective_scan_ref without the z gate, as handssca.ops.selective_scan_ref:
//   delta' = delta + delta_bias[d]; softplus (threshold 20) when deltaSoftplus
//   h_l = exp(delta'_l * A[d, n]) * h_{l-1} + delta'_l * B[b, g, n, l] * u_l   (h_{-1} = 0, fp32)
//   y_l = sum_n h_l[n] * C[b, g, n, l] + D[d] * u_l,   g = d / (dim / groups)
// u, delta, B, C and the output share one dtype (fp32, fp16 or bf16); A, D, delta_bias are fp32.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace handssca
{

enum class ScanDataType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
    kBFLOAT16 = 2,
};

constexpr int32_t kMaxScanStates = 256;

struct SelectiveScanParams
{
    int32_t batch{0};
    int32_t dim{0};
    int32_t length{0};
    int32_t dstate{0};
    int32_t groups{0};
    bool deltaSoftplus{true};
    ScanDataType dtype{ScanDataType::kFLOAT32};
    void const* u{nullptr};         // (batch, dim, length)
    void const* delta{nullptr};     // (batch, dim, length)
    float const* A{nullptr};        // (dim, dstate)
    void const* B{nullptr};         // (batch, groups, dstate, length)
    void const* C{nullptr};         // (batch, groups, dstate, length)
    float const* D{nullptr};        // (dim,), may be null (no skip term)
    float const* deltaBias{nullptr}; // (dim,), may be null
    void* out{nullptr};             // (batch, dim, length)
};

// cudaErrorInvalidValue for bad sizes or pointers (checked before launching), else the launch's status.
cudaError_t launchSelectiveScan(SelectiveScanParams const& params, cudaStream_t stream);

} // namespace handssca

// A C entry point for ctypes (pointers as integers from torch.Tensor.data_ptr()).
extern "C" int32_t handsscaSelectiveScanForward(int32_t batch, int32_t dim, int32_t length, int32_t dstate,
    int32_t groups, int32_t deltaSoftplus, int32_t dtype, void const* u, void const* delta, float const* A,
    void const* B, void const* C, float const* D, float const* deltaBias, void* out, void* stream);

// The CUDA architectures the library was built for, as CMake was given them ("75-real,80-real,...").
extern "C" char const* handsscaSelectiveScanArchitectures();
