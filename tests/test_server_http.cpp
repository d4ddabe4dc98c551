// bitnet serve's HTTP API in-process: OpenAI shapes for chat and text completions (plain and
// streamed), models, health, metrics, CORS, the API key, and a 4xx error object for each kind of
// bad request.

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "server/sse_client.h"
#include "server_fixture.h"

namespace bitnet {
namespace {

using nlohmann::json;
using test::http_get;
using test::http_post;

class ServerHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = std::make_unique<test::RunningServer>(test::server_options(test::tiny_model()));
    ASSERT_TRUE(server_->server().ready()) << server_->server().load_error().value_or("");
  }
  static void TearDownTestSuite() { server_.reset(); }
  static int port() { return server_->port(); }

  static inline std::unique_ptr<test::RunningServer> server_;
};

TEST_F(ServerHttpTest, HealthModelsAndCors) {
  const auto health = http_get(port(), "/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.json()["status"], "ok");
  EXPECT_EQ(health.header("Access-Control-Allow-Origin"), "*");
  EXPECT_EQ(health.header("X-Bitnet-Replica"), "127.0.0.1:" + std::to_string(port()));

  const auto models = http_get(port(), "/v1/models").json();
  EXPECT_EQ(models["object"], "list");
  ASSERT_EQ(models["data"].size(), 1u);
  EXPECT_EQ(models["data"][0]["id"], "server_tiny");
  EXPECT_EQ(models["data"][0]["object"], "model");

  httplib::Client client("127.0.0.1", port());
  auto preflight =
      client.Options("/v1/chat/completions",
                     {{"Origin", "http://example.com"}, {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(preflight);
  EXPECT_EQ(preflight->status, 204);
  EXPECT_EQ(preflight->get_header_value("Access-Control-Allow-Origin"), "*");
  EXPECT_NE(preflight->get_header_value("Access-Control-Allow-Headers").find("Authorization"),
            std::string::npos);
}

TEST_F(ServerHttpTest, ChatCompletionMatchesLoneGeneration) {
  const json body = {{"model", "server_tiny"},
                     {"messages",
                      {{{"role", "system"}, {"content", "Be brief."}},
                       {{"role", "user"}, {"content", "Hello there"}}}},
                     {"max_tokens", 12},
                     {"temperature", 0.9},
                     {"seed", 11}};
  const auto reply = http_post(port(), "/v1/chat/completions", body.dump());
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json r = reply.json();
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["model"], "server_tiny");
  EXPECT_EQ(r["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  ASSERT_EQ(r["choices"].size(), 1u);
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");

  const auto model = Model::load(test::tiny_model());
  const Tokenizer tokenizer = Tokenizer::load(test::tiny_model());
  // BitNet 2B-4T's format, which the test tokenizer's chat_template is.
  const auto prompt = tokenizer.encode(
      "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hello there<|eot_id|>Assistant: ", false);
  GenerateOptions options;
  options.max_new_tokens = 12;
  options.sampling.temperature = 0.9f;
  options.sampling.seed = 11;
  options.stop_ids = default_stop_ids(model->config(), tokenizer);
  const GenerateResult want = test::lone_generate(model, tokenizer, prompt, options, 128);
  EXPECT_EQ(r["choices"][0]["message"]["content"], want.text);
  EXPECT_EQ(r["choices"][0]["finish_reason"],
            want.finish_reason == FinishReason::stop ? "stop" : "length");
  EXPECT_EQ(r["usage"]["prompt_tokens"], prompt.size());
  EXPECT_EQ(r["usage"]["completion_tokens"], want.ids.size());
  EXPECT_EQ(r["usage"]["total_tokens"], prompt.size() + want.ids.size());
}

TEST_F(ServerHttpTest, StreamedCompletionEqualsThePlainOne) {
  json body = {
      {"prompt", "Once upon a time"}, {"max_tokens", 20}, {"seed", 5}, {"model", "bitnet"}};
  const json plain = http_post(port(), "/v1/completions", body.dump()).json();
  ASSERT_EQ(plain["object"], "text_completion") << plain.dump();

  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  std::vector<json> events;
  bool done = false;
  const auto result = server::post_sse("127.0.0.1", port(), "/v1/completions", body.dump(),
                                       [&](const std::string& data) {
                                         if (data == "[DONE]") {
                                           done = true;
                                         } else {
                                           events.push_back(json::parse(data));
                                         }
                                         return true;
                                       });
  EXPECT_EQ(result.status, 200);
  EXPECT_EQ(result.headers.at("Content-Type"), "text/event-stream");
  EXPECT_TRUE(done);
  ASSERT_GE(events.size(), 2u);
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i]["object"], "text_completion");
    EXPECT_TRUE(events[i]["usage"].is_null());
    text += events[i]["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, plain["choices"][0]["text"]);
  EXPECT_EQ(events[events.size() - 2]["choices"][0]["finish_reason"],
            plain["choices"][0]["finish_reason"]);
  const json& last = events.back();
  EXPECT_TRUE(last["choices"].empty());
  // The same prompt again: the cache entries of all but its last token are reused.
  json usage = plain["usage"];
  usage["prompt_tokens_details"]["cached_tokens"] = usage["prompt_tokens"].get<int>() - 1;
  EXPECT_EQ(last["usage"], usage);
}

TEST_F(ServerHttpTest, ChatStreamOpensWithTheRoleAndStopsAtStopStrings) {
  const json body = {{"messages", {{{"role", "user"}, {"content", "Tell me a story"}}}},
                     {"max_tokens", 30},
                     {"seed", 2},
                     {"temperature", 0}};
  const std::string full = http_post(port(), "/v1/chat/completions", body.dump())
                               .json()["choices"][0]["message"]["content"];
  ASSERT_GE(full.size(), 6u);
  json streamed = body;
  streamed["stream"] = true;
  streamed["stop"] = full.substr(3, 3);
  std::vector<json> events;
  server::post_sse("127.0.0.1", port(), "/v1/chat/completions", streamed.dump(),
                   [&](const std::string& data) {
                     if (data != "[DONE]") events.push_back(json::parse(data));
                     return true;
                   });
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_FALSE(events.back().contains("usage"));  // not asked for
  std::string text;
  for (const json& e : events) text += e["choices"][0]["delta"].value("content", "");
  EXPECT_EQ(text, full.substr(0, full.find(full.substr(3, 3))));
  EXPECT_EQ(events.back()["choices"][0]["finish_reason"], "stop");
}

struct BadRequest {
  const char* name;
  const char* path;
  std::string body;
  int status;
  const char* param;  // nullptr: null
  const char* code;
};

TEST_F(ServerHttpTest, BadRequestsGetOpenAIErrorObjects) {
  const std::string long_prompt(2000, 'x');
  const std::vector<BadRequest> cases = {
      {"malformed JSON", "/v1/chat/completions", "{\"messages\": [", 400, nullptr, "invalid_json"},
      {"not an object", "/v1/completions", "[1, 2]", 400, nullptr, "invalid_json"},
      {"messages not an array", "/v1/chat/completions", R"({"messages": "hi"})", 400, "messages",
       "invalid_type"},
      {"missing messages", "/v1/chat/completions", R"({"max_tokens": 3})", 400, "messages",
       "missing_required_parameter"},
      {"bad role", "/v1/chat/completions", R"({"messages": [{"role": "wizard", "content": "x"}]})",
       400, "messages[0].role", "invalid_value"},
      {"max_tokens a string", "/v1/completions", R"({"prompt": "x", "max_tokens": "ten"})", 400,
       "max_tokens", "invalid_type"},
      {"max_tokens zero", "/v1/completions", R"({"prompt": "x", "max_tokens": 0})", 400,
       "max_tokens", "invalid_value"},
      {"max_tokens over the limit", "/v1/completions", R"({"prompt": "x", "max_tokens": 100000})",
       400, "max_tokens", "invalid_value"},
      {"negative temperature", "/v1/completions", R"({"prompt": "x", "temperature": -1})", 400,
       "temperature", "invalid_value"},
      {"top_p zero", "/v1/completions", R"({"prompt": "x", "top_p": 0})", 400, "top_p",
       "invalid_value"},
      {"stop not strings", "/v1/completions", R"({"prompt": "x", "stop": [1]})", 400, "stop",
       "invalid_type"},
      {"empty stop", "/v1/completions", R"({"prompt": "x", "stop": ""})", 400, "stop",
       "invalid_value"},
      {"stream not a bool", "/v1/completions", R"({"prompt": "x", "stream": "yes"})", 400, "stream",
       "invalid_type"},
      {"n > 1", "/v1/completions", R"({"prompt": "x", "n": 2})", 400, "n", "invalid_value"},
      {"presence_penalty over 2", "/v1/completions", R"({"prompt": "x", "presence_penalty": 3})",
       400, "presence_penalty", "invalid_value"},
      {"frequency_penalty a string", "/v1/completions",
       R"({"prompt": "x", "frequency_penalty": "high"})", 400, "frequency_penalty", "invalid_type"},
      {"top_logprobs without logprobs", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2})", 400,
       "top_logprobs", "invalid_value"},
      {"chat logprobs not a bool", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "logprobs": 3})", 400, "logprobs",
       "invalid_type"},
      {"completion logprobs over 5", "/v1/completions", R"({"prompt": "x", "logprobs": 6})", 400,
       "logprobs", "invalid_value"},
      {"logit_bias not an object", "/v1/completions", R"({"prompt": "x", "logit_bias": [1]})", 400,
       "logit_bias", "invalid_type"},
      {"logit_bias key not an id", "/v1/completions", R"({"prompt": "x", "logit_bias": {"a": 1}})",
       400, "logit_bias", "invalid_value"},
      {"logit_bias key with a leading zero", "/v1/completions",
       R"({"prompt": "x", "logit_bias": {"05": 1}})", 400, "logit_bias", "invalid_value"},
      {"logit_bias over 100", "/v1/completions", R"({"prompt": "x", "logit_bias": {"5": 101}})",
       400, "logit_bias", "invalid_value"},
      {"tools", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]})", 400,
       "tools", "unsupported_parameter"},
      {"JSON mode", "/v1/chat/completions",
       R"({"messages": [{"role": "user", "content": "x"}],
           "response_format": {"type": "json_object"}})",
       400, "response_format", "unsupported_parameter"},
      {"echo", "/v1/completions", R"({"prompt": "x", "echo": true})", 400, "echo",
       "unsupported_parameter"},
      {"best_of", "/v1/completions", R"({"prompt": "x", "best_of": 3})", 400, "best_of",
       "unsupported_parameter"},
      {"repeat_penalty zero", "/v1/completions", R"({"prompt": "x", "repeat_penalty": 0})", 400,
       "repeat_penalty", "invalid_value"},
      {"repeat_last_n negative", "/v1/completions", R"({"prompt": "x", "repeat_last_n": -1})", 400,
       "repeat_last_n", "invalid_value"},
      {"prompt not text", "/v1/completions", R"({"prompt": 5})", 400, "prompt", "invalid_type"},
      {"unknown model", "/v1/completions", R"({"prompt": "x", "model": "gpt-4o"})", 404, "model",
       "model_not_found"},
      {"prompt over the context", "/v1/completions", json({{"prompt", long_prompt}}).dump(), 400,
       "prompt", "context_length_exceeded"},
      {"body over --max-body", "/v1/completions", std::string(2 << 20, ' '), 413, nullptr,
       "request_too_large"},
      {"unknown route", "/v1/embeddings", "{}", 404, nullptr, "not_found"},
  };
  for (const BadRequest& c : cases) {
    const auto reply = http_post(port(), c.path, c.body);
    EXPECT_EQ(reply.status, c.status) << c.name << ": " << reply.body;
    const json error = reply.json()["error"];
    ASSERT_TRUE(error.is_object()) << c.name << ": " << reply.body;
    EXPECT_TRUE(error["message"].is_string()) << c.name;
    EXPECT_EQ(error["type"], "invalid_request_error") << c.name;
    EXPECT_EQ(error["param"], c.param ? json(c.param) : json(nullptr)) << c.name;
    EXPECT_EQ(error["code"], c.code) << c.name;
  }
  EXPECT_EQ(http_get(port(), "/health").status, 200);  // still serving
}

