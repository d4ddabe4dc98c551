#include "kernels/cpu/lm_head.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "base/float16.h"
#include "base/mapped_file.h"
#include "kernels/cpu/canonical_math.h"

namespace bitnet {

LmHead::LmHead(const LmHead& other)
    : format(other.format),
      rows(other.rows),
      cols(other.cols),
      bf16(other.bf16),
      codes(other.codes),
      row_scales(other.row_scales),
      group_scales(other.group_scales) {
  assign_in_huge_pages(code_storage, other.code_storage);
  if (!other.code_storage.empty() && other.codes == other.code_storage.data())
    codes = code_storage.data();
}

LmHead& LmHead::operator=(const LmHead& other) {
  if (this != &other) *this = LmHead(other);
  return *this;
}

LmHead LmHead::view_bf16(const uint16_t* data, int64_t rows, int64_t cols) {
  LmHead head;
  head.rows = rows;
  head.cols = cols;
  head.bf16 = data;
  return head;
}

LmHead LmHead::allocate(LmHeadFormat format, int64_t rows, int64_t cols) {
  LmHead head;
  head.format = format;
  head.rows = rows;
  head.cols = cols;
  assign_in_huge_pages(head.code_storage, static_cast<size_t>(rows * head.row_bytes()), 0);
  head.codes = head.code_storage.data();
  if (format == LmHeadFormat::int8) head.row_scales.assign(static_cast<size_t>(rows), 0.0f);
  if (format == LmHeadFormat::q4)
    head.group_scales.assign(static_cast<size_t>(rows * head.groups()), 0);
  return head;
}

uint64_t LmHead::bytes() const {
  return static_cast<uint64_t>(rows * row_bytes()) + row_scales.size() * sizeof(float) +
         group_scales.size() * sizeof(uint16_t);
}

void LmHead::set_row(int64_t r, const float* values) {
  if (format == LmHeadFormat::int8) {
    float max_abs = 0.0f;
    for (int64_t k = 0; k < cols; ++k) max_abs = std::max(max_abs, std::fabs(values[k]));
    const float inv = max_abs > 0.0f ? 127.0f / max_abs : 0.0f;
    int8_t* q = reinterpret_cast<int8_t*>(code_storage.data() + r * row_bytes());
    for (int64_t k = 0; k < cols; ++k)
      q[k] = static_cast<int8_t>(clamp_code(round_half_even(values[k] * inv), -127.0f, 127.0f));
    row_scales[r] = max_abs / 127.0f;
  } else if (format == LmHeadFormat::q4) {
    uint8_t* row = code_storage.data() + r * row_bytes();
    for (int64_t g = 0; g < groups(); ++g) {
      float group[kQ4Group] = {};
      const int64_t k0 = g * kQ4Group, n = std::clamp<int64_t>(cols - k0, 0, kQ4Group);
      std::copy_n(values + k0, n, group);
      float extreme = 0.0f;  // the value of largest magnitude, sign kept
      for (float v : group)
        if (std::fabs(v) > std::fabs(extreme)) extreme = v;
      // Quantize against the scale as stored (fp16), so codes and scale agree.
      const uint16_t d16 = f32_to_f16(extreme / -8.0f);
      const float d = f16_to_f32(d16);
      const float inv = d != 0.0f ? 1.0f / d : 0.0f;
      uint8_t code[kQ4Group];
      for (int j = 0; j < kQ4Group; ++j)
        code[j] =
            static_cast<uint8_t>(clamp_code(round_half_even(group[j] * inv) + 8.0f, 0.0f, 15.0f));
      for (int j = 0; j < kQ4Group / 2; ++j)
        row[g * kQ4Group / 2 + j] = static_cast<uint8_t>(code[j] | (code[j + kQ4Group / 2] << 4));
      group_scales[r * groups() + g] = d16;
    }
  }
}

int32_t LmHead::input_limit() const {
  const int64_t products_per_lane = std::max<int64_t>(1, padded_cols() / 8);
  return static_cast<int32_t>(
      std::clamp<int64_t>(INT32_MAX / (127 * products_per_lane), 1, INT16_MAX));
}

void LmHead::prepare(const float* x, LmHeadInput& in) const {
  const auto n = static_cast<size_t>(padded_cols());
  if (format != LmHeadFormat::int8) {
    in.x.assign(n, 0.0f);
    std::copy_n(x, cols, in.x.data());
    return;
  }
  float max_abs = 0.0f;
  for (int64_t k = 0; k < cols; ++k) max_abs = std::max(max_abs, std::fabs(x[k]));
  const auto limit = static_cast<float>(input_limit());
  in.scale = limit / std::max(max_abs, 1e-5f);
  in.q.assign(n, 0);
  for (int64_t k = 0; k < cols; ++k)
    in.q[k] = static_cast<int16_t>(clamp_code(round_half_even(x[k] * in.scale), -limit, limit));
}

void LmHead::matvec(CpuIsa isa, std::span<const LmHeadInput> ins, float* y, int64_t y_stride,
                    int64_t row_begin, int64_t row_end) const {
  lm_head_kernel(isa)(*this, ins, y, y_stride, row_begin, row_end);
}

namespace {

void scalar_rows(const LmHead& head, const LmHeadInput& in, float* y, int64_t row_begin,
                 int64_t row_end) {
  const int64_t chunks = (head.cols + kLanes - 1) / kLanes;
  const float* x = in.x.data();
  for (int64_t r = row_begin; r < row_end; ++r) {
    float lane[kLanes] = {};
    switch (head.format) {
      case LmHeadFormat::bf16: {
        const uint16_t* w = head.bf16 + r * head.cols;
        for (int64_t k = 0; k < chunks * kLanes; ++k) {
          const float wk = k < head.cols ? bf16_to_f32(w[k]) : 0.0f;
          lane[k % kLanes] = std::fma(wk, x[k], lane[k % kLanes]);
        }
        y[r] = reduce_lanes(lane);
        break;
      }
      case LmHeadFormat::int8: {
        const int8_t* codes = reinterpret_cast<const int8_t*>(head.codes + r * head.row_bytes());
        int64_t dot = 0;
        for (int64_t k = 0; k < head.cols; ++k) dot += int64_t{codes[k]} * in.q[k];
        y[r] = static_cast<float>(dot) / in.scale * head.row_scales[r];
        break;
      }
      case LmHeadFormat::q4: {
        // Per group: lane j gets (c[j] - 8) x[j] + (c[j+16] - 8) x[j+16], then times the scale.
        const uint8_t* row = head.codes + r * head.row_bytes();
        for (int64_t g = 0; g < head.groups(); ++g) {
          const uint8_t* b = row + g * kQ4Group / 2;
          const float* xg = x + g * kQ4Group;
          const float d = f16_to_f32(head.group_scales[r * head.groups() + g]);
          for (int j = 0; j < kLanes; ++j) {
            const float lo = static_cast<float>((b[j] & 15) - 8);
            const float hi = static_cast<float>((b[j] >> 4) - 8);
            const float dot = std::fma(hi, xg[j + kLanes], lo * xg[j]);
            lane[j] = std::fma(dot, d, lane[j]);
          }
        }
        y[r] = reduce_lanes(lane);
        break;
      }
    }
  }
}

}  // namespace

void lm_head_matvec_scalar(const LmHead& head, std::span<const LmHeadInput> ins, float* y,
                           int64_t y_stride, int64_t row_begin, int64_t row_end) {
  for (size_t n = 0; n < ins.size(); ++n)
    scalar_rows(head, ins[n], y + static_cast<int64_t>(n) * y_stride, row_begin, row_end);
}

// Defined in lm_head_avx2.cpp / lm_head_avx512.cpp.
void lm_head_matvec_avx2(const LmHead&, std::span<const LmHeadInput>, float*, int64_t, int64_t,
                         int64_t);
void lm_head_matvec_avx512(const LmHead&, std::span<const LmHeadInput>, float*, int64_t, int64_t,
                           int64_t);
void lm_head_matvec_avx512_zen4(const LmHead&, std::span<const LmHeadInput>, float*, int64_t,
                                int64_t, int64_t);

LmHeadKernel lm_head_kernel(CpuIsa isa, bool amd_zen4) {
  switch (isa) {
    case CpuIsa::avx512_vnni:
      return amd_zen4 ? lm_head_matvec_avx512_zen4 : lm_head_matvec_avx512;
    case CpuIsa::avx2:
      return lm_head_matvec_avx2;
    case CpuIsa::scalar:
      break;
  }
  return lm_head_matvec_scalar;
}

}  // namespace bitnet
