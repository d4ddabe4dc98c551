// lm_head storages: every kernel against the scalar reference, the exact bf16 path against an
// fp64 dot, quantization bounds, and the accuracy study that decides the default format.
//
// The study compares int8 and q4 logits with the exact bf16 head on the final-normed hidden
// states of real forward passes. It runs on the tiny test model; to run it on another model
// (e.g. the full-size random 2B-4T at models/2b4t-packed):
//   BITNET_STUDY_MODEL=models/2b4t-packed bitnet_tests --gtest_filter='LmHeadAccuracy.*'
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <vector>

#include "base/float16.h"
#include "base/thread_pool.h"
#include "bitnet/generate.h"
#include "bitnet/session.h"
#include "bitnet/tokenizer.h"
#include "kernels/cpu/lm_head.h"
#include "kernels/cpu/ops.h"
#include "model/forward_cpu.h"
#include "model/weights.h"
#include "test_util.h"

namespace bitnet {
namespace {

std::vector<CpuIsa> host_isas() {
  std::vector<CpuIsa> isas = {CpuIsa::scalar};
  if (CpuFeatures::host().avx2) isas.push_back(CpuIsa::avx2);
  if (CpuFeatures::host().avx512_vnni) isas.push_back(CpuIsa::avx512_vnni);
  return isas;
}

std::vector<float> random_floats(size_t n, std::mt19937& rng, float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

// Random lm_head weights in bf16, as a checkpoint stores them.
std::vector<uint16_t> random_bf16(size_t n, std::mt19937& rng) {
  const std::vector<float> values = random_floats(n, rng, 0.05f);
  std::vector<uint16_t> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = f32_to_bf16(values[i]);
  return w;
}

// A head of the given format built from bf16 weights (bf16 viewed in place, others quantized).
LmHead make_head(LmHeadFormat format, const std::vector<uint16_t>& bf16, int64_t rows,
                 int64_t cols) {
  if (format == LmHeadFormat::bf16) return LmHead::view_bf16(bf16.data(), rows, cols);
  LmHead head = LmHead::allocate(format, rows, cols);
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < cols; ++k) row[k] = bf16_to_f32(bf16[r * cols + k]);
    head.set_row(r, row.data());
  }
  return head;
}

LmHeadInput prepared(const LmHead& head, const std::vector<float>& x) {
  LmHeadInput in;
  head.prepare(x.data(), in);
  return in;
}

// The weight the quantized head stores for (r, k), dequantized.
float stored_weight(const LmHead& head, int64_t r, int64_t k) {
  const uint8_t* row = head.codes + r * head.row_bytes();
  if (head.format == LmHeadFormat::int8) return static_cast<int8_t>(row[k]) * head.row_scales[r];
  const int64_t g = k / kQ4Group, j = k % kQ4Group;
  const uint8_t byte = row[g * kQ4Group / 2 + j % (kQ4Group / 2)];
  const int code = j < kQ4Group / 2 ? byte & 15 : byte >> 4;
  return static_cast<float>(code - 8) * f16_to_f32(head.group_scales[r * head.groups() + g]);
}

TEST(LmHeadKernels, EveryIsaMatchesTheScalarKernelBitForBit) {
  std::mt19937 rng(7);
  for (LmHeadFormat format : {LmHeadFormat::bf16, LmHeadFormat::int8, LmHeadFormat::q4}) {
    for (int64_t rows : {1, 3, 4, 9, 67}) {
      for (int64_t cols : {1, 31, 2560, 2561}) {
        const std::vector<uint16_t> w = random_bf16(static_cast<size_t>(rows * cols), rng);
        const LmHead head = make_head(format, w, rows, cols);
        const LmHeadInput in = prepared(head, random_floats(static_cast<size_t>(cols), rng, 1.0f));
        std::vector<float> want(rows), got(rows);
        head.matvec(CpuIsa::scalar, in, want.data(), 0, rows);
        for (CpuIsa isa : host_isas()) {
          for (bool amd_zen4 : {false, true}) {
            const LmHeadKernel kernel = lm_head_kernel(isa, amd_zen4);
            const std::span<const LmHeadInput> one(&in, 1);
            // Odd row ranges exercise the tile remainders.
            std::fill(got.begin(), got.end(), NAN);
            kernel(head, one, got.data(), 0, 0, rows / 2);
            kernel(head, one, got.data(), 0, rows / 2, rows);
            for (int64_t r = 0; r < rows; ++r) {
              ASSERT_EQ(got[r], want[r])
                  << format_name(format) << " " << isa_name(isa) << " zen4 " << amd_zen4 << " rows "
                  << rows << " cols " << cols << " row " << r;
            }
          }
        }
      }
    }
  }
}

// Batched decode: several inputs in one call give each input's own result, for any count
// (the int8 kernels take them four at a time), odd row ranges and both variants.
TEST(LmHeadKernels, SeveralInputsEqualOneAtATime) {
  std::mt19937 rng(11);
  const int64_t rows = 67, cols = 2561;
  const std::vector<uint16_t> w = random_bf16(static_cast<size_t>(rows * cols), rng);
  for (LmHeadFormat format : {LmHeadFormat::bf16, LmHeadFormat::int8, LmHeadFormat::q4}) {
    const LmHead head = make_head(format, w, rows, cols);
    std::vector<LmHeadInput> ins;
    for (int n = 0; n < 9; ++n)
      ins.push_back(prepared(head, random_floats(static_cast<size_t>(cols), rng, 1.0f)));
    for (CpuIsa isa : host_isas()) {
      for (bool amd_zen4 : {false, true}) {
        const LmHeadKernel kernel = lm_head_kernel(isa, amd_zen4);
        for (size_t n : {1, 2, 3, 4, 5, 8, 9}) {
          const int64_t stride = rows + 3;
          std::vector<float> together(n * stride, NAN), alone(rows);
          const std::span<const LmHeadInput> some(ins.data(), n);
          kernel(head, some, together.data(), stride, 0, 5);
          kernel(head, some, together.data(), stride, 5, rows);
          for (size_t i = 0; i < n; ++i) {
            head.matvec(CpuIsa::scalar, ins[i], alone.data(), 0, rows);
            for (int64_t r = 0; r < rows; ++r)
              ASSERT_EQ(together[i * stride + r], alone[r])
                  << format_name(format) << " " << isa_name(isa) << " zen4 " << amd_zen4
                  << " inputs " << n << " input " << i << " row " << r;
          }
        }
      }
    }
  }
}

TEST(LmHeadKernels, ACopyOwnsItsCodes) {
  std::mt19937 rng(9);
  const int64_t rows = 5, cols = 70;
  const std::vector<uint16_t> w = random_bf16(static_cast<size_t>(rows * cols), rng);
  const std::vector<float> x = random_floats(static_cast<size_t>(cols), rng, 1.0f);
  for (LmHeadFormat format : {LmHeadFormat::int8, LmHeadFormat::q4}) {
    auto original = std::make_unique<LmHead>(make_head(format, w, rows, cols));
    const LmHeadInput in = prepared(*original, x);
    std::vector<float> want(rows), got(rows);
    original->matvec(CpuIsa::scalar, in, want.data(), 0, rows);
    LmHead copied(*original);
    LmHead assigned;
    assigned = *original;
    original.reset();
    for (const LmHead* head : {&copied, &assigned}) {
      EXPECT_EQ(head->codes, head->code_storage.data()) << format_name(format);
      head->matvec(CpuIsa::scalar, in, got.data(), 0, rows);
      EXPECT_EQ(got, want) << format_name(format);
    }
  }
}

TEST(LmHeadKernels, Bf16PathEqualsAnFp64Dot) {
  std::mt19937 rng(8);
  const int64_t rows = 37;
  for (int64_t cols : {1, 31, 2560, 2561}) {
    const std::vector<uint16_t> w = random_bf16(static_cast<size_t>(rows * cols), rng);
    const LmHead head = make_head(LmHeadFormat::bf16, w, rows, cols);
    const std::vector<float> x = random_floats(static_cast<size_t>(cols), rng, 1.0f);
    for (CpuIsa isa : host_isas()) {
      std::vector<float> y(rows);
      head.matvec(isa, prepared(head, x), y.data(), 0, rows);
      for (int64_t r = 0; r < rows; ++r) {
        double dot = 0.0, magnitude = 0.0;  // relative to sum |w x|: a dot may cancel to ~0
        for (int64_t k = 0; k < cols; ++k) {
          const double term = static_cast<double>(bf16_to_f32(w[r * cols + k])) * x[k];
          dot += term;
          magnitude += std::fabs(term);
        }
        EXPECT_LE(std::fabs(y[r] - dot), 1e-5 * magnitude) << isa_name(isa) << " cols " << cols;
      }
    }
  }
}

// int8 heads: x rounds to the int16 grid of its scale, and y is the exact integer dot of codes
// and that grid, so its error against an fp64 dot of the stored weights and x is bounded by
// x's rounding (half a step per element) plus fp32 rounding of the result.
TEST(LmHeadKernels, Int8PathIsTheDotOfStoredWeightsAndX) {
  std::mt19937 rng(10);
  const int64_t rows = 29;
  for (int64_t cols : {1, 31, 2560, 2561}) {
    const std::vector<uint16_t> w = random_bf16(static_cast<size_t>(rows * cols), rng);
    const LmHead head = make_head(LmHeadFormat::int8, w, rows, cols);
    std::vector<float> x = random_floats(static_cast<size_t>(cols), rng, 1.0f);
    x[0] = -10.0f;  // the extreme element maps to -limit exactly
    const LmHeadInput in = prepared(head, x);
    EXPECT_EQ(in.q[0], -head.input_limit());
    // Half a step, plus fp32 rounding of x * scale (|x * scale| <= 32767, so under 0.002 steps).
    for (int64_t k = 0; k < cols; ++k)
      ASSERT_LE(std::fabs(in.q[k] / static_cast<double>(in.scale) - x[k]), 0.502 / in.scale) << k;
    for (int64_t k = cols; k < head.padded_cols(); ++k) ASSERT_EQ(in.q[k], 0) << "padding " << k;
    for (CpuIsa isa : host_isas()) {
      std::vector<float> y(rows);
      head.matvec(isa, in, y.data(), 0, rows);
      for (int64_t r = 0; r < rows; ++r) {
        double dot = 0.0, weight_mass = 0.0, magnitude = 0.0;
        for (int64_t k = 0; k < cols; ++k) {
          const double wk = stored_weight(head, r, k);
          dot += wk * x[k];
          weight_mass += std::fabs(wk);
          magnitude += std::fabs(wk * x[k]);
        }
        const double bound = weight_mass * 0.5 / in.scale + 1e-6 * magnitude;
        EXPECT_LE(std::fabs(y[r] - dot), bound) << isa_name(isa) << " cols " << cols;
      }
    }
  }
}

// The largest sums the int8 kernels can meet: every code and every q at its extreme, on a row
// long enough that input_limit() must shrink below 32767 to keep the int32 lanes from overflowing.
TEST(LmHeadKernels, Int8ExtremesDoNotOverflow) {
  for (int64_t cols : {2560, 40000}) {
    const int64_t rows = 5;
    LmHead head = LmHead::allocate(LmHeadFormat::int8, rows, cols);
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      const float sign = r % 2 ? -1.0f : 1.0f;
      std::fill(row.begin(), row.end(), sign);
      head.set_row(r, row.data());
    }
    const std::vector<float> x(static_cast<size_t>(cols), -2.0f);
    const LmHeadInput in = prepared(head, x);
    const int64_t limit = head.input_limit();
    EXPECT_EQ(limit, cols == 2560 ? 32767 : 3381);
    for (CpuIsa isa : host_isas()) {
      for (size_t n : {1, 2, 4}) {  // batched inputs take other reductions
        const std::vector<LmHeadInput> ins(n, in);
        std::vector<float> y(n * rows);
        head.matvec(isa, ins, y.data(), rows, 0, rows);
        for (int64_t r = 0; r < rows; ++r) {
          const double exact =
              (r % 2 ? 1.0 : -1.0) * 127.0 * static_cast<double>(limit) * static_cast<double>(cols);
          const float want =
              static_cast<float>(static_cast<int64_t>(exact)) / in.scale * head.row_scales[r];
          for (size_t i = 0; i < n; ++i)
            EXPECT_EQ(y[i * rows + r], want)
                << isa_name(isa) << " cols " << cols << " row " << r << " inputs " << n;
        }
      }
    }
  }
}

