#pragma once
// The lm_head (vocab x hidden) in one of three storages, and its matvec y = W x.
//   bf16: the checkpoint's rows, read in place; exact products, fp32 accumulation.
//   int8: q = round(w * 127 / absmax(row)), one fp32 scale per row (absmax / 127).
//   q4:   groups of 32 along the row, one fp16 scale d per group, symmetric without offset:
//         d = m / -8 where m is the group's value of largest magnitude (as ggml's Q4_0), so m maps
//         to code 0 and all 16 codes are used; w ~= d * (code - 8), code = clamp(round(w/d)+8, 0,
//         15). A group's 16 bytes hold element j in the low nibble of byte j and element j + 16
//         in the high nibble.
// bf16 and q4 take x in fp32 and sum in the 16-lane order of canonical_math.h. int8 takes x
// quantized once per token to int16 (LmHeadInput) and sums codes x int16 exactly in integers:
// x's rounding error (1/65534 of max|x|) is far below the weights' int8 step, and the 8-bit codes
// then feed vpdpwssd / vpmaddwd without a conversion to float, which made the fp32 form compute
// bound. (int8 activations measured worse, see tests/test_lm_head.cpp.) Every kernel variant
// agrees with the scalar one bit for bit.

#include <cstdint>
#include <span>
#include <vector>

#include "base/cpu_features.h"
#include "bitnet/model.h"

namespace bitnet {

constexpr int64_t kQ4Group = 32;
constexpr int64_t kLmHeadColAlign = 64;  // quantized rows and the padded x are multiples of this

// One hidden state as a head's kernels read it, prepared once per token by LmHead::prepare.
struct LmHeadInput {
  std::vector<float> x;    // bf16 and q4 heads: [padded_cols], zero past cols
  std::vector<int16_t> q;  // int8 heads: [padded_cols], round(x * scale), zero past cols
  float scale = 0;         // int8 heads: q = x * scale, rounded
};

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

  LmHead() = default;
  // A copy of an owning head points at its own code_storage, not at the original's.
  LmHead(const LmHead& other);
  LmHead& operator=(const LmHead& other);
  LmHead(LmHead&&) = default;  // moving a vector keeps its buffer, so `codes` stays valid
  LmHead& operator=(LmHead&&) = default;

  // A bf16 head reading `data` in place.
  static LmHead view_bf16(const uint16_t* data, int64_t rows, int64_t cols);
  // An empty quantized head owning its codes; fill it with set_row (rows may be set
  // concurrently).
  static LmHead allocate(LmHeadFormat format, int64_t rows, int64_t cols);
  void set_row(int64_t r, const float* values);

  int64_t padded_cols() const {
    return (cols + kLmHeadColAlign - 1) / kLmHeadColAlign * kLmHeadColAlign;
  }
  // Storage bytes of one row's codes (without scales); inline, as kernels ask per row tile.
  int64_t row_bytes() const {
    switch (format) {
      case LmHeadFormat::bf16:
        return cols * 2;
      case LmHeadFormat::int8:
        return padded_cols();
      case LmHeadFormat::q4:
        return padded_cols() / 2;
    }
    return 0;
  }
  int64_t groups() const { return padded_cols() / kQ4Group; }
  uint64_t bytes() const;  // everything the matvec reads, scales included

  // The largest |q| of an int8 head's input: 32767, or less where that could overflow an int32
  // lane of a kernel (a lane sums padded_cols / 8 products of |code| <= 127 in the AVX2 kernel).
  int32_t input_limit() const;
  // x (`cols` values) in the form this head's kernels read.
  void prepare(const float* x, LmHeadInput& in) const;
  // y[n * y_stride + r] = W[r] . x_n for rows [row_begin, row_end) and every input x_n
  // (prepared by prepare()); several inputs share each read of W (batched decode).
  void matvec(CpuIsa isa, std::span<const LmHeadInput> ins, float* y, int64_t y_stride,
              int64_t row_begin, int64_t row_end) const;
  // One input: y[r] = W[r] . x.
  void matvec(CpuIsa isa, const LmHeadInput& in, float* y, int64_t row_begin,
              int64_t row_end) const {
    matvec(isa, std::span<const LmHeadInput>(&in, 1), y, 0, row_begin, row_end);
  }
};

using LmHeadKernel = void (*)(const LmHead& head, std::span<const LmHeadInput> ins, float* y,
                              int64_t y_stride, int64_t row_begin, int64_t row_end);

void lm_head_matvec_scalar(const LmHead& head, std::span<const LmHeadInput> ins, float* y,
                           int64_t y_stride, int64_t row_begin, int64_t row_end);
// The kernel of isa, for AMD Zen 4 or for other CPUs (CpuFeatures::amd_zen4). They differ in how
// they prefetch (lm_head_avx512.cpp); results are the same.
LmHeadKernel lm_head_kernel(CpuIsa isa, bool amd_zen4 = CpuFeatures::host().amd_zen4);

}  // namespace bitnet
