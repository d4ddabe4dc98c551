#include "kernels/cpu/ternary_packing.h"

#include "base/mapped_file.h"

namespace bitnet {
namespace {

// Byte j of block b of a row: its weights are t[block * b + 64 i + j] for each plane i.
uint8_t encode_byte(TernaryFormat format, std::span<const int8_t> t, int64_t b, int64_t j) {
  const int64_t block = ternary_block(format);
  auto code = [&](int i) {
    const int64_t k = block * b + 64 * i + j;
    return k < static_cast<int64_t>(t.size()) ? t[k] + 1 : 1;
  };
  if (format == TernaryFormat::t5) {
    int v = 0;
    for (int i = 0; i < kT5Planes; ++i) v = 3 * v + code(i);
    return t5_encode(v);
  }
  int byte = 0;
  for (int i = 0; i < 4; ++i) byte |= code(i) << (2 * i);
  return static_cast<uint8_t>(byte);
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
  for (int64_t b = 0; b < m.blocks(); ++b)
    for (int64_t j = 0; j < 64; ++j)
      m.storage[packed_byte_offset(m, r, b, j)] = encode_byte(m.format, t, b, j);
}

void unpack_ternary_row(const TernaryMatrix& m, int64_t r, std::span<int8_t> t) {
  for (size_t k = 0; k < t.size(); ++k)
    t[k] = static_cast<int8_t>(ternary_at(m, r, static_cast<int64_t>(k)));
}

}  // namespace bitnet
