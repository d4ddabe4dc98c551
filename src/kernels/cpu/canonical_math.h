#pragma once
// Scalar definitions of the summation orders and the exp that the SIMD kernels reproduce bit for
// bit, so that every kernel variant (scalar, AVX2, AVX-512) and thread count gives identical
// results. A "16-lane" sum puts term k in lane k % 16, accumulates each lane in order with fma,
// and then adds the lanes pairwise: (i, i + 8), (i, i + 4), (i, i + 2), (0, 1).

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace bitnet {

constexpr int kLanes = 16;

// v clamped to [lo, hi] for a float-to-integer cast, a NaN going to lo as the AVX-512
// conversions make it. The bound comes first in std::max: std::clamp would pass a NaN on to an
// undefined cast.
inline float clamp_code(float v, float lo, float hi) {
  return std::min(hi, std::max(lo, v));
}

// x rounded to an integer, half to even, as std::nearbyint does in the default rounding mode (and
// torch.round), for |x| < 2^22: adding 1.5 * 2^23 leaves no fraction bits. No library call per
// element, so loops over it vectorize. A NaN stays NaN.
inline float round_half_even(float x) {
  constexpr float kMagic = 12582912.0f;
  return (x + kMagic) - kMagic;
}

inline float reduce_lanes(const float* lane) {
  float h8[8], h4[4], h2[2];
  for (int i = 0; i < 8; ++i) h8[i] = lane[i] + lane[i + 8];
  for (int i = 0; i < 4; ++i) h4[i] = h8[i] + h8[i + 4];
  for (int i = 0; i < 2; ++i) h2[i] = h4[i] + h4[i + 2];
  return h2[0] + h2[1];
}

// exp(x) for x <= 0 (softmax arguments), Cephes expf: x = n ln2 + r, |r| <= ln2 / 2, degree-5
// polynomial, times 2^n. Relative error ~2 ulp; below exp(-87.3) the result is clamped there, and
// a NaN is clamped there too, as the SIMD max (which returns its second operand) does.
namespace expc {
constexpr float kMin = -87.33654f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f,
                kP3 = 4.1665795894e-2f, kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;
}  // namespace expc

inline float exp_nonpositive(float x) {
  using namespace expc;
  x = std::max(kMin, x);
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float p = std::fma(kP0, r, kP1);
  p = std::fma(p, r, kP2);
  p = std::fma(p, r, kP3);
  p = std::fma(p, r, kP4);
  p = std::fma(p, r, kP5);
  const float y = std::fma(p, r * r, r) + 1.0f;
  const float two_n =
      std::bit_cast<float>(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  return y * two_n;
}

}  // namespace bitnet
