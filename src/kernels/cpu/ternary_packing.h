#pragma once
// The 2-bit ternary layout the CPU kernels read (chosen for the kernels, not the HF file).
//
// A matrix [rows][cols] is stored row by row; each row takes padded_cols(cols) / 4 bytes.
// A row is a sequence of blocks of kBlock = 256 weights in 64 bytes. Within block b,
//   weight k = kBlock*b + 64*i + j  sits at bits 2i..2i+1 of byte 64*b + j   (j < 64, i < 4),
// stored as code = t + 1 in {0, 1, 2}. Padding weights (k >= cols) have code 1 (t = 0).
//
// So one 64-byte load, shifted right by 2i and masked with 3, gives the unsigned codes of 64
// consecutive weights, which feed vpdpbusd directly against 64 consecutive int8 activations.
// The kernels compute sum(code * q) - sum(q) = sum(t * q), exactly.

#include <cstdint>
#include <span>

namespace bitnet {

constexpr int64_t kTernaryBlock = 256;
constexpr int64_t kTernaryBlockBytes = kTernaryBlock / 4;
static_assert(kTernaryBlockBytes == 64, "one block is one 512-bit vector");

constexpr int64_t padded_cols(int64_t cols) {
  return (cols + kTernaryBlock - 1) / kTernaryBlock * kTernaryBlock;
}
constexpr int64_t packed_row_bytes(int64_t cols) {
  return padded_cols(cols) / 4;
}

// Packs one row of ternary values t[cols] (each -1, 0 or +1) into packed_row_bytes(cols) bytes.
void pack_ternary_row(std::span<const int8_t> t, std::span<uint8_t> out);
// Inverse of pack_ternary_row: writes cols values.
void unpack_ternary_row(std::span<const uint8_t> packed, std::span<int8_t> t);

inline int ternary_at(const uint8_t* row, int64_t k) {
  const int64_t b = k / kTernaryBlock, r = k % kTernaryBlock;
  const int i = static_cast<int>(r / 64), j = static_cast<int>(r % 64);
  return ((row[b * kTernaryBlockBytes + j] >> (2 * i)) & 3) - 1;
}

}  // namespace bitnet
