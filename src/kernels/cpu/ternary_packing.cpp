#include "kernels/cpu/ternary_packing.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "base/mapped_file.h"

namespace bitnet {
namespace {

// The 64 bytes of one block from its weights w[block] (each -1, 0 or +1): byte j holds weights
// 64 i + j of every plane i.
void encode_block(TernaryFormat format, const int8_t* w, uint8_t bytes[64]) {
  if (format == TernaryFormat::t5) {
    for (int j = 0; j < 64; ++j) {
      uint16_t v = 0;
      for (int i = 0; i < kT5Planes; ++i) v = static_cast<uint16_t>(3 * v + w[64 * i + j] + 1);
      bytes[j] = t5_encode(v);
    }
    return;
  }
  for (int j = 0; j < 64; ++j) {
    int byte = 0;
    for (int i = 0; i < 4; ++i) byte |= (w[64 * i + j] + 1) << (2 * i);
    bytes[j] = static_cast<uint8_t>(byte);
  }
}

}  // namespace

TernaryMatrix TernaryMatrix::zeros(TernaryFormat format, int64_t rows, int64_t cols) {
  TernaryMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.format = format;
  assign_in_huge_pages(m.storage, static_cast<size_t>(m.bytes()),
                       format == TernaryFormat::t5 ? kT5ZeroByte : kI2ZeroByte);
  m.packed = m.storage.data();
  m.row_scales.assign(static_cast<size_t>(rows), 0.0f);
  return m;
}

void pack_ternary_row(TernaryMatrix& m, int64_t r, std::span<const int8_t> t) {
  const int64_t block = ternary_block(m.format);
  std::array<int8_t, std::max(kT5Block, kI2Block)> padded;  // a block reaching past the row's end
  uint8_t bytes[64];
  for (int64_t b = 0; b < m.blocks(); ++b) {
    const int64_t k0 = b * block;
    const int64_t have = std::clamp<int64_t>(static_cast<int64_t>(t.size()) - k0, 0, block);
    const int8_t* w = padded.data();
    if (have == block) {
      w = t.data() + k0;
    } else {
      std::fill(std::copy_n(t.data() + std::min<int64_t>(k0, t.size()), have, padded.begin()),
                padded.end(), int8_t{0});
    }
    encode_block(m.format, w, bytes);
    for (int64_t j = 0; j < 64; j += 4)  // each dword to its row's lane of vector j / 4
      std::memcpy(&m.storage[packed_byte_offset(m, r, b, j)], bytes + j, 4);
  }
}

void unpack_ternary_row(const TernaryMatrix& m, int64_t r, std::span<int8_t> t) {
  for (size_t k = 0; k < t.size(); ++k)
    t[k] = static_cast<int8_t>(ternary_at(m, r, static_cast<int64_t>(k)));
}

}  // namespace bitnet
