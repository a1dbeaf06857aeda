// Selective scan (Mamba S6) forward and backward for the CPU.
//
// Semantics are those of mamba-ssm's selective_scan_ref; handssca.ops.selective_scan_ref is the
// reference every test compares against. Shapes (all C-contiguous):
//   u, delta, z, out: (batch, dim, L)     A: (dim, N)     B, C: (batch, G, N, L)
//   D, delta_bias: (dim,)                  channel d reads group d / (dim / G)
//
// Design. The cost floor is exp(delta * A): batch*dim*L*N of them. In float, with A <= 0 and
// delta >= 0 (always so in Mamba and VMamba), they come from an inline polynomial
// (exp_nonpositive); otherwise, built with -ffast-math, GCC turns the loops into glibc libmvec
// vector exp calls. target_clones builds x86-64-v4 (AVX-512 + FMA), x86-64-v3 (AVX2 + FMA) and
// baseline versions and picks one at load time: a plain "avx2" clone would have no FMA at all.
//
// Forward in float with N <= 16 (the model's scans; forward_tiled): channels of one B/C group
// share B and C, so kTile = 16 of them form the SIMD axis and the 16 states of each are 16
// vector registers for the whole sequence. Each step is then N exps, N multiply-adds for the
// state and N for the output, with no horizontal sum; B and C are scalars broadcast to the tile.
// States beyond N are padded with A = B = C = 0 (they stay 0 and add nothing), channels beyond
// the group's with dt = u = 0. u and dt are moved into (step, channel) order one chunk of kChunk
// steps at a time, in L1. The in-cache cost of exactly this arithmetic is `floor_tiles`, which
// the benchmark times next to the kernel.
//
// Otherwise (float64, N > 16, and the backward pass): one channel (b, d) is a recurrence over L
// whose N-wide state is the SIMD axis, channels spread over OpenMP threads; B and C are
// transposed once per call to (batch, G, L, N) so the n-loops are unit stride. The backward
// pass recomputes each channel's states into a thread-local (L, N) buffer instead of saving
// them in the forward: memory stays O(threads * L * N) at any batch size.
#include <Python.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && __GNUC__ >= 12
#define HANDSSCA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define HANDSSCA_CLONED 1
#else
#define HANDSSCA_CLONES
#endif

namespace {

template <typename T>
struct ScanProblem {
  int64_t batch, dim, L, N, G;
  const T* u;
  const T* delta;
  const T* A;
  const T* B;  // (batch, G, N, L) as given
  const T* C;
  const T* D;           // nullable
  const T* z;           // nullable
  const T* delta_bias;  // nullable
  bool softplus;
};

// Transposes (rows, N, L) -> (rows, L, N) so that the state loops read contiguous memory.
template <typename T>
void transpose_nl(const T* src, T* dst, int64_t rows, int64_t N, int64_t L, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * N * L;
    T* d = dst + r * N * L;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < L; ++l) d[l * N + n] = s[n * L + l];
  }
}

template <typename T>
void transpose_ln(const T* src, T* dst, int64_t rows, int64_t N, int64_t L, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* s = src + r * L * N;
    T* d = dst + r * N * L;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t l = 0; l < L; ++l) d[n * L + l] = s[l * N + n];
  }
}

// delta + delta_bias, then softplus with PyTorch's threshold (x > 20 stays x).
template <typename T>
HANDSSCA_CLONES void prepare_delta(const T* delta, T bias, bool softplus, int64_t L, T* dt) {
  if (softplus) {
#pragma omp simd
    for (int64_t l = 0; l < L; ++l) {
      const T x = delta[l] + bias;
      const T sp = std::log1p(std::exp(std::min(x, T(20))));
      dt[l] = x > T(20) ? x : sp;
    }
  } else {
#pragma omp simd
    for (int64_t l = 0; l < L; ++l) dt[l] = delta[l] + bias;
  }
}

