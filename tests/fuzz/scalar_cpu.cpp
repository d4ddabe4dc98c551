// Stands in, in the fuzz targets' library only, for the two sources clang cannot build:
// base/cpu_features.cpp (GCC's "avxvnni" feature name) and kernels/cpu/lm_head_avx512.cpp. The
// CPU is reported to have no SIMD, so no AVX-512 kernel is ever selected; the parsers under test
// do not run kernels anyway.
#include <cstdio>
#include <cstdlib>
#include <span>

#include "base/cpu_features.h"
#include "bitnet/error.h"
#include "kernels/cpu/lm_head.h"

namespace bitnet {

const CpuFeatures& CpuFeatures::host() {
  static const CpuFeatures none;
  return none;
}

CpuIsa CpuFeatures::best_isa() const {
  return CpuIsa::scalar;
}

bool CpuFeatures::supports(CpuIsa isa) const {
  return isa == CpuIsa::scalar;
}

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::scalar:
      return "scalar";
    case CpuIsa::avx2:
      return "avx2";
    case CpuIsa::avx512_vnni:
      return "avx512";
  }
  return "?";
}

CpuIsa parse_isa(const std::string& name) {
  if (name == "scalar") return CpuIsa::scalar;
  if (name == "avx2") return CpuIsa::avx2;
  if (name == "avx512") return CpuIsa::avx512_vnni;
  throw Error("unknown kernel variant '" + name + "' (choices: scalar, avx2, avx512)");
}

void lm_head_matvec_avx512(const LmHead&, std::span<const LmHeadInput>, float*, int64_t, int64_t,
                           int64_t) {
  std::fputs("lm_head_matvec_avx512 is not built into the fuzz targets\n", stderr);
  std::abort();
}

}  // namespace bitnet
