#pragma once
// Operations over one row of logits, shared by the sampler (sampler.cpp), the batch engine's
// log-probabilities and perplexity.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace bitnet {

// ids = the k best ids of logits in the sampler's candidate order: highest logit first, ties to
// the lower id (all of them when k >= logits.size()).
void top_candidates(std::span<const float> logits, size_t k, std::vector<int32_t>& ids);

// log(sum(exp(logits))), in double: logit - log_sum_exp(logits) is a token's log-probability.
double log_sum_exp(std::span<const float> logits);

}  // namespace bitnet