TEST_F(ServerHttpTest, PenaltiesApplyAsInLoneGeneration) {
  const json body = {
      {"prompt", "Once upon a time"}, {"max_tokens", 24},         {"temperature", 0},
      {"presence_penalty", 0.5},      {"frequency_penalty", 1.5}, {"repeat_penalty", 1.1},
      {"repeat_last_n", 32}};
  const json got = http_post(port(), "/v1/completions", body.dump()).json();
  ASSERT_TRUE(got.contains("choices")) << got.dump();

  const auto model = Model::load(test::tiny_model());
  const Tokenizer tokenizer = Tokenizer::load(test::tiny_model());
  GenerateOptions options;
  options.max_new_tokens = 24;
  options.sampling.temperature = 0;
  options.stop_ids = default_stop_ids(model->config(), tokenizer);
  const auto prompt = tokenizer.encode("Once upon a time", true);
  const GenerateResult plain = test::lone_generate(model, tokenizer, prompt, options, 128);
  options.sampling.presence_penalty = 0.5f;
  options.sampling.frequency_penalty = 1.5f;
  options.sampling.repeat_penalty = 1.1f;
  options.sampling.repeat_last_n = 32;
  const GenerateResult want = test::lone_generate(model, tokenizer, prompt, options, 128);
  EXPECT_EQ(got["choices"][0]["text"], want.text);
  EXPECT_NE(want.text, plain.text);  // the penalties were not ignored
}

