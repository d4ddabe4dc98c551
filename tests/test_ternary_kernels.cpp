// Ternary packing, activation quantization and every ternary matmul variant, checked against
// naive references written here (plain int8 ternary matrices, int64 accumulation).

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <tuple>
#include <vector>

#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "kernels/cpu/ternary_matmul.h"
#include "kernels/cpu/ternary_packing.h"

namespace bitnet {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<int8_t> random_ternary(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-1, 1);
  std::vector<int8_t> t(n);
  for (auto& v : t) v = static_cast<int8_t>(d(rng));
  return t;
}

std::vector<float> random_floats(size_t n, std::mt19937& rng, float lo = -3.0f, float hi = 3.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

// A packed matrix built from plain ternary values t[rows][cols].
TernaryMatrix make_matrix(TernaryFormat format, const std::vector<int8_t>& t, int64_t rows,
                          int64_t cols, std::vector<float> row_scales) {
  TernaryMatrix w = TernaryMatrix::zeros(format, rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    pack_ternary_row(w, r, std::span<const int8_t>(t.data() + r * cols, static_cast<size_t>(cols)));
  w.row_scales = std::move(row_scales);
  return w;
}

// y[n][r] = float(sum_k q[n][k] * t[r][k]) / scale[n] * row_scale[r], summed in int64.
std::vector<float> naive_matmul(const std::vector<int8_t>& t, int64_t rows, int64_t cols,
                                const std::vector<float>& row_scales, const QuantizedActs& acts,
                                int64_t n_tokens, int64_t y_stride) {
  std::vector<float> y(static_cast<size_t>(n_tokens * y_stride), kNaN);
  for (int64_t n = 0; n < n_tokens; ++n) {
    for (int64_t r = 0; r < rows; ++r) {
      int64_t acc = 0;
      for (int64_t k = 0; k < cols; ++k)
        acc += int64_t{acts.q[n * acts.stride + k]} * t[r * cols + k];
      EXPECT_EQ(acc, static_cast<int32_t>(acc));
      y[n * y_stride + r] =
          static_cast<float>(static_cast<int32_t>(acc)) / acts.scale[n] * row_scales[r];
    }
  }
  return y;
}

// Bitwise float equality that treats NaN == NaN (untouched poison).
::testing::AssertionResult same_floats(const std::vector<float>& got,
                                       const std::vector<float>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size differs";
  for (size_t i = 0; i < got.size(); ++i) {
    const bool both_nan = std::isnan(got[i]) && std::isnan(want[i]);
    if (!both_nan && got[i] != want[i]) {
      return ::testing::AssertionFailure()
             << "index " << i << ": got " << got[i] << ", want " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------------------------------------
// Packing

class TernaryPackingTest : public ::testing::TestWithParam<TernaryFormat> {};

TEST_P(TernaryPackingTest, RoundTripAndPadding) {
  const TernaryFormat format = GetParam();
  const int64_t block = ternary_block(format);
  std::mt19937 rng(1234);
  for (int64_t rows : {1, 15, 16, 17, 40}) {
    for (int64_t cols : {1, 3, 64, 255, 256, 257, 319, 320, 321, 511, 640, 641, 2560, 6912}) {
      SCOPED_TRACE(::testing::Message() << rows << "x" << cols);
      const auto t = random_ternary(static_cast<size_t>(rows * cols), rng);
      const int64_t padded = padded_cols(format, cols);
      EXPECT_EQ(padded % block, 0);
      EXPECT_GE(padded, cols);
      EXPECT_LT(padded - cols, block);
      ASSERT_EQ(packed_row_bytes(format, cols), padded / block * 64);
      EXPECT_GE(activation_stride(cols), padded);
      const TernaryMatrix m = make_matrix(format, t, rows, cols, {});
      const int64_t padded_rows = (rows + 15) / 16 * 16;
      ASSERT_EQ(m.bytes(), padded_rows * packed_row_bytes(format, cols));
      ASSERT_EQ(m.storage.size(), static_cast<size_t>(m.bytes()));

      for (int64_t r = 0; r < padded_rows; ++r) {
        std::vector<int8_t> back(static_cast<size_t>(cols), 99);
        unpack_ternary_row(m, r, back);
        if (r < rows) {
          ASSERT_TRUE(std::equal(back.begin(), back.end(), t.begin() + r * cols)) << r;
        } else {  // padding rows are zero weights
          ASSERT_EQ(back, std::vector<int8_t>(static_cast<size_t>(cols), 0)) << r;
        }
        for (int64_t k = 0; k < cols; ++k)
          ASSERT_EQ(ternary_at(m, r, k), r < rows ? t[r * cols + k] : 0) << r << "," << k;
        for (int64_t k = cols; k < padded; ++k) ASSERT_EQ(ternary_at(m, r, k), 0) << r << "," << k;
      }
      if (format == TernaryFormat::i2) {
        for (uint8_t byte : m.storage)  // no code 3 anywhere
          for (int i = 0; i < 4; ++i) ASSERT_NE((byte >> (2 * i)) & 3, 3);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(BothFormats, TernaryPackingTest,
                         ::testing::Values(TernaryFormat::i2, TernaryFormat::t5),
                         [](const auto& info) { return std::string(format_name(info.param)); });

TEST(TernaryPacking, T5DigitsOfEveryValue) {
  // p = ceil(v * 256 / 243) and digit i = (3 * ((p * 3^i) mod 256)) >> 8, digit 0 most significant.
  for (int v = 0; v < 243; ++v) {
    const uint8_t p = t5_encode(v);
    EXPECT_EQ(p, static_cast<uint8_t>(std::ceil(v * 256.0 / 243.0))) << v;
    int rest = v;
    for (int i = 4; i >= 0; --i, rest /= 3) {
      int x = p;
      for (int n = 0; n < i; ++n) x = (x * 3) % 256;
      ASSERT_EQ((3 * x) >> 8, rest % 3) << "v " << v << ", digit " << i;
    }
  }
  EXPECT_EQ(kT5ZeroByte, t5_encode(121));
}

// Where each weight lands, by the formula in ternary_packing.h: byte j of block b of row r is at
//   ((r / 16 * blocks + b) * 16 + j / 4) * 64 + r % 16 * 4 + j % 4.
TEST(TernaryPacking, T5DocumentedLayout) {
  // Byte j of block b holds weights 320b + 64i + j as digits d_i = t + 1, v = sum d_i * 3^(4 - i).
  const int64_t rows = 20, cols = 700;  // two groups of three blocks
  std::vector<int8_t> t(static_cast<size_t>(rows * cols), 0);
  t[0 * cols + 2] = 1;                  // row 0, b 0, i 0, j 2: digit 0 = 2
  t[3 * cols + 64 * 4 + 63] = -1;       // row 3, b 0, i 4, j 63: digit 4 = 0
  t[17 * cols + 320 + 64 * 2 + 5] = 1;  // row 17, b 1, i 2, j 5: digit 2 = 2
  const TernaryMatrix m = make_matrix(TernaryFormat::t5, t, rows, cols, {});
  ASSERT_EQ(m.storage.size(), 32u * 192u);  // 32 rows of three blocks
  for (size_t byte = 0; byte < m.storage.size(); ++byte) {
    int v = 121;
    if (byte == 2) v += 81;                             // (0 * 16 + 0) * 64 + 0 * 4 + 2
    if (byte == 15 * 64 + 3 * 4 + 3) v -= 1;            // j 63: vector 15, lane 3, byte 3
    if (byte == (4 * 16 + 1) * 64 + 1 * 4 + 1) v += 9;  // group 1 block 1, vector 1, lane 1
    EXPECT_EQ(m.storage[byte], t5_encode(v)) << byte;
  }
}

TEST(TernaryPacking, I2DocumentedLayout) {
  // Weight k = 256b + 64i + j lives at bits 2i..2i+1 of byte j of block b, as code t + 1.
  const int64_t rows = 18, cols = 600;  // two groups of three blocks
  std::vector<int8_t> t(static_cast<size_t>(rows * cols), 0);
  t[0 * cols + 130] = 1;                // row 0, b 0, i 2, j 2
  t[5 * cols + 63] = -1;                // row 5, b 0, i 0, j 63
  t[16 * cols + 256 + 64 * 3 + 5] = 1;  // row 16, b 1, i 3, j 5
  const TernaryMatrix m = make_matrix(TernaryFormat::i2, t, rows, cols, {});
  ASSERT_EQ(m.storage.size(), 32u * 192u);
  for (size_t byte = 0; byte < m.storage.size(); ++byte) {
    uint8_t want = 0x55;
    if (byte == 2) want = static_cast<uint8_t>((0x55 & ~(3 << 4)) | (2 << 4));
    if (byte == 15 * 64 + 5 * 4 + 3) want = static_cast<uint8_t>(0x55 & ~3);
    if (byte == (4 * 16 + 1) * 64 + 0 * 4 + 1)
      want = static_cast<uint8_t>((0x55 & ~(3 << 6)) | (2 << 6));
    EXPECT_EQ(m.storage[byte], want) << byte;
  }
}

// ---------------------------------------------------------------------------------------------
// Activation quantization

// Independent reference: s in fp32 as specified; the product x * s is exact in fp64 and then
// rounded once to fp32 (what an fp32 multiply does); round half to even by hand.
struct RefQuant {
  float scale;
  std::vector<int> q;
  int sum;
};

RefQuant ref_quantize(const float* x, int64_t cols) {
  double max_abs = 0;
  for (int64_t k = 0; k < cols; ++k)
    max_abs = std::max(max_abs, std::fabs(static_cast<double>(x[k])));
  RefQuant r;
  r.scale = 127.0f / std::max(static_cast<float>(max_abs), 1e-5f);
  r.sum = 0;
  for (int64_t k = 0; k < cols; ++k) {
    const double p = static_cast<double>(static_cast<float>(static_cast<double>(x[k]) * r.scale));
    const double fl = std::floor(p), frac = p - fl;
    double v = frac > 0.5 ? fl + 1 : frac < 0.5 ? fl : (std::fmod(fl, 2.0) == 0 ? fl : fl + 1);
    v = std::min(127.0, std::max(-128.0, v));
    r.q.push_back(static_cast<int>(v));
    r.sum += static_cast<int>(v);
    // The rounding never moves further than half a step from the exact product.
    if (v > -128 && v < 127) {
      EXPECT_LE(std::fabs(v - static_cast<double>(x[k]) * r.scale), 0.5 + 1e-4);
    }
  }
  return r;
}

// The ISAs this CPU runs: each has its own activation quantization variant.
std::vector<CpuIsa> host_isas() {
  std::vector<CpuIsa> isas;
  for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512_vnni})
    if (CpuFeatures::host().supports(isa)) isas.push_back(isa);
  return isas;
}

void expect_matches_reference(const std::vector<float>& x, int64_t n_tokens, int64_t cols,
                              int64_t x_stride) {
  for (CpuIsa isa : host_isas()) {
    SCOPED_TRACE(isa_name(isa));
    QuantizedActs acts;
    quantize_activations(x.data(), x_stride, n_tokens, cols, acts, isa);
    ASSERT_EQ(acts.cols, cols);
    ASSERT_EQ(acts.stride, activation_stride(cols));
    ASSERT_GE(acts.q.size(), static_cast<size_t>(n_tokens * acts.stride));
    for (int64_t n = 0; n < n_tokens; ++n) {
      SCOPED_TRACE(n);
      const RefQuant ref = ref_quantize(x.data() + n * x_stride, cols);
      EXPECT_EQ(acts.scale[n], ref.scale);
      EXPECT_EQ(acts.sum[n], ref.sum);
      for (int64_t k = 0; k < cols; ++k) ASSERT_EQ(acts.q[n * acts.stride + k], ref.q[k]) << k;
      for (int64_t k = cols; k < acts.stride; ++k) ASSERT_EQ(acts.q[n * acts.stride + k], 0) << k;
    }
  }
}

TEST(QuantizeActivations, MatchesReferenceOnRandomRows) {
  std::mt19937 rng(7);
  for (int64_t cols : {1, 5, 15, 16, 17, 256, 257, 2560, 6912}) {
    SCOPED_TRACE(cols);
    const int64_t stride = cols + 3;
    auto x = random_floats(static_cast<size_t>(4 * stride), rng);
    expect_matches_reference(x, 4, cols, stride);
  }
}

TEST(QuantizeActivations, RoundsHalfToEven) {
  // max |x| = 127 makes s exactly 1, so x * s is exactly x.
  const std::vector<float> x = {127.0f, 2.5f,  3.5f,   -2.5f, 0.5f,
                                1.5f,   -0.5f, 126.5f, -3.5f, 2.4999998f};
  const std::vector<int> want = {127, 2, 4, -2, 0, 2, 0, 126, -4, 2};
  QuantizedActs acts;
  quantize_activations(x.data(), 0, 1, static_cast<int64_t>(x.size()), acts);
  ASSERT_EQ(acts.scale[0], 1.0f);
  int sum = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    EXPECT_EQ(acts.q[k], want[k]) << x[k];
    sum += want[k];
  }
  EXPECT_EQ(acts.sum[0], sum);
  expect_matches_reference(x, 1, static_cast<int64_t>(x.size()), 0);
}

TEST(QuantizeActivations, NonFiniteInputsGiveTheSameCodesOnEveryIsa) {
  // A model with non-finite weights loads with a warning; its activations must still quantize
  // to defined codes, the same on every variant: NaN to -128.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (const std::vector<float>& x :
       {std::vector<float>(37, 0.5f), std::vector<float>(300, -2.0f)}) {
    for (float bad : {nan, -nan, inf, -inf}) {
      std::vector<float> row = x;
      row[3] = bad;
      row.back() = nan;
      const int64_t cols = static_cast<int64_t>(row.size());
      QuantizedActs scalar;
      quantize_activations(row.data(), cols, 1, cols, scalar, CpuIsa::scalar);
      EXPECT_EQ(scalar.q[static_cast<size_t>(cols - 1)], -128);
      for (CpuIsa isa : host_isas()) {
        SCOPED_TRACE(isa_name(isa));
        QuantizedActs acts;
        quantize_activations(row.data(), cols, 1, cols, acts, isa);
        EXPECT_EQ(acts.sum[0], scalar.sum[0]);
        for (int64_t k = 0; k < cols; ++k) ASSERT_EQ(acts.q[k], scalar.q[k]) << k;
      }
    }
  }
}

TEST(QuantizeActivations, ZeroRow) {
  std::vector<float> x(300, 0.0f);
  for (CpuIsa isa : host_isas()) {
    QuantizedActs acts;
    quantize_activations(x.data(), 300, 1, 300, acts, isa);
    EXPECT_EQ(acts.scale[0], 127.0f / 1e-5f) << isa_name(isa);
    EXPECT_EQ(acts.sum[0], 0);
    for (int8_t q : acts.q) ASSERT_EQ(q, 0);
  }
}

TEST(QuantizeActivations, ExtremeMagnitudes) {
  const int64_t cols = 6;
  const std::vector<float> x = {
      1e30f,  -1e30f,  5e29f,  0.0f,  -2.5e29f, 1e29f,    // huge
      1e-30f, -1e-30f, 1e-30f, 0.0f,  3e-31f,   -7e-31f,  // tiny: below the 1e-5 floor
      1e30f,  1.0f,    -1.0f,  1e20f, -1e25f,   0.0f,     // one huge value
      4e-6f,  -8e-6f,  1e-6f,  0.0f,  -1e-6f,   2e-6f,    // below the floor, not negligible
  };
  expect_matches_reference(x, 4, cols, cols);
  QuantizedActs acts;
  quantize_activations(x.data(), cols, 4, cols, acts);
  EXPECT_EQ(acts.q[0], 127);
  EXPECT_EQ(acts.q[1], -127);
  for (int64_t k = 0; k < cols; ++k) EXPECT_EQ(acts.q[acts.stride + k], 0);
  EXPECT_EQ(acts.scale[1], 127.0f / 1e-5f);
  EXPECT_EQ(acts.q[2 * acts.stride + 0], 127);
  for (int64_t k = 1; k < cols; ++k) EXPECT_EQ(acts.q[2 * acts.stride + k], 0);
  EXPECT_EQ(acts.q[3 * acts.stride + 1], -102);  // -8e-6 * 1.27e7 = -101.6
}

TEST(QuantizeActivations, NegativeMaxAbsAndClamp) {
  const std::vector<float> x = {-1.0f, 0.5f, -0.25f, 0.999f, -0.999999f};
  QuantizedActs acts;
  quantize_activations(x.data(), 5, 1, 5, acts);
  EXPECT_EQ(acts.q[0], -127);
  for (int64_t k = 0; k < 5; ++k) {
    EXPECT_GE(acts.q[k], -128);
    EXPECT_LE(acts.q[k], 127);
  }
  int sum = 0;
  for (int64_t k = 0; k < 5; ++k) sum += acts.q[k];
  EXPECT_EQ(acts.sum[0], sum);
  expect_matches_reference(x, 1, 5, 5);

  // Many random rows whose extreme is negative: never below -127, sums consistent.
  std::mt19937 rng(99);
  auto y = random_floats(64 * 100, rng, -1.0f, 0.5f);
  for (int r = 0; r < 64; ++r)
    y[static_cast<size_t>(r * 100 + r)] = -1.0f - static_cast<float>(r) * 0.37f;
  quantize_activations(y.data(), 100, 64, 100, acts);
  for (int r = 0; r < 64; ++r) {
    int s = 0;
    for (int k = 0; k < 100; ++k) {
      ASSERT_GE(acts.q[r * acts.stride + k], -127);
      s += acts.q[r * acts.stride + k];
    }
    EXPECT_EQ(acts.q[r * acts.stride + r], -127);
    EXPECT_EQ(acts.sum[r], s);
  }
  expect_matches_reference(y, 64, 100, 100);
}

TEST(QuantizeActivations, ReuseWithDifferentShapes) {
  std::mt19937 rng(3);
  QuantizedActs acts;
  auto a = random_floats(3 * 700, rng);
  quantize_activations(a.data(), 700, 3, 700, acts);
  auto b = random_floats(2 * 300, rng);
  quantize_activations(b.data(), 300, 2, 300, acts);
  EXPECT_EQ(acts.cols, 300);
  EXPECT_EQ(acts.stride, 512);
  for (int n = 0; n < 2; ++n)
    for (int64_t k = 300; k < 512; ++k) ASSERT_EQ(acts.q[n * 512 + k], 0);
  expect_matches_reference(b, 2, 300, 300);
}

// ---------------------------------------------------------------------------------------------
// Matmul kernels: every format x every implementation available on this CPU

using KernelCase = std::tuple<TernaryFormat, TernaryKernel>;

class TernaryKernelTest : public ::testing::TestWithParam<KernelCase> {
 protected:
  void SetUp() override {
    if (!kernel_available(kernel())) GTEST_SKIP() << kernel_name(kernel()) << " not on this CPU";
    kernel_fn_ = ternary_matmul_kernel(kernel());
  }
  TernaryFormat format() const { return std::get<0>(GetParam()); }
  TernaryKernel kernel() const { return std::get<1>(GetParam()); }

  TernaryMatrix matrix(const std::vector<int8_t>& t, int64_t rows, int64_t cols,
                       std::vector<float> scales) const {
    return make_matrix(format(), t, rows, cols, std::move(scales));
  }

  // Runs the kernel on rows [row_begin, row_end) into a NaN-poisoned buffer.
  std::vector<float> run(const TernaryMatrix& w, const QuantizedActs& acts, int64_t n_tokens,
                         int64_t y_stride, int64_t row_begin, int64_t row_end) const {
    std::vector<float> y(static_cast<size_t>(n_tokens * y_stride), kNaN);
    kernel_fn_(w, acts, n_tokens, y.data(), y_stride, row_begin, row_end);
    return y;
  }

  // Checks against the naive int8 reference and the scalar kernel, and that exactly the rows
  // [0, rows) of every token were written.
  void expect_exact(const std::vector<int8_t>& t, const TernaryMatrix& w, const QuantizedActs& acts,
                    int64_t n_tokens, int64_t y_stride) const {
    const auto want = naive_matmul(t, w.rows, w.cols, w.row_scales, acts, n_tokens, y_stride);
    std::vector<float> scalar(static_cast<size_t>(n_tokens * y_stride), kNaN);
    ternary_matmul_scalar(w, acts, n_tokens, scalar.data(), y_stride, 0, w.rows);
    ASSERT_TRUE(same_floats(scalar, want));
    const auto got = run(w, acts, n_tokens, y_stride, 0, w.rows);
    ASSERT_TRUE(same_floats(got, want));
    for (int64_t n = 0; n < n_tokens; ++n)
      for (int64_t r = 0; r < y_stride; ++r)
        ASSERT_EQ(std::isnan(got[n * y_stride + r]), r >= w.rows) << n << "," << r;
  }

  TernaryMatmulFn kernel_fn_ = nullptr;
};

TEST_P(TernaryKernelTest, MatchesReferencesOnRandomInputs) {
  std::mt19937 rng(2024);
  for (int64_t rows : {1, 3, 5, 17, 64}) {
    for (int64_t cols : {1, 31, 255, 257, 319, 321, 641, 2560, 6912}) {
      const auto t = random_ternary(static_cast<size_t>(rows * cols), rng);
      auto scales = random_floats(static_cast<size_t>(rows), rng, 0.1f, 4.0f);
      const TernaryMatrix w = matrix(t, rows, cols, scales);
      for (int64_t n_tokens : {1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 33}) {
        SCOPED_TRACE(::testing::Message() << rows << "x" << cols << ", " << n_tokens << " tokens");
        const auto x = random_floats(static_cast<size_t>(n_tokens * cols), rng);
        QuantizedActs acts;
        quantize_activations(x.data(), cols, n_tokens, cols, acts);
        expect_exact(t, w, acts, n_tokens, rows + 3);  // gaps between tokens stay untouched
      }
    }
  }
}

// Hand-built activations (q = -128 cannot come from quantize_activations).
QuantizedActs constant_acts(int64_t n_tokens, int64_t cols, auto q_of) {
  QuantizedActs acts;
  acts.resize(n_tokens, cols);
  for (int64_t n = 0; n < n_tokens; ++n) {
    int32_t sum = 0;
    for (int64_t k = 0; k < cols; ++k) {
      acts.q[n * acts.stride + k] = static_cast<int8_t>(q_of(n, k));
      sum += acts.q[n * acts.stride + k];
    }
    acts.sum[n] = sum;
    acts.scale[n] = 1.0f + 0.25f * static_cast<float>(n);
  }
  return acts;
}

TEST_P(TernaryKernelTest, ExtremeValuesDoNotSaturate) {
  const int64_t rows = 17, cols = 6912;
  const std::vector<float> scales(rows, 1.0f);
  for (int weight : {1, -1}) {
    const std::vector<int8_t> t(static_cast<size_t>(rows * cols), static_cast<int8_t>(weight));
    const TernaryMatrix w = matrix(t, rows, cols, scales);
    for (int qv : {127, -128}) {
      for (int64_t n_tokens : {1, 3, 4, 5, 13}) {
        SCOPED_TRACE(::testing::Message()
                     << "t = " << weight << ", q = " << qv << ", " << n_tokens << " tokens");
        const QuantizedActs acts =
            constant_acts(n_tokens, cols, [&](int64_t, int64_t) { return qv; });
        const auto got = run(w, acts, n_tokens, rows, 0, rows);
        for (int64_t n = 0; n < n_tokens; ++n) {
          const float want = static_cast<float>(int64_t{weight} * qv * cols) / acts.scale[n];
          for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(got[n * rows + r], want) << n << "," << r;
        }
        expect_exact(t, w, acts, n_tokens, rows);
      }
    }
  }
}

// Long rows push the accumulated sums far beyond what the model shapes reach (the t5 GEMV's
// carry identity needs a fallback past 32767 columns, the streamed GEMM's scaled t5 codes past
// 131071).
TEST_P(TernaryKernelTest, LongRowsStayExact) {
  const int64_t rows = 5;
  std::mt19937 rng(9);
  for (int64_t cols : {32767, 32768, 40000, 131071, 140000}) {
    for (int weight : {1, -1}) {
      const std::vector<int8_t> t(static_cast<size_t>(rows * cols), static_cast<int8_t>(weight));
      const TernaryMatrix w = matrix(t, rows, cols, std::vector<float>(rows, 1.0f));
      for (int64_t n_tokens : {1, 2, 4, 5, 9, 13}) {
        SCOPED_TRACE(::testing::Message()
                     << cols << " cols, t = " << weight << ", " << n_tokens << " tokens");
        const QuantizedActs acts =
            constant_acts(n_tokens, cols, [](int64_t n, int64_t) { return n % 2 ? 127 : -128; });
        expect_exact(t, w, acts, n_tokens, rows);
      }
    }
    const auto t = random_ternary(static_cast<size_t>(rows * cols), rng);
    const TernaryMatrix w = matrix(t, rows, cols, random_floats(rows, rng, 0.5f, 2.0f));
    const QuantizedActs acts = constant_acts(1, cols, [&](int64_t, int64_t k) {
      return static_cast<int>((k * 2654435761u) % 256) - 128;
    });
    expect_exact(t, w, acts, 1, rows);
  }
}

TEST_P(TernaryKernelTest, ZerosAndAlternatingSigns) {
  const int64_t rows = 20, cols = 2560;
  std::mt19937 rng(5);
  const auto scales = random_floats(rows, rng, 0.5f, 2.0f);
  // All-zero weights against nonzero activations, and nonzero weights against zero activations.
  const std::vector<int8_t> zeros(static_cast<size_t>(rows * cols), 0);
  const auto random_t = random_ternary(static_cast<size_t>(rows * cols), rng);
  for (int64_t n_tokens : {1, 6}) {
    const QuantizedActs max_acts =
        constant_acts(n_tokens, cols, [](int64_t, int64_t) { return -128; });
    const QuantizedActs zero_acts =
        constant_acts(n_tokens, cols, [](int64_t, int64_t) { return 0; });
    for (const auto& [t, acts] : {std::pair{&zeros, &max_acts}, std::pair{&random_t, &zero_acts}}) {
      const auto got = run(matrix(*t, rows, cols, scales), *acts, n_tokens, rows, 0, rows);
      for (float v : got) ASSERT_EQ(v, 0.0f);
    }
    // Alternating signs in weights and activations.
    std::vector<int8_t> alt(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < cols; ++k)
        alt[r * cols + k] = static_cast<int8_t>(((k + r) % 2) ? 1 : -1);
    const QuantizedActs alt_acts = constant_acts(
        n_tokens, cols, [](int64_t n, int64_t k) { return ((k + n) % 2) ? 127 : -128; });
    expect_exact(alt, matrix(alt, rows, cols, scales), alt_acts, n_tokens, rows);
  }
}

TEST_P(TernaryKernelTest, RowSubRangeLeavesOtherRowsUntouched) {
  const int64_t rows = 70, cols = 700;
  std::mt19937 rng(11);
  const auto t = random_ternary(static_cast<size_t>(rows * cols), rng);
  const auto scales = random_floats(rows, rng, 0.5f, 2.0f);
  const TernaryMatrix w = matrix(t, rows, cols, scales);
  for (int64_t n_tokens : {1, 2, 5, 33}) {
    const auto x = random_floats(static_cast<size_t>(n_tokens * cols), rng);
    QuantizedActs acts;
    quantize_activations(x.data(), cols, n_tokens, cols, acts);
    const auto full = naive_matmul(t, rows, cols, scales, acts, n_tokens, rows);
    for (auto [begin, end] : {std::pair<int64_t, int64_t>{5, 23},
                              {0, 1},
                              {69, 70},
                              {7, 7},
                              {16, 32},
                              {3, 60},
                              {32, 70}}) {
      SCOPED_TRACE(::testing::Message()
                   << "[" << begin << ", " << end << "), " << n_tokens << " tokens");
      const auto got = run(w, acts, n_tokens, rows, begin, end);
      for (int64_t n = 0; n < n_tokens; ++n) {
        for (int64_t r = 0; r < rows; ++r) {
          const float v = got[n * rows + r];
          if (r >= begin && r < end) {
            ASSERT_EQ(v, full[n * rows + r]) << n << "," << r;
          } else {
            ASSERT_TRUE(std::isnan(v)) << n << "," << r;
          }
        }
      }
    }
  }
}

TEST_P(TernaryKernelTest, ThreadSplitsMatchSingleCall) {
  std::mt19937 rng(77);
  for (int64_t rows : {1, 16, 64, 100}) {
    const int64_t cols = 513;
    const auto t = random_ternary(static_cast<size_t>(rows * cols), rng);
    const auto scales = random_floats(static_cast<size_t>(rows), rng, 0.5f, 2.0f);
    const TernaryMatrix w = matrix(t, rows, cols, scales);
    for (int64_t n_tokens : {1, 3, 9}) {
      const auto x = random_floats(static_cast<size_t>(n_tokens * cols), rng);
      QuantizedActs acts;
      quantize_activations(x.data(), cols, n_tokens, cols, acts);
      const auto single = run(w, acts, n_tokens, rows, 0, rows);
      ASSERT_TRUE(same_floats(single, naive_matmul(t, rows, cols, scales, acts, n_tokens, rows)));
      for (int threads : {1, 2, 3}) {
        SCOPED_TRACE(::testing::Message()
                     << rows << " rows, " << n_tokens << " tokens, " << threads << " threads");
        ThreadPool pool(threads);
        std::vector<float> y(static_cast<size_t>(n_tokens * rows), kNaN);
        // The same contiguous split ternary_matmul uses, with this kernel.
        pool.parallel_for(rows, 16, [&](int64_t begin, int64_t end) {
          kernel_fn_(w, acts, n_tokens, y.data(), rows, begin, end);
        });
        ASSERT_TRUE(same_floats(y, single));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllKernels, TernaryKernelTest,
                         ::testing::Combine(::testing::Values(TernaryFormat::i2, TernaryFormat::t5),
                                            ::testing::ValuesIn(kAllTernaryKernels)),
                         [](const auto& info) {
                           return std::string(format_name(std::get<0>(info.param))) + "_" +
                                  kernel_name(std::get<1>(info.param));
                         });

// The public entry, with the pool, for every CpuIsa this CPU has.
TEST(TernaryMatmul, ThreadPoolsGiveIdenticalResults) {
  std::mt19937 rng(78);
  const int64_t rows = 200, cols = 2560;
  const auto t = random_ternary(static_cast<size_t>(rows * cols), rng);
  const auto scales = random_floats(static_cast<size_t>(rows), rng, 0.5f, 2.0f);
  for (TernaryFormat format : {TernaryFormat::i2, TernaryFormat::t5}) {
    const TernaryMatrix w = make_matrix(format, t, rows, cols, scales);
    for (int64_t n_tokens : {1, 2, 4, 33}) {
      const auto x = random_floats(static_cast<size_t>(n_tokens * cols), rng);
      QuantizedActs acts;
      quantize_activations(x.data(), cols, n_tokens, cols, acts);
      const auto want = naive_matmul(t, rows, cols, scales, acts, n_tokens, rows);
      for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512_vnni}) {
        if (isa == CpuIsa::avx2 && !CpuFeatures::host().avx2) continue;
        if (isa == CpuIsa::avx512_vnni && !CpuFeatures::host().avx512_vnni) continue;
        for (int threads : {1, 2, 3}) {
          SCOPED_TRACE(::testing::Message() << format_name(format) << ", " << isa_name(isa) << ", "
                                            << n_tokens << " tokens, " << threads << " threads");
          ThreadPool pool(threads);
          std::vector<float> y(static_cast<size_t>(n_tokens * rows), kNaN);
          ternary_matmul(pool, isa, w, acts, n_tokens, y.data(), rows);
          ASSERT_TRUE(same_floats(y, want));
          for (float v : y) ASSERT_FALSE(std::isnan(v));
        }
      }
    }
  }
}

TEST(TernaryKernelSelection, BestKernelPerIsa) {
  EXPECT_EQ(ternary_matmul_kernel(CpuIsa::scalar), &ternary_matmul_scalar);
  EXPECT_EQ(ternary_matmul_kernel(TernaryKernel::scalar), &ternary_matmul_scalar);
  EXPECT_EQ(parse_isa("avx512"), CpuIsa::avx512_vnni);
  const CpuFeatures& f = CpuFeatures::host();
  EXPECT_EQ(best_kernel(CpuIsa::avx2) == TernaryKernel::avx_vnni, f.avx_vnni);
  EXPECT_EQ(best_kernel(CpuIsa::avx512_vnni),
            f.amd_zen4 ? TernaryKernel::avx512_zen4 : TernaryKernel::avx512);
  EXPECT_EQ(kernel_available(TernaryKernel::scalar), true);
}

}  // namespace
}  // namespace bitnet
