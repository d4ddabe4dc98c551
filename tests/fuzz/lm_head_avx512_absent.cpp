// Stands in, in the fuzz targets' library only, for kernels/cpu/lm_head_avx512.cpp, which clang 14
// cannot build (GCC's _mm_hint type). The parsers under test run no lm_head.
#include <cstdio>
#include <cstdlib>
#include <span>

#include "kernels/cpu/lm_head.h"

namespace bitnet {

void lm_head_matvec_avx512(const LmHead&, std::span<const LmHeadInput>, float*, int64_t, int64_t,
                           int64_t) {
  std::fputs("lm_head_matvec_avx512 is not built into the fuzz targets\n", stderr);
  std::abort();
}

void lm_head_matvec_avx512_zen4(const LmHead&, std::span<const LmHeadInput>, float*, int64_t,
                                int64_t, int64_t) {
  std::fputs("lm_head_matvec_avx512_zen4 is not built into the fuzz targets\n", stderr);
  std::abort();
}

}  // namespace bitnet
