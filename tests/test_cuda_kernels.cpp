// The CUDA kernels (src/kernels/cuda) against the CPU scalar code they mirror, and the CUDA
// forward pass (CudaForward) against the CPU Session on a tiny random model. Every test skips
// when the build has no CUDA backend or the machine no CUDA device.
//
// Each output buffer is poisoned (all bytes 0xFF: NaN floats, -1 ints, NaN halves) before every
// launch, so an element a kernel fails to write shows up, and so do writes outside the output
// (the gaps between rows keep their poison).
#if BITNET_HAVE_CUDA

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <numeric>
#include <random>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/float16.h"
#include "bitnet/generate.h"
#include "bitnet/model.h"
#include "bitnet/session.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/lm_head.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/ternary_matmul.h"
#include "kernels/cpu/ternary_packing.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/lm_head.cuh"
#include "kernels/cuda/norm.cuh"
#include "kernels/cuda/ternary_layout.h"
#include "kernels/cuda/ternary_matmul.cuh"
#include "model/forward_cpu.h"
#include "model/forward_cuda.h"
#include "model/kv_cache.h"
#include "test_util.h"

namespace bitnet {
namespace {

// ---- CUDA plumbing -----------------------------------------------------------------------------

void cuda_ok(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + what + ": " +
                             cudaGetErrorString(status));
  }
}
#define CUDA_OK(expr) cuda_ok((expr), #expr, __FILE__, __LINE__)

// Skips the test unless a CUDA device is present that runs the kernels (compute capability 8.0+:
// cp.async and int8 MMA).
#define SKIP_WITHOUT_CUDA()                                                                      \
  do {                                                                                           \
    std::string why;                                                                             \
    if (!bitnet::cuda_device_available(&why)) GTEST_SKIP() << why;                               \
    int device = 0;                                                                              \
    cudaDeviceProp prop{};                                                                       \
    CUDA_OK(cudaGetDevice(&device));                                                             \
    CUDA_OK(cudaGetDeviceProperties(&prop, device));                                             \
    if (prop.major < 8)                                                                          \
      GTEST_SKIP() << prop.name << " has compute capability " << prop.major << "." << prop.minor \
                   << "; the kernels need 8.0 or newer";                                         \
  } while (0)

// Waits for the launches so far and reports any asynchronous fault.
void sync() {
  CUDA_OK(cudaGetLastError());
  CUDA_OK(cudaDeviceSynchronize());
}