// A corrupted checkpoint's NaN or infinite values (loaded with a warning) quantize to defined
// codes: a NaN to the low bound, as activation quantization does, instead of an undefined cast.
TEST(LmHeadKernels, NonFiniteValuesGiveDefinedCodes) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t cols = 40;
  std::vector<float> row(static_cast<size_t>(cols), 0.5f);
  row[0] = nan;
  row[1] = -1.0f;
  LmHead int8 = LmHead::allocate(LmHeadFormat::int8, 2, cols);
  int8.set_row(0, row.data());
  const auto* codes = reinterpret_cast<const int8_t*>(int8.codes);
  EXPECT_EQ(codes[0], -127);  // NaN
  EXPECT_EQ(codes[1], -127);  // the row's largest finite magnitude
  EXPECT_EQ(codes[2], 64);
  row[0] = inf;  // scale infinite: every finite value rounds to 0, the inf itself is a NaN
  int8.set_row(1, row.data());
  codes += int8.row_bytes();
  EXPECT_EQ(codes[0], -127);
  EXPECT_EQ(codes[1], 0);

  row[0] = nan;
  LmHead q4 = LmHead::allocate(LmHeadFormat::q4, 1, cols);
  q4.set_row(0, row.data());
  // The group's extreme (-1) sits on code 0, 0.5 on 12; the NaN on code 0.
  EXPECT_EQ(q4.codes[0] & 0x0F, 0);
  EXPECT_EQ(q4.codes[1] & 0x0F, 0);
  EXPECT_EQ(q4.codes[2] & 0x0F, 12);

  std::vector<float> x(static_cast<size_t>(cols), 1.0f);
  x[3] = nan;
  const LmHeadInput in = prepared(int8, x);
  EXPECT_EQ(in.q[3], -int8.input_limit());
  EXPECT_EQ(in.q[4], int8.input_limit());
}

