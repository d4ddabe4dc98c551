// fp32 model ops against fp64 references, and the bf16 / fp16 conversions.

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "base/float16.h"
#include "kernels/cpu/canonical_math.h"
#include "kernels/cpu/ops.h"

namespace bitnet {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo = -2.0f, float hi = 2.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

// |got - want| <= rtol * |want| + atol
void expect_close(float got, double want, double rtol, double atol = 0) {
  ASSERT_TRUE(std::isfinite(got)) << got;
  EXPECT_LE(std::fabs(got - want), rtol * std::fabs(want) + atol)
      << "got " << got << ", want " << want;
}

// ---------------------------------------------------------------------------------------------
// rmsnorm

std::vector<double> ref_rmsnorm(const std::vector<float>& x, const std::vector<float>& w,
                                double eps) {
  double ss = 0;
  for (float v : x) ss += double{v} * v;
  const double inv = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = w[i] * (x[i] * inv);
  return out;
}

TEST(RmsNorm, MatchesFp64ReferenceOnOddSizes) {
  std::mt19937 rng(1);
  for (size_t n : {1u, 3u, 7u, 127u, 2560u, 2561u}) {
    SCOPED_TRACE(n);
    const auto x = random_floats(n, rng), w = random_floats(n, rng, 0.5f, 1.5f);
    std::vector<float> out(n, NAN);
    rmsnorm(x.data(), w.data(), out.data(), static_cast<int64_t>(n), 1e-5f);
    const auto want = ref_rmsnorm(x, w, 1e-5f);
    for (size_t i = 0; i < n; ++i) expect_close(out[i], want[i], 1e-5, 1e-7);
  }
}

TEST(RmsNorm, ZerosGiveZerosNotNaN) {
  std::vector<float> x(33, 0.0f), w(33, 1.0f), out(33, NAN);
  rmsnorm(x.data(), w.data(), out.data(), 33, 1e-5f);
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

TEST(RmsNorm, LargeValuesDoNotOverflow) {
  // Squares near the top of the fp32 range: their sum (2.9e36 * 5) must not overflow. (Like
  // transformers, the mean of squares is fp32, so |x| beyond ~1.8e19 would give zeros.)
  std::vector<float> x = {1e18f, -3e18f, 2e18f, 5e17f, 0.0f}, w(5, 2.0f), out(5, NAN);
  rmsnorm(x.data(), w.data(), out.data(), 5, 1e-5f);
  const auto want = ref_rmsnorm(x, w, 1e-5f);
  for (size_t i = 0; i < x.size(); ++i) expect_close(out[i], want[i], 1e-5);
}

TEST(RmsNorm, InPlace) {
  std::mt19937 rng(2);
  auto x = random_floats(100, rng);
  const auto w = random_floats(100, rng);
  const auto want = ref_rmsnorm(x, w, 1e-6);
  rmsnorm(x.data(), w.data(), x.data(), 100, 1e-6f);
  for (size_t i = 0; i < x.size(); ++i) expect_close(x[i], want[i], 1e-5, 1e-7);
}

// ---------------------------------------------------------------------------------------------
// rope

TEST(Rope, PositionZeroIsIdentity) {
  std::mt19937 rng(3);
  const int heads = 3, head_dim = 8;
  auto x = random_floats(heads * head_dim, rng);
  const auto orig = x;
  const std::vector<float> cos(head_dim / 2, 1.0f), sin(head_dim / 2, 0.0f);
  rope(x.data(), heads, head_dim, cos.data(), sin.data());
  EXPECT_EQ(x, orig);
}

TEST(Rope, HandComputedFourDimExample) {
  // Pairs are (0, 2) and (1, 3). Pair 0 rotates by 90 degrees, pair 1 by atan2(0.8, 0.6).
  std::vector<float> x = {1, 2, 3, 4, 10, 20, 30, 40};
  const float cos[2] = {0.0f, 0.6f}, sin[2] = {1.0f, 0.8f};
  rope(x.data(), 2, 4, cos, sin);
  const std::vector<float> want = {-3.0f,  2 * 0.6f - 4 * 0.8f,   1.0f,  4 * 0.6f + 2 * 0.8f,
                                   -30.0f, 20 * 0.6f - 40 * 0.8f, 10.0f, 40 * 0.6f + 20 * 0.8f};
  for (size_t i = 0; i < x.size(); ++i) EXPECT_FLOAT_EQ(x[i], want[i]) << i;
}

TEST(Rope, MatchesReferenceAndPreservesPairNorms) {
  std::mt19937 rng(4);
  const int heads = 5, head_dim = 128, half = head_dim / 2;
  auto x = random_floats(heads * head_dim, rng);
  const auto orig = x;
  std::vector<float> cos(half), sin(half);
  const double pos = 37;
  for (int i = 0; i < half; ++i) {
    const double angle = pos / std::pow(500000.0, 2.0 * i / head_dim);
    cos[i] = static_cast<float>(std::cos(angle));
    sin[i] = static_cast<float>(std::sin(angle));
  }
  rope(x.data(), heads, head_dim, cos.data(), sin.data());
  for (int h = 0; h < heads; ++h) {
    for (int i = 0; i < half; ++i) {
      const double a = orig[h * head_dim + i], b = orig[h * head_dim + i + half];
      const float ra = x[h * head_dim + i], rb = x[h * head_dim + i + half];
      expect_close(ra, a * cos[i] - b * sin[i], 1e-5, 1e-6);
      expect_close(rb, b * cos[i] + a * sin[i], 1e-5, 1e-6);
      expect_close(std::hypot(ra, rb), std::hypot(a, b), 1e-5, 1e-6);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// relu2_mul

TEST(Relu2Mul, MatchesReference) {
  std::mt19937 rng(5);
  for (size_t n : {1u, 9u, 6913u}) {
    const auto g = random_floats(n, rng, -5, 5), u = random_floats(n, rng, -5, 5);
    std::vector<float> out(n, NAN);
    relu2_mul(g.data(), u.data(), out.data(), static_cast<int64_t>(n));
    for (size_t i = 0; i < n; ++i) {
      const double r = std::max(0.0, double{g[i]});
      expect_close(out[i], r * r * u[i], 1e-6, 1e-30);
      if (g[i] <= 0) {
        EXPECT_EQ(out[i], 0.0f);
      }
    }
  }
}

TEST(Relu2Mul, LargeGateStaysFinite) {
  const float g[3] = {1e4f, -1e4f, 3e4f}, u[3] = {3.0f, 5.0f, -100.0f};
  float out[3];
  relu2_mul(g, u, out, 3);
  EXPECT_FLOAT_EQ(out[0], 3e8f);
  EXPECT_EQ(out[1], 0.0f);
  EXPECT_FLOAT_EQ(out[2], -9e10f);
}

// ---------------------------------------------------------------------------------------------
// matvec_bf16

TEST(MatvecBf16, MatchesFp64Reference) {
  std::mt19937 rng(7);
  for (int64_t cols : {1, 7, 8, 9, 17, 2560, 2563}) {
    SCOPED_TRACE(cols);
    const int64_t rows = 13;
    std::vector<uint16_t> w(static_cast<size_t>(rows * cols));
    for (auto& v : w) v = f32_to_bf16(std::uniform_real_distribution<float>(-1, 1)(rng));
    const auto x = random_floats(static_cast<size_t>(cols), rng);
    std::vector<float> y(rows, NAN);
    matvec_bf16(w.data(), cols, x.data(), y.data(), 2, 11);
    for (int64_t r = 0; r < rows; ++r) {
      if (r < 2 || r >= 11) {
        EXPECT_TRUE(std::isnan(y[r])) << r;  // rows outside the range stay untouched
        continue;
      }
      double want = 0, mag = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const double p = double{bf16_to_f32(w[r * cols + k])} * x[k];
        want += p;
        mag += std::fabs(p);
      }
      // Relative to sum |w x|: cancellation makes a pure rtol on the result meaningless.
      EXPECT_LE(std::fabs(y[r] - want), 1e-5 * mag + 1e-30) << r;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// float16.h

TEST(Float16, Bf16RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = bf16_to_f32(bits);
    EXPECT_EQ(std::bit_cast<uint32_t>(f), h << 16);
    const uint16_t back = f32_to_bf16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(bf16_to_f32(back))) << h;
      ASSERT_EQ(back & 0x8000, bits & 0x8000) << h;
    } else {
      ASSERT_EQ(back, bits) << h;
    }
  }
}

TEST(Float16, F32ToBf16RoundsHalfToEven) {
  auto to_bf16 = [](uint32_t u) { return f32_to_bf16(std::bit_cast<float>(u)); };
  EXPECT_EQ(to_bf16(0x3F808000u), 0x3F80);  // tie, even below
  EXPECT_EQ(to_bf16(0x3F818000u), 0x3F82);  // tie, even above
  EXPECT_EQ(to_bf16(0x3F808001u), 0x3F81);  // just above the tie
  EXPECT_EQ(to_bf16(0x3F807FFFu), 0x3F80);  // just below the tie
  EXPECT_EQ(to_bf16(0xBF818000u), 0xBF82);  // negative tie
  EXPECT_EQ(to_bf16(0x7F7FFFFFu), 0x7F80);  // FLT_MAX rounds to infinity
  EXPECT_EQ(to_bf16(0x7F800000u), 0x7F80);  // +inf
  EXPECT_EQ(to_bf16(0xFF800000u), 0xFF80);  // -inf
  EXPECT_EQ(to_bf16(0x00000001u), 0x0000);  // smallest subnormal rounds to zero
  EXPECT_EQ(to_bf16(0x80000000u), 0x8000);  // -0
  EXPECT_EQ(to_bf16(0x00018000u), 0x0002);  // subnormal tie to even
  // A NaN whose payload lies only in the low 16 bits must not become infinity.
  EXPECT_TRUE(std::isnan(bf16_to_f32(to_bf16(0x7F800001u))));
  EXPECT_TRUE(std::isnan(bf16_to_f32(to_bf16(0xFFC00000u))));
}

TEST(Float16, F16RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const uint16_t bits = static_cast<uint16_t>(h);
    const float f = f16_to_f32(bits);
    const uint16_t back = f32_to_f16(f);
    if (std::isnan(f)) {
      ASSERT_EQ(bits & 0x7C00, 0x7C00) << h;
      ASSERT_NE(bits & 0x3FF, 0) << h;
      ASSERT_EQ(back & 0x7C00, 0x7C00);
      ASSERT_NE(back & 0x3FF, 0);
    } else {
      ASSERT_EQ(back, bits) << h;
    }
  }
}

// f32_to_f16_row (F16C where the CPU has it) against f32_to_f16 element by element: a sample of
// every exponent and sign, each f16 value's rounding ties and their neighbours, NaNs with
// payloads, and every row length up to 40 (the vector loop's tail).
TEST(Float16, RowConversionEqualsTheScalarOne) {
  std::vector<float> x;
  for (uint64_t bits = 0; bits <= 0xFFFFFFFFu; bits += 65521)
    x.push_back(std::bit_cast<float>(static_cast<uint32_t>(bits)));
  for (uint32_t h = 0; h < 0x7C00; ++h) {
    const float lo = f16_to_f32(static_cast<uint16_t>(h));
    const float hi = h + 1 == 0x7C00 ? 65536.0f : f16_to_f32(static_cast<uint16_t>(h + 1));
    const float tie = static_cast<float>((static_cast<double>(lo) + hi) / 2);
    for (float v : {tie, std::nextafter(tie, 0.0f), std::nextafter(tie, kInf)}) {
      x.push_back(v);
      x.push_back(-v);
    }
  }
  for (uint32_t nan : {0x7F800001u, 0x7FC00000u, 0x7FFFFFFFu, 0xFFC00123u, 0xFF800001u})
    x.push_back(std::bit_cast<float>(nan));
  x.push_back(kInf);
  x.push_back(-kInf);
  std::vector<uint16_t> got(x.size());
  f32_to_f16_row(x.data(), got.data(), static_cast<int64_t>(x.size()));
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(got[i], f32_to_f16(x[i])) << std::hex << std::bit_cast<uint32_t>(x[i]);
  for (int64_t n = 0; n <= 40; ++n) {
    std::vector<uint16_t> row(static_cast<size_t>(n) + 1, 0xABCD);
    f32_to_f16_row(x.data() + 1000, row.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(row[i], f32_to_f16(x[1000 + i])) << n << " " << i;
    ASSERT_EQ(row[n], 0xABCD) << "wrote past " << n;
  }
}

TEST(Float16, F16SpecialValues) {
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));     // smallest subnormal
  EXPECT_EQ(f16_to_f32(0x03FF), std::ldexp(1023.0f, -24));  // largest subnormal
  EXPECT_EQ(f16_to_f32(0x0400), std::ldexp(1.0f, -14));     // smallest normal
  EXPECT_EQ(f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(f16_to_f32(0x7C00), kInf);
  EXPECT_EQ(f16_to_f32(0xFC00), -kInf);
  EXPECT_EQ(f16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(f16_to_f32(0xC000), -2.0f);
  EXPECT_TRUE(std::signbit(f16_to_f32(0x8000)));

  EXPECT_EQ(f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7BFF);  // below the halfway point to 65536
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7C00);  // halfway rounds to even: infinity
  EXPECT_EQ(f32_to_f16(1e10f), 0x7C00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xFC00);
  EXPECT_EQ(f32_to_f16(kInf), 0x7C00);
  EXPECT_EQ(f32_to_f16(-kInf), 0xFC00);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie rounds to even (0)
  EXPECT_EQ(f32_to_f16(std::ldexp(3.0f, -25)), 0x0002);  // 1.5 ulp tie rounds to 2
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -24)), 0x8001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1023.5f, -24)), 0x0400);  // rounds up into the normals
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie to even
  EXPECT_EQ(f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3C02);  // tie to even
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
}

// Every quantizer rounds with round_half_even: it must be nearbyint over its whole range, halves
// included (to even), and keep a NaN for clamp_code to send to the low bound.
TEST(RoundHalfEven, EqualsNearbyintUpTo2To22) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> wide(-4194303.0f, 4194303.0f);
  std::vector<float> xs = {0.0f,  -0.0f,  0.5f,    -0.5f,       1.5f,       -1.5f,       2.5f,
                           -2.5f, 126.5f, -127.5f, 0.49999997f, 4194302.5f, -4194302.5f, 1e-30f};
  for (int i = 0; i < 100000; ++i) xs.push_back(wide(rng));
  for (int i = -1000; i <= 1000; ++i) xs.push_back(static_cast<float>(i) / 4);  // halves, quarters
  for (float x : xs) EXPECT_EQ(round_half_even(x), std::nearbyint(x)) << x;
  EXPECT_TRUE(std::isnan(round_half_even(std::numeric_limits<float>::quiet_NaN())));
}

}  // namespace
}  // namespace bitnet