// n elements of T in device memory, freed with the object.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t n) : n_(n) {
    void* p = nullptr;
    CUDA_OK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    p_ = static_cast<T*>(p);
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { upload(host); }
  ~DeviceArray() {
    if (p_) cudaFree(p_);
  }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  T* get() const { return p_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

  void upload(const std::vector<T>& host) {
    if (host.size() != n_) throw std::runtime_error("DeviceArray::upload: size mismatch");
    if (n_) CUDA_OK(cudaMemcpy(p_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    if (n_) CUDA_OK(cudaMemcpy(host.data(), p_, bytes(), cudaMemcpyDeviceToHost));
    return host;
  }
  // All bytes 0xFF: NaN for float and half, -1 for signed integers.
  void poison() { CUDA_OK(cudaMemset(p_, 0xFF, std::max<size_t>(bytes(), 1))); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

constexpr uint32_t kPoisonF32 = 0xFFFFFFFFu;
constexpr uint16_t kPoisonF16 = 0xFFFFu;

uint32_t bits(float f) {
  return std::bit_cast<uint32_t>(f);
}

__half* as_half(uint16_t* p) {
  return reinterpret_cast<__half*>(p);
}

// ---- random inputs ------------------------------------------------------------------------------

std::vector<float> normal_floats(size_t n, std::mt19937& rng, float sigma = 1.0f) {
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

std::vector<float> uniform_floats(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> x(n);
  for (float& v : x) v = d(rng);
  return x;
}

std::vector<int8_t> random_ternary(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-1, 1);
  std::vector<int8_t> t(n);
  for (int8_t& v : t) v = static_cast<int8_t>(d(rng));
  return t;
}

uint32_t seed_of(std::initializer_list<int64_t> parts) {
  uint64_t h = 1469598103934665603ull;
  for (int64_t p : parts) h = (h ^ static_cast<uint64_t>(p)) * 1099511628211ull;
  return static_cast<uint32_t>(h ^ (h >> 32));
}

// ---- ternary matrices -------------------------------------------------------------------------

// The CPU's i2 matrix of plain ternary values t[rows][cols].
TernaryMatrix cpu_matrix(const std::vector<int8_t>& t, int64_t rows, int64_t cols,
                         const std::vector<float>& row_scales) {
  TernaryMatrix w = TernaryMatrix::zeros(TernaryFormat::i2, rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    pack_ternary_row(w, r, std::span<const int8_t>(t.data() + r * cols, static_cast<size_t>(cols)));
  w.row_scales = row_scales;
  return w;
}

// The same matrix in the GPU layout, GPU row g holding CPU row order[g].
struct GpuTernary {
  DeviceArray<uint32_t> words;
  DeviceArray<float> scales;
  int64_t rows, cols;

  GpuTernary(const std::vector<int8_t>& t, int64_t rows_, int64_t cols_,
             const std::vector<float>& row_scales, const std::vector<int64_t>& order)
      : words(static_cast<size_t>(rows_ * cuda_layout::row_words(cols_))),
        scales(static_cast<size_t>(rows_)),
        rows(rows_),
        cols(cols_) {
    const int64_t rw = cuda_layout::row_words(cols);
    std::vector<uint32_t> packed(static_cast<size_t>(rows * rw));
    std::vector<float> s(static_cast<size_t>(rows));
    for (int64_t g = 0; g < rows; ++g) {
      const int64_t r = order[static_cast<size_t>(g)];
      cuda_layout::pack_row(std::span<const int8_t>(t.data() + r * cols, static_cast<size_t>(cols)),
                            std::span<uint32_t>(packed.data() + g * rw, static_cast<size_t>(rw)));
      s[static_cast<size_t>(g)] = row_scales[static_cast<size_t>(r)];
    }
    words.upload(packed);
    scales.upload(s);
  }
  cuda::TernaryWeights view() const { return {words.get(), scales.get(), rows, cols}; }
};

std::vector<int64_t> identity_order(int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  return order;
}

// The int8 activations on the GPU, rows at stride padded_k(cols) (plus extra_stride, as the
// forward pass's buffer shared by matrices of several widths), zero past cols.
struct GpuActs {
  int64_t stride;
  DeviceArray<int8_t> q;
  DeviceArray<float> scale;
  DeviceArray<int32_t> sum;

  GpuActs(const QuantizedActs& acts, int64_t n_tokens, int64_t extra_stride = 0)
      : stride(cuda_layout::padded_k(acts.cols) + extra_stride),
        q(static_cast<size_t>(n_tokens * stride)),
        scale(static_cast<size_t>(n_tokens)),
        sum(static_cast<size_t>(n_tokens)) {
    std::vector<int8_t> host(static_cast<size_t>(n_tokens * stride), 0);
    for (int64_t t = 0; t < n_tokens; ++t)
      std::copy_n(acts.q.data() + t * acts.stride, acts.cols, host.data() + t * stride);
    q.upload(host);
    scale.upload(std::vector<float>(acts.scale.begin(), acts.scale.begin() + n_tokens));
    sum.upload(std::vector<int32_t>(acts.sum.begin(), acts.sum.begin() + n_tokens));
  }
  cuda::Int8Acts view() const { return {q.get(), stride, scale.get(), sum.get()}; }
};

constexpr float kEps = 1e-5f;

// A random f32 input of a few shapes (plain, with one outlier, small) and norm weights, and its
// int8 activations as the CPU computes them (rmsnorm, then quantization).
struct RandomInput {
  std::vector<float> x, norm;
  QuantizedActs acts;
};

RandomInput random_input(int64_t n_tokens, int64_t cols, std::mt19937& rng) {
  RandomInput in;
  in.x = normal_floats(static_cast<size_t>(n_tokens * cols), rng);
  in.norm = uniform_floats(static_cast<size_t>(cols), rng, 0.5f, 1.5f);
  std::vector<float> normed(in.x.size());
  for (int64_t t = 0; t < n_tokens; ++t) {
    float* row = in.x.data() + t * cols;
    if (t % 3 == 1) row[static_cast<size_t>(rng() % static_cast<uint32_t>(cols))] = 40.0f;
    if (t % 3 == 2)
      for (int64_t k = 0; k < cols; ++k) row[k] *= 1e-3f;
    rmsnorm(row, in.norm.data(), normed.data() + t * cols, cols, kEps);
  }
  quantize_activations(normed.data(), cols, n_tokens, cols, in.acts);
  return in;
}

// The GEMV normalizes and quantizes token 0's x itself; the GEMM takes the CPU's activations.
void run_matmul(bool gemv, const GpuTernary& w, const GpuActs& acts, const DeviceArray<float>& x,
                const DeviceArray<float>& norm, int n_tokens, const cuda::Epilogue& e) {
  if (gemv) {
    cuda::ternary_gemv(w.view(), {x.get(), norm.get(), kEps}, e, nullptr);
    sync();
    return;
  }
  DeviceArray<int32_t> workspace(
      static_cast<size_t>(cuda::ternary_gemm_workspace(w.rows, n_tokens)));
  workspace.poison();
  cuda::ternary_gemm(w.view(), acts.view(), n_tokens, e, workspace.get(), nullptr);
  sync();
}

// ---- norms, embedding --------------------------------------------------------------------------

TEST(CudaKernels, RmsnormQuantizeMatchesTheCpuExactly) {
  SKIP_WITHOUT_CUDA();
  for (int64_t cols : {5, 128, 352, 2560, 6912}) {
    for (int n : {1, 3, 7}) {
      SCOPED_TRACE("cols " + std::to_string(cols) + " tokens " + std::to_string(n));
      std::mt19937 rng(seed_of({1, cols, n}));
      const float eps = n == 3 ? 1e-6f : 1e-5f;
      const int64_t x_stride = cols + 3;  // the gaps hold NaN: the kernel must not read them
      std::vector<float> x(static_cast<size_t>(n * x_stride),
                           std::numeric_limits<float>::quiet_NaN());
      for (int t = 0; t < n; ++t) {
        std::vector<float> row = normal_floats(static_cast<size_t>(cols), rng);
        switch (t) {
          case 1:
            std::fill(row.begin(), row.end(), 0.0f);
            break;  // scale = 127 / 1e-5
          case 2:
            for (float& v : row) v *= 1e17f;
            break;  // large, variance finite
          case 3:
            for (float& v : row) v *= 1e30f;
            break;  // variance overflows f32
          case 4:
            for (float& v : row) v *= 1e-30f;
            break;  // variance underflows
          case 5:
            row[static_cast<size_t>(cols / 2)] = 1000.0f;
            break;  // one outlier
          case 6:
            for (float& v : row) v *= 50.0f;
            break;
          default:
            break;
        }
        std::copy(row.begin(), row.end(), x.begin() + t * x_stride);
      }
      const std::vector<float> weight = uniform_floats(static_cast<size_t>(cols), rng, -1.5f, 2.0f);

      // CPU: rmsnorm, then ActQuant of each row.
      QuantizedActs want;
      want.resize(n, cols);
      std::vector<float> h(static_cast<size_t>(cols));
      for (int t = 0; t < n; ++t) {
        rmsnorm(x.data() + t * x_stride, weight.data(), h.data(), cols, eps);
        quantize_activation_row(h.data(), t, want);
      }

      // The forward pass quantizes into a buffer as wide as its widest matrix: n == 3 has a
      // wider stride, all of whose padding must be zeroed.
      const int64_t q_stride = cuda_layout::padded_k(cols) + (n == 3 ? 256 : 0);
      DeviceArray<float> d_x(x), d_w(weight);
      DeviceArray<int8_t> d_q(static_cast<size_t>(n * q_stride));
      DeviceArray<float> d_scale(static_cast<size_t>(n));
      DeviceArray<int32_t> d_sum(static_cast<size_t>(n));
      d_q.poison();
      d_scale.poison();
      d_sum.poison();
      cuda::rmsnorm_quantize(d_x.get(), x_stride, d_w.get(), cols, eps, n, d_q.get(), q_stride,
                             d_scale.get(), d_sum.get(), nullptr);
      sync();
      const auto q = d_q.download();
      const auto scale = d_scale.download();
      const auto sum = d_sum.download();
      for (int t = 0; t < n; ++t) {
        SCOPED_TRACE("token " + std::to_string(t));
        EXPECT_EQ(bits(scale[static_cast<size_t>(t)]), bits(want.scale[static_cast<size_t>(t)]))
            << scale[static_cast<size_t>(t)] << " vs " << want.scale[static_cast<size_t>(t)];
        EXPECT_EQ(sum[static_cast<size_t>(t)], want.sum[static_cast<size_t>(t)]);
        int mismatches = 0;
        for (int64_t k = 0; k < cols; ++k) {
          const int got = q[static_cast<size_t>(t * q_stride + k)];
          const int expected = want.q[static_cast<size_t>(t * want.stride + k)];
          if (got != expected && ++mismatches <= 3)
            ADD_FAILURE() << "q[" << k << "] = " << got << ", CPU " << expected;
        }
        EXPECT_EQ(mismatches, 0);
        for (int64_t k = cols; k < q_stride; ++k)
          ASSERT_EQ(q[static_cast<size_t>(t * q_stride + k)], 0) << "padding " << k;
      }
      if (n >= 2) {
        EXPECT_EQ(want.scale[1], 127.0f / 1e-5f);
      }
    }
  }
}

TEST(CudaKernels, RmsnormMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  for (int64_t cols : {5, 128, 2560}) {
    for (int n : {1, 3, 7}) {
      SCOPED_TRACE("cols " + std::to_string(cols) + " tokens " + std::to_string(n));
      std::mt19937 rng(seed_of({2, cols, n}));
      std::vector<float> x = normal_floats(static_cast<size_t>(n * cols), rng, 3.0f);
      if (n > 1) std::fill(x.begin() + cols, x.begin() + 2 * cols, 0.0f);
      const std::vector<float> weight = uniform_floats(static_cast<size_t>(cols), rng, -1.5f, 2.0f);
      const float eps = 1e-5f;
      const int64_t out_stride = cols + 7;

      DeviceArray<float> d_x(x), d_w(weight);
      DeviceArray<float> d_out(static_cast<size_t>(n * out_stride));
      d_out.poison();
      cuda::rmsnorm(d_x.get(), cols, d_w.get(), eps, n, d_out.get(), out_stride, nullptr);
      sync();
      const auto out = d_out.download();
      std::vector<float> want(static_cast<size_t>(cols));
      for (int t = 0; t < n; ++t) {
        rmsnorm(x.data() + t * cols, weight.data(), want.data(), cols, eps);
        for (int64_t i = 0; i < out_stride; ++i) {
          const float got = out[static_cast<size_t>(t * out_stride + i)];
          if (i >= cols) {
            ASSERT_EQ(bits(got), kPoisonF32) << "token " << t << ": wrote past cols at " << i;
            continue;
          }
          const float w = want[static_cast<size_t>(i)];
          ASSERT_FALSE(std::isnan(got)) << "token " << t << " element " << i << " not written";
          ASSERT_NEAR(got, w, 1e-6f * std::fabs(w)) << "token " << t << " element " << i;
        }
      }
    }
  }
}

TEST(CudaKernels, EmbedRowsConvertsBf16Exactly) {
  SKIP_WITHOUT_CUDA();
  for (int64_t hidden : {8, 128, 2560}) {
    for (int n : {1, 5, 17}) {
      SCOPED_TRACE("hidden " + std::to_string(hidden) + " tokens " + std::to_string(n));
      std::mt19937 rng(seed_of({3, hidden, n}));
      const int vocab = 300;
      std::vector<uint16_t> embed(static_cast<size_t>(vocab * hidden));
      for (uint16_t& v : embed) v = static_cast<uint16_t>(rng());  // every bit pattern
      std::vector<int32_t> tokens(static_cast<size_t>(n));
      for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
      tokens[0] = vocab - 1;
      if (n > 2) tokens[2] = 0;
      if (n > 3) tokens[3] = tokens[1];  // repeats

      DeviceArray<uint16_t> d_embed(embed);
      DeviceArray<int32_t> d_tokens(tokens);
      DeviceArray<float> d_x(static_cast<size_t>(n * hidden));
      d_x.poison();
      cuda::embed_rows(d_embed.get(), hidden, d_tokens.get(), n, d_x.get(), nullptr);
      sync();
      const auto x = d_x.download();
      for (int t = 0; t < n; ++t) {
        for (int64_t i = 0; i < hidden; ++i) {
          const uint16_t b =
              embed[static_cast<size_t>(tokens[static_cast<size_t>(t)] * hidden + i)];
          ASSERT_EQ(bits(x[static_cast<size_t>(t * hidden + i)]), bits(bf16_to_f32(b)))
              << "token " << t << " element " << i;
        }
      }
    }
  }
}

// ---- ternary matmul
// ------------------------------------------------------------------------------

// store, add and relu2_mul against ternary_matmul_scalar (and the CPU's formulas on its output),
// bit for bit, through the GEMV (one token) and the GEMM (any number of tokens).
TEST(CudaKernels, TernaryMatmulMatchesTheScalarKernelBitForBit) {
  SKIP_WITHOUT_CUDA();
  for (int64_t rows : {2, 6, 130, 384}) {
    for (int64_t cols : {5, 100, 128, 352, 2560}) {
      std::mt19937 rng(seed_of({4, rows, cols}));
      const auto t = random_ternary(static_cast<size_t>(rows * cols), rng);
      const auto row_scales = uniform_floats(static_cast<size_t>(rows), rng, 0.25f, 3.0f);
      const TernaryMatrix cpu = cpu_matrix(t, rows, cols, row_scales);
      const GpuTernary gpu(t, rows, cols, row_scales, identity_order(rows));

      for (int n : {1, 2, 5, 16, 17, 33, 64, 100}) {
        const RandomInput input = random_input(n, cols, rng);
        const QuantizedActs& acts = input.acts;
        const GpuActs d_acts(acts, n, n == 2 || n == 17 || n == 64 ? 384 : 0);
        const DeviceArray<float> d_x(input.x), d_norm(input.norm);
        std::vector<float> y(static_cast<size_t>(n * rows));
        ternary_matmul_scalar(cpu, acts, n, y.data(), rows, 0, rows);

        // The residual add's input, and the relu2_mul expectation from the CPU op.
        const int64_t stride = rows + 5, half_stride = rows / 2 + 3;
        const auto base = normal_floats(static_cast<size_t>(n * stride), rng);
        std::vector<float> want_relu(static_cast<size_t>(n * (rows / 2)));
        for (int tok = 0; tok < n; ++tok) {
          std::vector<float> gate(static_cast<size_t>(rows / 2)), up(gate.size());
          for (int64_t i = 0; i < rows / 2; ++i) {
            gate[static_cast<size_t>(i)] = y[static_cast<size_t>(tok * rows + 2 * i)];
            up[static_cast<size_t>(i)] = y[static_cast<size_t>(tok * rows + 2 * i + 1)];
          }
          relu2_mul(gate.data(), up.data(), want_relu.data() + tok * (rows / 2), rows / 2);
        }

        for (bool gemv : {true, false}) {
          if (gemv && n != 1) continue;
          SCOPED_TRACE(std::string(gemv ? "gemv" : "gemm") + " rows " + std::to_string(rows) +
                       " cols " + std::to_string(cols) + " tokens " + std::to_string(n));
          // store
          {
            DeviceArray<float> out(static_cast<size_t>(n * stride));
            out.poison();
            run_matmul(gemv, gpu, d_acts, d_x, d_norm, n,
                       {.kind = cuda::EpilogueKind::store, .out = out.get(), .out_stride = stride});
            const auto got = out.download();
            for (int tok = 0; tok < n; ++tok) {
              for (int64_t r = 0; r < stride; ++r) {
                const uint32_t g = bits(got[static_cast<size_t>(tok * stride + r)]);
                if (r >= rows) {
                  ASSERT_EQ(g, kPoisonF32)
                      << "store wrote past the rows: token " << tok << " " << r;
                } else {
                  const float w = y[static_cast<size_t>(tok * rows + r)];
                  ASSERT_EQ(g, bits(w))
                      << "store: token " << tok << " row " << r << ": "
                      << got[static_cast<size_t>(tok * stride + r)] << " vs " << w;
                }
              }
            }
          }
          // add: out += y
          {
            DeviceArray<float> out(base);
            run_matmul(gemv, gpu, d_acts, d_x, d_norm, n,
                       {.kind = cuda::EpilogueKind::add, .out = out.get(), .out_stride = stride});
            const auto got = out.download();
            for (int tok = 0; tok < n; ++tok) {
              for (int64_t r = 0; r < stride; ++r) {
                const size_t i = static_cast<size_t>(tok * stride + r);
                const float w =
                    r < rows ? base[i] + y[static_cast<size_t>(tok * rows + r)] : base[i];
                ASSERT_EQ(bits(got[i]), bits(w)) << "add: token " << tok << " row " << r;
              }
            }
          }
          // relu2_mul: out[t][i] = relu(y[2i])^2 * y[2i + 1]
          {
            DeviceArray<float> out(static_cast<size_t>(n * half_stride));
            out.poison();
            run_matmul(gemv, gpu, d_acts, d_x, d_norm, n,
                       {.kind = cuda::EpilogueKind::relu2_mul,
                        .out = out.get(),
                        .out_stride = half_stride});
            const auto got = out.download();
            for (int tok = 0; tok < n; ++tok) {
              for (int64_t i = 0; i < half_stride; ++i) {
                const uint32_t g = bits(got[static_cast<size_t>(tok * half_stride + i)]);
                if (i >= rows / 2) {
                  ASSERT_EQ(g, kPoisonF32) << "relu2_mul wrote past its outputs: " << i;
                } else {
                  ASSERT_EQ(g, bits(want_relu[static_cast<size_t>(tok * (rows / 2) + i)]))
                      << "relu2_mul: token " << tok << " output " << i;
                }
              }
            }
          }
        }
      }
    }
  }
}

// GPU row order of a fused qkv matrix: within q and k, rows (2m, 2m + 1) are dims (j, j + half)
// of head m / half (j = m % half); v rows in order (ternary_matmul.cuh).
std::vector<int64_t> qkv_gpu_order(int n_heads, int n_kv_heads, int head_dim) {
  std::vector<int64_t> order;
  const int half = head_dim / 2;
  auto heads = [&](int64_t first, int count) {
    for (int h = 0; h < count; ++h) {
      for (int j = 0; j < half; ++j) {
        order.push_back(first + h * head_dim + j);
        order.push_back(first + h * head_dim + j + half);
      }
    }
  };
  const int64_t q_dim = int64_t{n_heads} * head_dim, kv_dim = int64_t{n_kv_heads} * head_dim;
  heads(0, n_heads);
  heads(q_dim, n_kv_heads);
  for (int64_t r = q_dim + kv_dim; r < q_dim + 2 * kv_dim; ++r) order.push_back(r);
  return order;
}

TEST(CudaKernels, QkvRopeEpilogueMatchesCpuRopeAndF16Cache) {
  SKIP_WITHOUT_CUDA();
  const int n_heads = 4, n_kv_heads = 2, n_layers = 2, layer = 1, n_slots = 3, context = 40;
  for (int head_dim : {8, 32}) {
    for (int64_t cols : {100, 128}) {
      const int half = head_dim / 2;
      const int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim;
      const int64_t rows = q_dim + 2 * kv_dim;
      std::mt19937 rng(seed_of({5, head_dim, cols}));
      const auto t = random_ternary(static_cast<size_t>(rows * cols), rng);
      const auto row_scales = uniform_floats(static_cast<size_t>(rows), rng, 0.25f, 3.0f);
      const TernaryMatrix cpu = cpu_matrix(t, rows, cols, row_scales);
      const GpuTernary gpu(t, rows, cols, row_scales, qkv_gpu_order(n_heads, n_kv_heads, head_dim));

      // RoPE tables as the forward passes build them.
      std::vector<float> cos_table(static_cast<size_t>(context * half)),
          sin_table(cos_table.size());
      for (int i = 0; i < half; ++i) {
        const float inv_freq = 1.0f / std::pow(10000.0f, static_cast<float>(2 * i) / head_dim);
        for (int p = 0; p < context; ++p) {
          const double angle = static_cast<double>(static_cast<float>(p) * inv_freq);
          cos_table[static_cast<size_t>(p * half + i)] = static_cast<float>(std::cos(angle));
          sin_table[static_cast<size_t>(p * half + i)] = static_cast<float>(std::sin(angle));
        }
      }
      const DeviceArray<float> d_cos(cos_table), d_sin(sin_table);

      const int64_t head_stride = int64_t{context} * head_dim;
      const int64_t layer_stride = head_stride * n_kv_heads;
      const int64_t slot_stride = layer_stride * n_layers;
      const size_t cache_elems = static_cast<size_t>(slot_stride * n_slots);

      for (int n : {1, 5, 19}) {
        SCOPED_TRACE("head_dim " + std::to_string(head_dim) + " cols " + std::to_string(cols) +
                     " tokens " + std::to_string(n));
        // Distinct random (slot, pos) per token.
        std::vector<std::pair<int, int>> places;
        for (int s = 0; s < n_slots; ++s)
          for (int p = 0; p < context; ++p) places.emplace_back(s, p);
        std::shuffle(places.begin(), places.end(), rng);
        if (n > 1) {  // token 1 at the last position of the last slot
          const auto last =
              std::find(places.begin(), places.end(), std::make_pair(n_slots - 1, context - 1));
          std::iter_swap(places.begin() + 1, last);
        }
        places.resize(static_cast<size_t>(n));
        std::vector<int32_t> pos(static_cast<size_t>(n)), slot(static_cast<size_t>(n));
        for (int i = 0; i < n; ++i) {
          slot[static_cast<size_t>(i)] = places[static_cast<size_t>(i)].first;
          pos[static_cast<size_t>(i)] = places[static_cast<size_t>(i)].second;
        }

        const RandomInput input = random_input(n, cols, rng);
        const QuantizedActs& acts = input.acts;
        const GpuActs d_acts(acts, n);
        const DeviceArray<float> d_x(input.x), d_norm(input.norm);
        std::vector<float> y(static_cast<size_t>(n * rows));
        ternary_matmul_scalar(cpu, acts, n, y.data(), rows, 0, rows);

        // CPU: rope() on the unpermuted q and k rows, f16 conversion for the cache.
        const int64_t out_stride = q_dim + 3;
        std::vector<float> want_q(static_cast<size_t>(n * out_stride));
        std::vector<uint16_t> want_k(cache_elems, kPoisonF16), want_v(cache_elems, kPoisonF16);
        for (int i = 0; i < n; ++i) {
          float* q = y.data() + i * rows;
          float* k = q + q_dim;
          const float* v = k + kv_dim;
          const int p = pos[static_cast<size_t>(i)];
          rope(q, n_heads, head_dim, cos_table.data() + p * half, sin_table.data() + p * half);
          rope(k, n_kv_heads, head_dim, cos_table.data() + p * half, sin_table.data() + p * half);
          for (int d = 0; d < out_stride; ++d)
            want_q[static_cast<size_t>(i * out_stride + d)] =
                d < q_dim ? q[d] : std::bit_cast<float>(kPoisonF32);
          for (int h = 0; h < n_kv_heads; ++h) {
            for (int d = 0; d < head_dim; ++d) {
              const size_t at = static_cast<size_t>(slot[static_cast<size_t>(i)] * slot_stride +
                                                    layer * layer_stride + h * head_stride +
                                                    int64_t{p} * head_dim + d);
              want_k[at] = f32_to_f16(k[h * head_dim + d]);
              want_v[at] = f32_to_f16(v[h * head_dim + d]);
            }
          }
        }

        const DeviceArray<int32_t> d_pos(pos), d_slot(slot);
        DeviceArray<float> d_q(static_cast<size_t>(n * out_stride));
        DeviceArray<uint16_t> d_k(cache_elems), d_v(cache_elems);
        cuda::Epilogue e;
        e.kind = cuda::EpilogueKind::qkv_rope;
        e.out = d_q.get();
        e.out_stride = out_stride;
        e.q_dim = q_dim;
        e.kv_dim = kv_dim;
        e.head_dim = head_dim;
        e.pos = d_pos.get();
        e.slot = d_slot.get();
        e.rope_cos = d_cos.get();
        e.rope_sin = d_sin.get();
        e.k_cache = as_half(d_k.get()) + layer * layer_stride;
        e.v_cache = as_half(d_v.get()) + layer * layer_stride;
        e.cache_slot_stride = slot_stride;
        e.cache_head_stride = head_stride;

        for (bool gemv : {true, false}) {
          if (gemv && n != 1) continue;
          SCOPED_TRACE(gemv ? "gemv" : "gemm");
          d_q.poison();
          d_k.poison();
          d_v.poison();
          run_matmul(gemv, gpu, d_acts, d_x, d_norm, n, e);
          const auto got_q = d_q.download();
          const auto got_k = d_k.download();
          const auto got_v = d_v.download();
          for (size_t i = 0; i < got_q.size(); ++i) {
            ASSERT_EQ(bits(got_q[i]), bits(want_q[i]))
                << "q: token " << i / static_cast<size_t>(out_stride) << " dim "
                << i % static_cast<size_t>(out_stride) << ": " << got_q[i] << " vs " << want_q[i];
          }
          for (size_t i = 0; i < cache_elems; ++i) {
            ASSERT_EQ(got_k[i], want_k[i]) << "k cache element " << i;
            ASSERT_EQ(got_v[i], want_v[i]) << "v cache element " << i;
          }
        }
      }
    }
  }
}

// ---- attention ---------------------------------------------------------------------------------

TEST(CudaKernels, AttentionMatchesTheScalarKernelBitForBit) {
  SKIP_WITHOUT_CUDA();
  const int n_kv_heads = 2, n_slots = 3, context = 320;  // 3 chunks of positions
  const std::vector<int> positions = {0, 1, 5, 127, 128, 129, 300, 255, 4};
  for (int head_dim : {32, 128}) {
    for (int group : {1, 2, 4, 8}) {
      SCOPED_TRACE("head_dim " + std::to_string(head_dim) + " group " + std::to_string(group));
      const int n_heads = n_kv_heads * group;
      std::mt19937 rng(seed_of({6, head_dim, group}));
      const int n = static_cast<int>(positions.size());
      std::vector<int32_t> pos(positions.begin(), positions.end()), slot(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) slot[static_cast<size_t>(i)] = (i * 2 + 1) % n_slots;

      // The cache: positions up to each slot's last query are random f16 values (stored
      // identically in the CPU KvCache), later ones NaN (attention must not read them).
      ModelConfig config;
      config.n_layers = 1;
      config.n_kv_heads = n_kv_heads;
      config.head_dim = head_dim;
      KvCache kv(config, n_slots, context, KvCacheType::f16);
      const int64_t head_stride = int64_t{context} * head_dim;
      const int64_t slot_stride = head_stride * n_kv_heads;
      std::vector<uint16_t> k_gpu(static_cast<size_t>(slot_stride * n_slots), 0x7E00);
      std::vector<uint16_t> v_gpu(k_gpu.size(), 0x7E00);
      for (int s = 0; s < n_slots; ++s) {
        int last = -1;
        for (int i = 0; i < n; ++i)
          if (slot[static_cast<size_t>(i)] == s) last = std::max(last, pos[static_cast<size_t>(i)]);
        for (int p = 0; p <= last; ++p) {
          std::vector<float> k = normal_floats(static_cast<size_t>(n_kv_heads * head_dim), rng);
          std::vector<float> v = normal_floats(k.size(), rng);
          for (size_t i = 0; i < k.size(); ++i) {
            k[i] = f16_to_f32(f32_to_f16(k[i]));
            v[i] = f16_to_f32(f32_to_f16(v[i]));
          }
          kv.write(s, 0, p, k.data(), v.data());
          for (int h = 0; h < n_kv_heads; ++h) {
            for (int d = 0; d < head_dim; ++d) {
              const size_t at = static_cast<size_t>(s * slot_stride + h * head_stride +
                                                    int64_t{p} * head_dim + d);
              k_gpu[at] = f32_to_f16(k[static_cast<size_t>(h * head_dim + d)]);
              v_gpu[at] = f32_to_f16(v[static_cast<size_t>(h * head_dim + d)]);
            }
          }
        }
      }
      const std::vector<float> q =
          normal_floats(static_cast<size_t>(n * n_heads * head_dim), rng, 2.0f);

      // CPU: each KV head's query heads against positions [0, pos].
      std::vector<float> want(q.size());
      for (int i = 0; i < n; ++i) {
        const int n_pos = pos[static_cast<size_t>(i)] + 1;
        std::vector<float> scratch(static_cast<size_t>(attention_scratch_floats(group, n_pos)));
        for (int h = 0; h < n_kv_heads; ++h) {
          const size_t at = static_cast<size_t>((i * n_heads + h * group) * head_dim);
          attention_scalar(kv.head(slot[static_cast<size_t>(i)], 0, h), n_pos, q.data() + at, group,
                           want.data() + at, scratch.data());
        }
      }

      const DeviceArray<uint16_t> d_k(k_gpu), d_v(v_gpu);
      const DeviceArray<float> d_q(q);
      const DeviceArray<int32_t> d_pos(pos), d_slot(slot);
      DeviceArray<float> d_out(q.size());
      DeviceArray<float> d_workspace(
          static_cast<size_t>(cuda::attention_workspace_floats(n_heads, context, n)));
      d_out.poison();
      d_workspace.poison();
      cuda::AttentionArgs args;
      args.q = d_q.get();
      args.k_cache = reinterpret_cast<const __half*>(d_k.get());
      args.v_cache = reinterpret_cast<const __half*>(d_v.get());
      args.cache_slot_stride = slot_stride;
      args.cache_head_stride = head_stride;
      args.pos = d_pos.get();
      args.slot = d_slot.get();
      args.n_heads = n_heads;
      args.n_kv_heads = n_kv_heads;
      args.head_dim = head_dim;
      args.context = context;
      args.out = d_out.get();
      args.scores = d_workspace.get();
      cuda::attention(args, n, nullptr);
      sync();
      const auto got = d_out.download();

      float scale = 0.0f;
      for (float w : want) scale = std::max(scale, std::fabs(w));
      ASSERT_GT(scale, 0.0f);
      for (size_t i = 0; i < got.size(); ++i) {
        const size_t token = i / static_cast<size_t>(n_heads * head_dim);
        ASSERT_FALSE(std::isnan(got[i]))
            << "token " << token << " (pos " << pos[token] << ") element " << i << " is NaN";
        // The CPU's order of operations throughout: bit-identical.
        ASSERT_EQ(got[i], want[i])
            << "token " << token << " (pos " << pos[token] << ", slot " << slot[token] << ") head "
            << (i / static_cast<size_t>(head_dim)) % static_cast<size_t>(n_heads) << " dim "
            << i % static_cast<size_t>(head_dim);
      }
    }
  }
}

// ---- lm_head, argmax
// ------------------------------------------------------------------------------

TEST(CudaKernels, LmHeadMatchesTheScalarKernel) {
  SKIP_WITHOUT_CUDA();
  for (LmHeadFormat format : {LmHeadFormat::bf16, LmHeadFormat::int8}) {
    for (int64_t rows : {1, 3, 8, 1001}) {
      for (int64_t cols : {128, 144, 2560}) {  // 144: int8 rows padded to 192
        std::mt19937 rng(seed_of({7, static_cast<int>(format), rows, cols}));
        std::vector<uint16_t> bf16(static_cast<size_t>(rows * cols));
        {
          const auto w = normal_floats(bf16.size(), rng, 0.05f);
          for (size_t i = 0; i < w.size(); ++i) bf16[i] = f32_to_bf16(w[i]);
        }
        LmHead head;
        if (format == LmHeadFormat::bf16) {
          head = LmHead::view_bf16(bf16.data(), rows, cols);
        } else {
          head = LmHead::allocate(LmHeadFormat::int8, rows, cols);
          std::vector<float> row(static_cast<size_t>(cols));
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t k = 0; k < cols; ++k)
              row[static_cast<size_t>(k)] = bf16_to_f32(bf16[static_cast<size_t>(r * cols + k)]);
            head.set_row(r, row.data());
          }
        }
        const bool int8 = format == LmHeadFormat::int8;
        const int64_t x_stride = int8 ? head.padded_cols() : (cols + 15) / 16 * 16;

        std::unique_ptr<DeviceArray<uint16_t>> d_bf16;
        std::unique_ptr<DeviceArray<int8_t>> d_codes;
        std::unique_ptr<DeviceArray<float>> d_scales;
        cuda::LmHeadWeights w;
        w.int8 = int8;
        w.rows = rows;
        w.cols = cols;
        w.x_stride = x_stride;
        if (int8) {
          std::vector<int8_t> codes(static_cast<size_t>(rows * head.row_bytes()));
          std::memcpy(codes.data(), head.codes, codes.size());
          d_codes = std::make_unique<DeviceArray<int8_t>>(codes);
          d_scales = std::make_unique<DeviceArray<float>>(head.row_scales);
          w.codes = d_codes->get();
          w.row_scales = d_scales->get();
        } else {
          d_bf16 = std::make_unique<DeviceArray<uint16_t>>(bf16);
          w.bf16 = d_bf16->get();
        }

        for (int n : {1, 3, 8, 9, 17}) {
          SCOPED_TRACE(std::string(format_name(format)) + " rows " + std::to_string(rows) +
                       " cols " + std::to_string(cols) + " tokens " + std::to_string(n));
          const auto xs = normal_floats(static_cast<size_t>(n * cols), rng, 2.0f);
          std::vector<float> x_gpu(static_cast<size_t>(n * x_stride), 0.0f);
          for (int t = 0; t < n; ++t)
            std::copy_n(xs.data() + t * cols, cols, x_gpu.data() + t * x_stride);
          const DeviceArray<float> d_x(x_gpu);
          DeviceArray<float> d_logits(static_cast<size_t>(n * rows));
          d_logits.poison();
          cuda::lm_head(w, d_x.get(), n, d_logits.get(), nullptr);
          sync();
          const auto got = d_logits.download();

          std::vector<float> want(static_cast<size_t>(rows));
          LmHeadInput in;
          for (int t = 0; t < n; ++t) {
            const float* x = xs.data() + t * cols;
            head.prepare(x, in);
            head.matvec(CpuIsa::scalar, in, want.data(), 0, rows);
            for (int64_t r = 0; r < rows; ++r) {
              // The tolerance: 1e-5 of the row's sum of |w x| (as stored), plus, for int8, the
              // CPU's rounding of x to int16 (half a step per element; the GPU keeps x in fp32).
              double mag = 0.0, weight_mass = 0.0;
              for (int64_t k = 0; k < cols; ++k) {
                const double wk = int8 ? static_cast<double>(reinterpret_cast<const int8_t*>(
                                             head.codes)[r * head.row_bytes() + k]) *
                                             head.row_scales[static_cast<size_t>(r)]
                                       : bf16_to_f32(bf16[static_cast<size_t>(r * cols + k)]);
                mag += std::fabs(wk * x[k]);
                weight_mass += std::fabs(wk);
              }
              const double x_rounding = int8 ? weight_mass * 0.5 / in.scale : 0.0;
              const float g = got[static_cast<size_t>(t * rows + r)];
              ASSERT_FALSE(std::isnan(g)) << "token " << t << " row " << r << " not written";
              ASSERT_NEAR(g, want[static_cast<size_t>(r)], 1e-5 * mag + x_rounding + 1e-30)
                  << "token " << t << " row " << r;
            }
          }
        }
      }
    }
  }
}

TEST(CudaKernels, ArgmaxTakesTheLowestIdOfTies) {
  SKIP_WITHOUT_CUDA();
  for (int64_t vocab : {7, 128256}) {
    for (int n : {1, 5}) {
      SCOPED_TRACE("vocab " + std::to_string(vocab) + " tokens " + std::to_string(n));
      std::mt19937 rng(seed_of({8, vocab, n}));
      std::vector<float> logits = normal_floats(static_cast<size_t>(n * vocab), rng, 3.0f);
      // Planted maxima per token (several ids share the top value: the lowest must win).
      const std::vector<std::vector<int64_t>> planted_large = {
          {},                   // no tie: the random maximum
          {1023, 1024},         // first strided pass of thread 1023 vs second of thread 0
          {5, 1029, 70000},     // one thread's own elements
          {vocab - 1},          // the last id alone
          {0, 64, 31, 128255},  // across warps, with id 0
      };
      const std::vector<std::vector<int64_t>> planted_small = {
          {}, {2, 6}, {6}, {0, 1, 2, 3, 4, 5, 6}, {3, 4}};
      std::vector<int32_t> want(static_cast<size_t>(n));
      for (int t = 0; t < n; ++t) {
        float* row = logits.data() + t * vocab;
        std::vector<int64_t> ids;
        for (int64_t id : (vocab > 7 ? planted_large : planted_small)[static_cast<size_t>(t)])
          if (id < vocab) ids.push_back(id);
        if (!ids.empty()) {
          for (int64_t id : ids) row[id] = 100.0f;
          want[static_cast<size_t>(t)] =
              static_cast<int32_t>(*std::min_element(ids.begin(), ids.end()));
        } else {
          want[static_cast<size_t>(t)] =
              argmax(std::span<const float>(row, static_cast<size_t>(vocab)));
        }
        EXPECT_EQ(argmax(std::span<const float>(row, static_cast<size_t>(vocab))),
                  want[static_cast<size_t>(t)]);  // the CPU's rule agrees
      }
      const DeviceArray<float> d_logits(logits);
      DeviceArray<int32_t> d_ids(static_cast<size_t>(n));
      DeviceArray<unsigned long long> d_keys(static_cast<size_t>(n));
      d_ids.poison();
      d_keys.poison();
      cuda::argmax(d_logits.get(), vocab, n, d_keys.get(), d_ids.get(), nullptr);
      sync();
      EXPECT_EQ(d_ids.download(), want);
    }
  }
}

// ---- the whole model ---------------------------------------------------------------------------

const std::vector<int32_t> kPrompt = {504, 72, 101, 276, 111, 259, 277, 350, 13, 200, 7, 480};
constexpr int kDecodeSteps = 8;

// Logits after the prompt and after each greedy decode step, and the greedy ids.
struct Trace {
  std::vector<std::vector<float>> logits;  // [1 + kDecodeSteps][vocab]
  std::vector<int32_t> ids;                // argmax of each
};

Trace cpu_trace(const std::shared_ptr<const Model>& model, const std::vector<int32_t>& prompt) {
  SessionOptions options;
  options.device = "cpu";  // f16 KV cache by default, as the GPU's
  Session session(model, options);
  Trace trace;
  std::span<const float> logits = session.feed(prompt);
  for (int step = 0; step <= kDecodeSteps; ++step) {
    trace.logits.emplace_back(logits.begin(), logits.end());
    trace.ids.push_back(argmax(logits));
    if (step < kDecodeSteps) logits = session.feed(std::span<const int32_t>(&trace.ids.back(), 1));
  }
  return trace;
}

// The same on the GPU in `slot` of `forward` (logits == false: ids alone come back).
Trace gpu_trace(CudaForward& forward, int vocab, const std::vector<int32_t>& prompt, int slot = 0,
                bool want_logits = true) {
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < prompt.size(); ++i)
    batch.push_back({prompt[i], static_cast<int32_t>(i), slot});
  Trace trace;
  std::vector<float> logits(static_cast<size_t>(vocab), std::numeric_limits<float>::quiet_NaN());
  int32_t id = -1;
  forward.forward(batch, static_cast<int>(batch.size()) - 1, want_logits ? logits.data() : nullptr,
                  &id);
  for (int step = 0; step <= kDecodeSteps; ++step) {
    if (want_logits) trace.logits.push_back(logits);
    trace.ids.push_back(id);
    if (step == kDecodeSteps) break;
    const BatchToken next{id, static_cast<int32_t>(prompt.size()) + step, slot};
    std::fill(logits.begin(), logits.end(), std::numeric_limits<float>::quiet_NaN());
    id = -1;
    forward.forward(std::span<const BatchToken>(&next, 1), 0, want_logits ? logits.data() : nullptr,
                    &id);
  }
  return trace;
}

float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v) m = std::max(m, std::fabs(x));
  return m;
}

