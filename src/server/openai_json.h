#pragma once
// OpenAI API shapes: parsing /v1/chat/completions and /v1/completions bodies (with an
// OpenAI-style error for each problem) and building responses and stream chunks.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "bitnet/chat.h"
#include "bitnet/generate.h"
#include "bitnet/tokenizer.h"
#include "runtime/batch_engine.h"

namespace bitnet::server {

// Answered to the client as {"error": {"message", "type", "param", "code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string type = "invalid_request_error",
           std::string param = {}, std::string code = {})
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  nlohmann::json body() const;

  int status;
  std::string type, param, code;  // empty param / code are sent as null
};

nlohmann::json error_body(const std::string& message, const std::string& type,
                          const std::string& param = {}, const std::string& code = {});

enum class Endpoint { chat, completion };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::chat;
  std::string model;                  // as sent; empty when absent
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completion
  std::optional<int> max_tokens;
  SamplingParams sampling;  // the server's defaults with the request's overrides
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  // < 0: no log-probabilities; else that many alternatives per token (chat: logprobs with
  // top_logprobs; completions: logprobs).
  int logprobs = -1;
};

// Throws ApiError (400) naming the parameter at fault. `defaults` supplies the sampling
// parameters the request leaves out.
CompletionRequest parse_completion_request(Endpoint endpoint, const std::string& body,
                                           const SamplingParams& defaults);

// Identity shared by a response's body or all of its chunks.
struct ResponseIds {
  Endpoint endpoint;
  std::string id;  // chatcmpl-... / cmpl-...
  int64_t created;
  std::string model;
};
ResponseIds make_response_ids(Endpoint endpoint, const std::string& model);

const char* finish_reason_name(FinishReason reason);

// A choice's "logprobs" for these tokens: chat's {"content": [{token, logprob, bytes,
// top_logprobs}], "refusal": null}, or the completions API's parallel arrays (tokens,
// token_logprobs, top_logprobs).
nlohmann::json logprobs_json(Endpoint endpoint, std::span<const TokenLogprob> tokens,
                             const Tokenizer& tokenizer);

// The non-streaming body of a finished request: chat.completion or text_completion, its usage
// with the reused prompt tokens as prompt_tokens_details.cached_tokens. logprobs: the choice's
// (null when not asked for).
nlohmann::json completion_body(const ResponseIds& ids, const RequestStream::Update& finished,
                               const nlohmann::json& logprobs = nullptr);

// One stream event: chat.completion.chunk or text_completion. `role_delta` marks the chat
// stream's first chunk; with include_usage every chunk carries "usage": null until the last.
nlohmann::json stream_chunk(const ResponseIds& ids, const std::string& text, bool role_delta,
                            std::optional<FinishReason> finish, bool include_usage,
                            const nlohmann::json& logprobs = nullptr);
// The closing usage chunk of stream_options.include_usage: empty choices, filled usage.
nlohmann::json stream_usage_chunk(const ResponseIds& ids, const RequestStream::Update& finished);

// "data: <json>\n\n"
std::string sse_event(const nlohmann::json& event);
// Compact JSON; invalid UTF-8 (never expected) is replaced rather than thrown on.
std::string dump_json(const nlohmann::json& value);

}  // namespace bitnet::server