TEST(LmHeadKernels, QuantizedWeightsStayWithinHalfAStep) {
  std::mt19937 rng(9);
  const int64_t rows = 5, cols = 2561;
  const std::vector<uint16_t> w = random_bf16(static_cast<size_t>(rows * cols), rng);
  for (LmHeadFormat format : {LmHeadFormat::int8, LmHeadFormat::q4}) {
    const LmHead head = make_head(format, w, rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t k = 0; k < cols; ++k) {
        const float exact = bf16_to_f32(w[r * cols + k]);
        // int8: the step is the row scale. q4: the group's extreme sits on code 0 (-8 d), so
        // values of the other sign reach +8 |d| and clamp to 7: the bound there is one step.
        const float step =
            format == LmHeadFormat::int8
                ? head.row_scales[r]
                : std::fabs(f16_to_f32(head.group_scales[r * head.groups() + k / kQ4Group]));
        const float bound = format == LmHeadFormat::int8 ? 0.5001f * step : 1.0001f * step;
        ASSERT_LE(std::fabs(stored_weight(head, r, k) - exact), bound)
            << format_name(format) << " (" << r << ", " << k << ")";
      }
    }
  }
}

TEST(LmHeadModel, LoadOptionQuantizesTheHeadAndKeepsTheEmbeddingExact) {
  const auto dir = test::cached_model("bf16", test::tiny_spec());
  const std::vector<int32_t> prompt = {504, 72, 101, 276, 111, 259};
  auto logits = [&](LmHeadFormat format) {
    LoadOptions options;
    options.lm_head = format;
    auto model = Model::load(dir, options);
    EXPECT_EQ(model->weights().output_head.format, format);
    EXPECT_EQ(model->weights().embed.dtype, DType::BF16);  // the lookup still reads bf16 rows
    Session session(model);
    const auto out = session.feed(prompt);
    return std::vector<float>(out.begin(), out.end());
  };
  const auto exact = logits(LmHeadFormat::bf16);
  float scale = 0;
  for (float v : exact) scale = std::max(scale, std::fabs(v));
  for (const auto& [format, bound] :
       {std::pair{LmHeadFormat::int8, 0.01f}, std::pair{LmHeadFormat::q4, 0.1f}}) {
    const auto approx = logits(format);
    float err = 0;
    for (size_t i = 0; i < exact.size(); ++i) err = std::max(err, std::fabs(approx[i] - exact[i]));
    EXPECT_LE(err, bound * scale) << format_name(format);
  }
}