void expect_traces_match(const Trace& gpu, const Trace& cpu) {
  ASSERT_EQ(gpu.logits.size(), cpu.logits.size());
  for (size_t step = 0; step < cpu.logits.size(); ++step) {
    const auto& want = cpu.logits[step];
    const auto& got = gpu.logits[step];
    ASSERT_EQ(got.size(), want.size());
    const float tolerance = 1e-3f * max_abs(want);
    float worst = 0.0f;
    size_t worst_at = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_FALSE(std::isnan(got[i])) << "step " << step << " logit " << i;
      const float d = std::fabs(got[i] - want[i]);
      if (d > worst) {
        worst = d;
        worst_at = i;
      }
    }
    EXPECT_LE(worst, tolerance) << "step " << step << " (0: prefill), logit " << worst_at << ": "
                                << got[worst_at] << " vs CPU " << want[worst_at];
  }
  EXPECT_EQ(gpu.ids, cpu.ids);
}

struct ModelCase {
  std::string name;
  RandomModelSpec spec;
  LmHeadFormat lm_head;
};

void check_against_cpu(const ModelCase& c) {
  SCOPED_TRACE(c.name);
  LoadOptions load;
  load.lm_head = c.lm_head;
  const auto model = Model::load(test::cached_model(c.name, c.spec), load);
  const int vocab = model->config().vocab_size;
  const Trace cpu = cpu_trace(model, kPrompt);
  CudaForward forward(model, 16, model->config().max_seq_len);
  expect_traces_match(gpu_trace(forward, vocab, kPrompt), cpu);
  // Again over the same cache (positions rewritten), the decode graphs replayed, ids alone.
  EXPECT_EQ(gpu_trace(forward, vocab, kPrompt, 0, false).ids, cpu.ids);
}

