// The continuous-batching scheduler without HTTP: batched output equals lone generation, slots
// are reused and freed on cancellation, the queue is bounded, close() refuses new work.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <mutex>
#include <numeric>

#include "bitnet/error.h"
#include "runtime/batch_engine.h"
#include "server_test_util.h"

namespace bitnet {
namespace {

using namespace std::chrono_literals;
using test::lone_generate;

class BatchEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = Model::load(test::tiny_model());
    tokenizer_ = std::make_unique<Tokenizer>(Tokenizer::load(test::tiny_model()));
  }
  static void TearDownTestSuite() {
    tokenizer_.reset();
    model_.reset();
  }

  static EngineOptions options(int slots, int queue = 64) {
    EngineOptions o;
    o.n_slots = slots;
    o.context_length = 128;
    o.n_threads = 1;
    o.max_queue = queue;
    o.prefill_chunk = 16;  // small, so longer prompts prefill over several steps
    return o;
  }

  static EngineRequest request(const std::string& prompt, int max_tokens, uint64_t seed,
                               float temperature = 0.8f) {
    EngineRequest r;
    r.prompt_ids = tokenizer_->encode(prompt, true);
    r.options.max_new_tokens = max_tokens;
    r.options.sampling.temperature = temperature;
    r.options.sampling.seed = seed;
    r.options.stop_ids = default_stop_ids(model_->config(), *tokenizer_);
    return r;
  }

  static inline std::shared_ptr<const Model> model_;
  static inline std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(BatchEngineTest, BatchedOutputEqualsLoneGeneration) {
  BatchEngine engine(model_, *tokenizer_, options(4));
  std::vector<EngineRequest> requests;
  const std::vector<std::string> prompts = {
      "Once upon a time", "The quick brown fox jumps over the lazy dog and keeps on running", "a",
      "Hello world, this prompt is long enough to need several prefill chunks of sixteen "
      "tokens each before it starts decoding"};
  for (int i = 0; i < 12; ++i) {
    EngineRequest r = request(prompts[static_cast<size_t>(i) % prompts.size()], 10 + 7 * (i % 5),
                              static_cast<uint64_t>(100 + i), i % 3 == 0 ? 0.0f : 0.9f);
    if (i % 4 == 1) r.options.stop_strings = {"e t", "zz"};
    if (i % 5 == 2) r.options.sampling.repeat_penalty = 1.3f;
    requests.push_back(r);
  }
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const EngineRequest& r : requests) {
    auto submitted = engine.submit(r);
    ASSERT_TRUE(submitted.stream);
    streams.push_back(submitted.stream);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    const RequestStream::Update got = streams[i]->wait_all();
    const GenerateResult want =
        lone_generate(model_, *tokenizer_, requests[i].prompt_ids, requests[i].options, 128);
    EXPECT_EQ(got.error, "");
    EXPECT_EQ(got.text, want.text) << "request " << i;
    EXPECT_EQ(got.finish_reason, want.finish_reason) << "request " << i;
    EXPECT_EQ(got.generated_tokens, static_cast<int>(want.ids.size())) << "request " << i;
    EXPECT_EQ(got.prompt_tokens, static_cast<int>(requests[i].prompt_ids.size()));
  }
  ASSERT_TRUE(engine.wait_idle(5s));
  EXPECT_EQ(engine.stats().slots_in_use, 0);
}

TEST_F(BatchEngineTest, ContextFullFinishesAsLengthLikeGenerate) {
  BatchEngine engine(model_, *tokenizer_, options(2));
  EngineRequest r = request("Once upon a time", 500, 5);
  auto got = engine.submit(r).stream->wait_all();
  const GenerateResult want = lone_generate(model_, *tokenizer_, r.prompt_ids, r.options, 128);
  EXPECT_EQ(got.text, want.text);
  EXPECT_EQ(got.generated_tokens, static_cast<int>(want.ids.size()));
  EXPECT_EQ(got.finish_reason, want.finish_reason);
}

TEST_F(BatchEngineTest, SlotsAreReusedAcrossManyRequests) {
  BatchEngine engine(model_, *tokenizer_, options(2));
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (int i = 0; i < 10; ++i) {
    streams.push_back(
        engine.submit(request("Once upon a time", 12, static_cast<uint64_t>(i))).stream);
  }
  for (auto& s : streams) EXPECT_EQ(s->wait_all().error, "");
  ASSERT_TRUE(engine.wait_idle(5s));
  const EngineStats stats = engine.stats();
  EXPECT_EQ(stats.slots_in_use, 0);
  EXPECT_EQ(stats.running, 0);
  EXPECT_EQ(stats.queued, 0);
  EXPECT_EQ(stats.n_slots, 2);
}

