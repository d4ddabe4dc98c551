#pragma once
// The KV cache: allocated once for n_slots sequences x context_length positions and written in
// place; never reallocated or concatenated. Layout [slot][layer][kv_head][pos][head_dim], so a
// head's keys for consecutive positions are contiguous for the attention loop.

#include <cstdint>
#include <vector>

#include "bitnet/config.h"

namespace bitnet {

class KvCache {
 public:
  KvCache(const ModelConfig& config, int n_slots, int context_length);

  int n_slots() const { return n_slots_; }
  int context_length() const { return context_length_; }
  size_t bytes() const { return (keys_.size() + values_.size()) * sizeof(float); }

  float* key(int slot, int layer, int kv_head, int pos) {
    return keys_.data() + offset(slot, layer, kv_head, pos);
  }
  float* value(int slot, int layer, int kv_head, int pos) {
    return values_.data() + offset(slot, layer, kv_head, pos);
  }
  const float* key(int slot, int layer, int kv_head, int pos) const {
    return keys_.data() + offset(slot, layer, kv_head, pos);
  }
  const float* value(int slot, int layer, int kv_head, int pos) const {
    return values_.data() + offset(slot, layer, kv_head, pos);
  }

 private:
  size_t offset(int slot, int layer, int kv_head, int pos) const {
    return ((static_cast<size_t>(slot) * n_layers_ + layer) * n_kv_heads_ + kv_head) *
               head_stride_ +
           static_cast<size_t>(pos) * head_dim_;
  }

  int n_slots_, n_layers_, n_kv_heads_, head_dim_, context_length_;
  size_t head_stride_;  // context_length * head_dim
  std::vector<float> keys_, values_;
};

}  // namespace bitnet
