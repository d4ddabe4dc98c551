#include <algorithm>

#include "kernels/cuda/dependent_launch.cuh"
#include "kernels/cuda/norm_quantize.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/ternary_layout.h"
#include "kernels/cuda/ternary_matmul.cuh"

namespace bitnet::cuda {
namespace {

using cuda_layout::kCudaKStep;
using cuda_layout::row_words;

constexpr uint32_t kCodeMask = 0x03030303u;  // the four codes of one shift (ternary_layout.h)

__device__ __forceinline__ float scaled(int32_t dot, float act_scale, float row_scale) {
  return __fmul_rn(__fdiv_rn(static_cast<float>(dot), act_scale), row_scale);
}

__device__ void store_pair(const Epilogue& e, int t, int64_t r, float y0, float y1) {
  float* out = e.out + t * e.out_stride;
  switch (e.kind) {
    case EpilogueKind::store:
      out[r] = y0;
      out[r + 1] = y1;
      break;
    case EpilogueKind::add:
      out[r] = __fadd_rn(out[r], y0);
      out[r + 1] = __fadd_rn(out[r + 1], y1);
      break;
    case EpilogueKind::relu2_mul: {
      const float g = fmaxf(y0, 0.0f);
      out[r / 2] = __fmul_rn(__fmul_rn(g, g), y1);
      break;
    }
    case EpilogueKind::qkv_rope: {
      const int hd = e.head_dim, half = hd / 2;
      const int64_t pos = e.pos[t];
      const int64_t cache_offset = e.slot[t] * e.cache_slot_stride + pos * hd;
      if (r < e.q_dim + e.kv_dim) {
        const bool is_q = r < e.q_dim;
        const int64_t m = (is_q ? r : r - e.q_dim) / 2;
        const int64_t head = m / half, j = m % half;
        const float c = e.rope_cos[pos * half + j], s = e.rope_sin[pos * half + j];
        // As the CPU's rope(): no fused multiply-adds.
        const float o0 = __fsub_rn(__fmul_rn(y0, c), __fmul_rn(y1, s));
        const float o1 = __fadd_rn(__fmul_rn(y1, c), __fmul_rn(y0, s));
        if (is_q) {
          out[head * hd + j] = o0;
          out[head * hd + j + half] = o1;
        } else {
          __half* k = e.k_cache + cache_offset + head * e.cache_head_stride;
          k[j] = __float2half_rn(o0);
          k[j + half] = __float2half_rn(o1);
        }
      } else {
        const int64_t local = r - e.q_dim - e.kv_dim;
        __half* v = e.v_cache + cache_offset + (local / hd) * e.cache_head_stride + local % hd;
        v[0] = __float2half_rn(y0);
        v[1] = __float2half_rn(y1);
      }
      break;
    }
  }
}

// Sixteen codes of `word` times sixteen int8 activations (four dp4a).
__device__ __forceinline__ int dot16(uint32_t word, int4 x, int acc) {
  acc = __dp4a(static_cast<int>(word & kCodeMask), x.x, acc);
  acc = __dp4a(static_cast<int>((word >> 2) & kCodeMask), x.y, acc);
  acc = __dp4a(static_cast<int>((word >> 4) & kCodeMask), x.z, acc);
  acc = __dp4a(static_cast<int>((word >> 6) & kCodeMask), x.w, acc);
  return acc;
}

// ---- GEMV ----------------------------------------------------------------------------------

constexpr int kGemvWarps = 16;
constexpr int kGemvPrefetch = 4;  // 16-byte chunks per row and lane: K up to kGemvMaxCols
static_assert(32 * kGemvPrefetch * 64 == kGemvMaxCols);

// A persistent grid: each block normalizes and quantizes the input once (while its first weight
// loads are in flight), then each warp takes output pairs in turn, requesting the next pair's
// rows before it works on the current one. Lane l holds weight chunks i = l + 32 k (16 bytes,
// 64 weights) of both rows and meets them with activation chunks 4i .. 4i + 3. Activations sit
// in shared memory as x_s[c * chunks + i] = chunk 4i + c, so the 32 lanes' reads of one c are
// consecutive.
template <int kPerThread>
__global__ void __launch_bounds__(kGemvWarps * 32, 1)
    gemv_kernel(TernaryWeights w, NormedInput input, Epilogue e) {
  extern __shared__ int4 x_s[];
  const int64_t words = row_words(w.cols);
  const int64_t chunks = words / 4;
  const int64_t pairs = w.rows / 2;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kGemvWarps;
  int64_t pair = static_cast<int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / 32;

  struct Rows {
    uint4 a[kGemvPrefetch], b[kGemvPrefetch];
  };
  auto fetch = [&](int64_t p, Rows& rows) {
    if (p >= pairs) return;
    const uint4* row0 = reinterpret_cast<const uint4*>(w.words + 2 * p * words);
    const uint4* row1 = row0 + chunks;
#pragma unroll
    for (int k = 0; k < kGemvPrefetch; ++k) {
      const int64_t i = lane + 32 * k;
      if (i < chunks) {
        rows.a[k] = __ldg(row0 + i);
        rows.b[k] = __ldg(row1 + i);
      }
    }
  };
  Rows current;
  fetch(pair, current);
  allow_dependents();
  wait_for_predecessor();  // the input and the epilogue's outputs belong to earlier kernels

  int8_t* x_bytes = reinterpret_cast<int8_t*>(x_s);
  auto store = [&](int64_t i, int8_t code) {
    const int64_t c = i / 16;
    x_bytes[((c % 4) * chunks + c / 4) * 16 + i % 16] = code;
  };
  for (int64_t i = w.cols + threadIdx.x; i < words * 16; i += blockDim.x) store(i, 0);
  const QuantizedRow acts =
      rmsnorm_quantize_row<kPerThread>(input.x, input.weight, w.cols, input.eps, store);
  __syncthreads();

  for (; pair < pairs; pair += warps) {
    Rows next;
    fetch(pair + warps, next);
    int acc0 = 0, acc1 = 0;
#pragma unroll
    for (int k = 0; k < kGemvPrefetch; ++k) {
      const int64_t i = lane + 32 * k;
      if (i < chunks) {
        const int4 x0 = x_s[i], x1 = x_s[chunks + i], x2 = x_s[2 * chunks + i],
                   x3 = x_s[3 * chunks + i];
        const uint4 a = current.a[k], b = current.b[k];
        acc0 = dot16(a.w, x3, dot16(a.z, x2, dot16(a.y, x1, dot16(a.x, x0, acc0))));
        acc1 = dot16(b.w, x3, dot16(b.z, x2, dot16(b.y, x1, dot16(b.x, x0, acc1))));
      }
    }
    acc0 = warp_sum(acc0);
    acc1 = warp_sum(acc1);
    if (lane == 0) {
      const int64_t r = 2 * pair;
      store_pair(e, 0, r, scaled(acc0 - acts.sum, acts.scale, w.row_scales[r]),
                 scaled(acc1 - acts.sum, acts.scale, w.row_scales[r + 1]));
    }
    current = next;
  }
}

int multiprocessors() {
  static const int count = [] {
    int device = 0, n = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device), "SM count");
    return n;
  }();
  return count;
}