// Chat logprobs: one entry per generated token (none for a final stop id) naming the token a
// lone generation samples, its bytes, and the top alternatives, the greedy pick first. The
// streamed chunks carry the same entries.
TEST_F(ServerHttpTest, ChatLogprobsNameEachTokenAndItsAlternatives) {
  const json body = {{"messages", {{{"role", "user"}, {"content", "Count with me"}}}},
                     {"max_tokens", 10},
                     {"temperature", 0},
                     {"logprobs", true},
                     {"top_logprobs", 2}};
  const json r = http_post(port(), "/v1/chat/completions", body.dump()).json();
  ASSERT_TRUE(r.contains("choices")) << r.dump();
  const json& content = r["choices"][0]["logprobs"]["content"];
  const int generated = r["usage"]["completion_tokens"].get<int>();
  const bool stopped = r["choices"][0]["finish_reason"] == "stop";
  ASSERT_EQ(static_cast<int>(content.size()), generated - (stopped ? 1 : 0)) << r.dump();

  std::string text_bytes;
  for (const json& entry : content) {
    std::string bytes;
    for (const json& b : entry["bytes"]) bytes += static_cast<char>(b.get<int>());
    text_bytes += bytes;
    EXPECT_LE(entry["logprob"].get<double>(), 0.0);
    ASSERT_EQ(entry["top_logprobs"].size(), 2u);
    // Greedy: the token is the most likely one.
    EXPECT_EQ(entry["top_logprobs"][0]["bytes"], entry["bytes"]);
    EXPECT_EQ(entry["top_logprobs"][0]["logprob"], entry["logprob"]);
    EXPECT_GE(entry["top_logprobs"][0]["logprob"].get<double>(),
              entry["top_logprobs"][1]["logprob"].get<double>());
  }
  EXPECT_EQ(text_bytes, r["choices"][0]["message"]["content"].get<std::string>());

  json streamed = body;
  streamed["stream"] = true;
  json entries = json::array();
  server::post_sse("127.0.0.1", port(), "/v1/chat/completions", streamed.dump(),
                   [&](const std::string& data) {
                     if (data == "[DONE]") return true;
                     const json event = json::parse(data);
                     const json& logprobs = event["choices"][0]["logprobs"];
                     if (logprobs.is_object())
                       for (const json& e : logprobs["content"]) entries.push_back(e);
                     return true;
                   });
  EXPECT_EQ(entries, content);
}

