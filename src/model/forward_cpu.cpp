#include "model/forward_cpu.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"
#include "model/weights.h"

namespace bitnet {

CpuForward::CpuForward(std::shared_ptr<const Model> model, ThreadPool& pool, CpuIsa isa,
                       int max_batch, int context_length)
    : model_(std::move(model)),
      c_(model_->config()),
      pool_(pool),
      isa_(isa),
      max_batch_(max_batch) {
  rope_tables(c_.rope_theta, c_.head_dim, context_length, rope_cos_, rope_sin_);
  const size_t b = static_cast<size_t>(max_batch);
  x_ = ZeroedArray<float>(b * c_.hidden_dim);
  xb_ = ZeroedArray<float>(b * std::max(c_.hidden_dim, c_.ffn_dim));
  qkv_ = ZeroedArray<float>(b * (c_.q_dim() + 2 * c_.kv_dim()));
  attn_out_ = ZeroedArray<float>(b * c_.q_dim());
  gate_up_ = ZeroedArray<float>(b * 2 * c_.ffn_dim);
  proj_ = ZeroedArray<float>(b * c_.hidden_dim);
  token_scores_ = attention_scratch_floats(c_.n_heads / c_.n_kv_heads, context_length);
  scores_per_thread_ = static_cast<size_t>(std::min(max_batch, kAttentionChunk)) *
                       static_cast<size_t>(token_scores_);
  scores_ = ZeroedArray<float>(static_cast<size_t>(pool_.size()) * scores_per_thread_);
  shared_scores_ =
      ZeroedArray<float>(static_cast<size_t>(c_.n_kv_heads) *
                         attention_scratch_floats(c_.n_heads / c_.n_kv_heads, context_length));
  acts_hidden_.resize(max_batch, c_.hidden_dim);
  acts_ffn_.resize(max_batch, c_.ffn_dim);
}

// The query heads sharing a KV head run together, so each K and V byte is read once per group
// rather than once per query head. A single token's KV heads are too few to balance (5 on 2
// threads is 3 against 2), so its attention runs in two passes split evenly over the threads:
// scores by key blocks, then outputs by dimensions. Every split gives the same bits (attention.h).
// That lone token's key and value go into the cache here too, each KV head's by the thread that
// scores the head's last key block: the cache write (scattered stores of the transposed key)
// was the longest step a decoding thread ran while the others waited.
void CpuForward::attention(KvCache& kv, int layer, std::span<const BatchToken> batch) {
  const int group = c_.n_heads / c_.n_kv_heads, hd = c_.head_dim;
  const int qkv_dim = c_.q_dim() + 2 * c_.kv_dim();
  const AttentionKernel kernel = attention_kernel(isa_, hd);
  auto query = [&](int64_t t, int kvh) {
    return qkv_.data() + t * qkv_dim + static_cast<int64_t>(kvh) * group * hd;
  };
  auto output = [&](int64_t t, int kvh) {
    return attn_out_.data() + t * c_.q_dim() + static_cast<int64_t>(kvh) * group * hd;
  };
  if (lone_token_attention(batch.size())) {
    const BatchToken& bt = batch[0];
    const int n_pos = bt.pos + 1;  // causal: positions 0..pos
    // One KV head's group of query heads takes head_scores floats of shared_scores_.
    const int64_t blocks = key_blocks(n_pos), head_scores = attention_scratch_floats(group, n_pos);
    auto split = [&](int64_t units_per_head, int thread, int n_threads, auto&& fn) {
      const int64_t units = units_per_head * c_.n_kv_heads;
      const int64_t begin = units * thread / n_threads, end = units * (thread + 1) / n_threads;
      for (int kvh = 0; kvh < c_.n_kv_heads; ++kvh) {
        const int64_t first = std::max(begin - kvh * units_per_head, int64_t{0});
        const int64_t last = std::min(end - kvh * units_per_head, units_per_head);
        if (first < last) fn(kvh, first, last);
      }
    };
    pool_.run([&](int thread, int n_threads) {
      split(blocks, thread, n_threads, [&](int kvh, int64_t b0, int64_t b1) {
        if (b1 == blocks) {  // the block holding this token's own key
          const float* k = qkv_.data() + c_.q_dim() + static_cast<int64_t>(kvh) * hd;
          kv.write(bt.slot, layer, kvh, bt.pos, k, k + c_.kv_dim());
        }
        kernel.scores(kv.head(bt.slot, layer, kvh), n_pos, b0, b1, query(0, kvh), group,
                      shared_scores_.data() + kvh * head_scores);
      });
    });
    const int dim_step = hd % kAttentionDimStep == 0 ? kAttentionDimStep : hd;
    pool_.run([&](int thread, int n_threads) {
      float* weights = scores_.data() + static_cast<size_t>(thread) * scores_per_thread_;
      split(hd / dim_step, thread, n_threads, [&](int kvh, int64_t d0, int64_t d1) {
        kernel.values(kv.head(bt.slot, layer, kvh), n_pos, static_cast<int>(d0 * dim_step),
                      static_cast<int>(d1 * dim_step), shared_scores_.data() + kvh * head_scores,
                      group, output(0, kvh), weights);
      });
    });
    return;
  }
  // Otherwise items are (chunk of tokens, KV head). A chunk's tokens (a prompt's, in prefill)
  // take their scores one tile of keys at a time, so that the tile is read from DRAM once and
  // from L2 by the others. Small batches keep one token per chunk: enough items to balance.
  const int64_t n = static_cast<int64_t>(batch.size());
  const int64_t chunk =
      std::clamp<int64_t>(n / (4 * pool_.size()), 1, std::min(max_batch_, kAttentionChunk));
  const int64_t items = (n + chunk - 1) / chunk * c_.n_kv_heads;
  pool_.run([&](int thread, int n_threads) {
    float* scratch = scores_.data() + static_cast<size_t>(thread) * scores_per_thread_;
    for (int64_t item = items * thread / n_threads; item < items * (thread + 1) / n_threads;
         ++item) {
      const int64_t t0 = item / c_.n_kv_heads * chunk, t1 = std::min(n, t0 + chunk);
      const int kvh = static_cast<int>(item % c_.n_kv_heads);
      int64_t max_blocks = 0;
      for (int64_t t = t0; t < t1; ++t)
        max_blocks = std::max(max_blocks, key_blocks(batch[t].pos + 1));
      for (int64_t b0 = 0; b0 < max_blocks; b0 += kAttentionTileBlocks) {
        for (int64_t t = t0; t < t1; ++t) {
          const int n_pos = batch[t].pos + 1;  // causal: positions 0..pos
          const int64_t b1 = std::min(b0 + kAttentionTileBlocks, key_blocks(n_pos));
          if (b0 < b1)
            kernel.scores(kv.head(batch[t].slot, layer, kvh), n_pos, b0, b1, query(t, kvh), group,
                          scratch + (t - t0) * token_scores_);
        }
      }
      for (int64_t t = t0; t < t1; ++t) {
        float* s = scratch + (t - t0) * token_scores_;
        kernel.values(kv.head(batch[t].slot, layer, kvh), batch[t].pos + 1, 0, hd, s, group,
                      output(t, kvh), s);
      }
    }
  });
}

void CpuForward::forward(KvCache& kv, std::span<const BatchToken> batch,
                         std::span<const int32_t> logit_rows, float* logits,
                         const LayerObserver& observer) {
  const Model::Weights& w = model_->weights();
  const int64_t n = static_cast<int64_t>(batch.size());
  const int64_t hidden = c_.hidden_dim, ffn = c_.ffn_dim, q_dim = c_.q_dim(), kv_dim = c_.kv_dim();
  const int64_t qkv_dim = q_dim + 2 * kv_dim;
  const int half = c_.head_dim / 2;
  const float eps = c_.rms_norm_eps;

  for (int64_t t = 0; t < n; ++t) w.embed.row_to_f32(batch[t].token, x_.data() + t * hidden);

  // Per-token work runs across the pool during prefill (one token runs inline), each token's
  // int8 quantization fused into the op that produces its input.
  auto per_token = [&](auto&& fn) {
    pool_.parallel_for(n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) fn(t);
    });
  };
  auto size_for = [&](QuantizedActs& acts, int64_t cols) {
    if (acts.cols != cols || static_cast<int64_t>(acts.scale.size()) < n) acts.resize(n, cols);
  };

  for (int l = 0; l < c_.n_layers; ++l) {
    const LayerWeights& lw = w.layers[l];

    // Attention block: norm -> fused q,k,v -> RoPE -> cache write -> attention -> sub-norm ->
    // o_proj.
    size_for(acts_hidden_, hidden);
    per_token([&](int64_t t) {
      float* normed = xb_.data() + t * hidden;
      rmsnorm(x_.data() + t * hidden, lw.input_norm.data(), normed, hidden, eps);
      quantize_activation_row(normed, t, acts_hidden_, isa_);
    });
    ternary_matmul(pool_, isa_, lw.qkv, acts_hidden_, n, qkv_.data(), qkv_dim);
    per_token([&](int64_t t) {
      const BatchToken& bt = batch[t];
      float* q = qkv_.data() + t * qkv_dim;
      float* k = q + q_dim;
      float* v = k + kv_dim;
      const float* cos = rope_cos_.data() + static_cast<size_t>(bt.pos) * half;
      const float* sin = rope_sin_.data() + static_cast<size_t>(bt.pos) * half;
      rope(q, c_.n_heads, c_.head_dim, cos, sin);
      rope(k, c_.n_kv_heads, c_.head_dim, cos, sin);
      if (!lone_token_attention(batch.size())) kv.write(bt.slot, l, bt.pos, k, v);
    });
    attention(kv, l, batch);
    size_for(acts_hidden_, q_dim);
    per_token([&](int64_t t) {
      float* normed = xb_.data() + t * q_dim;
      rmsnorm(attn_out_.data() + t * q_dim, lw.attn_sub_norm.data(), normed, q_dim, eps);
      quantize_activation_row(normed, t, acts_hidden_, isa_);
    });
    ternary_matmul(pool_, isa_, lw.o, acts_hidden_, n, proj_.data(), hidden);

    // FFN block: norm -> fused gate,up -> relu(gate)^2 * up -> sub-norm -> down_proj.
    size_for(acts_hidden_, hidden);
    per_token([&](int64_t t) {
      float* x = x_.data() + t * hidden;
      const float* o = proj_.data() + t * hidden;
      for (int64_t i = 0; i < hidden; ++i) x[i] += o[i];  // attention residual
      float* normed = xb_.data() + t * hidden;
      rmsnorm(x, lw.post_attn_norm.data(), normed, hidden, eps);
      quantize_activation_row(normed, t, acts_hidden_, isa_);
    });
    ternary_matmul(pool_, isa_, lw.gate_up, acts_hidden_, n, gate_up_.data(), 2 * ffn);
    size_for(acts_ffn_, ffn);
    per_token([&](int64_t t) {
      const float* gate = gate_up_.data() + t * 2 * ffn;
      float* h = xb_.data() + t * ffn;
      relu2_mul(gate, gate + ffn, h, ffn);
      rmsnorm(h, lw.ffn_sub_norm.data(), h, ffn, eps);
      quantize_activation_row(h, t, acts_ffn_, isa_);
    });
    ternary_matmul(pool_, isa_, lw.down, acts_ffn_, n, proj_.data(), hidden);
    per_token([&](int64_t t) {
      float* x = x_.data() + t * hidden;
      const float* d = proj_.data() + t * hidden;
      for (int64_t i = 0; i < hidden; ++i) x[i] += d[i];  // FFN residual
    });

    if (observer) observer(l, x_.data(), n);
  }

  // Final norm and the lm_head, only for the rows whose logits are wanted. With several rows
  // (batched decode) each block of head rows is applied to every row while it sits in cache,
  // so the head is read from memory once per step, not once per sequence.
  const int64_t n_logits = static_cast<int64_t>(logit_rows.size());
  const bool quantized_head = w.output_head.rows > 0;
  if (quantized_head && head_inputs_.size() < logit_rows.size())
    head_inputs_.resize(logit_rows.size());
  per_token([&](int64_t i) {
    if (i < n_logits) {
      float* normed = xb_.data() + i * hidden;
      rmsnorm(x_.data() + static_cast<int64_t>(logit_rows[i]) * hidden, w.final_norm.data(), normed,
              hidden, eps);
      if (quantized_head) w.output_head.prepare(normed, head_inputs_[i]);
    }
  });
  constexpr int64_t kHeadRowBlock = 64;  // 64 rows of 2560: at most 320 KB (bf16), in L2
  // Blocks of 1024 rows (2.6 MB int8) that a thread done with its own may take from the other,
  // rather than fixed halves: the head is the longest op of a step, and with 8 inputs a thread
  // that ran slower idled the other (8 sequences: 1-16% more tokens/s in 6 of 6 alternating
  // pairs; one sequence: no change).
  constexpr int64_t kHeadRowChunk = 16 * kHeadRowBlock;
  pool_.parallel_for_blocks(c_.vocab_size, kHeadRowChunk, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; block += kHeadRowBlock) {
      const int64_t block_end = std::min(end, block + kHeadRowBlock);
      if (quantized_head) {
        w.output_head.matvec(isa_, std::span(head_inputs_.data(), logit_rows.size()), logits,
                             c_.vocab_size, block, block_end);
        continue;
      }
      for (int64_t i = 0; i < n_logits; ++i) {
        w.lm_head().matvec(xb_.data() + i * hidden,
                           logits + i * static_cast<int64_t>(c_.vocab_size), block, block_end);
      }
    }
  });
}

}  // namespace bitnet