// exp(x) for x <= 0, the decays' range when A <= 0 and dt >= 0 (always, in Mamba and VMamba):
// 2^(x log2 e) split into an integer power of two, written into the exponent bits, and 2^f with
// |f| <= 1/2 from its degree-7 Taylor polynomial (relative error under 1e-7, float's rounding).
// Unlike libm's exp it has no overflow or NaN branches, so it vectorises inline with plain SSE2
// conversions; it is 14-15% faster on the model's scans. Below -87.3 it returns 2^-126 instead
// of a smaller number (an absolute error under 1.2e-38).
inline float exp_nonpositive(float x) {
  const float t = std::max(x, -87.33F) * 1.44269504088896341F;  // >= -126: a normal float
  const float k = static_cast<float>(static_cast<int32_t>(t - 0.5F));  // t <= 0: truncation rounds up
  const float f = t - k;
  float p = 1.5252733804059841e-5F;
  p = p * f + 1.5403530393381610e-4F;
  p = p * f + 1.3333558146428443e-3F;
  p = p * f + 9.6181291076284772e-3F;
  p = p * f + 5.5504108664821580e-2F;
  p = p * f + 2.4022650695910071e-1F;
  p = p * f + 6.9314718055994531e-1F;
  p = p * f + 1.0F;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// softplus(x) = log(1 + e^x), inline for the tiled path: max(x, 0) + log1p(e) with
// e = exp(-|x|) in (0, 1], and log1p(e) = 2 atanh(e / (2 + e)), whose odd series in
// s = e / (2 + e) <= 1/3 is within float's rounding after the s^13 term. Taking s from e
// directly (not from 1 + e) keeps small e exact. PyTorch's threshold (x > 20 stays x) needs no
// branch: there e < 2.1e-9 is under half an ulp of x, so the sum rounds to x. (A branch here
// also stops GCC vectorising the loop.) Inline, it vectorises with the rest of the loop instead
// of costing two libmvec calls per element.
inline float softplus_inline(float x) {
  const float e = exp_nonpositive(-std::fabs(x));
  const float s = e / (2.0F + e);
  const float s2 = s * s;
  float p = 1.0F / 13.0F;
  p = p * s2 + 1.0F / 11.0F;
  p = p * s2 + 1.0F / 9.0F;
  p = p * s2 + 1.0F / 7.0F;
  p = p * s2 + 1.0F / 5.0F;
  p = p * s2 + 1.0F / 3.0F;
  p = p * s2 + 1.0F;
  return std::max(x, 0.0F) + 2.0F * s * p;
}

// Whether every dt * A[n] of a channel is <= 0, so the decays may use exp_nonpositive.
template <typename T>
bool decays_nonpositive(const T* dt, const T* A, int64_t L, int64_t N) {
  for (int64_t n = 0; n < N; ++n)
    if (!(A[n] <= T(0))) return false;
  for (int64_t l = 0; l < L; ++l)
    if (!(dt[l] >= T(0))) return false;
  return true;
}

// Decays exp(dt[i] * A[n]) for `steps` consecutive steps into out (steps, N). One flat loop of
// exps keeps the vector exp calls back to back, away from the recurrence's registers.
template <typename T>
HANDSSCA_CLONES void decays(const T* __restrict dt, const T* __restrict A, int64_t steps, int64_t N,
                            bool nonpositive, T* __restrict out) {
  for (int64_t i = 0; i < steps; ++i) {
    const T d = dt[i];
    T* o = out + i * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) o[n] = d * A[n];
  }
  const int64_t total = steps * N;
  if constexpr (std::is_same_v<T, float>) {
    if (nonpositive) {
#pragma omp simd
      for (int64_t k = 0; k < total; ++k) out[k] = exp_nonpositive(out[k]);
      return;
    }
  }
#pragma omp simd
  for (int64_t k = 0; k < total; ++k) out[k] = std::exp(out[k]);
}

constexpr int64_t kChunk = 64;  // steps whose decays are computed together

// One channel's recurrence. Writes y (without the D skip and gate) into y[0..L).
// When h_all/a_all (L, N) are given, also stores every state and decay for the backward pass;
// otherwise `scratch` (kChunk * N) holds one chunk of decays at a time.
template <typename T>
HANDSSCA_CLONES void scan_channel(const T* __restrict u, const T* __restrict dt,
                                  const T* __restrict A, const T* __restrict Bt,
                                  const T* __restrict Ct, int64_t L, int64_t N, T* __restrict h,
                                  T* __restrict y, T* __restrict h_all, T* __restrict a_all,
                                  T* __restrict scratch) {
  for (int64_t n = 0; n < N; ++n) h[n] = T(0);
  const bool nonpositive = decays_nonpositive(dt, A, L, N);
  for (int64_t l0 = 0; l0 < L; l0 += kChunk) {
    const int64_t steps = std::min(kChunk, L - l0);
    T* a_chunk = a_all ? a_all + l0 * N : scratch;
    decays(dt + l0, A, steps, N, nonpositive, a_chunk);
    for (int64_t i = 0; i < steps; ++i) {
      const int64_t l = l0 + i;
      const T du = dt[l] * u[l];
      const T* a = a_chunk + i * N;
      const T* Bl = Bt + l * N;
      const T* Cl = Ct + l * N;
      T acc = T(0);
      if (h_all == nullptr) {
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          const T hn = a[n] * h[n] + du * Bl[n];
          h[n] = hn;
          acc += hn * Cl[n];
        }
      } else {
        T* hl = h_all + l * N;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          const T hn = a[n] * h[n] + du * Bl[n];
          h[n] = hn;
          hl[n] = hn;
          acc += hn * Cl[n];
        }
      }
      y[l] = acc;
    }
  }
}

// out = (y + D u) * silu(z), in place over y.
template <typename T>
HANDSSCA_CLONES void finish_output(T* __restrict y, const T* __restrict u, T Dd, const T* __restrict z,
                                   int64_t L) {
  if (z == nullptr) {
#pragma omp simd
    for (int64_t l = 0; l < L; ++l) y[l] += Dd * u[l];
  } else {
#pragma omp simd
    for (int64_t l = 0; l < L; ++l) {
      const T zl = z[l];
      y[l] = (y[l] + Dd * u[l]) * (zl / (T(1) + std::exp(-zl)));
    }
  }
}

constexpr int kTile = 16;    // channels per SIMD tile (one AVX-512 register of floats)
constexpr int kStates = 16;  // states held in registers; N <= kStates takes the tiled path

// kChunk steps of one tile: dt, du (steps, kTile); A (kStates, kTile); B, C (steps, kStates);
// h (kStates, kTile) in and out; y (steps, kTile) out.
template <bool kNonPositive>
HANDSSCA_CLONES void scan_tile(const float* __restrict dt, const float* __restrict du,
                               const float* __restrict A, const float* __restrict B,
                               const float* __restrict C, float* __restrict h, float* __restrict y,
                               int64_t steps) {
  float state[kStates][kTile];
  for (int n = 0; n < kStates; ++n)
#pragma omp simd
    for (int c = 0; c < kTile; ++c) state[n][c] = h[n * kTile + c];
  for (int64_t l = 0; l < steps; ++l) {
    float acc[kTile] = {};
    const float* dtl = dt + l * kTile;
    const float* dul = du + l * kTile;
#pragma GCC unroll 16
    for (int n = 0; n < kStates; ++n) {
      const float b = B[l * kStates + n], c_out = C[l * kStates + n];
#pragma omp simd
      for (int c = 0; c < kTile; ++c) {
        const float x = dtl[c] * A[n * kTile + c];
        const float a = kNonPositive ? exp_nonpositive(x) : std::exp(x);
        state[n][c] = a * state[n][c] + dul[c] * b;
        acc[c] += state[n][c] * c_out;
      }
    }
#pragma omp simd
    for (int c = 0; c < kTile; ++c) y[l * kTile + c] = acc[c];
  }
  for (int n = 0; n < kStates; ++n)
#pragma omp simd
    for (int c = 0; c < kTile; ++c) h[n * kTile + c] = state[n][c];
}

