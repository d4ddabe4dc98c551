#include "kernels/cpu/ternary_matmul.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <new>

#include "base/thread_pool.h"
#include "kernels/cpu/canonical_math.h"

namespace bitnet {

void QuantizedActs::resize(int64_t n_tokens, int64_t n_cols) {
  cols = n_cols;
  stride = activation_stride(n_cols);
  q.assign(static_cast<size_t>(n_tokens * stride), 0);
  scale.assign(static_cast<size_t>(n_tokens), 0.0f);
  sum.assign(static_cast<size_t>(n_tokens), 0);
}

void quantize_activation_row_avx512(const float* x, int64_t cols, int8_t* q, float& scale,
                                    int32_t& sum);

namespace {

BITNET_CLONE_PER_ISA void quantize_row_generic(const float* x, int64_t cols, int8_t* q,
                                               float& scale, int32_t& sum) {
  // max |x| on the bits: non-negative floats order as their integer bits, and an integer max
  // vectorizes where a float max (with its NaN rules) does not.
  uint32_t max_bits = 0;
  for (int64_t k = 0; k < cols; ++k)
    max_bits = std::max(max_bits, std::bit_cast<uint32_t>(x[k]) & 0x7FFFFFFFu);
  const float s = activation_scale(max_bits);
  int32_t total = 0;
  // |x * s| <= 127; a NaN (from a non-finite activation) becomes -128.
  for (int64_t k = 0; k < cols; ++k) {
    const float v = clamp_code(round_half_even(x[k] * s), -128.0f, 127.0f);
    q[k] = static_cast<int8_t>(v);
    total += q[k];
  }
  scale = s;
  sum = total;
}

}  // namespace

void quantize_activations(const float* x, int64_t x_stride, int64_t n_tokens, int64_t cols,
                          QuantizedActs& out, CpuIsa isa) {
  if (out.cols != cols || static_cast<int64_t>(out.scale.size()) < n_tokens)
    out.resize(n_tokens, cols);
  for (int64_t n = 0; n < n_tokens; ++n) quantize_activation_row(x + n * x_stride, n, out, isa);
}

void quantize_activation_row(const float* x, int64_t row, QuantizedActs& out, CpuIsa isa) {
  int8_t* q = out.q.data() + row * out.stride;
  // Decode runs this on one thread while the others wait. GCC's AVX-512 clone of the generic loop
  // works in ymm halves with spills: 1.1 us per 2560-wide row against 0.24 us for the intrinsics
  // (bitnet_bench quantize_activations).
  if (isa == CpuIsa::avx512_vnni) {
    quantize_activation_row_avx512(x, out.cols, q, out.scale[row], out.sum[row]);
  } else {
    quantize_row_generic(x, out.cols, q, out.scale[row], out.sum[row]);
  }
}

uint8_t* ternary_tile_buffer(int64_t bytes) {
  struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<uint8_t, FreeDeleter> buffer;
  thread_local int64_t capacity = 0;
  if (bytes > capacity) {
    const int64_t rounded = (bytes + 63) / 64 * 64;  // aligned_alloc needs a multiple of 64
    buffer.reset(static_cast<uint8_t*>(std::aligned_alloc(64, static_cast<size_t>(rounded))));
    if (!buffer) throw std::bad_alloc();
    capacity = rounded;
  }
  return buffer.get();
}

void ternary_matmul_scalar(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                           float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  std::vector<int8_t> t(static_cast<size_t>(w.cols));
  for (int64_t r = row_begin; r < row_end; ++r) {
    unpack_ternary_row(w, r, t);
    for (int64_t n = 0; n < n_tokens; ++n) {
      const int8_t* q = acts.q.data() + n * acts.stride;
      int32_t acc = 0;
      for (int64_t k = 0; k < w.cols; ++k) acc += t[k] * q[k];
      y[n * y_stride + r] = static_cast<float>(acc) / acts.scale[n] * w.row_scales[r];
    }
  }
}

// Defined in ternary_matmul_{avx2,avxvnni,avx512}.cpp.
void ternary_matmul_avx2(const TernaryMatrix&, const QuantizedActs&, int64_t, float*, int64_t,
                         int64_t, int64_t);
void ternary_matmul_avx_vnni(const TernaryMatrix&, const QuantizedActs&, int64_t, float*, int64_t,
                             int64_t, int64_t);
void ternary_matmul_avx512(const TernaryMatrix&, const QuantizedActs&, int64_t, float*, int64_t,
                           int64_t, int64_t);
void ternary_matmul_avx512_zen4(const TernaryMatrix&, const QuantizedActs&, int64_t, float*,
                                int64_t, int64_t, int64_t);

const char* kernel_name(TernaryKernel kernel) {
  switch (kernel) {
    case TernaryKernel::scalar:
      return "scalar";
    case TernaryKernel::avx2:
      return "avx2";
    case TernaryKernel::avx_vnni:
      return "avx_vnni";
    case TernaryKernel::avx512:
      return "avx512";
    case TernaryKernel::avx512_zen4:
      return "avx512_zen4";
  }
  return "?";
}

bool kernel_available(TernaryKernel kernel) {
  const CpuFeatures& f = CpuFeatures::host();
  switch (kernel) {
    case TernaryKernel::scalar:
      return true;
    case TernaryKernel::avx2:
      return f.avx2;
    case TernaryKernel::avx_vnni:
      return f.avx_vnni;
    case TernaryKernel::avx512:
    case TernaryKernel::avx512_zen4:
      return f.avx512_vnni;
  }
  return false;
}

TernaryMatmulFn ternary_matmul_kernel(TernaryKernel kernel) {
  switch (kernel) {
    case TernaryKernel::scalar:
      break;
    case TernaryKernel::avx2:
      return ternary_matmul_avx2;
    case TernaryKernel::avx_vnni:
      return ternary_matmul_avx_vnni;
    case TernaryKernel::avx512:
      return ternary_matmul_avx512;
    case TernaryKernel::avx512_zen4:
      return ternary_matmul_avx512_zen4;
  }
  return ternary_matmul_scalar;
}

TernaryKernel best_kernel(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::avx512_vnni:
      return CpuFeatures::host().amd_zen4 ? TernaryKernel::avx512_zen4 : TernaryKernel::avx512;
    case CpuIsa::avx2:
      return kernel_available(TernaryKernel::avx_vnni) ? TernaryKernel::avx_vnni
                                                       : TernaryKernel::avx2;
    case CpuIsa::scalar:
      break;
  }
  return TernaryKernel::scalar;
}

TernaryMatmulFn ternary_matmul_kernel(CpuIsa isa) {
  return ternary_matmul_kernel(best_kernel(isa));
}

void ternary_matmul(ThreadPool& pool, CpuIsa isa, const TernaryMatrix& w, const QuantizedActs& acts,
                    int64_t n_tokens, float* y, int64_t y_stride) {
  TernaryMatmulFn kernel = ternary_matmul_kernel(isa);
  pool.parallel_for_blocks(w.rows, kTernaryRowBlock, [&](int64_t begin, int64_t end) {
    kernel(w, acts, n_tokens, y, y_stride, begin, end);
  });
}

}  // namespace bitnet
