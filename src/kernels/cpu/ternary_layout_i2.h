#pragma once
// The "i2" ternary layout: 2 bits per weight, the cheapest to unpack.
//
// A matrix [rows][cols] is stored row by row; each row is a sequence of blocks of
// kI2Block = 256 weights in 64 bytes. Within block b,
//   weight k = 256b + 64i + j  sits at bits 2i..2i+1 of byte 64b + j   (j < 64, i < 4),
// stored as code = t + 1 in {0, 1, 2}. Padding weights (k >= cols) have code 1 (t = 0).
//
// So one 64-byte load, shifted right by 2i and masked with 3, gives the unsigned codes of 64
// consecutive weights, which feed vpdpbusd directly against 64 consecutive int8 activations;
// and the dword at byte 4m of a block, shifted by 2i, holds the codes of the 4 consecutive
// weights 64i + 4m .. 64i + 4m + 3. The kernels compute sum(code * q) - sum(q) = sum(t * q).

#include <cstdint>

namespace bitnet {

constexpr int64_t kI2Block = 256;
constexpr int64_t kI2BlockBytes = kI2Block / 4;
static_assert(kI2BlockBytes == 64, "one i2 block is one 512-bit vector");
static_assert(kI2Block % 64 == 0, "each 2-bit plane covers 64 consecutive weights");

constexpr uint8_t kI2ZeroByte = 0x55;  // code 1 (t = 0) in all four planes

inline int i2_ternary_at(const uint8_t* row, int64_t k) {
  const int64_t b = k / kI2Block, r = k % kI2Block;
  const int i = static_cast<int>(r / 64), j = static_cast<int>(r % 64);
  return ((row[b * kI2BlockBytes + j] >> (2 * i)) & 3) - 1;
}

}  // namespace bitnet