// Over a chunk in (step, channel) order: dt = softplus(delta + bias) in place (or without the
// softplus), du = dt * u. Returns the smallest dt (or 0): below 0, the decays need the full exp.
HANDSSCA_CLONES float prepare_tile(const float* __restrict bias, bool softplus, int64_t steps,
                                   float* __restrict dt, const float* __restrict u, float* __restrict du) {
  float lowest = 0.0F;
  for (int64_t i = 0; i < steps; ++i) {
    float* __restrict dti = dt + i * kTile;
    const float* __restrict ui = u + i * kTile;
    float* __restrict dui = du + i * kTile;
    if (softplus) {
#pragma omp simd reduction(min : lowest)
      for (int c = 0; c < kTile; ++c) {
        const float value = softplus_inline(dti[c] + bias[c]);
        lowest = std::min(lowest, value);
        dti[c] = value;
        dui[c] = value * ui[c];
      }
    } else {
#pragma omp simd reduction(min : lowest)
      for (int c = 0; c < kTile; ++c) {
        const float value = dti[c] + bias[c];
        lowest = std::min(lowest, value);
        dti[c] = value;
        dui[c] = value * ui[c];
      }
    }
  }
  return lowest;
}

// out = (y + D u) * silu(z) over a chunk in (step, channel) order, in place over y.
HANDSSCA_CLONES void finish_tile(const float* __restrict D, const float* __restrict u, const float* __restrict z,
                                 int64_t steps, float* __restrict y) {
  for (int64_t i = 0; i < steps; ++i) {
    float* __restrict yi = y + i * kTile;
    const float* __restrict ui = u + i * kTile;
    if (z == nullptr) {
#pragma omp simd
      for (int c = 0; c < kTile; ++c) yi[c] += D[c] * ui[c];
    } else {
      const float* __restrict zi = z + i * kTile;
#pragma omp simd
      for (int c = 0; c < kTile; ++c) yi[c] = (yi[c] + D[c] * ui[c]) * (zi[c] / (1.0F + std::exp(-zi[c])));
    }
  }
}

// 16 x 16 transposes for moving a tile between (channel, step) and (step, channel) order, in
// GCC's generic vectors so that every clone gets its own shuffles (two-source permutes on
// AVX-512): four rounds each swap one bit of the row index with the same bit of the column
// index, 64 shuffles per 256 floats instead of 256 scalar loads and stores.
typedef float Vec16 __attribute__((vector_size(64)));
typedef int32_t Idx16 __attribute__((vector_size(64)));
static_assert(kTile == 16, "the tile transposes are 16 x 16");

template <int kBit>
__attribute__((always_inline)) inline void transpose_round(Vec16* v) {
  Idx16 keep, take;
  for (int c = 0; c < 16; ++c) {
    keep[c] = (c & kBit) == 0 ? c : 16 + c - kBit;
    take[c] = (c & kBit) == 0 ? c + kBit : 16 + c;
  }
  for (int r = 0; r < 16; ++r) {
    if (r & kBit) continue;
    const Vec16 a = v[r], b = v[r + kBit];
    v[r] = __builtin_shuffle(a, b, keep);
    v[r + kBit] = __builtin_shuffle(a, b, take);
  }
}

__attribute__((always_inline)) inline void transpose16(Vec16* v) {
  transpose_round<8>(v);
  transpose_round<4>(v);
  transpose_round<2>(v);
  transpose_round<1>(v);
}

// dst (steps, kTile) from kTile rows read at [offset, offset + steps).
HANDSSCA_CLONES void gather_tile(const float* const* rows, int64_t offset, int64_t steps, float* __restrict dst) {
  int64_t i0 = 0;
  for (; i0 + 16 <= steps; i0 += 16) {
    Vec16 v[16];
    for (int c = 0; c < 16; ++c) std::memcpy(&v[c], rows[c] + offset + i0, sizeof(Vec16));
    transpose16(v);
    for (int i = 0; i < 16; ++i) std::memcpy(dst + (i0 + i) * kTile, &v[i], sizeof(Vec16));
  }
  for (int c = 0; c < kTile; ++c)
    for (int64_t i = i0; i < steps; ++i) dst[i * kTile + c] = rows[c][offset + i];
}

// The first `width` of kTile rows at [offset, offset + steps) from src (steps, kTile).
HANDSSCA_CLONES void scatter_tile(const float* __restrict src, int64_t steps, int64_t width, float* const* rows,
                                  int64_t offset) {
  int64_t i0 = 0;
  for (; i0 + 16 <= steps; i0 += 16) {
    Vec16 v[16];
    for (int i = 0; i < 16; ++i) std::memcpy(&v[i], src + (i0 + i) * kTile, sizeof(Vec16));
    transpose16(v);
    for (int c = 0; c < width; ++c) std::memcpy(rows[c] + offset + i0, &v[c], sizeof(Vec16));
  }
  for (int c = 0; c < width; ++c)
    for (int64_t i = i0; i < steps; ++i) rows[c][offset + i] = src[i * kTile + c];
}

