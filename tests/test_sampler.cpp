// Sampler: greedy decoding, determinism per seed, the top-k / top-p / min-p filters, the
// repetition penalty, and SamplingParams validation.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "runtime/logits.h"

namespace bitnet {
namespace {

using ::testing::HasSubstr;

// Full sampling: no filter active.
SamplingParams plain(uint64_t seed = 1) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 0;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.repeat_penalty = 1.0f;
  p.seed = seed;
  return p;
}

SamplingParams greedy() {
  SamplingParams p = plain();
  p.temperature = 0.0f;
  return p;
}

std::vector<float> random_logits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> l(n);
  for (auto& v : l) v = d(rng);
  return l;
}

std::vector<int32_t> draws(const SamplingParams& p, const std::vector<float>& logits, int n) {
  Sampler s(p);
  std::vector<int32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(s.sample(logits, {}));
  return out;
}

TEST(Sampler, ArgmaxIsTheFirstLargestLikeMaxElement) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-50.0f, 50.0f);
  for (size_t n : {size_t{1}, size_t{7}, size_t{1000}, size_t{128256}}) {
    std::vector<float> x(n);
    for (float& v : x) v = u(rng);
    for (int trial = 0; trial < 3; ++trial) {
      if (trial == 1) x[n / 2] = x[n - 1] = 1e30f;  // a tie: the first wins
      if (trial == 2) std::fill(x.begin(), x.end(), -INFINITY), x[n - 1] = -1e-30f;
      EXPECT_EQ(argmax(x), std::max_element(x.begin(), x.end()) - x.begin()) << n << " " << trial;
    }
  }
  EXPECT_EQ(argmax(std::vector<float>{-1.0f, -0.0f, 0.0f}), 1);  // -0 and +0 tie
  EXPECT_EQ(argmax(std::vector<float>{-3.0f, -2.0f, -2.5f}), 1);
}

TEST(Sampler, TemperatureZeroIsArgmaxWithTiesToLowestId) {
  Sampler s(greedy());
  EXPECT_EQ(s.sample(std::vector<float>{1.0f, 5.0f, 5.0f, 2.0f}, {}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{-3.0f, -3.0f}, {}), 0);
  EXPECT_EQ(s.sample(std::vector<float>{0.0f, 0.0f, 7.0f}, {}), 2);
  EXPECT_EQ(s.sample(std::vector<float>{4.0f}, {}), 0);
  EXPECT_EQ(argmax(std::vector<float>{1.0f, 9.0f, 9.0f}), 1);
  const auto logits = random_logits(1000, 3);
  EXPECT_EQ(s.sample(logits, {}), argmax(logits));
}

TEST(Sampler, SameSeedSameSequence) {
  const auto logits = random_logits(50, 4);
  const auto a = draws(plain(42), logits, 200);
  EXPECT_EQ(a, draws(plain(42), logits, 200));
  EXPECT_NE(a, draws(plain(43), logits, 200));
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 5u);  // it really samples
}

TEST(Sampler, TopKOneIsArgmax) {
  SamplingParams p = plain(7);
  p.top_k = 1;
  p.temperature = 3.0f;
  const auto logits = random_logits(100, 5);
  for (int32_t id : draws(p, logits, 200)) ASSERT_EQ(id, argmax(logits));
  for (int32_t id : draws(p, {2.0f, 2.0f, 1.0f}, 50)) ASSERT_EQ(id, 0);  // tie: lowest id
}

TEST(Sampler, TinyTopPIsArgmax) {
  SamplingParams p = plain(8);
  p.top_p = 1e-6f;
  p.temperature = 2.0f;
  const auto logits = random_logits(100, 6);
  for (int32_t id : draws(p, logits, 200)) ASSERT_EQ(id, argmax(logits));
}

TEST(Sampler, MinPOneIsArgmax) {
  SamplingParams p = plain(9);
  p.min_p = 1.0f;
  p.temperature = 2.0f;
  const auto logits = random_logits(100, 7);
  for (int32_t id : draws(p, logits, 200)) ASSERT_EQ(id, argmax(logits));
}