TEST_F(ServerHttpTest, CompletionLogprobsAreParallelArrays) {
  const json body = {
      {"prompt", "Once upon a time"}, {"max_tokens", 6}, {"logprobs", 3}, {"seed", 8}};
  const json r = http_post(port(), "/v1/completions", body.dump()).json();
  ASSERT_TRUE(r.contains("choices")) << r.dump();
  const json& logprobs = r["choices"][0]["logprobs"];
  const size_t n = logprobs["tokens"].size();
  EXPECT_GE(n, 1u);
  ASSERT_EQ(logprobs["token_logprobs"].size(), n);
  ASSERT_EQ(logprobs["top_logprobs"].size(), n);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_TRUE(logprobs["tokens"][i].is_string());
    EXPECT_LE(logprobs["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_GE(logprobs["top_logprobs"][i].size(), 1u);  // 3 unless two tokens print alike
    EXPECT_LE(logprobs["top_logprobs"][i].size(), 3u);
  }
  const json plain =
      http_post(port(), "/v1/completions", R"({"prompt": "Once upon a time", "max_tokens": 2})")
          .json();
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
}

TEST_F(ServerHttpTest, LogitBiasSteersSamplingAndNeutralValuesOfUnsupportedFieldsPass) {
  const Tokenizer tokenizer = Tokenizer::load(test::tiny_model());
  const int32_t a = tokenizer.encode("a", false).at(0);
  const json forced = {{"prompt", "Once upon a time"},
                       {"max_tokens", 5},
                       {"logit_bias", {{std::to_string(a), 100}}},
                       {"echo", false},
                       {"best_of", 1}};
  const json r = http_post(port(), "/v1/completions", forced.dump()).json();
  ASSERT_TRUE(r.contains("choices")) << r.dump();
  EXPECT_EQ(r["choices"][0]["text"], "aaaaa");

  const json chat = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                     {"max_tokens", 2},
                     {"tools", json::array()},
                     {"tool_choice", "none"},
                     {"response_format", {{"type", "text"}}}};
  EXPECT_EQ(http_post(port(), "/v1/chat/completions", chat.dump()).status, 200);

  const json outside = {{"prompt", "x"}, {"logit_bias", {{"1000000", 5}}}};
  const auto refused = http_post(port(), "/v1/completions", outside.dump());
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("outside the vocabulary"), std::string::npos) << refused.body;
}

