#pragma once
// The "i2" ternary layout: 2 bits per weight, the cheapest to unpack.
//
// A row is a sequence of blocks of kI2Block = 256 weights in 64 bytes (how a matrix arranges its
// rows' blocks: ternary_packing.h). Within block b,
//   weight k = 256b + 64i + j  sits at bits 2i..2i+1 of byte j   (j < 64, i < 4),
// stored as code = t + 1 in {0, 1, 2}. Padding weights (k >= cols) have code 1 (t = 0).
//
// So the dword at byte 4m of a block, shifted right by 2i and masked with 3, holds the unsigned
// codes of the 4 consecutive weights 64i + 4m .. 64i + 4m + 3, which feed vpdpbusd directly
// against 4 int8 activations. The kernels compute sum(code * q) - sum(q) = sum(t * q).

#include <cstdint>

namespace bitnet {

constexpr int64_t kI2Block = 256;
constexpr int64_t kI2BlockBytes = kI2Block / 4;
static_assert(kI2BlockBytes == 64, "one i2 block is one 512-bit vector");
static_assert(kI2Block % 64 == 0, "each 2-bit plane covers 64 consecutive weights");

constexpr uint8_t kI2ZeroByte = 0x55;  // code 1 (t = 0) in all four planes

// The code (t + 1) of plane i in byte p.
constexpr int i2_digit(uint8_t p, int i) {
  return (p >> (2 * i)) & 3;
}

}  // namespace bitnet