TEST(Sampler, EmpiricalDistributionMatchesSoftmax) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f};
  std::vector<double> p(4);
  double sum = 0;
  for (size_t i = 0; i < 4; ++i) sum += p[i] = std::exp(double{logits[i]});
  const int n = 20000;
  std::vector<int> counts(4, 0);
  for (int32_t id : draws(plain(123), logits, n)) {
    ASSERT_GE(id, 0);
    ASSERT_LT(id, 4);
    ++counts[static_cast<size_t>(id)];
  }
  for (size_t i = 0; i < 4; ++i) {
    const double pi = p[i] / sum, mean = n * pi, sigma = std::sqrt(n * pi * (1 - pi));
    EXPECT_LE(std::fabs(counts[i] - mean), 3 * sigma) << "token " << i << ": " << counts[i];
  }
}

TEST(Sampler, TemperatureSharpensDistribution) {
  const std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f};
  SamplingParams p = plain(5);
  p.temperature = 0.25f;  // p(1) = 1 / (1 + e^-4 + e^-6 + e^-12) ~ 0.98
  int top = 0;
  for (int32_t id : draws(p, logits, 2000)) top += id == 1;
  EXPECT_GT(top, 1900);
}

TEST(Sampler, TopKTwoNeverReturnsLowerRanks) {
  SamplingParams p = plain(10);
  p.top_k = 2;
  p.temperature = 5.0f;  // flatten so low ranks would show up without the filter
  const std::vector<float> logits = {0.1f, 0.9f, 0.3f, 1.0f, -0.2f, 0.85f, 0.0f};
  std::set<int32_t> seen;
  for (int32_t id : draws(p, logits, 2000)) seen.insert(id);
  EXPECT_EQ(seen, (std::set<int32_t>{3, 1}));
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingMass) {
  // Probabilities 0.5, 0.3, 0.2 (in logits); top_p 0.75 keeps the first two.
  const std::vector<float> logits = {std::log(0.3f), std::log(0.2f), std::log(0.5f)};
  SamplingParams p = plain(11);
  p.top_p = 0.75f;
  std::set<int32_t> seen;
  for (int32_t id : draws(p, logits, 1000)) seen.insert(id);
  EXPECT_EQ(seen, (std::set<int32_t>{2, 0}));
}

TEST(Sampler, MinPDropsTokensBelowFraction) {
  const std::vector<float> logits = {std::log(0.3f), std::log(0.2f), std::log(0.5f)};
  SamplingParams p = plain(12);
  p.min_p = 0.5f;  // floor 0.25: drops the 0.2 token
  std::set<int32_t> seen;
  for (int32_t id : draws(p, logits, 1000)) seen.insert(id);
  EXPECT_EQ(seen, (std::set<int32_t>{2, 0}));
}

TEST(Sampler, RepetitionPenaltyChangesGreedyChoice) {
  SamplingParams p = greedy();
  p.repeat_penalty = 100.0f;
  const std::vector<float> logits = {5.0f, 4.9f, 1.0f};
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<int32_t>{0}), 1);
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<int32_t>{2}), 0);
  EXPECT_EQ(Sampler(p).sample(logits, {}), 0);
}

int greedy_with_penalty(float penalty, const std::vector<float>& logits,
                        const std::vector<int32_t>& history, int last_n = 64) {
  SamplingParams p = greedy();
  p.repeat_penalty = penalty;
  p.repeat_last_n = last_n;
  return Sampler(p).sample(logits, history);
}

