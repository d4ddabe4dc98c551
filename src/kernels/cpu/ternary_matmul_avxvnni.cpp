// AVX-VNNI ternary matmul (kernels in ternary_matmul_ymm.h): VEX-encoded vpdpbusd on ymm.
#include "kernels/cpu/ternary_matmul_ymm.h"

namespace bitnet {
namespace {

struct VnniDot {
  static constexpr int kStreamMaxTokens = 8;  // see kYmmStreamMinTokens
  static __m256i dot(__m256i acc, __m256i codes, __m256i q) {
    return _mm256_dpbusd_avx_epi32(acc, codes, q);
  }
};

}  // namespace

void ternary_matmul_avx_vnni(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                             float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  matmul_ymm_any_format<VnniDot, T5CarryPolicy<VnniDot>>(w, acts, n_tokens, y, y_stride, row_begin,
                                                         row_end);
}

}  // namespace bitnet
