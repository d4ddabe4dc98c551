#pragma once
// Decode/prefill attention of the query heads that share one KV head, against positions [0, n)
// of the cache, for each KV cache type:
//   s[p] = (q . k[p]) / sqrt(head_dim),  e[p] = exp(s[p] - max s),  out = (sum_p e[p] v[p]) / sum e
// Keys are stored in blocks of 16 positions ([block][head_dim][16]) so a SIMD lane is a position
// and q . k needs no horizontal sums; values stay [pos][head_dim] so a lane is a dimension. Every
// dot product and sum runs in the order of canonical_math.h (each lane sequentially with fma), so
// the scalar, AVX2 and AVX-512 kernels agree bit for bit.
//
// q8 caches run on integers instead, so that reading one byte per element costs one multiply-add
// rather than a widening, a conversion and an fma per query head. Their elements come in pairs
// that one 32-bit lane holds once widened to int16, the operand of vpdpwssd / vpmaddwd:
//   keys   [block][head_dim / 2][16][2]  (two dimensions of one position)
//   values [pos / 2][head_dim][2]        (one dimension of two positions)
// The kernels round each query head to int16 (absmax / kQ8Max, quantize_query_q8) and the softmax
// weights times the value scales to int16 (absmax / kQ8Max), so both sums are exact in int32:
//   s[p]   = (float(sum_i q16[i] k[p][i]) * key_scale[p]) * (q_scale * inv_sqrt(head_dim))
//   w[p]   = e[p] * value_scale[p],  w16[p] = round(w[p] * (kQ8Max / max w))
//   out[d] = (sum over chunks of kQ8ValueChunk positions, in order, of
//             float(sum_p w16[p] v[p][d])) * ((max w / kQ8Max) * (1 / sum e))

#include <cstdint>

#include "base/cpu_features.h"
#include "bitnet/session.h"

namespace bitnet {

constexpr int kKeyBlock = 16;  // positions side by side in a key block

// One (slot, layer, kv_head) of the cache. q8 stores int8 codes with one fp32 scale per
// position (absmax / 127) for keys and for values.
struct KvHeadView {
  KvCacheType type = KvCacheType::f32;
  int head_dim = 0;
  const void* keys = nullptr;           // [blocks][head_dim][kKeyBlock] of float/fp16/int8
  const void* values = nullptr;         // [pos][head_dim] of float/fp16/int8
  const float* key_scales = nullptr;    // q8: [blocks * kKeyBlock]
  const float* value_scales = nullptr;  // q8: [pos]
};

constexpr int kQ8Max = 32767;
// Positions per int32 value sum: kQ8ValueChunk * kQ8Max * 127 < 2^31.
constexpr int kQ8ValueChunk = 512;
// head_dim * kQ8Max * 127 < 2^31 bounds each key dot product.
constexpr int kQ8MaxHeadDim = 512;
static_assert(int64_t{kQ8ValueChunk} * kQ8Max * 127 < (int64_t{1} << 31));
static_assert(int64_t{kQ8MaxHeadDim} * kQ8Max * 127 < (int64_t{1} << 31));

// Element index of (position, dimension) in one head's keys / values.
inline int64_t key_index(KvCacheType type, int head_dim, int64_t pos, int i) {
  const int64_t block = pos / kKeyBlock * head_dim * kKeyBlock;
  if (type == KvCacheType::q8) return block + (i / 2) * 2 * kKeyBlock + pos % kKeyBlock * 2 + i % 2;
  return block + static_cast<int64_t>(i) * kKeyBlock + pos % kKeyBlock;
}
inline int64_t value_index(KvCacheType type, int head_dim, int64_t pos, int d) {
  if (type == KvCacheType::q8) return pos / 2 * head_dim * 2 + 2 * d + pos % 2;
  return pos * head_dim + d;
}

// The q8 kernels' int16 query: pairs[i] holds dimensions 2i (low half) and 2i + 1 (high half);
// returns the scale (absmax / kQ8Max, 0 for a zero query). head_dim even, <= kQ8MaxHeadDim.
float quantize_query_q8(const float* q, int head_dim, int32_t* pairs);

// Key blocks covering n_pos positions.
inline int64_t key_blocks(int n_pos) {
  return (n_pos + kKeyBlock - 1) / kKeyBlock;
}

// Floats of scratch the kernels need for n_q heads over n_pos positions: [n_q][stride] with
// stride = attention_scratch_floats(1, n_pos), whole key blocks.
inline int64_t attention_scratch_floats(int n_q, int n_pos) {
  return static_cast<int64_t>(n_q) * key_blocks(n_pos) * kKeyBlock;
}

// Attention in two passes, so that threads can share the work of one KV head (decode):
//   scores: s[h * stride + p] for the positions of key blocks [b0, b1);
//   values: out[h][d0, d1) from the scores of all n_pos positions, which it turns into weights in
//           `weights` ([n_q][stride]; may be s itself, else s is left as it is).
// A SIMD kernel needs d0 and d1 to be multiples of kAttentionDimStep. Every split gives the same
// bits: scores are per position, and each output dimension is its own sum. The call operator runs
// both passes whole: q [n_q][head_dim] (contiguous), out [n_q][head_dim], n_pos >= 1, scratch of
// attention_scratch_floats(n_q, n_pos).
constexpr int kAttentionDimStep = 16;
struct AttentionKernel {
  void (*scores)(const KvHeadView& kv, int n_pos, int64_t b0, int64_t b1, const float* q, int n_q,
                 float* s);
  void (*values)(const KvHeadView& kv, int n_pos, int d0, int d1, const float* s, int n_q,
                 float* out, float* weights);

  void operator()(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                  float* scratch) const {
    scores(kv, n_pos, 0, key_blocks(n_pos), q, n_q, scratch);
    values(kv, n_pos, 0, kv.head_dim, scratch, n_q, out, scratch);
  }
};

// The scalar kernel, both passes whole (attention_kernel(CpuIsa::scalar, ...)).
void attention_scalar(const KvHeadView& kv, int n_pos, const float* q, int n_q, float* out,
                      float* scratch);
// The SIMD kernels need head_dim % 16 == 0; other sizes get the scalar kernel. AVX-512 has a
// variant for AMD Zen 4 (CpuFeatures::amd_zen4) that prefetches differently, with the same results.
AttentionKernel attention_kernel(CpuIsa isa, int head_dim,
                                 bool amd_zen4 = CpuFeatures::host().amd_zen4);

}  // namespace bitnet