void forward_tiled(const ScanProblem<float>& p, float* out, int threads) {
  const int64_t L = p.L, N = p.N, dpg = p.dim / p.G;
  const int64_t tiles = (dpg + kTile - 1) / kTile;
  std::vector<float> Bt(p.batch * p.G * L * kStates), Ct(p.batch * p.G * L * kStates);
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> dt(kChunk * kTile), u(kChunk * kTile), du(kChunk * kTile), y(kChunk * kTile);
    std::vector<float> z(p.z ? kChunk * kTile : 0), zeros(L, 0.0F), A(kStates * kTile), h(kStates * kTile);
    // B and C to (batch, G, L, kStates): the states beyond N read a zero row, so they stay 0.
#pragma omp for schedule(static)
    for (int64_t r = 0; r < 2 * p.batch * p.G; ++r) {
      const int64_t bg = r / 2;
      const float* src = (r % 2 ? p.C : p.B) + bg * N * L;
      const float* rows[kStates];
      for (int n = 0; n < kStates; ++n) rows[n] = n < N ? src + n * L : zeros.data();
      gather_tile(rows, 0, L, (r % 2 ? Ct : Bt).data() + bg * L * kStates);
    }
    float bias[kTile], D[kTile];
    const float* delta_rows[kTile];
    const float* u_rows[kTile];
    const float* z_rows[kTile];
    float* out_rows[kTile];
#pragma omp for schedule(static)
    for (int64_t work = 0; work < p.batch * p.G * tiles; ++work) {
      const int64_t bg = work / tiles, g = bg % p.G, b = bg / p.G;
      const int64_t d0 = g * dpg + (work % tiles) * kTile;
      const int64_t width = std::min<int64_t>(kTile, (g + 1) * dpg - d0);
      bool a_nonpositive = true;
      for (int n = 0; n < kStates; ++n)
        for (int c = 0; c < kTile; ++c) {
          const float a = (n < N && c < width) ? p.A[(d0 + c) * N + n] : 0.0F;
          A[n * kTile + c] = a;
          a_nonpositive = a_nonpositive && a <= 0.0F;
        }
      std::fill(h.begin(), h.end(), 0.0F);
      for (int c = 0; c < kTile; ++c) {  // padding channels read u = 0 (and A = 0): their state stays 0
        const bool real = c < width;
        delta_rows[c] = real ? p.delta + (b * p.dim + d0 + c) * L : zeros.data();
        u_rows[c] = real ? p.u + (b * p.dim + d0 + c) * L : zeros.data();
        z_rows[c] = real && p.z ? p.z + (b * p.dim + d0 + c) * L : zeros.data();
        bias[c] = real && p.delta_bias ? p.delta_bias[d0 + c] : 0.0F;
        D[c] = real && p.D ? p.D[d0 + c] : 0.0F;
        out_rows[c] = real ? out + (b * p.dim + d0 + c) * L : nullptr;
      }
      const float* B = Bt.data() + bg * L * kStates;
      const float* C = Ct.data() + bg * L * kStates;
      for (int64_t l0 = 0; l0 < L; l0 += kChunk) {
        const int64_t steps = std::min(kChunk, L - l0);
        gather_tile(delta_rows, l0, steps, dt.data());  // to (step, channel) order
        gather_tile(u_rows, l0, steps, u.data());
        if (p.z) gather_tile(z_rows, l0, steps, z.data());
        const float lowest = prepare_tile(bias, p.softplus, steps, dt.data(), u.data(), du.data());
        const bool nonpositive = a_nonpositive && lowest >= 0.0F;
        if (nonpositive)
          scan_tile<true>(dt.data(), du.data(), A.data(), B + l0 * kStates, C + l0 * kStates, h.data(), y.data(),
                          steps);
        else
          scan_tile<false>(dt.data(), du.data(), A.data(), B + l0 * kStates, C + l0 * kStates, h.data(), y.data(),
                           steps);
        finish_tile(D, u.data(), p.z ? z.data() : nullptr, steps, y.data());
        scatter_tile(y.data(), steps, width, out_rows, l0);  // back to (channel, step) order
      }
    }
  }
}

// The in-cache cost of forward_tiled's arithmetic for `channels` x L steps: the same scan_tile
// calls on L1-resident buffers, with no loads from memory, no transposes and no delta
// preparation. The benchmark's floor: what the tiled forward would take if memory were free.
void floor_tiles(int64_t channels, int64_t L, int threads, float* sink) {
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> dt(kChunk * kTile, 0.01F), du(kChunk * kTile, 0.1F), y(kChunk * kTile);
    std::vector<float> A(kStates * kTile, -1.0F), B(kChunk * kStates, 0.5F), C(kChunk * kStates, 0.5F);
    std::vector<float> h(kStates * kTile, 0.0F);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < (channels + kTile - 1) / kTile; ++t)
      for (int64_t l0 = 0; l0 < L; l0 += kChunk)
        scan_tile<true>(dt.data(), du.data(), A.data(), B.data(), C.data(), h.data(), y.data(),
                        std::min(kChunk, L - l0));
#pragma omp critical
    *sink += y[0];
  }
}

