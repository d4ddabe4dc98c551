#pragma once
// The sampler's candidate order: logits from highest to lowest, ties to the lower id
// (sampler.cpp; declared here for its tests and the engine's log-probability alternatives).

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace bitnet {

// ids = the k best ids of logits in that order (all of them when k >= logits.size()).
void top_candidates(std::span<const float> logits, size_t k, std::vector<int32_t>& ids);

}  // namespace bitnet
