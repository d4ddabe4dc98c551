#include "server/openai_json.h"

#include <charconv>
#include <chrono>
#include <cmath>
#include <random>
#include <system_error>

namespace bitnet::server {
namespace {

using nlohmann::json;

json null_if_empty(const std::string& s) {
  return s.empty() ? json(nullptr) : json(s);
}

[[noreturn]] void invalid_type(const std::string& param, const std::string& expected) {
  throw ApiError(400, "'" + param + "' must be " + expected, "invalid_request_error", param,
                 "invalid_type");
}

[[noreturn]] void invalid_value(const std::string& param, const std::string& what) {
  throw ApiError(400, "'" + param + "' " + what, "invalid_request_error", param, "invalid_value");
}

// A field that is absent or null counts as not given, as in OpenAI's API.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number_field(const json& body, const char* name, double low, double high) {
  const json* v = field(body, name);
  if (!v->is_number()) invalid_type(name, "a number");
  const double x = v->get<double>();
  if (!(x >= low && x <= high)) {
    invalid_value(name, "must be between " + json(low).dump() + " and " + json(high).dump());
  }
  return x;
}

int64_t integer_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v->is_number_integer()) invalid_type(name, "an integer");
  return v->get<int64_t>();
}

bool bool_field(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v->is_boolean()) invalid_type(name, "a boolean");
  return v->get<bool>();
}

// Content is a string or an array of {"type": "text", "text": ...} parts.
std::string message_content(const json& content, const std::string& param) {
  if (content.is_null()) return {};
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) invalid_type(param, "a string or an array of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") ||
        !part["text"].is_string()) {
      invalid_value(param, "may only contain {\"type\": \"text\", \"text\": string} parts");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (!messages) {
    throw ApiError(400, "'messages' is required", "invalid_request_error", "messages",
                   "missing_required_parameter");
  }
  if (!messages->is_array()) invalid_type("messages", "an array");
  if (messages->empty()) invalid_value("messages", "must not be empty");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) invalid_type(at, "an object");
    if (!m.contains("role") || !m["role"].is_string()) invalid_type(at + ".role", "a string");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // newer clients' name for the system role
    if (role != "system" && role != "user" && role != "assistant") {
      invalid_value(at + ".role", "must be system, user or assistant");
    }
    out.push_back({role, message_content(m.value("content", json()), at + ".content")});
  }
  return out;
}

std::string parse_prompt(const json& body) {
  const json* prompt = field(body, "prompt");
  if (!prompt) {
    throw ApiError(400, "'prompt' is required", "invalid_request_error", "prompt",
                   "missing_required_parameter");
  }
  if (prompt->is_string()) return prompt->get<std::string>();
  if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
    return (*prompt)[0].get<std::string>();
  }
  invalid_type("prompt", "a string (or an array of one string)");
}

std::vector<std::string> parse_stop(const json& body) {
  const json* stop = field(body, "stop");
  if (!stop) return {};
  std::vector<std::string> out;
  if (stop->is_string()) {
    out.push_back(stop->get<std::string>());
  } else if (stop->is_array()) {
    if (stop->size() > 4) invalid_value("stop", "may hold at most 4 sequences");
    for (const json& s : *stop) {
      if (!s.is_string()) invalid_type("stop", "a string or an array of strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    invalid_type("stop", "a string or an array of strings");
  }
  for (const std::string& s : out) {
    if (s.empty()) invalid_value("stop", "must not contain empty strings");
  }
  return out;
}

// Chat: logprobs (a boolean) with top_logprobs (0-20 alternatives); completions: logprobs as
// the number of alternatives (0-5), as OpenAI's two APIs take them. -1: none asked for.
int parse_logprobs(Endpoint endpoint, const json& body) {
  if (endpoint == Endpoint::completion) {
    if (!field(body, "logprobs")) return -1;
    const int64_t n = integer_field(body, "logprobs");
    if (n < 0 || n > 5) invalid_value("logprobs", "must be between 0 and 5");
    return static_cast<int>(n);
  }
  const bool wanted = field(body, "logprobs") && bool_field(body, "logprobs");
  if (!field(body, "top_logprobs")) return wanted ? 0 : -1;
  const int64_t n = integer_field(body, "top_logprobs");
  if (n < 0 || n > 20) invalid_value("top_logprobs", "must be between 0 and 20");
  if (!wanted) invalid_value("top_logprobs", "needs 'logprobs': true");
  return static_cast<int>(n);
}

// {"token id": bias}, ids as decimal strings and biases in [-100, 100], as OpenAI takes them.
std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& body) {
  const json* bias = field(body, "logit_bias");
  if (!bias) return {};
  if (!bias->is_object()) invalid_type("logit_bias", "an object of token ids to numbers");
  if (bias->size() > 1024) invalid_value("logit_bias", "may hold at most 1024 tokens");
  std::vector<std::pair<int32_t, float>> out;
  for (const auto& [key, value] : bias->items()) {
    int32_t id = -1;
    const auto [end, error] = std::from_chars(key.data(), key.data() + key.size(), id);
    // Canonical decimal only, so that "5" and "05" cannot bias one token twice.
    if (error != std::errc() || end != key.data() + key.size() || id < 0 ||
        key != std::to_string(id))
      invalid_value("logit_bias", "keys must be token ids, got '" + key + "'");
    if (!value.is_number()) invalid_type("logit_bias", "an object of token ids to numbers");
    const double b = value.get<double>();
    if (!(b >= -100 && b <= 100))
      invalid_value("logit_bias", "biases must be between -100 and 100");
    out.emplace_back(id, static_cast<float>(b));
  }
  return out;
}

// Parameters whose effect this server cannot give are refused, not ignored, unless they hold
// the value that asks for nothing.
void refuse_unsupported(const json& body) {
  auto refuse = [](const char* name, const std::string& why) {
    throw ApiError(400, "'" + std::string(name) + "' is not supported: " + why,
                   "invalid_request_error", name, "unsupported_parameter");
  };
  for (const char* name : {"tools", "functions"}) {
    const json* v = field(body, name);
    if (v && !(v->is_array() && v->empty())) refuse(name, "this server does not call tools");
  }
  if (const json* v = field(body, "tool_choice"); v && *v != "none" && *v != "auto")
    refuse("tool_choice", "this server does not call tools");
  if (const json* v = field(body, "response_format");
      v && !(v->is_object() && v->contains("type") && (*v)["type"] == "text")) {
    refuse("response_format", "replies are plain text");
  }
  if (const json* v = field(body, "echo"); v && *v != false)
    refuse("echo", "the prompt is not returned with the completion");
  if (const json* v = field(body, "suffix"); v && *v != "")
    refuse("suffix", "completions do not insert before a suffix");
  if (const json* v = field(body, "best_of"); v && *v != 1)
    refuse("best_of", "each request makes one completion");
}

std::string random_id(const char* prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::string id = prefix;
  for (int i = 0; i < 24; ++i) id += kAlphabet[rng() % (sizeof(kAlphabet) - 1)];
  return id;
}

}  // namespace