template <typename T>
void forward(const ScanProblem<T>& p, T* out, int threads) {
  if constexpr (std::is_same_v<T, float>) {
    if (p.N <= kStates) return forward_tiled(p, out, threads);
  }
  const int64_t L = p.L, N = p.N, dpg = p.dim / p.G;
  std::vector<T> Bt(p.batch * p.G * L * N), Ct(p.batch * p.G * L * N);
  transpose_nl(p.B, Bt.data(), p.batch * p.G, N, L, threads);
  transpose_nl(p.C, Ct.data(), p.batch * p.G, N, L, threads);
#pragma omp parallel num_threads(threads)
  {
    std::vector<T> dt(L), h(N), scratch(kChunk * N);
#pragma omp for schedule(static)
    for (int64_t bd = 0; bd < p.batch * p.dim; ++bd) {
      const int64_t b = bd / p.dim, d = bd % p.dim, g = d / dpg;
      const T* u = p.u + bd * L;
      T* y = out + bd * L;
      prepare_delta(p.delta + bd * L, p.delta_bias ? p.delta_bias[d] : T(0), p.softplus, L, dt.data());
      const int64_t bg = (b * p.G + g) * L * N;
      scan_channel(u, dt.data(), p.A + d * N, Bt.data() + bg, Ct.data() + bg, L, N, h.data(), y,
                   static_cast<T*>(nullptr), static_cast<T*>(nullptr), scratch.data());
      finish_output(y, u, p.D ? p.D[d] : T(0), p.z ? p.z + bd * L : nullptr, L);
    }
  }
}

template <typename T>
struct ScanGrads {
  T* du;
  T* ddelta;
  T* dA;
  T* dB;  // (batch, G, N, L)
  T* dC;
  T* dD;           // nullable
  T* ddelta_bias;  // nullable
  T* dz;           // nullable
};

// Gradient of the output w.r.t. y (the scan output before skip and gate); also dz and dD.
template <typename T>
HANDSSCA_CLONES void output_grads(const T* __restrict dout, const T* __restrict y, const T* __restrict u,
                                  T Dd, const T* __restrict z, int64_t L, T* __restrict dy,
                                  T* __restrict dz, T* dD_out) {
  T dD = T(0);
  if (z == nullptr) {
#pragma omp simd reduction(+ : dD)
    for (int64_t l = 0; l < L; ++l) {
      dy[l] = dout[l];
      dD += dout[l] * u[l];
    }
  } else {
#pragma omp simd reduction(+ : dD)
    for (int64_t l = 0; l < L; ++l) {
      const T zl = z[l];
      const T s = T(1) / (T(1) + std::exp(-zl));
      const T o = y[l] + Dd * u[l];
      dz[l] = dout[l] * o * s * (T(1) + zl * (T(1) - s));
      const T g = dout[l] * zl * s;
      dy[l] = g;
      dD += g * u[l];
    }
  }
  *dD_out = dD;
}

// Reverse recurrence for one channel. dB_acc/dC_acc are this thread's (L, N) accumulators for the
// channel's group and dA (N) is the channel's row: all three are added to. ddt and du_scan are
// written for this channel's L steps.
template <typename T>
HANDSSCA_CLONES void scan_channel_backward(const T* __restrict u, const T* __restrict dt,
                                           const T* __restrict A, const T* __restrict Bt,
                                           const T* __restrict Ct, const T* __restrict dy,
                                           const T* __restrict h_all, const T* __restrict a_all,
                                           int64_t L, int64_t N, T* __restrict carry,
                                           T* __restrict dA, T* __restrict dB_acc,
                                           T* __restrict dC_acc, T* __restrict ddt,
                                           T* __restrict du_scan) {
  for (int64_t n = 0; n < N; ++n) carry[n] = T(0);
  for (int64_t l = L - 1; l >= 0; --l) {
    const T d = dt[l], ul = u[l], g_y = dy[l];
    const T* Bl = Bt + l * N;
    const T* Cl = Ct + l * N;
    const T* hl = h_all + l * N;
    const T* al = a_all + l * N;
    const T* hp = l > 0 ? h_all + (l - 1) * N : nullptr;
    T* dBl = dB_acc + l * N;
    T* dCl = dC_acc + l * N;
    T acc_dt = T(0), acc_u = T(0);
    if (hp != nullptr) {
#pragma omp simd reduction(+ : acc_dt, acc_u)
      for (int64_t n = 0; n < N; ++n) {
        const T g = carry[n] + g_y * Cl[n];  // dL/dh_l
        const T decay_grad = g * al[n] * hp[n];
        dCl[n] += g_y * hl[n];
        dBl[n] += g * d * ul;
        dA[n] += decay_grad * d;
        acc_dt += decay_grad * A[n] + g * Bl[n] * ul;
        acc_u += g * Bl[n];
        carry[n] = al[n] * g;
      }
    } else {
#pragma omp simd reduction(+ : acc_dt, acc_u)
      for (int64_t n = 0; n < N; ++n) {
        const T g = carry[n] + g_y * Cl[n];
        dCl[n] += g_y * hl[n];
        dBl[n] += g * d * ul;
        acc_dt += g * Bl[n] * ul;
        acc_u += g * Bl[n];
        carry[n] = al[n] * g;
      }
    }
    ddt[l] = acc_dt;
    du_scan[l] = acc_u * d;
  }
}

// Chain ddt through delta + bias and softplus; returns the bias gradient.
template <typename T>
HANDSSCA_CLONES T delta_grads(const T* __restrict delta, T bias, bool softplus, int64_t L,
                              T* __restrict ddelta) {
  T db = T(0);
  if (softplus) {
#pragma omp simd reduction(+ : db)
    for (int64_t l = 0; l < L; ++l) {
      const T x = delta[l] + bias;
      const T s = T(1) / (T(1) + std::exp(-std::min(x, T(20))));
      const T g = x > T(20) ? ddelta[l] : ddelta[l] * s;
      ddelta[l] = g;
      db += g;
    }
  } else {
#pragma omp simd reduction(+ : db)
    for (int64_t l = 0; l < L; ++l) db += ddelta[l];
  }
  return db;
}

