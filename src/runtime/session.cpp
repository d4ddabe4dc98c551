#include "bitnet/session.h"

#include <algorithm>
#include <vector>

#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "model/forward_cpu.h"
#include "model/kv_cache.h"

namespace bitnet {

struct Session::State {
  ThreadPool pool;
  KvCache kv;
  CpuForward forward;
  std::vector<float> logits;
  std::vector<BatchToken> batch;

  State(std::shared_ptr<const Model> model, int n_threads, CpuIsa isa, int max_batch, int ctx,
        KvCacheType kv_type)
      : pool(n_threads),
        kv(model->config(), 1, ctx, kv_type),
        forward(model, pool, isa, max_batch, ctx),
        logits(static_cast<size_t>(model->config().vocab_size)) {}
};

static CpuIsa choose_isa(const std::string& kernels) {
  const CpuFeatures& host = CpuFeatures::host();
  if (kernels == "auto") return host.best_isa();
  const CpuIsa isa = parse_isa(kernels);
  if ((isa == CpuIsa::avx512_vnni && !host.avx512_vnni) || (isa == CpuIsa::avx2 && !host.avx2)) {
    throw Error(std::string("kernels '") + kernels + "' are not supported by this CPU");
  }
  return isa;
}

Session::Session(std::shared_ptr<const Model> model, const SessionOptions& options)
    : model_(std::move(model)) {
  const ModelConfig& c = model_->config();
  const int ctx = options.context_length > 0 ? options.context_length : c.max_seq_len;
  if (options.context_length < 0)
    throw Error("context length must be positive, got " + std::to_string(options.context_length));
  if (ctx > c.max_seq_len) {
    throw Error("context length " + std::to_string(ctx) +
                " exceeds the model's max_position_embeddings " + std::to_string(c.max_seq_len));
  }
  if (options.max_batch < 1) throw Error("max_batch must be positive");
  const int threads = options.n_threads > 0 ? options.n_threads : physical_core_count();
  const CpuIsa isa = choose_isa(options.kernels);
  kernels_ = isa_name(isa);
  state_ = std::make_unique<State>(model_, threads, isa, std::min(options.max_batch, ctx), ctx,
                                   options.kv_cache);
}

Session::~Session() = default;

int Session::context_length() const {
  return state_->kv.context_length();
}
int Session::n_threads() const {
  return state_->pool.size();
}

uint64_t Session::kv_bytes_per_position() const {
  return state_->kv.bytes() / static_cast<uint64_t>(state_->kv.n_slots()) /
         static_cast<uint64_t>(state_->kv.context_length());
}

void Session::rewind(int n) {
  if (n < 0 || n > position_) throw Error("cannot rewind to position " + std::to_string(n));
  position_ = n;
}

std::span<const float> Session::feed(std::span<const int32_t> tokens) {
  if (tokens.empty()) throw Error("no tokens to run");
  const ModelConfig& c = model_->config();
  const int64_t end = position_ + static_cast<int64_t>(tokens.size());
  if (end > context_length()) {
    throw Error(std::to_string(tokens.size()) + " tokens at position " + std::to_string(position_) +
                " do not fit in the context of " + std::to_string(context_length()) + " tokens");
  }
  for (int32_t id : tokens) {
    if (id < 0 || id >= c.vocab_size) {
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                  std::to_string(c.vocab_size - 1) + ")");
    }
  }
  const size_t chunk = static_cast<size_t>(state_->forward.max_batch());
  for (size_t begin = 0; begin < tokens.size(); begin += chunk) {
    const size_t count = std::min(chunk, tokens.size() - begin);
    state_->batch.clear();
    for (size_t i = 0; i < count; ++i) {
      state_->batch.push_back({tokens[begin + i], static_cast<int32_t>(position_ + i), 0});
    }
    const int32_t last = static_cast<int32_t>(count - 1);
    const bool final_chunk = begin + count == tokens.size();
    state_->forward.forward(
        state_->kv, state_->batch,
        final_chunk ? std::span<const int32_t>(&last, 1) : std::span<const int32_t>(),
        state_->logits.data());
    position_ += static_cast<int>(count);
  }
  return state_->logits;
}

}  // namespace bitnet