TEST(Sampler, PositiveLogitsDividedNegativeMultiplied) {
  // Positive: 3 / 1.4 = 2.14 > 2 keeps id 0; 3 / 1.6 = 1.875 < 2 switches to id 1.
  EXPECT_EQ(greedy_with_penalty(1.4f, {3.0f, 2.0f}, {0}), 0);
  EXPECT_EQ(greedy_with_penalty(1.6f, {3.0f, 2.0f}, {0}), 1);
  // Negative: -1 * 1.4 = -1.4 > -1.5 keeps id 0; -1 * 1.6 = -1.6 < -1.5 switches.
  // (Dividing a negative logit would raise it and never switch.)
  EXPECT_EQ(greedy_with_penalty(1.4f, {-1.0f, -1.5f, -10.0f}, {0}), 0);
  EXPECT_EQ(greedy_with_penalty(1.6f, {-1.0f, -1.5f, -10.0f}, {0}), 1);
  // A penalty below 1 rewards repeats: 2 / 0.5 = 4 > 3.
  EXPECT_EQ(greedy_with_penalty(0.5f, {3.0f, 2.0f}, {1}), 1);
}

TEST(Sampler, RepeatedHistoryIdPenalizedOnce) {
  // Applied three times, 3 / 1.4^3 = 1.09 would fall below 2.
  EXPECT_EQ(greedy_with_penalty(1.4f, {3.0f, 2.0f}, {0, 0, 0}), 0);
}

TEST(Sampler, RepeatLastNLimitsTheWindow) {
  const std::vector<float> logits = {3.0f, 2.0f, -100.0f};
  const std::vector<int32_t> history = {0, 2, 2, 2};
  EXPECT_EQ(greedy_with_penalty(100.0f, logits, history, 3), 0);  // id 0 is outside the window
  EXPECT_EQ(greedy_with_penalty(100.0f, logits, history, 4), 1);
  EXPECT_EQ(greedy_with_penalty(100.0f, logits, history, 1000), 1);
  EXPECT_EQ(greedy_with_penalty(100.0f, logits, history, 0), 0);  // 0 disables
}

TEST(Sampler, OutOfRangeHistoryIdsAreIgnored) {
  EXPECT_EQ(greedy_with_penalty(100.0f, {3.0f, 2.0f}, {-1, 2, 1000000}), 0);
}

int greedy_with_penalties(float presence, float frequency, const std::vector<float>& logits,
                          const std::vector<int32_t>& history, float repeat = 1.0f) {
  SamplingParams p = greedy();
  p.presence_penalty = presence;
  p.frequency_penalty = frequency;
  p.repeat_penalty = repeat;
  EXPECT_FALSE(p.greedy());
  return Sampler(p).sample(logits, history);
}

TEST(Sampler, PresencePenaltyOncePerIdFrequencyPenaltyPerOccurrence) {
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f};
  const std::vector<int32_t> twice = {0, 0};
  EXPECT_EQ(greedy_with_penalties(0.9f, 0, logits, twice), 0);     // 3 - 0.9 = 2.1
  EXPECT_EQ(greedy_with_penalties(1.1f, 0, logits, twice), 1);     // 1.9
  EXPECT_EQ(greedy_with_penalties(0, 0.4f, logits, twice), 0);     // 3 - 2 * 0.4 = 2.2
  EXPECT_EQ(greedy_with_penalties(0, 0.6f, logits, twice), 1);     // 1.8
  EXPECT_EQ(greedy_with_penalties(0.3f, 0.3f, logits, twice), 0);  // 3 - 0.6 - 0.3 = 2.1
  EXPECT_EQ(greedy_with_penalties(0.5f, 0.3f, logits, twice), 1);  // 1.9
  // Negative values reward repeats: 2 + 2 * 0.6 = 3.2 > 3.
  EXPECT_EQ(greedy_with_penalties(0, -0.6f, logits, {1, 1}), 1);
  // After the repeat penalty, as llama.cpp: 3 / 1.2 - 0.55 = 1.95 (before it: 2.04).
  EXPECT_EQ(greedy_with_penalties(0.55f, 0, logits, {0}, 1.2f), 1);
}