// ---- GEMM ----------------------------------------------------------------------------------

constexpr int kAStride = kCudaKStep + 16;  // bytes per token row in shared memory (padding
                                           // makes the fragment loads conflict-free)
constexpr int kBWords = kCudaKStep / 16;   // words per weight row per stage
constexpr int kBStride = kBWords + 4;      // words per weight row in shared memory
constexpr int kTargetBlocks = 256;         // K is split until the grid has about this many

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;  // 0: fill with zeros
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n");
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

__device__ __forceinline__ void mma_s8(int32_t (&c)[4], const uint32_t (&a)[4],
                                       const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// A block computes a kM x kN tile (tokens x weight rows) over a range of K steps; its warps form
// a kWarpsM x kWarpsN grid of (16 kWm) x (8 kWn) tiles. Token rows and weight rows are staged
// in shared memory by cp.async, two stages deep; each thread builds its B fragment from one
// packed word with a shift and a mask.
template <int kWarpsM, int kWarpsN, int kWm, int kWn>
struct Gemm {
  static constexpr int kM = kWarpsM * 16 * kWm;
  static constexpr int kN = kWarpsN * 8 * kWn;
  static constexpr int kThreads = kWarpsM * kWarpsN * 32;
};

template <int kWarpsM, int kWarpsN, int kWm, int kWn>
__global__ void __launch_bounds__(Gemm<kWarpsM, kWarpsN, kWm, kWn>::kThreads)
    gemm_kernel(TernaryWeights w, Int8Acts acts, int n_tokens, int steps_per_split,
                int32_t* workspace) {
  using G = Gemm<kWarpsM, kWarpsN, kWm, kWn>;
  __shared__ __align__(16) int8_t a_s[2][G::kM * kAStride];
  __shared__ __align__(16) uint32_t b_s[2][G::kN * kBStride];

  const int64_t words = row_words(w.cols);
  const int total_steps = static_cast<int>(words / kBWords);
  const int64_t tile_n = static_cast<int64_t>(blockIdx.x) * G::kN;
  const int tile_m = blockIdx.y * G::kM;
  const int step_begin = blockIdx.z * steps_per_split;
  const int step_end = min(total_steps, step_begin + steps_per_split);

  auto load_stage = [&](int buf, int step) {
    for (int c = threadIdx.x; c < G::kM * 8; c += G::kThreads) {
      const int m = c / 8, part = c % 8;
      const int token = tile_m + m;
      const bool valid = token < n_tokens;
      const int8_t* src =
          acts.q + (valid ? token : 0) * acts.stride + step * kCudaKStep + part * 16;
      cp_async16(&a_s[buf][m * kAStride + part * 16], src, valid);
    }
    for (int c = threadIdx.x; c < G::kN * 2; c += G::kThreads) {
      const int n = c / 2, part = c % 2;
      const int64_t row = tile_n + n;
      const bool valid = row < w.rows;
      const uint32_t* src = w.words + (valid ? row : 0) * words + step * kBWords + part * 4;
      cp_async16(&b_s[buf][n * kBStride + part * 4], src, valid);
    }
    cp_async_commit();
  };

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp / kWarpsN, warp_n = warp % kWarpsN;
  const int g = lane / 4, tig = lane % 4;
  int32_t acc[kWm][kWn][4] = {};

  if (step_begin < step_end) load_stage(0, step_begin);
  for (int step = step_begin; step < step_end; ++step) {
    const int buf = (step - step_begin) & 1;
    if (step + 1 < step_end) {
      load_stage(buf ^ 1, step + 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kCudaKStep / 32; ++kk) {
      uint32_t a[kWm][4];
#pragma unroll
      for (int i = 0; i < kWm; ++i) {
        const int8_t* base =
            &a_s[buf][(warp_m * 16 * kWm + i * 16 + g) * kAStride + kk * 32 + tig * 4];
        a[i][0] = *reinterpret_cast<const uint32_t*>(base);
        a[i][1] = *reinterpret_cast<const uint32_t*>(base + 8 * kAStride);
        a[i][2] = *reinterpret_cast<const uint32_t*>(base + 16);
        a[i][3] = *reinterpret_cast<const uint32_t*>(base + 8 * kAStride + 16);
      }
#pragma unroll
      for (int j = 0; j < kWn; ++j) {
        const uint32_t* packed = &b_s[buf][(warp_n * 8 * kWn + j * 8 + g) * kBStride + 2 * kk];
        const uint32_t b[2] = {(packed[0] >> (2 * tig)) & kCodeMask,
                               (packed[1] >> (2 * tig)) & kCodeMask};
#pragma unroll
        for (int i = 0; i < kWm; ++i) mma_s8(acc[i][j], a[i], b);
      }
    }
    __syncthreads();  // the next iteration's load overwrites the buffer read here
  }

  int32_t* out = workspace + static_cast<int64_t>(blockIdx.z) * n_tokens * w.rows;
#pragma unroll
  for (int i = 0; i < kWm; ++i) {
#pragma unroll
    for (int j = 0; j < kWn; ++j) {
      const int64_t row = tile_n + warp_n * 8 * kWn + j * 8 + 2 * tig;
      if (row >= w.rows) continue;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int token = tile_m + warp_m * 16 * kWm + i * 16 + g + 8 * half;
        if (token < n_tokens) {
          *reinterpret_cast<int2*>(out + token * w.rows + row) =
              make_int2(acc[i][j][2 * half], acc[i][j][2 * half + 1]);
        }
      }
    }
  }
}

// Sums the splits' partial dots of each (token, output pair) and applies the epilogue.
__global__ void epilogue_kernel(TernaryWeights w, Int8Acts acts, int n_tokens, int splits,
                                const int32_t* workspace, Epilogue e) {
  const int64_t pairs = w.rows / 2;
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (index >= pairs * n_tokens) return;
  const int t = static_cast<int>(index / pairs);
  const int64_t r = 2 * (index % pairs);
  int32_t d0 = 0, d1 = 0;
  for (int s = 0; s < splits; ++s) {
    const int2 d = *reinterpret_cast<const int2*>(workspace + (s * n_tokens + t) * w.rows + r);
    d0 += d.x;
    d1 += d.y;
  }
  const int32_t sum = acts.sum[t];
  const float scale = acts.scale[t];
  store_pair(e, t, r, scaled(d0 - sum, scale, w.row_scales[r]),
             scaled(d1 - sum, scale, w.row_scales[r + 1]));
}

struct SplitPlan {
  int splits, steps_per_split;
};

// At most 8 splits: enough to fill the GPU when there are few tiles.
int max_splits(int64_t tiles) {
  return static_cast<int>(std::clamp<int64_t>((kTargetBlocks + tiles - 1) / tiles, 1, 8));
}

SplitPlan plan_splits(int64_t tiles, int total_steps) {
  const int wanted = std::min(max_splits(tiles), total_steps);
  const int steps_per_split = (total_steps + wanted - 1) / wanted;
  return {(total_steps + steps_per_split - 1) / steps_per_split, steps_per_split};
}

template <int kWarpsM, int kWarpsN, int kWm, int kWn>
int launch_gemm(const TernaryWeights& w, const Int8Acts& acts, int n_tokens, int32_t* workspace,
                cudaStream_t stream) {
  using G = Gemm<kWarpsM, kWarpsN, kWm, kWn>;
  const int total_steps = static_cast<int>(row_words(w.cols) / kBWords);
  const dim3 tiles(static_cast<unsigned>((w.rows + G::kN - 1) / G::kN),
                   static_cast<unsigned>((n_tokens + G::kM - 1) / G::kM));
  const SplitPlan plan = plan_splits(static_cast<int64_t>(tiles.x) * tiles.y, total_steps);
  gemm_kernel<kWarpsM, kWarpsN, kWm, kWn>
      <<<dim3(tiles.x, tiles.y, plan.splits), G::kThreads, 0, stream>>>(
          w, acts, n_tokens, plan.steps_per_split, workspace);
  check_launch("ternary_gemm");
  return plan.splits;
}

// The tile shape for n tokens: 16, 32 or 64 token rows.
template <typename Fn>
auto with_tile(int n_tokens, Fn&& fn) {
  if (n_tokens <= 16) return fn.template operator()<1, 8, 1, 2>();
  if (n_tokens <= 32) return fn.template operator()<2, 4, 1, 4>();
  return fn.template operator()<2, 4, 2, 4>();
}

}  // namespace

