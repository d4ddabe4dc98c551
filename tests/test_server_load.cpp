// bitnet serve under load, in-process: 32 simultaneous streams each equal their lone output;
// disconnecting clients, malformed requests and queue overflow leave the server serving with
// every KV slot free.

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "server/sse_client.h"
#include "server_fixture.h"

namespace bitnet {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

json completion_body(int i, int max_tokens, bool stream) {
  return {{"prompt", "Request number " + std::to_string(i) + " says"},
          {"max_tokens", max_tokens},
          {"seed", 1000 + i},
          {"temperature", i % 4 == 0 ? 0.0 : 1.0},
          {"stream", stream}};
}

// The text of a completion stream, or an error description.
std::string stream_text(int port, const json& body, std::string* error = nullptr) {
  std::string text;
  bool done = false;
  const auto r = server::post_sse(
      "127.0.0.1", port, "/v1/completions", body.dump(), [&](const std::string& data) {
        if (data == "[DONE]") {
          done = true;
        } else {
          text += json::parse(data)["choices"][0]["text"].get<std::string>();
        }
        return true;
      });
  if (error && (r.status != 200 || !done)) {
    *error = "status " + std::to_string(r.status) + " " + r.error + " done=" + std::to_string(done);
  }
  return text;
}

TEST(ServerLoad, ThirtyTwoConcurrentStreamsEachEqualTheirLoneOutput) {
  test::RunningServer server(test::server_options(test::tiny_model(), 8));
  constexpr int kClients = 32;
  std::vector<std::string> texts(kClients), errors(kClients);
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back([&, i] {
      texts[static_cast<size_t>(i)] = stream_text(
          server.port(), completion_body(i, 24 + i % 9, true), &errors[static_cast<size_t>(i)]);
    });
  }
  for (auto& t : clients) t.join();
  // The same requests one at a time (nothing else running) give the same text.
  for (int i = 0; i < kClients; ++i) {
    EXPECT_EQ(errors[static_cast<size_t>(i)], "") << "client " << i;
    const json alone = test::http_post(server.port(), "/v1/completions",
                                       completion_body(i, 24 + i % 9, false).dump())
                           .json();
    EXPECT_EQ(texts[static_cast<size_t>(i)], alone["choices"][0]["text"]) << "client " << i;
  }
  EXPECT_EQ(test::metric_value(server.metrics(), "bitnet_kv_slots_in_use"), 0);
  // httplib counts a request just after its last byte is sent.
  EXPECT_TRUE(test::eventually([&] {
    return test::metric_value(
               server.metrics(),
               "bitnet_requests_total{endpoint=\"/v1/completions\",status=\"200\"}") ==
           2 * kClients;
  })) << server.metrics();
}

TEST(ServerLoad, DisconnectsMalformedRequestsAndOverflowLeaveSlotsFree) {
  server::ServerOptions options = test::server_options(test::slow_model(), 2);
  options.engine.context_length = 2048;
  options.engine.max_queue = 2;
  test::RunningServer server(options);
  ASSERT_TRUE(server.server().ready());
  const int port = server.port();
  auto gauge = [&](const char* name) { return test::metric_value(server.metrics(), name); };

  std::atomic<bool> hang_up{false};
  std::atomic<int> disconnected{0}, malformed_rejected{0}, overflowed{0}, completed{0};
  std::vector<std::thread> clients;
  // Joins the clients on every way out, a failed ASSERT included.
  struct JoinClients {
    std::atomic<bool>& hang_up;
    std::vector<std::thread>& clients;
    void operator()() {
      hang_up = true;
      for (auto& t : clients) t.join();
      clients.clear();
    }
    ~JoinClients() { (*this)(); }
  } join_clients{hang_up, clients};
  auto malformed = [&](int i) {
    clients.emplace_back([&, i] {
      const std::string bodies[] = {"{", R"({"prompt": 3})", R"({"prompt": "x", "top_p": 7})"};
      const auto r = test::http_post(port, "/v1/completions", bodies[i % 3]);
      if (r.status == 400) ++malformed_rejected;
    });
  };
  // Two long streams fill both slots and hang up mid-stream when told to.
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      const auto r = server::post_sse("127.0.0.1", port, "/v1/completions",
                                      completion_body(i, 2000, true).dump(),
                                      [&](const std::string&) { return !hang_up; });
      if (r.aborted) ++disconnected;
    });
  }
  ASSERT_TRUE(test::eventually([&] { return gauge("bitnet_running_sequences") == 2; }));
  // Two more wait in the queue...
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back([&, i] {
      const auto r =
          test::http_post(port, "/v1/completions", completion_body(10 + i, 20, false).dump());
      if (r.status == 200) ++completed;
    });
  }
  ASSERT_TRUE(test::eventually([&] { return gauge("bitnet_queue_depth") == 2; }));
  // ...and the queue is full: more are refused with Retry-After. Malformed requests mixed in.
  for (int i = 0; i < 4; ++i) {
    const auto r =
        test::http_post(port, "/v1/completions", completion_body(20 + i, 20, false).dump());
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.header("Retry-After"), "1");
    EXPECT_EQ(r.json()["error"]["code"], "server_overloaded");
    malformed(i);
  }
  // The long streams' clients leave: their slots go to the queued requests.
  join_clients();
  EXPECT_EQ(disconnected, 2);
  EXPECT_EQ(completed, 2);

  // Streams abandoned right after their first event, while malformed requests keep coming.
  for (int i = 0; i < 6; ++i) {
    clients.emplace_back([&, i] {
      const auto r = server::post_sse("127.0.0.1", port, "/v1/completions",
                                      completion_body(30 + i, 2000, true).dump(),
                                      [&](const std::string&) { return false; });
      if (r.aborted) ++disconnected;
      if (r.status == 503) ++overflowed;
    });
    malformed(i);
  }
  join_clients();
  EXPECT_EQ(malformed_rejected, 10);
  EXPECT_EQ(disconnected + overflowed, 8);

  // Every slot comes back, and the server still answers correctly.
  EXPECT_TRUE(test::eventually([&] {
    return gauge("bitnet_kv_slots_in_use") == 0 && gauge("bitnet_queue_depth") == 0 &&
           gauge("bitnet_running_sequences") == 0;
  })) << server.metrics();
  // The abandoned sequences stopped when their clients left: had they run on, the eight of them
  // would have generated 16000 tokens.
  EXPECT_LT(gauge("bitnet_generated_tokens_total").value_or(1e9), 8000);
  std::string error;
  EXPECT_FALSE(stream_text(port, completion_body(7, 5, true), &error).empty());
  EXPECT_EQ(error, "");
}

}  // namespace
}  // namespace bitnet