// While closed, holds the scheduler thread at the next token it reports, so that a test knows a
// request is running and cannot finish before the test has acted.
class TokenGate : public EngineListener {
 public:
  void close() {
    std::lock_guard lock(mutex_);
    closed_ = true;
    held_ = false;
  }
  void open() {
    {
      std::lock_guard lock(mutex_);
      closed_ = false;
    }
    cv_.notify_all();
  }
  void wait_until_held() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return held_; });
  }
  void on_first_token(double) override { hold(); }
  void on_next_token(double) override { hold(); }
  void on_finished(int, int, int) override {}

 private:
  void hold() {
    std::unique_lock lock(mutex_);
    if (!closed_) return;
    held_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !closed_; });
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  bool closed_ = false, held_ = false;
};

TEST_F(BatchEngineTest, CancellationFreesTheSlotForTheNextRequest) {
  TokenGate gate;
  BatchEngine engine(model_, *tokenizer_, options(1), &gate);
  // Greedy over the whole context: long enough to still be running when cancelled.
  auto running = engine.submit(request("Once upon a time", 120, 1, 0.0f)).stream;
  auto waiting = engine.submit(request("Hello", 5, 2)).stream;
  engine.cancel(running);
  const RequestStream::Update cancelled = running->wait_all();
  EXPECT_TRUE(cancelled.finished);
  const RequestStream::Update next = waiting->wait_all();
  EXPECT_EQ(next.error, "");
  EXPECT_GT(next.generated_tokens, 0);
  // Cancelling a queued request drops it without running it. The gate keeps the blocker in the
  // only slot until then (the tiny model could otherwise finish it first on a busy machine).
  gate.close();
  auto blocker = engine.submit(request("Once upon a time", 120, 3, 0.0f)).stream;
  gate.wait_until_held();
  auto queued = engine.submit(request("Hello", 5, 4)).stream;
  engine.cancel(queued);
  gate.open();
  EXPECT_EQ(queued->wait_all().error, "cancelled");
  engine.cancel(blocker);
  ASSERT_TRUE(engine.wait_idle(5s));
  EXPECT_EQ(engine.stats().slots_in_use, 0);
  engine.cancel(queued);  // harmless after the end
}

TEST_F(BatchEngineTest, QueueIsBoundedAndCloseRefusesNewWork) {
  TokenGate gate;  // holds the first request in the slot until every submit is done
  BatchEngine engine(model_, *tokenizer_, options(1, 2), &gate);
  gate.close();
  std::vector<std::shared_ptr<RequestStream>> accepted = {
      engine.submit(request("Once upon a time", 120, 0, 0.0f)).stream};
  gate.wait_until_held();
  int refused = 0;
  for (int i = 1; i < 6; ++i) {
    auto s = engine.submit(request("Once upon a time", 120, static_cast<uint64_t>(i), 0.0f));
    if (s.stream) {
      accepted.push_back(s.stream);
    } else {
      EXPECT_EQ(s.rejection, BatchEngine::Rejection::queue_full);
      ++refused;
    }
  }
  // One slot plus two queue places.
  EXPECT_EQ(accepted.size(), 3u);
  EXPECT_EQ(refused, 3);
  engine.close();
  auto late = engine.submit(request("Hello", 5, 9));
  EXPECT_FALSE(late.stream);
  EXPECT_EQ(late.rejection, BatchEngine::Rejection::closed);
  gate.open();
  for (auto& s : accepted) EXPECT_EQ(s->wait_all().error, "");  // accepted work still completes
  ASSERT_TRUE(engine.wait_idle(5s));
}

