#include "model/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/float16.h"
#include "bitnet/error.h"
#include "kernels/cpu/canonical_math.h"
#include "kernels/cpu/ops.h"

namespace bitnet {

KvCache::KvCache(const ModelConfig& config, int n_slots, int context_length, KvCacheType type)
    : type_(type),
      n_slots_(n_slots),
      n_layers_(config.n_layers),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim),
      context_length_(context_length),
      padded_positions_((static_cast<int64_t>(context_length) + kKeyBlock - 1) / kKeyBlock *
                        kKeyBlock),
      element_bytes_(type == KvCacheType::f32   ? 4
                     : type == KvCacheType::f16 ? 2
                                                : 1) {
  if (n_slots < 1) throw Error("KV cache needs at least one sequence slot");
  if (context_length < 1)
    throw Error("context length must be positive, got " + std::to_string(context_length));
  if (type == KvCacheType::q8 && (head_dim_ % 2 != 0 || head_dim_ > kQ8MaxHeadDim))
    throw Error("the q8 KV cache needs an even head_dim of at most " +
                std::to_string(kQ8MaxHeadDim) + ", and this model's is " +
                std::to_string(head_dim_) + ": use --kv-cache f16");
  const size_t heads = static_cast<size_t>(n_slots) * n_layers_ * n_kv_heads_;
  const size_t elements = heads * padded_positions_ * head_dim_;
  keys_ = ZeroedBuffer(elements * element_bytes_);
  values_ = ZeroedBuffer(elements * element_bytes_);
  if (type == KvCacheType::q8) {
    key_scales_.assign(heads * padded_positions_, 0.0f);
    value_scales_.assign(heads * padded_positions_, 0.0f);
  }
}

size_t KvCache::bytes_per_position() const {
  return static_cast<size_t>(n_layers_) * n_kv_heads_ * 2 *
         (static_cast<size_t>(head_dim_) * element_bytes_ +
          (type_ == KvCacheType::q8 ? sizeof(float) : 0));
}

size_t KvCache::bytes() const {
  return static_cast<size_t>(n_slots_) * context_length_ * bytes_per_position();
}

void KvCache::write(int slot, int layer, int kv_head, int pos, const float* k, const float* v) {
  const int hd = head_dim_;
  const size_t head = head_index(slot, layer, kv_head);
  const int64_t base = static_cast<int64_t>(head) * padded_positions_ * hd;
  auto key_at = [&](int i) { return base + key_index(type_, hd, pos, i); };
  auto value_at = [&](int i) { return base + value_index(type_, hd, pos, i); };
  switch (type_) {
    case KvCacheType::f32: {
      float* keys = reinterpret_cast<float*>(keys_.data());
      float* values = reinterpret_cast<float*>(values_.data());
      for (int i = 0; i < hd; ++i) {
        keys[key_at(i)] = k[i];
        values[value_at(i)] = v[i];
      }
      break;
    }
    case KvCacheType::f16: {
      thread_local std::vector<uint16_t> halves;  // the key, then the value, converted at once
      halves.resize(static_cast<size_t>(2 * hd));
      f32_to_f16_row(k, halves.data(), hd);
      f32_to_f16_row(v, halves.data() + hd, hd);
      uint16_t* keys = reinterpret_cast<uint16_t*>(keys_.data());
      uint16_t* values = reinterpret_cast<uint16_t*>(values_.data());
      for (int i = 0; i < hd; ++i) {
        keys[key_at(i)] = halves[i];
        values[value_at(i)] = halves[hd + i];
      }
      break;
    }
    case KvCacheType::q8: {
      // Symmetric absmax / 127 per (position, head); an all-zero vector gets scale 0.
      auto quantize = [&](const float* x, int8_t* out, auto index_of, float& scale) {
        float max_abs = 0.0f;
        for (int i = 0; i < hd; ++i) max_abs = std::max(max_abs, std::fabs(x[i]));
        const float inv = max_abs > 0.0f ? 127.0f / max_abs : 0.0f;
        for (int i = 0; i < hd; ++i)
          out[index_of(i)] =
              static_cast<int8_t>(clamp_code(round_half_even(x[i] * inv), -127.0f, 127.0f));
        scale = max_abs / 127.0f;
      };
      const size_t scale_at = head * padded_positions_ + pos;
      quantize(k, reinterpret_cast<int8_t*>(keys_.data()), key_at, key_scales_[scale_at]);
      quantize(v, reinterpret_cast<int8_t*>(values_.data()), value_at, value_scales_[scale_at]);
      break;
    }
  }
}

KvHeadView KvCache::head(int slot, int layer, int kv_head) const {
  const size_t head = head_index(slot, layer, kv_head);
  const size_t offset = head * padded_positions_ * head_dim_ * element_bytes_;
  KvHeadView view;
  view.type = type_;
  view.head_dim = head_dim_;
  view.keys = keys_.data() + offset;
  view.values = values_.data() + offset;
  if (type_ == KvCacheType::q8) {
    view.key_scales = key_scales_.data() + head * padded_positions_;
    view.value_scales = value_scales_.data() + head * padded_positions_;
  }
  return view;
}

void KvCache::read(int slot, int layer, int kv_head, int pos, float* k, float* v) const {
  const KvHeadView view = head(slot, layer, kv_head);
  for (int i = 0; i < head_dim_; ++i) {
    const int64_t key_at = key_index(type_, head_dim_, pos, i);
    const int64_t value_at = value_index(type_, head_dim_, pos, i);
    switch (type_) {
      case KvCacheType::f32:
        k[i] = static_cast<const float*>(view.keys)[key_at];
        v[i] = static_cast<const float*>(view.values)[value_at];
        break;
      case KvCacheType::f16:
        k[i] = f16_to_f32(static_cast<const uint16_t*>(view.keys)[key_at]);
        v[i] = f16_to_f32(static_cast<const uint16_t*>(view.values)[value_at]);
        break;
      case KvCacheType::q8:
        k[i] = static_cast<const int8_t*>(view.keys)[key_at] * view.key_scales[pos];
        v[i] = static_cast<const int8_t*>(view.values)[value_at] * view.value_scales[pos];
        break;
    }
  }
}

}  // namespace bitnet
