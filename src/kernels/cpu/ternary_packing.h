#pragma once
// Ternary matrices in the kernels' layout.
//
// Each row is encoded in blocks of 64 bytes: i2 (256 weights, ternary_layout_i2.h) or t5 (320
// weights, ternary_layout_t5.h). In both, byte j of a block holds weights 64i + j of every plane
// i, so the dword at byte 4m holds the 4 consecutive weights 64i + 4m .. 64i + 4m + 3 of each
// plane.
//
// Rows are stored in groups of kRowGroup = 16 (the last group padded with zero-weight rows).
// Within a group, block b of the 16 rows is spread over 16 vectors of 64 bytes; vector m holds
// dword m of block b of rows 0..15, one row per dword:
//
//   byte j of block b of row r  is at  ((r / 16 * blocks + b) * 16 + j / 4) * 64 + (r % 16) * 4
//                                       + j % 4
//
// So one 64-byte load gives, per plane, 4 consecutive weights of 16 rows, one row per 32-bit
// lane: vpdpbusd against 4 broadcast activations adds to the dot products of 16 rows at once,
// with no horizontal reduction, and the kernels read a group front to back, one stream for the
// hardware prefetchers. (With rows stored one after another, the 4-row GEMV read four interleaved
// streams and reached half the bandwidth of a plain read loop.)

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "bitnet/model.h"
#include "kernels/cpu/ternary_layout_i2.h"
#include "kernels/cpu/ternary_layout_t5.h"

namespace bitnet {

constexpr int64_t kRowGroup = 16;  // rows per group: the 32-bit lanes of a 512-bit vector
static_assert(kRowGroup * 4 == 64, "a group's dword m of one block is one 512-bit vector");

constexpr int64_t ternary_block(TernaryFormat format) {
  return format == TernaryFormat::t5 ? kT5Block : kI2Block;
}
constexpr int64_t padded_cols(TernaryFormat format, int64_t cols) {
  const int64_t block = ternary_block(format);
  return (cols + block - 1) / block * block;
}
// Every block is 64 bytes.
constexpr int64_t packed_row_bytes(TernaryFormat format, int64_t cols) {
  return padded_cols(format, cols) / ternary_block(format) * 64;
}
// Activation rows are padded (with zeros) to cover a whole number of blocks of either format,
// so one QuantizedActs feeds matrices of both.
constexpr int64_t activation_stride(int64_t cols) {
  return std::max(padded_cols(TernaryFormat::i2, cols), padded_cols(TernaryFormat::t5, cols));
}

struct TernaryMatrix {
  int64_t rows = 0, cols = 0;
  TernaryFormat format = TernaryFormat::i2;
  const uint8_t* packed = nullptr;  // [groups][blocks][16 dwords][16 rows][4 bytes], see above
  std::vector<uint8_t> storage;     // owns `packed` unless it points into a mapped file
  std::vector<float> row_scales;    // [rows]; fused matrices keep each part's weight scale

  // A matrix of zero weights (and zero scales) owning its storage; fill it with
  // pack_ternary_row.
  static TernaryMatrix zeros(TernaryFormat format, int64_t rows, int64_t cols);

  int64_t blocks() const { return padded_cols(format, cols) / ternary_block(format); }
  int64_t groups() const { return (rows + kRowGroup - 1) / kRowGroup; }
  int64_t group_bytes() const { return blocks() * kRowGroup * 64; }
  int64_t bytes() const { return groups() * group_bytes(); }
  const uint8_t* group(int64_t g) const { return packed + g * group_bytes(); }
};

// Packs row r of m from ternary values t[cols] (each -1, 0 or +1), into m.storage.
void pack_ternary_row(TernaryMatrix& m, int64_t r, std::span<const int8_t> t);
// Inverse of pack_ternary_row: writes t.size() <= padded_cols values of row r.
void unpack_ternary_row(const TernaryMatrix& m, int64_t r, std::span<int8_t> t);

// Where byte j of block b of row r lies in m.packed.
inline int64_t packed_byte_offset(const TernaryMatrix& m, int64_t r, int64_t b, int64_t j) {
  return ((r / kRowGroup * m.blocks() + b) * kRowGroup + j / 4) * 64 + r % kRowGroup * 4 + j % 4;
}

inline int ternary_at(const TernaryMatrix& m, int64_t r, int64_t k) {
  const int64_t block = ternary_block(m.format);
  const uint8_t byte = m.packed[packed_byte_offset(m, r, k / block, k % 64)];
  const int plane = static_cast<int>(k % block / 64);
  return (m.format == TernaryFormat::t5 ? t5_digit(byte, plane) : i2_digit(byte, plane)) - 1;
}

}  // namespace bitnet