TEST(Sampler, PresenceAndFrequencyPenaltiesUseTheRepeatWindow) {
  SamplingParams p = greedy();
  p.presence_penalty = 2.0f;
  const std::vector<float> logits = {3.0f, 2.0f, 0.0f};
  const std::vector<int32_t> history = {0, 2, 2};
  p.repeat_last_n = 2;
  EXPECT_EQ(Sampler(p).sample(logits, history), 0);  // id 0 is outside the window
  p.repeat_last_n = 3;
  EXPECT_EQ(Sampler(p).sample(logits, history), 1);
  p.repeat_last_n = 0;
  EXPECT_TRUE(p.greedy());
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<int32_t>{0}), 0);
}

TEST(Sampler, LogitBiasIsAddedBeforeThePenalties) {
  SamplingParams p = greedy();
  const std::vector<float> logits = {3.0f, 2.0f, 1.0f};
  p.logit_bias = {{1, 1.5f}};
  EXPECT_FALSE(p.greedy());
  EXPECT_EQ(Sampler(p).sample(logits, {}), 1);  // 2 + 1.5 > 3
  p.logit_bias = {{0, -100.0f}, {1, -100.0f}};
  EXPECT_EQ(Sampler(p).sample(logits, {}), 2);
  // Biased first, then penalized: (2 + 4) / 2 = 3 ties id 0's 3, and the lower id wins;
  // penalized first, 2 / 2 + 4 = 5 would win.
  p.logit_bias = {{1, 4.0f}};
  p.repeat_penalty = 2.0f;
  EXPECT_EQ(Sampler(p).sample(logits, std::vector<int32_t>{1}), 0);
}

TEST(Sampler, PenaltyAppliesBeforeSampling) {
  SamplingParams p = plain(13);
  p.repeat_penalty = 1000.0f;
  p.temperature = 0.1f;  // id 0: 10 / 1000 / 0.1 = 0.1 against id 1: 9 / 0.1 = 90
  const std::vector<float> logits = {10.0f, 9.0f};
  Sampler s(p);
  for (int i = 0; i < 100; ++i) ASSERT_EQ(s.sample(logits, std::vector<int32_t>{0}), 1);
}

std::string validate_error(const SamplingParams& p) {
  try {
    p.validate();
  } catch (const Error& e) {
    EXPECT_THROW(Sampler{p}, Error);
    return e.what();
  }
  ADD_FAILURE() << "expected bitnet::Error";
  return "";
}

TEST(SamplingParams, ValidateRejectsOutOfRange) {
  SamplingParams p;
  EXPECT_NO_THROW(p.validate());
  p.temperature = -1.0f;
  EXPECT_THAT(validate_error(p), HasSubstr("temperature"));
  p.temperature = NAN;
  EXPECT_THAT(validate_error(p), HasSubstr("temperature"));
  p = SamplingParams{};
  p.top_p = 0.0f;
  EXPECT_THAT(validate_error(p), HasSubstr("top_p"));
  p.top_p = 1.5f;
  EXPECT_THAT(validate_error(p), HasSubstr("top_p"));
  p.top_p = NAN;
  EXPECT_THAT(validate_error(p), HasSubstr("top_p"));
  p = SamplingParams{};
  p.min_p = -0.1f;
  EXPECT_THAT(validate_error(p), HasSubstr("min_p"));
  p = SamplingParams{};
  p.repeat_penalty = 0.0f;
  EXPECT_THAT(validate_error(p), HasSubstr("repeat_penalty"));
  p.repeat_penalty = -2.0f;
  EXPECT_THAT(validate_error(p), HasSubstr("repeat_penalty"));
  p = SamplingParams{};
  p.presence_penalty = NAN;
  EXPECT_THAT(validate_error(p), HasSubstr("presence_penalty"));
  p = SamplingParams{};
  p.frequency_penalty = INFINITY;
  EXPECT_THAT(validate_error(p), HasSubstr("frequency_penalty"));
  p = SamplingParams{};
  p.logit_bias = {{-1, 1.0f}};
  EXPECT_THAT(validate_error(p), HasSubstr("logit_bias"));
  p.logit_bias = {{3, NAN}};
  EXPECT_THAT(validate_error(p), HasSubstr("logit_bias"));
  p.logit_bias = {{3, 1.0f}};
  EXPECT_NO_THROW(p.validate(4));
  EXPECT_THROW(p.validate(3), Error);
  p = SamplingParams{};
  p.repeat_last_n = -1;
  EXPECT_THAT(validate_error(p), HasSubstr("repeat_last_n"));
}

