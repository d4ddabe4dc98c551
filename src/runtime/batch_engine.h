#pragma once
// Continuous batching: one scheduler thread owns the model's forward pass, a KV cache of
// n_slots sequences and a thread pool. Requests wait in a bounded queue, take a free slot when
// one opens, and from then on every running sequence advances by one token per forward pass
// (prompt chunks of newly admitted requests ride along in the same pass). A slot returns to the
// pool when its sequence finishes or is cancelled.
//
// A slot keeps its last sequence's cache entries until the slot is taken again. A new request
// takes the free slot whose entries hold the longest part of its prompt (if at least half of it;
// otherwise the least recently used) and prefills only what the entries do not hold: a chat
// client resends the whole conversation every turn. The reused entries hold exactly what
// prefilling those tokens would write, so this does not change results either.
//
// Batching never changes results: every token's activations are quantized on their own and
// the kernels are exact, and each request samples with its own seeded Sampler, so a request
// produces exactly what generate() produces for it on a lone Session.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bitnet/generate.h"
#include "bitnet/model.h"
#include "bitnet/session.h"
#include "bitnet/tokenizer.h"

namespace bitnet {

struct EngineOptions {
  int n_slots = 1;           // sequences decoded together (--parallel)
  int context_length = 0;    // per slot; 0 = the model's max_position_embeddings
  int n_threads = 0;         // 0 = physical cores
  int max_queue = 64;        // requests waiting for a slot; more are refused
  int prefill_chunk = 128;   // prompt tokens per forward pass, next to the decode tokens
  bool prompt_cache = true;  // reuse a free slot's entries for the prompt prefix they hold
  KvCacheType kv_cache = SessionOptions{}.kv_cache;  // the same default as a lone Session
};

struct EngineRequest {
  std::vector<int32_t> prompt_ids;
  GenerateOptions options;  // max_new_tokens, sampling (with its seed), stop ids and strings
  // < 0: none. Otherwise each generated token (but a final stop id) comes with its
  // log-probability under the model (log-softmax of the logits, before penalties and temperature)
  // and the `logprobs` most likely ids at that step with theirs.
  int logprobs = -1;
};

struct TokenLogprob {
  int32_t id = 0;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // most likely first
};

// Timing and token counts reported by the scheduler thread as they happen (for metrics).
class EngineListener {
 public:
  virtual ~EngineListener() = default;
  virtual void on_first_token(double seconds_since_submit) = 0;
  virtual void on_next_token(double seconds_since_previous) = 0;
  virtual void on_finished(int prompt_tokens, int cached_prompt_tokens, int generated_tokens) = 0;
};

// One request's output, produced by the scheduler thread and read by one consumer thread.
class RequestStream {
 public:
  struct Update {
    std::string text;       // text made final since the previous poll
    bool finished = false;  // when true, the fields below are valid and no more text follows
    FinishReason finish_reason = FinishReason::length;
    int prompt_tokens = 0;
    int cached_prompt_tokens = 0;        // of prompt_tokens, those whose cache entries were reused
    int generated_tokens = 0;            // sampled ids, including a final stop id
    std::vector<TokenLogprob> logprobs;  // of the tokens since the last poll (when asked for)
    std::string error;                   // non-empty when generation failed
  };

  // Waits up to timeout for new text or the end, and returns what arrived since the last call.
  Update poll(std::chrono::milliseconds timeout);
  // Waits for the end and returns the whole text with the final state.
  Update wait_all();

 private:
  friend class BatchEngine;
  using Clock = std::chrono::steady_clock;

  void push_text(const std::string& text);
  void push_logprob(TokenLogprob logprob);
  void finish(FinishReason reason, int generated_tokens, int cached_prompt_tokens,
              const std::string& error = {});

  std::mutex mutex_;
  std::condition_variable cv_;
  std::string pending_text_;
  std::vector<TokenLogprob> pending_logprobs_;
  bool finished_ = false;
  Update final_;
  bool cancelled_ = false;  // guarded by the engine's mutex
  Clock::time_point submitted_;
};

struct EngineStats {
  int queued = 0;
  int running = 0;
  int slots_in_use = 0;
  int n_slots = 0;
};

class BatchEngine {
 public:
  enum class Rejection { none, queue_full, closed };
  struct Submitted {
    std::shared_ptr<RequestStream> stream;  // null when rejected
    Rejection rejection = Rejection::none;
  };

  // The tokenizer must outlive the engine. listener may be null; it must outlive the engine.
  BatchEngine(std::shared_ptr<const Model> model, const Tokenizer& tokenizer,
              const EngineOptions& options, EngineListener* listener = nullptr);
  ~BatchEngine();  // cancels whatever is queued or running and joins the scheduler
  BatchEngine(const BatchEngine&) = delete;
  BatchEngine& operator=(const BatchEngine&) = delete;

  // Throws bitnet::Error for a request that can never run (empty or too long prompt, ids out
  // of the vocabulary, bad sampling parameters, empty stop strings).
  Submitted submit(EngineRequest request);
  // Stops a queued or running request and frees its slot; harmless once it has finished.
  void cancel(const std::shared_ptr<RequestStream>& stream);
  // Refuses new requests from now on; queued and running ones still complete.
  void close();
  // Waits until nothing is queued or running; false on timeout.
  bool wait_idle(std::chrono::milliseconds timeout);

  EngineStats stats() const;
  int context_length() const { return context_length_; }
  int n_threads() const;
  const char* kernels() const;

 private:
  struct Sequence;
  struct Compute;
  struct Queued {
    EngineRequest request;
    std::shared_ptr<RequestStream> stream;
  };
  // The ids whose entries a slot's cache holds at positions 0, 1, ..., left by its last sequence.
  struct SlotCache {
    std::vector<int32_t> ids;
    uint64_t released_at = 0;  // release count when the slot was last freed (0: never used)
  };

  void scheduler_loop();
  void admit_locked();  // with mutex_ held
  void step();
  void release(Sequence& seq);  // with mutex_ held
  // Index into free_slots_ of the slot for `prompt`, and how many of its ids are reused.
  std::pair<size_t, int> pick_slot(const std::vector<int32_t>& prompt) const;

  std::shared_ptr<const Model> model_;
  const Tokenizer& tokenizer_;
  EngineOptions options_;
  EngineListener* listener_;
  int context_length_;
  std::unique_ptr<Compute> compute_;  // touched only by the scheduler thread

  mutable std::mutex mutex_;
  std::condition_variable work_cv_;  // the scheduler waits here for requests
  std::condition_variable idle_cv_;  // wait_idle waits here
  std::deque<Queued> queue_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<int> free_slots_;
  std::vector<SlotCache> slot_caches_;  // [n_slots]
  uint64_t releases_ = 0;
  bool closed_ = false;
  bool stopping_ = false;
  std::thread scheduler_;
};

}  // namespace bitnet
