#pragma once
// The KV cache: allocated once for n_slots sequences x context_length positions and written in
// place; never reallocated or concatenated. Each (slot, layer, kv_head) owns one contiguous run
// of keys and one of values, laid out for the attention kernels (kernels/cpu/attention.h):
//   keys   [pos / 16][head_dim][pos % 16]  (16 positions side by side: SIMD lanes = positions)
//   values [pos][head_dim]
// as fp32, fp16, or int8 (q8) with one fp32 scale per (position, kv head) for keys and values;
// q8 pairs its elements for integer dot products (key_index / value_index in attention.h).
// The position count is rounded up to whole key blocks.

#include <cstdint>
#include <vector>

#include "base/mapped_file.h"
#include "bitnet/config.h"
#include "bitnet/session.h"
#include "kernels/cpu/attention.h"

namespace bitnet {

class KvCache {
 public:
  KvCache(const ModelConfig& config, int n_slots, int context_length,
          KvCacheType type = KvCacheType::f32);

  KvCacheType type() const { return type_; }
  int n_slots() const { return n_slots_; }
  int context_length() const { return context_length_; }
  // Bytes of n_slots x context_length positions (the allocation adds up to 15 positions).
  size_t bytes() const;
  // Bytes attention reads per position of one slot, over all layers and KV heads (keys, values
  // and their scales).
  size_t bytes_per_position() const;

  // Stores one KV head's key and value [head_dim] of one token. Calls for different heads or
  // positions may run concurrently.
  void write(int slot, int layer, int kv_head, int pos, const float* k, const float* v);
  // Every KV head's, from k and v [n_kv_heads][head_dim].
  void write(int slot, int layer, int pos, const float* k, const float* v) {
    for (int h = 0; h < n_kv_heads_; ++h)
      write(slot, layer, h, pos, k + h * head_dim_, v + h * head_dim_);
  }
  KvHeadView head(int slot, int layer, int kv_head) const;
  // The stored (dequantized) key and value of one position, [head_dim] each.
  void read(int slot, int layer, int kv_head, int pos, float* k, float* v) const;

 private:
  size_t head_index(int slot, int layer, int kv_head) const {
    return (static_cast<size_t>(slot) * n_layers_ + layer) * n_kv_heads_ + kv_head;
  }

  KvCacheType type_;
  int n_slots_, n_layers_, n_kv_heads_, head_dim_, context_length_;
  int64_t padded_positions_;  // context_length rounded up to whole key blocks
  size_t element_bytes_;
  ZeroedBuffer keys_,
      values_;  // [slot][layer][kv_head][padded_positions x hd]; resident as written
  std::vector<float> key_scales_, value_scales_;  // q8: [slot][layer][kv_head][padded_positions]
};

}  // namespace bitnet
