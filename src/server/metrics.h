#pragma once
// Server metrics in Prometheus' text exposition format (version 0.0.4).

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime/batch_engine.h"

namespace bitnet::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends name_bucket{le=...} (cumulative), name_sum and name_count.
  void render(std::string& out, const std::string& name) const;

 private:
  mutable std::mutex mutex_;
  std::vector<double> upper_bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative; the last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics : public EngineListener {
 public:
  Metrics();

  // One answered HTTP request; endpoint is the route ("other" for unknown paths).
  void count_request(const std::string& endpoint, int status);

  void on_first_token(double seconds_since_submit) override;
  void on_next_token(double seconds_since_previous) override;
  void on_finished(int prompt_tokens, int cached_prompt_tokens, int generated_tokens) override;

  // All metrics; the gauges come from the engine (absent while the model loads).
  std::string render(const EngineStats* engine, bool ready) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
  uint64_t prompt_tokens_ = 0, cached_prompt_tokens_ = 0, generated_tokens_ = 0, sequences_ = 0;
  Histogram time_to_first_token_, inter_token_latency_;
};

}  // namespace bitnet::server