// ---- accuracy study ---------------------------------------------------------------------------

// The lm_head's inputs (final-normed hidden states) at every position of `prompt` followed by
// n_greedy greedily generated tokens (chosen with the exact bf16 head).
std::vector<std::vector<float>> head_inputs(const std::shared_ptr<const Model>& model,
                                            std::vector<int32_t> prompt, int n_greedy) {
  const ModelConfig& c = model->config();
  const int ctx = static_cast<int>(prompt.size()) + n_greedy;
  ThreadPool pool(physical_core_count());
  const int max_batch = 64;
  CpuForward forward(model, pool, CpuFeatures::host().best_isa(), max_batch, ctx);
  KvCache kv(c, 1, ctx);
  std::vector<std::vector<float>> inputs;
  const auto observe = [&](int layer, const float* hidden, int64_t n_tokens) {
    if (layer != c.n_layers - 1) return;
    for (int64_t t = 0; t < n_tokens; ++t) {
      std::vector<float> normed(static_cast<size_t>(c.hidden_dim));
      rmsnorm(hidden + t * c.hidden_dim, model->weights().final_norm.data(), normed.data(),
              c.hidden_dim, c.rms_norm_eps);
      inputs.push_back(std::move(normed));
    }
  };
  std::vector<float> logits(static_cast<size_t>(c.vocab_size));
  std::vector<BatchToken> batch;
  for (size_t begin = 0; begin < prompt.size(); begin += max_batch) {
    batch.clear();
    for (size_t i = begin; i < std::min(prompt.size(), begin + max_batch); ++i)
      batch.push_back({prompt[i], static_cast<int32_t>(i), 0});
    const int32_t last = static_cast<int32_t>(batch.size() - 1);
    forward.forward(kv, batch, std::span<const int32_t>(&last, 1), logits.data(), observe);
  }
  for (int i = 0; i < n_greedy; ++i) {
    const BatchToken next = {argmax(logits), static_cast<int32_t>(prompt.size()) + i, 0};
    const int32_t row = 0;
    forward.forward(kv, std::span<const BatchToken>(&next, 1), std::span<const int32_t>(&row, 1),
                    logits.data(), observe);
  }
  return inputs;
}