json error_body(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", null_if_empty(param)},
            {"code", null_if_empty(code)}}}};
}

json ApiError::body() const {
  return error_body(what(), type, param, code);
}

CompletionRequest parse_completion_request(Endpoint endpoint, const std::string& body_text,
                                           const SamplingParams& defaults) {
  json body = json::parse(body_text, nullptr, false);
  if (body.is_discarded()) {
    throw ApiError(400, "the request body is not valid JSON", "invalid_request_error", {},
                   "invalid_json");
  }
  if (!body.is_object()) {
    throw ApiError(400, "the request body must be a JSON object", "invalid_request_error", {},
                   "invalid_json");
  }
  CompletionRequest r;
  r.endpoint = endpoint;
  r.sampling = defaults;
  if (const json* model = field(body, "model")) {
    if (!model->is_string()) invalid_type("model", "a string");
    r.model = model->get<std::string>();
  }
  if (endpoint == Endpoint::chat) {
    r.messages = parse_messages(body);
  } else {
    r.prompt = parse_prompt(body);
  }
  // Chat clients may send the newer max_completion_tokens instead.
  for (const char* name : {"max_tokens", "max_completion_tokens"}) {
    if (!field(body, name)) continue;
    const int64_t n = integer_field(body, name);
    if (n < 1 || n > 1'000'000'000) invalid_value(name, "must be a positive integer");
    r.max_tokens = static_cast<int>(n);
  }
  if (field(body, "temperature"))
    r.sampling.temperature = static_cast<float>(number_field(body, "temperature", 0.0, 2.0));
  if (field(body, "top_p")) {
    const double top_p = number_field(body, "top_p", 0.0, 1.0);
    if (top_p == 0.0) invalid_value("top_p", "must be greater than 0");
    r.sampling.top_p = static_cast<float>(top_p);
  }
  if (field(body, "presence_penalty")) {
    r.sampling.presence_penalty =
        static_cast<float>(number_field(body, "presence_penalty", -2.0, 2.0));
  }
  if (field(body, "frequency_penalty")) {
    r.sampling.frequency_penalty =
        static_cast<float>(number_field(body, "frequency_penalty", -2.0, 2.0));
  }
  // llama.cpp's extensions.
  if (field(body, "repeat_penalty")) {
    const double penalty = number_field(body, "repeat_penalty", 0.0, 100.0);
    if (penalty == 0.0) invalid_value("repeat_penalty", "must be greater than 0");
    r.sampling.repeat_penalty = static_cast<float>(penalty);
  }
  if (field(body, "repeat_last_n")) {
    const int64_t n = integer_field(body, "repeat_last_n");
    if (n < 0 || n > 1'000'000) invalid_value("repeat_last_n", "must be >= 0");
    r.sampling.repeat_last_n = static_cast<int>(n);
  }
  if (field(body, "top_k")) {
    const int64_t k = integer_field(body, "top_k");
    if (k < 0 || k > 1'000'000) invalid_value("top_k", "must be >= 0");
    r.sampling.top_k = static_cast<int>(k);
  }
  if (field(body, "min_p"))
    r.sampling.min_p = static_cast<float>(number_field(body, "min_p", 0.0, 1.0));
  if (field(body, "seed")) {
    r.sampling.seed = static_cast<uint64_t>(integer_field(body, "seed"));
    r.seed_given = true;
  }
  if (field(body, "n") && integer_field(body, "n") != 1) invalid_value("n", "must be 1");
  r.logprobs = parse_logprobs(endpoint, body);
  r.sampling.logit_bias = parse_logit_bias(body);
  refuse_unsupported(body);
  r.stop = parse_stop(body);
  if (field(body, "stream")) r.stream = bool_field(body, "stream");
  if (const json* options = field(body, "stream_options")) {
    if (!options->is_object()) invalid_type("stream_options", "an object");
    if (field(*options, "include_usage")) {
      if (!(*options)["include_usage"].is_boolean())
        invalid_type("stream_options.include_usage", "a boolean");
      r.include_usage = (*options)["include_usage"].get<bool>();
    }
  }
  return r;
}

ResponseIds make_response_ids(Endpoint endpoint, const std::string& model) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  return {endpoint, random_id(endpoint == Endpoint::chat ? "chatcmpl-" : "cmpl-"),
          std::chrono::duration_cast<std::chrono::seconds>(now).count(), model};
}

