#pragma once
// Which SIMD paths this CPU (and OS) supports; kernels pick their variant from this at run time.

#include <string>

namespace bitnet {

enum class CpuIsa { scalar, avx2, avx512_vnni };

struct CpuFeatures {
  bool avx2 = false;         // with FMA and F16C
  bool avx_vnni = false;     // VEX-encoded vpdpbusd on ymm
  bool avx512_vnni = false;  // with F, BW, VL, DQ
  // AMD family 19h (Zen 4), which runs AVX-512 on 256-bit units; the AVX-512 kernels have a
  // variant tuned for it (TernaryKernel::avx512_zen4, lm_head_kernel, attention_kernel). Its
  // hardware prefetchers alone stream faster than with software prefetches: from DRAM on 1 thread,
  // a 13824 x 2560 i2 GEMV read 34.0 GB/s without and 20.8 with, the t5 one 21.3 and 16.6, the int8
  // lm_head 32.4 and 20.6 (the plain read loop: 33), where on Zen 5 the prefetches gain 16%. Where
  // several streams interleave (the head's batched passes, attention) it prefetches into L2. Its
  // vpdpbusd runs at half Zen 5's rate, which moves the ternary GEMM's start to 3 tokens.
  bool amd_zen4 = false;

  static const CpuFeatures& host();
  CpuIsa best_isa() const;
  bool supports(CpuIsa isa) const;
};

// For plain C++ loops (no intrinsics): GCC compiles one clone per ISA and picks one at load
// time. With -ffp-contract=off (CMakeLists.txt) every clone rounds exactly as the baseline one.
#define BITNET_CLONE_PER_ISA __attribute__((target_clones("avx512f", "avx2", "default")))

const char* isa_name(CpuIsa isa);
// Parses "scalar", "avx2", "avx512"; throws bitnet::Error on anything else.
CpuIsa parse_isa(const std::string& name);

}  // namespace bitnet
