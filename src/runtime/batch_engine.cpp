#include "runtime/batch_engine.h"
#include "runtime/stop_strings.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <numeric>
#include <span>

#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "bitnet/error.h"
#include "model/forward_cpu.h"
#include "model/kv_cache.h"
#include "runtime/logits.h"

namespace bitnet {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// id's log-softmax over the logits, and the `alternatives` most likely ids' (ties to the lower id).
TokenLogprob token_logprob(std::span<const float> logits, int32_t id, int alternatives,
                           std::vector<int32_t>& scratch) {
  const double log_total = log_sum_exp(logits);
  auto logprob = [&](int32_t i) {
    return static_cast<float>(static_cast<double>(logits[static_cast<size_t>(i)]) - log_total);
  };
  TokenLogprob out{id, logprob(id), {}};
  top_candidates(logits, static_cast<size_t>(alternatives), scratch);
  for (int32_t i : scratch) out.top.emplace_back(i, logprob(i));
  return out;
}

}  // namespace

// --- RequestStream -------------------------------------------------------------------------

RequestStream::Update RequestStream::poll(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, timeout,
               [&] { return finished_ || !pending_text_.empty() || !pending_logprobs_.empty(); });
  Update update;
  if (finished_) update = final_;
  update.text = std::move(pending_text_);
  pending_text_.clear();
  update.logprobs = std::move(pending_logprobs_);
  pending_logprobs_.clear();
  return update;
}

RequestStream::Update RequestStream::wait_all() {
  std::string text;
  std::vector<TokenLogprob> logprobs;
  for (;;) {
    Update update = poll(std::chrono::milliseconds(1000));
    text += update.text;
    logprobs.insert(logprobs.end(), std::make_move_iterator(update.logprobs.begin()),
                    std::make_move_iterator(update.logprobs.end()));
    if (update.finished) {
      update.text = std::move(text);
      update.logprobs = std::move(logprobs);
      return update;
    }
  }
}

void RequestStream::push_text(const std::string& text) {
  if (text.empty()) return;
  {
    std::lock_guard lock(mutex_);
    pending_text_ += text;
  }
  cv_.notify_all();
}

void RequestStream::push_logprob(TokenLogprob logprob) {
  {
    std::lock_guard lock(mutex_);
    pending_logprobs_.push_back(std::move(logprob));
  }
  cv_.notify_all();
}

void RequestStream::finish(FinishReason reason, int generated_tokens, int cached_prompt_tokens,
                           const std::string& error) {
  {
    std::lock_guard lock(mutex_);
    if (finished_) return;
    finished_ = true;
    final_.finished = true;
    final_.finish_reason = reason;
    final_.generated_tokens = generated_tokens;
    final_.cached_prompt_tokens = cached_prompt_tokens;
    final_.error = error;
  }
  cv_.notify_all();
}

// --- Sequences -----------------------------------------------------------------------------

// A request holding a slot: its prompt goes into the cache chunk by chunk (after the prefix that
// the slot's cache already held), then it samples one token per step, with generate()'s rules
// for stop ids, stop strings and held-back text.
struct BatchEngine::Sequence {
  std::shared_ptr<RequestStream> stream;
  EngineRequest request;
  int slot;
  Sampler sampler;
  TokenStreamDecoder decoder;
  std::vector<int32_t> history;  // prompt, then generated ids (the repetition penalty's window)
  int cached_prompt;             // prompt tokens whose entries the slot held already
  int prompt_fed;                // prompt tokens already in the cache
  int position;                  // tokens in the cache: history[0, position)
  int generated = 0;
  int32_t next_token = -1;  // sampled, goes into the cache next step
  std::string text;         // generated text so far, stop ids and strings excluded
  size_t emitted = 0;       // bytes of text handed to the stream
  bool done = false;        // its stream is told once the slot is back in the pool
  FinishReason finish_reason = FinishReason::length;
  std::string error;
  Clock::time_point last_token_at;

  Sequence(EngineRequest req, std::shared_ptr<RequestStream> s, int slot_index, int cached,
           const Tokenizer& tokenizer)
      : stream(std::move(s)),
        request(std::move(req)),
        slot(slot_index),
        sampler(request.options.sampling),
        decoder(tokenizer),
        history(request.prompt_ids),
        cached_prompt(cached),
        prompt_fed(cached),
        position(cached) {}

  int prompt_size() const { return static_cast<int>(request.prompt_ids.size()); }
  bool prefilling() const { return prompt_fed < prompt_size(); }

