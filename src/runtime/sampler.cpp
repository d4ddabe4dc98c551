#include <algorithm>
#include <array>
#include <bit>
#include <climits>
#include <cmath>
#include <functional>
#include <numeric>
#include <unordered_map>

#include "base/cpu_features.h"
#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "runtime/logits.h"

namespace bitnet {

void SamplingParams::validate(int32_t vocab_size) const {
  if (!std::isfinite(temperature) || temperature < 0) throw Error("temperature must be >= 0");
  if (!(top_p > 0) || top_p > 1) throw Error("top_p must be in (0, 1]");
  if (!(min_p >= 0) || min_p > 1) throw Error("min_p must be in [0, 1]");
  if (!(repeat_penalty > 0) || !std::isfinite(repeat_penalty))
    throw Error("repeat_penalty must be > 0");
  if (!std::isfinite(presence_penalty)) throw Error("presence_penalty must be finite");
  if (!std::isfinite(frequency_penalty)) throw Error("frequency_penalty must be finite");
  if (repeat_last_n < 0) throw Error("repeat_last_n must be >= 0");
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || (vocab_size > 0 && id >= vocab_size)) {
      throw Error("logit_bias: token id " + std::to_string(id) + " is outside the vocabulary");
    }
    if (!std::isfinite(bias)) {
      throw Error("logit_bias: the bias of token " + std::to_string(id) + " must be finite");
    }
  }
}

namespace {

// An int32 that orders as the float does (for non-NaN values), so the max loop vectorizes where
// a float max, with its NaN rules, does not. Adding +0 turns -0 into +0: they tie, as floats.
int32_t order_key(float v) {
  const int32_t bits = std::bit_cast<int32_t>(v + 0.0f);
  return bits ^ ((bits >> 31) & 0x7FFFFFFF);
}

BITNET_CLONE_PER_ISA int32_t max_key(const float* x, size_t n) {
  int32_t best = INT32_MIN;
  for (size_t i = 0; i < n; ++i) best = std::max(best, order_key(x[i]));
  return best;
}

// (logit, id) as one integer that orders as the candidates do: higher logit first, then lower id.
uint64_t rank_key(float logit, int32_t id) {
  const uint32_t value = static_cast<uint32_t>(order_key(logit)) ^ 0x80000000u;
  return static_cast<uint64_t>(value) << 32 | static_cast<uint32_t>(~id);
}

int32_t id_of(uint64_t key) {
  return static_cast<int32_t>(~static_cast<uint32_t>(key));
}

// Every id in candidate order: a stable LSD radix sort on the logits' order keys, byte by byte,
// from ids in ascending order (so ties keep the lower id first).
void sort_all(std::span<const float> logits, std::vector<int32_t>& ids) {
  const size_t n = logits.size();
  // Complemented, so that ascending keys are descending logits.
  std::vector<uint32_t> keys(n), keys_out(n);
  std::vector<int32_t> ids_out(n);
  ids.resize(n);
  for (size_t i = 0; i < n; ++i) {
    keys[i] = ~(static_cast<uint32_t>(order_key(logits[i])) ^ 0x80000000u);
    ids[i] = static_cast<int32_t>(i);
  }
  for (int shift = 0; shift < 32; shift += 8) {
    std::array<size_t, 257> start{};
    for (uint32_t key : keys) ++start[((key >> shift) & 0xFF) + 1];
    if (std::find(start.begin(), start.end(), n) != start.end()) continue;  // one digit: no move
    std::partial_sum(start.begin(), start.end(), start.begin());
    for (size_t i = 0; i < n; ++i) {
      const size_t to = start[(keys[i] >> shift) & 0xFF]++;
      keys_out[to] = keys[i];
      ids_out[to] = ids[i];
    }
    keys.swap(keys_out);
    ids.swap(ids_out);
  }
}

}  // namespace

