// The selective scan (Mamba S6) forward on CUDA, with no TensorRT types, so that it can be
// built, called and tested on its own (through ctypes) and by the TensorRT plugin alike.
//
// Semantics are mamba-ssm's selective_scan_ref without the z gate, as handssca.ops.selective_scan_ref:
//   delta' = delta + delta_bias[d]; softplus (threshold 20) when deltaSoftplus
//   h_l = exp(delta'_l * A[d, n]) * h_{l-1} + delta'_l * B[b, g, n, l] * u_l   (h_{-1} = 0, fp32)
//   y_l = sum_n h_l[n] * C[b, g, n, l] + D[d] * u_l,   g = d / (dim / groups)
// u, delta, B, C and the output share one dtype (fp32, fp16 or bf16); A, D, delta_bias are fp32.
#pragma once

#include <cstddef>
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

// How a scan is laid over the GPU: the sequence in ``segments`` pieces of ``segmentLength``
// steps (one block each per channel and batch item). ``segments`` 0 chooses: 1 unless batch x dim
// gives too few blocks for the GPU; a positive count forces one (tests, benchmarks).
struct ScanPlan
{
    int32_t segments{1};
    int64_t segmentLength{0};
};
ScanPlan planSelectiveScan(int32_t batch, int32_t dim, int32_t length, int32_t segments = 0);

// Bytes of device workspace launchSelectiveScan needs for these sizes (0 when the plan has one segment).
size_t selectiveScanWorkspaceSize(int32_t batch, int32_t dim, int32_t length, int32_t dstate, int32_t segments = 0);

// The most selectiveScanWorkspaceSize can ask for with the automatic plan, whatever the batch and
// length: a split has fewer than 2 x 512 blocks per pass (what TensorRT reserves).
size_t selectiveScanMaxWorkspaceSize(int32_t dstate);

// cudaErrorInvalidValue for bad sizes or pointers, or a missing workspace (checked before
// launching), else the launches' status. ``workspace``: selectiveScanWorkspaceSize bytes, 8-aligned.
cudaError_t launchSelectiveScan(
    SelectiveScanParams const& params, void* workspace, cudaStream_t stream, int32_t segments = 0);

} // namespace handssca

// A C entry point for ctypes (pointers as integers from torch.Tensor.data_ptr()).
extern "C" int32_t handsscaSelectiveScanForward(int32_t batch, int32_t dim, int32_t length, int32_t dstate,
    int32_t groups, int32_t deltaSoftplus, int32_t dtype, void const* u, void const* delta, float const* A,
    void const* B, void const* C, float const* D, float const* deltaBias, void* out, void* workspace, int32_t segments,
    void* stream);

// handssca::selectiveScanWorkspaceSize for ctypes.
extern "C" uint64_t handsscaSelectiveScanWorkspaceSize(
    int32_t batch, int32_t dim, int32_t length, int32_t dstate, int32_t segments);

// The CUDA architectures the library was built for, as CMake was given them ("75-real,80-real,...").
extern "C" char const* handsscaSelectiveScanArchitectures();