  void emit_up_to(size_t end) {
    if (end > emitted) stream->push_text(text.substr(emitted, end - emitted));
    emitted = std::max(emitted, end);
  }

  void finish(FinishReason reason, bool cut_at_stop_string) {
    if (!cut_at_stop_string) text += decoder.flush();
    emit_up_to(text.size());
    finish_reason = reason;
    done = true;
  }

  void fail(const std::string& why) {
    error = why;
    done = true;
  }

  // Takes one sampled id and the logits it was drawn from; finishes the sequence or leaves the id
  // to be fed next step.
  void accept(int32_t id, std::span<const float> logits, int context_length,
              std::vector<int32_t>& scratch) {
    ++generated;
    history.push_back(id);
    const GenerateOptions& o = request.options;
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), id) != o.stop_ids.end()) {
      finish(FinishReason::stop, false);
      return;
    }
    if (request.logprobs >= 0)
      stream->push_logprob(token_logprob(logits, id, request.logprobs, scratch));
    text += decoder.push(id);
    size_t stop_at = std::string::npos;
    for (const std::string& s : o.stop_strings) {
      const size_t from = emitted >= s.size() ? emitted - s.size() + 1 : 0;
      stop_at = std::min(stop_at, text.find(s, from));
    }
    if (stop_at != std::string::npos) {
      text.resize(stop_at);
      finish(FinishReason::stop, true);
      return;
    }
    emit_up_to(text.size() - stop_prefix_overlap(text, o.stop_strings));
    if (generated == o.max_new_tokens || position >= context_length) {
      finish(FinishReason::length, false);
      return;
    }
    next_token = id;
  }
};

// What the scheduler thread computes with; nothing else touches it.
struct BatchEngine::Compute {
  ThreadPool pool;
  KvCache kv;
  CpuForward forward;
  std::vector<float> logits;  // [rows][vocab]
  std::vector<BatchToken> batch;
  std::vector<int32_t> logit_rows;
  std::vector<Sequence*> row_owners;  // the sequence each logit row samples for
  std::vector<int32_t> top_ids;       // scratch for log-probability alternatives

  Compute(const std::shared_ptr<const Model>& model, const EngineOptions& o, int ctx)
      : pool(o.n_threads > 0 ? o.n_threads : physical_core_count()),
        kv(model->config(), o.n_slots, ctx, o.kv_cache),
        // Room for one decode token per slot plus a prompt chunk.
        forward(model, pool, CpuFeatures::host().best_isa(), o.n_slots + o.prefill_chunk, ctx),
        logits(static_cast<size_t>(o.n_slots) * model->config().vocab_size) {}
};

// --- BatchEngine ---------------------------------------------------------------------------

BatchEngine::BatchEngine(std::shared_ptr<const Model> model, const Tokenizer& tokenizer,
                         const EngineOptions& options, EngineListener* listener)
    : model_(std::move(model)), tokenizer_(tokenizer), options_(options), listener_(listener) {
  const ModelConfig& c = model_->config();
  if (options_.n_slots < 1) throw Error("the engine needs at least one slot (--parallel)");
  if (options_.max_queue < 0) throw Error("the queue bound must be >= 0");
  if (options_.prefill_chunk < 1) throw Error("the prefill chunk must be positive");
  if (options_.context_length < 0) throw Error("context length must be positive");
  context_length_ = options_.context_length > 0 ? options_.context_length : c.max_seq_len;
  if (context_length_ > c.max_seq_len) {
    throw Error("context length " + std::to_string(context_length_) +
                " exceeds the model's max_position_embeddings " + std::to_string(c.max_seq_len));
  }
  compute_ = std::make_unique<Compute>(model_, options_, context_length_);
  free_slots_.resize(static_cast<size_t>(options_.n_slots));
  std::iota(free_slots_.begin(), free_slots_.end(), 0);
  slot_caches_.resize(static_cast<size_t>(options_.n_slots));
  scheduler_ = std::thread([this] { scheduler_loop(); });
}

BatchEngine::~BatchEngine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    closed_ = true;
  }
  work_cv_.notify_all();
  scheduler_.join();
  for (Queued& q : queue_)
    q.stream->finish(FinishReason::length, 0, 0, "the server is shutting down");
  for (auto& seq : running_) {
    seq->stream->finish(FinishReason::length, seq->generated, seq->cached_prompt,
                        "the server is shutting down");
  }
}