TEST_F(ServerHttpTest, RepeatedPromptReusesTheCacheAndSaysSo) {
  const json body = {{"prompt", "A prompt that no other test of this server sends"},
                     {"max_tokens", 4},
                     {"seed", 9}};
  const json first = http_post(port(), "/v1/completions", body.dump()).json();
  const json again = http_post(port(), "/v1/completions", body.dump()).json();
  ASSERT_TRUE(again.contains("usage")) << again.dump();
  const int prompt_tokens = first["usage"]["prompt_tokens"].get<int>();
  EXPECT_EQ(again["usage"]["prompt_tokens"], prompt_tokens);
  EXPECT_EQ(again["usage"]["prompt_tokens_details"]["cached_tokens"], prompt_tokens - 1);
  EXPECT_EQ(again["choices"][0]["text"], first["choices"][0]["text"]);
  const std::string metrics = http_get(port(), "/metrics").body;
  EXPECT_GE(test::metric_value(metrics, "bitnet_prompt_tokens_cached_total").value_or(0),
            prompt_tokens - 1);
}

TEST_F(ServerHttpTest, MetricsUsePrometheusTextFormat) {
  http_post(port(), "/v1/completions", R"({"prompt": "Hi", "max_tokens": 3})");
  // A request is counted when its response has been written (httplib's logger), which can be
  // just after the client has read it: poll briefly.
  auto reply = http_get(port(), "/metrics");
  for (int i = 0; i < 200 && reply.body.find("status=\"200\"") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    reply = http_get(port(), "/metrics");
  }
  EXPECT_EQ(reply.status, 200);
  EXPECT_EQ(reply.header("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  const std::string& m = reply.body;
  for (const char* needle :
       {"# TYPE bitnet_requests_total counter",
        "bitnet_requests_total{endpoint=\"/v1/completions\",status=\"200\"}",
        "# TYPE bitnet_prompt_tokens_total counter",
        "# TYPE bitnet_prompt_tokens_cached_total counter",
        "# TYPE bitnet_generated_tokens_total counter", "# TYPE bitnet_queue_depth gauge",
        "# TYPE bitnet_running_sequences gauge", "# TYPE bitnet_kv_slots_in_use gauge",
        "# TYPE bitnet_time_to_first_token_seconds histogram",
        "bitnet_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
        "# TYPE bitnet_inter_token_latency_seconds histogram",
        "bitnet_inter_token_latency_seconds_count"}) {
    EXPECT_NE(m.find(needle), std::string::npos) << needle;
  }
  EXPECT_GE(test::metric_value(m, "bitnet_generated_tokens_total").value_or(0), 3);
  EXPECT_EQ(test::metric_value(m, "bitnet_kv_slots_total"), 4);
}

TEST(ServerAuth, ApiKeyGuardsTheApiButNotProbes) {
  server::ServerOptions options = test::server_options(test::tiny_model(), 1);
  options.api_key = "sekret";
  test::RunningServer server(options);
  const std::string body = R"({"prompt": "Hi", "max_tokens": 2})";
  const auto missing = http_post(server.port(), "/v1/completions", body);
  EXPECT_EQ(missing.status, 401);
  EXPECT_EQ(missing.json()["error"]["code"], "invalid_api_key");
  EXPECT_EQ(
      http_post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer nope"}}).status,
      401);
  EXPECT_EQ(http_get(server.port(), "/v1/models").status, 401);
  EXPECT_EQ(http_post(server.port(), "/v1/completions", body, {{"Authorization", "Bearer sekret"}})
                .status,
            200);
  EXPECT_EQ(http_get(server.port(), "/health").status, 200);
  EXPECT_EQ(http_get(server.port(), "/metrics").status, 200);
}

TEST(ServerLoading, HealthAndRequestsAre503AfterAFailedLoad) {
  test::TempDir empty;
  test::RunningServer server(test::server_options(empty.path(), 1));
  ASSERT_TRUE(server.server().load_error().has_value());
  const auto health = http_get(server.port(), "/health");
  EXPECT_EQ(health.status, 503);
  EXPECT_EQ(health.json()["status"], "error");
  const auto reply = http_post(server.port(), "/v1/completions", R"({"prompt": "x"})");
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(reply.json()["error"]["type"], "server_error");
}

}  // namespace
}  // namespace bitnet