struct Accuracy {
  double max_abs_error = 0;
  double logit_scale = 0;  // max |logit| of the exact head over all positions
  int64_t top1_agree = 0, positions = 0;
  // Of the disagreements, those where the exact top-2 margin is below twice that position's
  // max error: near-ties that any perturbation of this size can flip.
  int64_t near_tie_flips = 0;

  double relative() const { return max_abs_error / logit_scale; }
  double agreement() const {
    return static_cast<double>(top1_agree) / static_cast<double>(positions);
  }
};

void add(Accuracy& a, const std::vector<float>& exact, const std::vector<float>& approx) {
  double error = 0;
  for (size_t i = 0; i < exact.size(); ++i) {
    error = std::max(error, static_cast<double>(std::fabs(exact[i] - approx[i])));
    a.logit_scale = std::max(a.logit_scale, static_cast<double>(std::fabs(exact[i])));
  }
  a.max_abs_error = std::max(a.max_abs_error, error);
  const int32_t top = argmax(exact);
  const bool agree = top == argmax(approx);
  if (!agree) {
    float second = -INFINITY;
    for (size_t i = 0; i < exact.size(); ++i)
      if (static_cast<int32_t>(i) != top) second = std::max(second, exact[i]);
    a.near_tie_flips += exact[top] - second < 2 * error;
  }
  a.top1_agree += agree;
  a.positions += 1;
}