int BatchEngine::n_threads() const {
  return compute_->pool.size();
}
const char* BatchEngine::kernels() const {
  return isa_name(compute_->forward.isa());
}

BatchEngine::Submitted BatchEngine::submit(EngineRequest request) {
  const ModelConfig& c = model_->config();
  const GenerateOptions& o = request.options;
  if (request.prompt_ids.empty()) throw Error("the prompt is empty: nothing to generate from");
  if (static_cast<int>(request.prompt_ids.size()) >= context_length_) {
    throw Error("the prompt has " + std::to_string(request.prompt_ids.size()) +
                " tokens; the context holds " + std::to_string(context_length_) +
                " including at least one generated token");
  }
  for (int32_t id : request.prompt_ids) {
    if (id < 0 || id >= c.vocab_size) {
      throw Error("token id " + std::to_string(id) + " is outside the vocabulary");
    }
  }
  if (o.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
  if (request.logprobs > c.vocab_size) {
    throw Error("logprobs asks for " + std::to_string(request.logprobs) +
                " alternatives; the vocabulary has " + std::to_string(c.vocab_size));
  }
  for (const std::string& s : o.stop_strings) {
    if (s.empty()) throw Error("stop strings must not be empty");
  }
  o.sampling.validate(c.vocab_size);

  auto stream = std::make_shared<RequestStream>();
  stream->submitted_ = Clock::now();
  stream->final_.prompt_tokens = static_cast<int>(request.prompt_ids.size());
  {
    std::lock_guard lock(mutex_);
    if (closed_) return {nullptr, Rejection::closed};
    // The bound counts only requests that cannot start at once.
    const int free_now = static_cast<int>(free_slots_.size());
    if (static_cast<int>(queue_.size()) >= free_now + options_.max_queue) {
      return {nullptr, Rejection::queue_full};
    }
    queue_.push_back({std::move(request), stream});
  }
  work_cv_.notify_all();
  return {stream, Rejection::none};
}

void BatchEngine::cancel(const std::shared_ptr<RequestStream>& stream) {
  {
    std::lock_guard lock(mutex_);
    stream->cancelled_ = true;
  }
  work_cv_.notify_all();
}

void BatchEngine::close() {
  std::lock_guard lock(mutex_);
  closed_ = true;
}

bool BatchEngine::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return idle_cv_.wait_for(lock, timeout, [&] { return queue_.empty() && running_.empty(); });
}

EngineStats BatchEngine::stats() const {
  std::lock_guard lock(mutex_);
  EngineStats s;
  s.queued = static_cast<int>(queue_.size());
  s.running = static_cast<int>(running_.size());
  s.n_slots = options_.n_slots;
  s.slots_in_use = s.n_slots - static_cast<int>(free_slots_.size());
  return s;
}

// The slot goes back to the pool before the stream hears of the end, so a client that has
// seen its response end also sees the slot free in /metrics.
void BatchEngine::release(Sequence& seq) {
  SlotCache& cache = slot_caches_[static_cast<size_t>(seq.slot)];
  cache.ids.assign(seq.history.begin(), seq.history.begin() + seq.position);
  cache.released_at = ++releases_;
  free_slots_.push_back(seq.slot);
  if (listener_) listener_->on_finished(seq.prompt_size(), seq.cached_prompt, seq.generated);
  seq.stream->finish(seq.finish_reason, seq.generated, seq.cached_prompt, seq.error);
}

// The free slot whose cache holds the longest part of the prompt, short of its last token (which
// must run to give logits), when that is at least half of it; otherwise the least recently used
// free slot, so that a request sharing little more than the first token with a slot's cache does
// not take the slot of a conversation that may continue.
std::pair<size_t, int> BatchEngine::pick_slot(const std::vector<int32_t>& prompt) const {
  auto reused_at = [&](size_t i) {
    const SlotCache& cache = slot_caches_[static_cast<size_t>(free_slots_[i])];
    if (!options_.prompt_cache) return 0;
    const auto end =
        cache.ids.begin() + static_cast<ptrdiff_t>(std::min(cache.ids.size(), prompt.size() - 1));
    return static_cast<int>(std::mismatch(cache.ids.begin(), end, prompt.begin()).first -
                            cache.ids.begin());
  };
  auto released_at = [&](size_t i) {
    return slot_caches_[static_cast<size_t>(free_slots_[i])].released_at;
  };
  size_t longest = 0, oldest = 0;
  int longest_reused = reused_at(0);
  for (size_t i = 1; i < free_slots_.size(); ++i) {
    const int reused = reused_at(i);
    if (reused > longest_reused) {
      longest = i;
      longest_reused = reused;
    }
    if (released_at(i) < released_at(oldest)) oldest = i;
  }
  if (2 * static_cast<size_t>(longest_reused) >= prompt.size()) return {longest, longest_reused};
  return {oldest, reused_at(oldest)};
}

