#include <algorithm>
#include <chrono>

#include "bitnet/error.h"
#include "bitnet/generate.h"
#include "runtime/stop_strings.h"

namespace bitnet {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

std::vector<int32_t> default_stop_ids(const ModelConfig& config, const Tokenizer& tokenizer) {
  std::vector<int32_t> ids = config.eos_token_ids;
  for (const char* name : {"<|eot_id|>", "<|end_of_text|>"}) {
    if (auto id = tokenizer.token_id(name)) ids.push_back(*id);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  return ids;
}

GenerateResult generate(Session& session, const Tokenizer& tokenizer,
                        std::span<const int32_t> prompt_ids, const GenerateOptions& options,
                        const std::function<bool(const std::string&)>& on_text) {
  if (prompt_ids.empty()) throw Error("the prompt is empty: nothing to generate from");
  if (options.max_new_tokens < 0) throw Error("max_new_tokens must be >= 0");
  options.sampling.validate(session.model().config().vocab_size);
  for (const std::string& s : options.stop_strings) {
    if (s.empty()) throw Error("stop strings must not be empty");
  }
  Sampler sampler(options.sampling);
  GenerateResult result;
  result.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());

  std::vector<int32_t> history(prompt_ids.begin(), prompt_ids.end());
  // Greedy decoding asks the session for the next id alone (on a GPU the logits stay there).
  const bool greedy = options.sampling.greedy();
  std::span<const float> logits;
  int32_t greedy_next = 0;
  auto run = [&](std::span<const int32_t> tokens) {
    if (greedy) {
      greedy_next = session.feed_greedy(tokens);
    } else {
      logits = session.feed(tokens);
    }
  };
  auto start = Clock::now();
  run(prompt_ids);
  result.prompt_seconds = seconds_since(start);

  TokenStreamDecoder decoder(tokenizer);
  size_t emitted = 0;  // bytes of result.text already handed to on_text
  bool cancelled = false;
  bool cut_at_stop_string = false;
  auto emit_up_to = [&](size_t end) {
    if (end > emitted && on_text && !cancelled)
      cancelled = !on_text(result.text.substr(emitted, end - emitted));
    emitted = std::max(emitted, end);
  };

  start = Clock::now();
  while (static_cast<int>(result.ids.size()) < options.max_new_tokens && !cancelled) {
    const int32_t id = greedy ? greedy_next : sampler.sample(logits, history);
    result.ids.push_back(id);
    history.push_back(id);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), id) != options.stop_ids.end()) {
      result.finish_reason = FinishReason::stop;
      break;
    }
    result.text += decoder.push(id);
    size_t stop_at = std::string::npos;
    for (const std::string& s : options.stop_strings) {
      const size_t from = emitted >= s.size() ? emitted - s.size() + 1 : 0;
      stop_at = std::min(stop_at, result.text.find(s, from));
    }
    if (stop_at != std::string::npos) {
      result.text.resize(stop_at);
      result.finish_reason = FinishReason::stop;
      cut_at_stop_string = true;
      break;
    }
    emit_up_to(result.text.size() - stop_prefix_overlap(result.text, options.stop_strings));
    if (static_cast<int>(result.ids.size()) == options.max_new_tokens) break;
    if (session.position() >= session.context_length()) break;  // context full: finish as length
    run(std::span<const int32_t>(&id, 1));
    ++result.gen_tokens_timed;
  }
  if (!cut_at_stop_string) result.text += decoder.flush();
  emit_up_to(result.text.size());
  result.gen_seconds = seconds_since(start);
  return result;
}

}  // namespace bitnet
