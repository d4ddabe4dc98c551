#pragma once
// A session runs one model for one sequence: it owns the KV cache, the scratch buffers and
// the thread pool, and feeds tokens at its current position.

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "bitnet/model.h"

namespace bitnet {

// Storage of the KV cache.
enum class KvCacheType {
  f32,  // exact
  f16,
  q8,  // int8 with one scale per position and head
};
const char* kv_cache_type_name(KvCacheType type);
KvCacheType parse_kv_cache_type(const std::string& name);  // "f32", "f16", "q8"

// "cpu" or "cuda" for SessionOptions::device ("auto" resolved); throws bitnet::Error if cuda is
// asked for and unavailable, or the name is unknown.
std::string resolve_device(const std::string& device);

struct SessionOptions {
  // cpu, cuda, or auto: cuda when the build has it and a GPU is present (the CLI's default)
  std::string device = "cpu";
  int context_length = 0;        // 0 = the model's max_position_embeddings
  int n_threads = 0;             // 0 = physical cores
  int max_batch = 512;           // prompt tokens per forward pass; longer prompts run in chunks
  std::string kernels = "auto";  // CPU: auto, scalar, avx2, avx512
  KvCacheType kv_cache = KvCacheType::f16;  // halves f32's bytes; f32 is the exact path (CPU)
};

class Session {
 public:
  Session(std::shared_ptr<const Model> model, const SessionOptions& options = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Runs tokens at positions [position(), position() + n) in one batched pass per max_batch
  // chunk and returns the logits of the last token (valid until the next call).
  // Throws bitnet::Error, leaving the session unchanged, if they do not fit in the context or
  // an id is outside the vocabulary.
  std::span<const float> feed(std::span<const int32_t> tokens);
  // As feed(), but returns the greedy next token (argmax of the last logits, ties to the lowest
  // id); on a GPU only that id leaves the device. The logits are not kept.
  int32_t feed_greedy(std::span<const int32_t> tokens);
  // As feed(), but returns the logits of every token from index `first` on, [(tokens.size() -
  // first) x vocab] (valid until the next call): what scoring a text needs. CPU sessions only.
  std::span<const float> feed_scoring(std::span<const int32_t> tokens, int first);

  int position() const { return position_; }
  // Forgets everything after the first n tokens (their cache entries are overwritten later).
  void rewind(int n);
  int context_length() const;
  // KV-cache bytes one position occupies over all layers (attention reads this per position).
  uint64_t kv_bytes_per_position() const;
  // Weight bytes one decode step reads in this backend's layout: ternary matrices, lm_head,
  // norms and one embedding row.
  uint64_t weight_bytes_per_token() const;
  int n_threads() const;                                   // CPU threads (0 on a GPU)
  const std::string& device() const { return device_; }    // "cpu" or "cuda"
  const std::string& kernels() const { return kernels_; }  // the CPU kernels, or the GPU's name
  const Model& model() const { return *model_; }

  struct State;

 private:
  std::shared_ptr<const Model> model_;
  void run(std::span<const int32_t> tokens, int32_t* greedy_id, int scored_from);

  std::unique_ptr<State> state_;
  std::string device_;
  std::string kernels_;
  int position_ = 0;
};

}  // namespace bitnet