// Called with mutex_ held: retires finished and cancelled sequences, then fills free slots.
void BatchEngine::admit_locked() {
  for (auto& seq : running_) {
    if (!seq->done && seq->stream->cancelled_) seq->fail("cancelled");
    if (seq->done) release(*seq);
  }
  std::erase_if(running_, [](const auto& seq) { return seq->done; });
  std::erase_if(queue_, [](const Queued& q) {
    if (!q.stream->cancelled_) return false;
    q.stream->finish(FinishReason::stop, 0, 0, "cancelled");
    return true;
  });
  while (!queue_.empty() && !free_slots_.empty()) {
    Queued q = std::move(queue_.front());
    queue_.pop_front();
    const auto [index, reused] = pick_slot(q.request.prompt_ids);
    const int slot = free_slots_[index];
    free_slots_.erase(free_slots_.begin() + static_cast<ptrdiff_t>(index));
    auto seq = std::make_unique<Sequence>(std::move(q.request), std::move(q.stream), slot, reused,
                                          tokenizer_);
    if (seq->request.options.max_new_tokens == 0) {
      seq->finish(FinishReason::length, false);
      release(*seq);
      continue;
    }
    running_.push_back(std::move(seq));
  }
  if (queue_.empty() && running_.empty()) idle_cv_.notify_all();
}

void BatchEngine::scheduler_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    admit_locked();  // also retires what the last step finished
    if (stopping_) return;
    if (running_.empty()) {
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      continue;
    }
    lock.unlock();
    try {
      step();
    } catch (const std::exception& e) {
      // Nothing in a validated request should fail; if something does, fail the batch, not the
      // server. The step may have left the batch's cache entries half written: none are kept.
      for (auto& seq : running_) {
        seq->fail(e.what());
        seq->position = 0;
      }
    }
    lock.lock();
  }
}

// One forward pass: the next token of every decoding sequence, then as many prompt tokens of
// prefilling sequences (oldest first) as the chunk allows; then sampling where logits are due.
void BatchEngine::step() {
  Compute& cx = *compute_;
  cx.batch.clear();
  cx.logit_rows.clear();
  cx.row_owners.clear();
  // running_ changes only on this thread, so it is read here without the lock.
  for (auto& seq : running_) {
    if (seq->prefilling()) continue;
    cx.logit_rows.push_back(static_cast<int32_t>(cx.batch.size()));
    cx.row_owners.push_back(seq.get());
    cx.batch.push_back({seq->next_token, seq->position++, seq->slot});
  }
  int budget = options_.prefill_chunk;
  for (auto& seq : running_) {
    if (!seq->prefilling() || budget == 0) continue;
    const int count = std::min(budget, seq->prompt_size() - seq->prompt_fed);
    for (int i = 0; i < count; ++i) {
      const int p = seq->prompt_fed + i;
      cx.batch.push_back({seq->request.prompt_ids[static_cast<size_t>(p)], p, seq->slot});
    }
    budget -= count;
    seq->prompt_fed += count;
    seq->position = seq->prompt_fed;
    if (!seq->prefilling()) {
      cx.logit_rows.push_back(static_cast<int32_t>(cx.batch.size() - 1));
      cx.row_owners.push_back(seq.get());
    }
  }
  cx.forward.forward(cx.kv, cx.batch, cx.logit_rows, cx.logits.data());

  const size_t vocab = static_cast<size_t>(model_->config().vocab_size);
  const Clock::time_point now = Clock::now();
  for (size_t row = 0; row < cx.row_owners.size(); ++row) {
    Sequence& seq = *cx.row_owners[row];
    const bool first_token = seq.generated == 0;
    const std::span<const float> logits(cx.logits.data() + row * vocab, vocab);
    const int32_t id = seq.sampler.sample(logits, seq.history);
    if (listener_) {
      if (first_token) {
        listener_->on_first_token(seconds_between(seq.stream->submitted_, now));
      } else {
        listener_->on_next_token(seconds_between(seq.last_token_at, now));
      }
    }
    seq.last_token_at = now;
    seq.accept(id, logits, context_length_, cx.top_ids);
  }
}

}  // namespace bitnet
