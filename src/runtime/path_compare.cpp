#include "runtime/path_compare.h"

#include <cmath>

#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "model/forward_cpu.h"
#include "model/kv_cache.h"

namespace bitnet {
namespace {

struct PathOutput {
  std::vector<std::vector<float>> layers;  // [layer][n_tokens * hidden]
  std::vector<float> logits;               // [n_tokens * vocab]
};

PathOutput run_path(const ForwardPath& path, std::span<const int32_t> tokens) {
  const ModelConfig& c = path.model->config();
  const int n = static_cast<int>(tokens.size());
  ThreadPool pool(path.n_threads);
  KvCache kv(c, 1, n, path.kv_cache);
  CpuForward forward(path.model, pool, path.isa, n, n);
  std::vector<BatchToken> batch;
  std::vector<int32_t> rows;
  for (int i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size)
      throw Error("token id " + std::to_string(tokens[i]) + " is outside the vocabulary");
    batch.push_back({tokens[i], i, 0});
    rows.push_back(i);
  }
  PathOutput out;
  out.layers.resize(static_cast<size_t>(c.n_layers));
  out.logits.resize(static_cast<size_t>(n) * static_cast<size_t>(c.vocab_size));
  forward.forward(
      kv, batch, rows, out.logits.data(), [&](int layer, const float* hidden, int64_t n_tokens) {
        out.layers[static_cast<size_t>(layer)].assign(hidden, hidden + n_tokens * c.hidden_dim);
      });
  return out;
}

}  // namespace

Deviation measure_deviation(std::span<const float> got, std::span<const float> want) {
  Deviation d;
  const size_t n = std::min(got.size(), want.size());
  if (n == 0) return d;
  double sum_g = 0, sum_w = 0;
  for (size_t i = 0; i < n; ++i) {
    sum_g += got[i];
    sum_w += want[i];
  }
  const double mean_g = sum_g / static_cast<double>(n), mean_w = sum_w / static_cast<double>(n);
  double cov = 0, var_g = 0, var_w = 0;
  for (size_t i = 0; i < n; ++i) {
    const double dg = got[i] - mean_g, dw = want[i] - mean_w;
    cov += dg * dw;
    var_g += dg * dg;
    var_w += dw * dw;
    // A NaN must not hide behind std::max: it counts as an infinite error.
    const double err = std::fabs(static_cast<double>(got[i]) - want[i]);
    d.max_abs_err = std::isnan(err) ? INFINITY : std::max(d.max_abs_err, err);
    d.scale = std::max(d.scale, std::fabs(static_cast<double>(want[i])));
  }
  // Two constant vectors correlate perfectly only when they are equal.
  if (var_g == 0 || var_w == 0) {
    d.correlation = d.max_abs_err == 0 ? 1.0 : 0.0;
  } else {
    d.correlation = cov / std::sqrt(var_g * var_w);
  }
  if (std::isnan(d.correlation)) d.correlation = 0;
  return d;
}

PathComparison compare_forward_paths(const ForwardPath& tested, const ForwardPath& reference,
                                     std::span<const int32_t> tokens) {
  if (tokens.empty()) throw Error("no tokens to compare on");
  const ModelConfig& c = reference.model->config();
  if (static_cast<int>(tokens.size()) > c.max_seq_len) {
    throw Error(std::to_string(tokens.size()) + " tokens exceed the model's context of " +
                std::to_string(c.max_seq_len));
  }
  const PathOutput got = run_path(tested, tokens);
  const PathOutput want = run_path(reference, tokens);
  PathComparison result;
  for (size_t l = 0; l < want.layers.size(); ++l)
    result.layers.push_back(measure_deviation(got.layers[l], want.layers[l]));
  result.logits = measure_deviation(got.logits, want.logits);
  result.positions = static_cast<int>(tokens.size());
  const size_t vocab = static_cast<size_t>(c.vocab_size);
  for (size_t p = 0; p < tokens.size(); ++p) {
    const std::span<const float> g(got.logits.data() + p * vocab, vocab);
    const std::span<const float> w(want.logits.data() + p * vocab, vocab);
    if (argmax(g) == argmax(w)) ++result.top1_agreements;
  }
  return result;
}

}  // namespace bitnet
