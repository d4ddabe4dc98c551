// AVX2 ternary matmul (kernels in ternary_matmul_ymm.h).
#include "kernels/cpu/ternary_matmul_ymm.h"

namespace bitnet {
namespace {

// vpmaddubsw (codes u8 x activations s8 -> s16: at most 2 * 2 * 128, never saturates), then
// vpmaddwd against ones -> s32.
struct MaddDot {
  static constexpr int kStreamMaxTokens = 7;  // see kYmmStreamMinTokens
  static __m256i dot(__m256i acc, __m256i codes, __m256i q) {
    const __m256i ones = _mm256_set1_epi16(1);
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(codes, q), ones));
  }
};

}  // namespace

void ternary_matmul_avx2(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                         float* y, int64_t y_stride, int64_t row_begin, int64_t row_end) {
  // vpmaddubsw would saturate on the carry identity's full-byte operands, so t5 is decoded.
  matmul_ymm_any_format<MaddDot, CodesPolicy<T5HalfDecoder, MaddDot>>(w, acts, n_tokens, y,
                                                                      y_stride, row_begin, row_end);
}

}  // namespace bitnet
