#include "kernels/cpu/ternary_packing.h"

#include <algorithm>

namespace bitnet {
namespace {

void pack_i2(std::span<const int8_t> t, std::span<uint8_t> out) {
  std::fill(out.begin(), out.end(), kI2ZeroByte);
  for (size_t k = 0; k < t.size(); ++k) {
    const size_t b = k / kI2Block, r = k % kI2Block;
    const int i = static_cast<int>(r / 64);
    uint8_t& byte = out[b * kI2BlockBytes + r % 64];
    byte = static_cast<uint8_t>((byte & ~(3 << (2 * i))) | ((t[k] + 1) << (2 * i)));
  }
}

void pack_t5(std::span<const int8_t> t, std::span<uint8_t> out) {
  const size_t blocks = out.size() / kT5BlockBytes;
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t j = 0; j < kT5BlockBytes; ++j) {
      int v = 0;
      for (size_t i = 0; i < kT5Planes; ++i) {
        const size_t k = b * kT5Block + 64 * i + j;
        v = 3 * v + (k < t.size() ? t[k] + 1 : 1);
      }
      out[b * kT5BlockBytes + j] = t5_encode(v);
    }
  }
}

}  // namespace

void pack_ternary_row(TernaryFormat format, std::span<const int8_t> t, std::span<uint8_t> out) {
  if (format == TernaryFormat::t5) {
    pack_t5(t, out);
  } else {
    pack_i2(t, out);
  }
}

void unpack_ternary_row(TernaryFormat format, std::span<const uint8_t> packed,
                        std::span<int8_t> t) {
  for (size_t k = 0; k < t.size(); ++k)
    t[k] = static_cast<int8_t>(ternary_at(format, packed.data(), static_cast<int64_t>(k)));
}

}  // namespace bitnet
