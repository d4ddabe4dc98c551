#include "bitnet/session.h"

#include <algorithm>
#include <vector>

#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "model/forward_cpu.h"
#include "model/forward_cuda.h"
#include "model/kv_cache.h"

namespace bitnet {

// One backend is set: the CPU's pool, cache and forward pass, or the GPU's forward pass.
struct Session::State {
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<KvCache> kv;
  std::unique_ptr<CpuForward> cpu;
#if BITNET_HAVE_CUDA
  std::unique_ptr<CudaForward> cuda;
#endif
  int context_length = 0;
  int max_batch = 0;
  std::vector<float> logits;
  std::vector<float> scoring_logits;  // feed_scoring's rows
  std::vector<int32_t> logit_rows;
  std::vector<BatchToken> batch;
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

std::string resolve_device(const std::string& device) {
  if (device == "auto") return cuda_device_available() ? "cuda" : "cpu";
  if (device == "cpu") return device;
  if (device == "cuda") {
    std::string why;
    if (!cuda_device_available(&why)) throw Error("--device cuda: " + why);
    return device;
  }
  throw Error("unknown device '" + device + "' (choices: auto, cpu, cuda)");
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
  if (options.kernels != "auto") parse_isa(options.kernels);  // a bad name is an error anywhere
  device_ = resolve_device(options.device);
  state_ = std::make_unique<State>();
  state_->context_length = ctx;
  state_->max_batch = std::min(options.max_batch, ctx);
  state_->logits.resize(static_cast<size_t>(c.vocab_size));
#if BITNET_HAVE_CUDA
  if (device_ == "cuda") {
    try {
      if (options.kv_cache != KvCacheType::f16) {
        throw Error(std::string("--kv-cache ") + kv_cache_type_name(options.kv_cache) +
                    ": the CUDA backend keeps its KV cache in f16");
      }
      state_->cuda = std::make_unique<CudaForward>(model_, state_->max_batch, ctx);
    } catch (const Error& e) {
      if (options.device != "auto") throw;
      throw Error(std::string(e.what()) +
                  " (the GPU was chosen by --device auto; --device cpu runs on the CPU)");
    }
    kernels_ = state_->cuda->device_name();
    return;
  }
#endif
  const int threads = options.n_threads > 0 ? options.n_threads : physical_core_count();
  const CpuIsa isa = choose_isa(options.kernels);
  kernels_ = isa_name(isa);
  state_->pool = std::make_unique<ThreadPool>(threads);
  state_->kv = std::make_unique<KvCache>(c, 1, ctx, options.kv_cache);
  state_->cpu = std::make_unique<CpuForward>(model_, *state_->pool, isa, state_->max_batch, ctx);
}

Session::~Session() = default;

int Session::context_length() const {
  return state_->context_length;
}
int Session::n_threads() const {
  return state_->pool ? state_->pool->size() : 0;
}

uint64_t Session::kv_bytes_per_position() const {
#if BITNET_HAVE_CUDA
  if (state_->cuda) return state_->cuda->kv_bytes_per_position();
#endif
  return state_->kv->bytes_per_position();
}

uint64_t Session::weight_bytes_per_token() const {
  const Model::Sizes sizes = model_->sizes();
  const uint64_t rest = sizes.norms + 2 * static_cast<uint64_t>(model_->config().hidden_dim);
#if BITNET_HAVE_CUDA
  if (state_->cuda) return state_->cuda->weight_bytes_per_token() + rest;
#endif
  return sizes.ternary + sizes.lm_head + rest;
}

void Session::rewind(int n) {
  if (n < 0 || n > position_) throw Error("cannot rewind to position " + std::to_string(n));
  position_ = n;
}

// Validates, then runs the tokens in max_batch chunks; the last chunk leaves the last token's
// logits in state_->logits, or its greedy next token in *greedy_id when that is given. With
// scored_from >= 0 (CPU only), the logits of tokens [scored_from, size) go to
// state_->scoring_logits instead.
void Session::run(std::span<const int32_t> tokens, int32_t* greedy_id, int scored_from) {
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
  const size_t chunk = static_cast<size_t>(state_->max_batch);
  for (size_t begin = 0; begin < tokens.size(); begin += chunk) {
    const size_t count = std::min(chunk, tokens.size() - begin);
    state_->batch.clear();
    for (size_t i = 0; i < count; ++i) {
      state_->batch.push_back({tokens[begin + i], static_cast<int32_t>(position_ + i), 0});
    }
    const int32_t last = static_cast<int32_t>(count - 1);
    const bool final_chunk = begin + count == tokens.size();
#if BITNET_HAVE_CUDA
    if (state_->cuda) {
      const int logits_from = final_chunk ? last : static_cast<int>(count);
      state_->cuda->forward(state_->batch, logits_from,
                            final_chunk && !greedy_id ? state_->logits.data() : nullptr,
                            final_chunk ? greedy_id : nullptr);
      position_ += static_cast<int>(count);
      continue;
    }
#endif
    std::vector<int32_t>& rows = state_->logit_rows;
    rows.clear();
    float* out = state_->logits.data();
    if (scored_from >= 0) {
      const size_t from = std::max(begin, static_cast<size_t>(scored_from));
      for (size_t i = from; i < begin + count; ++i) rows.push_back(static_cast<int32_t>(i - begin));
      if (!rows.empty()) {
        out = state_->scoring_logits.data() +
              (from - static_cast<size_t>(scored_from)) * static_cast<size_t>(c.vocab_size);
      }
    } else if (final_chunk) {
      rows.push_back(last);
    }
    state_->cpu->forward(*state_->kv, state_->batch, rows, out);
    if (final_chunk && greedy_id) *greedy_id = argmax(state_->logits);
    position_ += static_cast<int>(count);
  }
}

std::span<const float> Session::feed(std::span<const int32_t> tokens) {
  run(tokens, nullptr, -1);
  return state_->logits;
}

std::span<const float> Session::feed_scoring(std::span<const int32_t> tokens, int first) {
  if (device_ != "cpu") throw Error("scoring every token runs on the CPU (--device cpu)");
  if (first < 0 || static_cast<size_t>(first) >= tokens.size()) {
    throw Error("the first scored token (" + std::to_string(first) + ") must be one of the " +
                std::to_string(tokens.size()) + " tokens");
  }
  const size_t rows = tokens.size() - static_cast<size_t>(first);
  state_->scoring_logits.resize(rows * static_cast<size_t>(model_->config().vocab_size));
  run(tokens, nullptr, first);
  return state_->scoring_logits;
}

int32_t Session::feed_greedy(std::span<const int32_t> tokens) {
  int32_t id = 0;
  run(tokens, &id, -1);
  return id;
}

}  // namespace bitnet