template <typename T>
void backward(const ScanProblem<T>& p, const T* dout, const ScanGrads<T>& gr, int threads) {
  const int64_t L = p.L, N = p.N, dpg = p.dim / p.G;
  const int64_t group_elems = L * N;
  std::vector<T> Bt(p.batch * p.G * group_elems), Ct(p.batch * p.G * group_elems);
  std::vector<T> dBt(p.batch * p.G * group_elems), dCt(p.batch * p.G * group_elems);
  transpose_nl(p.B, Bt.data(), p.batch * p.G, N, L, threads);
  transpose_nl(p.C, Ct.data(), p.batch * p.G, N, L, threads);
  std::fill(gr.dA, gr.dA + p.dim * N, T(0));
  if (gr.dD) std::fill(gr.dD, gr.dD + p.dim, T(0));
  if (gr.ddelta_bias) std::fill(gr.ddelta_bias, gr.ddelta_bias + p.dim, T(0));
  // One (batch, group) at a time, its channels spread over threads: each thread owns an
  // (L, N) accumulator for dB/dC, reduced once per group, so memory does not grow with batch.
  const int nt = std::max(1, threads);
  std::vector<T> part_dB(static_cast<size_t>(nt) * group_elems), part_dC(static_cast<size_t>(nt) * group_elems);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t g = 0; g < p.G; ++g) {
      const int64_t bg = (b * p.G + g) * group_elems;
      std::fill(part_dB.begin(), part_dB.end(), T(0));
      std::fill(part_dC.begin(), part_dC.end(), T(0));
#pragma omp parallel num_threads(nt)
      {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        std::vector<T> dt(L), y(L), dy(L), h_all(L * N), a_all(L * N), h(N), carry(N), du_scan(L);
        T* my_dB = part_dB.data() + static_cast<size_t>(tid) * group_elems;
        T* my_dC = part_dC.data() + static_cast<size_t>(tid) * group_elems;
#pragma omp for schedule(static)
        for (int64_t dd = 0; dd < dpg; ++dd) {
          const int64_t d = g * dpg + dd;
          const int64_t bd = b * p.dim + d;
          const T* u = p.u + bd * L;
          const T bias = p.delta_bias ? p.delta_bias[d] : T(0);
          const T Dd = p.D ? p.D[d] : T(0);
          prepare_delta(p.delta + bd * L, bias, p.softplus, L, dt.data());
          scan_channel(u, dt.data(), p.A + d * N, Bt.data() + bg, Ct.data() + bg, L, N, h.data(),
                       y.data(), h_all.data(), a_all.data(), static_cast<T*>(nullptr));
          T dD = T(0);
          output_grads(dout + bd * L, y.data(), u, Dd, p.z ? p.z + bd * L : nullptr, L, dy.data(),
                       gr.dz ? gr.dz + bd * L : nullptr, &dD);
          T* ddelta = gr.ddelta + bd * L;
          scan_channel_backward(u, dt.data(), p.A + d * N, Bt.data() + bg, Ct.data() + bg,
                                dy.data(), h_all.data(), a_all.data(), L, N, carry.data(),
                                gr.dA + d * N, my_dB, my_dC, ddelta, du_scan.data());
          T* du = gr.du + bd * L;
          for (int64_t l = 0; l < L; ++l) du[l] = du_scan[l] + dy[l] * Dd;
          const T db = delta_grads(p.delta + bd * L, bias, p.softplus, L, ddelta);
          // Each channel belongs to one thread within a (batch, group) pass, so these sums over
          // the batch need no atomics.
          if (gr.dD) gr.dD[d] += dD;
          if (gr.ddelta_bias) gr.ddelta_bias[d] += db;
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < group_elems; ++i) {
          T sB = T(0), sC = T(0);
          for (int t = 0; t < nt; ++t) {
            sB += part_dB[static_cast<size_t>(t) * group_elems + i];
            sC += part_dC[static_cast<size_t>(t) * group_elems + i];
          }
          dBt[bg + i] = sB;
          dCt[bg + i] = sC;
        }
      }
    }
  }
  transpose_ln(dBt.data(), gr.dB, p.batch * p.G, N, L, threads);
  transpose_ln(dCt.data(), gr.dC, p.batch * p.G, N, L, threads);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Python binding: arrays arrive through the buffer protocol (numpy, no torch); the Python
// wrapper in handssca.runtime.scan.kernel checks shapes and dtypes and allocates outputs.
// Here each buffer is checked once more against the declared sizes, so a wrong call raises
// instead of reading out of bounds.

