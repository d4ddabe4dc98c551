#pragma once
// The lm_head (vocab x hidden) in one of three storages, and its matvec y = W x in fp32.
//   bf16: the checkpoint's rows, read in place; exact products, fp32 accumulation.
//   int8: q = round(w * 127 / absmax(row)), one fp32 scale per row (absmax / 127).
//   q4:   groups of 32 along the row, one fp16 scale d per group, symmetric without offset:
//         d = m / -8 where m is the group's value of largest magnitude (as ggml's Q4_0), so m maps
//         to code 0 and all 16 codes are used; w ~= d * (code - 8), code = clamp(round(w/d)+8, 0,
//         15). A group's 16 bytes hold element j in the low nibble of byte j and element j + 16
//         in the high nibble.
// The activations stay fp32 (int8 activations measured worse, see tests/test_lm_head.cpp). Every
// format sums in the 16-lane order of canonical_math.h, so all kernel variants agree bit for bit.

#include <cstdint>
#include <vector>

#include "base/cpu_features.h"
#include "bitnet/model.h"

namespace bitnet {

constexpr int64_t kQ4Group = 32;
constexpr int64_t kLmHeadColAlign = 64;  // quantized rows and the padded x are multiples of this

struct LmHead {
  LmHeadFormat format = LmHeadFormat::bf16;
  int64_t rows = 0, cols = 0;
  // bf16: rows of `cols` bf16 values, unpadded (usually the mapped checkpoint).
  const uint16_t* bf16 = nullptr;
  // int8: [rows][padded_cols] codes; q4: [rows][padded_cols / 2] nibbles. Padding is zero.
  // Points into code_storage, or into a mapped converted model file.
  const uint8_t* codes = nullptr;
  std::vector<uint8_t> code_storage;
  std::vector<float> row_scales;       // int8: [rows]
  std::vector<uint16_t> group_scales;  // q4: [rows][padded_cols / kQ4Group], fp16

  // A bf16 head reading `data` in place.
  static LmHead view_bf16(const uint16_t* data, int64_t rows, int64_t cols);
  // An empty quantized head owning its codes; fill it with set_row (rows may be set
  // concurrently).
  static LmHead allocate(LmHeadFormat format, int64_t rows, int64_t cols);
  void set_row(int64_t r, const float* values);

  int64_t padded_cols() const {
    return (cols + kLmHeadColAlign - 1) / kLmHeadColAlign * kLmHeadColAlign;
  }
  int64_t row_bytes() const;  // storage bytes of one row's codes (without scales)
  int64_t groups() const { return padded_cols() / kQ4Group; }
  uint64_t bytes() const;  // everything the matvec reads, scales included

  // y[r] = W[r] . x for rows [row_begin, row_end); x has `cols` values.
  void matvec(CpuIsa isa, const float* x, float* y, int64_t row_begin, int64_t row_end) const;
};

// x_padded has padded_cols() values, zero past cols.
using LmHeadKernel = void (*)(const LmHead& head, const float* x_padded, float* y,
                              int64_t row_begin, int64_t row_end);

void lm_head_matvec_scalar(const LmHead& head, const float* x_padded, float* y, int64_t row_begin,
                           int64_t row_end);
LmHeadKernel lm_head_kernel(CpuIsa isa);

}  // namespace bitnet