const char* finish_reason_name(FinishReason reason) {
  return reason == FinishReason::stop ? "stop" : "length";
}

static json usage_json(const RequestStream::Update& finished) {
  return {{"prompt_tokens", finished.prompt_tokens},
          {"completion_tokens", finished.generated_tokens},
          {"total_tokens", finished.prompt_tokens + finished.generated_tokens},
          {"prompt_tokens_details", {{"cached_tokens", finished.cached_prompt_tokens}}}};
}

static json envelope(const ResponseIds& ids, const char* object) {
  return {{"id", ids.id}, {"object", object}, {"created", ids.created}, {"model", ids.model}};
}

json logprobs_json(Endpoint endpoint, std::span<const TokenLogprob> tokens,
                   const Tokenizer& tokenizer) {
  auto bytes_of = [&](int32_t id) {
    const std::string& bytes = tokenizer.token_bytes(id);
    json out = json::array();
    for (unsigned char c : bytes) out.push_back(c);
    return out;
  };
  if (endpoint == Endpoint::chat) {
    json content = json::array();
    for (const TokenLogprob& t : tokens) {
      json top = json::array();
      for (const auto& [id, logprob] : t.top) {
        top.push_back(
            {{"token", tokenizer.token_bytes(id)}, {"logprob", logprob}, {"bytes", bytes_of(id)}});
      }
      content.push_back({{"token", tokenizer.token_bytes(t.id)},
                         {"logprob", t.logprob},
                         {"bytes", bytes_of(t.id)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}, {"refusal", nullptr}};
  }
  json token_texts = json::array(), token_logprobs = json::array(), top_logprobs = json::array();
  for (const TokenLogprob& t : tokens) {
    token_texts.push_back(tokenizer.token_bytes(t.id));
    token_logprobs.push_back(t.logprob);
    json top = json::object();
    for (const auto& [id, logprob] : t.top) top[tokenizer.token_bytes(id)] = logprob;
    top_logprobs.push_back(top);
  }
  return {
      {"tokens", token_texts}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}};
}

json completion_body(const ResponseIds& ids, const RequestStream::Update& finished,
                     const json& logprobs) {
  const bool chat = ids.endpoint == Endpoint::chat;
  json choice = {{"index", 0},
                 {"logprobs", logprobs},
                 {"finish_reason", finish_reason_name(finished.finish_reason)}};
  if (chat) {
    choice["message"] = {{"role", "assistant"}, {"content", finished.text}};
  } else {
    choice["text"] = finished.text;
  }
  json out = envelope(ids, chat ? "chat.completion" : "text_completion");
  out["choices"] = json::array({choice});
  out["usage"] = usage_json(finished);
  return out;
}

json stream_chunk(const ResponseIds& ids, const std::string& text, bool role_delta,
                  std::optional<FinishReason> finish, bool include_usage, const json& logprobs) {
  const bool chat = ids.endpoint == Endpoint::chat;
  json choice = {{"index", 0},
                 {"logprobs", logprobs},
                 {"finish_reason", finish ? json(finish_reason_name(*finish)) : json(nullptr)}};
  if (chat) {
    json delta = json::object();
    if (role_delta) delta["role"] = "assistant";
    if (!text.empty() || role_delta) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  json out = envelope(ids, chat ? "chat.completion.chunk" : "text_completion");
  out["choices"] = json::array({choice});
  if (include_usage) out["usage"] = nullptr;
  return out;
}

json stream_usage_chunk(const ResponseIds& ids, const RequestStream::Update& finished) {
  json out =
      envelope(ids, ids.endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion");
  out["choices"] = json::array();
  out["usage"] = usage_json(finished);
  return out;
}

std::string dump_json(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_event(const json& event) {
  return "data: " + dump_json(event) + "\n\n";
}

}  // namespace bitnet::server
