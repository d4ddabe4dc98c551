#include "kernels/cpu/ternary_packing.h"

#include <algorithm>

namespace bitnet {

void pack_ternary_row(std::span<const int8_t> t, std::span<uint8_t> out) {
  const int64_t cols = static_cast<int64_t>(t.size());
  std::fill(out.begin(), out.end(), uint8_t{0x55});  // code 1 everywhere: t = 0 padding
  for (int64_t k = 0; k < cols; ++k) {
    const int64_t b = k / kTernaryBlock, r = k % kTernaryBlock;
    const int i = static_cast<int>(r / 64), j = static_cast<int>(r % 64);
    uint8_t& byte = out[b * kTernaryBlockBytes + j];
    byte = static_cast<uint8_t>((byte & ~(3 << (2 * i))) | ((t[k] + 1) << (2 * i)));
  }
}

void unpack_ternary_row(std::span<const uint8_t> packed, std::span<int8_t> t) {
  for (size_t k = 0; k < t.size(); ++k)
    t[k] = static_cast<int8_t>(ternary_at(packed.data(), static_cast<int64_t>(k)));
}

}  // namespace bitnet
