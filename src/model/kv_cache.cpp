#include "model/kv_cache.h"

#include "bitnet/error.h"

namespace bitnet {

KvCache::KvCache(const ModelConfig& config, int n_slots, int context_length)
    : n_slots_(n_slots),
      n_layers_(config.n_layers),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim),
      context_length_(context_length),
      head_stride_(static_cast<size_t>(context_length) * config.head_dim) {
  if (n_slots < 1) throw Error("KV cache needs at least one sequence slot");
  if (context_length < 1)
    throw Error("context length must be positive, got " + std::to_string(context_length));
  const size_t n = static_cast<size_t>(n_slots) * n_layers_ * n_kv_heads_ * head_stride_;
  keys_.assign(n, 0.0f);
  values_.assign(n, 0.0f);
}

}  // namespace bitnet