TEST(CudaModel, MatchesTheCpuSessionWithInt8LmHead) {
  SKIP_WITHOUT_CUDA();
  check_against_cpu({"cuda_tiny", test::tiny_spec(), LmHeadFormat::int8});
}

TEST(CudaModel, MatchesTheCpuSessionWithBf16LmHead) {
  SKIP_WITHOUT_CUDA();
  check_against_cpu({"cuda_tiny", test::tiny_spec(), LmHeadFormat::bf16});
  RandomModelSpec untied = test::tiny_spec(QuantMode::online, 4);
  untied.tie_word_embeddings = false;
  check_against_cpu({"cuda_untied", untied, LmHeadFormat::bf16});
}

// The full-size model's widths, heads, RoPE base and context (2 layers, a smaller vocabulary),
// in both checkpoint variants.
TEST(CudaModel, MatchesTheCpuSessionAt2b4tWidth) {
  SKIP_WITHOUT_CUDA();
  for (QuantMode variant : {QuantMode::offline, QuantMode::online}) {
    RandomModelSpec spec = RandomModelSpec::preset("2b4t");
    spec.n_layers = 2;
    spec.vocab_size = 4096;
    spec.variant = variant;
    check_against_cpu({variant == QuantMode::offline ? "cuda_2b4t_packed" : "cuda_2b4t_bf16", spec,
                       LmHeadFormat::int8});
  }
}

