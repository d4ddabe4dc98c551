#pragma once
// Packing ternary rows into the kernel layouts: i2 (ternary_layout_i2.h) and t5
// (ternary_layout_t5.h), selected by TernaryFormat.

#include <algorithm>
#include <cstdint>
#include <span>

#include "bitnet/model.h"
#include "kernels/cpu/ternary_layout_i2.h"
#include "kernels/cpu/ternary_layout_t5.h"

namespace bitnet {

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

// Packs one row of ternary values t[cols] (each -1, 0 or +1) into packed_row_bytes bytes.
void pack_ternary_row(TernaryFormat format, std::span<const int8_t> t, std::span<uint8_t> out);
// Inverse of pack_ternary_row: writes t.size() values.
void unpack_ternary_row(TernaryFormat format, std::span<const uint8_t> packed, std::span<int8_t> t);

inline int ternary_at(TernaryFormat format, const uint8_t* row, int64_t k) {
  return format == TernaryFormat::t5 ? t5_ternary_at(row, k) : i2_ternary_at(row, k);
}

}  // namespace bitnet