void ternary_gemv(const TernaryWeights& w, const NormedInput& input, const Epilogue& epilogue,
                  cudaStream_t stream) {
  const int64_t pairs = w.rows / 2;
  const unsigned blocks = static_cast<unsigned>(
      std::min<int64_t>((pairs + kGemvWarps - 1) / kGemvWarps, multiprocessors()));
  const size_t smem = static_cast<size_t>(row_words(w.cols)) * 16;
  constexpr int kThreads = kGemvWarps * 32;
  if (w.cols <= 4 * kThreads) {
    launch_dependent(gemv_kernel<4>, blocks, kThreads, smem, stream, w, input, epilogue);
  } else if (w.cols <= 8 * kThreads) {
    launch_dependent(gemv_kernel<8>, blocks, kThreads, smem, stream, w, input, epilogue);
  } else if (w.cols <= kGemvMaxCols) {
    launch_dependent(gemv_kernel<16>, blocks, kThreads, smem, stream, w, input, epilogue);
  } else {
    check(cudaErrorInvalidValue, "ternary_gemv: more than 8192 columns");
  }
  check_launch("ternary_gemv");
}

void ternary_gemm(const TernaryWeights& w, const Int8Acts& acts, int n_tokens,
                  const Epilogue& epilogue, int32_t* workspace, cudaStream_t stream) {
  const int splits = with_tile(n_tokens, [&]<int kWarpsM, int kWarpsN, int kWm, int kWn>() {
    return launch_gemm<kWarpsM, kWarpsN, kWm, kWn>(w, acts, n_tokens, workspace, stream);
  });
  const int64_t items = w.rows / 2 * n_tokens;
  epilogue_kernel<<<static_cast<unsigned>((items + 255) / 256), 256, 0, stream>>>(
      w, acts, n_tokens, splits, workspace, epilogue);
  check_launch("ternary_gemm epilogue");
}

int64_t ternary_gemm_workspace(int64_t rows, int max_tokens) {
  int64_t most = 0;
  for (int n = 1; n <= max_tokens; ++n) {
    const int64_t splits = with_tile(n, [&]<int kWarpsM, int kWarpsN, int kWm, int kWn>() {
      using G = Gemm<kWarpsM, kWarpsN, kWm, kWn>;
      const int64_t tiles = (rows + G::kN - 1) / G::kN * ((n + G::kM - 1) / G::kM);
      return static_cast<int64_t>(max_splits(tiles));
    });
    most = std::max(most, splits * n * rows);
  }
  return most;
}

}  // namespace bitnet::cuda
