#include "base/cpu_features.h"

#include <cpuid.h>

#include "bitnet/error.h"

namespace bitnet {
namespace {

// CPUID leaf 7, subleaf 1, EAX bit 4, read directly: clang 14 (Debian 12's) has no "avxvnni"
// name for __builtin_cpu_supports, and the fuzz targets (tests/fuzz) build this file with clang.
bool cpu_has_avx_vnni() {
  unsigned eax, ebx, ecx, edx;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 4)) != 0;
}

// AMD family 19h: Zen 3 and Zen 4 (of which only Zen 4 has AVX-512).
bool amd_family_19h() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
  const bool amd = ebx == 0x68747541 && edx == 0x69746e65 && ecx == 0x444d4163;  // AuthenticAMD
  if (!amd || !__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const unsigned base_family = (eax >> 8) & 0xF, extended_family = (eax >> 20) & 0xFF;
  return base_family == 0xF && base_family + extended_family == 0x19;
}

}  // namespace

const CpuFeatures& CpuFeatures::host() {
  static const CpuFeatures features = [] {
    __builtin_cpu_init();
    CpuFeatures f;
    f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f.avx_vnni = f.avx2 && cpu_has_avx_vnni();
    f.avx512_vnni = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                    __builtin_cpu_supports("avx512vnni");
    f.amd_zen4 = amd_family_19h();
    return f;
  }();
  return features;
}

CpuIsa CpuFeatures::best_isa() const {
  if (avx512_vnni) return CpuIsa::avx512_vnni;
  if (avx2) return CpuIsa::avx2;
  return CpuIsa::scalar;
}

bool CpuFeatures::supports(CpuIsa isa) const {
  switch (isa) {
    case CpuIsa::avx512_vnni:
      return avx512_vnni;
    case CpuIsa::avx2:
      return avx2;
    case CpuIsa::scalar:
      break;
  }
  return true;
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

}  // namespace bitnet