namespace {

struct Buffer {
  Py_buffer view{};
  bool held = false;
  ~Buffer() {
    if (held) PyBuffer_Release(&view);
  }
};

// Acquires `obj` as a C-contiguous buffer of `count` items of format `fmt` ('f' or 'd').
// None is accepted (and leaves the buffer empty) when `optional`.
bool acquire(PyObject* obj, Buffer& buf, const char* name, char fmt, Py_ssize_t count,
             bool writable, bool optional) {
  if (obj == Py_None) {
    if (optional) return true;
    PyErr_Format(PyExc_ValueError, "selective_scan: %s is required", name);
    return false;
  }
  int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
  if (PyObject_GetBuffer(obj, &buf.view, flags) != 0) {
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError, "selective_scan: %s must be a C-contiguous%s array", name,
                 writable ? " writable" : "");
    return false;
  }
  buf.held = true;
  const char* f = buf.view.format ? buf.view.format : "B";
  if (f[0] == '<' || f[0] == '=' || f[0] == '@') ++f;
  if (f[0] != fmt || f[1] != '\0') {
    PyErr_Format(PyExc_ValueError, "selective_scan: %s has format '%s', expected '%c'", name,
                 buf.view.format, fmt);
    return false;
  }
  if (buf.view.len != count * buf.view.itemsize) {
    PyErr_Format(PyExc_ValueError, "selective_scan: %s holds %zd items, expected %zd", name,
                 buf.view.len / buf.view.itemsize, count);
    return false;
  }
  return true;
}

template <typename T>
const T* ptr(const Buffer& b) {
  return b.held ? static_cast<const T*>(b.view.buf) : nullptr;
}
template <typename T>
T* mptr(Buffer& b) {
  return b.held ? static_cast<T*>(b.view.buf) : nullptr;
}

bool check_sizes(long long batch, long long dim, long long L, long long N, long long G) {
  if (batch < 1 || dim < 1 || L < 1 || N < 1 || G < 1) {
    PyErr_SetString(PyExc_ValueError, "selective_scan: batch, dim, L, N and G must be >= 1");
    return false;
  }
  if (dim % G != 0) {
    PyErr_Format(PyExc_ValueError, "selective_scan: dim %lld is not divisible by groups %lld", dim, G);
    return false;
  }
  return true;
}

char dtype_code(PyObject* u) {
  Py_buffer v;
  if (PyObject_GetBuffer(u, &v, PyBUF_FORMAT | PyBUF_ND) != 0) {
    PyErr_Clear();
    return 0;
  }
  const char* f = v.format ? v.format : "B";
  if (f[0] == '<' || f[0] == '=' || f[0] == '@') ++f;
  char c = (f[1] == '\0' && (f[0] == 'f' || f[0] == 'd')) ? f[0] : 0;
  PyBuffer_Release(&v);
  return c;
}

template <typename T>
PyObject* run_forward(PyObject* const* a, long long batch, long long dim, long long L, long long N,
                      long long G, int softplus, int threads, char fmt) {
  const Py_ssize_t bdl = batch * dim * L, bgnl = batch * G * N * L;
  Buffer u, delta, A, B, C, D, z, bias, out;
  if (!acquire(a[0], u, "u", fmt, bdl, false, false) ||
      !acquire(a[1], delta, "delta", fmt, bdl, false, false) ||
      !acquire(a[2], A, "A", fmt, dim * N, false, false) ||
      !acquire(a[3], B, "B", fmt, bgnl, false, false) ||
      !acquire(a[4], C, "C", fmt, bgnl, false, false) ||
      !acquire(a[5], D, "D", fmt, dim, false, true) ||
      !acquire(a[6], z, "z", fmt, bdl, false, true) ||
      !acquire(a[7], bias, "delta_bias", fmt, dim, false, true) ||
      !acquire(a[8], out, "out", fmt, bdl, true, false))
    return nullptr;
  ScanProblem<T> p{batch, dim, L, N, G, ptr<T>(u), ptr<T>(delta), ptr<T>(A), ptr<T>(B), ptr<T>(C),
                   ptr<T>(D), ptr<T>(z), ptr<T>(bias), softplus != 0};
  T* o = mptr<T>(out);
  Py_BEGIN_ALLOW_THREADS forward(p, o, threads);
  Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

template <typename T>
PyObject* run_backward(PyObject* const* a, long long batch, long long dim, long long L, long long N,
                       long long G, int softplus, int threads, char fmt) {
  const Py_ssize_t bdl = batch * dim * L, bgnl = batch * G * N * L;
  Buffer u, delta, A, B, C, D, z, bias, dout, du, ddelta, dA, dB, dC, dD, dbias, dz;
  if (!acquire(a[0], u, "u", fmt, bdl, false, false) ||
      !acquire(a[1], delta, "delta", fmt, bdl, false, false) ||
      !acquire(a[2], A, "A", fmt, dim * N, false, false) ||
      !acquire(a[3], B, "B", fmt, bgnl, false, false) ||
      !acquire(a[4], C, "C", fmt, bgnl, false, false) ||
      !acquire(a[5], D, "D", fmt, dim, false, true) ||
      !acquire(a[6], z, "z", fmt, bdl, false, true) ||
      !acquire(a[7], bias, "delta_bias", fmt, dim, false, true) ||
      !acquire(a[8], dout, "dout", fmt, bdl, false, false) ||
      !acquire(a[9], du, "du", fmt, bdl, true, false) ||
      !acquire(a[10], ddelta, "ddelta", fmt, bdl, true, false) ||
      !acquire(a[11], dA, "dA", fmt, dim * N, true, false) ||
      !acquire(a[12], dB, "dB", fmt, bgnl, true, false) ||
      !acquire(a[13], dC, "dC", fmt, bgnl, true, false) ||
      !acquire(a[14], dD, "dD", fmt, dim, true, true) ||
      !acquire(a[15], dbias, "ddelta_bias", fmt, dim, true, true) ||
      !acquire(a[16], dz, "dz", fmt, bdl, true, true))
    return nullptr;
  if (z.held != dz.held) {
    PyErr_SetString(PyExc_ValueError, "selective_scan: dz must be given exactly when z is");
    return nullptr;
  }
  ScanProblem<T> p{batch, dim, L, N, G, ptr<T>(u), ptr<T>(delta), ptr<T>(A), ptr<T>(B), ptr<T>(C),
                   ptr<T>(D), ptr<T>(z), ptr<T>(bias), softplus != 0};
  ScanGrads<T> g{mptr<T>(du), mptr<T>(ddelta), mptr<T>(dA), mptr<T>(dB),
                 mptr<T>(dC), mptr<T>(dD), mptr<T>(dbias), mptr<T>(dz)};
  const T* go = ptr<T>(dout);
  Py_BEGIN_ALLOW_THREADS backward(p, go, g, threads);
  Py_END_ALLOW_THREADS Py_RETURN_NONE;
}

int resolve_threads(int threads) {
#ifdef _OPENMP
  return threads > 0 ? threads : omp_get_max_threads();
#else
  (void)threads;
  return 1;
#endif
}

// forward(u, delta, A, B, C, D, z, delta_bias, out, batch, dim, L, N, G, softplus, threads)
PyObject* py_forward(PyObject*, PyObject* args) {
  PyObject* a[9];
  long long batch, dim, L, N, G;
  int softplus, threads;
  if (!PyArg_ParseTuple(args, "OOOOOOOOOLLLLLpi", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], &a[6],
                        &a[7], &a[8], &batch, &dim, &L, &N, &G, &softplus, &threads))
    return nullptr;
  if (!check_sizes(batch, dim, L, N, G)) return nullptr;
  const int nt = resolve_threads(threads);
  switch (dtype_code(a[0])) {
    case 'f': return run_forward<float>(a, batch, dim, L, N, G, softplus, nt, 'f');
    case 'd': return run_forward<double>(a, batch, dim, L, N, G, softplus, nt, 'd');
    default:
      PyErr_SetString(PyExc_ValueError, "selective_scan: u must be a float32 or float64 array");
      return nullptr;
  }
}

