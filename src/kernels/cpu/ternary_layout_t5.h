#pragma once
// The "t5" ternary layout: 5 weights per byte (1.6 bits per weight), 20% fewer bytes than i2.
//
// A row is a sequence of blocks of kT5Block = 320 weights in 64 bytes (how a matrix arranges its
// rows' blocks: ternary_packing.h). Within block b, byte j (j < 64) holds the five
// weights k = 320b + 64i + j, i = 0..4, as base-3 digits d_i = t + 1 in {0, 1, 2}, digit 0 the
// most significant:
//   v = d_0 * 81 + d_1 * 27 + d_2 * 9 + d_3 * 3 + d_4            (0 <= v < 243)
// The byte stores v pre-scaled to the full byte range, p = ceil(v * 256 / 243), so digit i is
//   x_i = (p * 3^i) mod 256,   d_i = (3 * x_i) >> 8
// (multiplying by 3 shifts the next digit into the byte's "integer part"). Kernels may decode
// with that arithmetic or with a byte lookup table indexed by p. Padding weights (k >= cols) are
// t = 0, so an all-padding byte is v = 121.
//
// As with i2, byte lane j of plane i covers 64 consecutive weights 64i + j, and the dword at byte
// 4m of a block holds weights 64i + 4m .. 64i + 4m + 3 of plane i.

#include <cstdint>

namespace bitnet {

constexpr int64_t kT5Block = 320;
constexpr int64_t kT5BlockBytes = 64;
constexpr int kT5Planes = 5;
static_assert(kT5Block == kT5Planes * kT5BlockBytes, "five weights per byte");
static_assert(kT5BlockBytes == 64, "one t5 block is one 512-bit vector");

// In 16 bits (v * 256 + 242 < 2^16), so that a loop of them vectorizes, division included.
constexpr uint8_t t5_encode(int v) {
  return static_cast<uint8_t>(static_cast<uint16_t>(v * 256 + 242) / 243);
}

constexpr int t5_digit(uint8_t p, int i) {
  int x = p;
  for (int n = 0; n < i; ++n) x = (x * 3) & 0xFF;
  return (x * 3) >> 8;
}

constexpr bool t5_code_round_trips() {
  for (int v = 0; v < 243; ++v) {
    int rest = v;
    for (int i = 4; i >= 0; --i) {
      if (t5_digit(t5_encode(v), i) != rest % 3) return false;
      rest /= 3;
    }
  }
  return true;
}
static_assert(t5_code_round_trips(), "every 5-digit value decodes back to its digits");

// (3x) >> 8 = floor(3x/4) >> 6, and floor(3x/4) = x - ceil(ceil(x/2)/2): two rounding-up byte
// averages against zero (vpavgb), a subtract, a shift and a mask, no multiply.
constexpr int t5_digit_by_averages(int x) {
  const int quarter_up = ((x + 1) / 2 + 1) / 2;
  return (x - quarter_up) >> 6;
}

constexpr bool t5_averages_give_every_digit() {
  for (int x = 0; x < 256; ++x) {
    if (t5_digit_by_averages(x) != t5_digit(static_cast<uint8_t>(x), 0)) return false;
  }
  return true;
}
static_assert(t5_averages_give_every_digit(), "the averages' digit of every byte");

constexpr uint8_t kT5ZeroByte = t5_encode(121);  // all five digits 1 (t = 0)

}  // namespace bitnet
