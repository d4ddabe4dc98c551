#pragma once
// `bitnet check`'s engine: runs the same tokens through two forward paths (e.g. the optimized
// kernels and the scalar single-thread reference) and measures how far apart they are, layer by
// layer and at the logits.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/cpu_features.h"
#include "bitnet/model.h"
#include "bitnet/session.h"

namespace bitnet {

struct ForwardPath {
  std::shared_ptr<const Model> model;
  CpuIsa isa = CpuIsa::scalar;
  int n_threads = 1;
  KvCacheType kv_cache = KvCacheType::f32;
};

// How far `got` is from `want`: the largest absolute difference, the reference's largest
// magnitude (the scale errors are judged against) and the Pearson correlation.
struct Deviation {
  double max_abs_err = 0;
  double scale = 0;
  double correlation = 1;

  double relative() const { return scale > 0 ? max_abs_err / scale : max_abs_err; }
};
Deviation measure_deviation(std::span<const float> got, std::span<const float> want);

struct PathComparison {
  std::vector<Deviation> layers;  // residual stream after each layer, [n_tokens][hidden]
  Deviation logits;               // [n_tokens][vocab]
  int positions = 0;
  int top1_agreements = 0;  // positions whose argmax logit is the same token
};

// Feeds tokens as one batch (every position's logits) through both paths.
PathComparison compare_forward_paths(const ForwardPath& tested, const ForwardPath& reference,
                                     std::span<const int32_t> tokens);

}  // namespace bitnet
