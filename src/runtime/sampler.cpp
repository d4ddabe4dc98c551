#include <algorithm>
#include <bit>
#include <climits>
#include <cmath>
#include <numeric>
#include <unordered_set>

#include "base/cpu_features.h"
#include "bitnet/error.h"
#include "bitnet/generate.h"

namespace bitnet {

void SamplingParams::validate() const {
  if (!std::isfinite(temperature) || temperature < 0) throw Error("temperature must be >= 0");
  if (!(top_p > 0) || top_p > 1) throw Error("top_p must be in (0, 1]");
  if (!(min_p >= 0) || min_p > 1) throw Error("min_p must be in [0, 1]");
  if (!(repeat_penalty > 0) || !std::isfinite(repeat_penalty))
    throw Error("repeat_penalty must be > 0");
  if (repeat_last_n < 0) throw Error("repeat_last_n must be >= 0");
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

}  // namespace

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
  work_.assign(logits.begin(), logits.end());

  if (params_.repeat_penalty != 1.0f && params_.repeat_last_n > 0) {
    std::unordered_set<int32_t> seen;
    const size_t n = std::min(history.size(), static_cast<size_t>(params_.repeat_last_n));
    for (size_t i = history.size() - n; i < history.size(); ++i) {
      const int32_t id = history[i];
      if (id < 0 || id >= vocab || !seen.insert(id).second) continue;
      float& l = work_[id];
      l = l > 0 ? l / params_.repeat_penalty : l * params_.repeat_penalty;
    }
  }
  if (params_.temperature <= 0) return argmax(work_);

  // Candidates sorted by logit, highest first (ties by id, so results do not depend on sort
  // stability).
  ids_.resize(static_cast<size_t>(vocab));
  std::iota(ids_.begin(), ids_.end(), 0);
  auto higher = [&](int32_t a, int32_t b) {
    return work_[a] > work_[b] || (work_[a] == work_[b] && a < b);
  };
  size_t n = ids_.size();
  if (params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n) {
    n = static_cast<size_t>(params_.top_k);
    std::partial_sort(ids_.begin(), ids_.begin() + static_cast<ptrdiff_t>(n), ids_.end(), higher);
  } else {
    std::sort(ids_.begin(), ids_.end(), higher);
  }
  // Temperature applied inside the exponent, in double: dividing the logits by a tiny
  // temperature first would overflow to inf and turn every probability into NaN.
  const double max_logit = work_[ids_[0]];
  const double inv_temperature = 1.0 / static_cast<double>(params_.temperature);
  std::vector<double> probs(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i)
    total += probs[i] = std::exp((work_[ids_[i]] - max_logit) * inv_temperature);
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