// Three sequences decoded together in one batch per step compute exactly what each computes
// alone (the GEMM and the GEMV give the same int32 dots and the same float epilogue).
TEST(CudaModel, BatchedDecodeOverThreeSlotsEqualsSingleSlotRuns) {
  SKIP_WITHOUT_CUDA();
  const auto model = Model::load(test::cached_model("cuda_tiny", test::tiny_spec()));
  const int vocab = model->config().vocab_size, context = model->config().max_seq_len;
  const std::vector<std::vector<int32_t>> prompts = {
      kPrompt, {13, 200, 7, 480, 504, 72, 101}, {350, 277, 259}};
  const int n_slots = static_cast<int>(prompts.size());

  std::vector<Trace> alone;
  {
    CudaForward single(model, 16, context);
    for (const auto& p : prompts) alone.push_back(gpu_trace(single, vocab, p));
  }

  CudaForward forward(model, 16, context, n_slots);
  std::vector<Trace> together(static_cast<size_t>(n_slots));
  std::vector<float> logits(static_cast<size_t>(n_slots * vocab));
  std::vector<int32_t> ids(static_cast<size_t>(n_slots));
  std::vector<int32_t> next_pos(static_cast<size_t>(n_slots));
  // Prefill each slot on its own, in reverse order (slot 2 first).
  for (int s = n_slots - 1; s >= 0; --s) {
    const auto& p = prompts[static_cast<size_t>(s)];
    std::vector<BatchToken> batch;
    for (size_t i = 0; i < p.size(); ++i) batch.push_back({p[i], static_cast<int32_t>(i), s});
    int32_t id = -1;
    std::fill(logits.begin(), logits.end(), std::numeric_limits<float>::quiet_NaN());
    forward.forward(batch, static_cast<int>(batch.size()) - 1, logits.data(), &id);
    together[static_cast<size_t>(s)].logits.emplace_back(logits.begin(), logits.begin() + vocab);
    together[static_cast<size_t>(s)].ids.push_back(id);
    next_pos[static_cast<size_t>(s)] = static_cast<int32_t>(p.size());
  }
  for (int step = 0; step < kDecodeSteps; ++step) {
    std::vector<BatchToken> batch;
    for (int s = 0; s < n_slots; ++s) {
      batch.push_back(
          {together[static_cast<size_t>(s)].ids.back(), next_pos[static_cast<size_t>(s)]++, s});
    }
    std::fill(logits.begin(), logits.end(), std::numeric_limits<float>::quiet_NaN());
    std::fill(ids.begin(), ids.end(), -1);
    forward.forward(batch, 0, logits.data(), ids.data());
    for (int s = 0; s < n_slots; ++s) {
      together[static_cast<size_t>(s)].logits.emplace_back(logits.begin() + s * vocab,
                                                           logits.begin() + (s + 1) * vocab);
      together[static_cast<size_t>(s)].ids.push_back(ids[static_cast<size_t>(s)]);
    }
  }

  for (int s = 0; s < n_slots; ++s) {
    SCOPED_TRACE("slot " + std::to_string(s));
    const Trace& a = alone[static_cast<size_t>(s)];
    const Trace& b = together[static_cast<size_t>(s)];
    EXPECT_EQ(b.ids, a.ids);
    ASSERT_EQ(b.logits.size(), a.logits.size());
    for (size_t step = 0; step < a.logits.size(); ++step) {
      for (size_t i = 0; i < a.logits[step].size(); ++i) {
        ASSERT_EQ(bits(b.logits[step][i]), bits(a.logits[step][i]))
            << "step " << step << " logit " << i << ": " << b.logits[step][i] << " batched vs "
            << a.logits[step][i] << " alone";
      }
    }
  }
}

}  // namespace
}  // namespace bitnet

#endif  // BITNET_HAVE_CUDA
