// F16C conversions for the ops that the CPU path runs on every token.
#include <immintrin.h>

#include <cstdint>

#include "base/float16.h"

namespace bitnet {

void f32_to_f16_row_avx2(const float* x, uint16_t* out, int64_t n) {
  const __m256 sign_bit = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256 quiet_nan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FC00000));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    // A NaN becomes f32_to_f16's 0x7E00 with its sign: F16C would keep its payload's top bits.
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    v = _mm256_blendv_ps(v, _mm256_or_ps(_mm256_and_ps(v, sign_bit), quiet_nan), nan);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  for (; i < n; ++i) out[i] = f32_to_f16(x[i]);
}

}  // namespace bitnet