// Alternative (b) for int8: activations quantized per token (absmax / 127) and an exact integer
// dot with the int8 weights, as vpdpbusd would compute it.
std::vector<float> int8_activations_logits(const LmHead& head, const std::vector<float>& x) {
  float max_abs = 0;
  for (float v : x) max_abs = std::max(max_abs, std::fabs(v));
  const float s = 127.0f / std::max(max_abs, 1e-5f);
  std::vector<int32_t> qx(x.size());
  for (size_t k = 0; k < x.size(); ++k) qx[k] = static_cast<int32_t>(std::nearbyint(x[k] * s));
  std::vector<float> y(static_cast<size_t>(head.rows));
  for (int64_t r = 0; r < head.rows; ++r) {
    const int8_t* q = reinterpret_cast<const int8_t*>(head.codes + r * head.row_bytes());
    int32_t dot = 0;
    for (int64_t k = 0; k < head.cols; ++k) dot += q[k] * qx[k];
    y[r] = static_cast<float>(dot) / s * head.row_scales[r];
  }
  return y;
}

struct Study {
  Accuracy int8, int8_acts, q4;
};

Study run_study(const std::shared_ptr<const Model>& model,
                const std::vector<std::vector<float>>& inputs) {
  const Model::Weights& w = model->weights();
  const DenseMatrix& source = w.lm_head();
  const auto rows = source.rows, cols = source.cols;
  const LmHead exact = LmHead::view_bf16(static_cast<const uint16_t*>(source.data), rows, cols);
  LmHead int8 = LmHead::allocate(LmHeadFormat::int8, rows, cols);
  LmHead q4 = LmHead::allocate(LmHeadFormat::q4, rows, cols);
  ThreadPool pool(physical_core_count());
  pool.parallel_for(rows, 256, [&](int64_t r0, int64_t r1) {
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = r0; r < r1; ++r) {
      source.row_to_f32(r, row.data());
      int8.set_row(r, row.data());
      q4.set_row(r, row.data());
    }
  });
  const CpuIsa isa = CpuFeatures::host().best_isa();
  const auto logits = [&](const LmHead& head, const std::vector<float>& x) {
    std::vector<float> y(static_cast<size_t>(rows));
    pool.parallel_for(rows, 64, [&, in = prepared(head, x)](int64_t b, int64_t e) {
      head.matvec(isa, in, y.data(), b, e);
    });
    return y;
  };
  Study study;
  for (const std::vector<float>& x : inputs) {
    const std::vector<float> reference = logits(exact, x);
    add(study.int8, reference, logits(int8, x));
    add(study.int8_acts, reference, int8_activations_logits(int8, x));
    add(study.q4, reference, logits(q4, x));
  }
  return study;
}

void print(const Study& study) {
  for (const auto& [name, a] :
       {std::pair{"int8 (int16 acts)", study.int8}, std::pair{"int8 (int8 acts)", study.int8_acts},
        std::pair{"q4 (f32 acts)", study.q4}}) {
    std::printf(
        "  %-18s max abs err %.5f  err/scale %.5f  top-1 %.4f (%lld positions, scale %.3f; "
        "%lld of %lld flips at a top-2 margin < 2 x error)\n",
        name, a.max_abs_error, a.relative(), a.agreement(), static_cast<long long>(a.positions),
        a.logit_scale, static_cast<long long>(a.near_tie_flips),
        static_cast<long long>(a.positions - a.top1_agree));
  }
}