// backward(u, delta, A, B, C, D, z, delta_bias, dout, du, ddelta, dA, dB, dC, dD, ddelta_bias, dz,
//          batch, dim, L, N, G, softplus, threads)
PyObject* py_backward(PyObject*, PyObject* args) {
  PyObject* a[17];
  long long batch, dim, L, N, G;
  int softplus, threads;
  if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOOOOLLLLLpi", &a[0], &a[1], &a[2], &a[3], &a[4], &a[5],
                        &a[6], &a[7], &a[8], &a[9], &a[10], &a[11], &a[12], &a[13], &a[14], &a[15],
                        &a[16], &batch, &dim, &L, &N, &G, &softplus, &threads))
    return nullptr;
  if (!check_sizes(batch, dim, L, N, G)) return nullptr;
  const int nt = resolve_threads(threads);
  switch (dtype_code(a[0])) {
    case 'f': return run_backward<float>(a, batch, dim, L, N, G, softplus, nt, 'f');
    case 'd': return run_backward<double>(a, batch, dim, L, N, G, softplus, nt, 'd');
    default:
      PyErr_SetString(PyExc_ValueError, "selective_scan: u must be a float32 or float64 array");
      return nullptr;
  }
}

// Which clone the vector loops run with on this CPU (the one target_clones' resolver picks by
// the same test), and the thread pool.
PyObject* py_build_info(PyObject*, PyObject*) {
  std::string isa = "scalar";
#ifdef HANDSSCA_CLONED
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4"))
    isa = "x86-64-v4 (AVX-512, FMA)";
  else if (__builtin_cpu_supports("x86-64-v3"))
    isa = "x86-64-v3 (AVX2, FMA)";
  else
    isa = "x86-64 (SSE2)";
#elif defined(__AVX512F__)
  isa = "AVX-512 (built for this CPU)";
#elif defined(__AVX2__)
  isa = "AVX2 (built for this CPU)";
#elif defined(__x86_64__)
  isa = "x86-64 (SSE2)";
#endif
  int openmp = 0, max_threads = 1;
#ifdef _OPENMP
  openmp = 1;
  max_threads = omp_get_max_threads();
#endif
  return Py_BuildValue("{s:s,s:O,s:i}", "isa", isa.c_str(), "openmp", openmp ? Py_True : Py_False,
                       "max_threads", max_threads);
}

// floor(channels, L, threads): runs floor_tiles (the tiled forward's arithmetic, in cache).
PyObject* py_floor(PyObject*, PyObject* args) {
  long long channels, L;
  int threads;
  if (!PyArg_ParseTuple(args, "LLi", &channels, &L, &threads)) return nullptr;
  if (channels < 1 || L < 1) {
    PyErr_SetString(PyExc_ValueError, "selective_scan: channels and L must be >= 1");
    return nullptr;
  }
  float sink = 0.0F;
  const int nt = resolve_threads(threads);
  Py_BEGIN_ALLOW_THREADS floor_tiles(channels, L, nt, &sink);
  Py_END_ALLOW_THREADS return PyFloat_FromDouble(sink);
}

PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS, "Selective scan forward (see module docstring)."},
    {"backward", py_backward, METH_VARARGS, "Selective scan backward (see module docstring)."},
    {"floor", py_floor, METH_VARARGS, "The tiled forward's arithmetic in cache (the benchmark's floor)."},
    {"build_info", py_build_info, METH_NOARGS, "Instruction set and threading of this build."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef module = {PyModuleDef_HEAD_INIT, "_selective_scan_cpu",
                      "CPU selective-scan kernels; use handssca.runtime.scan.kernel instead.", -1,
                      methods, nullptr, nullptr, nullptr, nullptr};

}  // namespace

PyMODINIT_FUNC PyInit__selective_scan_cpu(void) { return PyModule_Create(&module); }
