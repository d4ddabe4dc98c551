#pragma once
// Sampling and the generation loop.

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "bitnet/session.h"
#include "bitnet/tokenizer.h"

namespace bitnet {

// Defaults follow llama.cpp. temperature <= 0 is greedy (argmax, ties to the lowest id).
struct SamplingParams {
  float temperature = 0.8f;
  int top_k = 40;               // <= 0 disables
  float top_p = 0.95f;          // >= 1 disables
  float min_p = 0.05f;          // <= 0 disables
  float repeat_penalty = 1.0f;  // 1 disables; transformers' rule: logit > 0 ? l / p : l * p
  // OpenAI's penalties, over the same window as llama.cpp's: an id seen c times there loses
  // c * frequency_penalty + presence_penalty from its logit (after the repeat penalty).
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int repeat_last_n = 64;  // tokens of history the penalties look at
  // Added to these ids' logits before everything else (OpenAI's logit_bias).
  std::vector<std::pair<int32_t, float>> logit_bias;
  uint64_t seed = 0;

  // Throws bitnet::Error naming the parameter when out of range; with vocab_size > 0, also for
  // logit_bias ids outside the vocabulary.
  void validate(int32_t vocab_size = 0) const;
  // Any penalty that changes logits.
  bool penalized() const {
    return repeat_last_n > 0 &&
           (repeat_penalty != 1.0f || presence_penalty != 0.0f || frequency_penalty != 0.0f);
  }
  // Plain argmax: temperature 0, no penalty and no bias.
  bool greedy() const { return temperature <= 0 && !penalized() && logit_bias.empty(); }
};

// Applies the logit bias, then in transformers' order: repetition penalty (with the presence and
// frequency penalties), temperature, top-k, top-p, min-p.
class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;
  std::vector<int32_t> ids_;
};

int32_t argmax(std::span<const float> logits);

enum class FinishReason { stop, length };

struct GenerateOptions {
  int max_new_tokens = 128;
  SamplingParams sampling;
  std::vector<int32_t> stop_ids;          // usually the model's end ids
  std::vector<std::string> stop_strings;  // text is cut before the first match
};

struct GenerateResult {
  std::vector<int32_t> prompt_ids;
  std::vector<int32_t> ids;  // generated, including a final stop id if one ended generation
  std::string text;          // generated text, stop ids and stop strings excluded
  FinishReason finish_reason = FinishReason::length;
  double prompt_seconds = 0, gen_seconds = 0;
  int gen_tokens_timed =
      0;  // tokens decoded after the first (the first comes from the prompt pass)
};

// Feeds the prompt (after whatever the session already holds), then samples up to
// max_new_tokens. on_text receives complete UTF-8 pieces as they become final (held back while
// they could still be the start of a stop string); returning false stops generation.
GenerateResult generate(Session& session, const Tokenizer& tokenizer,
                        std::span<const int32_t> prompt_ids, const GenerateOptions& options,
                        const std::function<bool(const std::string&)>& on_text = {});

// The ids that end generation for this model: config eos ids plus <|eot_id|> / <|end_of_text|>
// when the tokenizer has them.
std::vector<int32_t> default_stop_ids(const ModelConfig& config, const Tokenizer& tokenizer);

}  // namespace bitnet