// The tiny model: 4 seeds x 128 positions of random prompts = 512 hidden states.
TEST(LmHeadAccuracy, QuantizedHeadsAgreeWithBf16OnTheTinyModel) {
  std::vector<std::vector<float>> inputs;
  std::shared_ptr<const Model> model;
  Study total;
  for (uint64_t seed : {1, 2, 3, 4}) {
    model = Model::load(test::cached_model("study" + std::to_string(seed),
                                           test::tiny_spec(QuantMode::online, seed)));
    std::mt19937 rng(static_cast<uint32_t>(seed));
    std::uniform_int_distribution<int32_t> token(0, model->config().vocab_size - 1);
    std::vector<int32_t> prompt(96);
    for (int32_t& id : prompt) id = token(rng);
    const Study s = run_study(model, head_inputs(model, prompt, 32));
    for (auto [all, one] :
         {std::pair{&total.int8, &s.int8}, std::pair{&total.int8_acts, &s.int8_acts},
          std::pair{&total.q4, &s.q4}}) {
      all->max_abs_error = std::max(all->max_abs_error, one->max_abs_error);
      all->logit_scale = std::max(all->logit_scale, one->logit_scale);
      all->top1_agree += one->top1_agree;
      all->positions += one->positions;
      all->near_tie_flips += one->near_tie_flips;
    }
  }
  print(total);
  ASSERT_EQ(total.int8.positions, 512);
  EXPECT_GE(total.int8.agreement(), 0.99);
  EXPECT_LE(total.int8.relative(), 0.01);
  // q4 (measured: 94% top-1, 4.4% of the scale): a tiny model's rows hold only four groups and
  // its random logits have small top-1 margins, so q4 flips a few percent of argmaxes.
  EXPECT_GE(total.q4.agreement(), 0.85);
  EXPECT_LE(total.q4.relative(), 0.1);
}

// The same study on a real-size model given by BITNET_STUDY_MODEL: an English paragraph and its
// greedy continuation.
TEST(LmHeadAccuracy, StudyOnTheModelInBitnetStudyModel) {
  const char* dir = std::getenv("BITNET_STUDY_MODEL");
  if (!dir) GTEST_SKIP() << "set BITNET_STUDY_MODEL to a model directory to run the study";
  auto model = Model::load(dir);
  const std::string paragraph =
      "The river had been rising for three days before anyone in the village took it seriously. "
      "At first it was only a darker stripe along the stones of the old mill, then a brown sheet "
      "that crept across the lower meadow, and by the third evening it had reached the steps of "
      "the church. The miller, who had lived beside the water for sixty years, said he had never "
      "seen it come up so quickly without a storm. The schoolteacher walked the children home "
      "along the ridge road, and the baker kept his ovens burning through the night so that there "
      "would be bread if the bridge were closed. Nobody slept much. Men carried sandbags from the "
      "quarry in the back of a borrowed truck, and women moved furniture, photographs and "
      "chickens to the upper floors of houses that had stood for two hundred years. When the "
      "rain finally stopped on the fourth morning, the sky over the hills was a pale, washed "
      "blue, and the whole valley lay silent under a sheet of still water that reflected the "
      "clouds. It took weeks for the fields to drain. The mill never turned again, but the "
      "village kept its stones, and every spring the children were taken down to the river to "
      "see the line that the flood had left on the wall, higher than a grown man could reach. "
      "Some of them remembered the sound of the water in the dark for the rest of their lives, "
      "a low and patient roar that seemed to come from everywhere at once. Years later, when "
      "engineers came to build a dam further up the valley, the old people of the village "
      "argued about whether it would have saved them, and whether a river that had been tamed "
      "would still be the same river that had shaped their fields, their stories and their "
      "fears. The engineers listened politely, took measurements, drew long lines on their "
      "maps and went away again, and for a long time nothing changed at all.";
  std::vector<int32_t> ids = Tokenizer::load(dir).encode(paragraph);
  const int n_greedy = std::max(64, 512 - static_cast<int>(ids.size()));
  std::printf("study on %s: %zu prompt tokens + %d greedy\n", dir, ids.size(), n_greedy);
  print(run_study(model, head_inputs(model, ids, n_greedy)));
}

}  // namespace
}  // namespace bitnet