void top_candidates(std::span<const float> logits, size_t k, std::vector<int32_t>& ids) {
  const size_t n = logits.size();
  k = std::min(k, n);
  if (k == n) {
    sort_all(logits, ids);
    return;
  }
  std::vector<uint64_t> keys;
  if (k > 0) {
    // A min-heap of the best k so far. Ids only grow, so an element whose logit does not beat
    // the heap's worst is no better than it: whole chunks are skipped on their vectorized max.
    keys.resize(k);
    for (size_t i = 0; i < k; ++i) keys[i] = rank_key(logits[i], static_cast<int32_t>(i));
    std::make_heap(keys.begin(), keys.end(), std::greater<>());
    constexpr size_t kChunk = 64;
    for (size_t begin = k; begin < n; begin += kChunk) {
      const size_t end = std::min(n, begin + kChunk);
      const uint32_t worst_value = static_cast<uint32_t>(keys.front() >> 32);
      const uint32_t chunk_best =
          static_cast<uint32_t>(max_key(logits.data() + begin, end - begin)) ^ 0x80000000u;
      if (chunk_best <= worst_value) continue;
      for (size_t i = begin; i < end; ++i) {
        const uint64_t key = rank_key(logits[i], static_cast<int32_t>(i));
        if (key <= keys.front()) continue;
        std::pop_heap(keys.begin(), keys.end(), std::greater<>());
        keys.back() = key;
        std::push_heap(keys.begin(), keys.end(), std::greater<>());
      }
    }
  }
  std::sort(keys.begin(), keys.end(), std::greater<>());
  ids.resize(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) ids[i] = id_of(keys[i]);
}

double log_sum_exp(std::span<const float> logits) {
  if (logits.empty()) return -INFINITY;
  const double max_logit = *std::max_element(logits.begin(), logits.end());
  double total = 0;
  for (float l : logits) total += std::exp(static_cast<double>(l) - max_logit);
  return max_logit + std::log(total);
}

int32_t argmax(std::span<const float> logits) {
  if (logits.empty()) return 0;
  const int32_t best = max_key(logits.data(), logits.size());
  size_t i = 0;
  while (order_key(logits[i]) != best) ++i;
  return static_cast<int32_t>(i);
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  params_.validate();
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  const int32_t vocab = static_cast<int32_t>(logits.size());
  std::span<const float> view = logits;

  if (params_.penalized() || !params_.logit_bias.empty()) {
    work_.assign(logits.begin(), logits.end());
    for (const auto& [id, bias] : params_.logit_bias) {
      if (id < vocab) work_[static_cast<size_t>(id)] += bias;
    }
    if (params_.penalized()) {
      std::unordered_map<int32_t, int> counts;
      const size_t n = std::min(history.size(), static_cast<size_t>(params_.repeat_last_n));
      for (size_t i = history.size() - n; i < history.size(); ++i) {
        if (history[i] >= 0 && history[i] < vocab) ++counts[history[i]];
      }
      for (const auto& [id, count] : counts) {
        float& l = work_[static_cast<size_t>(id)];
        if (params_.repeat_penalty != 1.0f)
          l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
        l -= static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
      }
    }
    view = work_;
  }
  if (params_.temperature <= 0) return argmax(view);

  top_candidates(view, params_.top_k > 0 ? static_cast<size_t>(params_.top_k) : view.size(), ids_);
  size_t n = ids_.size();
  // Temperature applied inside the exponent, in double: dividing the logits by a tiny
  // temperature first would overflow to inf and turn every probability into NaN.
  const double max_logit = view[ids_[0]];
  const double inv_temperature = 1.0 / static_cast<double>(params_.temperature);
  std::vector<double> probs(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i)
    total += probs[i] = std::exp((view[ids_[i]] - max_logit) * inv_temperature);
  for (double& p : probs) p /= total;

  if (params_.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p (at least one token)
    double cum = 0;
    size_t keep = 0;
    while (keep < n) {
      cum += probs[keep++];
      if (cum >= params_.top_p) break;
    }
    n = keep;
  }
  if (params_.min_p > 0) {  // drop tokens below min_p times the top probability
    const double floor = params_.min_p * probs[0];
    size_t keep = 1;
    while (keep < n && probs[keep] >= floor) ++keep;
    n = keep;
  }
  double kept = 0;
  for (size_t i = 0; i < n; ++i) kept += probs[i];
  // 53 random bits -> uniform in [0, 1); the conversion is spelled out so results match across
  // standard libraries for the same seed.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * kept;
  double cum = 0;
  for (size_t i = 0; i < n; ++i) {
    cum += probs[i];
    if (u < cum) return ids_[i];
  }
  return ids_[n - 1];
}

}  // namespace bitnet