// A request reuses what a free slot's cache holds of its prompt: the previous sequence's prompt
// and the generated ids it fed, never its last sampled id. Output stays what lone generation
// gives, also where the new prompt diverges from the slot's entries and overwrites the rest.
TEST_F(BatchEngineTest, PromptCacheReusesHeldEntriesWithoutChangingResults) {
  BatchEngine engine(model_, *tokenizer_, options(2));
  auto run = [&](const EngineRequest& r, int want_cached) {
    const RequestStream::Update got = engine.submit(r).stream->wait_all();
    const GenerateResult want = lone_generate(model_, *tokenizer_, r.prompt_ids, r.options, 128);
    EXPECT_EQ(got.error, "");
    EXPECT_EQ(got.text, want.text);
    EXPECT_EQ(got.generated_tokens, static_cast<int>(want.ids.size()));
    EXPECT_EQ(got.cached_prompt_tokens, want_cached);
    return want;
  };
  auto join = [](std::vector<int32_t> a, const std::vector<int32_t>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const EngineRequest first = request("Once upon a time there was a small model", 8, 1);
  const GenerateResult first_out = run(first, 0);
  const std::vector<int32_t> held =
      join(first.prompt_ids, std::vector<int32_t>(first_out.ids.begin(), first_out.ids.end() - 1));

  // Sharing only the first token with it, a prompt takes the unused slot instead.
  run(request("The quick brown fox jumps over the lazy dog", 6, 2), 0);

  // The next turn of a conversation holds the whole reply: all but its last id is reused.
  EngineRequest next_turn = request("", 8, 3);
  next_turn.prompt_ids =
      join(join(first.prompt_ids, first_out.ids), tokenizer_->encode(" and then it spoke", false));
  run(next_turn, static_cast<int>(held.size()));

  // The same prompt again: all but its last token, which must run to give logits.
  run(first, static_cast<int>(first.prompt_ids.size()) - 1);

  // A prompt that leaves the held entries two tokens before the end of the first prompt.
  const std::vector<int32_t> tail = tokenizer_->encode(" ok", false);
  const size_t kept = first.prompt_ids.size() - 2;
  ASSERT_NE(tail.front(), first.prompt_ids[kept]);
  ASSERT_GE(kept, tail.size());  // the shared part is at least half of the prompt
  EngineRequest diverging = request("", 8, 4);
  diverging.prompt_ids =
      join(std::vector<int32_t>(first.prompt_ids.begin(), first.prompt_ids.begin() + kept), tail);
  run(diverging, static_cast<int>(kept));
}

TEST_F(BatchEngineTest, PromptCacheCanBeTurnedOff) {
  EngineOptions o = options(1);
  o.prompt_cache = false;
  BatchEngine engine(model_, *tokenizer_, o);
  const EngineRequest r = request("Once upon a time there was a small model", 6, 1);
  const RequestStream::Update a = engine.submit(r).stream->wait_all();
  const RequestStream::Update b = engine.submit(r).stream->wait_all();
  EXPECT_EQ(a.cached_prompt_tokens, 0);
  EXPECT_EQ(b.cached_prompt_tokens, 0);
  EXPECT_EQ(a.text, b.text);
}

// Each generated token's log-probability is the log-softmax of the logits a lone session gives
// at that step (computed here in double), and the alternatives are the largest logits in order.
TEST_F(BatchEngineTest, LogprobsAreTheLogSoftmaxOfLoneLogits) {
  BatchEngine engine(model_, *tokenizer_, options(2));
  EngineRequest r = request("Once upon a time", 12, 3);
  r.logprobs = 3;
  auto other = engine.submit(request("The quick brown fox", 12, 4)).stream;  // batched alongside
  const RequestStream::Update got = engine.submit(r).stream->wait_all();
  EXPECT_EQ(other->wait_all().error, "");
  const GenerateResult want = lone_generate(model_, *tokenizer_, r.prompt_ids, r.options, 128);
  EXPECT_EQ(got.text, want.text);
  // A final stop id has no entry: it is not part of the text.
  const bool ends_at_stop_id = want.finish_reason == FinishReason::stop;
  ASSERT_EQ(got.logprobs.size(), want.ids.size() - (ends_at_stop_id ? 1 : 0));

  SessionOptions session_options;
  session_options.context_length = 128;
  session_options.n_threads = 1;
  Session session(model_, session_options);
  std::span<const float> step_logits = session.feed(r.prompt_ids);
  for (size_t i = 0; i < got.logprobs.size(); ++i) {
    const std::vector<float> logits(step_logits.begin(), step_logits.end());
    const double max_logit = *std::max_element(logits.begin(), logits.end());
    double total = 0;
    for (float l : logits) total += std::exp(l - max_logit);
    const double log_total = max_logit + std::log(total);
    std::vector<int32_t> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
    });

    const TokenLogprob& entry = got.logprobs[i];
    EXPECT_EQ(entry.id, want.ids[i]) << "token " << i;
    EXPECT_NEAR(entry.logprob, logits[static_cast<size_t>(entry.id)] - log_total, 1e-4);
    ASSERT_EQ(entry.top.size(), 3u);
    for (size_t k = 0; k < 3; ++k) {
      EXPECT_EQ(entry.top[k].first, order[k]) << "token " << i << ", alternative " << k;
      EXPECT_NEAR(entry.top[k].second, logits[static_cast<size_t>(order[k])] - log_total, 1e-4);
    }
    step_logits = session.feed(std::span(&want.ids[i], 1));
  }
}

TEST_F(BatchEngineTest, InvalidRequestsThrowAndZeroTokensFinishAtOnce) {
  BatchEngine engine(model_, *tokenizer_, options(1));
  EngineRequest empty = request("x", 5, 1);
  empty.prompt_ids.clear();
  EXPECT_THROW(engine.submit(empty), Error);
  EngineRequest too_long = request("x", 5, 1);
  too_long.prompt_ids.assign(128, 65);
  EXPECT_THROW(engine.submit(too_long), Error);
  EngineRequest bad_id = request("x", 5, 1);
  bad_id.prompt_ids.push_back(model_->config().vocab_size);
  EXPECT_THROW(engine.submit(bad_id), Error);
  EngineRequest too_many_alternatives = request("x", 5, 1);
  too_many_alternatives.logprobs = model_->config().vocab_size + 1;
  EXPECT_THROW(engine.submit(too_many_alternatives), Error);
  EngineRequest bad_stop = request("x", 5, 1);
  bad_stop.options.stop_strings = {""};
  EXPECT_THROW(engine.submit(bad_stop), Error);
  const auto none = engine.submit(request("Once", 0, 1)).stream->wait_all();
  EXPECT_EQ(none.text, "");
  EXPECT_EQ(none.generated_tokens, 0);
  EXPECT_EQ(none.finish_reason, FinishReason::length);
}

}  // namespace
}  // namespace bitnet