TEST(SamplingParams, BoundaryValuesAreValid) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.top_p = 1.0f;
  p.min_p = 0.0f;
  p.top_k = 0;
  p.repeat_last_n = 0;
  EXPECT_NO_THROW(p.validate());
  p.min_p = 1.0f;
  p.top_k = -5;
  EXPECT_NO_THROW(p.validate());
}

// Dividing logits by a tiny temperature overflows to inf; the sampler must still pick the argmax.
// The candidate order by std::sort / std::partial_sort with the comparator it stands for.
std::vector<int32_t> sorted_candidates(const std::vector<float>& logits, size_t k) {
  std::vector<int32_t> ids(logits.size());
  std::iota(ids.begin(), ids.end(), 0);
  auto higher = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  k = std::min(k, ids.size());
  std::partial_sort(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(k), ids.end(), higher);
  ids.resize(k);
  return ids;
}

TEST(LogSumExp, StaysFiniteForLargeLogits) {
  EXPECT_DOUBLE_EQ(log_sum_exp(std::vector<float>{0.0f, 0.0f}), std::log(2.0));
  EXPECT_DOUBLE_EQ(log_sum_exp(std::vector<float>{1000.0f, 1000.0f}), 1000.0 + std::log(2.0));
  EXPECT_NEAR(log_sum_exp(std::vector<float>{-1000.0f, 0.0f, -1000.0f}), 0.0, 1e-12);
  EXPECT_EQ(log_sum_exp(std::vector<float>{}), -INFINITY);
}

TEST(TopCandidates, MatchesASortWithTiesToTheLowerId) {
  std::mt19937 rng(17);
  for (size_t n : {1, 5, 63, 64, 65, 130, 1000, 128256}) {
    // Coarse values make many ties; signed zeros tie with each other.
    std::vector<float> logits = random_logits(n, static_cast<uint32_t>(n));
    for (float& v : logits) v = std::round(v * 2.0f) / 2.0f;
    for (size_t i = 0; i < n; i += 7) logits[i] = i % 2 ? -0.0f : 0.0f;
    if (n > 100) logits[n - 1] = 100.0f;  // the best candidate last: found after many skips
    for (size_t k : {size_t{1}, size_t{2}, size_t{40}, size_t{64}, size_t{65}, n - 1, n, n + 5}) {
      if (k == 0) continue;
      std::vector<int32_t> got;
      top_candidates(logits, k, got);
      ASSERT_EQ(got, sorted_candidates(logits, k)) << "n " << n << " k " << k;
    }
  }
  // Logits one ulp apart, the larger ones spread over late chunks.
  std::vector<float> close(20000, 1.0f);
  for (size_t i = 500; i < close.size(); i += 997) close[i] = std::nextafter(1.0f, 2.0f);
  for (size_t i = 0; i < close.size(); i += 53) close[i] = std::nextafter(1.0f, 0.0f);
  for (size_t k : {1, 5, 40, 100}) {
    std::vector<int32_t> got;
    top_candidates(close, k, got);
    ASSERT_EQ(got, sorted_candidates(close, k)) << "one ulp apart, k " << k;
  }
  std::vector<int32_t> got = {1, 2};
  top_candidates(std::vector<float>{1.0f, 2.0f}, 0, got);
  EXPECT_TRUE(got.empty());
}

TEST(Sampler, TinyTemperatureBehavesLikeGreedy) {
  SamplingParams p = plain(1);
  p.temperature = 1e-37f;
  ASSERT_NO_THROW(p.validate());
  for (int32_t id : draws(p, {10.0f, 50.0f, 20.0f}, 20)) ASSERT_EQ(id, 1);
}

}  // namespace
}  // namespace bitnet
