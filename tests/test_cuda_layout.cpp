// The GPU's packed ternary layout (src/kernels/cuda/ternary_layout.h), checked on the host so it
// runs in every build: round trips, zero-coded padding, and the shift-and-mask property the
// CUDA kernels build their dp4a / MMA operands from.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "kernels/cuda/ternary_layout.h"

namespace bitnet {
namespace {

using cuda_layout::kCudaKStep;
using cuda_layout::pack_row;
using cuda_layout::padded_k;
using cuda_layout::row_words;
using cuda_layout::unpack_row;

constexpr int64_t kLengths[] = {1, 15, 16, 17, 127, 128, 129, 352, 2560, 6913};

std::vector<int8_t> random_ternary(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-1, 1);
  std::vector<int8_t> t(n);
  for (auto& v : t) v = static_cast<int8_t>(d(rng));
  return t;
}

// The 2-bit code of weight k as the layout defines it, read straight from the words.
int code_at(const std::vector<uint32_t>& words, int64_t k) {
  const int64_t w = k / 16, j = (k % 16) / 4, b = k % 4;
  return static_cast<int>((words[static_cast<size_t>(w)] >> (8 * b + 2 * j)) & 3u);
}

TEST(CudaLayout, PaddingArithmetic) {
  EXPECT_EQ(kCudaKStep % 16, 0);
  for (int64_t k : kLengths) {
    SCOPED_TRACE(k);
    EXPECT_EQ(padded_k(k) % kCudaKStep, 0);
    EXPECT_GE(padded_k(k), k);
    EXPECT_LT(padded_k(k) - k, kCudaKStep);
    EXPECT_EQ(row_words(k) * 16, padded_k(k));
  }
  EXPECT_EQ(padded_k(128), 128);
  EXPECT_EQ(padded_k(129), 256);
  EXPECT_EQ(padded_k(2560), 2560);
  EXPECT_EQ(padded_k(6912), 6912);
  EXPECT_EQ(padded_k(6913), 7040);
}

TEST(CudaLayout, PackUnpackRoundTrip) {
  for (int64_t k : kLengths) {
    SCOPED_TRACE(k);
    std::mt19937 rng(static_cast<uint32_t>(1000 + k));
    for (int trial = 0; trial < 3; ++trial) {
      const auto t = random_ternary(static_cast<size_t>(k), rng);
      // Pre-filled with garbage: pack_row must overwrite every word, padding included.
      std::vector<uint32_t> words(static_cast<size_t>(row_words(k)), 0xDEADBEEFu);
      pack_row(t, words);
      std::vector<int8_t> back(static_cast<size_t>(k), 42);
      unpack_row(words, back);
      ASSERT_EQ(back, t) << "trial " << trial;
      for (int64_t i = 0; i < k; ++i) {
        ASSERT_EQ(code_at(words, i), t[static_cast<size_t>(i)] + 1) << "weight " << i;
        ASSERT_NE(code_at(words, i), 3) << "weight " << i;
      }
    }
  }
}

TEST(CudaLayout, PaddingIsZeroCoded) {
  for (int64_t k : kLengths) {
    SCOPED_TRACE(k);
    std::mt19937 rng(static_cast<uint32_t>(2000 + k));
    // All +1 and random rows: code 0 (not code 1, which is weight 0) past K in both.
    for (int trial = 0; trial < 2; ++trial) {
      auto t = random_ternary(static_cast<size_t>(k), rng);
      if (trial == 0) std::fill(t.begin(), t.end(), int8_t{1});
      std::vector<uint32_t> words(static_cast<size_t>(row_words(k)), 0xFFFFFFFFu);
      pack_row(t, words);
      for (int64_t i = k; i < padded_k(k); ++i) ASSERT_EQ(code_at(words, i), 0) << "weight " << i;
      // Whole words past K are zero.
      for (int64_t w = (k + 15) / 16; w < row_words(k); ++w)
        ASSERT_EQ(words[static_cast<size_t>(w)], 0u) << "word " << w;
    }
  }
}

// (word >> 2j) & 0x03030303 holds the codes of weights 16w + 4j .. 16w + 4j + 3 in bytes 0..3:
// the operand that meets four consecutive int8 activations in dp4a and in the MMA fragments.
TEST(CudaLayout, ShiftAndMaskGivesFourConsecutiveCodesInByteOrder) {
  for (int64_t k : kLengths) {
    SCOPED_TRACE(k);
    std::mt19937 rng(static_cast<uint32_t>(3000 + k));
    const auto t = random_ternary(static_cast<size_t>(k), rng);
    std::vector<uint32_t> words(static_cast<size_t>(row_words(k)));
    pack_row(t, words);
    for (int64_t w = 0; w < row_words(k); ++w) {
      for (int j = 0; j < 4; ++j) {
        const uint32_t operand = (words[static_cast<size_t>(w)] >> (2 * j)) & 0x03030303u;
        for (int b = 0; b < 4; ++b) {
          const int64_t index = 16 * w + 4 * j + b;
          const int want = index < k ? t[static_cast<size_t>(index)] + 1 : 0;
          // Little-endian byte b of the operand (as dp4a and the MMA read it).
          const uint8_t byte = static_cast<uint8_t>(operand >> (8 * b));
          ASSERT_EQ(byte, want) << "word " << w << " shift " << j << " byte " << b;
        }
      }
    }
    // The codes-times-activations identity the kernels use, in int32:
    //   sum_k t_k a_k = sum_k c_k a_k - sum_k a_k   (padding: c = 0 meets a = 0)
    std::uniform_int_distribution<int> da(-128, 127);
    std::vector<int8_t> a(static_cast<size_t>(padded_k(k)), 0);
    for (int64_t i = 0; i < k; ++i) a[static_cast<size_t>(i)] = static_cast<int8_t>(da(rng));
    int32_t direct = 0, sum = 0, via_codes = 0;
    for (int64_t i = 0; i < k; ++i) {
      direct += t[static_cast<size_t>(i)] * a[static_cast<size_t>(i)];
      sum += a[static_cast<size_t>(i)];
    }
    for (int64_t w = 0; w < row_words(k); ++w) {
      for (int j = 0; j < 4; ++j) {
        const uint32_t operand = (words[static_cast<size_t>(w)] >> (2 * j)) & 0x03030303u;
        for (int b = 0; b < 4; ++b) {
          const int code = static_cast<int>((operand >> (8 * b)) & 0xFFu);
          via_codes += code * a[static_cast<size_t>(16 * w + 4 * j + b)];
        }
      }
    }
    EXPECT_EQ(via_codes - sum, direct);
  }
}

TEST(CudaLayout, UnpackReadsOnlyTheRequestedPrefix) {
  std::mt19937 rng(4000);
  const auto t = random_ternary(129, rng);
  std::vector<uint32_t> words(static_cast<size_t>(row_words(129)));
  pack_row(t, words);
  std::vector<int8_t> prefix(17, 42);
  unpack_row(words, prefix);
  EXPECT_EQ(prefix, std::vector<int8_t>(t.begin(), t.begin() + 17));
}

}  // namespace
}  // namespace bitnet
